# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Synthetic views of calibration boards with a known pose (tests, benchmarks, demos).

The board's printed texture (`board_texture`) is rendered by
`render.planar.render_planar_texture`: plane homography, supersampled, area-averaged
down, so corners are anti-aliased.
"""

from __future__ import annotations

import numpy as np

from dvc_perception.config import FiducialConfig
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.pipeline.fiducial import make_board
from dvc_perception.render.planar import render_planar_texture


def board_texture(
    config: FiducialConfig, px_per_m: float, margin_m: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """The printed board as an image, and the map from its pixels to board metres.

    Args:
        config: the board.
        px_per_m: texture resolution [px/m].
        margin_m: white border around the board [m].

    Returns:
        (texture (h, w) uint8 grey, A (3, 3) float64 with ``[x, y, 1] ~ A @ [u, v, 1]``: texture
        pixel centre (u, v) to board-frame metres (x, y) on the z = 0 plane).
    """
    margin_px = int(round(margin_m * px_per_m))
    if config.board_type == "chessboard":
        s_px = int(round(config.square_size_m * px_per_m))
        nx, ny = config.cols + 1, config.rows + 1
        tex = np.full((ny * s_px + 2 * margin_px, nx * s_px + 2 * margin_px), 255, np.uint8)
        for j in range(ny):
            for i in range(nx):
                if (i + j) % 2 == 0:  # black top-left square, as OpenCV's pattern
                    y0, x0 = margin_px + j * s_px, margin_px + i * s_px
                    tex[y0 : y0 + s_px, x0 : x0 + s_px] = 0
        scale = config.square_size_m / s_px
        offset = margin_px + s_px  # the first inner corner is the board origin
    else:
        board = make_board(config)
        if config.board_type == "charuco":
            width_m = config.cols * config.square_size_m
            height_m = config.rows * config.square_size_m
        else:
            width_m = config.cols * config.marker_size_m + (config.cols - 1) * (
                config.marker_separation_m
            )
            height_m = config.rows * config.marker_size_m + (config.rows - 1) * (
                config.marker_separation_m
            )
        w_px, h_px = int(round(width_m * px_per_m)), int(round(height_m * px_per_m))
        tex = board.generateImage((w_px + 2 * margin_px, h_px + 2 * margin_px), None, margin_px, 1)
        scale = width_m / w_px
        offset = margin_px
    # pixel centre u covers [u - 0.5, u + 0.5]; the board edge is the pixel boundary `offset - 0.5`
    A = np.array(
        [[scale, 0.0, (0.5 - offset) * scale], [0.0, scale, (0.5 - offset) * scale], [0, 0, 1]]
    )
    return tex, A


def render_board_view(
    config: FiducialConfig,
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    width: int,
    height: int,
    *,
    px_per_m: float = 4000.0,
    background: int = 128,
    supersample: int = 2,
) -> np.ndarray:
    """An ideal pinhole view of the board at pose (R, t).

    Args:
        config: the board.
        K: (3, 3) pinhole intrinsics [px].
        R: (3, 3) board-to-camera rotation.
        t: (3,) m, board origin in the camera optical frame.
        width: image width [px].
        height: image height [px].
        px_per_m: texture resolution [px/m].
        background: grey level outside the board.
        supersample: render at this factor and area-average down (anti-aliasing).

    Returns:
        (height, width, 3) uint8 RGB image.
    """
    tex, A = board_texture(config, px_per_m)
    camera = CameraModel(np.asarray(K, np.float64), np.zeros(0), width, height)
    grey = render_planar_texture(tex, A, camera, R, t, supersample=supersample,
                                 background=background)
    return np.repeat(grey[:, :, None], 3, axis=2)

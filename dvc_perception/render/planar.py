# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Synthetic camera views of a printed planar texture (calibration boards) at a known pose.

The texture is mapped into a `supersample` times larger ideal pinhole image by the plane
homography ``H = K_s [r1 r2 t] A`` (A: texture px -> plane metres, K_s: the supersampled
camera), through the lens distortion when the camera has one (``cv2.remap`` with
`ideal_pixel_map`), and area-averaged down to the camera's size, so edges and corners are
anti-aliased and corner detectors find them to a few hundredths of a pixel. Both the chessboard
targets (`demo.chessboard`) and the fiducial boards (`demo.boards`)
render through `render_planar_texture`.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from dvc_perception.errors import ConfigError
from dvc_perception.geometry.camera import CameraModel


def ideal_pixel_map(camera: CameraModel, supersample: int = 4) -> np.ndarray:
    """Where each pixel of the supersampled distorted image lies in the ideal pinhole image.

    `CameraModel.undistort_points` runs on a grid of every fourth pixel of the camera's own
    resolution (padded by one grid step) and ``cv2.resize`` (bilinear, the pixel-centre
    convention of `CameraModel.scaled`) enlarges the result: the map is smooth, so this costs
    1 / (4 s)^2 of the points for about 0.06 supersampled px of error on `demo_camera`'s lens
    (0.015 px of the camera's image, well below the corner detector's 0.05 px). The grid stays
    under torch's parallel grain size, so it runs single-threaded and fast on a busy machine.

    Args:
        camera: the camera (with distortion).
        supersample: scale factor s of the images the map is for, >= 1.

    Returns:
        (s * height, s * width, 2) float32 positions, px of ``camera.scaled(s, s)``'s ideal
        image, u right, v down.
    """
    if supersample < 1:
        raise ConfigError(f"supersample: expected >= 1, got {supersample}")
    step, pad = 4, 1
    n_u = -(-camera.width // step) + 2 * pad
    n_v = -(-camera.height // step) + 2 * pad
    # Grid point i is the centre of a step x step block: camera px step * (i - pad) + (step-1)/2.
    u, v = np.meshgrid(step * (np.arange(n_u) - pad) + (step - 1) / 2,
                       step * (np.arange(n_v) - pad) + (step - 1) / 2)
    ideal = camera.undistort_points(torch.from_numpy(np.stack([u, v], axis=-1))).numpy()
    ideal_big = supersample * (ideal + 0.5) - 0.5  # into the supersampled image's pixels
    f = step * supersample
    enlarged = cv2.resize(ideal_big, (n_u * f, n_v * f), interpolation=cv2.INTER_LINEAR)
    return enlarged[pad * f : pad * f + supersample * camera.height,
                    pad * f : pad * f + supersample * camera.width].astype(np.float32)


def render_planar_texture(
    texture: np.ndarray,
    plane_from_texture: np.ndarray,
    camera: CameraModel,
    R: np.ndarray,
    t: np.ndarray,
    *,
    supersample: int = 4,
    background: int = 128,
    ideal_map: np.ndarray | None = None,
) -> np.ndarray:
    """The camera's view of a planar texture lying on the z = 0 plane of a frame at pose (R, t).

    Args:
        texture: (h, w) uint8 grey texture.
        plane_from_texture: (3, 3) A with ``[x, y, 1] ~ A @ [u, v, 1]``: texture pixel centre
            (u, v) to plane coordinates (x, y), in the unit of `t`.
        camera: intrinsics, distortion and image size.
        R: (3, 3) plane-to-camera rotation.
        t: (3,) plane origin in the camera optical frame.
        supersample: rendering scale factor, >= 1.
        background: grey level where the texture is not seen.
        ideal_map: ``ideal_pixel_map(camera, supersample)``, to reuse over views; computed here
            when None and the camera has distortion.

    Returns:
        (height, width) uint8 grey image.

    Raises:
        ConfigError: `supersample` < 1, an `ideal_map` of another shape, or (with distortion) a
            texture not entirely in front of the camera.
    """
    if supersample < 1:
        raise ConfigError(f"supersample: expected >= 1, got {supersample}")
    big = camera.scaled(supersample, supersample)
    R = np.asarray(R, np.float64)
    t = np.asarray(t, np.float64).reshape(3)
    H = big.K.numpy() @ np.column_stack([R[:, 0], R[:, 1], t]) @ plane_from_texture
    if not camera.has_distortion:
        image = cv2.warpPerspective(
            texture, H, (big.width, big.height), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=background,
        )
        return cv2.resize(image, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
    if ideal_map is None:
        ideal_map = ideal_pixel_map(camera, supersample)
    if ideal_map.shape != (big.height, big.width, 2):
        raise ConfigError(f"ideal_map: expected shape {(big.height, big.width, 2)}, "
                          f"got {ideal_map.shape}")
    # The ideal image is drawn on a canvas around the texture (barrel distortion pulls the map's
    # positions outside the frame; positions off the canvas get the background).
    corners_tex = np.array([[-0.5, -0.5, 1], [texture.shape[1] - 0.5, -0.5, 1],
                            [-0.5, texture.shape[0] - 0.5, 1],
                            [texture.shape[1] - 0.5, texture.shape[0] - 0.5, 1]])
    corners = corners_tex @ H.T
    if np.any(corners[:, 2] <= 0):
        raise ConfigError("render_planar_texture: the texture is not entirely in front of the "
                          "camera")
    corners = corners[:, :2] / corners[:, 2:]
    size = np.array([big.width, big.height], np.float64)
    lo = np.maximum(np.floor(corners.min(axis=0)) - 2, -size)  # bounded canvas: a plane seen
    hi = np.minimum(np.ceil(corners.max(axis=0)) + 2, 2 * size)  # edge-on would be huge
    if np.any(hi <= lo):
        return np.full((camera.height, camera.width), background, np.uint8)
    shift = np.array([[1.0, 0, -lo[0]], [0, 1.0, -lo[1]], [0, 0, 1.0]])
    canvas = cv2.warpPerspective(
        texture, shift @ H, (int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=background,
    )
    map_u = ideal_map[..., 0] - np.float32(lo[0])
    map_v = ideal_map[..., 1] - np.float32(lo[1])
    image = cv2.remap(canvas, map_u, map_v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                      borderValue=background)
    return cv2.resize(image, (camera.width, camera.height), interpolation=cv2.INTER_AREA)

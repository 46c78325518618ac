# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Letterboxing between a camera image and a network input, with exact intrinsics.

The network sources (issues 4/5) run at a fixed input size. `Letterbox` scales the image by
``s = min(dst_w / src_w, dst_h / src_h)`` and places it at the top-left of the input, as the
training data loader does (`train.datasets.letterbox_affine`; a test checks the two agree). Under
the pixel-centre convention a source pixel u maps to ``s * (u + 0.5) - 0.5``, so the intrinsics
follow exactly as ``K' = A K`` and keypoints go back by the inverse map. Depth goes back to the
source resolution by nearest-neighbour sampling, which never invents a surface between two depths
(bilinear interpolation across a depth edge makes phantom obstacles for planners); input pixels
outside the scaled image (the padding) are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dvc_perception.errors import ConfigError, ShapeError, check_shape
from dvc_perception.geometry.camera import CameraModel


@dataclass(frozen=True)
class Letterbox:
    """The map from a `src_width` x `src_height` image into a `dst_width` x `dst_height` input."""

    src_width: int
    src_height: int
    dst_width: int
    dst_height: int

    def __post_init__(self) -> None:
        for name in ("src_width", "src_height", "dst_width", "dst_height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"letterbox {name}: expected a positive integer, got {value!r}")

    @property
    def scale(self) -> float:
        """Source-to-input scale factor s."""
        return min(self.dst_width / self.src_width, self.dst_height / self.src_height)

    @property
    def content_size(self) -> tuple[int, int]:
        """(width, height) px of the input covered by the scaled image (the rest is padding)."""
        s = self.scale
        return (
            min(self.dst_width, int(np.ceil(s * self.src_width - 1e-9))),
            min(self.dst_height, int(np.ceil(s * self.src_height - 1e-9))),
        )

    @property
    def affine(self) -> np.ndarray:
        """(2, 3) float64 affine: input px = A @ [u, v, 1] of source px."""
        s = self.scale
        return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]])

    def image_to_input(self, image: np.ndarray, fill: int = 0) -> np.ndarray:
        """Source image (src_h, src_w, C) -> network input (dst_h, dst_w, C), padding = `fill`."""
        if image.shape[:2] != (self.src_height, self.src_width):
            raise ShapeError(
                f"letterbox image: expected ({self.src_height}, {self.src_width}, C), got "
                f"{image.shape}"
            )
        return cv2.warpAffine(
            image,
            self.affine,
            (self.dst_width, self.dst_height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(fill, fill, fill),
        )

    def camera_to_input(self, camera: CameraModel) -> CameraModel:
        """The camera of the network input: ``K' = A K``; distortion (normalised) unchanged."""
        if (camera.width, camera.height) != (self.src_width, self.src_height):
            raise ShapeError(
                f"letterbox camera: expected {self.src_width}x{self.src_height}, got "
                f"{camera.width}x{camera.height}"
            )
        A = np.vstack([self.affine, [0.0, 0.0, 1.0]])
        K = A @ camera.K.detach().cpu().numpy()
        return CameraModel(
            K, camera.D.clone(), self.dst_width, self.dst_height, camera.distortion_model
        )

    def points_to_source(self, uv_input: np.ndarray) -> np.ndarray:
        """Input px (..., 2) -> source px (..., 2): ``u = (u' + 0.5) / s - 0.5``."""
        uv = np.asarray(uv_input, dtype=np.float64)
        if uv.ndim < 1 or uv.shape[-1] != 2:
            raise ShapeError(f"letterbox points: expected shape (..., 2), got {uv.shape}")
        return (uv + 0.5) / self.scale - 0.5

    def depth_to_source(self, depth_input: np.ndarray) -> np.ndarray:
        """Input-resolution depth (dst_h, dst_w) m -> source resolution (src_h, src_w) float32.

        Nearest-neighbour: every output value is one of the input's values (no surface between
        two depths is invented); the padding of the input is NaN.
        """
        check_shape(depth_input, f"{self.dst_height},{self.dst_width}", name="depth_input")
        depth = np.array(depth_input, dtype=np.float32)
        cw, ch = self.content_size
        depth[ch:, :] = np.nan
        depth[:, cw:] = np.nan
        s = self.scale
        u = np.rint(s * (np.arange(self.src_width) + 0.5) - 0.5).astype(np.int64)
        v = np.rint(s * (np.arange(self.src_height) + 0.5) - 0.5).astype(np.int64)
        u = np.clip(u, 0, self.dst_width - 1)
        v = np.clip(v, 0, self.dst_height - 1)
        return depth[v[:, None], u[None, :]]

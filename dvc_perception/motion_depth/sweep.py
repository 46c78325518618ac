# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Plane-sweep depth: ZNCC matching cost over inverse-depth planes, SGM, winner and confidence.

For each fronto-parallel plane of the reference camera (inverse depths uniform between
1/`max_depth_m` and 1/`min_depth_m`: uniform in disparity, so near and far get the same pixel
resolution), each source image is warped into the reference view by the plane's homography and
compared with the reference by zero-mean normalised cross-correlation over (2r+1)^2 windows
(insensitive to the exposure changing between frames); the cost is 1 - ZNCC averaged over the
sources that see the point. Semi-global matching (4 paths, P1 for a one-plane step, P2 for a
jump, P2 lowered at image edges where depth may jump) fills texture-poor regions from their
neighbours. The winner gets a parabola sub-plane offset; its confidence is ``1 - best / second
best`` of the aggregated cost (second best away from the winner's neighbours): 0 ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dvc_perception.errors import ConfigError, ShapeError, check_shape


@dataclass(frozen=True)
class SweepSettings:
    """Plane-sweep settings (m, px at the internal resolution)."""

    min_depth_m: float = 0.3
    max_depth_m: float = 6.0
    planes: int = 64
    window_radius: int = 3
    p1: float = 0.05
    p2: float = 0.6
    p2_edge_gain: float = 10.0
    speckle_px: int = 200
    sgm_paths: int = 4

    def __post_init__(self) -> None:
        if not 0.0 < self.min_depth_m < self.max_depth_m:
            raise ConfigError("sweep: expected 0 < min_depth_m < max_depth_m, got "
                              f"{self.min_depth_m} and {self.max_depth_m}")
        if self.planes < 3 or self.window_radius < 1:
            raise ConfigError(f"sweep: expected planes >= 3 and window_radius >= 1, got "
                              f"{self.planes} and {self.window_radius}")
        if self.sgm_paths not in (4, 8):
            raise ConfigError(f"sweep.sgm_paths: expected 4 or 8, got {self.sgm_paths}")
        if not 0.0 <= self.p1 < self.p2:
            raise ConfigError(f"sweep: expected 0 <= p1 < p2, got {self.p1} and {self.p2}")

    def inverse_depths(self) -> np.ndarray:
        """(planes,) float32 inverse depths [1/m], far to near."""
        return np.linspace(1.0 / self.max_depth_m, 1.0 / self.min_depth_m, self.planes,
                           dtype=np.float32)


@dataclass(frozen=True)
class SweepResult:
    """Depth (h, w) float32 m and confidence (h, w) float32 in [0, 1] of a sweep.

    ``seen`` (h, w): the number of sources that saw each pixel at its depth.
    """

    depth: np.ndarray
    confidence: np.ndarray
    seen: np.ndarray


def plane_sweep_depth(ref: np.ndarray, sources: list[np.ndarray], relative: list[np.ndarray],
                      K: np.ndarray, settings: SweepSettings) -> SweepResult:
    """Depth of the reference image from source images with known relative poses.

    Args:
        ref: (h, w) float32 grey in [0, 1].
        sources: (h, w) float32 grey images of the same camera.
        relative: per source, (4, 4) transform reference camera -> source camera [m].
        K: (3, 3) intrinsics at this resolution [px].
        settings: the sweep's settings.
    """
    from dvc_perception.motion_depth import _compiled

    check_shape(ref, "H,W", name="reference image")
    if not sources or len(sources) != len(relative):
        raise ShapeError(f"sweep: expected one pose per source and at least one source, got "
                         f"{len(sources)} sources and {len(relative)} poses")
    h, w = ref.shape
    ref32 = np.ascontiguousarray(ref, np.float32)
    inv = settings.inverse_depths()
    r = settings.window_radius
    mean, inv_std = _compiled.reference_stats(ref32, r)
    K_inv = np.linalg.inv(K)
    for src in sources:
        if src.shape != ref.shape:
            raise ShapeError(f"sweep: expected sources of shape {ref.shape}, got {src.shape}")
    srcs = np.stack([np.asarray(src, np.float32) for src in sources])  # (S, h, w)
    A = np.stack([K @ T[:3, :3] @ K_inv for T in relative])  # (S, 3, 3)
    b = np.stack([K @ T[:3, 3] for T in relative])  # (S, 3)
    cost = np.empty((h, len(inv), w), np.float32)  # allocated by numpy: see sweep_cost
    _compiled.sweep_cost(ref32, mean, inv_std, srcs, A, b, inv, r, cost)
    grad = np.hypot(cv2.Sobel(ref32, cv2.CV_32F, 1, 0), cv2.Sobel(ref32, cv2.CV_32F, 0, 1))
    p2 = np.maximum(settings.p2 / (1.0 + settings.p2_edge_gain * grad), 1.5 * settings.p1)
    index, ratio = _compiled.sgm_winner(cost, np.float32(settings.p1), p2.astype(np.float32),
                                        settings.sgm_paths == 8)
    # the depth interpolated between the planes, the sources at the winner (seen), the
    # confidence, and the speckle filter's input, in one pass
    depth, confidence, seen, codes = _compiled.winner_depth(index, ratio, A, b, inv)
    if settings.speckle_px > 0:
        confidence[remove_speckles(codes, settings.speckle_px)] = 0.0
    return SweepResult(depth, confidence, seen)


def remove_speckles(codes: np.ndarray, max_size: int) -> np.ndarray:
    """Mask (h, w) of pixels in small islands of depth that nothing around them supports.

    `codes` (h, w) int16: ``rint(16 index)`` (`index` the winning plane) where a source saw the
    pixel, else -16 (`_compiled.winner_depth` makes them). An island is a connected region of
    fewer than `max_size` pixels whose neighbours differ by at most one plane; typically wrong
    matches in texture-poor areas.
    """
    filtered = codes.copy()
    cv2.filterSpeckles(filtered, -16, max_size, 16)
    return (filtered == -16) & (codes != -16)

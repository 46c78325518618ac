# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The window of recent frames and the rule that picks source frames for a reference frame.

The rule (`KeyframeWindow.select_sources`), walking back in time from the newest stored frame:
a frame becomes a source when its camera centre is at least `min_baseline_m` from the reference
camera's, at least `baseline_growth` times farther than the previous source's (so the sources
spread over short and long baselines: short ones match reliably, long ones resolve depth), at
most `max_baseline_m` away, and seen from within `max_rotation_deg` of the reference's viewing
direction (enough overlap); at most `max_sources` are taken. The baselines of this choice are
measured between smoothed camera centres (`smoothed_centres`: a constant-velocity line through
each frame's `position_smoothing` stored neighbours on each side), not each frame's own: with
noisy odometry the first frame whose own centre is far enough tends to be one whose noise
lengthened its baseline, and the adjustment, whose scale comes from the odometry, then measures
every depth too far (selection bias). The chosen frames keep their own poses.

Frames older than `max_age_s` are dropped. A pose that jumps (the camera centre moves more
than `jump_ratio` times the median step of the stored frames and more than `jump_min_m`: an
odometry glitch or a dropped stretch of frames) starts a new window: depth is not computed
across a pose the images cannot confirm. No frame far enough away (a static or purely rotating
camera) gives no sources: the caller reports "no motion".
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from dvc_perception.errors import ConfigError, InputError, ShapeError
from dvc_perception.geometry.se3 import check_rigid_transform


@dataclass(frozen=True)
class KeyframeRule:
    """How source frames are chosen (see the module docstring). Lengths in m, angles in deg."""

    min_baseline_m: float = 0.03
    max_baseline_m: float = 0.5
    baseline_growth: float = 1.5
    max_rotation_deg: float = 30.0
    max_sources: int = 4
    max_frames: int = 60
    max_age_s: float = 5.0
    jump_ratio: float = 4.0
    jump_min_m: float = 0.015
    position_smoothing: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.min_baseline_m < self.max_baseline_m:
            raise ConfigError("keyframes: expected 0 < min_baseline_m < max_baseline_m, got "
                              f"{self.min_baseline_m} and {self.max_baseline_m}")
        if self.baseline_growth < 1.0:
            raise ConfigError("keyframes.baseline_growth: expected >= 1, got "
                              f"{self.baseline_growth}")
        if not 0.0 < self.max_rotation_deg <= 90.0:
            raise ConfigError("keyframes.max_rotation_deg: expected in (0, 90], got "
                              f"{self.max_rotation_deg}")
        if self.jump_ratio <= 1.0 or self.jump_min_m <= 0.0:
            raise ConfigError("keyframes: expected jump_ratio > 1 and jump_min_m > 0, got "
                              f"{self.jump_ratio} and {self.jump_min_m}")
        if self.position_smoothing < 0:
            raise ConfigError("keyframes.position_smoothing: expected >= 0 frames, got "
                              f"{self.position_smoothing}")
        if self.max_sources < 1 or self.max_frames < 2 or self.max_age_s <= 0.0:
            raise ConfigError("keyframes: expected max_sources >= 1, max_frames >= 2 and "
                              f"max_age_s > 0, got {self.max_sources}, {self.max_frames}, "
                              f"{self.max_age_s}")


@dataclass
class Frame:
    """One stored frame.

    Attributes:
        stamp: s.
        grey: (h, w) float32 in [0, 1] at the internal resolution.
        camera_to_world: (4, 4) float64, the camera optical frame's pose in the world frame [m].
        features: keypoints (M, 2) float64 px at the internal resolution and descriptors
            (M, 128) float32, or None until computed.
    """

    stamp: float
    grey: np.ndarray
    camera_to_world: np.ndarray
    features: tuple[np.ndarray, np.ndarray] | None = None


def check_pose(camera_to_world: np.ndarray, *, name: str = "camera pose") -> np.ndarray:
    """`camera_to_world` as a (4, 4) float64 rigid transform (`se3.check_rigid_transform`).

    Raises:
        ShapeError: not (4, 4).
        InputError: NaN/inf, a last row other than [0, 0, 0, 1], or a rotation part that is not
            a rotation (to 1e-3).
    """
    return check_rigid_transform(camera_to_world, name)


class KeyframeWindow:
    """Recent frames (oldest first), bounded by count and age."""

    def __init__(self, rule: KeyframeRule) -> None:
        self.rule = rule
        self.frames: deque[Frame] = deque(maxlen=rule.max_frames)

    def reset(self) -> None:
        """Forget every frame (a new image size, a jump back in time)."""
        self.frames.clear()

    def add(self, frame: Frame) -> None:
        """Store `frame`, dropping frames older than ``max_age_s`` before it.

        Raises:
            InputError: a stamp not after the newest stored frame's (the caller resets on a jump
                back in time).
        """
        if self.frames and frame.stamp <= self.frames[-1].stamp:
            raise InputError(f"frame stamp {frame.stamp:.6f} s: expected after the previous "
                             f"frame's {self.frames[-1].stamp:.6f} s")
        if self.is_jump(frame):
            self.frames.clear()
        while self.frames and frame.stamp - self.frames[0].stamp > self.rule.max_age_s:
            self.frames.popleft()
        self.frames.append(frame)

    def is_jump(self, frame: Frame) -> bool:
        """Whether `frame`'s pose jumps from the newest stored frame's (see the module rule)."""
        if len(self.frames) < 3:
            return False
        centres = np.array([f.camera_to_world[:3, 3] for f in self.frames])
        typical = float(np.median(np.linalg.norm(np.diff(centres, axis=0), axis=1)))
        step = float(np.linalg.norm(frame.camera_to_world[:3, 3] - centres[-1]))
        return step > max(self.rule.jump_ratio * typical, self.rule.jump_min_m)

    def select_sources(self, ref: Frame) -> list[Frame]:
        """Source frames for `ref` by the module's rule, nearest baseline first."""
        rule = self.rule
        frames = list(self.frames)
        centres = smoothed_centres(frames, rule.position_smoothing)
        c_ref = next((c for f, c in zip(frames, centres) if f is ref), ref.camera_to_world[:3, 3])
        z_ref = ref.camera_to_world[:3, 2]
        cos_max = math.cos(math.radians(rule.max_rotation_deg))
        chosen: list[Frame] = []
        last = 0.0
        for frame, centre in zip(reversed(frames), centres[::-1]):
            if frame is ref or frame.stamp >= ref.stamp:
                continue
            baseline = float(np.linalg.norm(centre - c_ref))
            if baseline > rule.max_baseline_m:
                break
            if baseline < rule.min_baseline_m or baseline < rule.baseline_growth * last:
                continue
            if float(frame.camera_to_world[:3, 2] @ z_ref) < cos_max:
                continue
            chosen.append(frame)
            last = baseline
            if len(chosen) == rule.max_sources:
                break
        return chosen


def smoothed_centres(frames: list[Frame], half_width: int) -> np.ndarray:
    """(N, 3) camera centres [m] of `frames` (oldest first), each from a constant-velocity fit.

    Frame i's centre is the least-squares line over time through the ``2 * half_width + 1``
    consecutive frames around it (centred where the list allows, shifted at its ends), evaluated
    at frame i's stamp: a camera at constant velocity keeps its exact centres, while independent
    per-frame noise shrinks (to 1/3 of its variance inside the list for `half_width` 1). 0, or
    fewer than 3 frames: the frames' own centres.
    """
    c = np.array([f.camera_to_world[:3, 3] for f in frames], np.float64).reshape(-1, 3)
    n, span = len(frames), 2 * half_width + 1
    if half_width == 0 or n < 3:
        return c
    span = min(span, n)
    t = np.array([f.stamp for f in frames], np.float64)
    lo = np.clip(np.arange(n) - half_width, 0, n - span)
    idx = lo[:, None] + np.arange(span)[None, :]  # (N, span) each frame's neighbours
    ts, cs = t[idx], c[idx]  # (N, span), (N, span, 3)
    dt = ts - ts.mean(axis=1, keepdims=True)
    velocity = np.einsum("ns,nsk->nk", dt, cs) / np.sum(dt * dt, axis=1)[:, None]
    return cs.mean(axis=1) + velocity * (t - ts.mean(axis=1))[:, None]


def relative_pose(ref: Frame, src: Frame) -> np.ndarray:
    """(4, 4) transform taking points from `ref`'s camera frame into `src`'s camera frame."""
    if ref.grey.shape != src.grey.shape:
        raise ShapeError(f"frames: expected one image size, got {ref.grey.shape} and "
                         f"{src.grey.shape}")
    return np.linalg.inv(src.camera_to_world) @ ref.camera_to_world

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Depth from motion for one frame at a time: the estimator the pipeline's depth slot runs.

`MotionDepthEstimator.estimate(image, K, camera_to_world, stamp)` stores the frame, picks source
frames (`keyframes`), refines the relative poses (`pose_refine`), sweeps (`sweep`) at the
internal resolution (`internal_width`, aspect kept), and returns depth at the input resolution:
each output pixel takes the depth of the internal pixel it falls in (nearest: no surface is
invented across a depth edge), NaN where the confidence is below `min_confidence` or no source
saw the pixel (REP 118). Without a source frame (first frame, static or purely rotating camera:
no stored frame far enough by the odometry, or none whose matched features show
`min_parallax_px` of parallax after the adjustment) the depth is all NaN and the status says
why, unless the last depth frame's fused depth can be carried into it (``carried``).

Given a learned refiner (an object with `DepthRefiner.refine`'s signature: the pipeline passes
`pipeline.depth_refiner.DepthRefiner`, an ONNX model through the engines layer), the estimator
densifies the fused classical depth with it at the internal resolution before the upsampling;
its confidence then replaces the classical one (NaN below `refiner_min_confidence`). Without one
(the default): classical only.

With ``record=True`` the estimator keeps each depth frame's `WindowRecord` (`last_window`): the
refiner's input and the swept sources with their adjusted poses, what self-supervised adaptation
of the refiner (`train.adapt_refiner`) learns from.

Constructing an estimator asks glibc's malloc to keep freed memory for reuse
(`keep_freed_memory`, process-wide, once): every frame allocates and frees the same large
buffers (SIFT's pyramids in OpenCV, the cost volumes, the kernels' scratch arrays), and with
glibc's defaults their pages went back to the system and faulted in again, zeroed, each frame.
"""

from __future__ import annotations

import ctypes
import dataclasses
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from dvc_perception.errors import ConfigError, InputError, check_shape
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.motion_depth.keyframes import (
    Frame,
    KeyframeRule,
    KeyframeWindow,
    check_pose,
    relative_pose,
)
from dvc_perception.motion_depth.pose_refine import (
    PoseRefineSettings,
    ScaleEvidence,
    features,
    fused_log_scale,
    refine_window,
)
from dvc_perception.motion_depth.sweep import SweepResult, SweepSettings, plane_sweep_depth


class Refiner(Protocol):
    """A learned depth refiner (`pipeline.depth_refiner.DepthRefiner`)."""

    def refine(self, grey: np.ndarray, depth: np.ndarray, confidence: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Refined (depth [m], confidence in [0, 1]), both (h, w) float32.

        From grey (h, w) in [0, 1], the classical depth (h, w) [m] (NaN unknown) and its
        confidence (h, w).
        """
        ...

#: Windows over which the two scale witnesses' variances are pooled (median; `_rescaled`).
SCALE_POOL_WINDOWS = 10

#: `MotionDepthResult.status` values.
STATUS_OK = "ok"
STATUS_NO_MOTION = "no_motion"
STATUS_FIRST_FRAME = "first_frame"
#: No source this frame, but the fused depth of the last depth frame moved into it
#: (`MotionDepthEstimator._carried`): depth where pixels are younger than
#: `max_unmeasured_frames`.
STATUS_CARRIED = "carried"


@dataclass(frozen=True)
class MotionDepthSettings:
    """Everything the estimator needs (see each part's module)."""

    internal_width: int = 320
    min_confidence: float = 0.2
    temporal_fusion: bool = True
    match_sigma_px: float = 1.0
    process_noise: float = 0.02
    max_relative_std: float = 0.1
    max_unmeasured_frames: int = 5
    max_sweep_sources: int = 3
    #: A source whose matches moved less than this (median, internal px) beyond what the
    #: rotation explains shows no measurable translation (see `_sources_that_moved`).
    min_parallax_px: float = 3.0
    #: Filter the depth's metric scale over frames (`_carry_scale`: a 1-D Kalman filter on the
    #: log scale, the relative scale of two frames measured by their depths, each window's own
    #: scale weighted by its variance: `window_scale_variance` of the assumed odometry noise,
    #: plus, where the adjustment ran, what the images measure of the odometry's error in the
    #: window, `PoseRefineResult.scale_variance`). False: each frame takes its window's scale
    #: alone. It needs `PoseRefineSettings.solve_scale` (then the windows' scales are the
    #: odometry's, which the filter averages over frames); without it, it carries the first
    #: windows' unconverged scales on (issue 22).
    scale_filter: bool = True
    keyframes: KeyframeRule = field(default_factory=KeyframeRule)
    sweep: SweepSettings = field(default_factory=SweepSettings)
    pose_refine: PoseRefineSettings = field(default_factory=PoseRefineSettings)
    #: With a refiner: pixels whose refined confidence (the probability that the depth is
    #: within about 10 %) is lower are NaN.
    refiner_min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.internal_width < 16:
            raise ConfigError(f"internal_width: expected >= 16 px, got {self.internal_width}")
        if not 0.0 <= self.min_confidence < 1.0:
            raise ConfigError(f"min_confidence: expected in [0, 1), got {self.min_confidence}")
        if not 0.0 <= self.refiner_min_confidence < 1.0:
            raise ConfigError("refiner_min_confidence: expected in [0, 1), got "
                              f"{self.refiner_min_confidence}")
        if not self.min_parallax_px >= 0.0:
            raise ConfigError(f"min_parallax_px: expected >= 0, got {self.min_parallax_px}")
        if self.max_unmeasured_frames < 0:
            raise ConfigError("max_unmeasured_frames: expected >= 0, got "
                              f"{self.max_unmeasured_frames}")
        if self.match_sigma_px <= 0.0 or self.process_noise < 0.0 or self.max_relative_std <= 0:
            raise ConfigError("expected match_sigma_px > 0, process_noise >= 0 and "
                              f"max_relative_std > 0, got {self.match_sigma_px}, "
                              f"{self.process_noise} and {self.max_relative_std}")


@dataclass(frozen=True)
class MotionDepthResult:
    """Depth of one frame.

    Attributes:
        depth: (H, W) float32 m at the input resolution, NaN where unknown.
        confidence: (H, W) float32 in [0, 1] (0 where unknown).
        status: ``ok``, ``no_motion`` (no stored frame far enough, or none whose matches show
            `min_parallax_px` of parallax: a static or rotating camera), ``carried`` (no_motion,
            but the last depth frame's fused depth moved into this one: `STATUS_CARRIED`) or
            ``first_frame``.
        sources: source frames used (those with parallax, `_sources_that_moved`).
        pose_refined: whether the window adjustment corrected the odometry's poses.
        median_error_px: the adjustment's median reprojection error (internal px; NaN if not run).
        timings: ms per stage (``features``, ``poses``, ``sweep``, ``refiner`` when a refiner
            runs, ``total``).
        note: why there is no depth where the status alone does not say it (empty otherwise).
    """

    depth: np.ndarray
    confidence: np.ndarray
    status: str
    sources: int
    pose_refined: bool
    median_error_px: float
    timings: dict[str, float]
    note: str = ""


@dataclass(frozen=True)
class WindowRecord:
    """What one depth frame's window gave, at the internal resolution (h, w) (``record=True``).

    Attributes:
        grey: (h, w) float32 reference image in [0, 1].
        depth: (h, w) float32 the refiner's input depth [m] (NaN unknown; `Refiner.refine`).
        confidence: (h, w) float32 its input confidence in [0, 1].
        sources: the swept source frames (their ``grey`` (h, w), same camera).
        poses: per source, (4, 4) reference camera -> source camera [m], as adjusted by the
            window bundle adjustment, its translation at `depth`'s scale (the scale filter's
            factor applied: warping `grey` with `depth` and these poses is consistent).
        K: (3, 3) intrinsics at (w, h) [px].
    """

    grey: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray
    sources: tuple[Frame, ...]
    poses: tuple[np.ndarray, ...]
    K: np.ndarray


def internal_size(width: int, height: int, internal_width: int) -> tuple[int, int]:
    """(w, h) of the internal images: `internal_width` wide (never upsampled), aspect kept."""
    w = min(internal_width, width)
    return w, max(1, round(height * w / width))


@dataclass
class _FusionState:
    """The fused inverse depth (h, w) [1/m] of `frame` and its variance (NaN: unknown).

    `age` (h, w) int32: frames since each pixel was last measured.
    """

    frame: Frame
    inv_depth: np.ndarray
    variance: np.ndarray
    age: np.ndarray
    scale_variance: float = float("inf")


def window_scale_variance(poses: list[np.ndarray], sigma_m: float) -> float:
    """Variance of the log of a window's metric scale taken from noisy odometry.

    `poses`: reference -> source (4, 4) [m] of the sources the scale was fitted to. The scale
    is the least-squares factor between the odometry's baselines and the images' (all sources
    share it); each frame's position has independent noise `sigma_m` [m] per axis, the
    reference's common to every baseline, so a window's scale is known to about
    ``sigma_m * sqrt(|sum b|**2 + sum |b|**2) / sum |b|**2`` (b: the baselines). inf without a
    baseline.
    """
    b = np.array([-T[:3, :3].T @ T[:3, 3] for T in poses]).reshape(-1, 3)
    ss = float(np.sum(b * b))
    if ss <= 0.0:
        return float("inf")
    return sigma_m ** 2 * (float(np.sum(b.sum(axis=0) ** 2)) + ss) / ss ** 2


def _spread(n: int, k: int) -> list[int]:
    """Indices of `k` of `n` sources (nearest baseline first) spread evenly, both ends kept."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [n - 1]


def _sources_that_moved(parallax_px: list[float], min_px: float) -> list[int]:
    """Indices of the sources whose parallax is at least `min_px` (NaN: not measured, kept).

    Odometry can claim a baseline the camera did not travel (noise on a slow or turning camera);
    a sweep over it turns matching noise into depth at a made-up scale. A source is kept only
    where the window adjustment saw its matches move at least `min_px` (median) beyond what the
    rotation explains: at 1 px of matching noise the median pixel's depth is then known to about
    a third before fusion.
    """
    return [i for i, p in enumerate(parallax_px) if not p < min_px]


#: glibc's `mallopt` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Whether `keep_freed_memory` has run (None: not yet; then whether glibc took the settings).
_KEPT: bool | None = None


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Let glibc's malloc reuse freed memory instead of giving it back (process-wide, once).

    With glibc's defaults a block above its mmap threshold gets its own mapping, unmapped when
    freed, and free memory at the top of a heap beyond the trim threshold is returned to the
    system; either way the next frame's same-sized buffers fault their pages in again, zeroed.
    Per keyframe (320x240, 3 swept sources) that was ~3400 page faults and ~4 ms of CPU, about
    two thirds of them in SIFT (OpenCV's pyramids, not ours to keep). Blocks up to
    `mmap_threshold` bytes (32 MiB: glibc's maximum; a cost volume is 20 MB) now come from the
    heaps, and up to `trim_threshold` bytes (64 MiB) of free memory stay in each heap: the
    process keeps its per-frame peak allocated. Linux with glibc only (elsewhere nothing is
    done); returns whether glibc took both settings.
    """
    global _KEPT
    if _KEPT is None:
        _KEPT = False
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform == "linux" else None
        if mallopt is not None:
            _KEPT = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
                mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _KEPT


def _no_depth(status: str, size: tuple[int, int], t0: float, was_refined: bool = False,
              err: float = float("nan"), note: str = "") -> MotionDepthResult:
    """A frame's result without depth (all NaN, confidence 0) at the output `size` (W, H)."""
    W, H = size
    return MotionDepthResult(np.full((H, W), np.nan, np.float32), np.zeros((H, W), np.float32),
                             status, 0, was_refined, err,
                             {"total": 1e3 * (time.perf_counter() - t0)}, note)


def _describe(frames: list[Frame], settings: PoseRefineSettings) -> None:
    """Give each of `frames` that has none its `pose_refine.features` (kept on the frame)."""
    for f in frames:
        if f.features is None:
            f.features = features(f.grey, settings.max_features, settings.octave_layers)


def _translations_scaled(poses: list[np.ndarray], k: float) -> list[np.ndarray]:
    """Copies of `poses` (4, 4) [m] with their translations times `k`."""
    out = []
    for T in poses:
        T = T.copy()
        T[:3, 3] *= k
        out.append(T)
    return out


class MotionDepthEstimator:
    """Stateful: keeps the recent frames of one camera (oldest dropped by the keyframe rule)."""

    def __init__(self, settings: MotionDepthSettings | None = None,
                 refiner: Refiner | None = None, record: bool = False) -> None:
        """`refiner`: the learned refiner run on the fused depth; None: classical only.

        `record`: keep the last depth frame's `WindowRecord` in `last_window` (None after a
        frame without depth). Calls `keep_freed_memory` (module docstring).
        """
        keep_freed_memory()
        self.settings = settings or MotionDepthSettings()
        self.refiner = refiner
        self.record = record
        self.last_window: WindowRecord | None = None
        self.window = KeyframeWindow(self.settings.keyframes)
        self._size: tuple[int, int] | None = None
        self._state: _FusionState | None = None
        self._scale_variances: deque[tuple[float, float]] = deque(maxlen=SCALE_POOL_WINDOWS)

    def reset(self) -> None:
        """Forget the stored frames."""
        self.window.reset()
        self._size = None
        self._state = None
        self._scale_variances.clear()

    def estimate(self, image_rgb: np.ndarray, K: np.ndarray, camera_to_world: np.ndarray,
                 stamp: float) -> MotionDepthResult:
        """Depth of `image_rgb` (H, W, 3) uint8, taken at `stamp` [s].

        The camera has pinhole intrinsics `K` (3, 3) [px]; its optical frame is at
        `camera_to_world` (4, 4) [m].

        A new image size or a stamp not after the previous frame's (a bag played again) starts a
        new window. Raises `InputError` / `ShapeError` for a bad image, K, pose or stamp.
        """
        t0 = time.perf_counter()
        self.last_window = None
        check_shape(image_rgb, "H,W,3", name="image")
        K = np.asarray(K, np.float64)
        check_shape(K, "3,3", name="K")
        if not (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0):
            raise InputError("K: expected finite intrinsics with fx, fy > 0")
        pose = check_pose(camera_to_world)
        if not np.isfinite(stamp):
            raise InputError(f"stamp: expected a finite time, got {stamp}")
        H, W = image_rgb.shape[:2]
        size = internal_size(W, H, self.settings.internal_width)
        frames = self.window.frames
        if self._size != (W, H) or (frames and stamp <= frames[-1].stamp):
            self.reset()
            self._size = (W, H)
        grey = cv2.cvtColor(np.ascontiguousarray(image_rgb, np.uint8), cv2.COLOR_RGB2GRAY)
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        ref = Frame(float(stamp), grey, pose)
        self.window.add(ref)
        sources = self.window.select_sources(ref)
        Ks = CameraModel(K, np.zeros(0), W, H).resized(*size).K.numpy()  # exact pixel centres
        state = self._state if self._state is not None and any(
            f is self._state.frame for f in self.window.frames) else None
        if not sources:
            if len(self.window.frames) == 1:
                return _no_depth(STATUS_FIRST_FRAME, (W, H), t0)
            return self._carried(ref, state, Ks, (W, H), t0, False, float("nan"), "")
        t1 = time.perf_counter()
        pr = self.settings.pose_refine
        adjusted = list(sources)
        if state is not None and all(f is not state.frame for f in sources):
            adjusted.append(state.frame)
        if pr.enabled:
            _describe([ref, *adjusted], pr)
        t2 = time.perf_counter()
        odometry = [relative_pose(ref, f) for f in adjusted]
        if pr.enabled:
            refined = refine_window(ref.features, [f.features for f in adjusted], odometry, Ks,
                                    pr)
            poses, was_refined, err = refined.poses, refined.refined, refined.median_error_px
            parallax = refined.parallax_px
            if refined.scale_evidence is not None:
                poses = self._rescaled(poses, refined.scale_evidence)
        else:
            poses, was_refined, err = odometry, False, float("nan")
            parallax = [float("nan")] * len(poses)
        # the (adjusted) pose to the fusion's frame, which `adjusted` holds whenever there is one
        to_state = (None if state is None
                    else poses[[f is state.frame for f in adjusted].index(True)])
        moved = _sources_that_moved(parallax[:len(sources)], self.settings.min_parallax_px)
        if not moved:
            nearest_cm = 100.0 * float(np.linalg.norm(odometry[0][:3, 3]))
            note = (f"the odometry moved the camera {nearest_cm:.1f} cm or more from "
                    f"{len(sources)} earlier frame(s), but their matched features show at most "
                    f"{np.nanmax(parallax[:len(sources)]):.1f} px of parallax "
                    f"(min_parallax_px {self.settings.min_parallax_px:g}): odometry noise or a "
                    "turning camera, not a baseline")
            return self._carried(ref, state, Ks, (W, H), t0, was_refined, err, note,
                                 to_state if was_refined else None)
        t3 = time.perf_counter()
        swept = [moved[i] for i in _spread(len(moved), self.settings.max_sweep_sources)]
        result = plane_sweep_depth(ref.grey, [sources[i].grey for i in swept],
                                   [poses[i] for i in swept], Ks, self.settings.sweep)
        measured = (result.confidence >= self.settings.min_confidence) & (result.seen > 0)
        to_depth_scale = 1.0  # the factor the scale filter applies to this sweep's depth
        if self.settings.temporal_fusion:
            baseline = max(float(np.linalg.norm(poses[i][:3, 3])) for i in moved)
            prior = None
            if state is not None:
                to_ref = np.linalg.inv(to_state)
                prior = self._predict(state, to_ref, Ks)
            scale_var = float("inf")
            if self.settings.scale_filter:
                # the adjustment fits one scale to all its sources; without it, the swept ones
                scaled = poses if was_refined else [poses[i] for i in swept]
                # translation_sigma_m is a relative pose's: two frames' independent noise
                scale_var = window_scale_variance(scaled, pr.translation_sigma_m / np.sqrt(2.0))
                if was_refined and np.isfinite(refined.scale_variance):
                    # and what the images measured of the odometry's error in this window
                    scale_var += refined.scale_variance
                if prior is not None:
                    swept_baseline = baseline
                    result, prior, baseline, scale_var = self._carry_scale(
                        result, measured, prior, baseline, scale_var, state.scale_variance)
                    to_depth_scale = baseline / swept_baseline
            inv_depth, variance, age = self._fuse(result, measured, baseline, Ks, prior)
            self._state = _FusionState(ref, inv_depth, variance, age, scale_var)
            depth_small, conf_small = self._fused_output(inv_depth, variance)
        else:
            depth_small = np.where(measured, result.depth, np.nan).astype(np.float32)
            conf_small = np.where(measured, result.confidence, 0.0)
        t4 = time.perf_counter()
        timings = {"features": 1e3 * (t2 - t1), "poses": 1e3 * (t3 - t2),
                   "sweep": 1e3 * (t4 - t3)}
        if self.record:
            depth_in, conf_in = self._refiner_inputs(depth_small, conf_small)
            scaled = _translations_scaled([poses[i] for i in swept], to_depth_scale)
            self.last_window = WindowRecord(ref.grey, depth_in, conf_in,
                                            tuple(sources[i] for i in swept), tuple(scaled),
                                            Ks.copy())
        depth, confidence = self._output(ref, depth_small, conf_small, (W, H), timings, t0)
        return MotionDepthResult(depth, confidence, STATUS_OK, len(moved), was_refined, err,
                                 timings)

    def _fused_output(self, inv_depth: np.ndarray, variance: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """The fused state's (depth (h, w) float32 m, confidence (h, w)).

        NaN depth and 0 confidence where the depth's relative std exceeds `max_relative_std`;
        else confidence 1 - relative std / `max_relative_std`.
        """
        rel_std = np.sqrt(variance) * np.where(inv_depth > 0, 1.0 / inv_depth, np.inf)
        keep = np.isfinite(inv_depth) & (rel_std <= self.settings.max_relative_std)
        depth_small = np.where(keep, 1.0 / inv_depth, np.nan).astype(np.float32)
        return depth_small, np.where(keep, 1.0 - rel_std / self.settings.max_relative_std, 0.0)

    def _output(self, ref: Frame, depth_small: np.ndarray, conf_small: np.ndarray,
                size: tuple[int, int], timings: dict[str, float], t0: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """(depth, confidence) at the output `size` (W, H) from the internal resolution's.

        The refiner first, when there is one (timed as ``refiner``), then the nearest
        upsampling (module docstring); sets ``total`` (since `t0`) in `timings`.
        """
        if self.refiner is not None:
            t = time.perf_counter()
            depth_small, conf_small = self._refine(ref.grey, depth_small, conf_small)
            timings["refiner"] = 1e3 * (time.perf_counter() - t)
        depth = cv2.resize(depth_small, size, interpolation=cv2.INTER_NEAREST)
        confidence = cv2.resize(conf_small.astype(np.float32), size,
                                interpolation=cv2.INTER_NEAREST)
        timings["total"] = 1e3 * (time.perf_counter() - t0)
        return depth, confidence

    def _carried(self, ref: Frame, state: _FusionState | None, Ks: np.ndarray,
                 size: tuple[int, int], t0: float, was_refined: bool, err: float, note: str,
                 to_state: np.ndarray | None = None) -> MotionDepthResult:
        """A frame without a source: ``carried`` depth if the fusion has some, else ``no_motion``.

        With temporal fusion, the last depth frame's fused inverse depth (`state`, still in the
        window) is moved into `ref` (`_predict`) by the odometry's relative pose, corrected by
        the window adjustment (the caller's, `to_state`, which had that frame among its
        sources; else one with that frame as the one source) where pose refinement is on (a
        noisy odometry rotation would misplace the depth, and the next frames' fusion with
        it), as the fusion does with the pixels a sweep did not measure: each keeps it for
        `max_unmeasured_frames` frames since it was measured, then it is unknown (something
        may have moved there). A camera that slows down for a few frames keeps its depth; one
        that stands still loses it after `max_unmeasured_frames`. `ref` becomes the fusion's
        frame. `size`: output (W, H). `to_state`: the pose ref -> that frame as the caller's
        window adjustment already refined it (the frame was one of its sources), else None.
        """
        if not self.settings.temporal_fusion or state is None:
            return _no_depth(STATUS_NO_MOTION, size, t0, was_refined, err, note)
        pr = self.settings.pose_refine
        if to_state is None:
            to_state = relative_pose(ref, state.frame)
            if pr.enabled:
                _describe([ref, state.frame], pr)
                to_state = refine_window(ref.features, [state.frame.features], [to_state], Ks,
                                         pr).poses[0]
        inv_depth, variance, age = self._predict(state, np.linalg.inv(to_state), Ks)
        known = np.isfinite(inv_depth) & (age < self.settings.max_unmeasured_frames)
        if not known.any():
            return _no_depth(STATUS_NO_MOTION, size, t0, was_refined, err, note)
        inv_depth = np.where(known, inv_depth, np.nan).astype(np.float32)
        variance = np.where(known, variance, np.nan).astype(np.float32)
        age = np.where(known, age + 1, -1).astype(np.int32)
        self._state = _FusionState(ref, inv_depth, variance, age, state.scale_variance)
        depth_small, conf_small = self._fused_output(inv_depth, variance)
        timings: dict[str, float] = {}
        depth, confidence = self._output(ref, depth_small, conf_small, size, timings, t0)
        return MotionDepthResult(depth, confidence, STATUS_CARRIED, 0, was_refined, err,
                                 timings, note)

    def _rescaled(self, poses: list[np.ndarray], evidence: ScaleEvidence) -> list[np.ndarray]:
        """`poses` (4, 4) with their translations times the fused scale of `evidence`.

        `pose_refine.fused_log_scale` with each witness's variance the median over the last
        `SCALE_POOL_WINDOWS` windows (this one included).
        """
        self._scale_variances.append((evidence.structure_variance,
                                      evidence.translation_variance))
        pooled = np.median(np.array(self._scale_variances), axis=0)
        k = float(np.exp(fused_log_scale(evidence, float(pooled[0]), float(pooled[1]))))
        return _translations_scaled(poses, k)

    def _refine(self, grey: np.ndarray, depth_small: np.ndarray, conf_small: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """The refined (depth (h, w) m, NaN below `refiner_min_confidence`; confidence).

        Its input is the fused inverse depth of every pixel the fusion knows (input confidence
        `learned_refiner.fused_confidence`, not cut at `max_relative_std`), or without temporal
        fusion the classical output (`depth_small`, `conf_small`: this frame's measured sweep).
        """
        assert self.refiner is not None
        depth_in, conf_in = self._refiner_inputs(depth_small, conf_small)
        depth, confidence = self.refiner.refine(grey, depth_in, conf_in)
        keep = np.isfinite(depth) & (confidence >= self.settings.refiner_min_confidence)
        return (np.where(keep, depth, np.nan).astype(np.float32),
                np.where(keep, confidence, 0.0).astype(np.float32))

    def _refiner_inputs(self, depth_small: np.ndarray, conf_small: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """The refiner's input (depth (h, w) float32 m, NaN unknown; confidence (h, w) float32).

        As `_refine` describes it: the fused state's, or without fusion the classical output.
        """
        from dvc_perception.motion_depth.learned_refiner import fused_confidence

        if self.settings.temporal_fusion and self._state is not None:
            inv = self._state.inv_depth
            with np.errstate(divide="ignore", invalid="ignore"):
                depth_in = np.where(inv > 0, 1.0 / inv, np.nan).astype(np.float32)
            return depth_in, fused_confidence(inv, self._state.variance)
        return depth_small, conf_small.astype(np.float32)

    def _carry_scale(self, result: SweepResult, measured: np.ndarray,
                     prior: tuple[np.ndarray, np.ndarray, np.ndarray], baseline_m: float,
                     window_var: float, prior_var: float
                     ) -> tuple[SweepResult, tuple[np.ndarray, np.ndarray, np.ndarray], float,
                                float]:
        """This frame's sweep and the predicted prior brought to one filtered metric scale.

        The scale is common to every pixel, so it is filtered as one number (the log of the
        depth's scale): the prior's log scale has variance `prior_var` plus
        ``process_noise ** 2`` (per frame), this window's `window_var`
        (`window_scale_variance`, plus `PoseRefineResult.scale_variance` where the adjustment
        ran); the two depth maps' median log ratio over the pixels both know is their relative
        scale (the images carry it from frame to frame far more precisely than the odometry
        gives it). Both are moved to the variance-weighted log scale. Too few common pixels
        (under 5 %): nothing is changed and the window's scale starts the filter again. Returns
        (sweep, prior, baseline [m] at the new scale, the filtered log scale's variance).
        """
        p, p_var, p_age = prior
        both = measured & np.isfinite(p) & (p > 0)
        if both.sum() < max(16, 0.05 * both.size):
            return result, prior, baseline_m, window_var
        log_ratio = float(np.median(np.log(p[both] * result.depth[both])))  # log(meas / prior)
        predicted = prior_var + self.settings.process_noise ** 2
        gain = predicted / (predicted + window_var)
        to_meas = np.exp((gain - 1.0) * log_ratio)  # measurement depth factor
        to_prior = np.exp(-gain * log_ratio)  # prior inverse depth factor
        result = dataclasses.replace(result, depth=(result.depth * to_meas).astype(np.float32))
        prior = (p * to_prior, p_var * to_prior ** 2, p_age)
        return (result, prior, baseline_m * to_meas,
                predicted * window_var / (predicted + window_var))

    def _predict(self, state: _FusionState, to_ref: np.ndarray, K: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The stored frame's fused inverse depth moved into the reference camera.

        `to_ref`: stored camera -> reference camera. The variance grows by the process noise;
        the age (frames since measured) is carried along.
        """
        from dvc_perception.motion_depth import _compiled

        A = K @ to_ref[:3, :3] @ np.linalg.inv(K)
        b = K @ to_ref[:3, 3]
        inv_depth, variance, age = _compiled.forward_warp(state.inv_depth, state.variance,
                                                          state.age, A, b)
        variance = variance + (self.settings.process_noise * inv_depth) ** 2
        return inv_depth, variance, age

    def _fuse(self, result: SweepResult, measured: np.ndarray, baseline_m: float, K: np.ndarray,
              prior: tuple[np.ndarray, np.ndarray, np.ndarray] | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inverse-variance fusion of this frame's measurement with the predicted prior.

        The measurement's inverse-depth std is ``match_sigma_px / (f * baseline)`` (one pixel of
        matching error at the longest baseline), at least half a plane step. Where the two
        disagree by more than 3 combined stds the measurement replaces the prior (the scene
        moved, or the prior was wrong); a pixel without a measurement keeps its prior for at most
        `max_unmeasured_frames` frames (then it is unknown: something may have moved there).
        Returns inverse depth, variance and age (frames since measured; 0: measured now).
        """
        settings = self.settings
        f = 0.5 * (K[0, 0] + K[1, 1])
        step = float(np.diff(settings.sweep.inverse_depths()[:2])[0])
        sigma = max(settings.match_sigma_px / (f * max(baseline_m, 1e-6)), 0.5 * step)
        if prior is None:
            meas = np.where(measured, 1.0 / result.depth, np.nan).astype(np.float32)
            meas_var = np.where(measured, sigma * sigma, np.nan).astype(np.float32)
            return meas, meas_var, np.where(measured, 0, -1).astype(np.int32)
        from dvc_perception.motion_depth import _compiled

        # agree: both known and within 3 combined stds (the inverse-variance mean); a pixel
        # only the prior knows keeps it (age + 1) while younger than max_unmeasured_frames;
        # one pass (`_compiled.fuse_prior`), the values numpy's expressions would give
        p, p_var, p_age = prior
        dtype = np.result_type(p, p_var)
        return _compiled.fuse_prior(result.depth, measured, np.float32(sigma * sigma),
                                    p.astype(dtype, copy=False), p_var.astype(dtype, copy=False),
                                    p_age.astype(np.int32, copy=False),
                                    settings.max_unmeasured_frames, dtype.type(1.0),
                                    dtype.type(9.0))

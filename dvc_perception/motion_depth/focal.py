# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Check the camera's focal length with its images and its (metric, known) camera poses.

Depth from motion scales with the focal length: a camera_info whose fx is 10 % off gives depth
10 % off everywhere. Given the poses, the focal length can be measured from the images alone
(no depth ground truth): for two frames i, j with the known relative pose ``X_j = R X_i + t``
(camera i -> camera j, optical frames, metres), a matched pixel pair (x_i, x_j) satisfies
``x_j^T F(f) x_i = 0`` with ``F(f) = K(f)^-T [t]x R K(f)^-1`` and ``K(f)`` the given K with
``fx = fy = f`` (principal point and skew fixed). `estimate_focal` minimises the Huber (1 px)
sum of the matches' Sampson distances [px] over f: a grid over `SEARCH_RANGE` x the given focal,
then Brent's method around the best grid point. Features and matches are the depth estimator's
own (`pose_refine.features`, `pose_refine.match`: SIFT, ratio test, RANSAC on an uncalibrated
fundamental matrix, which does not depend on f). Frame pairs are (k, k + g) for every
`every`-th frame k and each gap g in `gaps`.

The estimate is only as good as the poses: with exact poses it recovers f to under 0.1 % on
rendered sequences; pose noise biases it low (at 1 deg per frame it is meaningless). That is why
the verdict asks for agreement between windows of the sequence (`FocalVerdict`): a trajectory
error moves one window's estimate, a wrong camera_info moves all of them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import minimize_scalar

from dvc_perception.errors import ConfigError, InputError
from dvc_perception.motion_depth.pose_refine import PoseRefineSettings, features, match, skew

#: Relative difference beyond which the estimate "disagrees" with the given focal length: a 5 %
#: focal error is a 5 % error of every depth (AbsRel 0.05), and 5 % is above what the estimate
#: moves between 30-frame windows of the 7-Scenes kitchen with its own poses (499-536 px around
#: 515 for frames 0-121: +-3.6 %).
FOCAL_TOLERANCE = 0.05
#: Every window's estimate must lie within this fraction of the windows' median for a verdict:
#: pose errors move windows apart, a wrong camera_info moves them together. The same 5 %: windows
#: that differ by more than the effect to be detected cannot detect it.
WINDOW_AGREEMENT = 0.05
#: "disagrees" also needs the median |Sampson distance| at the estimate below this fraction of
#: the one at the given focal length: the estimate minimises the residual, so it is always lower;
#: 20 % lower means the given focal length visibly misfits the images rather than the minimum
#: having moved within the matches' noise (kitchen: 0.50 px at 515 against 0.75 px at 585).
RESIDUAL_RATIO = 0.8
#: Fewest frame pairs (with at least `min_matches` matches) of the whole sequence, and of a
#: window for it to get an estimate.
MIN_PAIRS = 10
MIN_WINDOW_PAIRS = 5
#: Smallest median rotation between the frames of a pair [deg]. The focal length shows mainly
#: in how a rotation moves the pixels (the flow of a rotation by a at the image edge grows with
#: (x - cx)^2 / f); without rotation only the epipole's position says f, which is the
#: translation's direction, i.e. the poses' least accurate part.
MIN_ROTATION_DEG = 1.0
#: Pairs with a smaller baseline [m] are left out: their translation's direction is noise.
MIN_BASELINE_M = 1e-3
#: Search range of f, as factors of the given focal length (585 px -> 351-848 px).
SEARCH_RANGE = (0.6, 1.45)
#: Points of the coarse grid over `SEARCH_RANGE` (about 10 px apart at 585 px).
GRID_POINTS = 51
#: Huber threshold of the Sampson distances [px].
HUBER_PX = 1.0


class FocalVerdict(str, enum.Enum):
    """What the images say about the given focal length (the rule: `estimate_focal`)."""

    CONSISTENT = "consistent"
    DISAGREES = "disagrees"
    UNDETERMINED = "undetermined"


@dataclass(frozen=True)
class FocalWindow:
    """The estimate of the pairs with both frames in positions ``first..last`` (inclusive).

    Attributes:
        first, last: positions in the frame sequence (0-based).
        pairs, matches: frame pairs and matches used.
        f_px: the window's estimate [px]; None with fewer than `MIN_WINDOW_PAIRS` pairs.
        bracketed: the minimum lies inside the search range (not at an end).
    """

    first: int
    last: int
    pairs: int
    matches: int
    f_px: float | None
    bracketed: bool


@dataclass(frozen=True)
class FocalEstimate:
    """Result of `estimate_focal` (lengths in px, at the images' resolution).

    Attributes:
        f_px: estimate of fx = fy of the whole sequence (principal point fixed).
        nominal_f_px: the given K's focal length, (fx + fy) / 2.
        relative_difference: f_px / nominal_f_px - 1.
        windows: per-window estimates, in frame order.
        window_median_px: median of the windows' estimates (None: no window estimated).
        window_spread: largest |window estimate / window median - 1| (None: fewer than 2).
        residual_px: median |Sampson distance| of the matches at f_px.
        nominal_residual_px: the same with the given K.
        frames, pairs, matches: frames read, frame pairs and matches used.
        median_rotation_deg: median rotation between the frames of the pairs used.
        bracketed: the whole-sequence minimum lies inside the search range.
        verdict, reason: the verdict and why, in one sentence.
    """

    f_px: float
    nominal_f_px: float
    relative_difference: float
    windows: tuple[FocalWindow, ...]
    window_median_px: float | None
    window_spread: float | None
    residual_px: float
    nominal_residual_px: float
    frames: int
    pairs: int
    matches: int
    median_rotation_deg: float
    bracketed: bool
    verdict: FocalVerdict
    reason: str


def _grey(image: np.ndarray, position: int) -> np.ndarray:
    """(H, W) float32 in [0, 1] of a grey or RGB, uint8 or [0, 1] float image."""
    img = np.asarray(image)
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)) or min(img.shape[:2]) < 8:
        raise InputError(f"frame {position}: expected a grey (H, W) or RGB (H, W, 3) image, "
                         f"got shape {img.shape}")
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(img.dtype, np.floating):
        img = img.astype(np.float32)
    else:
        raise InputError(f"frame {position}: expected a uint8 or float image, got {img.dtype}")
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img


def _pose(T: np.ndarray, position: int) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise InputError(f"frame {position}: expected a finite (4, 4) camera-to-world pose, "
                         f"got shape {T.shape}" + ("" if T.shape != (4, 4) else " with NaN/inf"))
    return T


def _k_of(K: np.ndarray, f: float) -> np.ndarray:
    Kf = K.copy()
    Kf[0, 0] = Kf[1, 1] = f
    return Kf


def sampson_px(K: np.ndarray, R: np.ndarray, t: np.ndarray, x1: np.ndarray,
               x2: np.ndarray) -> np.ndarray:
    """Signed Sampson distances (M,) [px] of ``x2^T F x1 = 0``, ``F = K^-T [t]x R K^-1``.

    x1 (M, 2) are pixels of camera 1, x2 (M, 2) their matches in camera 2, K (3, 3) [px], and
    (R (3, 3), t (3,)) camera 1 -> camera 2: ``X_2 = R X_1 + t``.
    """
    Ki = np.linalg.inv(K)
    F = Ki.T @ skew(np.asarray(t, dtype=np.float64)[None])[0] @ R @ Ki
    h1 = np.c_[x1, np.ones(len(x1))]
    h2 = np.c_[x2, np.ones(len(x2))]
    Fx1 = h1 @ F.T
    Ftx2 = h2 @ F
    e = np.einsum("ij,ij->i", h2, Fx1)
    den = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    return e / np.sqrt(np.maximum(den, 1e-300))


def _huber(d: np.ndarray, k: float) -> float:
    a = np.abs(d)
    return float(np.where(a <= k, 0.5 * a * a, k * (a - 0.5 * k)).sum())


def estimate_focal(
    frames: Iterable[tuple[np.ndarray, np.ndarray]],
    K: np.ndarray,
    *,
    window: int = 30,
    gaps: Sequence[int] = (5, 10, 15),
    every: int = 2,
    max_features: int = 3000,
    min_matches: int = 20,
    ransac_px: float = 1.0,
) -> FocalEstimate:
    """Estimate fx = fy from images and camera poses, per window and over all frames.

    Args:
        frames: (image, T_world_cam) per frame, in time order: image (H, W) grey or (H, W, 3)
            RGB, uint8 or float in [0, 1], every one the same size; T_world_cam (4, 4) the
            camera optical frame (x right, y down, z forward) in the world frame, metres.
            Consumed once; only the features of the last ``max(gaps)`` frames are kept.
        K: (3, 3) the camera matrix the images are said to have [px]; its principal point
            (and skew) is kept, its focal length is the one checked.
        window: frames per window (consecutive windows from frame 0; a pair counts in the
            window holding both its frames).
        gaps: frame distances of the pairs.
        every: pairs start at every `every`-th frame.
        max_features: SIFT keypoints per frame.
        min_matches: pairs with fewer matches are left out.
        ransac_px: RANSAC threshold of the matcher's fundamental-matrix check [px].

    Returns:
        `FocalEstimate`. The verdict: UNDETERMINED with fewer than `MIN_PAIRS` pairs, a median
        rotation under `MIN_ROTATION_DEG`, a minimum at an end of the search range (whole
        sequence or a window), fewer than 2 windows estimated, or a window estimate off the
        windows' median by more than `WINDOW_AGREEMENT`; otherwise CONSISTENT when the estimate
        is within `FOCAL_TOLERANCE` of the given focal length, DISAGREES when it is farther and
        its residual is below `RESIDUAL_RATIO` x the given one's, else UNDETERMINED.

    Raises:
        InputError: fewer than 2 frames, an image that is not grey/RGB or changes size, a pose
            that is not a finite 4x4, a K that is not a pinhole camera matrix.
        ConfigError: window < 2, no gap >= 1, every < 1.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"K: expected a finite (3, 3) camera matrix with fx, fy > 0, got "
                         f"{K.tolist()}")
    gaps = sorted({int(g) for g in gaps})
    if window < 2 or not gaps or gaps[0] < 1 or every < 1:
        raise ConfigError(f"estimate_focal: expected window >= 2, gaps >= 1 and every >= 1, got "
                          f"window {window}, gaps {gaps}, every {every}")
    settings = PoseRefineSettings(ransac_px=ransac_px)
    feats: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    poses: list[np.ndarray] = []
    # (i, j, x_i (M, 2), x_j (M, 2), R, t) of camera i -> camera j
    pairs: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    size = None
    for j, (image, T) in enumerate(frames):
        grey = _grey(image, j)
        if size is None:
            size = grey.shape
        elif grey.shape != size:
            raise InputError(f"frame {j} is {grey.shape[1]}x{grey.shape[0]}, frame 0 "
                             f"{size[1]}x{size[0]}: expected one image size")
        poses.append(_pose(T, j))
        feats[j] = features(grey, max_features)
        feats.pop(j - gaps[-1] - 1, None)
        for g in gaps:
            i = j - g
            if i < 0 or i % every:
                continue
            T_ji = np.linalg.inv(poses[j]) @ poses[i]
            if np.linalg.norm(T_ji[:3, 3]) < MIN_BASELINE_M:
                continue
            q, uv = match(feats[i], feats[j], settings)
            if len(q) >= min_matches:
                pairs.append((i, j, feats[i][0][q], uv, T_ji[:3, :3], T_ji[:3, 3]))
    if len(poses) < 2:
        raise InputError(f"estimate_focal: expected at least 2 frames, got {len(poses)}")

    nominal = 0.5 * (K[0, 0] + K[1, 1])
    grid = np.linspace(SEARCH_RANGE[0] * nominal, SEARCH_RANGE[1] * nominal, GRID_POINTS)

    def costs(f: float, subset: Sequence[int]) -> list[float]:
        Kf = _k_of(K, f)
        return [_huber(sampson_px(Kf, pairs[p][4], pairs[p][5], pairs[p][2], pairs[p][3]),
                       HUBER_PX) for p in subset]  # fmt: skip

    everything = list(range(len(pairs)))
    grid_costs = np.array([costs(f, everything) for f in grid]).reshape(len(grid), -1)

    def minimise(subset: list[int]) -> tuple[float, bool]:
        c = grid_costs[:, subset].sum(1)
        k = int(np.argmin(c))
        if k in (0, len(grid) - 1):
            return float(grid[k]), False
        r = minimize_scalar(lambda f: sum(costs(f, subset)), bounds=(grid[k - 1], grid[k + 1]),
                            method="bounded", options={"xatol": 0.01})
        return float(r.x), True

    def median_residual(Kf: np.ndarray) -> float:
        if not pairs:
            return float("nan")
        return float(np.median(np.abs(np.concatenate(
            [sampson_px(Kf, R, t, x1, x2) for (_, _, x1, x2, R, t) in pairs]))))

    f, bracketed = minimise(everything) if pairs else (float("nan"), False)
    windows = []
    for first in range(0, len(poses), window):
        last = min(first + window, len(poses)) - 1
        subset = [p for p in everything if first <= pairs[p][0] and pairs[p][1] <= last]
        fw, ok = minimise(subset) if len(subset) >= MIN_WINDOW_PAIRS else (None, False)
        windows.append(FocalWindow(first, last, len(subset),
                                   sum(len(pairs[p][2]) for p in subset), fw, ok))
    estimated = [w.f_px for w in windows if w.f_px is not None]
    w_median = float(np.median(estimated)) if estimated else None
    spread = (max(abs(v / w_median - 1) for v in estimated) if len(estimated) >= 2
              else None)  # fmt: skip
    rotations = [np.degrees(np.linalg.norm(cv2.Rodrigues(p[4])[0])) for p in pairs]
    rotation = float(np.median(rotations)) if rotations else 0.0
    residual = median_residual(_k_of(K, f)) if pairs else float("nan")
    nominal_residual = median_residual(K)
    diff = f / nominal - 1

    if len(pairs) < MIN_PAIRS:
        verdict, reason = FocalVerdict.UNDETERMINED, (
            f"{len(pairs)} frame pairs with >= {min_matches} matches, fewer than {MIN_PAIRS}")
    elif rotation < MIN_ROTATION_DEG:
        verdict, reason = FocalVerdict.UNDETERMINED, (
            f"the pairs' median rotation {rotation:.2f} deg is under {MIN_ROTATION_DEG} deg")
    elif not bracketed or any(w.f_px is not None and not w.bracketed for w in windows):
        verdict, reason = FocalVerdict.UNDETERMINED, (
            f"the cost has its minimum at an end of the search range {grid[0]:.0f}-"
            f"{grid[-1]:.0f} px (whole sequence or a window)")
    elif spread is None:
        verdict, reason = FocalVerdict.UNDETERMINED, (
            f"{len(estimated)} window(s) with >= {MIN_WINDOW_PAIRS} pairs: need 2 to compare")
    elif spread > WINDOW_AGREEMENT:
        verdict, reason = FocalVerdict.UNDETERMINED, (
            f"the windows disagree: one is {100 * spread:.1f} % off their median "
            f"(> {100 * WINDOW_AGREEMENT:g} %)")
    elif abs(diff) <= FOCAL_TOLERANCE:
        verdict, reason = FocalVerdict.CONSISTENT, (
            f"the estimate is within {100 * FOCAL_TOLERANCE:g} % of the given focal length")
    elif residual < RESIDUAL_RATIO * nominal_residual:
        verdict, reason = FocalVerdict.DISAGREES, (
            f"the estimate is {100 * diff:+.1f} % off the given focal length, every window "
            f"agrees within {100 * WINDOW_AGREEMENT:g} % and the residual drops "
            f"{nominal_residual:.2f} -> {residual:.2f} px")
    else:
        verdict, reason = FocalVerdict.UNDETERMINED, (
            f"the estimate is {100 * diff:+.1f} % off, but its residual {residual:.2f} px is "
            f"not below {RESIDUAL_RATIO:g} x the given focal length's {nominal_residual:.2f} px")
    return FocalEstimate(
        f_px=f, nominal_f_px=nominal, relative_difference=diff, windows=tuple(windows),
        window_median_px=w_median, window_spread=spread, residual_px=residual,
        nominal_residual_px=nominal_residual, frames=len(poses), pairs=len(pairs),
        matches=sum(len(p[2]) for p in pairs), median_rotation_deg=rotation,
        bracketed=bracketed, verdict=verdict, reason=reason,
    )  # fmt: skip

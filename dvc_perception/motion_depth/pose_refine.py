# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Correct the odometry's relative poses of a keyframe window with matched image features.

Depth from motion is only as good as the relative poses: at a 3 cm baseline and 2 m, a pixel's
displacement is ~4 px at 320x240, so a 0.3 deg rotation error (1.5 px) changes its depth by a
third. Odometry (wheel, IMU, or the KinectFusion trajectory of a public RGB-D sequence) is
rarely that good. This module runs a small bundle adjustment over the window: SIFT features of
the reference frame matched into each source (ratio test + a RANSAC fundamental-matrix check),
unknowns the sources' poses relative to the reference (6 each) and each matched reference
feature's inverse depth (1 each), Huber-weighted reprojection residuals in px, and a Gaussian
prior pulling every pose towards the odometry's (`rotation_sigma_deg`, `translation_sigma_m`),
itself Huber-weighted beyond `prior_huber` sigmas, so that one odometry glitch (a pose that
jumps by centimetres) is outvoted by the images instead of bending the window.
The features fix the rotations and the translation directions; the prior fixes the metric
scale, which images alone cannot. Gauss-Newton with the inverse depths eliminated (Schur
complement: they are independent given the poses).

The metric scale has a second witness (`ScaleEvidence`): the odometry's own poses triangulate
the window's matched features. At a few centimetres of baseline the depth's scale hangs on the
rotations (the first paragraph's 0.3 deg), and the adjustment moves them along the direction
that images barely see (a small rotation traded for a sideways translation): with
accurate odometry its depth came out 14 % short on a stretch of the 7-Scenes kitchen although
its translations kept the odometry's length. The estimator weighs the two scales by how much
each scatters over the window's sources (`fused_log_scale`): accurate odometry rotations give
per-source scales that agree, noisy ones (1 deg per frame) scatter by tens of percent.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dvc_perception.errors import ConfigError

#: Gauss-Newton iterations that move only the inverse depths, from the odometry's poses.
_DEPTH_ONLY_ITERATIONS = 5


@dataclass(frozen=True)
class PoseRefineSettings:
    """Settings of the window bundle adjustment (px at the internal resolution, m, deg).

    `max_features` and `octave_layers` are SIFT's (OpenCV's ``nfeatures``, ``nOctaveLayers``);
    2 octave layers describe a frame ~20 % faster but cost accuracy on the 7-Scenes kitchen
    (AbsRel +0.004, delta < 1.25 -1.1 points; benchmarks/RESULTS.md, issue 22).
    """

    enabled: bool = True
    max_features: int = 1500
    octave_layers: int = 3
    ratio: float = 0.75
    ransac_px: float = 1.0
    rotation_sigma_deg: float = 2.0
    translation_sigma_m: float = 0.03
    huber_px: float = 0.5
    prior_huber: float = 2.0
    iterations: int = 15
    min_matches: int = 20
    #: After each pose step, set the window's scale (every translation times k, every inverse
    #: depth over k: the reprojection errors do not change) to the odometry prior's optimum
    #: (`_Problem._solve_scale`). Without it the damped Gauss-Newton steps hardly move along
    #: this direction, which only the weak translation prior constrains: 15 iterations leave
    #: the scale where the rotations' correction pushed it. With it the window's scale is the
    #: odometry's: on the 7-Scenes kitchen, AbsRel under 1 cm / 1 deg odometry noise 0.227 ->
    #: 0.198 (3 seeds, with `MotionDepthSettings.scale_filter`), with the given poses 0.180 ->
    #: 0.209, all of it after the given trajectory's frame-122 jump, where it overstates the
    #: motion (benchmarks/RESULTS.md, issue 22).
    solve_scale: bool = True
    #: Report `ScaleEvidence` (the odometry poses' triangulation of the matched features
    #: against the adjusted window's) for the estimator to weigh in (`fused_log_scale`).
    #: On the 7-Scenes kitchen (classical, direct script): AbsRel with the given poses 0.165
    #: -> 0.136, with 1 cm / 1 deg of noise 0.163 -> 0.160; refined through replay with the
    #: given poses 0.160 -> 0.129 (benchmarks/RESULTS.md, issue 22).
    structure_scale: bool = True

    def __post_init__(self) -> None:
        if self.iterations <= _DEPTH_ONLY_ITERATIONS:
            raise ConfigError(f"pose_refine.iterations: expected > {_DEPTH_ONLY_ITERATIONS} (the "
                              f"first {_DEPTH_ONLY_ITERATIONS} move only the depths), got "
                              f"{self.iterations}")
        positive = ("max_features", "ransac_px", "rotation_sigma_deg", "translation_sigma_m",
                    "huber_px", "prior_huber")
        bad = [n for n in positive if not getattr(self, n) > 0]
        if bad or not 0.0 < self.ratio < 1.0 or self.min_matches < 1 or self.octave_layers < 1:
            raise ConfigError(f"pose_refine: expected positive {', '.join(positive)}, ratio in "
                              f"(0, 1), min_matches >= 1 and octave_layers >= 1 (bad: "
                              f"{bad or 'ratio/min_matches/octave_layers'})")


@dataclass(frozen=True)
class PoseRefineResult:
    """Refined relative poses and what the adjustment saw.

    Attributes:
        poses: one (4, 4) per source, reference camera -> source camera, m.
        matches: matched features per source (after the RANSAC check).
        median_error_px: median reprojection error after the adjustment (NaN: not run).
        refined: False when too few matches left the odometry's poses unchanged.
        parallax_px: per source, the median distance of its matches from where the refined
            rotation alone puts them (a point at infinity), px; what the translation moved them.
            NaN where the source has no matches or the adjustment did not run.
        scale_evidence: the window's two scale witnesses (`PoseRefineSettings.structure_scale`);
            None when off, not run, or fewer than 2 sources give one.
        scale_variance: variance of the log of the window's metric scale, from how far the
            odometry's poses disagree with the images (`_Problem.scale_variance`); inf when
            the adjustment did not run or no source has parallax.
    """

    poses: list[np.ndarray]
    matches: list[int]
    median_error_px: float
    refined: bool
    parallax_px: list[float]
    scale_evidence: ScaleEvidence | None = None
    scale_variance: float = float("inf")


#: Observations whose rays meet at a smaller angle [deg] (under the adjusted rotation) say
#: nothing about the scale (their triangulated depth is noise); 0.5 deg is ~2 px at 320 px wide.
_MIN_SCALE_PARALLAX_DEG = 0.5
#: Fewest such observations of a source for it to give a scale.
_MIN_SCALE_OBSERVATIONS = 15
#: No window's log scale is taken as known better than this variance (2 % standard deviation):
#: a few sources that agree by chance must not outweigh everything else.
_SCALE_VARIANCE_FLOOR = 0.02**2


@dataclass(frozen=True)
class ScaleEvidence:
    """Two witnesses of an adjusted window's metric scale (log factors on its translations).

    Attributes:
        structure_log_scale: mean over the sources of the log factor that brings the adjusted
            depths of the matched features to the odometry poses' own triangulation of them
            (weighted median per source).
        structure_variance: its variance: the sources' scatter / their number, floored.
        translation_variance: the variance of the adjustment's own scale (log factor 0: its
            translations' least-squares fit to the odometry's, `solve_scale`), likewise from
            the per-source factors' scatter.
    """

    structure_log_scale: float
    structure_variance: float
    translation_variance: float


def fused_log_scale(evidence: ScaleEvidence, structure_variance: float | None = None,
                    translation_variance: float | None = None) -> float:
    """The inverse-variance weighted log factor for the adjusted window's translations.

    The variances default to `evidence`'s; the estimator passes ones pooled over recent windows
    (the odometry's noise is a property of the odometry, steadier than 2-4 sources show).
    """
    vs = evidence.structure_variance if structure_variance is None else structure_variance
    vt = evidence.translation_variance if translation_variance is None else translation_variance
    if not np.isfinite(vs):
        return 0.0
    if not np.isfinite(vt):
        return evidence.structure_log_scale
    return evidence.structure_log_scale * vt / (vs + vt)


_SIFT: dict[tuple[int, int], cv2.SIFT] = {}


def features(grey: np.ndarray, max_features: int, octave_layers: int = 3
             ) -> tuple[np.ndarray, np.ndarray]:
    """SIFT keypoints (M, 2) float64 px and descriptors (M, 128) float32 of `grey` (h, w).

    Args:
        grey: (h, w) float32 image in [0, 1].
        max_features: at most this many keypoints (the strongest).
        octave_layers: SIFT's scale levels per octave (OpenCV's ``nOctaveLayers``).
    """
    key = (max_features, octave_layers)
    if key not in _SIFT:
        _SIFT[key] = cv2.SIFT_create(max_features, octave_layers)
    sift = _SIFT[key]
    img = np.clip(grey * 255.0 + 0.5, 0, 255).astype(np.uint8)
    kps, desc = sift.detectAndCompute(img, None)
    if desc is None or not kps:
        return np.zeros((0, 2)), np.zeros((0, 128), np.float32)
    return np.array([k.pt for k in kps], np.float64), desc.astype(np.float32)


def match(ref_feat: tuple[np.ndarray, np.ndarray], src_feat: tuple[np.ndarray, np.ndarray],
          settings: PoseRefineSettings) -> tuple[np.ndarray, np.ndarray]:
    """Reference feature indices (M,) and source pixels (M, 2) of the accepted matches.

    A match passes the ratio test and a RANSAC fundamental-matrix check (`ransac_px`). The two
    nearest source descriptors (L2) of each reference feature come from one float32 matrix
    product: SIFT descriptors are integers with squared norms below 2**24, so the squared
    distances are exact, as OpenCV's brute-force matcher's are (without its per-match objects).
    The product is OpenCV's single-threaded one: a threaded BLAS waits for its threads when the
    CPU is shared, which costs more than the product on these sizes.
    """
    from dvc_perception.motion_depth._pose_compiled import fundamental_inliers

    (p_ref, d_ref), (p_src, d_src) = ref_feat, src_feat
    empty = (np.zeros(0, np.int64), np.zeros((0, 2)))
    if len(d_ref) < 2 or len(d_src) < 2:
        return empty
    d_ref = np.asarray(d_ref, np.float32)
    d_src = np.asarray(d_src, np.float32)
    d2 = (np.einsum("ij,ij->i", d_ref, d_ref)[:, None] + np.einsum("ij,ij->i", d_src, d_src)
          - 2.0 * cv2.gemm(d_ref, d_src, 1.0, None, 0.0, flags=cv2.GEMM_2_T))
    rows = np.arange(len(d2))
    best = np.argmin(d2, axis=1)
    first = d2[rows, best]
    d2[rows, best] = np.inf
    second = d2.min(axis=1)
    dist1 = np.sqrt(np.maximum(first, 0.0), dtype=np.float32).astype(np.float64)
    dist2 = np.sqrt(np.maximum(second, 0.0), dtype=np.float32).astype(np.float64)
    qi = np.flatnonzero(dist1 < settings.ratio * dist2)
    if len(qi) < 8:
        return empty
    uv = np.ascontiguousarray(p_src[best[qi]])
    keep = fundamental_inliers(np.ascontiguousarray(p_ref[qi]), uv, float(settings.ransac_px),
                               0.999, 1000, 0)
    return qi[keep], uv[keep]


def _transformed(M: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``x @ M.T``: the (3, 3) `M` applied to each row of `x` (N, 3).

    A numpy loop, not a BLAS product: OpenBLAS wakes its threads for products of a few hundred
    rows, and their spinning afterwards took CPU from the plane sweep's threads on 2 cores
    (benchmarks/RESULTS.md, issue 22; `match` keeps its product in OpenCV for the same reason).
    """
    return np.einsum("nj,kj->nk", x, M)


def _huber_weight(normalised: np.ndarray, k: float) -> np.ndarray:
    """IRLS weights of a Huber loss at the deviations `normalised` (S, 3) in sigmas.

    One weight per row (its norm): 1 within `k`.
    """
    n = np.linalg.norm(normalised, axis=1)
    return np.where(n <= k, 1.0, k / np.maximum(n, 1e-300))


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value (of `values` (N,)) at half the total of `weights` (N,) >= 0, in sorted order."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def skew(w: np.ndarray) -> np.ndarray:
    """(S, 3, 3) cross-product matrices of the rows of `w` (S, 3)."""
    out = np.zeros((len(w), 3, 3))
    out[:, 0, 1], out[:, 0, 2], out[:, 1, 2] = -w[:, 2], w[:, 1], -w[:, 0]
    out[:, 1, 0], out[:, 2, 0], out[:, 2, 1] = w[:, 2], -w[:, 1], w[:, 0]
    return out


def _so3_exp(w: np.ndarray) -> np.ndarray:
    """Rotation matrices (S, 3, 3) of the rotation vectors `w` (S, 3) [rad] (Rodrigues)."""
    theta = np.linalg.norm(w, axis=1)
    a = np.sinc(theta / np.pi)  # sin(theta) / theta
    b = 0.5 * np.sinc(theta / (2.0 * np.pi)) ** 2  # (1 - cos(theta)) / theta**2, no cancellation
    W = skew(w)
    return np.eye(3) + a[:, None, None] * W + b[:, None, None] * (W @ W)


def _so3_log(R: np.ndarray) -> np.ndarray:
    """Rotation vectors (S, 3) [rad] of the rotation matrices `R` (S, 3, 3)."""
    v = np.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], 1)
    n = np.linalg.norm(v, axis=1)  # 2 sin(theta)
    theta = np.arctan2(0.5 * n, 0.5 * (np.trace(R, axis1=1, axis2=2) - 1.0))
    out = v * np.where(n > 1e-12, theta / np.maximum(n, 1e-300), 0.5)[:, None]
    for k in np.flatnonzero(theta > np.pi - 1e-3):  # near a half turn: v is no direction
        out[k] = cv2.Rodrigues(R[k])[0].ravel()
    return out


def refine_window(ref_feat: tuple[np.ndarray, np.ndarray],
                  src_feats: list[tuple[np.ndarray, np.ndarray]], odometry: list[np.ndarray],
                  K: np.ndarray, settings: PoseRefineSettings) -> PoseRefineResult:
    """Relative poses (reference -> source, (4, 4) m) refined by the window adjustment.

    Args:
        ref_feat: `features` of the reference frame.
        src_feats: `features` of each source frame.
        odometry: the odometry's relative pose per source, reference -> source camera.
        K: (3, 3) intrinsics of the images the features were found in [px].
        settings: the adjustment's settings.
    """
    no_parallax = [float("nan")] * len(odometry)
    unchanged = PoseRefineResult([T.copy() for T in odometry], [0] * len(odometry), float("nan"),
                                 False, no_parallax)
    if not settings.enabled or not odometry:
        return unchanged
    obs = [match(ref_feat, f, settings) for f in src_feats]
    counts = [len(q) for q, _ in obs]
    if sum(counts) < settings.min_matches:
        return PoseRefineResult(unchanged.poses, counts, float("nan"), False, no_parallax)
    used = np.unique(np.concatenate([q for q, _ in obs]))
    index = np.full(len(ref_feat[0]), -1, np.int64)
    index[used] = np.arange(len(used))
    pix = ref_feat[0][used]
    bearings = _transformed(np.linalg.inv(K), np.c_[pix, np.ones(len(pix))])  # (P, 3), z = 1
    problem = _Problem(K, bearings, [(index[q], uv) for q, uv in obs], odometry, settings)
    problem.solve()
    evidence = problem.scale_evidence() if settings.structure_scale else None
    parallax = problem.parallax()
    return PoseRefineResult(problem.poses(), counts, problem.median_error(), True, parallax,
                            evidence, problem.scale_variance(parallax))


class _Problem:
    """The window adjustment's state: poses (R, t) per source and inverse depths per point.

    The observations of all sources are stacked (source by source), so that each Gauss-Newton
    iteration assembles the normal equations with a few array operations, not per source.
    """

    def __init__(self, K: np.ndarray, bearings: np.ndarray,
                 obs: list[tuple[np.ndarray, np.ndarray]], odometry: list[np.ndarray],
                 settings: PoseRefineSettings) -> None:
        self.K = K
        self.odometry = odometry
        self.s = settings
        S, P = len(obs), len(bearings)
        counts = [len(q) for q, _ in obs]
        self.bounds = np.r_[0, np.cumsum(counts)].astype(np.int64)
        self.pts = np.concatenate([q for q, _ in obs]).astype(np.int64)
        self.uv = np.concatenate([uv for _, uv in obs]).reshape(-1, 2)
        self.src = np.repeat(np.arange(S), counts)
        self.bearings = bearings[self.pts]  # (N, 3), one per observation
        self.odo_R = np.stack([T[:3, :3] for T in odometry]).astype(np.float64)  # (S, 3, 3)
        self.odo_t = np.stack([T[:3, 3] for T in odometry]).astype(np.float64)  # (S, 3)
        self.R = self.odo_R.copy()
        self.t = self.odo_t.copy()
        self.rho = np.full(P, 0.5)  # 1/m; first refined alone (poses held)

    def _residuals(self) -> np.ndarray:
        """Reprojection residuals (N, 2) [px] of the observations, at depth max(z, 1e-9)."""
        Y = np.einsum("njk,nk->nj", self.R[self.src], self.bearings)
        X = Y / self.rho[self.pts][:, None] + self.t[self.src]
        K = self.K
        z = np.maximum(X[:, 2], 1e-9)
        return np.stack([K[0, 0] * X[:, 0] / z + K[0, 2] - self.uv[:, 0],
                         K[1, 1] * X[:, 1] / z + K[1, 2] - self.uv[:, 1]], axis=1)

    def solve(self) -> None:
        from dvc_perception.motion_depth._pose_compiled import normal_equations

        S = len(self.R)
        sig_r = np.radians(self.s.rotation_sigma_deg)
        sig_t = self.s.translation_sigma_m
        prior = np.r_[np.full(3, 1 / sig_r**2), np.full(3, 1 / sig_t**2)]
        odo_R, odo_t = self.odo_R, self.odo_t
        fx, fy = self.K[0, 0], self.K[1, 1]
        for it in range(self.s.iterations):
            depth_only = it < _DEPTH_ONLY_ITERATIONS  # depths alone first, odometry's poses
            Hpp, gp, Hpl, Hll, gl = normal_equations(
                self.R, self.t, self.rho, self.bearings, self.uv, self.pts, self.src, fx, fy,
                self.K[0, 2], self.K[1, 2], float(self.s.huber_px), depth_only)
            Hll = (Hll + 1e-6) * (1.0 + 1e-2)
            if depth_only:
                dp = np.zeros(6 * S)
                dl = -gl / Hll
            else:
                dev = np.concatenate([_so3_log(self.R @ odo_R.transpose(0, 2, 1)),
                                      self.t - odo_t], axis=1)  # (S, 6)
                weight = prior * np.repeat(
                    np.stack([_huber_weight(dev[:, :3] / sig_r, self.s.prior_huber),
                              _huber_weight(dev[:, 3:] / sig_t, self.s.prior_huber)], 1), 3, 1)
                Hpp[np.diag_indices(6 * S)] += weight.ravel()
                gp += (weight * dev).ravel()
                Hpp *= 1.0 + 1e-2
                # Hpl diag(1 / Hll) Hpl^T and the products with Hpl single-threaded (see `match`)
                schur = Hpp - cv2.mulTransposed(Hpl / np.sqrt(Hll), False)
                dp = -np.linalg.solve(schur, gp - np.einsum("ip,p->i", Hpl, gl / Hll))
                dl = -(gl + np.einsum("ip,i->p", Hpl, dp)) / Hll
                step = dp.reshape(S, 6)
                self.R = _so3_exp(step[:, :3]) @ self.R
                self.t = self.t + step[:, 3:]
            self.rho = np.clip(self.rho + dl, 1e-3, 1e3)
            if not depth_only and self.s.solve_scale:
                self._solve_scale(odo_t, sig_t)
            if not depth_only and np.abs(dp).max() < 1e-7:
                break

    def _solve_scale(self, odo_t: np.ndarray, sig_t: float) -> None:
        """Move along the window's scale to the odometry prior's optimum (closed form).

        Scaling every translation by k and every inverse depth by 1 / k leaves each reprojection
        error unchanged; the translation prior's (IRLS-weighted at the current deviations)
        least-squares k is ``sum w t . t_odo / sum w |t|**2``. Skipped when that is not
        positive (the images' translations point against the odometry's).
        """
        w = _huber_weight((self.t - odo_t) / sig_t, self.s.prior_huber)
        den = float(np.sum(w * np.einsum("sk,sk->s", self.t, self.t)))
        num = float(np.sum(w * np.einsum("sk,sk->s", self.t, odo_t)))
        if den > 0.0 and num > 0.0:
            k = num / den
            self.t = self.t * k
            self.rho = np.clip(self.rho / k, 1e-3, 1e3)

    def scale_evidence(self) -> ScaleEvidence | None:
        """`ScaleEvidence` of the solved window; None with fewer than 2 sources that give one.

        Per observation, the odometry's pose (R, t) triangulates the reference ray b (z = 1)
        with the source ray x (unit): the depth d where the reference ray passes closest to the
        source's solves ``x x (d R b + t) = 0`` in least squares, ``d = -(a . c) / |a|**2``
        with ``a = x x R b``, ``c = x x t``. A source's log factor is the median of
        log(d / adjusted depth) over its observations in front whose rays meet at
        `_MIN_SCALE_PARALLAX_DEG` or more under the adjusted rotation, weighted by the squared
        sine of that angle (depth noise grows as one over it).
        """
        odo_R, odo_t = self.odo_R, self.odo_t
        x = _transformed(np.linalg.inv(self.K), np.c_[self.uv, np.ones(len(self.uv))])
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        a = np.cross(x, np.einsum("nij,nj->ni", odo_R[self.src], self.bearings))
        c = np.cross(x, odo_t[self.src])
        aa = np.einsum("ni,ni->n", a, a)
        # the rays' angle as the adjusted rotations have it: the selection and the weights do
        # not depend on the odometry's rotation error
        adjusted = np.cross(x, np.einsum("nij,nj->ni", self.R[self.src], self.bearings))
        sin2 = (np.einsum("ni,ni->n", adjusted, adjusted)
                / np.einsum("ni,ni->n", self.bearings, self.bearings))
        with np.errstate(divide="ignore", invalid="ignore"):
            d_odo = -np.einsum("ni,ni->n", a, c) / aa
            log_ratio = np.log(d_odo * self.rho[self.pts])
        usable = (sin2 > np.sin(np.radians(_MIN_SCALE_PARALLAX_DEG)) ** 2) & (d_odo > 0)
        structure, translation = [], []
        for j in range(len(self.R)):
            sel = usable & (self.src == j)
            fit = float(self.t[j] @ odo_t[j]) / max(float(self.t[j] @ self.t[j]), 1e-300)
            if sel.sum() < _MIN_SCALE_OBSERVATIONS or not fit > 0:
                continue
            structure.append(_weighted_median(log_ratio[sel], sin2[sel]))
            translation.append(np.log(fit))
        if len(structure) < 2:
            return None
        n = len(structure)
        return ScaleEvidence(float(np.mean(structure)),
                             float(np.var(structure, ddof=1)) / n + _SCALE_VARIANCE_FLOOR,
                             float(np.var(translation, ddof=1)) / n + _SCALE_VARIANCE_FLOOR)

    def _epipolar_sq(self, R: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(N,) squared distances [px^2] of the source pixels from their epipolar lines.

        `R` (S, 3, 3), `t` (S, 3): reference -> source per source. Each observation's line is
        where the pose puts its reference pixel's ray in the source image (fundamental matrix
        K^-T [t]x R K^-1).
        """
        K_inv = np.linalg.inv(self.K)
        F = K_inv.T[None] @ skew(t) @ R @ K_inv[None]  # (S, 3, 3)
        lines = np.einsum("nij,nj->ni", F[self.src], _transformed(self.K, self.bearings))
        num = (lines[:, 0] * self.uv[:, 0] + lines[:, 1] * self.uv[:, 1] + lines[:, 2]) ** 2
        return num / np.maximum(lines[:, 0] ** 2 + lines[:, 1] ** 2, 1e-300)

    def scale_variance(self, parallax_px: list[float]) -> float:
        """Variance of the log of the window's metric scale taken from the odometry.

        A source's odometry pose puts its matches off their epipolar lines by what the images
        see of the odometry's error: per source, ``e`` the median distance of its matches from
        their epipolar lines under the odometry's pose beyond that under the adjusted pose
        (matching noise), in quadrature [px]. An error that moves the matches by ``e`` px
        against a parallax of ``p`` px (`parallax_px`) changes the depths it implies, and with
        them the scale, by about ``e / p`` (rotation and translation alike). The error along
        the epipolar lines, which moves the scale, is taken to be as large as the one across
        them, which the images see. The scale is fitted mostly to the long baselines (weights
        ``p**2``) and the reference frame's own error is common to every source (half of each
        pair's), so the variance is ``((sum p e)**2 + sum (p e)**2) / (2 (sum p**2)**2)`` (as
        `estimator.window_scale_variance`, with px for metres). inf without a source with
        parallax.
        """
        odo_R, odo_t = self.odo_R, self.odo_t
        d_odo = self._epipolar_sq(odo_R, odo_t)
        d_adj = self._epipolar_sq(self.R, self.t)
        pe, pp = [], []
        for j, (a, b) in enumerate(zip(self.bounds[:-1], self.bounds[1:])):
            p = parallax_px[j]
            if b == a or not p > 0:
                continue
            e2 = float(np.median(d_odo[a:b])) - float(np.median(d_adj[a:b]))
            pe.append(p * np.sqrt(max(e2, 0.0)))
            pp.append(p * p)
        if not pp:
            return float("inf")
        pe_ = np.array(pe)
        return float((pe_.sum() ** 2 + np.sum(pe_ ** 2)) / (2.0 * sum(pp) ** 2))

    def poses(self) -> list[np.ndarray]:
        out = []
        for R, t in zip(self.R, self.t):
            T = np.eye(4)
            T[:3, :3] = R
            T[:3, 3] = t
            out.append(T)
        return out

    def parallax(self) -> list[float]:
        """Per source, the median px distance of its matches from their rotation-only image."""
        Y = _transformed(self.K, np.einsum("njk,nk->nj", self.R[self.src], self.bearings))
        at_infinity = Y[:, :2] / np.maximum(Y[:, 2:], 1e-9)
        d = np.linalg.norm(self.uv - at_infinity, axis=1)
        return [float(np.median(d[a:b])) if b > a else float("nan")
                for a, b in zip(self.bounds[:-1], self.bounds[1:])]

    def median_error(self) -> float:
        flat = np.linalg.norm(self._residuals(), axis=1)
        return float(np.median(flat)) if len(flat) else float("nan")

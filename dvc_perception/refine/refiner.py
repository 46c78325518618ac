# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Render-and-compare pose refinement on real pixels: sparse contour + region likelihood.

`refine_pose` takes roughly right object-in-camera poses and aligns each object's projected
silhouette with the image, in the manner of SRT3D (Stoiber et al., "A Sparse Gaussian Approach
to Region-Based 6DoF Object Tracking", ACCV 2020; "SRT3D: A Sparse Region-Based 3D Object
Tracking Approach for the Real World", IJCV 2022). Per correspondence iteration, coarse to fine
over segment scales (the pyramid: a segment of s pixels is one "pixel" of level log2(s)):

1. the contour at the current pose (`contour.render_contour`, or the closest view of a
   `contour.ContourModel`): N 3D points on the silhouette's rim with outward normals;
2. correspondence lines through the projected points along their normals; foreground and
   background colour histograms from the inner and outer parts of the lines (`region`),
   blended into the running ones at ``histogram_rate`` (or, with an instance's prior colour
   statistics from earlier frames, the prior held fixed; see below);
3. per line, the distribution of the contour location under the smoothed step model, and its
   mean and variance (a Gaussian, the variance floored at ``min_sigma_px``);
4. ``iterations`` Gauss-Newton steps on se(3) of ``sum_i (n_i . (pi(K (R X_i + t)) - c_i) -
   mean_i)^2 / var_i`` with analytic Jacobians, optional Huber weights, and Tikhonov
   (Levenberg) damping of the rotation and translation step.

The pose perturbation is PnP's: ``R <- exp([w]x) R``, ``t <- t + dt``, x = (dt, w) in ROS order
(translation x, y, z in m, then rotation about the camera's x, y, z axes in rad), so the
covariance, the inverse of the final (undamped) normal matrix, is in the order of
`geometry.pnp.PnPResult.covariance`.

Colour statistics across frames (SRT3D's tracking, IJCV 2022: histograms kept per object and
updated once per frame with learning rates 0.2): given an instance's prior
`region.ColourStatistics` (the ones a previous frame's `RefineResult.colours` returned), every
correspondence iteration of the frame uses the prior histograms as they are (not re-estimated
from the possibly-off initial pose), and at the returned pose this frame's histograms are
blended in, ``h = (1 - colour_learning_rate) h_prior + colour_learning_rate h_frame``,
foreground and background alike; the cost and covariance use the blended ones, and
`RefineResult.colours` returns them. Without a prior the histograms start from this frame
alone (as before priors existed: bit-identical results).

Images are undistorted first when the camera has lens distortion. Instances are refined one at
a time (no mutual occlusion is modelled).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor

from dvc_perception.config_utils import dataclass_from_mapping
from dvc_perception.errors import ConfigError, InputError, ShapeError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.refine.contour import (
    ContourModel,
    ContourPoints,
    kernels,
    mesh_arrays,
    render_contour,
)
from dvc_perception.refine.region import (
    ColourModel,
    ColourStatistics,
    CorrespondenceLines,
    blend_histograms,
    histogram_shift,
    line_statistics,
    project_lines,
    sample_lines,
)
from dvc_perception.render.mesh import Mesh

#: What `refine_pose` accepts per instance: a mesh (contours rendered at every correspondence
#: iteration) or its sparse viewpoint model (contours looked up; faster).
ObjectModel = Union[Mesh, ContourModel]

#: Largest deviation of ``R^T R`` from the identity accepted for an initial rotation (BOP's
#: ground truth of LM-O is off by up to ~2e-3).
ROTATION_TOLERANCE = 1e-2


@dataclass(frozen=True)
class RefineSettings:
    """Settings of `refine_pose`.

    Attributes:
        scales: segment length per correspondence iteration, coarse to fine, px (each >= 1).
        min_sigma_px: floor of each line's standard deviation at each scale, px (same length as
            `scales`): the coarse levels trust single lines less.
        iterations: Gauss-Newton steps per correspondence iteration (>= 1).
        passes: how often the whole coarse-to-fine schedule runs (>= 1); each pass starts new
            colour histograms at the pose the previous pass reached (the first pass's come from
            the initial pose, whose error puts background into the foreground statistics).
        num_points: contour points (correspondence lines) per instance.
        function_length: F, segments on each side pair of a candidate's window (even, >= 2).
        distribution_length: D, candidate contour positions per line (odd, >= 3).
        function_amplitude: smoothed step amplitude, in (0, 0.5).
        function_slope: smoothed step slope, segments (> 0).
        histogram_bins: colour bins per RGB channel (power of two, 2..64).
        histogram_offset_px: line pixels nearer the contour than this do not feed histograms.
        histogram_length_px: nor do pixels farther than this.
        local_radius_px: lines whose centres lie within this distance pool their samples into
            a local histogram pair per line (Tjaden et al.'s localized histograms, RBOT); 0: one
            global pair per instance.
        local_prior: pseudo-samples of the instance's global histograms added to each local one.
        histogram_rate: weight of the new histograms at each correspondence iteration after the
            first, in (0, 1] (1: re-estimate from the current pose only); without a prior only.
        colour_learning_rate: with an instance's prior colour statistics, the weight of this
            frame's histograms (at the returned pose) blended into the prior ones, in (0, 1]
            (SRT3D: 0.2 for foreground and background).
        min_posterior: pixel posteriors are clamped to [min_posterior, 1 - min_posterior].
        min_continuous_segments: lines whose inside or outside stretch is shorter than this many
            segments are not fitted (the step model needs both sides).
        damping_translation: Tikhonov weight on the translation step, 1/m^2.
        damping_rotation: Tikhonov weight on the rotation step, 1/rad^2.
        edge_weight: weight of the edge term: each candidate contour position on a line gains
            ``edge_weight * e`` in log-likelihood, e in [0, 1] the mean absolute RGB step between
            the segments on either side (0: the region term alone).
        huber: Huber threshold on the normalised line residual (0: plain least squares).
        depth_prior: standard deviation of a Gaussian prior on the translation along the
            initial line of sight, as a fraction of the initial distance (0: none). A silhouette
            fixes the depth only through the object's apparent size (1 px of a 60 px wide
            object is 1.7 % of the distance), so noise on the outline moves it far; the prior
            keeps the depth near the initial one unless the lines agree on a change.
        convergence_px: converged when the last step moved the contour points by less than this
            (RMS over the fitted lines), px.
        min_lines: fewest fitted lines for a step (and for `converged`).
        threads: poses refined at once, each on its own thread (>= 1). Every pose is refined
            alone and the compiled kernels release the GIL, so the result does not depend on it;
            the Python between the kernels does not run in parallel (2 threads: ~1.5x faster on
            2 cores for the search's 200 starts).
    """

    scales: tuple[int, ...] = (6, 4, 2, 1)
    min_sigma_px: tuple[float, ...] = (15.0, 5.0, 3.5, 1.5)
    iterations: int = 2
    passes: int = 1
    num_points: int = 200
    function_length: int = 8
    distribution_length: int = 13
    function_amplitude: float = 0.43
    function_slope: float = 0.5
    histogram_bins: int = 8
    histogram_offset_px: float = 6.0
    histogram_length_px: float = 40.0
    local_radius_px: float = 0.0
    local_prior: float = 50.0
    histogram_rate: float = 0.5
    colour_learning_rate: float = 0.2
    min_posterior: float = 0.02
    min_continuous_segments: float = 0.0
    damping_translation: float = 3.0e5
    damping_rotation: float = 1.0e3
    edge_weight: float = 5.0
    huber: float = 1.0
    depth_prior: float = 0.01
    convergence_px: float = 0.25
    min_lines: int = 12
    threads: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(self.scales))
        object.__setattr__(self, "min_sigma_px", tuple(float(s) for s in self.min_sigma_px))
        if not self.scales or any(
                isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                for s in self.scales):
            raise ConfigError(f"refine.scales: expected integers >= 1, got {self.scales}")
        if len(self.min_sigma_px) != len(self.scales) or not all(
                math.isfinite(s) and s > 0 for s in self.min_sigma_px):
            raise ConfigError(f"refine.min_sigma_px: expected {len(self.scales)} values > 0 "
                              f"(one per scale), got {self.min_sigma_px}")
        for name, lo in (("iterations", 1), ("passes", 1), ("num_points", 8), ("min_lines", 6),
                         ("threads", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise ConfigError(f"refine.{name}: expected an integer >= {lo}, got {value!r}")
        if self.function_length < 2 or self.function_length % 2:
            raise ConfigError(f"refine.function_length: expected an even integer >= 2, "
                              f"got {self.function_length}")
        if self.distribution_length < 3 or self.distribution_length % 2 == 0:
            raise ConfigError(f"refine.distribution_length: expected an odd integer >= 3, "
                              f"got {self.distribution_length}")
        if not 0 < self.function_amplitude < 0.5:
            raise ConfigError(f"refine.function_amplitude: expected a value in (0, 0.5), "
                              f"got {self.function_amplitude}")
        if self.histogram_bins > 64:
            raise ConfigError(f"refine.histogram_bins: expected at most 64, got "
                              f"{self.histogram_bins}")
        histogram_shift(self.histogram_bins)
        for name in ("histogram_rate", "colour_learning_rate"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ConfigError(f"refine.{name}: expected a value in (0, 1], got {value}")
        if not 0 <= self.min_posterior < 0.5:
            raise ConfigError(f"refine.min_posterior: expected a value in [0, 0.5), got "
                              f"{self.min_posterior}")
        for name in ("function_slope", "histogram_length_px", "convergence_px"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"refine.{name}: expected a finite value > 0, got {value}")
        for name in ("histogram_offset_px", "min_continuous_segments", "damping_translation",
                     "damping_rotation", "huber", "depth_prior", "local_radius_px", "edge_weight",
                     "local_prior"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"refine.{name}: expected a finite value >= 0, got {value}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RefineSettings:
        """Build from a mapping (e.g. YAML), rejecting unknown keys.

        Raises:
            ConfigError: unknown keys or invalid values.
        """
        return dataclass_from_mapping(cls, values, section="refine")


@dataclass(frozen=True)
class RefineResult:
    """Refined poses of B instances (object-in-camera, ``X_cam = R @ X_obj + t``).

    Attributes:
        R: (B, 3, 3) float64 rotation.
        t: (B, 3) float64 translation, m.
        cost: (B,) float64 alignment cost at the returned pose: the mean, over the lines, of the
            per-segment negative log-likelihood of the contour at its projected position at the
            finest scale, region term only (~0.18 for a noise-free two-colour outline, ~0.3 on
            the tests' noisy renders, 0.4-0.8 on LM-O's real images; log 2 = 0.69 where the
            colours do not tell object from background, more where they contradict it);
            ``inf`` where no line could be evaluated.
        iterations: (B,) int64 Gauss-Newton steps taken.
        converged: (B,) bool: the last step moved the contour by less than
            ``convergence_px`` and at least ``min_lines`` lines were fitted.
        covariance: (B, 6, 6) float64 in ROS ``PoseWithCovariance`` order (translation x, y, z
            m, rotation about the camera x, y, z axes rad; left perturbation as
            `geometry.pnp.PnPResult`): the inverse of the final normal matrix
            ``sum_i J_i^T J_i / var_i`` of the image term alone (no damping, no depth prior),
            i.e. the Laplace approximation of the Gaussian line likelihoods; lines are treated
            as independent, so it is optimistic.
            Zero where the pose could not be refined.
        num_lines: (B,) int64 lines fitted at the final pose.
        colours: B final colour statistics (`region.ColourStatistics`), the ones the cost was
            evaluated with, to pass as the next frame's prior (None for an instance whose lines
            never sampled both foreground and background).
    """

    R: Tensor
    t: Tensor
    cost: Tensor
    iterations: Tensor
    converged: Tensor
    covariance: Tensor
    num_lines: Tensor
    colours: tuple[ColourStatistics | None, ...] = ()

    def usable(self, min_lines: int) -> Tensor:
        """(B,) bool: a finite cost and pose and at least `min_lines` lines fitted at the end.

        The instances a caller may take as refined; the others kept their initial pose (behind
        the camera, outside the image, too little outline visible).
        """
        finite = (torch.isfinite(self.R).flatten(1).all(dim=1)
                  & torch.isfinite(self.t).all(dim=1))
        return finite & torch.isfinite(self.cost) & (self.num_lines >= min_lines)


@dataclass
class _Outcome:
    R: np.ndarray
    t: np.ndarray
    cost: float
    iterations: int
    converged: bool
    covariance: np.ndarray
    num_lines: int
    colours: ColourStatistics | None


# ------------------------------------------------------------------------------------------
# Input handling


def _checked_image(image: Any, camera: CameraModel) -> np.ndarray:
    """(H, W, 3) uint8 RGB as a C-contiguous numpy array.

    Raises:
        ShapeError: not (camera.height, camera.width, 3).
        InputError: not uint8.
    """
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    want = (camera.height, camera.width, 3)
    if image.shape != want:
        raise ShapeError(f"image: expected shape {want} (camera height, width, RGB), "
                         f"got {image.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"image: expected uint8 RGB, got {image.dtype}")
    return np.ascontiguousarray(image)


def _checked_poses(R0: Any, t0: Any) -> tuple[np.ndarray, np.ndarray]:
    """(B, 3, 3) and (B, 3) float64 poses; a single (3, 3) / (3,) pose gets a batch of one.

    Raises:
        ShapeError: wrong shapes or batch sizes.
        InputError: non-finite values or a matrix that is not a rotation.
    """
    R = np.asarray(R0.detach().cpu() if isinstance(R0, Tensor) else R0, dtype=np.float64)
    t = np.asarray(t0.detach().cpu() if isinstance(t0, Tensor) else t0, dtype=np.float64)
    if R.ndim == 2:
        R = R[None]
    if t.ndim == 1:
        t = t[None]
    if R.ndim != 3 or R.shape[1:] != (3, 3):
        raise ShapeError(f"R0: expected shape (B, 3, 3) or (3, 3), got {np.shape(R0)}")
    if t.ndim != 2 or t.shape[1] != 3 or t.shape[0] != R.shape[0]:
        raise ShapeError(f"t0: expected shape ({R.shape[0]}, 3) to match R0, got {np.shape(t0)}")
    if not (np.isfinite(R).all() and np.isfinite(t).all()):
        raise InputError("R0, t0: expected finite values, got NaN or inf")
    err = np.abs(R.transpose(0, 2, 1) @ R - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    bad = np.flatnonzero((err > ROTATION_TOLERANCE) | (det <= 0))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"R0[{i}]: expected a rotation (R^T R = I within "
                         f"{ROTATION_TOLERANCE}, det +1), got |R^T R - I| = {err[i]:.3g}, "
                         f"det = {det[i]:.3g}")
    U, _, Vt = np.linalg.svd(R)  # the nearest rotation (documented in refine_pose)
    return np.ascontiguousarray(U @ Vt), np.ascontiguousarray(t)


def _checked_models(mesh: ObjectModel | Sequence[ObjectModel], batch: int
                    ) -> list[ObjectModel]:
    models = [mesh] if isinstance(mesh, (Mesh, ContourModel)) else list(mesh)
    if len(models) == 1:
        models = models * batch
    if len(models) != batch:
        raise ShapeError(f"mesh: expected one model or {batch} (one per pose), got {len(models)}")
    for m in models:
        if not isinstance(m, (Mesh, ContourModel)):
            raise InputError(f"mesh: expected Mesh or ContourModel, got {type(m).__name__}")
        if isinstance(m, Mesh):
            mesh_arrays(m)  # raises MeshError for an empty mesh
    return models


def _checked_colour_priors(priors: Sequence[ColourStatistics | None] | None, batch: int,
                           bins_per_channel: int) -> list[ColourStatistics | None]:
    """One prior (or None) per instance, as sum-1 float64 histograms.

    Raises:
        ShapeError: not `batch` priors, or histograms not of length ``bins_per_channel^3``.
        InputError: not `ColourStatistics`, or negative, non-finite or all-zero histograms.
    """
    if priors is None:
        return [None] * batch
    priors = list(priors)
    if len(priors) != batch:
        raise ShapeError(f"colour_priors: expected {batch} entries (one per pose, None for "
                         f"none), got {len(priors)}")
    nb = bins_per_channel ** 3
    out: list[ColourStatistics | None] = []
    for b, prior in enumerate(priors):
        if prior is None:
            out.append(None)
            continue
        if not isinstance(prior, ColourStatistics):
            raise InputError(f"colour_priors[{b}]: expected ColourStatistics or None, got "
                             f"{type(prior).__name__}")
        hists = []
        for name in ("foreground", "background"):
            h = np.asarray(getattr(prior, name), dtype=np.float64)
            if h.shape != (nb,):
                raise ShapeError(f"colour_priors[{b}].{name}: expected shape ({nb},) "
                                 f"(histogram_bins^3), got {h.shape}")
            if not (np.isfinite(h).all() and (h >= 0).all() and h.sum() > 0):
                raise InputError(f"colour_priors[{b}].{name}: expected finite counts >= 0 "
                                 f"with a positive sum")
            hists.append(h / h.sum())  # documented: counts or frequencies, used as frequencies
        out.append(ColourStatistics(hists[0], hists[1]))
    return out


def undistort_image(image: np.ndarray, camera: CameraModel) -> np.ndarray:
    """The ideal pinhole image with the same K (bilinear), (H, W, 3) uint8.

    A no-op without distortion; otherwise each ideal pixel samples the image where the lens
    puts it (`CameraModel.distort_normalized`), bilinearly.
    """
    if not camera.has_distortion:
        return image
    import cv2  # remap only; the pixel map comes from the camera model itself

    H, W = camera.height, camera.width
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    K = camera.K.numpy()
    yn = (v - K[1, 2]) / K[1, 1]
    xn = (u - K[0, 2] - K[0, 1] * yn) / K[0, 0]
    xy_d = camera.distort_normalized(torch.from_numpy(np.stack([xn, yn], -1))).numpy()
    map_u = (K[0, 0] * xy_d[..., 0] + K[0, 1] * xy_d[..., 1] + K[0, 2]).astype(np.float32)
    map_v = (K[1, 1] * xy_d[..., 1] + K[1, 2]).astype(np.float32)
    return cv2.remap(image, map_u, map_v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# ------------------------------------------------------------------------------------------
# The refiner


def refine_pose(image: np.ndarray | Tensor, camera: CameraModel,
                mesh: ObjectModel | Sequence[ObjectModel], R0: np.ndarray | Tensor,
                t0: np.ndarray | Tensor, settings: RefineSettings = RefineSettings(),  # noqa: B008
                colour_priors: Sequence[ColourStatistics | None] | None = None
                ) -> RefineResult:
    """Refine B object poses so that their projected outlines match the image.

    Args:
        image: (H, W, 3) uint8 RGB, H and W as `camera`.
        camera: intrinsics and distortion of the image.
        mesh: one model for every instance or one per instance: a `Mesh` (metres; its contour
            is rendered at each correspondence iteration) or a `ContourModel` (sparse viewpoint
            model, `contour.build_contour_model`; faster).
        R0: (B, 3, 3) or (3, 3) initial rotations, object in camera; within
            `ROTATION_TOLERANCE` of a rotation, whose nearest rotation (SVD) is used.
        t0: (B, 3) or (3,) initial translations, m.
        settings: `RefineSettings`.
        colour_priors: None, or one entry per pose: None (histograms from this frame alone) or
            the instance's `region.ColourStatistics` from earlier frames (e.g. the previous
            frame's `RefineResult.colours`; counts or frequencies, normalised to sum 1), used
            and updated as the module docstring says.

    Returns:
        `RefineResult` (torch float64, CPU). An instance that cannot be refined (behind the
        camera, outside the image, too few usable lines) keeps its initial pose with
        ``converged = False`` (``cost = inf`` where no line could be evaluated).

    Raises:
        ShapeError: image, pose, model or prior count of the wrong shape.
        InputError: non-uint8 image, non-finite pose, R0 not a rotation, an invalid prior.
        MeshError: an empty mesh.
        EngineUnavailableError: numba is not installed.
    """
    img = _checked_image(image, camera)
    R, t = _checked_poses(R0, t0)
    models = _checked_models(mesh, R.shape[0])
    priors = _checked_colour_priors(colour_priors, R.shape[0], settings.histogram_bins)
    kernels()
    img = undistort_image(img, camera)
    K = np.ascontiguousarray(camera.K.numpy())
    def one(b: int) -> _Outcome:
        return _refine_one(img, K, models[b], R[b], t[b], settings, priors[b])

    if settings.threads > 1 and len(models) > 1:
        with ThreadPoolExecutor(min(settings.threads, len(models))) as pool:
            outcomes = list(pool.map(one, range(len(models))))
    else:
        outcomes = [one(b) for b in range(len(models))]
    return RefineResult(
        R=torch.from_numpy(np.stack([o.R for o in outcomes])),
        t=torch.from_numpy(np.stack([o.t for o in outcomes])),
        cost=torch.tensor([o.cost for o in outcomes], dtype=torch.float64),
        iterations=torch.tensor([o.iterations for o in outcomes], dtype=torch.int64),
        converged=torch.tensor([o.converged for o in outcomes], dtype=torch.bool),
        covariance=torch.from_numpy(np.stack([o.covariance for o in outcomes])),
        num_lines=torch.tensor([o.num_lines for o in outcomes], dtype=torch.int64),
        colours=tuple(o.colours for o in outcomes),
    )


def _contour_at(model: ObjectModel, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                settings: RefineSettings) -> ContourPoints:
    if isinstance(model, ContourModel):
        return model.contour(R, t, settings.num_points)
    return render_contour(model, R, t, K, num_points=settings.num_points)


def exp_so3(w: np.ndarray) -> np.ndarray:
    """Rodrigues' formula for one (3,) rotation vector [rad] -> (3, 3), in numpy.

    The same map as `geometry.so3.rotvec_to_matrix` (a test checks it), without torch's
    per-call overhead (~0.3 ms, 8 calls per instance).
    """
    theta_sq = float(w @ w)
    if theta_sq < 1e-8:  # series: truncation ~theta^4 / 120 < 1e-18
        a, b = 1.0 - theta_sq / 6.0, 0.5 - theta_sq / 24.0
    else:
        theta = math.sqrt(theta_sq)
        a = math.sin(theta) / theta
        b = 2.0 * math.sin(0.5 * theta) ** 2 / theta_sq
    k = np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
    return np.eye(3) + a * k + b * (k @ k)


class _Histograms:
    """Running foreground / background colour frequencies of one instance.

    Without a prior, each `update` blends the new histograms in at ``histogram_rate``. With
    one, the prior is used unchanged until the final update, which blends this frame's
    histograms into it at ``colour_learning_rate`` (the module docstring).
    """

    def __init__(self, settings: RefineSettings, prior: ColourStatistics | None = None
                 ) -> None:
        self.settings = settings
        self.prior = prior
        self.fg: np.ndarray | None = None if prior is None else prior.foreground
        self.bg: np.ndarray | None = None if prior is None else prior.background

    def statistics(self) -> ColourStatistics | None:
        """The current histograms (None before any were sampled)."""
        if self.fg is None or self.bg is None:
            return None
        return ColourStatistics(self.fg, self.bg)

    def update(self, image: np.ndarray, lines: CorrespondenceLines, final: bool = False
               ) -> ColourModel:
        """Blend in the colours along `lines` and return the colour model for them.

        `final`: the update at the returned pose (the only one that changes a prior).
        """
        s = self.settings
        samples = sample_lines(image, lines, s.histogram_bins, s.histogram_offset_px,
                               s.histogram_length_px)
        hf, hb = samples.fg_counts, samples.bg_counts
        if self.prior is not None:
            if final and hf.sum() > 0 and hb.sum() > 0:
                a = s.colour_learning_rate
                self.fg = blend_histograms(self.prior.foreground, hf, a)
                self.bg = blend_histograms(self.prior.background, hb, a)
        elif hf.sum() > 0 and hb.sum() > 0:
            hf, hb = hf / hf.sum(), hb / hb.sum()
            if self.fg is None or self.bg is None:
                self.fg, self.bg = hf, hb
            else:
                a = s.histogram_rate
                self.fg = (1 - a) * self.fg + a * hf
                self.bg = (1 - a) * self.bg + a * hb
        nb = s.histogram_bins ** 3
        flat = np.full(nb, 1.0 / nb)
        return ColourModel(s.histogram_bins, flat if self.fg is None else self.fg,
                           flat if self.bg is None else self.bg, samples,
                           s.local_radius_px, s.local_prior)


def _fit_mask(lines: CorrespondenceLines, scale: int, settings: RefineSettings
              ) -> CorrespondenceLines:
    """The lines whose inside and outside stretches are long enough for the step model."""
    need = settings.min_continuous_segments * scale
    keep = lines.valid & (lines.inner_px >= need) & (lines.outer_px >= need)
    return CorrespondenceLines(lines.centres, lines.normals, lines.inner_px, lines.outer_px,
                               keep)


def _refine_one(image: np.ndarray, K: np.ndarray, model: ObjectModel, R: np.ndarray,
                t: np.ndarray, settings: RefineSettings, colour_prior: ColourStatistics | None
                ) -> _Outcome:
    ker = kernels()
    H_img, W_img = image.shape[:2]
    s = settings
    hist = _Histograms(s, colour_prior)
    damping = np.array([s.damping_translation] * 3 + [s.damping_rotation] * 3)
    ray = t / max(float(np.linalg.norm(t)), 1e-12)
    prior = (np.outer(ray, ray) / (s.depth_prior * float(np.linalg.norm(t))) ** 2
             if s.depth_prior > 0 else np.zeros((3, 3)))
    Hm = np.zeros((6, 6))
    g = np.zeros(6)
    R = R.copy()
    t = t.copy()
    R_start, t_start = R.copy(), t.copy()
    iterations = 0
    step_px = math.inf
    failed = False
    schedule = [(p, level, scale) for p in range(s.passes)
                for level, scale in enumerate(s.scales)]
    for p, level, scale in schedule:
        if p > 0 and level == 0:  # a new pass: colour statistics from the improved pose only
            hist = _Histograms(s, colour_prior)  # (a prior is kept: it is not this frame's)
        contour = _contour_at(model, R, t, K, s)
        lines = project_lines(contour, R, t, K, W_img, H_img)
        colours = hist.update(image, lines)
        fit = _fit_mask(lines, scale, s)
        stats = line_statistics(image, colours, fit, scale, s.function_length,
                                s.distribution_length, s.function_amplitude, s.function_slope,
                                s.min_posterior, s.edge_weight)
        var = np.maximum(stats.var_px, s.min_sigma_px[level] ** 2)
        J = np.zeros((contour.num_points, 6))
        for _ in range(s.iterations):
            _, used = ker.normal_equations(contour.points_obj, R, t, K, lines.centres,
                                           lines.normals, stats.mean_px, var, stats.ok,
                                           s.huber, Hm, g, J)
            if used < s.min_lines:
                failed = True
                break
            Hm[:3, :3] += prior
            g[:3] += prior @ (t - t_start)
            try:
                delta = np.linalg.solve(Hm + np.diag(damping), -g)
            except np.linalg.LinAlgError:
                failed = True
                break
            if not np.isfinite(delta).all():
                failed = True
                break
            t = t + delta[:3]
            R = exp_so3(delta[3:]) @ R
            iterations += 1
            moved = J[stats.ok] @ delta
            step_px = float(np.sqrt(np.mean(moved * moved)))
        if failed:
            break
    if failed or not np.isfinite(R).all() or not np.isfinite(t).all() or t[2] <= 0:
        R, t = R_start, t_start
    return _final_outcome(image, K, model, R, t, s, hist, iterations,
                          converged=not failed and step_px <= s.convergence_px)


def _final_outcome(image: np.ndarray, K: np.ndarray, model: ObjectModel, R: np.ndarray,
                   t: np.ndarray, s: RefineSettings, hist: _Histograms, iterations: int,
                   converged: bool) -> _Outcome:
    """Cost and covariance at the returned pose, from the finest level's line model."""
    ker = kernels()
    H_img, W_img = image.shape[:2]
    contour = _contour_at(model, R, t, K, s)
    lines = project_lines(contour, R, t, K, W_img, H_img)
    colours = hist.update(image, lines, final=True)
    scale = s.scales[-1]
    fit = _fit_mask(lines, scale, s)
    stats = line_statistics(image, colours, fit, scale, s.function_length,
                            s.distribution_length, s.function_amplitude, s.function_slope,
                            s.min_posterior, s.edge_weight)
    n_ok = int(stats.ok.sum())
    cost = float(stats.nll[stats.ok].mean()) if n_ok else math.inf
    var = np.maximum(stats.var_px, s.min_sigma_px[-1] ** 2)
    Hm = np.zeros((6, 6))
    g = np.zeros(6)
    J = np.zeros((contour.num_points, 6))
    _, used = ker.normal_equations(contour.points_obj, R, t, K, lines.centres, lines.normals,
                                   stats.mean_px, var, stats.ok, 0.0, Hm, g, J)
    cov = _covariance(Hm) if used >= 6 else np.zeros((6, 6))
    return _Outcome(R=R, t=t, cost=cost, iterations=iterations,
                    converged=bool(converged and used >= s.min_lines),
                    covariance=cov, num_lines=int(used), colours=hist.statistics())


def _covariance(H: np.ndarray) -> np.ndarray:
    """Symmetric PSD inverse of the (6, 6) normal matrix.

    Directions it does not constrain get 1e-12 of its largest eigenvalue as information (a
    very large variance) rather than an infinite one.
    """
    Hs = 0.5 * (H + H.T)
    lam, vec = np.linalg.eigh(Hs)
    if not np.isfinite(lam).all() or lam[-1] <= 0:
        return np.zeros((6, 6))
    lam = np.maximum(lam, lam[-1] * 1e-12)
    cov = (vec / lam) @ vec.T
    return 0.5 * (cov + cov.T)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Batched, differentiable Perspective-n-Point (closed-form start, LM, implicit gradients).

The solver minimises the weighted (optionally Huber-robust) reprojection cost

    C(R, t) = 1/2 sum_i w_i rho(||pi(K (R X_i + t)) - x_i||^2)        [px^2]

over rotations R and translations t, for a batch of problems at once (no Python loop over
samples):

1. A closed-form start: EPnP (Lepetit, Moreno-Noguer, Fua, IJCV 2009) with 4 control points on the
   principal axes of the object points, or 3 control points for planar sets (chessboards, detected
   from the principal variances) and for N < 6, where the 4-point kernel is not one-dimensional.
   The kernel vector comes from a shifted inverse iteration (one batched 12x12 Cholesky), the scale
   from the control-point distances and the rotation from a Newton polar decomposition. Planar
   problems also start from the mirrored pose of the planar two-fold ambiguity; the better of the
   two converged solutions is kept.
2. Levenberg-Marquardt on SE(3) with analytic Jacobians of the pinhole projection under a left
   perturbation ``R <- exp([dtheta]x) R, t <- t + dt`` (per-point weights, Huber kernel through
   iteratively reweighted normal equations, whose right-hand side is exactly the robust cost's
   gradient). Where Gauss-Newton converges slowly (planar sets, large residuals) the steps
   switch to Newton steps on the exact Hessian, Marquardt-damped. For N < 16 non-planar sets
   the LM also starts from the planar approximation and the mirrored poses (best kept).
3. Backward by implicit differentiation (the BPnP idea, Chen et al., CVPR 2020): at the optimum
   ``g(xi; theta) = dC/dxi = 0`` for the local perturbation ``xi = (dt, dtheta)``, so
   ``dxi/dtheta = -H^-1 dg/dtheta`` with H the exact Hessian of C (Gauss-Newton term, second
   derivatives of the projection and of the perturbation, and of the robust kernel), one batched
   6x6 solve per sample. The differentiated condition is the gradient of exactly the cost the
   forward minimises.

Two implementations of the same algorithm (``impl``): a compiled one (numba, `pnp_compiled`,
float64, CPU: forward, implicit backward and RANSAC in one call per batch; on CPU 10-90x faster
than the torch one, which is bound by ~1,400 ATen dispatches per forward) and the torch one (any
device and dtype, ``backward="unrolled"``, the reference the compiled one is tested against).
``impl="auto"`` (the default) takes the compiled one for CPU float64 ``x2d`` (the other inputs are
cast to it) unless ``backward="unrolled"`` under autograd or numba is not installed; the first
compiled call in a process loads the machine code (~1 s; ~1 min the very first time on a machine,
then cached on disk): call `warm_up()` at start-up to pay that before the first frame.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor

from dvc_perception.errors import ConfigError, EngineUnavailableError, InputError, ShapeError
from dvc_perception.geometry.projection import points_in_camera, reprojection_errors
from dvc_perception.geometry.so3 import matrix_to_rotvec, rotvec_to_matrix

_LOG = logging.getLogger(__name__)

MIN_POINTS = 4
# Relative principal standard deviation below which a point set is planar (3 control points).
PLANAR_RATIO = 0.02
# Newton steps (exact Hessian) once a Gauss-Newton step was below this size (rad, relative).
NEWTON_STEP = 1e-2
# Steps below this size (rad, relative) are accepted even if round-off raises the cost.
TINY_STEP = 1e-9
# Iterations from every start before the best start alone goes on.
MULTI_START_ITERATIONS = 6
# Levenberg-Marquardt iterations per RANSAC hypothesis.
HYPOTHESIS_ITERATIONS = 5
# Below this many points the 4-control-point kernel is noisy: start from several poses.
SMALL_N = 16
# ... and below which it is collinear (or all points coincide): no unique pose.
COLLINEAR_RATIO = 1e-5
IMPLEMENTATIONS = ("auto", "compiled", "torch")


@dataclass(frozen=True)
class HuberLoss:
    """Huber kernel on the per-point reprojection distance.

    ``rho(s) = s`` for ``sqrt(s) <= delta_px``, else ``2 delta_px sqrt(s) - delta_px^2``, where
    ``s`` is the squared reprojection distance in px^2.

    Attributes:
        delta_px: threshold between the quadratic and the linear part, px.
    """

    delta_px: float

    def __post_init__(self) -> None:
        if not (isinstance(self.delta_px, (int, float)) and self.delta_px > 0
                and math.isfinite(self.delta_px)):
            raise ConfigError(f"HuberLoss.delta_px must be a finite number > 0, got "
                              f"{self.delta_px!r}")


RobustKernel = Union[HuberLoss, tuple[str, float], None]


@dataclass(frozen=True)
class PnPResult:
    """Batched PnP solution. Poses are object-in-camera: ``X_cam = R @ X_obj + t``.

    Attributes:
        R: (B, 3, 3) rotation of the object in the camera frame.
        t: (B, 3) translation of the object in the camera frame, m.
        rvec: (B, 3) rotation vector of R, rad.
        cost: (B,) final cost ``1/2 sum_i w_i rho(r_i^2)``, px^2 (not differentiable).
        converged: (B,) bool: a lightly damped (lambda <= 1) step from the returned pose's
            basin was below ``tol`` (rad, and relative to |t|), i.e. the pose is stationary to
            ``tol``; False when ``max_iterations`` ran out first.
        valid: (B,) bool, False for non-finite inputs, fewer than 4 points of positive weight,
            collinear object points, a solution with a weighted point at depth <= 0, or a
            singular normal matrix. Invalid samples have ``R = I``, ``t = 0``, ``cost = 0``,
            ``covariance = 0`` and zero gradients.
        covariance: (B, 6, 6) in ROS ``PoseWithCovariance`` order: translation x, y, z (m),
            then small rotation angles about the camera x, y, z axes (rad), for the left
            perturbation ``R = exp([dtheta]x) R_hat``, ``t = t_hat + dt``. Gauss-Newton
            ``(J^T W J)^-1`` scaled by the residual variance ``sum_i w_i r_i^2 / (2 N - 6)``
            (with the Huber weights folded into W). Not differentiable.
        residuals: (B, N) reprojection error ``||pi(K (R X_i + t)) - x_i||`` of every point
            (whatever its weight) at the returned pose, px; ``+inf`` for every point of an
            invalid sample, for points at depth <= 0 and for non-finite values (never NaN, so
            ``residuals < threshold`` is a safe inlier test). Not differentiable.
    """

    R: Tensor
    t: Tensor
    rvec: Tensor
    cost: Tensor
    converged: Tensor
    valid: Tensor
    covariance: Tensor
    residuals: Tensor


# --------------------------------------------------------------------------------------------
# Input handling


def _huber_delta(robust: RobustKernel) -> float | None:
    if robust is None:
        return None
    if isinstance(robust, HuberLoss):
        return float(robust.delta_px)
    if isinstance(robust, tuple) and len(robust) == 2 and robust[0] == "huber":
        return HuberLoss(float(robust[1])).delta_px
    raise ConfigError(f"robust must be None, HuberLoss(delta_px) or ('huber', delta_px), got "
                      f"{robust!r}")


def _default_tol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == torch.float64 else 1e-5


def _check_config(max_iterations: int, tol: float | None, backward: str, impl: str) -> None:
    if backward not in ("implicit", "unrolled"):
        raise ConfigError(f"backward must be 'implicit' or 'unrolled', got {backward!r}")
    if impl not in IMPLEMENTATIONS:
        raise ConfigError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if not isinstance(max_iterations, int) or max_iterations < 1:
        raise ConfigError(f"max_iterations must be an int >= 1, got {max_iterations!r}")
    if tol is not None and not tol > 0:
        raise ConfigError(f"tol must be > 0, got {tol!r}")


def _check_inputs(
    x2d: Any, x3d: Any, K: Any, weights: Any, init: Any
) -> tuple[int, int]:
    """Check types, shapes and devices (no tensor ops). Returns (B, N)."""
    for name, x in (("x2d", x2d), ("x3d", x3d), ("K", K), ("weights", weights), ("init", init)):
        if not isinstance(x, Tensor) and not (x is None and name in ("weights", "init")):
            raise InputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x2d.dtype not in (torch.float32, torch.float64):
        raise InputError(f"x2d: expected float32 or float64, got {x2d.dtype}")
    device = x2d.device
    if x2d.dim() not in (2, 3) or x2d.shape[-1] != 2:
        raise ShapeError(f"x2d: expected shape (B,N,2) or (N,2), got {tuple(x2d.shape)}")
    B = x2d.shape[0] if x2d.dim() == 3 else 1
    N = x2d.shape[-2]
    if N < MIN_POINTS:
        raise ShapeError(f"x2d: PnP needs at least {MIN_POINTS} points, got N={N} "
                         f"(shape {tuple(x2d.shape)})")
    for name, x in (("x3d", x3d), ("K", K), ("weights", weights), ("init", init)):
        if x is not None and x.device != device:
            raise InputError(f"{name} is on {x.device} but x2d is on {device}")
        if x is not None and x.is_complex():
            raise InputError(f"{name}: expected a real tensor, got {x.dtype}")

    def bad(x: Tensor, tail: tuple[int, ...]) -> bool:
        n = len(tail)
        return (x.dim() not in (n, n + 1) or tuple(x.shape[x.dim() - n:]) != tail
                or (x.dim() == n + 1 and x.shape[0] not in (1, B)))

    if bad(x3d, (N, 3)):
        raise ShapeError(f"x3d: expected shape ({B},{N},3) or ({N},3), got {tuple(x3d.shape)}")
    if bad(K, (3, 3)):
        raise ShapeError(f"K: expected shape ({B},3,3) or (3,3), got {tuple(K.shape)}")
    if weights is not None and bad(weights, (N,)):
        raise ShapeError(f"weights: expected shape ({B},{N}) or ({N},), got "
                         f"{tuple(weights.shape)}")
    if init is not None and bad(init, (6,)):
        raise ShapeError(f"init: expected shape ({B},6) or (6,) rotvec|t, got "
                         f"{tuple(init.shape)}")
    return B, N


def _prepare(
    x2d: Tensor, x3d: Tensor, K: Tensor, weights: Tensor | None, init: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Check, add the batch dimension, cast to x2d's dtype. Returns batched tensors."""
    B, N = _check_inputs(x2d, x3d, K, weights, init)
    dtype, device = x2d.dtype, x2d.device
    if x2d.dim() == 2:
        x2d = x2d.unsqueeze(0)
    if x3d.dim() == 2:
        x3d = x3d.unsqueeze(0)
    if K.dim() == 2:
        K = K.unsqueeze(0)
    if weights is None:
        weights = torch.ones(B, N, dtype=dtype, device=device)
    elif weights.dim() == 1:
        weights = weights.unsqueeze(0)
    if init is not None:
        if init.dim() == 1:
            init = init.unsqueeze(0)
        init = init.detach().to(dtype).expand(B, 6)
    x3d = x3d.to(dtype).expand(B, N, 3)
    K = K.to(dtype).expand(B, 3, 3)
    weights = weights.to(dtype).expand(B, N)
    return x2d, x3d, K, weights, init


def _dummy_problem(B: int, N: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    """An exactly solvable, well-conditioned problem that replaces non-finite samples."""
    i = torch.arange(N, dtype=dtype, device=device)
    pts = torch.stack([0.1 * torch.cos(2.4 * i), 0.1 * torch.sin(2.4 * i),
                       0.1 * torch.cos(1.3 * i + 0.5)], dim=-1)
    K = torch.tensor([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]], dtype=dtype,
                     device=device)
    cam = pts + torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=device)
    uv = (cam @ K.T)[:, :2] / cam[:, 2:]
    return uv.expand(B, N, 2), pts.expand(B, N, 3), K.expand(B, 3, 3)


# --------------------------------------------------------------------------------------------
# Residuals, normal equations and the exact Hessian (SoA layout: coordinates before points)


def _residuals(
    R: Tensor, t: Tensor, X: Tensor, obs: Tensor, K: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns q = R X (B,3,N), uv (B,2,N), r = uv - obs (B,2,N), z = (K P)_2 (B,1,N)."""
    q = R @ X
    KP = K @ (q + t[:, :, None])
    z = KP[:, 2:3]  # z = 0 gives inf/NaN costs, which the LM rejects and `valid` reports
    uv = KP[:, :2] / z
    return q, uv, uv - obs, z


def _robust_weights(
    s: Tensor, w: Tensor, huber: float | None
) -> tuple[Tensor, Tensor]:
    """Returns (cost (B,), c = w rho'(s) (B,N))."""
    if huber is None:
        return 0.5 * (w * s).sum(-1), w
    root = s.clamp(min=1e-300 if s.dtype == torch.float64 else 1e-30).sqrt()
    outer = root > huber
    rho = torch.where(outer, 2.0 * huber * root - huber * huber, s)
    drho = torch.where(outer, huber / root, torch.ones_like(s))
    return 0.5 * (w * rho).sum(-1), w * drho


def _projection_jacobian(K: Tensor, uv: Tensor, z: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """dr/dP (B,3,2,N) and the full Jacobian dr/dxi (B,6,2,N), xi = (dt, dtheta)."""
    A = (K[:, :2, :].transpose(1, 2)[:, :, :, None]
         - K[:, 2, :, None, None] * uv[:, None, :, :]) / z[:, None]
    J_rot = torch.linalg.cross(q[:, :, None, :].expand_as(A), A, dim=1)
    return A, torch.cat([A, J_rot], dim=1)


def _second_order(
    q: Tensor, A: Tensor, r: Tensor, z: Tensor, K: Tensor, c: Tensor, w: Tensor, s: Tensor,
    huber: float | None,
) -> tuple[Tensor, Tensor]:
    """Second-order part of the exact Hessian (B,6,6) and alpha = dC_i/dxi / c_i (B,6,N).

    With a = (dr/dP)^T r, alpha = [a; q x a], beta = [k3; q x k3] (k3 the last row of K), the
    exact Hessian is sum_i c_i J_i^T J_i plus
    S = sum_i -c_i (alpha beta^T + beta alpha^T) / z_i + [0 0; 0 c_i (sym(q a^T) - (a.q) I)]
        + 2 w_i rho''(s_i) alpha alpha^T
    (second derivatives of the projection, of the exponential map and of the robust kernel).
    """
    a = A[:, :, 0] * r[:, 0:1] + A[:, :, 1] * r[:, 1:2]  # (B,3,N)
    alpha = torch.cat([a, torch.linalg.cross(q, a, dim=1)], dim=1)
    k3 = K[:, 2, :, None].expand_as(q)
    beta = torch.cat([k3, torch.linalg.cross(q, k3, dim=1)], dim=1)
    X2 = (alpha * (c / z[:, 0])[:, None]) @ beta.transpose(1, 2)
    Y = (q * c[:, None]) @ a.transpose(1, 2)
    aq = (c * (a[:, 0] * q[:, 0] + a[:, 1] * q[:, 1] + a[:, 2] * q[:, 2])).sum(-1)
    eye = torch.eye(3, dtype=q.dtype, device=q.device)
    block = 0.5 * (Y + Y.transpose(1, 2)) - aq[:, None, None] * eye
    S = torch.nn.functional.pad(block, (3, 0, 3, 0)) - X2 - X2.transpose(1, 2)
    if huber is not None:
        root = s.clamp(min=1e-300 if s.dtype == torch.float64 else 1e-30).sqrt()
        d2 = torch.where(root > huber, -0.5 * huber / (root * s), torch.zeros_like(s))
        S = S + (alpha * (2.0 * w * d2)[:, None]) @ alpha.transpose(1, 2)
    return S, alpha


def _normal_equations(
    R: Tensor, t: Tensor, X: Tensor, obs: Tensor, K: Tensor, w: Tensor, huber: float | None,
    second: bool = True, K_cols: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Cost (B,), augmented Gauss-Newton matrix (B,7,7) and second-order part S (B,6,6).

    The augmented matrix is [J r]^T C [J r]; S is computed only if ``second`` (else None).
    ``K_cols`` = (K[:, :2]^T (B,3,2,1), k3 (B,3,1,1)) may be passed precomputed. Written with
    few tensor ops: on CPU their dispatch, not the arithmetic, dominates.
    """
    B, N = X.shape[0], X.shape[2]
    Kt2, k3 = _k_columns(K) if K_cols is None else K_cols
    q = R @ X
    KP = torch.baddbmm(K @ t[:, :, None], K, q)
    z = KP[:, 2:3]  # z = 0 gives inf/NaN costs, which the LM rejects and `valid` reports
    uv = KP[:, :2] / z
    r = uv - obs
    s = (r * r).sum(1)
    cost, c = _robust_weights(s, w, huber)
    A = (Kt2 - k3 * uv[:, None]) / z[:, None]
    J_rot = torch.linalg.cross(q[:, :, None].expand_as(A), A, dim=1)
    Jr = torch.cat([A, J_rot, r[:, None]], dim=1)  # (B,7,2,N)
    H = (Jr * c[:, None, None]).view(B, 7, 2 * N) @ Jr.view(B, 7, 2 * N).transpose(1, 2)
    S = _second_order(q, A, r, z, K, c, w, s, huber)[0] if second else None
    return cost, H, S


def _k_columns(K: Tensor) -> tuple[Tensor, Tensor]:
    return K[:, :2, :].transpose(1, 2)[:, :, :, None], K[:, 2, :, None, None]


def _stationarity(
    R: Tensor, t: Tensor, X: Tensor, obs: Tensor, K: Tensor, w: Tensor, huber: float | None
) -> tuple[Tensor, Tensor]:
    """Gradient g = dC/dxi (B,6) (differentiable in the inputs) and exact Hessian (B,6,6)."""
    B, N = X.shape[0], X.shape[2]
    q, uv, r, z = _residuals(R, t, X, obs, K)
    A, J = _projection_jacobian(K, uv, z, q)
    s = r[:, 0] * r[:, 0] + r[:, 1] * r[:, 1]
    _, c = _robust_weights(s, w, huber)
    a = A[:, :, 0] * r[:, 0:1] + A[:, :, 1] * r[:, 1:2]
    g = torch.cat([a, torch.linalg.cross(q, a, dim=1)], dim=1) @ c[:, :, None]
    with torch.no_grad():
        Jd = J.detach()
        cd = c.detach()
        H = (Jd * cd[:, None, None]).reshape(B, 6, 2 * N) @ Jd.reshape(B, 6, 2 * N).transpose(1, 2)
        S, _ = _second_order(q.detach(), A.detach(), r.detach(), z.detach(), K.detach(), cd,
                             w.detach(), s.detach(), huber)
    return g[..., 0], H + S


def _damped_solve(H: Tensor, rhs: Tensor, rel_damping: float) -> tuple[Tensor, Tensor]:
    """Solve H x = rhs (B,6) with Jacobi scaling and a small relative damping; ok mask (B,)."""
    d = H.diagonal(dim1=1, dim2=2).abs().clamp(min=1e-300 if H.dtype == torch.float64
                                                else 1e-30).rsqrt()
    Hs = H * d[:, :, None] * d[:, None, :]
    Hs = Hs + rel_damping * torch.eye(6, dtype=H.dtype, device=H.device)
    x, info = torch.linalg.solve_ex(Hs, (rhs * d)[..., None])
    x = x[..., 0] * d
    ok = (info == 0) & torch.isfinite(x).all(-1)
    return torch.where(ok[:, None], x, torch.zeros_like(x)), ok


# --------------------------------------------------------------------------------------------
# Closed-form start (EPnP)


@dataclass(frozen=True)
class _ObjectFrame:
    centroid: Tensor  # (B,3)
    axes: Tensor  # (B,3,3) principal axes as columns, largest variance first, det +1
    sigma: Tensor  # (B,3) principal standard deviations, m
    planar: Tensor  # (B,) bool, use 3 control points
    degenerate: Tensor  # (B,) bool, collinear or coincident


def _object_frame(X: Tensor, w: Tensor, n_pos: Tensor) -> _ObjectFrame:
    """Weighted principal axes of the object points X (B,3,N), weights w (B,N)."""
    wn = w / w.sum(-1, keepdim=True).clamp(min=1e-300)
    c0 = (X * wn[:, None]).sum(-1)
    Xc = X - c0[:, :, None]
    cov = (Xc * wn[:, None]) @ Xc.transpose(1, 2)
    lam, vec = torch.linalg.eigh(cov)
    lam = lam.flip(-1).clamp(min=0.0)
    vec = vec.flip(-1)
    # Canonical signs (the largest-magnitude component of the first two axes positive, det +1):
    # the start does not depend on the LAPACK build, and the compiled path starts identically.
    big = vec[:, :, :2].gather(1, vec[:, :, :2].abs().argmax(1, keepdim=True))
    vec = torch.cat([vec[:, :, :2] * torch.where(big < 0, -1.0, 1.0), vec[:, :, 2:]], -1)
    vec = torch.cat([vec[:, :, :2], vec[:, :, 2:] * torch.linalg.det(vec)[:, None, None]], -1)
    sigma = lam.sqrt()
    s1 = sigma[:, 0].clamp(min=1e-300)
    degenerate = (sigma[:, 1] / s1 < COLLINEAR_RATIO) | (sigma[:, 0] <= 1e-12)
    planar = (sigma[:, 2] / s1 < PLANAR_RATIO) | (n_pos < 6)
    return _ObjectFrame(c0, vec, sigma, planar, degenerate)


# Q_i = [[1,0,-x],[0,1,-y],[-x,-y,x^2+y^2]] = sum_f F_if T_f with F = (1, x, y, x^2 + y^2).
_T = (
    (1, 0, 0, 0, 1, 0, 0, 0, 0),
    (0, 0, -1, 0, 0, 0, -1, 0, 0),
    (0, 0, 0, 0, 0, -1, 0, -1, 0),
    (0, 0, 0, 0, 0, 0, 0, 0, 1),
)
_PAIRS_I = (0, 0, 0, 1, 1, 2)
_PAIRS_J = (1, 2, 3, 2, 3, 3)


def _polar_rotation(D: Tensor, iterations: int = 4) -> Tensor:
    """Rotation near D (B,3,3), det(D) > 0: Newton's polar iteration, then Gram-Schmidt.

    The polar iteration approaches the nearest rotation; the final Gram-Schmidt makes the result
    orthonormal to round-off even where the iteration has not fully converged (the solver only
    ever multiplies it by exact rotations, so any non-orthogonality would persist).
    """
    X = D / (D.norm(dim=(1, 2), keepdim=True) / math.sqrt(3.0)).clamp(min=1e-300)
    for _ in range(iterations):
        cof = torch.linalg.cross(X[:, :, [1, 2, 0]], X[:, :, [2, 0, 1]], dim=1)
        det = (X[:, :, 0] * cof[:, :, 0]).sum(-1)
        X = 0.5 * (X + cof / det[:, None, None])
    c1 = X[:, :, 0] / X[:, :, 0].norm(dim=-1, keepdim=True).clamp(min=1e-300)
    c2 = X[:, :, 1] - (c1 * X[:, :, 1]).sum(-1, keepdim=True) * c1
    c2 = c2 / c2.norm(dim=-1, keepdim=True).clamp(min=1e-300)
    return torch.stack([c1, c2, torch.linalg.cross(c1, c2, dim=-1)], dim=-1)


def _epnp(X: Tensor, obs: Tensor, K: Tensor, w: Tensor, frame: _ObjectFrame, planar: Tensor
          ) -> tuple[Tensor, Tensor]:
    """EPnP start (float64): returns R (B,3,3), t (B,3).

    ``planar`` (B,) selects 3 control points (the points are taken on their principal plane).
    """
    B, N = X.shape[0], X.shape[2]
    dtype, device = X.dtype, X.device
    fx, sk, cx, fy, cy = K[:, 0, 0:1], K[:, 0, 1:2], K[:, 0, 2:3], K[:, 1, 1:2], K[:, 1, 2:3]
    yn = (obs[:, 1] - cy) / fy
    xn = (obs[:, 0] - cx - sk * yn) / fx
    coords = frame.axes.transpose(1, 2) @ (X - frame.centroid[:, :, None])  # (B,3,N)
    alpha = coords / frame.sigma.clamp(min=1e-300)[:, :, None]
    alpha = torch.cat([alpha[:, :2], alpha[:, 2:] * (~planar)[:, None, None]], dim=1)
    alpha = torch.cat([1.0 - alpha.sum(1, keepdim=True), alpha], dim=1)  # (B,4,N)
    outer = (alpha[:, :, None] * alpha[:, None]).reshape(B, 16, N)
    F = torch.stack([w, w * xn, w * yn, w * (xn * xn + yn * yn)], dim=-1)  # (B,N,4)
    T = torch.tensor(_T, dtype=dtype, device=device)
    MtM = ((outer @ F) @ T).reshape(B, 4, 4, 3, 3).permute(0, 1, 3, 2, 4).reshape(B, 12, 12)
    trace = MtM.diagonal(dim1=1, dim2=2).sum(-1)
    eye12 = torch.eye(12, dtype=dtype, device=device)
    lock = torch.zeros(12, dtype=dtype, device=device)
    lock[9:] = 1.0
    # Planar: the unused 4th control point is pinned to 0 by a stiff diagonal.
    MtM = MtM + (planar.to(dtype) * trace)[:, None, None] * torch.diag(lock)
    MtM = MtM + (1e-12 * trace)[:, None, None] * eye12
    L, _ = torch.linalg.cholesky_ex(MtM)
    v = torch.zeros(B, 12, 1, dtype=dtype, device=device)
    v[:, 2::3] = 1.0
    v[:, 11] = v[:, 11] * (~planar)[:, None]
    for _ in range(3):
        v = torch.cholesky_solve(v, L)
        v = v / v.norm(dim=1, keepdim=True).clamp(min=1e-300)
    ctrl = v.reshape(B, 4, 3)
    # Object control points: centroid and centroid + sigma_j * axis_j.
    ctrl_obj = torch.cat([frame.centroid[:, None],
                          frame.centroid[:, None]
                          + (frame.axes * frame.sigma[:, None]).transpose(1, 2)], dim=1)
    pi, pj = list(_PAIRS_I), list(_PAIRS_J)
    dv = (ctrl[:, pi] - ctrl[:, pj]).norm(dim=-1)
    do = (ctrl_obj[:, pi] - ctrl_obj[:, pj]).norm(dim=-1)
    mask = torch.ones(B, 6, dtype=dtype, device=device)
    mask[:, 2:] = torch.where(planar[:, None], torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=dtype,
                                                             device=device), mask[:, 2:])
    beta = (mask * dv * do).sum(-1) / (mask * dv * dv).sum(-1).clamp(min=1e-300)
    depth = (alpha * ctrl[:, :, 2:3]).sum(1)  # (B,N) up to the scale beta
    beta = torch.where((w * depth).sum(-1) < 0, -beta, beta)
    ctrl = ctrl * beta[:, None, None]
    d = (ctrl[:, 1:] - ctrl[:, :1]) / frame.sigma.clamp(min=1e-300)[:, :, None]  # (B,3,3) rows
    D = d.transpose(1, 2)  # columns d1, d2, d3
    d12 = torch.linalg.cross(D[:, :, 0], D[:, :, 1], dim=-1)
    det = (d12 * D[:, :, 2]).sum(-1)
    use_cross = planar | (det <= 0)
    d3 = d12 / d12.norm(dim=-1, keepdim=True).clamp(min=1e-300) * (
        D[:, :, 0].norm(dim=-1) * D[:, :, 1].norm(dim=-1)).sqrt()[:, None]
    D = torch.cat([D[:, :, :2], torch.where(use_cross[:, None], d3, D[:, :, 2])[:, :, None]], -1)
    R = _polar_rotation(D) @ frame.axes.transpose(1, 2)
    t = ctrl[:, 0] - (R @ frame.centroid[:, :, None])[..., 0]
    return R, t


def _mirror_start(R: Tensor, t: Tensor, frame: _ObjectFrame) -> tuple[Tensor, Tensor]:
    """The other pose of the planar ambiguity: plane normal mirrored about the line of sight."""
    n = R @ frame.axes[:, :, 2:3]
    c = (R @ frame.centroid[:, :, None]) + t[:, :, None]
    v = c / c.norm(dim=1, keepdim=True).clamp(min=1e-300)
    n2 = 2.0 * (n * v).sum(1, keepdim=True) * v - n
    axis = torch.linalg.cross(n, n2, dim=1)[..., 0]
    sin = axis.norm(dim=-1)
    cos = (n * n2).sum(1)[..., 0]
    angle = torch.atan2(sin, cos)
    rot = rotvec_to_matrix(axis * (angle / sin.clamp(min=1e-12))[:, None])
    R2 = rot @ R
    t2 = c[..., 0] - (R2 @ frame.centroid[:, :, None])[..., 0]
    return R2, t2


# --------------------------------------------------------------------------------------------
# Levenberg-Marquardt


def _exp_so3(omega: Tensor) -> Tensor:
    """Rodrigues for LM steps (B,3) -> (B,3,3), with fewer ops than rotvec_to_matrix.

    ``exp([w]x) = cos(theta) I + sinc(theta) [w]x + (1 - cos(theta))/theta^2 w w^T``, exact for
    any angle; theta is floored at 1e-150 (float64) or 1e-18 (float32).
    """
    floor = 1e-300 if omega.dtype == torch.float64 else 1e-36
    theta = ((omega * omega).sum(-1, keepdim=True) + floor).sqrt()[:, :, None]
    half = torch.sin(0.5 * theta) / theta
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return (torch.cos(theta) * eye + (torch.sin(theta) / theta) * _skew(omega)
            + (2.0 * half * half) * (omega[:, :, None] * omega[:, None, :]))


# vec([v]x) = v @ _SKEW_MAP (one small matmul instead of a dozen indexing ops).
_SKEW_MAP = ((0, 0, 0, 0, 0, -1, 0, 1, 0),
             (0, 0, 1, 0, 0, 0, -1, 0, 0),
             (0, -1, 0, 1, 0, 0, 0, 0, 0))


def _skew(v: Tensor) -> Tensor:
    """(B,3) -> (B,3,3) cross-product matrices."""
    return (v @ torch.tensor(_SKEW_MAP, dtype=v.dtype, device=v.device)).view(-1, 3, 3)


def _left_jacobian_inverse(phi: Tensor) -> Tensor:
    """Inverse left Jacobian of SO(3) (B,3,3): log(exp(d) exp(phi)) = phi + J^-1 d + O(d^2)."""
    theta_sq = (phi * phi).sum(-1)
    small = theta_sq < 1e-6
    theta = torch.where(small, 1.0, theta_sq).sqrt()
    # c = 1/theta^2 - (1 + cos)/(2 theta sin); its series 1/12 + theta^2/720 near 0. At pi the
    # logarithm is not differentiable; sin is floored there to keep the value finite.
    sin = torch.sin(theta).clamp(min=1e-12)
    c = torch.where(small, 1.0 / 12.0 + theta_sq / 720.0,
                    1.0 / torch.where(small, 1.0, theta_sq) - (1.0 + torch.cos(theta))
                    / (2.0 * theta * sin))
    k = _skew(phi)
    eye = torch.eye(3, dtype=phi.dtype, device=phi.device)
    return eye - 0.5 * k + c[:, None, None] * (k @ k)


def _levenberg_marquardt(
    R: Tensor, t: Tensor, X: Tensor, obs: Tensor, K: Tensor, w: Tensor,
    huber: float | None, max_iterations: int, tol: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns R, t, cost, the augmented Gauss-Newton matrix at (R, t), converged.

    Gauss-Newton steps while they converge fast; where Gauss-Newton converges slowly (planar
    sets, large residuals: successive steps shrink by less than 10x), Newton steps on the exact
    Hessian, Marquardt-damped with the Gauss-Newton diagonal, restore quadratic convergence.
    The state of each sample (R, t, cost, normal matrices) moves only on accepted steps.
    """
    B = X.shape[0]
    dtype, device = X.dtype, X.device
    K_cols = _k_columns(K)
    cost, Hg, S = _normal_equations(R, t, X, obs, K, w, huber, second=False, K_cols=K_cols)
    lam = torch.full((B,), 1e-4, dtype=dtype, device=device)
    converged = torch.zeros(B, dtype=torch.bool, device=device)
    newton = torch.zeros(B, dtype=torch.bool, device=device)
    prev_size = torch.full((B,), math.inf, dtype=dtype, device=device)
    tiny = 1e-30 if dtype == torch.float64 else 1e-20
    slack = 256.0 * torch.finfo(dtype).eps
    # Step size: |dtheta| in rad, |dt| relative to the starting distance.
    scale = torch.cat([(1.0 / t.detach().norm(dim=-1, keepdim=True).clamp(min=1e-9)).expand(B, 3),
                       torch.ones(B, 3, dtype=dtype, device=device)], dim=-1)
    use_newton = False
    for _ in range(max_iterations):
        H, g = Hg[:, :6, :6], Hg[:, :6, 6:]
        A = H + torch.diag_embed(lam[:, None] * H.diagonal(dim1=1, dim2=2) + tiny)
        if use_newton:
            A = A + S * newton[:, None, None]
        step, _ = torch.linalg.solve_ex(A, -g)
        step = step[..., 0]
        R_new = _exp_so3(step[:, 3:]) @ R
        t_new = t + step[:, :3]
        cost_new, Hg_new, S_new = _normal_equations(R_new, t_new, X, obs, K, w, huber,
                                                    second=use_newton, K_cols=K_cols)
        # Near the optimum a correct step changes the cost by less than the cost's rounding
        # error; rejecting it would stall the convergence test. Hence the slack, and tiny steps
        # (where the local model is exact to round-off) are always taken.
        size = (step.detach().abs() * scale).amax(-1)
        accept = (cost_new <= cost * (1.0 + slack)) | (size < TINY_STEP)  # cost >= 0
        keep = accept[:, None, None]
        R = torch.where(keep, R_new, R)
        t = torch.where(keep[:, 0], t_new, t)
        Hg = torch.where(keep, Hg_new, Hg)
        cost = torch.where(accept, cost_new, cost)
        if use_newton:
            S = torch.where(keep, S_new, S)
        with torch.no_grad():
            # A tiny, lightly damped step means the point it starts from is stationary to tol.
            converged = converged | ((size <= tol) & (lam <= 1.0))
            slow = (accept & (size < NEWTON_STEP) & (size > 0.1 * prev_size)
                    & (size > 100.0 * tol))  # not just round-off at the end
            prev_size = torch.where(accept, size, prev_size)
        lam = (lam * torch.where(accept, 0.1, 10.0)).clamp(1e-12, 1e12)
        if bool(converged.all()):
            break
        if not use_newton and bool(slow.any()):
            use_newton = True
            newton = slow
            S = _normal_equations(R, t, X, obs, K, w, huber, second=True, K_cols=K_cols)[2]
        elif use_newton:
            newton = newton | slow
    return R, t, cost, Hg, converged


# --------------------------------------------------------------------------------------------
# Implicit backward


class _ImplicitPnP(torch.autograd.Function):
    """Returns a zero local perturbation xi = (dt, dtheta) (B,6) whose gradient is implicit."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x2d: Tensor, x3d: Tensor, K: Tensor, w: Tensor, R: Tensor, t: Tensor,
        valid: Tensor, huber: float | None,
    ) -> Tensor:
        ctx.save_for_backward(x2d, x3d, K, w, R, t, valid)
        ctx.huber = huber
        return x2d.new_zeros(x2d.shape[0], 6)

    @staticmethod
    def backward(ctx: Any, grad_xi: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x2d, x3d, K, w, R, t, valid = ctx.saved_tensors
        need = ctx.needs_input_grad[:4]
        with torch.enable_grad():
            inputs = [x.detach().requires_grad_(n) for x, n in zip((x2d, x3d, K, w), need)]
            x2d_, x3d_, K_, w_ = inputs
            R, t = R.detach(), t.detach()
            if not bool(valid.all()):
                # Invalid samples: evaluate the benign replacement problem at its exact pose so
                # that their (zero-weighted) terms are finite; `where` gives them zero gradient.
                B, N = x2d.shape[0], x2d.shape[1]
                du, dx, dK = _dummy_problem(B, N, x2d.dtype, x2d.device)
                bad = ~valid
                x2d_ = torch.where(bad[:, None, None], du, x2d_)
                x3d_ = torch.where(bad[:, None, None], dx, x3d_)
                K_ = torch.where(bad[:, None, None], dK, K_)
                w_ = torch.where(bad[:, None], 1.0, w_)
                eye = torch.eye(3, dtype=R.dtype, device=R.device)
                R = torch.where(bad[:, None, None], eye, R)
                t = torch.where(bad[:, None], torch.tensor([0.0, 0.0, 1.0], dtype=t.dtype,
                                                           device=t.device), t)
            g, H = _stationarity(R, t, x3d_.transpose(1, 2), x2d_.transpose(1, 2), K_, w_,
                                 ctx.huber)
            damping = 1e-12 if H.dtype == torch.float64 else 1e-6
            u, ok = _damped_solve(H, grad_xi, damping)
            u = torch.where((ok & valid)[:, None], u, torch.zeros_like(u))
            wanted = [x for x, n in zip(inputs, need) if n]
            grads = torch.autograd.grad(g, wanted, grad_outputs=-u, allow_unused=True)
        out: list[Tensor | None] = []
        it = iter(grads)
        for x, n in zip(inputs, need):
            if n:
                gx = next(it)
                out.append(torch.zeros_like(x) if gx is None else gx)
            else:
                out.append(None)
        return (*out, None, None, None, None)


# --------------------------------------------------------------------------------------------
# Public API


def solve_pnp(
    x2d: Tensor,
    x3d: Tensor,
    K: Tensor,
    weights: Tensor | None = None,
    *,
    init: Tensor | None = None,
    max_iterations: int = 20,
    tol: float | None = None,
    robust: RobustKernel = None,
    backward: str = "implicit",
    impl: str = "auto",
) -> PnPResult:
    """Solve a batch of PnP problems; differentiable w.r.t. x2d, x3d, K and weights.

    Args:
        x2d: (B, N, 2) or (N, 2) undistorted keypoints, px (u right, v down, (0, 0) the centre
            of the top-left pixel). Its dtype (float32 or float64) and device are used
            throughout; the other inputs are cast to its dtype.
        x3d: (B, N, 3) or (N, 3) object points, m, object frame.
        K: (B, 3, 3) or (3, 3) pinhole intrinsics, px.
        weights: (B, N) or (N,) non-negative per-point weights (default ones); zero drops a
            point.
        init: (B, 6) or (6,) starting pose ``rotvec (rad) | t (m)``; None: closed-form EPnP.
        max_iterations: Levenberg-Marquardt iterations at most (>= 1).
        tol: convergence threshold on the step, ``max(|dtheta|_inf, |dt|_inf / |t|)``; None:
            1e-9 for float64, 1e-5 for float32.
        robust: None (least squares), ``HuberLoss(delta_px)`` or ``("huber", delta_px)``.
        backward: ``"implicit"`` (implicit function theorem at the optimum) or ``"unrolled"``
            (autograd through the iterations; a reference for tests, slower; torch only).
        impl: ``"auto"``: the compiled implementation for a CPU float64 ``x2d`` (unless
            ``backward="unrolled"`` under autograd, or numba is missing), else torch;
            ``"compiled"`` or ``"torch"`` force one (results agree to the tolerance).

    Returns:
        PnPResult with batched fields (B = 1 for unbatched inputs).

    Raises:
        ShapeError: wrong shapes or fewer than 4 points.
        InputError: inputs not tensors, not real, x2d not float32/float64, or inputs on
            different devices.
        ConfigError: bad max_iterations, tol, robust, backward or impl, or ``impl="compiled"``
            for inputs it does not take (not CPU float64, or unrolled backward).
        EngineUnavailableError: ``impl="compiled"`` without numba.
    """
    return _solve_pnp(x2d, x3d, K, weights, init, max_iterations, tol, robust, backward, True,
                      impl)


def _solve_pnp(
    x2d: Tensor, x3d: Tensor, K: Tensor, weights: Tensor | None, init: Tensor | None,
    max_iterations: int, tol: float | None, robust: RobustKernel, backward: str,
    multi_start: bool, impl: str = "auto",
) -> PnPResult:
    """solve_pnp; ``multi_start=False`` skips the extra starts for N < SMALL_N (RANSAC)."""
    _check_config(max_iterations, tol, backward, impl)
    huber = _huber_delta(robust)
    B, N = _check_inputs(x2d, x3d, K, weights, init)
    if _use_compiled(impl, x2d, backward):
        tol_ = _default_tol(torch.float64) if tol is None else float(tol)
        return _solve_pnp_compiled(x2d, x3d, K, weights, init, max_iterations, tol_, huber,
                                   multi_start, N)
    return _solve_pnp_torch(x2d, x3d, K, weights, init, max_iterations, tol, huber, backward,
                            multi_start)


def _solve_pnp_torch(
    x2d: Tensor, x3d: Tensor, K: Tensor, weights: Tensor | None, init: Tensor | None,
    max_iterations: int, tol: float | None, huber: float | None, backward: str,
    multi_start: bool,
) -> PnPResult:
    """The torch implementation (any device and dtype; the reference)."""
    x2d, x3d, K, w, init = _prepare(x2d, x3d, K, weights, init)
    B, N = x2d.shape[0], x2d.shape[1]
    dtype, device = x2d.dtype, x2d.device
    tol_ = _default_tol(dtype) if tol is None else float(tol)
    unrolled = backward == "unrolled" and torch.is_grad_enabled()

    with torch.no_grad():
        # NaN and inf propagate through sums: one finiteness test per sample.
        total = x2d.sum((1, 2)) + x3d.sum((1, 2)) + K.sum((1, 2)) + w.sum(-1)
        if init is not None:
            total = total + init.sum(-1)
        n_pos = (w > 0).sum(-1)
        ok_in = torch.isfinite(total) & (w.amin(-1) >= 0) & (n_pos >= MIN_POINTS)
        # Collinear or coincident object points: no unique pose (checked on finite samples).
        f64 = torch.float64
        w64 = torch.where(ok_in[:, None], w, 1.0).detach().to(f64)
        X64 = torch.where(ok_in[:, None, None], x3d, 0.0).detach().to(f64).transpose(1, 2)
        frame = _object_frame(X64, w64, n_pos)
        ok_in = ok_in & ~frame.degenerate
    if bool(ok_in.all()):
        x2d_s, x3d_s, K_s, w_s = x2d, x3d, K, w
    else:  # replace bad samples by a benign problem so that no NaN reaches any computation
        du, dx, dK = _dummy_problem(B, N, dtype, device)
        bad = ~ok_in
        x2d_s = torch.where(bad[:, None, None], du, x2d)
        x3d_s = torch.where(bad[:, None, None], dx, x3d)
        K_s = torch.where(bad[:, None, None], dK, K)
        w_s = torch.where(bad[:, None], torch.ones_like(w), w)
        if init is not None:
            init = torch.where(bad[:, None], torch.tensor([0, 0, 0, 0, 0, 1.0], dtype=dtype,
                                                          device=device), init)
    X = x3d_s.transpose(1, 2)
    obs = x2d_s.transpose(1, 2)

    with torch.no_grad():
        if not bool(ok_in.all()):  # principal axes of the replacement problems
            X64, w64 = X.detach().to(f64), w_s.detach().to(f64)
            frame = _object_frame(X64, w64, torch.where(ok_in, n_pos, N))
        if init is None:
            obs64, K64 = obs.detach().to(f64), K_s.detach().to(f64)
            R0, t0 = _epnp(X64, obs64, K64, w64, frame, frame.planar)
            starts = [(R0, t0)]
            if N < SMALL_N and multi_start:
                # Few points: the EPnP kernel is noisy; also start from the planar approximation
                # and from the mirrored poses, keep the best converged solution.
                all_planar = torch.ones_like(frame.planar)
                R1, t1 = _epnp(X64, obs64, K64, w64, frame, all_planar)
                starts += [(R1, t1), _mirror_start(R0, t0, frame), _mirror_start(R1, t1, frame)]
            elif bool(frame.planar.any()):
                R1, t1 = _mirror_start(R0, t0, frame)
                starts.append((torch.where(frame.planar[:, None, None], R1, R0),
                               torch.where(frame.planar[:, None], t1, t0)))
            n_starts = len(starts)
            R0 = torch.cat([r for r, _ in starts]).to(dtype)
            t0 = torch.cat([t for _, t in starts]).to(dtype)
        else:
            n_starts = 1
            R0, t0 = rotvec_to_matrix(init[:, :3]), init[:, 3:]

    def rep(x: Tensor) -> Tensor:
        return x.repeat(n_starts, *([1] * (x.dim() - 1))) if n_starts > 1 else x

    with torch.set_grad_enabled(unrolled):
        # Planar sets keep every start to convergence: their two minima (the planar ambiguity)
        # can have close costs that only converged values tell apart.
        early = n_starts > 1 and not bool(frame.planar.any())
        first = min(MULTI_START_ITERATIONS, max_iterations) if early else max_iterations
        R, t, cost, Hg, converged = _levenberg_marquardt(
            R0, t0, rep(X), rep(obs), rep(K_s), rep(w_s), huber, first, tol_)
        if n_starts > 1:
            # Non-planar: a few iterations from every start, then only the best one goes on;
            # the others (mirrored poses, ...) often converge slowly and would hold the batch.
            best = torch.where(torch.isfinite(cost), cost, torch.full_like(cost, math.inf))
            best = best.view(n_starts, B).argmin(0)
            idx = best * B + torch.arange(B, device=device)
            R, t, Hg, cost, converged = R[idx], t[idx], Hg[idx], cost[idx], converged[idx]
            if max_iterations > first and not bool(converged.all()):
                R, t, cost, Hg, conv2 = _levenberg_marquardt(
                    R, t, X, obs, K_s, w_s, huber, max_iterations - first, tol_)
                converged = converged | conv2

    with torch.no_grad():
        Rd, td = R.detach(), t.detach()
        depth = (Rd[:, 2:3] @ X.detach())[:, 0] + td[:, 2:3]
        in_front = ((depth > 0) | (w_s <= 0)).all(-1)
        H = Hg[:, :6, :6].detach()
        d = H.diagonal(dim1=1, dim2=2).clamp(min=1e-300 if dtype == torch.float64 else 1e-30)
        d = d.rsqrt()
        L, info = torch.linalg.cholesky_ex(H * d[:, :, None] * d[:, None, :])
        chol_ok = (info == 0) & torch.isfinite(L).all(-1).all(-1)
        # cholesky_inverse raises on a singular factor: those samples get I (and valid=False)
        L = torch.where(chol_ok[:, None, None], L, torch.eye(6, dtype=dtype, device=device))
        cov = torch.cholesky_inverse(L) * d[:, :, None] * d[:, None, :]
        n_eff = n_pos.to(dtype)
        sigma2 = Hg[:, 6, 6].detach() / (2.0 * n_eff - 6.0).clamp(min=1.0)
        cov = cov * sigma2[:, None, None]
        valid = (ok_in & in_front & chol_ok
                 & torch.isfinite(cov).all(-1).all(-1) & torch.isfinite(cost.detach())
                 & torch.isfinite(Rd).all(-1).all(-1) & torch.isfinite(td).all(-1))

    needs_grad = torch.is_grad_enabled() and any(
        x.requires_grad for x in (x2d, x3d, K, w))
    eye = torch.eye(3, dtype=dtype, device=device).expand(B, 3, 3)
    if unrolled:
        R = torch.where(valid[:, None, None], R, eye)
        t = torch.where(valid[:, None], t, torch.zeros_like(t))
        rvec = matrix_to_rotvec(R)
    else:
        Rd = torch.where(valid[:, None, None], Rd, eye)
        td = torch.where(valid[:, None], td, torch.zeros_like(td))
        with torch.no_grad():
            rvec_hat = matrix_to_rotvec(Rd)
        if needs_grad:
            # The outputs as first-order functions of the zero local perturbation xi: exact
            # values and exact first derivatives at xi = 0, in a few ops.
            xi = _ImplicitPnP.apply(x2d_s, x3d_s, K_s, w_s, Rd, td, valid, huber)
            dtheta = xi[:, 3:]
            R = Rd + _skew(dtheta) @ Rd
            t = td + xi[:, :3]
            rvec = rvec_hat + (_left_jacobian_inverse(rvec_hat) @ dtheta[:, :, None])[..., 0]
        else:
            R, t, rvec = Rd, td, rvec_hat
    zero = torch.zeros((), dtype=dtype, device=device)
    return PnPResult(
        R=R,
        t=t,
        rvec=rvec,
        cost=torch.where(valid, cost.detach(), zero),
        converged=converged & valid,
        valid=valid,
        covariance=torch.where(valid[:, None, None], cov, zero),
        residuals=reprojection_residuals(R.detach(), t.detach(), x2d, x3d, K, valid),
    )



def reprojection_residuals(
    R: Tensor, t: Tensor, x2d: Tensor, x3d: Tensor, K: Tensor, valid: Tensor
) -> Tensor:
    """Per-point reprojection errors (B, N) px at poses R (B,3,3), t (B,3) (torch).

    x2d (B,N,2), x3d (B,N,3) or (1,N,3), K (B,3,3) or (1,3,3); ``+inf`` for invalid samples,
    points at depth <= 0 and non-finite values (the `PnPResult.residuals` convention).
    """
    with torch.no_grad():
        z = points_in_camera(x3d, R, t)[..., 2]
        err = reprojection_errors(x2d, x3d, R, t, K, min_depth=0.0)
        ok = valid[:, None] & (z > 0) & torch.isfinite(err)
        return torch.where(ok, err, math.inf)


# --------------------------------------------------------------------------------------------
# Compiled implementation (numba, float64, CPU)

# Settings vector of the kernels, in pnp_compiled's CFG_* order.
_CFG = np.array([PLANAR_RATIO, NEWTON_STEP, TINY_STEP, MULTI_START_ITERATIONS, SMALL_N,
                 COLLINEAR_RATIO, MIN_POINTS], dtype=np.float64)
_KERNELS: list[ModuleType | None] = []  # [] not loaded yet, [None] numba missing


def _kernels() -> ModuleType:
    """The compiled kernels module (imports numba on first use)."""
    if not _KERNELS:
        try:
            from dvc_perception.geometry import pnp_compiled
        except ImportError:
            _KERNELS.append(None)
        else:
            assert pnp_compiled.CFG_SIZE == _CFG.size
            _KERNELS.append(pnp_compiled)
    if _KERNELS[0] is None:
        raise EngineUnavailableError("impl='compiled' needs numba (requirements/dev.txt); "
                                     "it is not installed")
    return _KERNELS[0]


def compiled_available() -> bool:
    """Whether the compiled implementation can run here (numba importable)."""
    try:
        _kernels()
    except EngineUnavailableError:
        return False
    return True


_WARNED_NO_NUMBA: list[bool] = []


def warm_up() -> float:
    """Load (the first time on a machine: compile and cache) the compiled kernels.

    Call it once at start-up (e.g. a node's configure step): afterwards the first `solve_pnp`
    / `solve_pnp_ransac` call is as fast as later ones. A no-op without numba.

    Returns:
        Seconds spent.
    """
    t0 = time.perf_counter()
    if not compiled_available():
        if not _WARNED_NO_NUMBA:
            _WARNED_NO_NUMBA.append(True)
            _LOG.warning("numba is not installed: solve_pnp runs its torch implementation "
                         "(same results, 10-90x slower on the CPU); pip install numba")
        return 0.0
    from dvc_perception.geometry.ransac import solve_pnp_ransac

    f64 = torch.float64
    with torch.inference_mode(False), torch.enable_grad():  # callable from any grad mode
        i = torch.arange(8, dtype=f64)
        x3d = 0.1 * torch.stack([torch.cos(2.4 * i), torch.sin(2.4 * i), torch.cos(1.3 * i)], -1)
        K = torch.tensor([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]], dtype=f64)
        cam = x3d + torch.tensor([0.0, 0.0, 1.0], dtype=f64)
        x2d = ((cam @ K.T)[:, :2] / cam[:, 2:]).requires_grad_()
        res = solve_pnp(x2d, x3d, K, robust=HuberLoss(2.0), impl="compiled")
        torch.autograd.grad(res.t.sum(), x2d)
        x2d_bad = x2d.detach().clone()
        x2d_bad[0, 0] = math.nan  # also loads the residuals kernel for RANSAC's unusable points
        solve_pnp_ransac(x2d_bad, x3d, K, num_hypotheses=4, impl="compiled")
    return time.perf_counter() - t0


def _use_compiled(impl: str, x2d: Tensor, backward: str) -> bool:
    """Dispatch rule: compiled for CPU float64 x2d, except unrolled backward under autograd."""
    if impl == "torch":
        return False
    fits = x2d.dtype == torch.float64 and x2d.device.type == "cpu"
    unrolled = backward == "unrolled" and torch.is_grad_enabled()
    if impl == "compiled":
        if not fits or unrolled:
            raise ConfigError(f"impl='compiled' takes CPU float64 inputs and the implicit "
                              f"backward; got {x2d.dtype} on {x2d.device}, backward="
                              f"{backward!r}")
        _kernels()
        return True
    return fits and not unrolled and compiled_available()


def _as_array(x: Tensor) -> np.ndarray:
    """A C-contiguous float64 numpy view (or copy) of a CPU tensor (one kernel signature)."""
    return np.ascontiguousarray(x.detach().numpy())


class _CompiledPnP(torch.autograd.Function):
    """Compiled forward; backward: the implicit gradient (compiled), as `_ImplicitPnP`."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x2d: Tensor, x3d: Tensor, K: Tensor, w: Tensor, init: np.ndarray,
        huber: float, max_iterations: int, tol: float, multi_start: bool,
    ) -> tuple[Tensor, ...]:
        arrays = (_as_array(x2d), _as_array(x3d), _as_array(K), _as_array(w))
        out = _kernels().solve_batch(*arrays, init, huber, max_iterations, tol, multi_start,
                                     _CFG)
        # The inputs are saved for autograd's check against in-place modification; the
        # backward kernel reads the arrays (views of the same memory, or copies).
        ctx.save_for_backward(x2d, x3d, K, w)
        ctx.arrays = (*arrays, out[0], out[1], out[2], out[5])  # ..., R, t, rvec, valid
        ctx.huber = huber
        tensors = tuple(map(torch.from_numpy, out))
        ctx.mark_non_differentiable(*tensors[3:])
        return tensors

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, g_R: Tensor, g_t: Tensor, g_rvec: Tensor, *_: Tensor
    ) -> tuple[Tensor | None, ...]:
        ctx.saved_tensors  # noqa: B018 - raises if an input was modified in place
        grads = _kernels().backward_batch(*ctx.arrays, ctx.huber, _as_array(g_R),
                                          _as_array(g_t), _as_array(g_rvec))
        out = [torch.from_numpy(g) if need else None
               for g, need in zip(grads, ctx.needs_input_grad[:4])]
        return (*out, None, None, None, None, None)


def _batched_f64(x: Tensor, dims: int) -> Tensor:
    """Add the batch dimension (a tensor of ``dims`` dimensions per sample), cast to float64."""
    x = x.unsqueeze(0) if x.dim() == dims else x
    return x if x.dtype == torch.float64 else x.to(torch.float64)


def _solve_pnp_compiled(
    x2d: Tensor, x3d: Tensor, K: Tensor, weights: Tensor | None, init: Tensor | None,
    max_iterations: int, tol: float, huber: float | None, multi_start: bool, N: int,
) -> PnPResult:
    """The compiled implementation (inputs checked; x2d CPU float64)."""
    x2d, x3d, K = _batched_f64(x2d, 2), _batched_f64(x3d, 2), _batched_f64(K, 2)
    w = (torch.ones(1, N, dtype=torch.float64) if weights is None
         else _batched_f64(weights, 1))
    init_np = (np.zeros((0, 6)) if init is None else _as_array(_batched_f64(init, 1)))
    h = -1.0 if huber is None else float(huber)
    if torch.is_grad_enabled() and (x2d.requires_grad or x3d.requires_grad or K.requires_grad
                                    or w.requires_grad):
        out = _CompiledPnP.apply(x2d, x3d, K, w, init_np, h, int(max_iterations), float(tol),
                                 bool(multi_start))
    else:
        out = map(torch.from_numpy, _kernels().solve_batch(
            _as_array(x2d), _as_array(x3d), _as_array(K), _as_array(w), init_np, h,
            int(max_iterations), float(tol), bool(multi_start), _CFG))
    return PnPResult(*out)


def __getattr__(name: str) -> Any:
    """`solve_pnp_ransac` and `PnPRansacResult` live in `ransac` (re-exported here)."""
    if name in ("solve_pnp_ransac", "PnPRansacResult"):
        from dvc_perception.geometry import ransac

        return getattr(ransac, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

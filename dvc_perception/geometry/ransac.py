# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""PnP with outliers: batched RANSAC (MSAC scoring), then Levenberg-Marquardt on the inliers.

Re-exported by `dvc_perception.geometry.pnp` (``from dvc_perception.geometry.pnp import
solve_pnp_ransac, PnPRansacResult`` keeps working). Like `solve_pnp` it has a compiled (numba,
CPU float64) and a torch implementation of the same algorithm, chosen by ``impl``; both draw the
minimal sets from the same seeded torch generator, so they test the same hypotheses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from dvc_perception.errors import ConfigError
from dvc_perception.geometry.pnp import (
    _CFG,
    HYPOTHESIS_ITERATIONS,
    MIN_POINTS,
    PnPResult,
    RobustKernel,
    _as_array,
    _batched_f64,
    _check_config,
    _check_inputs,
    _default_tol,
    _huber_delta,
    _kernels,
    _prepare,
    _solve_pnp,
    _use_compiled,
    reprojection_residuals,
    solve_pnp,
)
from dvc_perception.geometry.projection import points_in_camera, reprojection_errors


@dataclass(frozen=True)
class PnPRansacResult(PnPResult):
    """Batched RANSAC PnP solution: PnPResult's fields plus the inlier sets.

    The PnPResult fields are those of the final refinement on the inliers (see there); ``valid``
    is also False when fewer than ``min_inliers`` inliers were found, ``cost`` is over the
    inliers, ``residuals`` are at the final pose for every point.

    Attributes:
        inliers: (B, N) bool, reprojection error below ``threshold_px`` at the final pose
            (never a point of weight 0 or with non-finite values); all False where invalid.
        n_inliers: (B,) int64 number of inliers (0 where invalid).
    """

    inliers: Tensor
    n_inliers: Tensor


def _fields(r: PnPResult) -> tuple[Tensor, ...]:
    return tuple(getattr(r, f.name) for f in fields(PnPResult))


def _reprojection_error(R: Tensor, t: Tensor, x3d: Tensor, x2d: Tensor, K: Tensor
                        ) -> tuple[Tensor, Tensor]:
    """Errors (..., N) px and depths (..., N) m for poses R (...,3,3), t (...,3).

    Errors of points at depth <= 0 are meaningless (callers mask them by the depth).
    """
    err = reprojection_errors(x2d, x3d, R, t, K, min_depth=1e-12)
    return err, points_in_camera(x3d, R, t)[..., 2]


def solve_pnp_ransac(
    x2d: Tensor,
    x3d: Tensor,
    K: Tensor,
    weights: Tensor | None = None,
    *,
    threshold_px: float = 4.0,
    num_hypotheses: int = 256,
    sample_size: int = 5,
    min_inliers: int = 4,
    seed: int = 0,
    max_iterations: int = 20,
    tol: float | None = None,
    robust: RobustKernel = None,
    backward: str = "implicit",
    impl: str = "auto",
) -> PnPRansacResult:
    """PnP with outliers: batched RANSAC (MSAC scoring), then refinement on the inliers.

    All ``B x num_hypotheses`` minimal sets are solved in one batched solve; each hypothesis is
    scored on every point with the truncated squared error (MSAC), the best one per sample
    seeds a Levenberg-Marquardt refinement on its inliers, whose inliers are then recomputed
    and refined once more. The final refinement is differentiable like ``solve_pnp`` (the
    inlier mask is held constant).

    Args:
        x2d: (B, N, 2) or (N, 2) undistorted keypoints, px.
        x3d: (B, N, 3) or (N, 3) object points, m.
        K: (B, 3, 3) or (3, 3) intrinsics, px.
        weights: (B, N) or (N,) non-negative weights; points of weight 0 are never sampled
            and never inliers.
        threshold_px: inlier threshold on the reprojection error, px.
        num_hypotheses: hypotheses per sample.
        sample_size: points per hypothesis (>= 4). 5 keeps the chance of an outlier-free set
            at 50 % outliers near 3 % per hypothesis while its closed-form start stays good.
        min_inliers: fewer inliers than this make the sample invalid.
        seed: random seed of the hypothesis sampling (a CPU torch generator, the same draw in
            both implementations; reproducible).
        max_iterations: Levenberg-Marquardt iterations of the final refinement.
        tol: convergence threshold (see ``solve_pnp``).
        robust: robust kernel of the refinement (see ``solve_pnp``).
        backward: ``"implicit"`` or ``"unrolled"`` (see ``solve_pnp``).
        impl: ``"auto"``, ``"compiled"`` or ``"torch"`` (see ``solve_pnp``).

    Returns:
        PnPRansacResult (``residuals`` at the final pose, for every point).

    Raises:
        ShapeError, InputError, ConfigError, EngineUnavailableError: as ``solve_pnp``, or bad
            RANSAC settings.
    """
    if not threshold_px > 0:
        raise ConfigError(f"threshold_px must be > 0, got {threshold_px!r}")
    if num_hypotheses < 1 or sample_size < MIN_POINTS or min_inliers < MIN_POINTS:
        raise ConfigError(f"need num_hypotheses >= 1, sample_size >= {MIN_POINTS}, min_inliers "
                          f">= {MIN_POINTS}; got {num_hypotheses}, {sample_size}, {min_inliers}")
    _check_config(max_iterations, tol, backward, impl)
    huber = _huber_delta(robust)
    B, N = _check_inputs(x2d, x3d, K, weights, None)
    args = (x2d, x3d, K, weights, float(threshold_px), int(num_hypotheses),
            min(int(sample_size), N), int(min_inliers), int(seed), max_iterations, tol, robust)
    if _use_compiled(impl, x2d, backward):
        return _ransac_compiled(*args, huber, B, N)
    return _ransac_torch(*args, backward)


def _ransac_torch(
    x2d: Tensor, x3d: Tensor, K: Tensor, weights: Tensor | None, threshold_px: float, H: int,
    m: int, min_inliers: int, seed: int, max_iterations: int, tol: float | None,
    robust: RobustKernel, backward: str,
) -> PnPRansacResult:
    """The torch implementation (any device and dtype; the reference)."""
    x2d, x3d, K, w, _ = _prepare(x2d, x3d, K, weights, None)
    B, N = x2d.shape[0], x2d.shape[1]
    dtype, device = x2d.dtype, x2d.device
    with torch.no_grad():
        usable = ((w > 0) & torch.isfinite(x2d).all(-1) & torch.isfinite(x3d).all(-1)
                  & torch.isfinite(w))
    x2d_in, x3d_in = x2d, x3d
    # Unusable points (non-finite, weight 0) never vote and get weight 0 below; zeroing them
    # keeps one NaN keypoint from invalidating its whole sample (and gives them zero gradient).
    x2d = torch.where(usable[..., None], x2d, 0.0)
    x3d = torch.where(usable[..., None], x3d, 0.0)
    w = torch.where(usable, w, 0.0)
    with torch.no_grad():
        x2d_d, x3d_d, K_d, w_d = x2d.detach(), x3d.detach(), K.detach(), w.detach()
        gen = torch.Generator().manual_seed(seed)
        keys = torch.rand(B, H, N, generator=gen, dtype=torch.float32).to(device)
        keys = torch.where(usable[:, None], keys, torch.full_like(keys, 2.0))
        idx = keys.topk(m, dim=-1, largest=False).indices  # (B,H,m)
        b_idx = torch.arange(B, device=device)[:, None, None]
        hyp = _solve_pnp(x2d_d[b_idx, idx].reshape(B * H, m, 2),
                         x3d_d[b_idx, idx].reshape(B * H, m, 3),
                         K_d[:, None].expand(B, H, 3, 3).reshape(B * H, 3, 3), None, None,
                         HYPOTHESIS_ITERATIONS, None, None, "implicit", False, "torch")
        Rh, th = hyp.R.view(B, H, 3, 3), hyp.t.view(B, H, 3)
        err, depth = _reprojection_error(Rh, th, x3d_d[:, None], x2d_d[:, None], K_d[:, None])
        ok = usable[:, None] & (depth > 0) & torch.isfinite(err)
        trunc = torch.where(ok, err.clamp(max=threshold_px) ** 2,
                            torch.full_like(err, threshold_px ** 2))
        score = (trunc * w_d[:, None]).sum(-1) + torch.where(
            hyp.valid.view(B, H), 0.0, math.inf)
        best = score.argmin(-1)
        ar = torch.arange(B, device=device)
        inliers = ok[ar, best] & (err[ar, best] < threshold_px)
        init = torch.cat([hyp.rvec.view(B, H, 3)[ar, best], th[ar, best]], dim=-1)
        # Local optimisation: refine on the inliers from the hypothesis and from a fresh
        # closed-form start (which also tries the mirrored planar pose), keep the better one,
        # recompute the inliers, refine again below.
        w_in = w_d * inliers
        ref = solve_pnp(x2d_d, x3d_d, K_d, w_in, init=init, max_iterations=max_iterations,
                        tol=tol, robust=robust, impl="torch")
        ref2 = solve_pnp(x2d_d, x3d_d, K_d, w_in, max_iterations=max_iterations, tol=tol,
                         robust=robust, impl="torch")
        second = ref2.valid & (~ref.valid | (ref2.cost < ref.cost))
        ref = PnPResult(*(torch.where(second.view(-1, *([1] * (a.dim() - 1))), b, a)
                          for a, b in zip(_fields(ref), _fields(ref2))))
        err, depth = _reprojection_error(ref.R, ref.t, x3d_d, x2d_d, K_d)
        better = usable & (depth > 0) & (err < threshold_px)
        use_ref = ref.valid & (better.sum(-1) >= inliers.sum(-1))
        inliers = torch.where(use_ref[:, None], better, inliers)
        init = torch.where(use_ref[:, None], torch.cat([ref.rvec, ref.t], -1), init)
    res = solve_pnp(x2d, x3d, K, w * inliers.to(dtype), init=init,
                    max_iterations=max_iterations, tol=tol, robust=robust, backward=backward,
                    impl="torch")
    with torch.no_grad():
        err, depth = _reprojection_error(res.R.detach(), res.t.detach(), x3d_d, x2d_d, K_d)
        final = usable & (depth > 0) & (err < threshold_px) & res.valid[:, None]
        n_inliers = final.sum(-1)
        valid = res.valid & (n_inliers >= min_inliers)
    zero = torch.zeros((), dtype=dtype, device=device)
    eye = torch.eye(3, dtype=dtype, device=device)
    R = torch.where(valid[:, None, None], res.R, eye)
    t = torch.where(valid[:, None], res.t, zero)
    return PnPRansacResult(
        R=R,
        t=t,
        rvec=torch.where(valid[:, None], res.rvec, zero),
        cost=torch.where(valid, res.cost, zero),
        converged=res.converged & valid,
        valid=valid,
        covariance=torch.where(valid[:, None, None], res.covariance, zero),
        residuals=reprojection_residuals(R.detach(), t.detach(), x2d_in.detach(),
                                         x3d_in.detach(), K_d, valid),
        inliers=final & valid[:, None],
        n_inliers=torch.where(valid, n_inliers, torch.zeros_like(n_inliers)),
    )


def _ransac_compiled(
    x2d: Tensor, x3d: Tensor, K: Tensor, weights: Tensor | None, threshold_px: float, H: int,
    m: int, min_inliers: int, seed: int, max_iterations: int, tol: float | None,
    robust: RobustKernel, huber: float | None, B: int, N: int,
) -> PnPRansacResult:
    """The compiled implementation (inputs checked; x2d CPU float64)."""
    kern = _kernels()
    x2d, x3d, K = _batched_f64(x2d, 2), _batched_f64(x3d, 2), _batched_f64(K, 2)
    w = (torch.ones(1, N, dtype=torch.float64) if weights is None
         else _batched_f64(weights, 1))
    x2d_np, x3d_np, K_np, w_np = _as_array(x2d), _as_array(x3d), _as_array(K), _as_array(w)
    tol_ = _default_tol(torch.float64) if tol is None else float(tol)
    h = -1.0 if huber is None else float(huber)
    usable, xz, Xz, wz = kern.ransac_prepare(x2d_np, x3d_np, w_np)
    usable_t = torch.from_numpy(usable)
    # the torch path's draw, exactly
    gen = torch.Generator().manual_seed(seed)
    keys = torch.rand(B, H, N, generator=gen, dtype=torch.float32)
    keys = torch.where(usable_t[:, None], keys, torch.full_like(keys, 2.0))
    idx = keys.topk(m, dim=-1, largest=False).indices
    inliers, init = kern.ransac_select(xz, Xz, K_np, wz, usable, _as_array(idx), threshold_px, h,
                                       max_iterations, tol_, HYPOTHESIS_ITERATIONS,
                                       _default_tol(torch.float64), _CFG)
    inliers_t = torch.from_numpy(inliers)
    if torch.is_grad_enabled() and (x2d.requires_grad or x3d.requires_grad or K.requires_grad
                                    or w.requires_grad):
        res = solve_pnp(torch.where(usable_t[..., None], x2d, 0.0),
                        torch.where(usable_t[..., None], x3d, 0.0), K,
                        torch.where(usable_t, w, 0.0) * inliers_t, init=torch.from_numpy(init),
                        max_iterations=max_iterations, tol=tol_, robust=robust,
                        impl="compiled")
    else:
        res = PnPResult(*map(torch.from_numpy, kern.solve_batch(
            xz, Xz, K_np, wz * inliers, init, h, max_iterations, tol_, True, _CFG)))
    final = usable_t & (res.residuals < threshold_px) & res.valid[:, None]
    n_inliers = final.sum(-1)
    valid = res.valid & (n_inliers >= min_inliers)
    if bool(valid.all()):
        R, t, rvec, cov = res.R, res.t, res.rvec, res.covariance
        cost, converged = res.cost, res.converged
        residuals = res.residuals if bool(usable.all()) else None
    else:
        zero = torch.zeros((), dtype=torch.float64)
        R = torch.where(valid[:, None, None], res.R, torch.eye(3, dtype=torch.float64))
        t = torch.where(valid[:, None], res.t, zero)
        rvec = torch.where(valid[:, None], res.rvec, zero)
        cov = torch.where(valid[:, None, None], res.covariance, zero)
        cost, converged = torch.where(valid, res.cost, zero), res.converged & valid
        residuals = None
    if residuals is None:  # at the final pose, against the given (not the zeroed) points
        residuals = torch.from_numpy(kern.residuals_batch(
            _as_array(R), _as_array(t), x2d_np, x3d_np, K_np, valid.numpy()))
    return PnPRansacResult(
        R=R, t=t, rvec=rvec, cost=cost, converged=converged, valid=valid, covariance=cov,
        residuals=residuals, inliers=final & valid[:, None],
        n_inliers=torch.where(valid, n_inliers, torch.zeros_like(n_inliers)),
    )


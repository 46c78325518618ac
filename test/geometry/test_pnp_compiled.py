# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The compiled (numba) implementation of solve_pnp / solve_pnp_ransac against the torch one."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from dvc_perception.errors import ConfigError, InputError, ShapeError
from dvc_perception.geometry import pnp
from dvc_perception.geometry.pnp import (
    HuberLoss,
    PnPRansacResult,
    PnPResult,
    solve_pnp,
    solve_pnp_ransac,
)
from dvc_perception.geometry.so3 import matrix_to_rotvec
from dvc_perception.geometry.synthetic import synthetic_pnp_problem

F64 = torch.float64
IMPLS = ["compiled", "torch"]

pytestmark = pytest.mark.skipif(not pnp.compiled_available(), reason="numba is not installed")


def _problem(B, N, planar, seed, outlier_ratio=0.0, weighted=True):
    s = synthetic_pnp_problem(B, N, 1.0, planar=planar, seed=seed, outlier_ratio=outlier_ratio)
    w = s.weights.clone()
    if weighted:
        w = w + torch.rand(w.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return s, w


def _shared_object(s):
    """Keypoints (B,N,2) of the first sample's object points seen at every sample's pose (1 px
    noise, the sample's outliers kept): a batch with shared x3d (N,3) and K (3,3)."""
    gen = torch.Generator().manual_seed(0)
    cam = s.points_obj[0] @ s.R_gt.transpose(-1, -2) + s.t_gt[:, None]
    uvw = cam @ s.K[0].T
    x2d = uvw[..., :2] / uvw[..., 2:] + torch.randn(cam.shape[:2] + (2,), generator=gen,
                                                    dtype=F64)
    return torch.where(s.outliers[..., None], s.keypoints_px, x2d)


def _assert_same_pose(a, b, mask, tol=1e-9):
    """Same valid flags; poses within tol m / tol rad where ``mask``."""
    assert torch.equal(a.valid, b.valid)
    d_rot = matrix_to_rotvec(a.R @ b.R.transpose(-1, -2)).norm(dim=-1)
    d_t = (a.t - b.t).norm(dim=-1)
    assert float(d_rot[mask].max()) <= tol, f"rotation differs by {float(d_rot.max()):.2e} rad"
    assert float(d_t[mask].max()) <= tol, f"translation differs by {float(d_t.max()):.2e} m"


# ---------------------------------------------------------------- forward parity


@pytest.mark.parametrize("robust", [None, HuberLoss(1.0)])
@pytest.mark.parametrize("planar", [False, True])
@pytest.mark.parametrize("n_points", [8, 50])
def test_forward_matches_torch(n_points, planar, robust):
    # benchmark-style problems: 1 px noise (the Huber kernel is active on ~60 % of the points)
    s, w = _problem(24, n_points, planar, seed=40 + n_points + 2 * planar)
    args = (s.keypoints_px, s.points_obj, s.K, w)
    kw = dict(tol=1e-12, max_iterations=100, robust=robust)
    a = solve_pnp(*args, impl="torch", **kw)
    b = solve_pnp(*args, impl="compiled", **kw)
    assert bool(a.valid.all()) and bool(a.converged.all()) and bool(b.converged.all())
    _assert_same_pose(a, b, a.valid)
    torch.testing.assert_close(b.rvec, a.rvec, atol=1e-9, rtol=0)
    torch.testing.assert_close(b.cost, a.cost, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(b.covariance, a.covariance, rtol=1e-6,
                               atol=1e-9 * float(a.covariance.abs().max()))
    torch.testing.assert_close(b.residuals, a.residuals, atol=1e-8, rtol=0)
    for r in (a, b):
        assert r.R.dtype == F64 and r.residuals.shape == (24, n_points)


@pytest.mark.parametrize("robust", [None, ("huber", 2.0)])
def test_forward_matches_torch_with_init_shared_inputs_and_default_tol(robust):
    s, w = _problem(6, 20, False, seed=3, outlier_ratio=0.2 if robust else 0.0)
    # unbatched object points and intrinsics, starting pose given, default settings
    x2d = _shared_object(s)
    for init in (s.pose_init, None) if robust is None else (s.pose_init,):
        a = solve_pnp(x2d, s.points_obj[0], s.K[0], w[0], init=init, robust=robust,
                      impl="torch")
        b = solve_pnp(x2d, s.points_obj[0], s.K[0], w[0], init=init, robust=robust,
                      impl="compiled")
        assert bool(a.valid.all()) and bool(a.converged.all())
        # default tol 1e-9: both stop within ~1e-9 of the optimum
        _assert_same_pose(a, b, a.valid, tol=1e-8)
        assert torch.equal(a.converged, b.converged)


def test_unbatched_and_float32_dispatch():
    s, _ = _problem(1, 12, False, seed=5)
    r = solve_pnp(s.keypoints_px[0], s.points_obj[0], s.K[0], impl="compiled")
    assert r.R.shape == (1, 3, 3) and r.residuals.shape == (1, 12)
    # float32 is the torch path's (auto) and refused by impl="compiled"
    x32 = s.keypoints_px.float()
    r32 = solve_pnp(x32, s.points_obj.float(), s.K.float())
    assert r32.R.dtype == torch.float32 and r32.residuals.dtype == torch.float32
    with pytest.raises(ConfigError, match="float64"):
        solve_pnp(x32, s.points_obj, s.K, impl="compiled")
    with pytest.raises(ConfigError, match="unrolled"):
        solve_pnp(s.keypoints_px.requires_grad_(), s.points_obj, s.K, impl="compiled",
                  backward="unrolled")
    with pytest.raises(ConfigError, match="impl"):
        solve_pnp(s.keypoints_px, s.points_obj, s.K, impl="fast")


# ---------------------------------------------------------------- RANSAC parity


@pytest.mark.parametrize("planar", [False, True])
@pytest.mark.parametrize("n_points,hypotheses", [(17, 64), (40, 128)])
def test_ransac_matches_torch(n_points, hypotheses, planar):
    s, w = _problem(3, n_points, planar, seed=60 + n_points, outlier_ratio=0.3)
    kw = dict(num_hypotheses=hypotheses, threshold_px=4.0, seed=7, tol=1e-12,
              max_iterations=100)
    a = solve_pnp_ransac(s.keypoints_px, s.points_obj, s.K, w, impl="torch", **kw)
    b = solve_pnp_ransac(s.keypoints_px, s.points_obj, s.K, w, impl="compiled", **kw)
    assert isinstance(b, PnPRansacResult) and isinstance(b, PnPResult)
    assert bool(a.valid.all())
    assert torch.equal(a.inliers, b.inliers) and torch.equal(a.n_inliers, b.n_inliers)
    _assert_same_pose(a, b, a.valid)
    torch.testing.assert_close(b.residuals, a.residuals, atol=1e-8, rtol=0)
    torch.testing.assert_close(b.cost, a.cost, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_ransac_bad_points_and_residuals(impl):
    s, w = _problem(3, 20, False, seed=8, outlier_ratio=0.2)
    x2d, x3d = s.keypoints_px.clone(), s.points_obj.clone()
    x2d[0, 1] = float("nan")
    w[0, 2] = 0.0
    x3d[1] = 0.0  # every object point at one spot: no pose
    r = solve_pnp_ransac(x2d, x3d, s.K, w, num_hypotheses=32, impl=impl)
    assert r.valid.tolist() == [True, False, True]
    assert not bool(r.inliers[0, 1]) and not bool(r.inliers[0, 2])
    assert bool(torch.isinf(r.residuals[1]).all()) and bool(torch.isinf(r.residuals[0, 1]))
    assert bool(torch.isfinite(r.residuals[0, 2]))  # weight 0 but a finite point
    assert not bool(torch.isnan(r.residuals).any())


# ---------------------------------------------------------------- gradients


def _pose_vec(r):
    return torch.cat([r.rvec, r.t, r.R.flatten(1)], dim=-1)


@pytest.mark.parametrize("robust", [None, ("huber", 1.5)])
@pytest.mark.parametrize("planar", [False, True])
def test_gradients_match_torch_and_central_differences(planar, robust):
    """Both implicit backwards against each other and against central differences of
    independent solves, at a non-zero residual, for every input (K and x3d shared)."""
    s, w = _problem(3, 10, planar, seed=70 + planar, outlier_ratio=0.2 if robust else 0.0)
    args = [_shared_object(s), s.points_obj[0].clone(), s.K[0].clone(), w]
    kw = dict(init=s.pose_init, tol=1e-13, max_iterations=100, robust=robust)
    with torch.no_grad():
        assert float(solve_pnp(*args, **kw).cost.min()) > 0.5  # really a non-zero residual
    v = torch.randn(3, 15, generator=torch.Generator().manual_seed(1), dtype=F64)
    grads = {}
    for impl in IMPLS:
        x = [a.clone().requires_grad_() for a in args]
        out = (_pose_vec(solve_pnp(*x, impl=impl, **kw)) * v).sum()
        grads[impl] = torch.autograd.grad(out, x)
    for gc, gt in zip(grads["compiled"], grads["torch"]):
        torch.testing.assert_close(gc, gt, rtol=1e-7, atol=1e-10 * float(gt.abs().max()))
    gen = torch.Generator().manual_seed(2)
    for i in range(4):
        d = torch.randn(args[i].shape, generator=gen, dtype=F64)
        if i == 2:  # K: the free intrinsics only
            d = d * torch.tensor([[1.0, 1, 1], [0, 1, 1], [0, 0, 0]], dtype=F64)
        # small steps: the Huber weight is only C0 at the kink, central differences are O(h)
        # for a point near it
        h = 1e-6 * float(args[i].abs().mean())
        xp = [a.clone() for a in args]
        xm = [a.clone() for a in args]
        xp[i], xm[i] = xp[i] + h * d, xm[i] - h * d
        with torch.no_grad():  # independent solves (torch path) of the perturbed problems
            fd = ((_pose_vec(solve_pnp(*xp, impl="torch", **kw))
                   - _pose_vec(solve_pnp(*xm, impl="torch", **kw))) * v).sum() / (2 * h)
        for impl in IMPLS:
            an = (grads[impl][i] * d).sum()
            rel = abs(float(an - fd)) / abs(float(fd))
            assert rel <= 1e-6, f"{impl}, input {i}: relative error {rel:.2e}"


def test_gradcheck_compiled_with_huber_and_weights():
    s, w = _problem(2, 7, False, seed=9, outlier_ratio=0.3)

    def pose_of(x2d, x3d, K, weights):
        r = solve_pnp(x2d, x3d, K, weights, init=s.pose_init, tol=1e-13, max_iterations=100,
                      robust=HuberLoss(2.0), impl="compiled")
        return torch.cat([r.rvec, r.t], dim=-1)

    inputs = [a.clone().requires_grad_() for a in (s.keypoints_px, s.points_obj, s.K, w)]
    assert torch.autograd.gradcheck(pose_of, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_ransac_gradients_match_torch():
    s, w = _problem(2, 30, False, seed=32, outlier_ratio=0.3)
    grads = {}
    for impl in IMPLS:
        x = [a.clone().requires_grad_() for a in (s.keypoints_px, s.points_obj, w)]
        r = solve_pnp_ransac(x[0], x[1], s.K, x[2], tol=1e-12, max_iterations=50, impl=impl)
        grads[impl] = torch.autograd.grad(r.t.sum() + r.rvec.sum(), x)
    for gc, gt in zip(grads["compiled"], grads["torch"]):
        torch.testing.assert_close(gc, gt, rtol=1e-6, atol=1e-9 * float(gt.abs().max()))


# ---------------------------------------------------------------- input contract, degenerate input


@pytest.mark.parametrize("impl", IMPLS)
def test_input_errors(impl):
    s, _ = _problem(2, 6, False, seed=1, weighted=False)
    x2d, x3d, K = s.keypoints_px, s.points_obj, s.K
    for fn in (solve_pnp, solve_pnp_ransac):
        with pytest.raises(ShapeError, match="at least 4 points"):
            fn(x2d[:, :3], x3d[:, :3], K, impl=impl)
        with pytest.raises(ShapeError, match="x2d"):
            fn(x2d[..., :1], x3d, K, impl=impl)
        with pytest.raises(ShapeError, match="x3d"):
            fn(x2d, x3d[:, :5], K, impl=impl)
        with pytest.raises(ShapeError, match="K"):
            fn(x2d, x3d, K[:, :2], impl=impl)
        with pytest.raises(ShapeError, match="x3d"):
            fn(x2d, x3d[:1].expand(3, 6, 3), K, impl=impl)  # batch 3 for B = 2
        with pytest.raises(ShapeError, match="weights"):
            fn(x2d, x3d, K, torch.ones(2, 5, dtype=F64), impl=impl)
        with pytest.raises(InputError, match="x2d"):
            fn(x2d.long(), x3d, K, impl=impl)
        with pytest.raises(InputError, match="Tensor"):
            fn(x2d.numpy(), x3d, K, impl=impl)
        with pytest.raises(InputError, match="meta"):
            fn(x2d, x3d.to("meta"), K, impl=impl)
    with pytest.raises(ShapeError, match="init"):
        solve_pnp(x2d, x3d, K, init=torch.zeros(2, 5, dtype=F64), impl=impl)


def _bad_batch():
    s, w = _problem(8, 9, False, seed=12)
    x2d, x3d, K = s.keypoints_px.clone(), s.points_obj.clone(), s.K.clone()
    w = w.clone()
    x2d[1, 3, 0] = float("nan")
    x3d[2] = torch.linspace(-0.1, 0.1, 9, dtype=F64)[:, None] * torch.tensor([1.0, 2.0, 0.5],
                                                                           dtype=F64)  # line
    w[3, 4:] = 0.0  # 4 points of positive weight ...
    w[3, :2] = 0.0  # ... now 2
    x3d[4] = 0.3  # every object point at one spot
    K[5, 0, 0] = float("inf")
    w[6, 0] = -1.0  # negative weight
    x2d[7] = 100.0  # every keypoint on one pixel: a solution may or may not exist
    return x2d, x3d, K, w


@pytest.mark.parametrize("robust", [None, ("huber", 3.0)])
def test_degenerate_input_is_invalid_never_raises(robust):
    x2d, x3d, K, w = _bad_batch()
    res = {}
    for impl in IMPLS:
        x = x2d.clone().requires_grad_()
        r = solve_pnp(x, x3d, K, w, robust=robust, impl=impl)
        assert r.valid[:7].tolist() == [True] + [False] * 6, (impl, r.valid.tolist())
        for f in (r.R, r.t, r.rvec, r.cost, r.covariance):
            assert bool(torch.isfinite(f).all())
        assert not bool(torch.isnan(r.residuals).any())
        assert bool(torch.isinf(r.residuals[~r.valid]).all())
        assert not bool(r.converged[~r.valid].any())
        assert float(r.cost[~r.valid].abs().max()) == 0.0
        eye = torch.eye(3, dtype=F64).expand(int((~r.valid).sum()), 3, 3)
        torch.testing.assert_close(r.R[~r.valid].detach(), eye)
        (g,) = torch.autograd.grad(r.t.sum() + r.R.sum() + r.rvec.sum(), x)
        assert bool(torch.isfinite(g).all()) and float(g[~r.valid].abs().max()) == 0.0
        res[impl] = r
    assert torch.equal(res["compiled"].valid, res["torch"].valid)
    if bool(res["torch"].valid[7]):  # a valid pose for the collapsed keypoints is a real pose
        assert float(res["torch"].residuals[7].max()) < 1e-3


@pytest.mark.parametrize("impl", IMPLS)
def test_points_behind_camera_are_invalid(impl):
    s, _ = _problem(2, 10, False, seed=13, weighted=False)
    cam = s.points_obj @ s.R_gt.transpose(-1, -2) - s.t_gt[:, None]
    uvw = cam @ s.K.transpose(-1, -2)
    x2d = uvw[..., :2] / uvw[..., 2:]
    init = torch.cat([matrix_to_rotvec(s.R_gt), -s.t_gt], dim=-1)
    r = solve_pnp(x2d, s.points_obj, s.K, init=init, impl=impl)
    assert not bool(r.valid.any()) and bool(torch.isinf(r.residuals).all())


@pytest.mark.parametrize("impl", IMPLS)
def test_residuals_equal_numpy_reprojection(impl):
    s, w = _problem(4, 15, False, seed=14, outlier_ratio=0.2)
    w[:, 0] = 0.0  # a dropped point still gets its residual
    r = solve_pnp(s.keypoints_px, s.points_obj, s.K, w, robust=HuberLoss(3.0), impl=impl)
    assert bool(r.valid.all())
    R, t = r.R.numpy(), r.t.numpy()
    P = np.einsum("bij,bnj->bni", R, s.points_obj.numpy()) + t[:, None]
    uvw = np.einsum("bij,bnj->bni", s.K.numpy(), P)
    err = np.linalg.norm(uvw[..., :2] / uvw[..., 2:] - s.keypoints_px.numpy(), axis=-1)
    np.testing.assert_allclose(r.residuals.numpy(), err, rtol=1e-12, atol=1e-10)
    # ... and the cost is the robust sum of the weighted residuals
    s2 = err ** 2
    rho = np.where(err > 3.0, 6.0 * err - 9.0, s2)
    np.testing.assert_allclose(r.cost.numpy(), 0.5 * (w.numpy() * rho).sum(-1), rtol=1e-10)


def test_point_behind_camera_with_zero_weight_has_inf_residual():
    s, w = _problem(1, 10, False, seed=15, weighted=False)
    x3d = s.points_obj.clone()
    x3d[0, 0] = -(s.R_gt[0].T @ s.t_gt[0]) * 3.0  # far behind the camera
    w[0, 0] = 0.0
    for impl in IMPLS:
        r = solve_pnp(s.keypoints_px, x3d, s.K, w, impl=impl)
        assert bool(r.valid[0]) and float(r.residuals[0, 0]) == float("inf")
        assert bool(torch.isfinite(r.residuals[0, 1:]).all())


# ---------------------------------------------------------------- compilation cost, caching


def _run(code: str) -> str:
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env=env, timeout=900, check=True)
    return out.stdout


@pytest.mark.slow
def test_import_does_not_compile_and_warm_up_covers_every_call():
    """Importing pnp loads no numba; after warm_up() no call compiles (fresh process)."""
    out = _run("""
        import sys, time
        import torch
        import dvc_perception.geometry.pnp as pnp
        assert "numba" not in sys.modules
        pnp.warm_up()
        from dvc_perception.geometry.synthetic import synthetic_pnp_problem
        s = synthetic_pnp_problem(3, 9, 1.0, seed=1)
        x = s.keypoints_px.clone().requires_grad_()
        calls = [
            lambda: pnp.solve_pnp(s.keypoints_px, s.points_obj, s.K),
            lambda: pnp.solve_pnp(s.keypoints_px[0], s.points_obj[0], s.K[0], init=s.pose_init[0],
                                  robust=("huber", 2.0), max_iterations=7, tol=1e-11),
            lambda: pnp.solve_pnp(x, s.points_obj, s.K, s.weights).t.sum().backward(),
            lambda: pnp.solve_pnp_ransac(s.keypoints_px, s.points_obj[0], s.K, threshold_px=3),
            lambda: pnp.solve_pnp_ransac(x, s.points_obj, s.K).t.sum().backward(),
            lambda: pnp.solve_pnp(s.keypoints_px.transpose(1, 2).contiguous().transpose(1, 2),
                                  s.points_obj, s.K),
        ]
        worst = 0.0
        for fn in calls:
            t0 = time.perf_counter(); fn(); worst = max(worst, time.perf_counter() - t0)
        print(worst)
    """)
    assert float(out.strip().splitlines()[-1]) < 0.5  # a compilation takes seconds


def test_warm_up_works_in_any_grad_mode():
    with torch.inference_mode():
        assert pnp.warm_up() >= 0.0
    with torch.no_grad():
        assert pnp.warm_up() >= 0.0


def test_jit_without_a_cache_location_still_compiles(monkeypatch):
    import numba
    from numba.core import caching

    from dvc_perception.geometry.numba_jit import jit

    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # numba >= 0.60 / older
    monkeypatch.setattr(impl, "_locator_classes", [])

    def twice(x):
        return 2 * x

    with pytest.raises(RuntimeError):  # what numba does without a writable location
        numba.njit(cache=True)(twice)
    assert jit(twice)(3) == 6
    assert jit(parallel=False)(twice)(4) == 8  # the decorator-with-options form

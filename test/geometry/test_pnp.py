# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
import cv2
import numpy as np
import pytest
import torch

from dvc_perception.errors import ConfigError, ShapeError
from dvc_perception.geometry import pnp
from dvc_perception.geometry.pnp import HuberLoss, solve_pnp
from dvc_perception.geometry.so3 import matrix_to_rotvec, rotvec_to_matrix
from dvc_perception.geometry.synthetic import synthetic_pnp_problem

F64 = torch.float64
# "compiled" only where numba is installed (else solve_pnp(impl="compiled") raises)
IMPLS = ["compiled", "torch"] if pnp.compiled_available() else ["torch"]


def _rot_err_deg(Ra: torch.Tensor, Rb: torch.Tensor) -> torch.Tensor:
    c = ((Ra.transpose(-1, -2) @ Rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(c.clamp(-1, 1)))


def _pose_vec(r) -> torch.Tensor:
    return torch.cat([r.rvec, r.t], dim=-1)


def _args(s, weight_jitter=True):
    gen = torch.Generator().manual_seed(11)
    w = s.weights.clone()
    if weight_jitter:  # non-uniform weights so that d/dweights is non-trivial
        w = w + 0.5 * torch.rand(w.shape, generator=gen, dtype=w.dtype)
    return [s.keypoints_px.clone(), s.points_obj.clone(), s.K.clone(), w]


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n_points,planar", [(4, True), (6, False)])
def test_gradcheck_all_inputs(n_points, planar, impl):
    # noise_px > 0 on purpose: at zero residual J^T J equals the Hessian and hides a wrong backward
    s = synthetic_pnp_problem(1, n_points, 1.0, planar=planar, seed=3)

    def pose_of(x2d, x3d, K, w):
        r = solve_pnp(x2d, x3d, K, w, init=s.pose_init, tol=1e-13, max_iterations=100,
                      impl=impl)
        return _pose_vec(r)

    inputs = [a.requires_grad_() for a in _args(s)]
    assert torch.autograd.gradcheck(pose_of, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("planar", [False, True])
@pytest.mark.parametrize("n_points", [4, 8, 50])
def test_gradient_matches_central_differences(n_points, planar, impl):
    s = synthetic_pnp_problem(1 if n_points > 8 else 2, n_points, 1.0, planar=planar, seed=7)
    args = _args(s)
    gen = torch.Generator().manual_seed(5)

    def pose_of(*a):
        return _pose_vec(solve_pnp(*a, init=s.pose_init, tol=1e-13, max_iterations=100,
                                   impl=impl))

    for i in range(4):
        x = [a.clone() for a in args]
        x[i].requires_grad_()
        out = pose_of(*x)
        jac_dirs = []
        for _ in range(1 if n_points > 8 else 2):
            d = torch.randn(args[i].shape, generator=gen, dtype=F64)
            if i == 2:  # K: perturb the free intrinsics only
                d = d * torch.tensor([[1.0, 1, 1], [0, 1, 1], [0, 0, 0]], dtype=F64)
            h = 1e-5 * float(args[i].abs().mean())
            xp = [a.clone() for a in args]
            xm = [a.clone() for a in args]
            xp[i], xm[i] = xp[i] + h * d, xm[i] - h * d
            with torch.no_grad():
                fd = (pose_of(*xp) - pose_of(*xm)) / (2 * h)  # (B,6)
            # directional derivative of every output along d, by one backward per output
            an = torch.stack([
                (torch.autograd.grad(out[:, k].sum(), x[i], retain_graph=True)[0] * d)
                .flatten(1).sum(-1) for k in range(6)], dim=-1)
            jac_dirs.append((an, fd))
        for an, fd in jac_dirs:
            rel = (an - fd).norm() / fd.norm()
            assert rel <= 1e-6, f"input {i}: relative error {rel:.2e}"


@pytest.mark.parametrize("impl", IMPLS)
def test_implicit_unrolled_and_fd_agree_at_nonzero_residual(impl):
    s = synthetic_pnp_problem(3, 10, 2.0, seed=21)
    args = _args(s)

    def pose_of(*a, backward="implicit"):
        r = solve_pnp(*a, init=s.pose_init, tol=1e-13, max_iterations=100, backward=backward,
                      impl=impl if backward == "implicit" else "torch")
        return torch.cat([_pose_vec(r), r.R.flatten(1)], dim=-1)  # R too: (B, 15)

    with torch.no_grad():
        assert float(solve_pnp(*args).cost.min()) > 1.0  # really a non-zero residual
    v = torch.randn(3, 15, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = [a.clone().requires_grad_() for a in args]
    g_imp = torch.autograd.grad((pose_of(*x) * v).sum(), x)
    g_unr = torch.autograd.grad((pose_of(*x, backward="unrolled") * v).sum(), x)
    for a, b in zip(g_imp, g_unr):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9 * float(b.abs().max()))
    # ... and both against central differences along x2d
    d = torch.randn(args[0].shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    h = 1e-3
    with torch.no_grad():
        fd = ((pose_of(args[0] + h * d, *args[1:]) - pose_of(args[0] - h * d, *args[1:])) * v
              ).sum() / (2 * h)
    an = (g_imp[0] * d).sum()
    assert abs(float(an - fd)) <= 1e-6 * abs(float(fd))


@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_with_huber_kernel_matches_unrolled(impl):
    s = synthetic_pnp_problem(2, 12, 1.0, seed=4, outlier_ratio=0.2)
    args = _args(s)
    v = torch.randn(2, 6, generator=torch.Generator().manual_seed(2), dtype=F64)
    grads = {}
    for mode in ("implicit", "unrolled"):
        x = [a.clone().requires_grad_() for a in args]
        r = solve_pnp(*x, init=s.pose_init, tol=1e-13, max_iterations=200, robust=("huber", 2.0),
                      backward=mode, impl=impl if mode == "implicit" else "torch")
        grads[mode] = torch.autograd.grad((_pose_vec(r) * v).sum(), x)
    for a, b in zip(grads["implicit"], grads["unrolled"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8 * float(b.abs().max()))


# ---------------------------------------------------------------- accuracy


def _opencv_sqpnp_iterative(s):
    Rs, ts = [], []
    for b in range(s.points_obj.shape[0]):
        obj, img = s.points_obj[b].numpy(), s.keypoints_px[b].numpy()
        K = s.K[b].numpy()
        _, rv, tv = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_SQPNP)
        _, rv, tv = cv2.solvePnP(obj, img, K, None, rv, tv, useExtrinsicGuess=True,
                                 flags=cv2.SOLVEPNP_ITERATIVE)
        Rs.append(cv2.Rodrigues(rv)[0])
        ts.append(tv[:, 0])
    return torch.tensor(np.array(Rs)), torch.tensor(np.array(ts))


@pytest.mark.slow
@pytest.mark.parametrize("planar", [False, True])
def test_accuracy_not_worse_than_opencv(planar):
    for n_points, noise in ((6, 0.0), (6, 1.0), (6, 2.0), (20, 0.5), (100, 2.0), (500, 1.0)):
        s = synthetic_pnp_problem(150, n_points, noise, planar=planar,
                                  seed=100 + n_points + int(4 * noise))
        r = solve_pnp(s.keypoints_px, s.points_obj, s.K)
        assert bool(r.valid.all())
        eye = torch.eye(3, dtype=F64).expand_as(r.R)
        torch.testing.assert_close(r.R @ r.R.transpose(-1, -2), eye, atol=1e-12, rtol=0)
        R_cv, t_cv = _opencv_sqpnp_iterative(s)
        ours = (_rot_err_deg(r.R, s.R_gt).median(), (r.t - s.t_gt).norm(dim=-1).median())
        ref = (_rot_err_deg(R_cv, s.R_gt).median(), (t_cv - s.t_gt).norm(dim=-1).median())
        for a, b, what in zip(ours, ref, ("rotation", "translation")):
            floor = 1e-5 if what == "rotation" else 1e-8  # noise-free: both ~ 0
            assert float(a) <= 1.05 * float(b) + floor, (
                f"N={n_points} noise={noise} planar={planar}: median {what} error "
                f"{float(a):.3g} vs OpenCV {float(b):.3g}")


@pytest.mark.parametrize("impl", IMPLS)
def test_exact_data_recovers_ground_truth(impl):
    s = synthetic_pnp_problem(16, 8, 0.0, seed=2)
    r = solve_pnp(s.keypoints_px, s.points_obj, s.K, impl=impl)
    assert bool(r.valid.all()) and bool(r.converged.all())
    torch.testing.assert_close(r.R, s.R_gt, atol=1e-9, rtol=0)
    torch.testing.assert_close(r.t, s.t_gt, atol=1e-9, rtol=0)
    torch.testing.assert_close(rotvec_to_matrix(r.rvec), r.R, atol=1e-12, rtol=0)


def test_huber_resists_outliers():
    s = synthetic_pnp_problem(32, 40, 0.5, seed=8, outlier_ratio=0.15)
    ls = solve_pnp(s.keypoints_px, s.points_obj, s.K, init=s.pose_init)
    hub = solve_pnp(s.keypoints_px, s.points_obj, s.K, init=s.pose_init, robust=HuberLoss(2.0))
    e_ls = _rot_err_deg(ls.R, s.R_gt).median()
    e_hub = _rot_err_deg(hub.R, s.R_gt).median()
    assert float(e_hub) < 0.5 * float(e_ls)


# ---------------------------------------------------------------- covariance


def test_covariance_matches_monte_carlo():
    s = synthetic_pnp_problem(1, 20, 0.0, seed=9)
    draws = 500
    gen = torch.Generator().manual_seed(123)
    x2d = s.keypoints_px.expand(draws, -1, -1) + torch.randn(draws, 20, 2, generator=gen,
                                                             dtype=F64)
    r = solve_pnp(x2d, s.points_obj[0], s.K[0])
    assert bool(r.valid.all())
    # errors in the reported parametrisation: t - t_gt, log(R R_gt^T) (left perturbation)
    d_rot = matrix_to_rotvec(r.R @ s.R_gt[0].T)
    err = torch.cat([r.t - s.t_gt, d_rot], dim=-1)
    err = err - err.mean(0)
    sample = err.T @ err / (draws - 1)
    reported = r.covariance.mean(0)
    rel = (sample - reported).norm() / reported.norm()
    assert rel < 0.25, f"relative Frobenius difference {rel:.3f}"
    # and per block, so that the small rotation block cannot hide behind the translation one
    for sl in (slice(0, 3), slice(3, 6)):
        blk = (sample[sl, sl] - reported[sl, sl]).norm() / reported[sl, sl].norm()
        assert blk < 0.25, f"block {sl}: {blk:.3f}"


# ---------------------------------------------------------------- bad inputs, semantics


def test_fewer_than_four_points_raise():
    s = synthetic_pnp_problem(1, 3, 0.0)
    with pytest.raises(ShapeError, match="at least 4 points"):
        solve_pnp(s.keypoints_px, s.points_obj, s.K)


def test_shape_and_config_errors():
    s = synthetic_pnp_problem(2, 6, 0.0)
    with pytest.raises(ShapeError, match="x3d"):
        solve_pnp(s.keypoints_px, s.points_obj[:, :5], s.K)
    with pytest.raises(ShapeError, match="K"):
        solve_pnp(s.keypoints_px, s.points_obj, s.K[:, :2])
    with pytest.raises(ConfigError, match="backward"):
        solve_pnp(s.keypoints_px, s.points_obj, s.K, backward="magic")
    with pytest.raises(ConfigError, match="delta_px"):
        solve_pnp(s.keypoints_px, s.points_obj, s.K, robust=("huber", -1.0))


@pytest.mark.parametrize("impl", IMPLS)
def test_degenerate_samples_are_invalid_and_do_not_spoil_the_batch(impl):
    s = synthetic_pnp_problem(5, 8, 0.5, seed=12)
    x2d, x3d = s.keypoints_px.clone(), s.points_obj.clone()
    x2d[1, 3, 0] = float("nan")  # NaN keypoint
    x3d[2] = torch.linspace(-0.1, 0.1, 8, dtype=F64)[:, None] * torch.tensor([1.0, 2.0, 0.5],
                                                                           dtype=F64)  # line
    w = s.weights.clone()
    w[3, 3:] = 0.0  # only 3 points of positive weight
    x2d.requires_grad_()
    r = solve_pnp(x2d, x3d, s.K, w, impl=impl)
    assert r.valid.tolist() == [True, False, False, False, True]
    assert not bool(r.converged[1:4].any())
    for f in (r.R, r.t, r.rvec, r.cost, r.covariance):
        assert bool(torch.isfinite(f).all())
    alone = solve_pnp(s.keypoints_px[[0, 4]], s.points_obj[[0, 4]], s.K[[0, 4]], impl=impl)
    torch.testing.assert_close(r.R[[0, 4]].detach(), alone.R, atol=1e-10, rtol=0)
    (g,) = torch.autograd.grad(r.t.sum() + r.R.sum(), x2d)
    assert bool(torch.isfinite(g).all())
    assert float(g[1:4].abs().max()) == 0.0 and float(g[0].abs().max()) > 0.0


@pytest.mark.parametrize("impl", IMPLS)
def test_points_behind_camera_are_invalid(impl):
    s = synthetic_pnp_problem(2, 10, 0.0, seed=13)
    # The mirror image (all camera coordinates negated) projects to the same pixels; with the
    # object put behind the camera by its pose, the exact fit has negative depths.
    R_behind = s.R_gt
    t_behind = -s.t_gt
    cam = s.points_obj @ R_behind.transpose(-1, -2) + t_behind[:, None]
    uvw = cam @ s.K.transpose(-1, -2)
    x2d = uvw[..., :2] / uvw[..., 2:]
    init = torch.cat([matrix_to_rotvec(R_behind), t_behind], dim=-1)
    r = solve_pnp(x2d, s.points_obj, s.K, init=init, impl=impl)
    assert not bool(r.valid.any())
    assert bool(torch.isfinite(r.R).all())


@pytest.mark.parametrize("impl", IMPLS)
def test_converged_is_honest(impl):
    s = synthetic_pnp_problem(4, 30, 1.0, seed=14)
    far = s.pose_init.clone()
    far[:, :3] += 0.3
    one = solve_pnp(s.keypoints_px, s.points_obj, s.K, init=far, max_iterations=1, impl=impl)
    assert not bool(one.converged.any())
    full = solve_pnp(s.keypoints_px, s.points_obj, s.K, init=far, max_iterations=50, impl=impl)
    assert bool(full.converged.all())
    # a converged solution is stationary: one more solve from it does not move
    again = solve_pnp(s.keypoints_px, s.points_obj, s.K, init=_pose_vec(full), tol=1e-12,
                      impl=impl)
    torch.testing.assert_close(again.t, full.t, atol=1e-9, rtol=0)


def test_float32_on_cpu():
    s64 = synthetic_pnp_problem(8, 30, 1.0, seed=15)
    s32 = synthetic_pnp_problem(8, 30, 1.0, seed=15, dtype=torch.float32)
    r64 = solve_pnp(s64.keypoints_px, s64.points_obj, s64.K)
    x2d = s32.keypoints_px.clone().requires_grad_()
    r32 = solve_pnp(x2d, s32.points_obj, s32.K)
    assert r32.R.dtype == torch.float32 and r32.covariance.dtype == torch.float32
    assert bool(r32.valid.all()) and bool(r32.converged.all())
    # (acos-based angle errors would read float32 round-off of R as ~0.02 deg: compare rvecs)
    assert float((r32.rvec.detach().double() - r64.rvec).abs().max()) < 1e-5
    assert float((r32.t.detach().double() - r64.t).norm(dim=-1).max()) < 1e-5
    (g,) = torch.autograd.grad(r32.t.sum(), x2d)
    assert g.dtype == torch.float32 and bool(torch.isfinite(g).all())


def test_unbatched_inputs():
    s = synthetic_pnp_problem(1, 12, 0.5, seed=16)
    r = solve_pnp(s.keypoints_px[0], s.points_obj[0], s.K[0], s.weights[0])
    rb = solve_pnp(s.keypoints_px, s.points_obj, s.K, s.weights)
    assert r.R.shape == (1, 3, 3) and r.t.shape == (1, 3) and r.covariance.shape == (1, 6, 6)
    torch.testing.assert_close(r.R, rb.R)
    # shared object points and intrinsics for a batch
    s2 = synthetic_pnp_problem(1, 12, 0.0, seed=16)
    x2d = torch.cat([s2.keypoints_px, s2.keypoints_px + 0.1])
    r2 = solve_pnp(x2d, s2.points_obj[0], s2.K[0])
    assert r2.R.shape == (2, 3, 3) and bool(r2.valid.all())


def test_benchmark_quick_smoke():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pnp.py"
    spec = importlib.util.spec_from_file_location("bench_pnp", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.run_benchmark(batches=(2,), points=(8,), dtypes=(torch.float64,), repeats=2,
                             with_opencv=True)
    assert len(rows) == 1 and rows[0]["forward_ms"] > 0 and rows[0]["opencv_sqpnp_ms"] > 0
    assert "| B |" in mod.markdown_table(rows)


def test_real_chessboard_reprojection_matches_opencv(chessboard_dir):
    fs = cv2.FileStorage(str(chessboard_dir / "intrinsics.yml"), cv2.FILE_STORAGE_READ)
    K, D = fs.getNode("M1").mat(), fs.getNode("D1").mat()
    fs.release()
    obj = np.zeros((54, 3))
    obj[:, :2] = np.mgrid[0:9, 0:6].T.reshape(-1, 2)  # unit squares (true size unknown)
    checked = 0
    for path in sorted(chessboard_dir.glob("left*.jpg")):
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        found, corners = cv2.findChessboardCorners(gray, (9, 6))
        if not found:
            continue
        corners = cv2.cornerSubPix(gray, corners, (11, 11), (-1, -1),
                                   (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3))
        # the solver takes undistorted pixels (same K)
        und = cv2.undistortPoints(corners, K, D, P=K)[:, 0, :].astype(np.float64)
        _, rv, tv = cv2.solvePnP(obj, und, K, None, flags=cv2.SOLVEPNP_ITERATIVE)
        proj_cv = cv2.projectPoints(obj, rv, tv, K, None)[0][:, 0, :]
        rms_cv = float(np.sqrt(((proj_cv - und) ** 2).sum(-1).mean()))
        r = solve_pnp(torch.from_numpy(und), torch.from_numpy(obj), torch.from_numpy(K))
        assert bool(r.valid.all()) and bool(r.converged.all())
        proj = cv2.projectPoints(obj, r.rvec[0].numpy(), r.t[0].numpy(), K, None)[0][:, 0, :]
        rms = float(np.sqrt(((proj - und) ** 2).sum(-1).mean()))
        assert abs(rms - rms_cv) <= 0.01, f"{path.name}: {rms:.4f} px vs OpenCV {rms_cv:.4f} px"
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("dtype,impl",
                         [(torch.float32, "auto"), *((torch.float64, i) for i in IMPLS)])
def test_collapsed_keypoints_never_raise_or_give_nan(dtype, impl):
    # all keypoints of a sample on one pixel: singular normal equations, diverging depth
    s = synthetic_pnp_problem(32, 7, 2.0, planar=True, seed=5, dtype=dtype)
    x2d = s.keypoints_px.clone()
    x2d[1] = 0.0
    x2d.requires_grad_()
    for robust in (None, ("huber", 3.0)):
        r = solve_pnp(x2d, s.points_obj, s.K, robust=robust, impl=impl)
        (g,) = torch.autograd.grad(r.t.sum() + r.rvec.sum() + r.R.sum(), x2d)
        for f in (r.R, r.t, r.rvec, r.cost, r.covariance, g):
            assert bool(torch.isfinite(f).all())
        assert bool(r.valid[2:].all())

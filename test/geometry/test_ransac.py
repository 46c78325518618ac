# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
import pytest
import torch

from dvc_perception.errors import ConfigError
from dvc_perception.geometry import pnp
from dvc_perception.geometry.pnp import solve_pnp, solve_pnp_ransac
from dvc_perception.geometry.synthetic import synthetic_pnp_problem

IMPLS = ["compiled", "torch"] if pnp.compiled_available() else ["torch"]


def _rot_err_deg(Ra, Rb):
    c = ((Ra.transpose(-1, -2) @ Rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(c.clamp(-1, 1)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ratio", [0.3, 0.5])
@pytest.mark.parametrize("planar", [False, True])
def test_ransac_recovers_pose_and_inliers(ratio, planar, impl):
    s = synthetic_pnp_problem(3, 40, 1.0, planar=planar, seed=31, outlier_ratio=ratio)
    r = solve_pnp_ransac(s.keypoints_px, s.points_obj, s.K, threshold_px=4.0, impl=impl)
    assert bool(r.valid.all())
    # the inlier mask is the generator's (a random outlier may land within 4 px by chance)
    mismatch = (r.inliers != ~s.outliers).sum(-1)
    assert int(mismatch.max()) <= 1, mismatch.tolist()
    assert r.n_inliers.tolist() == r.inliers.sum(-1).tolist()
    assert bool((r.residuals[r.inliers] < 4.0).all())
    assert bool((r.residuals[~r.inliers] >= 4.0).all())
    # the pose equals a least-squares solve on the true inliers
    oracle = solve_pnp(s.keypoints_px, s.points_obj, s.K, s.weights * ~s.outliers)
    assert float(_rot_err_deg(r.R, oracle.R).max()) < 0.05
    assert float((r.t - oracle.t).norm(dim=-1).max()) < 1e-3
    # and is far better than least squares on everything
    plain = solve_pnp(s.keypoints_px, s.points_obj, s.K)
    err_plain = _rot_err_deg(plain.R, s.R_gt).median()
    assert float(_rot_err_deg(r.R, s.R_gt).median()) < float(err_plain)


@pytest.mark.parametrize("impl", IMPLS)
def test_ransac_is_differentiable_and_reproducible(impl):
    s = synthetic_pnp_problem(2, 30, 1.0, seed=32, outlier_ratio=0.3)
    x2d = s.keypoints_px.clone().requires_grad_()
    r1 = solve_pnp_ransac(x2d, s.points_obj, s.K, seed=4, impl=impl)
    r2 = solve_pnp_ransac(s.keypoints_px, s.points_obj, s.K, seed=4, impl=impl)
    assert torch.equal(r1.inliers, r2.inliers)
    (g,) = torch.autograd.grad(r1.t.sum(), x2d)
    assert bool(torch.isfinite(g).all())
    # outliers carry no weight in the refinement, hence no gradient
    assert float(g[~r1.inliers].abs().max()) == 0.0
    assert float(g[r1.inliers].abs().max()) > 0.0


@pytest.mark.parametrize("impl", IMPLS)
def test_ransac_without_enough_inliers_is_invalid(impl):
    s = synthetic_pnp_problem(1, 12, 0.0, seed=33)
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(s.keypoints_px.shape, generator=gen, dtype=torch.float64) * 600
    r = solve_pnp_ransac(noise, s.points_obj, s.K, min_inliers=10, num_hypotheses=32, impl=impl)
    assert not bool(r.valid.any())
    assert int(r.n_inliers.sum()) == 0 and not bool(r.inliers.any())


def test_ransac_config_errors():
    s = synthetic_pnp_problem(1, 12, 0.0)
    with pytest.raises(ConfigError, match="threshold_px"):
        solve_pnp_ransac(s.keypoints_px, s.points_obj, s.K, threshold_px=0.0)
    with pytest.raises(ConfigError, match="sample_size"):
        solve_pnp_ransac(s.keypoints_px, s.points_obj, s.K, sample_size=3)
    with pytest.raises(ConfigError, match="impl"):
        solve_pnp_ransac(s.keypoints_px, s.points_obj, s.K, impl="numba")


@pytest.mark.parametrize("impl", IMPLS)
def test_ransac_survives_nan_and_collapsed_samples(impl):
    s = synthetic_pnp_problem(4, 30, 2.0, seed=0, outlier_ratio=0.1)
    x2d = s.keypoints_px.clone()
    x2d[0, 0, 0] = float("nan")  # one NaN keypoint: that point is never used
    x2d[1] = 0.0  # every keypoint on one pixel: singular hypotheses
    r = solve_pnp_ransac(x2d, s.points_obj, s.K, num_hypotheses=32, impl=impl)
    for f in (r.R, r.t, r.rvec, r.cost, r.covariance):
        assert bool(torch.isfinite(f).all())
    assert bool(r.valid[[0, 2, 3]].all())
    assert not bool(r.inliers[0, 0])

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""refine_pose: recovers known perturbations on rendered frames, analytic Jacobians,
covariance, cost of a wrong pose, typed errors for bad inputs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from dvc_perception.errors import ConfigError, InputError, MeshError, ShapeError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.geometry.metrics import add_error
from dvc_perception.geometry.projection import project_points
from dvc_perception.geometry.so3 import rotvec_to_matrix
from dvc_perception.refine import RefineSettings, refine_pose
from dvc_perception.refine.contour import kernels
from dvc_perception.refine.refiner import exp_so3
from dvc_perception.render.mesh import Mesh

from .conftest import HEIGHT, WIDTH, camera, iou, make_frame, perturb, silhouette


def _contour_residual(x: torch.Tensor, points: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                      K: torch.Tensor, centres: torch.Tensor, normals: torch.Tensor
                      ) -> torch.Tensor:
    """(N,) px: n . (pi(K (exp([w]x) R X + t + dt)) - c) at x = (dt, w), through the project's
    own projection and exponential map (independent of the compiled kernel)."""
    R2 = rotvec_to_matrix(x[3:]) @ R
    uv = project_points(points, R2, t + x[:3], K)
    return ((uv - centres) * normals).sum(-1)


def test_contour_jacobian_matches_finite_differences_and_autograd():
    rng = np.random.default_rng(4)
    n = 12
    points = rng.normal(size=(n, 3)) * 0.05
    R = rotvec_to_matrix(torch.tensor([0.4, -0.2, 0.3], dtype=torch.float64)).numpy()
    t = np.array([0.03, -0.02, 0.55])
    K = np.array([[520.0, 0.7, 318.0], [0.0, 530.0, 244.0], [0.0, 0.0, 1.0]])  # with skew
    centres = rng.uniform(250, 400, (n, 2))
    normals = rng.normal(size=(n, 2))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    mean = rng.normal(size=n)  # non-zero residuals
    var = rng.uniform(1.0, 4.0, n)
    H, g, J = np.zeros((6, 6)), np.zeros(6), np.zeros((n, 6))
    kernels().normal_equations(points, R, t, K, centres, normals, mean, var, np.ones(n, bool),
                               0.0, H, g, J)
    args = [torch.from_numpy(a) for a in (points, R, t, K, centres, normals)]
    # central differences in float64
    J_fd = np.zeros((n, 6))
    for a in range(6):
        e = torch.zeros(6, dtype=torch.float64)
        e[a] = 1e-6
        J_fd[:, a] = ((_contour_residual(e, *args) - _contour_residual(-e, *args)) / 2e-6).numpy()
    np.testing.assert_allclose(J, J_fd, rtol=1e-6, atol=1e-5 * np.abs(J).max())
    J_ad = torch.autograd.functional.jacobian(
        lambda x: _contour_residual(x, *args), torch.zeros(6, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(J, J_ad, rtol=1e-9, atol=1e-9 * np.abs(J).max())
    # and the normal equations are the weighted sums of those rows
    d0 = _contour_residual(torch.zeros(6, dtype=torch.float64), *args).numpy()
    w = 1.0 / var
    np.testing.assert_allclose(H, (J_ad * w[:, None]).T @ J_ad, rtol=1e-10)
    np.testing.assert_allclose(g, J_ad.T @ (w * (d0 - mean)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("source", ["mesh", "model"])
def test_recovers_known_perturbations(demo_object, demo_model, source):
    """8 deg / 0.08 diameter on textured renders over random colours, noise and an occluder:
    the silhouette IoU against the true render and the ADD error both improve."""
    model = demo_object.mesh if source == "mesh" else demo_model
    points = demo_object.mesh.vertices.numpy()
    d = demo_object.diameter_m
    before, after = [], []
    for seed in range(4):
        frame = make_frame(demo_object.mesh, seed)
        R0, t0 = perturb(frame.R, frame.t, 8.0, 0.08 * d, 100 + seed)
        res = refine_pose(frame.image, frame.camera, model, R0, t0)
        R1, t1 = res.R[0].numpy(), res.t[0].numpy()
        before.append((iou(silhouette(demo_object.mesh, R0, t0), frame.mask),
                       float(add_error(R0, t0, frame.R, frame.t, points)) / d))
        after.append((iou(silhouette(demo_object.mesh, R1, t1), frame.mask),
                      float(add_error(R1, t1, frame.R, frame.t, points)) / d))
        assert res.iterations[0] == 8 and res.num_lines[0] >= 100
    before, after = np.array(before), np.array(after)
    assert (after[:, 0] > before[:, 0] + 0.03).all(), (before, after)
    assert np.median(after[:, 0]) > 0.95
    assert (after[:, 1] < before[:, 1]).all() and (after[:, 1] < 0.1).all(), (before, after)


def test_batched_instances_are_refined_independently(demo_object, demo_model):
    frame = make_frame(demo_object.mesh, 1)
    d = demo_object.diameter_m
    starts = [perturb(frame.R, frame.t, 6.0, 0.05 * d, s) for s in (7, 8)]
    R0 = np.stack([s[0] for s in starts])
    t0 = np.stack([s[1] for s in starts])
    both = refine_pose(frame.image, frame.camera, demo_model, torch.from_numpy(R0),
                       torch.from_numpy(t0))
    assert both.R.shape == (2, 3, 3) and both.t.shape == (2, 3) and both.cost.shape == (2,)
    assert both.covariance.shape == (2, 6, 6) and both.R.dtype == torch.float64
    one = refine_pose(frame.image, frame.camera, [demo_model], R0[1], t0[1])
    torch.testing.assert_close(both.R[1], one.R[0])
    torch.testing.assert_close(both.t[1], one.t[0])


def test_covariance_is_symmetric_psd_in_ros_order(demo_object, demo_model):
    frame = make_frame(demo_object.mesh, 0, occluder=False)
    res = refine_pose(frame.image, frame.camera, demo_model, frame.R, frame.t)
    cov = res.covariance[0].numpy()
    np.testing.assert_allclose(cov, cov.T, atol=0)
    assert np.linalg.eigvalsh(cov).min() >= 0
    std = np.sqrt(np.diag(cov))
    # ROS order (x, y, z, rot x, rot y, rot z): an outline fixes the position across the line
    # of sight to a fraction of a millimetre but the depth (apparent size) far less well
    assert std[0] < 1e-3 and std[1] < 1e-3 and std[2] > 5 * max(std[0], std[1])
    assert (std[3:] < np.radians(5)).all()


def test_a_wrong_pose_costs_more_than_the_right_one(demo_object, demo_model):
    frame = make_frame(demo_object.mesh, 3)
    right = refine_pose(frame.image, frame.camera, demo_model, frame.R, frame.t)
    flip = rotvec_to_matrix(torch.tensor([0.0, np.pi / 2, 0.0], dtype=torch.float64)).numpy()
    wrong = refine_pose(frame.image, frame.camera, demo_model, flip @ frame.R, frame.t)
    off = refine_pose(frame.image, frame.camera, demo_model, frame.R,
                      frame.t + np.array([0.06, 0.0, 0.0]))  # beside the object
    assert right.cost[0] < 0.4
    assert wrong.cost[0] > right.cost[0] + 0.1
    assert off.cost[0] > right.cost[0] + 0.1


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="min_sigma_px"):
        RefineSettings(scales=(4, 2), min_sigma_px=(5.0,))
    with pytest.raises(ConfigError, match="distribution_length"):
        RefineSettings(distribution_length=12)
    with pytest.raises(ConfigError, match="histogram bins"):
        RefineSettings(histogram_bins=12)
    with pytest.raises(ConfigError, match="unknown keys"):
        RefineSettings.from_mapping({"iterationz": 3})
    s = RefineSettings.from_mapping({"scales": [4, 1], "min_sigma_px": [5, 1.5]})
    assert s.scales == (4, 1) and s.min_sigma_px == (5.0, 1.5)


def test_bad_inputs_raise_typed_errors(demo_object):
    frame = make_frame(demo_object.mesh, 0)
    mesh, cam = demo_object.mesh, frame.camera
    with pytest.raises(ShapeError, match="image"):
        refine_pose(frame.image[:, :-1], cam, mesh, frame.R, frame.t)
    with pytest.raises(InputError, match="uint8"):
        refine_pose(frame.image.astype(np.float32), cam, mesh, frame.R, frame.t)
    with pytest.raises(InputError, match="rotation"):
        refine_pose(frame.image, cam, mesh, 1.1 * frame.R, frame.t)
    with pytest.raises(InputError, match="rotation"):
        refine_pose(frame.image, cam, mesh, -frame.R, frame.t)  # a reflection
    with pytest.raises(InputError, match="finite"):
        refine_pose(frame.image, cam, mesh, frame.R, np.array([0.0, np.nan, 0.5]))
    with pytest.raises(ShapeError, match="t0"):
        refine_pose(frame.image, cam, mesh, np.stack([frame.R] * 2), frame.t[None])
    with pytest.raises(ShapeError, match="mesh"):
        refine_pose(frame.image, cam, [mesh] * 3, np.stack([frame.R] * 2),
                    np.stack([frame.t] * 2))
    empty = Mesh(torch.zeros((0, 3), dtype=torch.float64), torch.zeros((0, 3), dtype=torch.long))
    with pytest.raises(MeshError):
        refine_pose(frame.image, cam, empty, frame.R, frame.t)


def test_behind_the_camera_or_outside_the_image_is_not_converged(demo_object, demo_model):
    frame = make_frame(demo_object.mesh, 0)
    R = np.stack([frame.R] * 3)
    t = np.stack([frame.t * np.array([1, 1, -1]),  # behind the camera
                  frame.t + np.array([1.0, 0.0, 0.0]),  # far right of the image
                  frame.t])
    for model in (demo_object.mesh, demo_model):
        res = refine_pose(frame.image, frame.camera, model, R, t)
        assert res.converged.tolist() == [False, False, True]
        assert np.isinf(res.cost[:2].numpy()).all()
        np.testing.assert_allclose(res.R[:2].numpy(), R[:2], atol=1e-12)  # the initial pose
        np.testing.assert_array_equal(res.t[:2].numpy(), t[:2])
        assert (res.covariance[:2] == 0).all() and (res.iterations[:2] == 0).all()


def test_a_distorted_camera_is_undistorted_first(demo_object, demo_model):
    """The same frame seen through a lens: refining on the distorted image with the distorted
    camera model lands where refining the ideal image does."""
    import cv2

    frame = make_frame(demo_object.mesh, 2, occluder=False)
    K = frame.camera.K.numpy()
    D = np.array([-0.12, 0.05, 0.001, -0.001, 0.0])
    lens = CameraModel(K, D, WIDTH, HEIGHT, "plumb_bob")
    # distort the ideal image: for each distorted pixel, where it comes from in the ideal one
    map_xy = cv2.undistortPoints(
        np.stack(np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT)), -1).reshape(-1, 1, 2)
        .astype(np.float64), K, D, P=K).reshape(HEIGHT, WIDTH, 2).astype(np.float32)
    distorted = cv2.remap(frame.image, map_xy[..., 0], map_xy[..., 1], cv2.INTER_LINEAR)
    R0, t0 = perturb(frame.R, frame.t, 6.0, 0.005, 3)
    ideal = refine_pose(frame.image, camera(), demo_model, R0, t0)
    seen = refine_pose(distorted, lens, demo_model, R0, t0)
    assert np.linalg.norm(seen.t[0].numpy() - ideal.t[0].numpy()) < 1e-3
    naive = refine_pose(distorted, dataclasses.replace(lens, D=np.zeros(5)), demo_model, R0, t0)
    assert np.linalg.norm(naive.t[0].numpy() - frame.t) > np.linalg.norm(
        seen.t[0].numpy() - frame.t)


def test_numpy_exponential_map_matches_so3():
    rng = np.random.default_rng(0)
    vectors = [np.zeros(3), np.array([1e-9, 0.0, 0.0]), np.array([0.0, 1e-5, 2e-5]),
               np.array([0.0, 0.0, np.pi]), np.array([np.pi - 1e-6, 0.0, 0.0])]
    vectors += list(rng.normal(size=(8, 3)))
    for w in vectors:
        np.testing.assert_allclose(exp_so3(w), rotvec_to_matrix(torch.from_numpy(w)).numpy(),
                                   atol=1e-14)


def test_importing_the_refiner_loads_neither_ros_nor_numba():
    code = ("import sys, dvc_perception.refine; "
            "print(sorted(m for m in ('rclpy', 'numba', 'tensorrt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dvc_perception.errors import ShapeError
from dvc_perception.geometry.se3 import compose_poses, invert_pose, transform_points
from dvc_perception.geometry.so3 import (
    matrix_to_quaternion,
    matrix_to_rotvec,
    quaternion_to_matrix,
    rotvec_to_matrix,
    skew,
)

# Singular and near-singular angles forced in, plus generic ones.
ANGLES = [0.0, 1e-12, 1e-8, 1e-4, 1e-2, 0.5, 2.0, math.pi - 1e-3, math.pi - 1e-7, math.pi]


def _rotvecs(dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    axes = torch.randn(len(ANGLES), 4, 3, generator=gen, dtype=torch.float64)
    axes = axes / axes.norm(dim=-1, keepdim=True)
    axes[:, 0] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # an axis-aligned case too
    angles = torch.tensor(ANGLES, dtype=torch.float64)[:, None, None]
    return (axes * angles).reshape(-1, 3).to(dtype)


def test_rotvec_to_matrix_matches_scipy():
    rv = _rotvecs()
    ref = torch.from_numpy(Rotation.from_rotvec(rv.numpy()).as_matrix())
    torch.testing.assert_close(rotvec_to_matrix(rv), ref, atol=1e-14, rtol=0)


def test_matrix_is_rotation():
    R = rotvec_to_matrix(_rotvecs())
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    torch.testing.assert_close(R @ R.mT, eye, atol=1e-14, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(R.shape[0], dtype=R.dtype))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_rotvec_round_trip(dtype, tol):
    rv = _rotvecs(dtype)
    back = matrix_to_rotvec(rotvec_to_matrix(rv))
    angle = rv.norm(dim=-1)
    far_from_pi = angle < math.pi - 1e-3
    # Away from pi the rotation vector is unique.
    torch.testing.assert_close(back[far_from_pi], rv[far_from_pi], atol=tol, rtol=0)
    # At pi, rv and -rv are the same rotation: compare matrices.
    R_back = rotvec_to_matrix(back.double())
    R_ref = rotvec_to_matrix(rv.double())
    torch.testing.assert_close(R_back, R_ref, atol=50 * tol, rtol=0)


def test_matrix_to_rotvec_matches_scipy_near_pi():
    rv = _rotvecs()
    R = torch.from_numpy(Rotation.from_rotvec(rv.numpy()).as_matrix())
    ours = matrix_to_rotvec(R)
    ref = torch.from_numpy(Rotation.from_matrix(R.numpy()).as_rotvec())
    # Equal up to the sign ambiguity at exactly pi.
    same = (ours - ref).norm(dim=-1) < 1e-9
    flipped = (ours + ref).norm(dim=-1) < 1e-9
    at_pi = (ref.norm(dim=-1) - math.pi).abs() < 1e-6
    assert bool((same | (flipped & at_pi)).all())


def test_quaternion_convention_xyzw():
    # 90 deg about z: (x, y, z, w) = (0, 0, sin 45, cos 45)
    R = rotvec_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    q = matrix_to_quaternion(R)
    s = math.sqrt(0.5)
    torch.testing.assert_close(q, torch.tensor([0.0, 0.0, s, s], dtype=torch.float64))
    # Same as scipy (xyzw, canonicalised to w >= 0)
    rv = _rotvecs()
    Rm = rotvec_to_matrix(rv)
    ref = Rotation.from_matrix(Rm.numpy()).as_quat()
    ref = np.where(ref[:, 3:] < 0, -ref, ref)
    ours = matrix_to_quaternion(Rm)
    assert bool((ours[:, 3] >= 0).all())
    close = np.minimum(
        np.abs(ours.numpy() - ref).max(-1), np.abs(ours.numpy() + ref).max(-1)
    )  # sign free only where w == 0
    assert close.max() < 1e-12
    torch.testing.assert_close(quaternion_to_matrix(ours), Rm, atol=1e-14, rtol=0)
    # Non-normalised quaternion is normalised
    torch.testing.assert_close(quaternion_to_matrix(3.0 * ours), Rm, atol=1e-14, rtol=0)


def test_skew_is_cross():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close((skew(a) @ b[..., None])[..., 0], torch.linalg.cross(a, b))


@pytest.mark.parametrize("angle", [0.0, 1e-8, 1e-3, 1.0, math.pi - 1e-4])
def test_rotvec_to_matrix_gradcheck(angle):
    axis = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    rv = (axis / axis.norm() * angle).requires_grad_()
    assert torch.autograd.gradcheck(rotvec_to_matrix, (rv,), eps=1e-7, atol=1e-8)


@pytest.mark.parametrize("angle", [1e-8, 1e-3, 1.0, math.pi - 1e-3])
def test_matrix_to_rotvec_gradcheck(angle):
    axis = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    rv = (axis / axis.norm() * angle).requires_grad_()
    # Through the exponential so that the perturbed input stays a rotation.
    assert torch.autograd.gradcheck(
        lambda v: matrix_to_rotvec(rotvec_to_matrix(v)), (rv,), eps=1e-7, atol=1e-7
    )


def test_gradients_finite_at_zero_and_pi():
    for angle in (0.0, math.pi):
        rv = torch.tensor([0.0, 0.0, angle], dtype=torch.float64, requires_grad=True)
        R = rotvec_to_matrix(rv)
        (g,) = torch.autograd.grad((matrix_to_rotvec(R) ** 2).sum() + R.sum(), rv)
        assert bool(torch.isfinite(g).all())


def test_se3_compose_invert_transform():
    gen = torch.Generator().manual_seed(2)
    R1, R2 = rotvec_to_matrix(torch.randn(2, 4, 3, generator=gen, dtype=torch.float64))
    t1, t2 = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64)
    pts = torch.randn(4, 7, 3, generator=gen, dtype=torch.float64)
    R12, t12 = compose_poses(R1, t1, R2, t2)
    torch.testing.assert_close(
        transform_points(R12, t12, pts), transform_points(R1, t1, transform_points(R2, t2, pts))
    )
    Ri, ti = invert_pose(R1, t1)
    torch.testing.assert_close(transform_points(Ri, ti, transform_points(R1, t1, pts)), pts)
    with pytest.raises(ShapeError, match="expected"):
        transform_points(R1, t1, pts[..., :2])
    with pytest.raises(ShapeError, match="rvec"):
        rotvec_to_matrix(torch.zeros(4, 2))

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Rotations in 3D (SO(3)): rotation vectors, matrices and unit quaternions.

All functions are batched over leading dimensions, work in float32 and float64 on any device,
are differentiable, and stay finite (values and gradients) at the singular angles 0 and pi.

Quaternions are ``(x, y, z, w)`` (ROS ``geometry_msgs/Quaternion`` order); the quaternions
returned here are canonical: ``w >= 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dvc_perception.errors import check_shape

# Below this squared angle [rad^2] the Taylor series are used: their truncation error
# (theta^6 / 5040 ~ 2e-16) is below float64 round-off, and they avoid 0/0 in values and gradients.
_SMALL_ANGLE_SQ = 1e-4


def skew(v: Tensor) -> Tensor:
    """Cross-product matrix: ``skew(v) @ u == cross(v, u)``.

    Args:
        v: (..., 3) vector.

    Returns:
        (..., 3, 3) skew-symmetric matrix.
    """
    check_shape(v, "...,3", name="v")
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def rotvec_to_matrix(rvec: Tensor) -> Tensor:
    """Rodrigues' formula: rotation vector (axis * angle) to rotation matrix.

    Args:
        rvec: (..., 3) rotation vector, rad.

    Returns:
        (..., 3, 3) rotation matrix ``R = exp([rvec]x)``.
    """
    check_shape(rvec, "...,3", name="rvec")
    theta_sq = (rvec * rvec).sum(-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    # Safe argument so that the unused branch of torch.where has finite gradients.
    theta_sq_safe = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = theta_sq_safe.sqrt()
    half_sin = torch.sin(0.5 * theta)
    # a = sin(theta)/theta, b = (1 - cos(theta))/theta^2 = 2 sin^2(theta/2)/theta^2 (no cancel.)
    a_big = torch.sin(theta) / theta
    b_big = 2.0 * half_sin * half_sin / theta_sq_safe
    a_small = 1.0 - theta_sq / 6.0 + theta_sq * theta_sq / 120.0
    b_small = 0.5 - theta_sq / 24.0 + theta_sq * theta_sq / 720.0
    a = torch.where(small, a_small, a_big)[..., None, None]
    b = torch.where(small, b_small, b_big)[..., None, None]
    k = skew(rvec)
    eye = torch.eye(3, dtype=rvec.dtype, device=rvec.device)
    return eye + a * k + b * (k @ k)


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(max(x, 0)) with a zero (not infinite) gradient at and below 0."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), 0.0 * x)


# Shepperd's four candidate quaternions, each scaled by 4 q_k (k = w, x, y, z), are linear in the
# entries m_ij of R: rows = R.flatten() @ _SHEPPERD_C + _SHEPPERD_1, each in (x, y, z, w) order.
# Their diagonal entries (w of row w, x of row x, ...) are 4 q_k^2.
_SHEPPERD_TERMS = (
    # row w: (m21 - m12, m02 - m20, m10 - m01, 1 + m00 + m11 + m22)
    (((7, 1), (5, -1)), ((2, 1), (6, -1)), ((3, 1), (1, -1)), ((0, 1), (4, 1), (8, 1))),
    # row x: (1 + m00 - m11 - m22, m10 + m01, m02 + m20, m21 - m12)
    (((0, 1), (4, -1), (8, -1)), ((3, 1), (1, 1)), ((2, 1), (6, 1)), ((7, 1), (5, -1))),
    # row y: (m10 + m01, 1 - m00 + m11 - m22, m12 + m21, m02 - m20)
    (((3, 1), (1, 1)), ((0, -1), (4, 1), (8, -1)), ((5, 1), (7, 1)), ((2, 1), (6, -1))),
    # row z: (m20 + m02, m21 + m12, 1 - m00 - m11 + m22, m10 - m01)
    (((6, 1), (2, 1)), ((7, 1), (5, 1)), ((0, -1), (4, -1), (8, 1)), ((3, 1), (1, -1))),
)
_SHEPPERD_DIAG = (3, 4, 9, 14)  # flat index (4 row + column) of 4 q_k^2 in rows w, x, y, z


def _shepperd_constants() -> tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]:
    C = [[0.0] * 16 for _ in range(9)]
    for k, row in enumerate(_SHEPPERD_TERMS):
        for j, terms in enumerate(row):
            for idx, sign in terms:
                C[idx][4 * k + j] = float(sign)
    c = [1.0 if i in _SHEPPERD_DIAG else 0.0 for i in range(16)]
    return tuple(tuple(r) for r in C), tuple(c)


_SHEPPERD_C, _SHEPPERD_1 = _shepperd_constants()  # immutable constants


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """Rotation matrix to unit quaternion (Shepperd's method, stable for every angle).

    Args:
        R: (..., 3, 3) rotation matrix.

    Returns:
        (..., 4) unit quaternion ``(x, y, z, w)`` with ``w >= 0``.
    """
    check_shape(R, "...,3,3", name="R")
    C = torch.tensor(_SHEPPERD_C, dtype=R.dtype, device=R.device)
    c = torch.tensor(_SHEPPERD_1, dtype=R.dtype, device=R.device)
    flat = R.reshape(*R.shape[:-2], 9) @ C + c
    rows = flat.reshape(*R.shape[:-2], 4, 4)
    diag = flat[..., list(_SHEPPERD_DIAG)]  # 4 q_k^2 = (2|q_k|)^2
    q_abs = _safe_sqrt(diag)  # 2|q_k|; the largest is >= 1: a well-conditioned candidate
    cand = rows / (2.0 * q_abs.clamp(min=0.1))[..., None]
    best = torch.nn.functional.one_hot(q_abs.argmax(dim=-1), 4).to(R.dtype)
    q = (cand * best[..., None]).sum(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., 3:] < 0, -q, q)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Quaternion to rotation matrix; the quaternion is normalised first.

    Args:
        q: (..., 4) quaternion ``(x, y, z, w)``, non-zero.

    Returns:
        (..., 3, 3) rotation matrix.
    """
    check_shape(q, "...,4", name="q")
    q = q / q.norm(dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - z * w),
            2 * (x * z + y * w),
            2 * (x * y + z * w),
            1 - 2 * (x * x + z * z),
            2 * (y * z - x * w),
            2 * (x * z - y * w),
            2 * (y * z + x * w),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def quaternion_to_rotvec(q: Tensor) -> Tensor:
    """Unit quaternion to rotation vector with angle in [0, pi].

    Args:
        q: (..., 4) unit quaternion ``(x, y, z, w)``.

    Returns:
        (..., 3) rotation vector, rad.
    """
    check_shape(q, "...,4", name="q")
    q = torch.where(q[..., 3:] < 0, -q, q)
    v, w = q[..., :3], q[..., 3]
    n_sq = (v * v).sum(-1)
    small = n_sq < 1e-6  # series truncation n^6 / 7 < 2e-19
    n = torch.where(small, torch.ones_like(n_sq), n_sq).sqrt()
    # angle / n = 2 atan2(n, w) / n; near n = 0 its series 2/w (1 - s/3 + s^2/5), s = n^2/w^2.
    w_safe = torch.where(small, w, torch.ones_like(w))
    s = n_sq / (w_safe * w_safe)
    scale_small = 2.0 / w_safe * (1.0 - s / 3.0 + s * s / 5.0)
    scale_big = 2.0 * torch.atan2(n, w) / n
    return v * torch.where(small, scale_small, scale_big)[..., None]


def matrix_to_rotvec(R: Tensor) -> Tensor:
    """Rotation matrix to rotation vector (logarithm map), stable near 0 and pi.

    Args:
        R: (..., 3, 3) rotation matrix.

    Returns:
        (..., 3) rotation vector, rad, angle in [0, pi].
    """
    return quaternion_to_rotvec(matrix_to_quaternion(R))

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Rigid transforms (SE(3)) as ``(R, t)`` pairs: ``X_a = R_ab @ X_b + t_ab``.

Batched over leading dimensions, differentiable, float32 and float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from dvc_perception.errors import InputError, check_shape


def _check_pose(R: Tensor, t: Tensor, name: str) -> None:
    check_shape(R, "...,3,3", name=f"{name} R")
    check_shape(t, "...,3", name=f"{name} t")


def transform_points(R: Tensor, t: Tensor, points: Tensor) -> Tensor:
    """Apply ``X' = R @ X + t`` to a set of points.

    Args:
        R: (..., 3, 3) rotation of frame b in frame a.
        t: (..., 3) translation of frame b in frame a, m.
        points: (..., N, 3) points in frame b, m.

    Returns:
        (..., N, 3) points in frame a, m.
    """
    _check_pose(R, t, "transform_points")
    check_shape(points, "...,N,3", name="points")
    return points @ R.transpose(-1, -2) + t.unsqueeze(-2)


def compose_poses(R_ab: Tensor, t_ab: Tensor, R_bc: Tensor, t_bc: Tensor) -> tuple[Tensor, Tensor]:
    """Compose two transforms: ``T_ac = T_ab @ T_bc``.

    Args:
        R_ab: (..., 3, 3) rotation of b in a.
        t_ab: (..., 3) translation of b in a, m.
        R_bc: (..., 3, 3) rotation of c in b.
        t_bc: (..., 3) translation of c in b, m.

    Returns:
        ``(R_ac (..., 3, 3), t_ac (..., 3))``.
    """
    _check_pose(R_ab, t_ab, "compose_poses ab")
    _check_pose(R_bc, t_bc, "compose_poses bc")
    R_ac = R_ab @ R_bc
    t_ac = (R_ab @ t_bc.unsqueeze(-1)).squeeze(-1) + t_ab
    return R_ac, t_ac


def invert_pose(R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Invert a transform: ``(R, t) -> (R^T, -R^T t)``.

    Args:
        R: (..., 3, 3) rotation of b in a.
        t: (..., 3) translation of b in a, m.

    Returns:
        ``(R_ba (..., 3, 3), t_ba (..., 3))``.
    """
    _check_pose(R, t, "invert_pose")
    R_inv = R.transpose(-1, -2)
    t_inv = -(R_inv @ t.unsqueeze(-1)).squeeze(-1)
    return R_inv, t_inv


def check_rigid_transform(T: Any, name: str, tol: float = 1e-3) -> np.ndarray:
    """`T` as a (4, 4) float64 rigid transform, or a typed error naming `name`.

    Finite entries, last row ``0 0 0 1``, rotation block orthonormal with determinant +1 to
    within `tol` (pose files print rotations to a few digits: rotations only to round-off).

    Raises:
        ShapeError: not (4, 4).
        InputError: NaN/inf, another last row, or a rotation block that is not a rotation.
    """
    M = np.asarray(T, dtype=np.float64)
    check_shape(M, "4,4", name=name)
    if not np.all(np.isfinite(M)):
        raise InputError(f"{name}: expected finite numbers, got {M.tolist()}")
    if not np.allclose(M[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9, rtol=0.0):
        raise InputError(f"{name}: expected the last row 0 0 0 1 of a rigid transform, got "
                         f"{M[3].tolist()}")
    R = M[:3, :3]
    off = float(np.abs(R @ R.T - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if off > tol or abs(det - 1.0) > tol:
        raise InputError(f"{name}: expected a rotation in the upper-left 3x3 block, which is "
                         f"not a rotation (|R R^T - I| = {off:.3g}, det R = {det:.6g}; "
                         f"orthonormal with det +1 to within {tol:g})")
    return M

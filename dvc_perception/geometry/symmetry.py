# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Object symmetries: the transforms that leave an object looking the same, and canonical poses.

A symmetry is an object-frame transform ``X -> R_s X + t_s`` (t_s in metres) under which the
object's surface maps onto itself, so the poses ``(R, t)`` and ``(R R_s, R t_s + t)`` give the
same image. Discrete symmetries are listed; a continuous one (rotation about `axis` through
`offset`) is sampled as BOP's toolkit does. `canonical_pose` picks, from a pose's symmetric
equivalents, the one whose rotation is closest to the identity (largest trace): a function of what
the camera sees, so training targets built from it never ask a network to tell apart views that
look the same. Numpy float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Transform = tuple[np.ndarray, np.ndarray]  # (R (3, 3), t (3,) m)


def axis_rotation(axis: Sequence[float], angle: float) -> np.ndarray:
    """(3, 3) rotation by `angle` rad about `axis` (normalised here; Rodrigues' formula)."""
    a = np.asarray(axis, np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def symmetry_transforms(discrete: Sequence[np.ndarray],
                        continuous: Sequence[tuple[Sequence[float], Sequence[float]]] = (),
                        *, max_step_rad: float = 0.01) -> list[Transform]:
    """Every symmetry transform, the identity first.

    Args:
        discrete: 4x4 object-frame transforms (translation in metres), identity not included.
        continuous: (axis, offset m) rotation symmetries, each sampled every
            ``2 pi / ceil(pi / max_step_rad)`` rad (the zero rotation included).
        max_step_rad: the largest sampling step of a continuous symmetry.

    Returns:
        [(R (3, 3), t (3,))]: each discrete transform (and the identity) combined with each
        sampled continuous rotation, as BOP's ``get_symmetry_transformations``.
    """
    disc: list[Transform] = [(np.eye(3), np.zeros(3))]
    for m in discrete:
        m = np.asarray(m, np.float64).reshape(4, 4)
        disc.append((m[:3, :3], m[:3, 3].copy()))
    cont: list[Transform] = []
    for axis, offset in continuous:
        off = np.asarray(offset, np.float64).reshape(3)
        steps = int(np.ceil(np.pi / max_step_rad))
        for i in range(steps):
            R = axis_rotation(axis, i * 2.0 * np.pi / steps)
            cont.append((R, off - R @ off))
    if not cont:
        return disc
    return [(Rc @ Rd, Rc @ td + tc) for Rd, td in disc for Rc, tc in cont]


def canonical_pose(R: np.ndarray, t: np.ndarray, transforms: Sequence[Transform]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The symmetric equivalent of a pose whose rotation is closest to the identity.

    Among ``(R R_s, R t_s + t)`` it takes the largest ``trace(R R_s)`` (the first on a tie).

    Args:
        R: (3, 3) object-in-camera rotation.
        t: (3,) m translation.
        transforms: `symmetry_transforms` of the object (identity included).
    """
    R = np.asarray(R, np.float64)
    t = np.asarray(t, np.float64).reshape(3)
    if len(transforms) <= 1:
        return R, t
    R_s = np.stack([Rs for Rs, _ in transforms])
    traces = np.einsum("ij,sji->s", R, R_s)  # trace(R @ R_s) for every s
    best = int(np.argmax(traces))
    Rs, ts = transforms[best]
    return R @ Rs, R @ ts + t


def transforms_from_plain(plain: dict | None, *, max_step_rad: float = 0.01) -> list[Transform]:
    """`symmetry_transforms` of the JSON form object descriptions and model metadata store.

    That form is ``{"discrete": [16 numbers, ...], "continuous": [{"axis": [..], "offset":
    [..]}]}`` (translations in metres); None or empty gives the identity only.
    """
    if not plain:
        return [(np.eye(3), np.zeros(3))]
    discrete = [np.asarray(m, np.float64).reshape(4, 4) for m in plain.get("discrete", [])]
    continuous = [(c["axis"], c.get("offset", (0.0, 0.0, 0.0)))
                  for c in plain.get("continuous", [])]
    return symmetry_transforms(discrete, continuous, max_step_rad=max_step_rad)

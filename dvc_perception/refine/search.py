# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Global pose search in a detection box with the mesh alone: many starts, refine, keep the best.

A detector box says where an object is, not how it is turned. `search_pose` tries
``num_rotations`` rotations spread evenly over SO(3) (`rotation_samples`), places each so that
its projected outline fills the box (`translation_from_box`), refines every start
(`refiner.refine_pose`, the region-based contour fit), keeps the refined pose of lowest
alignment cost and fits it once more from there. Rotations the box cannot tell apart are told
apart by the colours along the outline, which the refiner's cost measures; no network is
trained for this stage.

Cost grows linearly with the starts: about 4 ms per start per instance at 640x480 on one CPU
core, so a search is for acquiring an object (detection), not for every frame: tracking
(`pipeline.tracking`) carries the pose on from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dvc_perception.errors import ConfigError, ShapeError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.geometry.so3 import quaternion_to_matrix
from dvc_perception.refine.contour import ContourModel, mesh_arrays
from dvc_perception.refine.refiner import ObjectModel, RefineSettings, refine_pose


@dataclass(frozen=True)
class SearchSettings:
    """How `search_pose` searches.

    Attributes:
        num_rotations: starting rotations, spread evenly over SO(3) (>= 1).
        seed: 0, or a seed that turns the whole set of rotations (`rotation_samples`).
    """

    num_rotations: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_rotations < 1:
            raise ConfigError(f"search: expected num_rotations >= 1, got {self.num_rotations}")


@dataclass(frozen=True)
class SearchResult:
    """The best pose of one search.

    Attributes:
        R: (3, 3) float64 rotation, object in camera.
        t: (3,) float64 m.
        cost: the refiner's alignment cost at (R, t) (lower is better; inf: nothing usable).
        covariance: (6, 6) the refiner's covariance at (R, t) (ROS order).
        num_starts: starts tried.
        colours: the refiner's colour statistics at (R, t) (None if none).
    """

    R: np.ndarray
    t: np.ndarray
    cost: float
    covariance: np.ndarray
    num_starts: int
    colours: object = None


def rotation_samples(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3, 3) rotations spread evenly over SO(3).

    The Super-Fibonacci spiral (Alexa, "Super-Fibonacci Spirals: Fast, Low-Discrepancy Sampling
    of SO(3)", CVPR 2022): quaternion i (x, y, z, w) = (r sin a, r cos a, R sin b, R cos b) with
    ``s = i + 1/2``, ``r = sqrt(s / n)``, ``R = sqrt(1 - s / n)``, ``a = 2 pi s / sqrt(2)``,
    ``b = 2 pi s / 1.5337511687552043``; far more even than random draws for the same n (no
    gaps a start cannot converge across). `seed` > 0 turns the whole set by one random rotation
    (another, equally even set); seed 0 is the spiral itself.
    """
    if n < 1:
        raise ShapeError(f"rotation_samples: expected n >= 1, got {n}")
    s = np.arange(n, dtype=np.float64) + 0.5
    r, r_c = np.sqrt(s / n), np.sqrt(1.0 - s / n)
    a, b = 2.0 * np.pi * s / np.sqrt(2.0), 2.0 * np.pi * s / 1.5337511687552043
    q = np.stack([r * np.sin(a), r * np.cos(a), r_c * np.sin(b), r_c * np.cos(b)], axis=-1)
    R = quaternion_to_matrix(torch.from_numpy(q)).numpy()
    if seed:
        turn = np.random.default_rng(seed).normal(size=4)
        R = quaternion_to_matrix(torch.from_numpy(turn)).numpy() @ R
    return R


def outline_points(model: ObjectModel, R: np.ndarray) -> np.ndarray:
    """(N, 3) m object points whose projection spans the object's outline at rotation R.

    A `ContourModel`: the stored contour of the view nearest to R (seen from straight ahead);
    a mesh: its vertices.
    """
    if isinstance(model, ContourModel):
        return model.contour(R, np.array([0.0, 0.0, 1.0])).points_obj
    return mesh_arrays(model)[0].astype(np.float64)


def translation_from_box(R: np.ndarray, points_obj: np.ndarray, K: np.ndarray,
                         box_xywh: Sequence[float]) -> np.ndarray:
    """The translation (3,) m at which the object, turned by R, fills `box_xywh` (image px).

    The outline is projected at a reference distance of 1 m on the optical axis; the distance
    is scaled so that the longer side of its bounding box matches the box's longer side, and
    the object is shifted sideways so that the two boxes' centres coincide (to first order).
    """
    x, y, w, h = (float(v) for v in box_xywh)
    if not (w > 0 and h > 0):
        raise ShapeError(f"box: expected positive width and height, got {box_xywh}")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    cam = points_obj @ R.T + np.array([0.0, 0.0, 1.0])
    z_pts = np.maximum(cam[:, 2], 1e-3)
    u, v = fx * cam[:, 0] / z_pts + cx, fy * cam[:, 1] / z_pts + cy
    w_ref, h_ref = u.max() - u.min(), v.max() - v.min()
    z = max(w_ref, h_ref) / max(w, h)  # m: the reference is at 1 m
    # box centres, image px (x, y index the top-left pixel: its centre is x + w / 2 - 0.5)
    bu, bv = x + w / 2 - 0.5, y + h / 2 - 0.5
    ru, rv = (u.max() + u.min()) / 2, (v.max() + v.min()) / 2
    # an offset o px at 1 m is o / z px at distance z: place the rest of the offset laterally
    tx = ((bu - cx) - (ru - cx) / z) * z / fx
    ty = ((bv - cy) - (rv - cy) / z) * z / fy
    return np.array([tx, ty, z])


def search_pose(image: np.ndarray, camera: CameraModel, model: ObjectModel,
                box_xywh: Sequence[float], settings: SearchSettings = SearchSettings(),  # noqa: B008
                refine: RefineSettings = RefineSettings(),  # noqa: B008
                extra_starts: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> SearchResult:
    """The best refined pose of one object in one detection box (see the module docstring).

    Args:
        image: (H, W, 3) uint8 RGB.
        camera: its intrinsics.
        model: the object's mesh or sparse viewpoint model (`refine.build_contour_model`).
        box_xywh: the detection box (x, y, w, h), image px (x, y: the top-left pixel).
        settings: `SearchSettings`.
        refine: the refiner's settings for the full fits.
        extra_starts: further starting poses (R (3, 3), t (3,) m), e.g. a network's estimate,
            tried alongside the rotation samples.

    Returns:
        `SearchResult` (cost inf, identity pose when no start could be refined).
    """
    K = camera.K.numpy().astype(np.float64)
    rotations = rotation_samples(settings.num_rotations, settings.seed)
    starts_R = list(rotations)
    starts_t = [translation_from_box(R, outline_points(model, R), K, box_xywh)
                for R in rotations]
    for R, t in extra_starts:
        starts_R.append(np.asarray(R, np.float64))
        starts_t.append(np.asarray(t, np.float64))
    R0, t0 = np.stack(starts_R), np.stack(starts_t)
    found = refine_pose(image, camera, model, R0, t0, refine)
    cost = np.where(found.usable(refine.min_lines).numpy(), found.cost.numpy(), np.inf)
    best = int(np.argmin(cost))
    num = len(starts_R)
    if not np.isfinite(cost[best]):
        return SearchResult(np.eye(3), np.array([0.0, 0.0, 1.0]), float("inf"),
                            np.zeros((6, 6)), num)
    # the best start polished by one more fit from where it ended (kept when it costs less)
    again = refine_pose(image, camera, model, found.R[best].numpy(), found.t[best].numpy(),
                        refine)
    if bool(again.usable(refine.min_lines)[0]) and float(again.cost[0]) < cost[best]:
        found, best, cost = again, 0, again.cost.numpy()
    colours = found.colours[best] if found.colours else None
    return SearchResult(found.R[best].numpy().copy(), found.t[best].numpy().copy(),
                        float(cost[best]), found.covariance[best].numpy().copy(), num, colours)

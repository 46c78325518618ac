# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Global pose search in a box (`refine.search`): starts, box fit, and the search itself."""

from __future__ import annotations

import numpy as np
import pytest

from dvc_perception.errors import ConfigError, ShapeError
from dvc_perception.geometry.metrics import add_error
from dvc_perception.refine.search import (
    SearchSettings,
    outline_points,
    rotation_samples,
    search_pose,
    translation_from_box,
)

from .conftest import K, make_frame, silhouette


def _box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(
        ys.max() - ys.min() + 1)


def test_rotation_samples_are_rotations_seeded_and_spread():
    # even: every one of 2000 random rotations is within 35 deg of one of 400 samples (400
    # random draws leave gaps of about 40 deg)
    grid = rotation_samples(400)
    probe = rotation_samples(2000, seed=11)
    cos = (np.einsum("aij,bij->ab", probe, grid) - 1.0) / 2.0
    assert np.degrees(np.arccos(np.clip(cos.max(axis=1), -1.0, 1.0))).max() < 35.0
    R = rotation_samples(500, seed=3)
    assert R.shape == (500, 3, 3)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_array_equal(R, rotation_samples(500, seed=3))
    assert not np.allclose(R, rotation_samples(500, seed=4))
    # uniform over SO(3): the mean of a uniform rotation matrix is 0 (each entry's spread
    # 1/sqrt(3 n) for n samples)
    assert np.abs(R.mean(axis=0)).max() < 4 / np.sqrt(3 * 500)
    with pytest.raises(ShapeError):
        rotation_samples(0)


def test_translation_from_box_places_the_outline_in_the_box(demo_object):
    mesh = demo_object.mesh
    points = outline_points(mesh, np.eye(3))
    rng = np.random.default_rng(0)
    for _ in range(4):
        R = rotation_samples(1, seed=int(rng.integers(1000)))[0]
        t = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.04, 0.04), rng.uniform(0.4, 0.8)])
        box = _box_of(silhouette(mesh, R, t))
        t_est = translation_from_box(R, outline_points(mesh, R), K, box)
        # first order: the outline's points lie up to the radius r nearer or farther than the
        # centre, so their spread in the image is off by at most r / (z - r) relative; the box
        # is quantised to whole pixels. Sideways: millimetres
        r = float(np.linalg.norm(mesh.vertices.numpy(), axis=1).max())
        assert abs(t_est[2] - t[2]) < r / (t[2] - r) * t[2], (t_est, t)
        assert np.abs(t_est[:2] - t[:2]).max() < 0.004, (t_est, t)
        # and the outline at t_est fills the box: same centre, same longer side
        est_box = _box_of(silhouette(mesh, R, t_est))
        centre = np.array(box[:2]) + np.array(box[2:]) / 2
        est_centre = np.array(est_box[:2]) + np.array(est_box[2:]) / 2
        assert np.abs(est_centre - centre).max() <= 3, (est_box, box)
        assert max(est_box[2:]) == pytest.approx(max(box[2:]), rel=r / (t[2] - r))
    assert points.shape[1] == 3
    with pytest.raises(ShapeError):
        translation_from_box(np.eye(3), points, K, (10, 10, 0, 5))


@pytest.mark.slow
def test_search_finds_the_pose_from_the_box_alone(demo_object, demo_model):
    """No starting pose: the box of the object's silhouette and the mesh find it (ADD)."""
    d = demo_object.diameter_m
    points = demo_object.mesh.vertices.numpy()
    errors = []
    for seed in range(3):
        frame = make_frame(demo_object.mesh, seed, occluder=False)
        found = search_pose(frame.image, frame.camera, demo_model, _box_of(frame.mask),
                            SearchSettings(num_rotations=400))
        assert found.num_starts == 400 and np.isfinite(found.cost)
        errors.append(float(add_error(found.R, found.t, frame.R, frame.t, points)) / d)
    assert max(errors) < 0.1, errors


def test_extra_starts_are_tried(demo_object, demo_model):
    frame = make_frame(demo_object.mesh, 1, occluder=False)
    box = _box_of(frame.mask)
    # one start at the truth among a few poor ones: it wins
    found = search_pose(frame.image, frame.camera, demo_model, box,
                        SearchSettings(num_rotations=4), extra_starts=[(frame.R, frame.t)])
    assert found.num_starts == 5 and found.cost < 0.35
    d = demo_object.diameter_m
    points = demo_object.mesh.vertices.numpy()
    assert float(add_error(found.R, found.t, frame.R, frame.t, points)) < 0.05 * d


def test_threads_give_the_same_search(demo_object, demo_model):
    """Each start is refined alone: 3 threads give the serial search's result, bit for bit."""
    from dvc_perception.refine import RefineSettings

    frame = make_frame(demo_object.mesh, 2, occluder=True)
    box = _box_of(frame.mask)
    serial = search_pose(frame.image, frame.camera, demo_model, box,
                         SearchSettings(num_rotations=24), RefineSettings(threads=1))
    threaded = search_pose(frame.image, frame.camera, demo_model, box,
                           SearchSettings(num_rotations=24), RefineSettings(threads=3))
    np.testing.assert_array_equal(threaded.R, serial.R)
    np.testing.assert_array_equal(threaded.t, serial.t)
    assert threaded.cost == serial.cost and np.isfinite(serial.cost)
    np.testing.assert_array_equal(threaded.covariance, serial.covariance)
    with pytest.raises(ConfigError, match="threads"):
        RefineSettings(threads=0)


def test_settings_are_checked():
    with pytest.raises(ConfigError):
        SearchSettings(num_rotations=0)

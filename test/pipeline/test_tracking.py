# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""``pipeline.tracking``: the track state machine alone, then the pipeline on rendered sequences.

Sequences are hard renders of the textured demo object over a smooth random background with
per-frame noise (`tracking_scene`), the object moving a little per frame. The keypoint source
stands in for a network: it projects the object's 3D keypoints at the true pose perturbed by a
few degrees and millimetres (so PnP returns a roughly right pose), and finds nothing where the
object is not in the image; it counts its calls.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dvc_perception.config import PipelineConfig
from dvc_perception.errors import ConfigError
from dvc_perception.geometry.metrics import add_error
from dvc_perception.pipeline.pipeline import ObjectPose, Pipeline, refine_settings
from dvc_perception.pipeline.sources import KeypointDetection
from dvc_perception.pipeline.tracking import Tracker
from dvc_perception.refine import ColourStatistics, refine_pose

pytest.importorskip("numba")


def _pose(t_x: float, cost: float | None, object_id: str = "a", track_id=None) -> ObjectPose:
    return ObjectPose(object_id, np.eye(3), np.array([t_x, 0.0, 0.5]), 0.9, np.eye(6),
                      np.zeros((0, 2)), 0, refine_cost=cost, track_id=track_id)


# ---------------------------------------------------------------------------- state machine
def test_tracker_schedule_start_follow_reinitialise_lose():
    tracker = Tracker({"a": 0.1})
    tracker.begin_frame(0.0)
    assert tracker.detection_due([], 3, 0.6, 0.5)  # nothing tracked: detect
    poses, lost = tracker.update([], [_pose(0.0, 0.3)], 0.6, 0.5)
    assert [p.track_id for p in poses] == [0] and not lost
    assert [s.track_id for s in tracker.starts()] == [0]
    due = []
    for k in range(1, 7):  # following well: detection on every 3rd frame only
        tracker.begin_frame(float(k))
        followed = [_pose(0.001 * k, 0.3, track_id=0)]
        due.append(tracker.detection_due(followed, 3, 0.6, 0.5))
        detected = [_pose(0.001 * k + 0.02, 0.35)] if due[-1] else None
        poses, lost = tracker.update(followed, detected, 0.6, 0.5)
        # a following track keeps its own pose; a worse detection of its object is absorbed
        assert len(poses) == 1 and poses[0].t[0] == pytest.approx(0.001 * k) and not lost
    assert due == [False, False, True, False, False, True]
    # a detection that aligns better than the (still acceptable) track pose corrects it
    poses, _ = tracker.update([_pose(0.006, 0.3, track_id=0)], [_pose(0.01, 0.2)], 0.6, 0.5)
    assert [(p.track_id, p.t[0]) for p in poses] == [(0, 0.01)]
    tracker.begin_frame(7.0)
    bad = [_pose(0.007, 0.9, track_id=0)]  # cost above max_cost: re-initialise now
    assert tracker.detection_due(bad, 3, 0.6, 0.5)
    poses, lost = tracker.update(bad, [_pose(0.03, 0.25)], 0.6, 0.5)
    assert [(p.track_id, p.t[0]) for p in poses] == [(0, 0.03)] and not lost
    tracker.begin_frame(8.0)
    poses, lost = tracker.update([None], [], 0.6, 0.5)  # unusable and nothing detected: lost
    assert poses == [] and [(x.track_id, x.t[0]) for x in lost] == [(0, 0.03)]
    assert "unusable" in lost[0].reason and tracker.starts() == []


def test_tracker_detection_outside_the_gate_starts_a_new_track_and_stamps_back_reset():
    tracker = Tracker({"a": 0.1, "b": 0.1})
    tracker.begin_frame(0.0)
    tracker.update([], [_pose(0.0, 0.3), _pose(0.0, 0.3, "b"), _pose(0.5, 0.9)], 0.6, 0.5)
    assert [(s.object_id, s.track_id) for s in tracker.starts()] == [("a", 0), ("b", 1)]
    tracker.begin_frame(1.0)
    poses, lost = tracker.update([_pose(0.0, 0.9, track_id=0), _pose(0.0, 0.3, "b", 1)],
                                 [_pose(0.3, 0.3)], 0.6, 0.5)
    assert [x.reason for x in lost] == ["cost 0.900 > max_cost 0.6"]  # 0.3 m: not its object
    assert sorted((p.object_id, p.track_id) for p in poses) == [("a", 2), ("b", 1)]
    tracker.begin_frame(0.5)  # a bag played again
    assert tracker.starts() == [] and tracker.frames_since_detection is None


def _colours(k: int) -> ColourStatistics:
    return ColourStatistics(np.full(8, float(k)), np.full(8, float(k) + 0.5))


def test_tracker_keeps_colours_while_following_and_drops_them_on_reinitialisation():
    tracker = Tracker({"a": 0.1, "b": 0.1})
    tracker.begin_frame(0.0)
    tracker.update([], [_pose(0.0, 0.3), _pose(0.05, 0.3, "b")], 0.6, 0.5)
    assert tracker.colour_priors() == [None, None]  # new tracks: none yet
    c1, c2, c3 = _colours(1), _colours(2), _colours(3)
    tracker.begin_frame(1.0)
    tracker.update([_pose(0.0, 0.3, track_id=0), _pose(0.05, 0.3, "b", 1)], None, 0.6, 0.5,
                   [c1, c2])
    assert tracker.colour_priors() == [c1, c2]  # both followed: kept, in starts' order
    tracker.begin_frame(2.0)  # "a" fails and is re-initialised; "b" is corrected by a better
    poses, lost = tracker.update(  # detection: both restart; a worse detection is absorbed
        [_pose(0.0, 0.9, track_id=0), _pose(0.05, 0.3, "b", 1)],
        [_pose(0.01, 0.3), _pose(0.06, 0.2, "b")], 0.6, 0.5, [c3, c3])
    assert [p.track_id for p in poses] == [0, 1] and not lost
    assert tracker.colour_priors() == [None, None]
    tracker.begin_frame(3.0)
    tracker.update([_pose(0.01, 0.3, track_id=0), _pose(0.06, 0.3, "b", 1)],
                   [_pose(0.011, 0.35), _pose(0.061, 0.35, "b")], 0.6, 0.5, [c1, c2])
    assert tracker.colour_priors() == [c1, c2]  # followed through a detection frame: kept
    tracker.begin_frame(4.0)  # "a" lost, "b" followed without statistics (refiner had none)
    poses, lost = tracker.update([None, _pose(0.06, 0.3, "b", 1)], [], 0.6, 0.5, [c3, None])
    assert [x.track_id for x in lost] == [0] and tracker.colour_priors() == [None]
    with pytest.raises(ValueError, match="colour statistics"):
        tracker.update([_pose(0.06, 0.3, "b", 1)], None, 0.6, 0.5, [c1, c2])
    tracker.update([_pose(0.06, 0.3, "b", 1)], None, 0.6, 0.5, [c1])
    tracker.begin_frame(0.5)  # stamps back: reset, statistics go with the tracks
    assert tracker.colour_priors() == []


def test_tracking_needs_refinement():
    with pytest.raises(ConfigError, match="needs pipeline.refine.enabled"):
        PipelineConfig.from_mapping({"tracking": {"enabled": True}})


# ---------------------------------------------------------------------------- on renders
class NoisyDetector:
    """Keypoints of the object at its true pose perturbed by 4 deg / 4 mm; none when absent."""

    backend = "test:noisy-detector"
    object_ids = ("demo_object",)

    def __init__(self, scene) -> None:
        self.scene = scene
        self.truth: tuple[np.ndarray, np.ndarray] | None = None  # set per frame by the test
        self.calls = 0
        self.rng = np.random.default_rng(5)

    def detect(self, image_rgb: np.ndarray) -> list[KeypointDetection]:
        self.calls += 1
        if self.truth is None:
            return []
        R, t = self.truth
        a, u = self.rng.normal(size=3), self.rng.normal(size=3)
        R = Rotation.from_rotvec(np.radians(4.0) * a / np.linalg.norm(a)).as_matrix() @ R
        t = t + 0.004 * u / np.linalg.norm(u)
        pts = self.scene.keypoints_obj
        uv = (pts @ R.T + t) @ self.scene.K.T
        uv = uv[:, :2] / uv[:, 2:]
        return [KeypointDetection("demo_object", uv, pts.copy(), np.ones(len(pts)))]


def _pipeline(scene, detect_every: int) -> tuple[Pipeline, NoisyDetector]:
    config = PipelineConfig.from_mapping({
        "refine": {"enabled": True},
        "tracking": {"enabled": True, "detect_every": detect_every},
    })
    source = NoisyDetector(scene)
    return Pipeline(config, source, refine_models={"demo_object": scene.mesh}), source


def _path(k: int) -> tuple[np.ndarray, np.ndarray]:
    """The object's true pose at frame k: 3 mm and 1.5 deg per frame."""
    R = Rotation.from_rotvec([0.5, -1.0 + np.radians(1.5) * k, 0.3]).as_matrix()
    return R, np.array([-0.03 + 0.003 * k, 0.01, 0.45])


def test_tracker_follows_a_moving_object_detecting_every_fifth_frame(tracking_scene):
    pipeline, source = _pipeline(tracking_scene, 5)
    pts = tracking_scene.mesh.vertices.double().numpy()
    errors, track_ids = [], set()
    for k in range(15):
        source.truth = R, t = _path(k)
        result = pipeline.process(tracking_scene.render(R, t, seed=k), tracking_scene.camera,
                                  0.1 * k)
        (pose,) = result.poses
        assert not result.lost
        track_ids.add(pose.track_id)
        errors.append(float(add_error(pose.R, pose.t, R, t, pts)))
    assert source.calls == 3  # frames 0, 5, 10: the tracks never failed
    assert track_ids == {0}
    assert max(errors) < 0.1 * tracking_scene.diameter_m, errors


def test_pipeline_passes_each_tracks_colours_to_the_next_refinement(tracking_scene):
    pipeline, source = _pipeline(tracking_scene, 5)
    rate = pipeline.config.tracking.colour_learning_rate
    settings = dataclasses.replace(refine_settings(pipeline.config.refine),
                                   colour_learning_rate=rate)
    mesh, cam = tracking_scene.mesh, tracking_scene.camera
    previous = None
    for k in range(3):
        source.truth = R, t = _path(k)
        image = tracking_scene.render(R, t, seed=k)
        start = pipeline.tracker.starts()
        prior = pipeline.tracker.colour_priors()
        (pose,) = pipeline.process(image, cam, 0.1 * k).poses
        (stored,) = pipeline.tracker.colour_priors()
        if k == 0:  # detected: the new track has no statistics yet
            assert start == [] and stored is None
            continue
        # the same refinement by hand, with the prior the tracker held
        want = refine_pose(image, cam, mesh, start[0].R, start[0].t, settings,
                           colour_priors=prior)
        np.testing.assert_array_equal(pose.R, want.R[0].numpy())
        np.testing.assert_array_equal(stored.foreground, want.colours[0].foreground)
        assert (prior[0] is None) == (k == 1)
        if previous is not None:  # blended into the previous frame's at the learning rate
            assert np.abs(stored.foreground - previous.foreground).max() > 0
            assert (stored.foreground >= (1 - rate) * previous.foreground - 1e-15).all()
        previous = stored


def test_track_is_lost_when_the_object_is_replaced_by_background(tracking_scene):
    pipeline, source = _pipeline(tracking_scene, 5)
    lost, reported = [], []
    for k in range(9):
        R, t = _path(k)
        source.truth = (R, t) if k < 5 else None
        image = tracking_scene.render(R, t, seed=k, visible=k < 5)
        result = pipeline.process(image, tracking_scene.camera, 0.1 * k)
        lost += [(k, x.track_id) for x in result.lost]
        reported.append(len(result.poses))
    assert reported == [1] * 5 + [0] * 4  # no stale pose reported as current
    assert lost == [(5, 0)]


def test_track_is_lost_when_the_object_leaves_the_image(tracking_scene):
    pipeline, source = _pipeline(tracking_scene, 5)
    lost, reported, centre_u = [], [], []
    for k in range(12):  # from u ~ 540 px, 1.2 cm (~15 px) per frame to the right from frame 2
        R, t = _path(k)
        t = t + np.array([0.20 + 0.012 * max(k - 2, 0), 0.0, 0.0])
        u = float(tracking_scene.K[0, 0] * t[0] / t[2] + tracking_scene.K[0, 2])
        centre_u.append(u)
        source.truth = (R, t) if u < 640 else None  # the detector needs the centre in view
        result = pipeline.process(tracking_scene.render(R, t, seed=k), tracking_scene.camera,
                                  0.1 * k)
        lost += [k for _ in result.lost]
        reported.append(len(result.poses))
    out = [k for k, u in enumerate(centre_u) if u > 640 + 60]  # the whole object is out
    assert reported[:3] == [1, 1, 1] and out and all(reported[k] == 0 for k in out)
    assert len(lost) == 1 and lost[0] <= out[0], (lost, out)


class BoxOfTruth:
    """A detector stand-in: the box of the object's projected vertices at the true pose."""

    backend = "test:box-of-truth"
    object_ids = ("demo_object",)

    def __init__(self, scene) -> None:
        self.scene = scene
        self.truth: tuple[np.ndarray, np.ndarray] | None = None  # set per frame by the test
        self.calls = 0

    def detect_boxes(self, image_rgb: np.ndarray) -> list:
        from dvc_perception.pipeline.detection import BoxDetection

        self.calls += 1
        R, t = self.truth
        uv = (self.scene.mesh.vertices.double().numpy() @ R.T + t) @ self.scene.K.T
        uv = uv[:, :2] / uv[:, 2:]
        x0, y0 = np.floor(uv.min(axis=0) + 0.5)
        x1, y1 = np.floor(uv.max(axis=0) + 0.5)
        return [BoxDetection(0, 0.9, (float(x0), float(y0), float(x1 - x0 + 1),
                                      float(y1 - y0 + 1)))]

    def detect(self, image_rgb: np.ndarray) -> list[KeypointDetection]:
        raise AssertionError("with pipeline.search the keypoint stage must not run")


@pytest.mark.slow
def test_search_acquires_and_tracking_follows(tracking_scene):
    """Search from the box on detection frames (0 and 3), tracking in between (the mesh only)."""
    config = PipelineConfig.from_mapping({
        "refine": {"enabled": True}, "search": {"enabled": True, "num_rotations": 400},
        "tracking": {"enabled": True, "detect_every": 3},
    })
    source = BoxOfTruth(tracking_scene)
    pipeline = Pipeline(config, source, refine_models={"demo_object": tracking_scene.mesh})
    pts = tracking_scene.mesh.vertices.double().numpy()
    errors = []
    for k in range(5):
        source.truth = R, t = _path(k)
        result = pipeline.process(tracking_scene.render(R, t, seed=k), tracking_scene.camera,
                                  0.1 * k)
        (pose,) = result.poses
        assert pose.track_id == 0 and not result.lost
        errors.append(float(add_error(pose.R, pose.t, R, t, pts)))
    assert source.calls == 2  # frames 0 and 3
    assert max(errors) < 0.1 * tracking_scene.diameter_m, errors

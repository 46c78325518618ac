# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""``depth_source: multiview`` in the pipeline: settings map, camera pose buffer, depth status.

Depth is checked on an exact synthetic sequence (`planar_sequence`: a textured plane at 1.5 m,
a camera sliding sideways 4 cm per frame); pose interpolation against scipy's Slerp.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from dvc_perception.config import MultiviewConfig, PipelineConfig
from dvc_perception.errors import ConfigError, InputError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.pipeline.multiview import (
    CameraPoseBuffer,
    MultiviewDepth,
    PoseUnavailable,
    motion_depth_settings,
    pose_from_xyz_quaternion,
)
from dvc_perception.pipeline.pipeline import Pipeline, make_keypoint_source

STEP_M = 0.04
#: Sweep settings for the 1.5 m plane at 160x120 (inverse-depth planes 0.037 /m apart: one
#: plane step is 5.6 % of the depth at 1.5 m; the winner is interpolated between planes);
#: sources at least 5 cm away (8 cm: 10.7 px of disparity).
SMALL = {"internal_width": 160, "min_depth_m": 0.5, "max_depth_m": 4.0, "planes": 48,
         "min_baseline_m": 0.05}
#: Disparity error allowed for a frame's median depth [px]: depth error / depth = this over the
#: disparity f b / Z of the frame's longest baseline b.
DISPARITY_TOL_PX = 0.25


def _depth_tolerance(seq, baseline_m: float) -> float:
    """Relative depth error of `DISPARITY_TOL_PX` at `baseline_m` for the plane."""
    return DISPARITY_TOL_PX / (seq.K[0, 0] * baseline_m / seq.Z)


def _pipeline(**multiview) -> Pipeline:
    return Pipeline.from_config({"depth_source": "multiview", "multiview": {**SMALL, **multiview}})


def _camera(seq, size=None) -> CameraModel:
    size = size or (seq.W, seq.H)
    return CameraModel(seq.K_for(size), [], *size)


def _check_confidence(confidence, depth) -> None:
    """The depth's confidence: its shape, float32, in [0, 1] where the depth is finite, NaN
    where it is not."""
    assert confidence is not None
    assert confidence.shape == depth.shape and confidence.dtype == np.float32
    known = np.isfinite(depth)
    assert np.all((confidence[known] >= 0.0) & (confidence[known] <= 1.0))
    assert np.isnan(confidence[~known]).all()
    assert known.any() and confidence[known].mean() > 0.0


def test_motion_depth_settings_maps_every_knob():
    config = MultiviewConfig(internal_width=200, min_confidence=0.35, min_depth_m=0.4,
                             max_depth_m=9.0, planes=33, max_sources=2, min_baseline_m=0.05,
                             min_parallax_px=5.0, refine_poses=False)
    s = motion_depth_settings(config)
    assert (s.internal_width, s.min_confidence) == (200, 0.35)
    assert (s.sweep.min_depth_m, s.sweep.max_depth_m, s.sweep.planes) == (0.4, 9.0, 33)
    assert (s.keyframes.max_sources, s.keyframes.min_baseline_m) == (2, 0.05)
    assert s.pose_refine.enabled is False and s.min_parallax_px == 5.0


@pytest.mark.parametrize("values, expected", [
    ({"camera_extrinsic": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]}, "unit quaternion"),
    ({"camera_extrinsic": [0.0, 0.0, 1.0]}, "list of 7 numbers"),
    ({"camera_extrinsic": [0.0, 0.0, 0.0, 0.0, 0.0, float("nan"), 1.0]}, "finite"),
    ({"min_depth_m": 5.0, "max_depth_m": 4.0}, "more than min_depth_m"),
    ({"pose_topic": "camera pose"}, "ROS topic name"),
    ({"pose_type": "odometry"}, "pose_stamped"),
    ({"world_frame": ""}, "TF frame name"),
    ({"fallback": "mono"}, "one of"),
])
def test_multiview_config_refuses_bad_values(values, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        PipelineConfig.from_mapping({"multiview": values})
    assert "pipeline.multiview." in str(info.value)


def test_network_fallback_needs_the_depth_model():
    with pytest.raises(ConfigError, match="pipeline.multiview.fallback 'network' needs "
                                          "pipeline.network.depth_model_path"):
        _pipeline(fallback="network")


def test_a_missing_refiner_model_fails_the_pipeline_naming_the_file(tmp_path: Path):
    missing = tmp_path / "no_refiner.onnx"
    with pytest.raises(ConfigError, match="no_refiner.onnx"):
        _pipeline(refiner_model=str(missing))


def test_extrinsic_quaternion_is_read_in_ros_order():
    q = Rotation.from_euler("xyz", [10.0, -20.0, 30.0], degrees=True).as_quat()  # x, y, z, w
    T = pose_from_xyz_quaternion((1.0, 2.0, 3.0, *q))
    np.testing.assert_allclose(T[:3, :3], Rotation.from_quat(q).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="non-zero quaternion"):
        pose_from_xyz_quaternion((0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=rng).as_matrix()
    T[:3, 3] = rng.uniform(-2.0, 2.0, 3)
    return T


def test_pose_buffer_interpolates_like_slerp():
    rng = np.random.default_rng(4)
    stamps = [0, 40_000_000, 50_000_000, 90_000_000]
    poses = [_random_pose(rng) for _ in stamps]
    buffer = CameraPoseBuffer()
    for k in (2, 0, 3, 1):  # arrival order does not matter
        buffer.add(stamps[k], poses[k])
    slerp = Slerp(np.array(stamps, float), Rotation.from_matrix([T[:3, :3] for T in poses]))
    for stamp in (0, 13_000_000, 40_000_000, 47_500_000, 89_999_999):
        T = buffer.lookup(stamp, max_gap_s=0.05)
        k = max(i for i, s in enumerate(stamps) if s <= stamp)
        k1 = min(k + 1, len(stamps) - 1)
        a = 0.0 if k1 == k else (stamp - stamps[k]) / (stamps[k1] - stamps[k])
        t_ref = (1 - a) * poses[k][:3, 3] + a * poses[k1][:3, 3]
        np.testing.assert_allclose(T[:3, :3], slerp([float(stamp)]).as_matrix()[0], atol=1e-9)
        np.testing.assert_allclose(T[:3, 3], t_ref, atol=1e-12)


def test_pose_buffer_refuses_gaps_stamps_outside_and_bad_poses():
    buffer = CameraPoseBuffer()
    with pytest.raises(PoseUnavailable, match="no pose received"):
        buffer.lookup(5, max_gap_s=1.0)
    buffer.add(1_000_000_000, np.eye(4))
    buffer.add(1_300_000_000, np.eye(4))
    with pytest.raises(PoseUnavailable, match=r"0\.300 s apart, more than pipeline.multiview"
                                              r"\.max_pose_gap_s \(0\.1 s\)"):
        buffer.lookup(1_100_000_000, max_gap_s=0.1)
    np.testing.assert_allclose(buffer.lookup(1_100_000_000, max_gap_s=0.3), np.eye(4))
    with pytest.raises(PoseUnavailable, match="before the oldest"):
        buffer.lookup(999_000_000, max_gap_s=1.0)
    with pytest.raises(PoseUnavailable, match=r"after the newest \(waited 0 s\)"):
        buffer.lookup(1_400_000_000, max_gap_s=1.0)
    nan = np.eye(4)
    nan[1, 3] = np.nan
    with pytest.raises(InputError, match="finite"):
        buffer.add(1_200_000_000, nan)
    skew = np.eye(4)
    skew[0, 1] = 0.2
    with pytest.raises(InputError, match="rotation"):
        buffer.add(1_200_000_000, skew)
    assert len(buffer) == 2  # neither was stored


def test_pose_buffer_waits_for_a_late_pose_and_forgets_old_ones():
    buffer = CameraPoseBuffer(max_age_s=1.0)
    buffer.add(0, np.eye(4))
    late = np.eye(4)
    late[0, 3] = 0.1
    timer = threading.Timer(0.2, buffer.add, (100_000_000, late))
    timer.start()
    t0 = time.monotonic()
    T = buffer.lookup(50_000_000, max_gap_s=0.5, timeout_s=5.0)
    timer.join()
    assert 0.1 < time.monotonic() - t0 < 4.0
    assert T[0, 3] == pytest.approx(0.05)
    buffer.add(2_000_000_000, np.eye(4))  # 1.9 s after the others: they age out
    assert len(buffer) == 1


def test_plane_depth_from_a_sliding_camera(planar_sequence):
    seq = planar_sequence
    pipeline = _pipeline()
    assert isinstance(pipeline.depth_source, MultiviewDepth)
    statuses, medians, density = [], [], []
    for k in range(7):
        x = STEP_M * k
        r = pipeline.process(seq.render(x), _camera(seq), 1.0 + k / 30,
                             camera_to_world=seq.pose(x))
        statuses.append(r.depth_status)
        assert r.poses == [] and r.timings["depth_ms"] > 0.0
        if r.depth is not None:
            assert r.depth.shape == (seq.H, seq.W) and r.depth.dtype == np.float32
            _check_confidence(r.depth_confidence, r.depth)
            medians.append(float(np.nanmedian(r.depth)))
            density.append(float(np.isfinite(r.depth).mean()))
        else:
            assert r.depth_confidence is None
    # frame 1 is 4 cm from frame 0, under min_baseline_m 5 cm: no source yet
    assert statuses[:2] == ["first_frame", "no_motion"] and set(statuses[2:]) == {"ok"}
    errors = [abs(m / seq.Z - 1.0) for m in medians]
    # frame 2 has one source, 8 cm away; from frame 3 on one is 12 cm away
    assert errors[0] < _depth_tolerance(seq, 0.08), medians
    assert max(errors[1:]) < _depth_tolerance(seq, 0.12), medians
    assert abs(np.median(medians) / seq.Z - 1.0) < 0.03, medians
    assert min(density) > 0.8, density


def test_static_camera_no_pose_and_bad_pose_give_no_depth(planar_sequence):
    seq = planar_sequence
    pipeline = _pipeline()
    camera, image = _camera(seq), seq.render(0.0)
    found = [pipeline.process(image, camera, 1.0 + k / 30, camera_to_world=seq.pose(0.0))
             for k in range(4)]
    assert [r.depth_status for r in found] == ["first_frame"] + ["no_motion"] * 3
    assert all(r.depth is None and r.depth_confidence is None and not r.depth_fallback
               for r in found)
    r = pipeline.process(image, camera, 2.0)  # no camera_to_world
    assert (r.depth_status, r.depth) == ("no_pose", None)
    nan = seq.pose(0.1)
    nan[2, 3] = np.nan
    r = pipeline.process(image, camera, 2.1, camera_to_world=nan)
    assert (r.depth_status, r.depth) == ("bad_pose", None)
    scaled = seq.pose(0.1) * 2.0  # not a rigid transform
    scaled[3, 3] = 1.0
    assert pipeline.process(image, camera, 2.2, camera_to_world=scaled).depth_status == \
        "bad_pose"


def test_odometry_that_moves_while_the_image_stands_still_gives_no_depth(planar_sequence):
    """The odometry slides 4 cm per frame but the image does not change: sources by the
    odometry's rule, no parallax in the images: no_motion, and the detail says so."""
    seq = planar_sequence
    pipeline = _pipeline()
    camera, image = _camera(seq), seq.render(0.0)
    found = [pipeline.process(image, camera, 1.0 + k / 30, camera_to_world=seq.pose(STEP_M * k))
             for k in range(4)]
    assert [r.depth_status for r in found] == ["first_frame"] + ["no_motion"] * 3
    assert all(r.depth is None for r in found)
    assert "parallax" in found[-1].depth_detail and "min_parallax_px" in found[-1].depth_detail
    assert "8.0 cm" in found[-1].depth_detail  # the nearest source 5 cm or more away: frame 1


def test_a_new_image_size_starts_a_new_window(planar_sequence):
    seq = planar_sequence
    pipeline = _pipeline()
    for k in range(3):
        r = pipeline.process(seq.render(STEP_M * k), _camera(seq), 1.0 + k / 30,
                             camera_to_world=seq.pose(STEP_M * k))
    assert r.depth_status == "ok"
    small = (128, 96)
    statuses = []
    for k in range(3, 7):
        x = STEP_M * k
        r = pipeline.process(seq.render(x, small), _camera(seq, small), 1.0 + k / 30,
                             camera_to_world=seq.pose(x))
        statuses.append(r.depth_status)
    assert statuses == ["first_frame", "no_motion", "ok", "ok"]
    assert r.depth.shape == (96, 128)
    assert abs(np.nanmedian(r.depth) / seq.Z - 1.0) < _depth_tolerance(seq, 0.12) * 160 / 128


def test_deferred_depth_and_a_live_settings_change(planar_sequence):
    seq = planar_sequence
    pipeline = _pipeline()
    camera = _camera(seq)
    for k in range(3):
        x = STEP_M * k
        r = pipeline.process(seq.render(x), camera, 1.0 + k / 30, with_depth=False)
        assert (r.depth_status, r.depth) == ("deferred", None)
        found = pipeline.estimate_depth(seq.render(x), camera, 1.0 + k / 30, seq.pose(x))
    assert found.status == "ok" and found.ms > 0.0
    _check_confidence(found.confidence, found.depth)
    # a live change of an estimator setting (the node assigns pipeline.config) starts anew
    pipeline.config = dataclasses.replace(
        pipeline.config, multiview=dataclasses.replace(pipeline.config.multiview, planes=40))
    x = STEP_M * 3
    assert pipeline.estimate_depth(seq.render(x), camera, 1.1, seq.pose(x)).status == \
        "first_frame"


def test_network_fallback_fills_frames_without_motion(planar_sequence):
    model = Path(__file__).resolve().parents[2] / "models" / "depth.onnx"
    if not model.is_file():
        pytest.skip(f"{model} is absent")
    seq = planar_sequence
    pipeline = Pipeline.from_config({
        "depth_source": "multiview", "multiview": {**SMALL, "fallback": "network"},
        "network": {"depth_model_path": str(model)}})
    camera = _camera(seq)
    first = pipeline.process(seq.render(0.0), camera, 1.0, camera_to_world=seq.pose(0.0))
    no_pose = pipeline.process(seq.render(0.0), camera, 1.1)
    for r, status in ((first, "first_frame"), (no_pose, "no_pose")):
        assert (r.depth_status, r.depth_fallback) == (status, True)
        assert r.depth.shape == (seq.H, seq.W) and np.isfinite(r.depth).any()
        assert r.depth_confidence is None  # the network gives no confidence
    for k in (1, 2):
        x = 2 * STEP_M * k
        r = pipeline.process(seq.render(x), camera, 1.1 + k / 30, camera_to_world=seq.pose(x))
    assert (r.depth_status, r.depth_fallback) == ("ok", False)
    assert abs(np.nanmedian(r.depth) / seq.Z - 1.0) < _depth_tolerance(seq, 0.08)
    _check_confidence(r.depth_confidence, r.depth)


def test_a_single_image_depth_source_has_no_confidence(planar_sequence):
    class Plane:
        backend = "test:plane"

        def estimate(self, image_rgb, K):
            return np.full(image_rgb.shape[:2], 2.0, np.float32)

    seq = planar_sequence
    config = PipelineConfig.from_mapping({})
    pipeline = Pipeline(config, make_keypoint_source(config), Plane())
    r = pipeline.process(seq.render(0.0), _camera(seq), 1.0)
    assert r.depth_status == "ok" and r.depth.shape == (seq.H, seq.W)
    assert r.depth_confidence is None

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`keyframes`: the source-frame rule, the window's age and pose-jump resets, `check_pose`."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dvc_perception.errors import ConfigError, InputError, ShapeError
from dvc_perception.motion_depth.keyframes import (
    Frame,
    KeyframeRule,
    KeyframeWindow,
    check_pose,
    relative_pose,
    smoothed_centres,
)

GREY = np.zeros((6, 8), np.float32)
#: Camera centres 1 cm apart along x [m].
XS = [0.01 * k for k in range(31)]


def _frame(stamp: float, x: float, yaw_deg: float = 0.0, y: float = 0.0) -> Frame:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.radians([0.0, yaw_deg, 0.0]))[0]
    T[:3, 3] = [x, y, 0.0]
    return Frame(stamp, GREY, T)


def _window(rule: KeyframeRule, xs: list[float]) -> KeyframeWindow:
    window = KeyframeWindow(rule)
    for k, x in enumerate(xs):
        window.add(_frame(0.1 * k, x))
    return window


def _baselines(ref: Frame, chosen: list[Frame]) -> list[float]:
    return [round(float(np.linalg.norm(f.camera_to_world[:3, 3] - ref.camera_to_world[:3, 3])), 6)
            for f in chosen]


def test_sources_spread_over_growing_baselines():
    # Stored frames every 1 cm up to the reference at 30 cm. Walking back from the newest:
    # 1 and 2 cm are under min_baseline_m (2.5 cm); 3 cm is taken; the next must be at least
    # 1.45 x 3 = 4.35 cm: 5 cm; then >= 7.25: 8; >= 11.6: 12; >= 17.4: 18; >= 26.1: 27 cm.
    rule = KeyframeRule(min_baseline_m=0.025, baseline_growth=1.45, max_sources=8)
    window = _window(rule, XS)
    ref = window.frames[-1]
    assert _baselines(ref, window.select_sources(ref)) == [0.03, 0.05, 0.08, 0.12, 0.18, 0.27]
    # growth 1: every frame from min_baseline_m on, nearest first, up to max_sources
    rule = KeyframeRule(min_baseline_m=0.025, baseline_growth=1.0, max_sources=4)
    window = _window(rule, XS)
    ref = window.frames[-1]
    assert _baselines(ref, window.select_sources(ref)) == [0.03, 0.04, 0.05, 0.06]


def test_sources_stop_at_max_sources_and_max_baseline():
    rule = KeyframeRule(min_baseline_m=0.025, baseline_growth=1.45, max_sources=2)
    window = _window(rule, XS)
    assert _baselines(window.frames[-1], window.select_sources(window.frames[-1])) == \
        [0.03, 0.05]
    rule = KeyframeRule(min_baseline_m=0.025, max_baseline_m=0.1, baseline_growth=1.45)
    window = _window(rule, XS)
    assert _baselines(window.frames[-1], window.select_sources(window.frames[-1])) == \
        [0.03, 0.05, 0.08]  # 12 cm is beyond max_baseline_m


def test_sources_skip_frames_turned_too_far():
    rule = KeyframeRule(min_baseline_m=0.03, baseline_growth=1.0, max_rotation_deg=30.0)
    window = KeyframeWindow(rule)
    for k, (x, yaw) in enumerate([(0.0, 20.0), (0.05, 40.0), (0.10, -29.0), (0.15, 0.0)]):
        window.add(_frame(0.1 * k, x, yaw_deg=yaw))
    ref = window.frames[-1]
    # 40 deg from the reference's viewing direction: skipped; 29 and 20 deg: taken.
    assert _baselines(ref, window.select_sources(ref)) == [0.05, 0.15]


def test_no_source_without_motion():
    rule = KeyframeRule(min_baseline_m=0.03)
    window = KeyframeWindow(rule)
    for k in range(5):  # a camera turning in place
        window.add(_frame(0.1 * k, 0.0, yaw_deg=2.0 * k))
    assert window.select_sources(window.frames[-1]) == []
    assert len(window.frames) == 5


def test_frames_older_than_max_age_are_dropped():
    window = KeyframeWindow(KeyframeRule(max_age_s=1.0))
    for stamp in (0.0, 0.5, 0.9, 1.2, 1.6):
        window.add(_frame(stamp, 0.01 * stamp))
    # 1.6 s: frames more than 1 s older (0.0, 0.5) are gone; 0.9 (0.7 s older) stays.
    assert [f.stamp for f in window.frames] == [0.9, 1.2, 1.6]
    window = KeyframeWindow(KeyframeRule(max_frames=3))
    for k in range(5):
        window.add(_frame(0.1 * k, 0.01 * k))
    assert [f.stamp for f in window.frames] == pytest.approx([0.2, 0.3, 0.4])


def test_a_pose_jump_starts_a_new_window():
    rule = KeyframeRule(jump_ratio=4.0, jump_min_m=0.015)
    window = _window(rule, [0.0, 0.01, 0.02, 0.03])  # 1 cm steps
    window.add(_frame(0.4, 0.06))  # a 3 cm step: 3x the typical step, not a jump
    assert len(window.frames) == 5
    window.add(_frame(0.5, 0.11))  # 5 cm: 5x the median step (1 cm) and over 1.5 cm
    assert [f.stamp for f in window.frames] == [0.5]
    assert window.select_sources(window.frames[-1]) == []
    # A slow camera: 2 mm steps, a 9 mm step is 4.5x but under jump_min_m: kept.
    window = _window(rule, [0.0, 0.002, 0.004, 0.006])
    window.add(_frame(0.4, 0.015))
    assert len(window.frames) == 5
    # Too few frames to know the typical step: never a jump.
    window = _window(rule, [0.0, 0.01])
    window.add(_frame(0.2, 0.5))
    assert len(window.frames) == 3


def test_smoothed_centres_keep_a_constant_velocity_and_shrink_noise():
    rng = np.random.default_rng(3)
    stamps = np.cumsum(rng.uniform(0.02, 0.05, 12))  # uneven frame times
    velocity = np.array([0.12, -0.05, 0.02])  # m/s
    frames = [Frame(float(t), GREY, np.eye(4)) for t in stamps]
    for f in frames:
        f.camera_to_world[:3, 3] = np.array([0.3, 0.1, -0.2]) + velocity * f.stamp
    true = np.array([f.camera_to_world[:3, 3] for f in frames])
    for half in (0, 1, 2):  # a line is kept exactly, at the list's ends too
        np.testing.assert_allclose(smoothed_centres(frames, half), true, atol=1e-12)
    # independent noise: a centred 3-frame line fit is the mean of the three (variance / 3)
    errors = []
    for _ in range(400):
        noise = rng.normal(0.0, 0.01, true.shape)
        noisy = [Frame(f.stamp, GREY, f.camera_to_world.copy()) for f in frames]
        for f, e in zip(noisy, noise):
            f.camera_to_world[:3, 3] += e
        errors.append(smoothed_centres(noisy, 1)[5] - true[5])
    assert np.var(errors) == pytest.approx(0.01**2 / 3, rel=0.2)
    assert smoothed_centres(frames[:2], 1).shape == (2, 3)  # too few frames: their own


def test_smoothing_takes_the_selection_bias_out_of_noisy_odometry():
    """Noisy odometry: the first frame whose own centre is min_baseline_m away tends to be one
    whose noise lengthened its baseline. The adjustment's scale comes from that baseline, so the
    bias is what matters: the odometry's baseline over the true one for the nearest chosen
    source, log-averaged over seeded trials. Reference: the true trajectory."""
    rng = np.random.default_rng(0)
    bias = {}
    for smoothing in (0, 1):
        rule = KeyframeRule(min_baseline_m=0.03, position_smoothing=smoothing)
        logs = []
        for _ in range(300):
            window = KeyframeWindow(rule)
            true = {}
            for k in range(25):  # 6 mm per frame along x at 30 Hz, 1 cm noise per frame
                frame = _frame(k / 30.0, 0.006 * k)
                true[id(frame)] = frame.camera_to_world[:3, 3].copy()
                frame.camera_to_world[:3, 3] += rng.normal(0.0, 0.01 / np.sqrt(3.0), 3)
                window.add(frame)
            ref = window.frames[-1]
            chosen = window.select_sources(ref)
            assert chosen
            src = chosen[0]
            odometry = np.linalg.norm(src.camera_to_world[:3, 3] - ref.camera_to_world[:3, 3])
            logs.append(np.log(odometry / np.linalg.norm(true[id(src)] - true[id(ref)])))
        bias[smoothing] = float(np.mean(logs))
    assert bias[0] > 0.15  # the bias is there: raw centres pick lengthened baselines
    assert bias[1] < 0.5 * bias[0]


@pytest.mark.parametrize("stamp", [0.2, 0.1])
def test_a_stamp_not_after_the_newest_is_refused(stamp):
    window = _window(KeyframeRule(), [0.0, 0.01, 0.02])  # stamps 0, 0.1, 0.2
    with pytest.raises(InputError, match=r"expected after the previous frame's 0\.200000 s"):
        window.add(_frame(stamp, 0.03))
    assert len(window.frames) == 3


def test_relative_pose_takes_reference_points_into_the_source():
    ref, src = _frame(0.0, 0.1, yaw_deg=5.0, y=-0.02), _frame(0.1, -0.05, yaw_deg=-3.0)
    T = relative_pose(ref, src)
    X_ref = np.array([0.3, -0.2, 2.0, 1.0])
    X_world = ref.camera_to_world @ X_ref
    np.testing.assert_allclose(T @ X_ref, np.linalg.solve(src.camera_to_world, X_world),
                               atol=1e-12)
    with pytest.raises(ShapeError, match="one image size"):
        relative_pose(ref, Frame(0.2, np.zeros((3, 4), np.float32), np.eye(4)))


def _rotation(deg: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.radians([10.0, deg, -5.0]))[0]
    T[:3, 3] = [0.1, 0.2, 0.3]
    return T


def test_check_pose_accepts_rigid_transforms_only_4x4():
    T = _rotation(30.0)
    out = check_pose(T.astype(np.float32))
    assert out.dtype == np.float64 and out.shape == (4, 4)
    noisy = T.copy()
    noisy[:3, :3] += 1e-5  # what a pose file rounded to a few digits holds
    np.testing.assert_array_equal(check_pose(noisy), noisy)
    with pytest.raises(ShapeError, match=r"expected shape \(4,4\), got \(3, 4\)"):
        check_pose(np.eye(4)[:3])


@pytest.mark.parametrize("edit, message", [
    (lambda T: T.__setitem__((1, 3), np.nan), "finite"),
    (lambda T: T.__setitem__((0, 0), np.inf), "finite"),
    (lambda T: T.__setitem__((3, slice(None)), [0.0, 0.0, 0.0, 2.0]), "last row"),
    (lambda T: T.__setitem__((3, 1), 0.1), "last row"),
    (lambda T: T.__setitem__((slice(0, 3), slice(0, 3)), 1.01 * T[:3, :3]), "rotation"),
    (lambda T: T.__setitem__((0, 1), T[0, 1] + 0.05), "rotation"),
    (lambda T: T.__setitem__((slice(0, 3), 2), -T[:3, 2]), "rotation"),  # a reflection
])
def test_check_pose_refuses_non_rigid_transforms(edit, message):
    T = _rotation(30.0)
    edit(T)
    with pytest.raises(InputError, match=f"odometry pose: expected .*{message}"):
        check_pose(T, name="odometry pose")


def test_keyframe_rule_refuses_bad_values():
    for values in ({"min_baseline_m": 0.0}, {"min_baseline_m": 0.6, "max_baseline_m": 0.5},
                   {"baseline_growth": 0.9}, {"max_rotation_deg": 0.0},
                   {"max_rotation_deg": 120.0}, {"max_sources": 0}, {"max_frames": 1},
                   {"max_age_s": 0.0}, {"position_smoothing": -1}):
        with pytest.raises(ConfigError):
            KeyframeRule(**values)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`MotionDepthEstimator`: temporal fusion on the rendered scene, and bad input."""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dvc_perception.errors import ConfigError, InputError, ShapeError
from dvc_perception.motion_depth.estimator import (
    STATUS_CARRIED,
    STATUS_FIRST_FRAME,
    STATUS_NO_MOTION,
    STATUS_OK,
    MotionDepthEstimator,
    MotionDepthSettings,
    window_scale_variance,
)
from dvc_perception.motion_depth.keyframes import KeyframeRule
from dvc_perception.motion_depth.pose_refine import PoseRefineSettings
from dvc_perception.motion_depth.sweep import SweepSettings


def _settings(width: int, fusion: bool, max_sources: int = 3, max_relative_std: float = 0.1,
              scale_filter: bool = True) -> MotionDepthSettings:
    # Exact poses: refinement off keeps the two runs compared here identical but for fusion.
    return MotionDepthSettings(
        internal_width=width, temporal_fusion=fusion, max_relative_std=max_relative_std,
        scale_filter=scale_filter,
        keyframes=KeyframeRule(min_baseline_m=0.12, max_sources=max_sources),
        sweep=SweepSettings(min_depth_m=0.8, max_depth_m=5.0, planes=48),
        pose_refine=PoseRefineSettings(enabled=False))


def test_temporal_fusion_lowers_the_error_of_a_static_scene(rendered_scene):
    scene = rendered_scene
    n = 14
    frames = [scene.render(scene.pose(k)) for k in range(n)]
    # Sensor noise (6 grey levels, new each frame) makes each frame's matching error partly
    # independent: fusing frames averages it down.
    images = [scene.rgb8(colour, noise=6.0, seed=k) for k, (colour, _) in enumerate(frames)]

    def run(fusion: bool) -> list[np.ndarray]:
        estimator = MotionDepthEstimator(_settings(scene.W, fusion))
        return [estimator.estimate(images[k], scene.K, scene.pose(k), 1.0 + 0.1 * k).depth
                for k in range(n)]

    single, fused = run(False), run(True)
    errors, errors_fused = [], []
    for k in range(8, n):  # once five or more frames have been fused
        depth_true = frames[k][1]
        density, density_fused = np.isfinite(single[k]).mean(), np.isfinite(fused[k]).mean()
        assert density_fused >= 0.95 * density and density > 0.8  # comparable density
        both = np.isfinite(single[k]) & np.isfinite(fused[k])
        error = np.abs(1.0 / single[k][both] - 1.0 / depth_true[both])
        error_fused = np.abs(1.0 / fused[k][both] - 1.0 / depth_true[both])
        assert np.median(error_fused) < np.median(error), k
        errors.append(error)
        errors_fused.append(error_fused)
    assert np.median(np.concatenate(errors_fused)) < 0.9 * np.median(np.concatenate(errors))


def test_a_changed_scene_replaces_the_fused_depth(rendered_scene):
    """The box disappears at frame 7 (the wall behind it, 1.7 m farther, shows): where the
    prior from the earlier frames disagrees with the new measurement, the measurement replaces
    it, while unchanged pixels keep being averaged."""
    scene = rendered_scene
    n, change = 11, 7
    frames = [scene.render(scene.pose(k), box=k < change) for k in range(n)]
    images = [scene.rgb8(colour, noise=2.0, seed=k) for k, (colour, _) in enumerate(frames)]

    def run(fusion: bool) -> list[np.ndarray]:
        # One source, 3 frames back (12.4 cm); max_relative_std 0.3: a single measurement of
        # the wall at 3.2 m (std 1 px / (f b) = 0.058 /m, 18 % of its inverse depth) is shown.
        # The scale filter is off: it would multiply the whole measurement by one factor, and
        # this test is about the per-pixel choice between prior and measurement.
        estimator = MotionDepthEstimator(_settings(scene.W, fusion, max_sources=1,
                                                   max_relative_std=0.3, scale_filter=False))
        return [estimator.estimate(images[k], scene.K, scene.pose(k), 1.0 + 0.1 * k).depth
                for k in range(n)]

    single, fused = run(False), run(True)
    k = change + 3  # the first frame whose source shows the new scene too
    depth_true = frames[k][1]
    depth_before = scene.render(scene.pose(k), box=True)[1]
    changed = np.abs(depth_before - depth_true) > 0.1 * depth_true
    assert changed.sum() > 1000
    measured = changed & np.isfinite(single[k])
    assert measured.sum() > 0.8 * changed.sum()
    assert np.median(np.abs(single[k][measured] - depth_true[measured])
                     / depth_true[measured]) < 0.05
    # Replaced: the fused depth is this frame's measurement, not a mean with the old 1.5 m.
    same = np.isclose(fused[k], single[k], rtol=1e-5)
    assert same[measured].mean() > 0.9
    # Elsewhere the prior agrees, and the fused depth is a weighted mean: it differs.
    kept = ~changed & np.isfinite(single[k]) & np.isfinite(fused[k])
    assert kept.sum() > 5000 and same[kept].mean() < 0.5


# --- bad input -------------------------------------------------------------------------------

def _first_frames(scene, estimator: MotionDepthEstimator, ks: list[int]) -> list[str]:
    return [estimator.estimate(scene.rgb8(scene.render(scene.pose(k))[0]), scene.K,
                               scene.pose(k), 1.0 + 0.1 * k).status for k in ks]


def test_a_new_image_size_starts_a_new_window(rendered_scene):
    scene = rendered_scene
    estimator = MotionDepthEstimator(_settings(scene.W, fusion=True))
    assert _first_frames(scene, estimator, [0, 1, 2, 3]) == [STATUS_FIRST_FRAME] + \
        [STATUS_NO_MOTION] * 2 + [STATUS_OK]
    small = cv2.resize(scene.rgb8(scene.render(scene.pose(4))[0]), (128, 96),
                       interpolation=cv2.INTER_AREA)
    K_small = scene.K.copy()
    K_small[:2] *= 0.8
    K_small[:2, 2] += 0.5 * 0.8 - 0.5  # pixel centres kept: u' = 0.8 (u + 0.5) - 0.5
    r = estimator.estimate(small, K_small, scene.pose(4), 1.4)
    assert r.status == STATUS_FIRST_FRAME and r.depth.shape == (96, 128)
    assert np.isnan(r.depth).all() and len(estimator.window.frames) == 1


def test_a_camera_without_baseline_gives_no_motion_and_no_depth(rendered_scene):
    scene = rendered_scene
    estimator = MotionDepthEstimator(_settings(scene.W, fusion=True))
    image = scene.rgb8(scene.render(scene.pose(0))[0])
    statuses = []
    for k in range(4):  # still, then turning in place by 2 deg per frame
        T = scene.pose(0)
        T[:3, :3] = cv2.Rodrigues(np.radians([0.0, 2.0 * max(k - 1, 0), 0.0]))[0]
        r = estimator.estimate(image, scene.K, T, 1.0 + 0.1 * k)
        statuses.append(r.status)
        assert r.depth.shape == (scene.H, scene.W) and np.isnan(r.depth).all()
        assert not r.confidence.any() and r.sources == 0 and not r.pose_refined
    assert statuses == [STATUS_FIRST_FRAME] + [STATUS_NO_MOTION] * 3


def test_odometry_noise_on_a_turning_camera_is_not_taken_for_a_baseline(rendered_scene):
    """The camera only turns (0.5 deg per frame) while its odometry wanders 8 cm per frame
    sideways: the odometry rule finds sources, the matches show no parallax, so no depth; the
    same frames swept without the parallax rule give depth at a made-up scale."""
    scene = rendered_scene

    def run(min_parallax_px: float) -> list:
        estimator = MotionDepthEstimator(dataclasses.replace(
            _settings(scene.W, fusion=True), min_parallax_px=min_parallax_px,
            keyframes=KeyframeRule(min_baseline_m=0.05, max_sources=3),
            pose_refine=PoseRefineSettings()))
        out = []
        for k in range(5):
            truth = scene.pose(0)
            truth[:3, :3] = cv2.Rodrigues(np.radians([0.0, 0.5 * k, 0.0]))[0]
            odometry = truth.copy()
            odometry[0, 3] += 0.08 * k
            image = scene.rgb8(scene.render(truth)[0])
            out.append(estimator.estimate(image, scene.K, odometry, 1.0 + 0.1 * k))
        return out

    guarded, unguarded = run(MotionDepthSettings().min_parallax_px), run(0.0)
    assert [r.status for r in unguarded[1:]] == [STATUS_OK] * 4  # the odometry's baselines
    assert any(np.isfinite(r.depth).any() for r in unguarded)  # depth from no parallax
    assert [r.status for r in guarded] == [STATUS_FIRST_FRAME] + [STATUS_NO_MOTION] * 4
    for r in guarded[1:]:
        assert np.isnan(r.depth).all() and not r.confidence.any() and r.sources == 0
        assert r.pose_refined  # the adjustment ran: it is what measured the parallax
        assert "parallax" in r.note and "min_parallax_px 3" in r.note


def test_min_parallax_px_is_checked():
    with pytest.raises(ConfigError, match="min_parallax_px"):
        MotionDepthSettings(min_parallax_px=-1.0)


def test_bad_pose_stamp_intrinsics_and_image_raise_and_are_skipped(rendered_scene):
    scene = rendered_scene
    estimator = MotionDepthEstimator(_settings(scene.W, fusion=True))
    image = scene.rgb8(scene.render(scene.pose(0))[0])
    estimator.estimate(image, scene.K, scene.pose(0), 1.0)
    nan_pose = scene.pose(1)
    nan_pose[1, 3] = np.nan
    bad_K = []
    for edit in ((0, 0, np.nan), (0, 0, 0.0), (1, 1, -140.0), (0, 2, np.inf)):
        K = scene.K.copy()
        K[edit[0], edit[1]] = edit[2]
        bad_K.append(K)
    calls = [
        ((image, scene.K, nan_pose, 1.1), InputError, "finite"),
        ((image, scene.K, scene.pose(1)[:3], 1.1), ShapeError, r"camera pose: expected shape"),
        ((image, scene.K, scene.pose(1), float("nan")), InputError, "stamp: expected a finite"),
        ((image, scene.K, scene.pose(1), float("inf")), InputError, "stamp: expected a finite"),
        ((image, scene.K[:2], scene.pose(1), 1.1), ShapeError, r"K: expected shape \(3,3\)"),
        ((image[..., 0], scene.K, scene.pose(1), 1.1), ShapeError, r"image: expected shape"),
    ] + [((image, K, scene.pose(1), 1.1), InputError, "K: expected finite") for K in bad_K]
    for args, error, message in calls:
        with pytest.raises(error, match=message):
            estimator.estimate(*args)
    # Each bad frame was refused before it was stored: the window is the first frame alone.
    assert [f.stamp for f in estimator.window.frames] == [1.0]


def test_a_stamp_going_back_starts_a_new_window(rendered_scene):
    scene = rendered_scene
    estimator = MotionDepthEstimator(_settings(scene.W, fusion=True))
    assert _first_frames(scene, estimator, [0, 1, 2, 3])[-1] == STATUS_OK
    image = scene.rgb8(scene.render(scene.pose(4))[0])
    r = estimator.estimate(image, scene.K, scene.pose(4), 1.2)  # a bag played again
    assert r.status == STATUS_FIRST_FRAME and np.isnan(r.depth).all()
    assert [f.stamp for f in estimator.window.frames] == [1.2]


def test_the_sweep_takes_sources_spread_over_the_baselines():
    from dvc_perception.motion_depth.estimator import _spread

    assert _spread(6, 3) == [0, 2, 5]  # shortest, middle, longest baseline
    assert _spread(2, 3) == [0, 1]
    assert _spread(5, 1) == [4]
    for n in range(1, 10):
        for k in range(1, 5):
            picked = _spread(n, k)
            assert len(picked) == min(n, k) and picked == sorted(set(picked))
            assert picked[-1] == n - 1  # the longest baseline is always swept


def test_each_frame_is_described_once(rendered_scene, monkeypatch):
    """SIFT runs once per frame: a frame used again as a source keeps the features it got as
    the reference (or when first used), and those equal a fresh description of its image."""
    from dvc_perception.motion_depth import estimator as estimator_module
    from dvc_perception.motion_depth.pose_refine import features

    scene = rendered_scene
    described: list[int] = []

    def counting(grey, max_features, octave_layers=3):
        described.append(id(grey))
        return features(grey, max_features, octave_layers)

    monkeypatch.setattr(estimator_module, "features", counting)
    settings = dataclasses.replace(_settings(scene.W, fusion=True),
                                   pose_refine=PoseRefineSettings())
    estimator = MotionDepthEstimator(settings)
    refined = 0
    for k in range(8):
        r = estimator.estimate(scene.rgb8(scene.render(scene.pose(k))[0]), scene.K,
                               scene.pose(k), 1.0 + 0.1 * k)
        refined += r.pose_refined
    assert refined == 5  # frames 3..7 have sources, each adjusted
    assert len(described) == len(set(described)) == 8  # frames 0-2 first as sources
    for frame in estimator.window.frames:
        fresh = features(frame.grey, settings.pose_refine.max_features,
                         settings.pose_refine.octave_layers)
        np.testing.assert_array_equal(frame.features[0], fresh[0])
        np.testing.assert_array_equal(frame.features[1], fresh[1])



@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="keep_freed_memory sets glibc's malloc (Linux with glibc only)")
def test_keep_freed_memory_is_taken_by_glibc_once():
    """glibc accepts both settings (mallopt returns 1), and the estimator asks for them. The
    page faults they save are measured by benchmarks/bench_motion_depth.py (per frame)."""
    code = ("from dvc_perception.motion_depth import estimator as e\n"
            "assert e._KEPT is None\n"
            "e.MotionDepthEstimator()\n"
            "assert e._KEPT is True and e.keep_freed_memory() is True\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_window_scale_variance_matches_a_monte_carlo_fit():
    """The formula against the least-squares scale of simulated noisy odometry: four sources
    3-20 cm from the reference, each frame's centre with independent noise per axis."""
    from dvc_perception.motion_depth.estimator import window_scale_variance

    rng = np.random.default_rng(5)
    sigma = 0.006
    centres = np.array([[0.03, 0.0, 0.01], [0.06, 0.01, 0.0], [0.11, 0.0, -0.02],
                        [0.2, -0.03, 0.02]])  # sources' centres, the reference at the origin
    poses = []
    for c in centres:  # reference -> source; each source turned a little
        world_from_src = np.eye(4)
        world_from_src[:3, :3] = cv2.Rodrigues(rng.normal(size=3) * 0.1)[0]
        world_from_src[:3, 3] = c
        poses.append(np.linalg.inv(world_from_src))
    n = 40000
    noisy = (centres[None] + rng.normal(scale=sigma, size=(n, 4, 3))
             - rng.normal(scale=sigma, size=(n, 1, 3)))  # the reference's noise in every one
    scale = np.einsum("nsk,sk->n", noisy, centres) / np.sum(centres * centres)
    expected = float(np.var(np.log(scale)))
    assert window_scale_variance(poses, sigma) == pytest.approx(expected, rel=0.05)
    assert window_scale_variance([np.eye(4)], sigma) == float("inf")


def test_the_scale_filter_weights_the_history_and_the_window_by_their_variances():
    """`_carry_scale` on a measurement 20 % farther than its prior everywhere: both end at the
    variance-weighted log scale (a scalar Kalman update, computed here), the variance shrinks
    as Kalman's does, and too little overlap leaves both as they were."""
    from dvc_perception.motion_depth.sweep import SweepResult

    settings = MotionDepthSettings(scale_filter=True)
    estimator = MotionDepthEstimator(settings)
    rng = np.random.default_rng(2)
    depth = rng.uniform(0.5, 4.0, (24, 32)).astype(np.float32)
    ratio, prior_var, window_var = 1.2, 0.01, 0.03
    result = SweepResult(depth * ratio, np.ones_like(depth), np.ones(depth.shape, np.int32))
    prior = (1.0 / depth, np.full_like(depth, 1e-3), np.zeros(depth.shape, np.int32))
    measured = np.ones(depth.shape, bool)
    measured[:4] = False  # no measurement there: ignored
    out, (p, p_var, _), baseline, var = estimator._carry_scale(
        result, measured, prior, 0.1, window_var, prior_var)
    predicted = prior_var + settings.process_noise ** 2
    log_scale = predicted / (predicted + window_var) * np.log(ratio)  # 0: the prior's scale
    np.testing.assert_allclose(out.depth, depth * np.exp(log_scale), rtol=1e-5)
    np.testing.assert_allclose(1.0 / p, depth * np.exp(log_scale), rtol=1e-5)
    np.testing.assert_allclose(p_var, 1e-3 * np.exp(-2 * log_scale), rtol=1e-5)
    assert baseline == pytest.approx(0.1 * np.exp(log_scale) / ratio)
    assert var == pytest.approx(1.0 / (1.0 / predicted + 1.0 / window_var))
    few = np.zeros(depth.shape, bool)
    few[0, :10] = True
    out, (p, _, _), baseline, var = estimator._carry_scale(
        result, few, prior, 0.1, window_var, prior_var)
    assert out is result and p is prior[0] and baseline == 0.1 and var == window_var


def test_a_camera_that_stops_keeps_its_fused_depth_for_max_unmeasured_frames(rendered_scene):
    """The camera moves, then stands still: once its window holds no frame far enough (8
    frames kept), the last depth is carried into the still frames (``carried``: the fusion's
    prediction, as for the pixels a sweep does not measure) for `max_unmeasured_frames` frames,
    then there is none (``no_motion``). The carried depth is the last depth frame's, checked
    against the rendered truth; with ``max_unmeasured_frames=0`` nothing is carried."""
    scene = rendered_scene
    moving, still = 8, 14
    poses = [scene.pose(k) for k in range(moving)] + [scene.pose(moving - 1)] * still
    images = [scene.rgb8(scene.render(T)[0], noise=2.0, seed=k) for k, T in enumerate(poses)]
    truth = scene.render(poses[-1])[1]

    def run(max_unmeasured: int) -> list:
        settings = dataclasses.replace(
            _settings(scene.W, fusion=True), max_unmeasured_frames=max_unmeasured,
            keyframes=KeyframeRule(min_baseline_m=0.12, max_sources=3, max_frames=8))
        estimator = MotionDepthEstimator(settings)
        return [estimator.estimate(image, scene.K, T, 1.0 + 0.1 * k)
                for k, (image, T) in enumerate(zip(images, poses))]

    results = run(5)
    statuses = [r.status for r in results]
    first_carried = statuses.index(STATUS_CARRIED)
    assert statuses[first_carried - 1] == STATUS_OK
    assert statuses[first_carried:] == [STATUS_CARRIED] * 5 + [STATUS_NO_MOTION] * (
        len(statuses) - first_carried - 5)
    last = results[first_carried - 1].depth
    for r in results[first_carried:first_carried + 5]:
        known = np.isfinite(r.depth)
        assert r.sources == 0 and known.mean() > 0.5 * np.isfinite(last).mean()
        assert np.all(np.isfinite(last[known]))  # nothing new: the last depth frame's pixels
        np.testing.assert_allclose(r.depth[known], last[known], rtol=1e-5)
        rel = np.abs(r.depth[known] - truth[known]) / truth[known]
        assert np.median(rel) < 0.02
        assert np.all(r.confidence[known] > 0) and not r.confidence[~known].any()
    for r in results[first_carried + 5:]:
        assert np.isnan(r.depth).all()
    assert STATUS_CARRIED not in [r.status for r in run(0)]


def test_carried_depth_follows_the_images_where_the_odometry_turned_wrongly(rendered_scene):
    """The camera stands still but each still frame's odometry is turned 1 deg off (about its
    own axis, 3 seeds): the first carried frame's depth must be the frame before's, in place
    (the camera did not move). With pose refinement (the window adjustment with the last
    depth frame as the source) it is: under 1 % of the pixels differ by more than 5 %; moved
    by the odometry alone, over 5 % of them do."""
    scene = rendered_scene
    moving, still = 8, 6
    truth_poses = [scene.pose(k) for k in range(moving)] + [scene.pose(moving - 1)] * still
    images = [scene.rgb8(scene.render(T)[0], noise=2.0, seed=k)
              for k, T in enumerate(truth_poses)]

    def moved_share(refine: bool, seed: int) -> float:
        rng = np.random.default_rng(seed)
        settings = dataclasses.replace(
            _settings(scene.W, fusion=True), pose_refine=PoseRefineSettings(enabled=refine),
            keyframes=KeyframeRule(min_baseline_m=0.12, max_sources=3, max_frames=8))
        estimator = MotionDepthEstimator(settings)
        before = None
        for k, (image, T) in enumerate(zip(images, truth_poses)):
            if k >= moving:
                axis = rng.normal(size=3)
                turn = np.eye(4)
                turn[:3, :3] = cv2.Rodrigues(np.radians(1.0) * axis / np.linalg.norm(axis))[0]
                T = T @ turn  # turned about the camera's own centre
            r = estimator.estimate(image, scene.K, T, 1.0 + 0.1 * k)
            if r.status == STATUS_CARRIED:
                both = np.isfinite(r.depth) & np.isfinite(before)
                assert both.mean() > 0.5
                return float(np.mean(np.abs(r.depth[both] - before[both]) > 0.05 * before[both]))
            before = r.depth
        raise AssertionError("no frame was carried")

    for seed in (3, 4, 5):
        assert moved_share(True, seed) < 0.01
        assert moved_share(False, seed) > 0.05


def test_carried_after_a_false_baseline_takes_the_windows_adjusted_pose(rendered_scene,
                                                                         monkeypatch):
    """The camera moves, then stands still while its odometry drifts on sideways (7 cm per
    frame, so that the odometry rule finds sources): the window adjustment finds no parallax,
    so the fused depth is carried, moved by that adjustment's pose to the last depth frame:
    one adjustment per frame, not a second one for the carried frame alone."""
    import dvc_perception.motion_depth.estimator as estimator_module

    scene = rendered_scene
    moving, still = 8, 5
    truth = [scene.pose(k) for k in range(moving)] + [scene.pose(moving - 1)] * still
    odometry = [T.copy() for T in truth]
    for i in range(still):
        odometry[moving + i][:3, 3] += odometry[moving + i][:3, 0] * 0.07 * (i + 1)
    images = [scene.rgb8(scene.render(T)[0], noise=2.0, seed=k) for k, T in enumerate(truth)]
    calls = []
    adjust = estimator_module.refine_window
    monkeypatch.setattr(estimator_module, "refine_window",
                        lambda *a, **k: calls.append(1) or adjust(*a, **k))
    settings = dataclasses.replace(
        _settings(scene.W, fusion=True), pose_refine=PoseRefineSettings(),
        keyframes=KeyframeRule(min_baseline_m=0.05, max_sources=3, max_frames=8))
    estimator = MotionDepthEstimator(settings)
    results, adjustments = [], []
    for k, (image, T) in enumerate(zip(images, odometry)):
        before = len(calls)
        results.append(estimator.estimate(image, scene.K, T, 1.0 + 0.1 * k))
        adjustments.append(len(calls) - before)
    assert max(adjustments) == 1
    # the first still frames still have real baselines to the moving ones
    carried = [(r, n) for r, n in zip(results, adjustments) if r.status == STATUS_CARRIED]
    assert len(carried) >= 2
    for r, n in carried:
        assert n == 1 and r.pose_refined and r.sources == 0 and "parallax" in r.note


def test_a_window_weighs_in_the_scale_filter_by_the_odometrys_measured_error(rendered_scene,
                                                                             monkeypatch):
    """The first depth frame's scale variance (the filter's start) is the assumed odometry
    noise's (`window_scale_variance` of the adjusted poses) plus what the adjustment measured
    (`PoseRefineResult.scale_variance`): about 0 for exact odometry, tens of percent squared
    for odometry 1 deg and 1 cm off per frame, where the parallax is a few px."""
    import dvc_perception.motion_depth.estimator as estimator_module

    scene = rendered_scene
    found = []
    adjust = estimator_module.refine_window
    monkeypatch.setattr(estimator_module, "refine_window",
                        lambda *a, **k: found.append(adjust(*a, **k)) or found[-1])
    settings = dataclasses.replace(_settings(scene.W, fusion=True),
                                   pose_refine=PoseRefineSettings())
    sigma = settings.pose_refine.translation_sigma_m / np.sqrt(2.0)
    measured = []
    for noisy in (False, True):
        rng = np.random.default_rng(4)
        estimator = MotionDepthEstimator(settings)
        for k in range(6):
            T = scene.pose(k)
            if noisy:
                axis, direction = rng.normal(size=3), rng.normal(size=3)
                P = np.eye(4)
                P[:3, :3] = cv2.Rodrigues(np.radians(1.0) * axis / np.linalg.norm(axis))[0]
                P[:3, 3] = 0.01 * direction / np.linalg.norm(direction)
                T = P @ T
            found.clear()
            r = estimator.estimate(scene.rgb8(scene.render(scene.pose(k))[0]), scene.K, T,
                                   1.0 + 0.1 * k)
            if r.status == STATUS_OK:
                break
        assert r.status == STATUS_OK and r.pose_refined and len(found) == 1
        window = found[0]
        assert estimator._state.scale_variance == pytest.approx(
            window_scale_variance(window.poses, sigma) + window.scale_variance, rel=1e-9)
        measured.append(window.scale_variance)
    assert measured[0] < 1e-3 and measured[1] > 0.01

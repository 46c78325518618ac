# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`pose_refine.refine_window` on the rendered scene: odometry noise of 1 cm and 1 deg absorbed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dvc_perception.motion_depth.estimator import MotionDepthEstimator, MotionDepthSettings
from dvc_perception.motion_depth.keyframes import KeyframeRule
from dvc_perception.motion_depth.pose_refine import (
    _SCALE_VARIANCE_FLOOR,
    PoseRefineSettings,
    ScaleEvidence,
    _Problem,
    _so3_exp,
    _so3_log,
    features,
    fused_log_scale,
    match,
    refine_window,
)
from dvc_perception.motion_depth.sweep import SweepSettings


def _perturbation(rng: np.random.Generator, deg: float = 1.0, metres: float = 0.01
                  ) -> np.ndarray:
    """A rigid transform rotating by `deg` about a random axis and moving `metres` along a
    random direction."""
    axis, direction = rng.normal(size=3), rng.normal(size=3)
    P = np.eye(4)
    P[:3, :3] = cv2.Rodrigues(np.radians(deg) * axis / np.linalg.norm(axis))[0]
    P[:3, 3] = metres * direction / np.linalg.norm(direction)
    return P


def _rotation_error_deg(T: np.ndarray, truth: np.ndarray) -> float:
    return float(np.degrees(np.linalg.norm(cv2.Rodrigues(T[:3, :3] @ truth[:3, :3].T)[0])))


def _direction_error_deg(T: np.ndarray, truth: np.ndarray) -> float:
    a, b = T[:3, 3], truth[:3, 3]
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def test_refine_window_corrects_rotation_and_translation_direction(rendered_scene):
    scene = rendered_scene
    settings = PoseRefineSettings()
    k_ref, k_srcs = 4.0, [1.0, 2.0, 6.0, 7.0]  # 4 to 12 cm on either side

    def feats(k: float) -> tuple[np.ndarray, np.ndarray]:
        return features(scene.grey(scene.render(scene.pose(k))[0]), settings.max_features)

    ref_feat = feats(k_ref)
    truth = [scene.relative(k_ref, k) for k in k_srcs]
    rng = np.random.default_rng(11)
    odometry = [_perturbation(rng) @ T for T in truth]
    result = refine_window(ref_feat, [feats(k) for k in k_srcs], odometry, scene.K, settings)
    assert result.refined and min(result.matches) >= 100
    assert result.median_error_px < settings.huber_px  # the matches agree with the poses found
    for T, odo, true in zip(result.poses, odometry, truth):
        # Hundreds of matches pin the rotation far below the 1 deg of odometry error (one
        # pixel at f = 140 px is 0.4 deg); 0.25 deg leaves room.
        assert _rotation_error_deg(odo, true) > 0.99
        assert _rotation_error_deg(T, true) < 0.25
        # The images fix the direction of travel; its scale comes from the odometry prior
        # (not checked: images alone cannot give it).
        assert _direction_error_deg(T, true) < 0.5 * _direction_error_deg(odo, true)
        np.testing.assert_allclose(T[3], [0.0, 0.0, 0.0, 1.0])


def test_parallax_is_how_far_the_translation_moves_the_points(rendered_scene):
    """Each source's parallax against an independent figure from the rendered depth: every
    reference feature's true 3D point projected with the true pose and with its rotation alone
    (median distance); and a source that only turned has none."""
    scene = rendered_scene
    settings = PoseRefineSettings()
    k_ref, k_srcs = 4.0, [1.0, 2.0, 6.0, 7.0]

    def view(k: float) -> tuple[np.ndarray, np.ndarray]:
        colour, depth = scene.render(scene.pose(k))
        return features(scene.grey(colour), settings.max_features), depth

    (ref_feat, ref_depth) = view(k_ref)
    truth = [scene.relative(k_ref, k) for k in k_srcs]
    turned = scene.pose(k_ref)
    turned[:3, :3] = cv2.Rodrigues(np.radians([0.0, 1.5, 0.0]))[0] @ turned[:3, :3]
    src_feats = [view(k)[0] for k in k_srcs]
    colour_turned = scene.render(turned)[0]
    src_feats.append(features(scene.grey(colour_turned), settings.max_features))
    odometry = truth + [np.linalg.inv(turned) @ scene.pose(k_ref)]
    result = refine_window(ref_feat, src_feats, odometry, scene.K, settings)
    assert result.refined and min(result.matches) >= 100

    uv = ref_feat[0]
    rows = np.clip(np.rint(uv[:, 1]).astype(int), 0, scene.H - 1)
    cols = np.clip(np.rint(uv[:, 0]).astype(int), 0, scene.W - 1)
    z = ref_depth[rows, cols]  # the true depth at each reference feature
    X = (np.c_[uv, np.ones(len(uv))] @ np.linalg.inv(scene.K).T) * z[:, None]
    for T, found in zip(truth, result.parallax_px[:4]):
        full = (X @ T[:3, :3].T + T[:3, 3]) @ scene.K.T
        rotated = (X @ T[:3, :3].T) @ scene.K.T
        moved = np.linalg.norm(full[:, :2] / full[:, 2:] - rotated[:, :2] / rotated[:, 2:], axis=1)
        expected = float(np.median(moved))
        assert expected > 3.0  # 3 to 12 cm of baseline at 1.5-3.2 m, f = 140 px
        assert abs(found - expected) < 0.15 * expected, (found, expected)
    assert result.parallax_px[4] < 0.3  # turned in place: the rotation explains every match


def test_refine_window_leaves_the_odometry_alone_when_off_or_blind(rendered_scene):
    scene = rendered_scene
    settings = PoseRefineSettings()
    odometry = [scene.relative(2.0, 0.0)]
    grey = scene.grey(scene.render(scene.pose(2.0))[0])
    f = features(grey, settings.max_features)
    off = refine_window(f, [f], odometry, scene.K, PoseRefineSettings(enabled=False))
    assert not off.refined and np.isnan(off.median_error_px)
    np.testing.assert_array_equal(off.poses[0], odometry[0])
    assert off.poses[0] is not odometry[0]  # a copy: the caller's pose is never modified
    flat = features(np.full_like(grey, 0.5), settings.max_features)  # nothing to match
    blind = refine_window(f, [flat], odometry, scene.K, settings)
    assert not blind.refined and blind.matches == [0]
    np.testing.assert_array_equal(blind.poses[0], odometry[0])


def test_estimator_depth_is_closer_to_the_truth_with_refinement(rendered_scene):
    """Every frame's pose off by 1 cm and 1 deg (seeded): the sweep with the odometry's poses
    is wrong or empty where refined poses give depth that is right up to the odometry's scale."""
    scene = rendered_scene
    n = 10
    frames = [scene.render(scene.pose(k)) for k in range(n)]
    rng = np.random.default_rng(5)
    noisy = [_perturbation(rng) @ scene.pose(k) for k in range(n)]

    def run(refine: bool) -> np.ndarray:
        estimator = MotionDepthEstimator(MotionDepthSettings(
            internal_width=scene.W, temporal_fusion=False,
            # 11 cm: a margin under the 3 steps' 12.4 cm for the 1 cm noise
            keyframes=KeyframeRule(min_baseline_m=0.11, max_sources=3),
            sweep=SweepSettings(min_depth_m=0.8, max_depth_m=5.0, planes=48),
            pose_refine=PoseRefineSettings(enabled=refine)))
        rows = []  # per frame with depth: density, AbsRel, scale-aligned AbsRel
        for k, ((colour, depth_true), T) in enumerate(zip(frames, noisy)):
            r = estimator.estimate(scene.rgb8(colour), scene.K, T, 1.0 + 0.1 * k)
            if r.status != "ok":
                continue
            assert r.pose_refined == refine
            found = np.isfinite(r.depth)
            if not found.any():
                rows.append((0.0, np.nan, np.nan))
                continue
            d, z = r.depth[found], depth_true[found]
            scale = np.median(z / d)
            rows.append((found.mean(), np.mean(np.abs(d - z) / z),
                         np.mean(np.abs(scale * d - z) / z)))
        assert len(rows) == n - 3  # frames 3.. have a source 12 cm away
        return np.array(rows)

    plain, refined = run(False), run(True)
    density, abs_rel, aligned = np.nanmean(refined, axis=0)
    density0, abs_rel0, aligned0 = np.nanmean(plain, axis=0)
    assert density >= density0 and density > 0.8
    assert abs_rel < abs_rel0
    # Up to scale (which only the odometry gives), refined depth is several times better.
    assert aligned < 0.5 * aligned0


def test_match_finds_what_opencvs_brute_force_matcher_finds(rendered_scene):
    """The matrix-product nearest neighbours give OpenCV's knnMatch + ratio test, exactly; the
    compiled RANSAC keeps nearly the set that OpenCV's ``FM_RANSAC`` keeps."""
    scene = rendered_scene
    settings = PoseRefineSettings()
    ref = features(scene.grey(scene.render(scene.pose(4.0))[0]), settings.max_features)
    for k in (2.0, 6.0, 7.0):
        src = features(scene.grey(scene.render(scene.pose(k))[0]), settings.max_features)
        pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(ref[1], src[1], k=2)
        good = [m for m, n in pairs if m.distance < settings.ratio * n.distance]
        qi = np.array([m.queryIdx for m in good])
        uv = src[0][[m.trainIdx for m in good]]
        _, inliers = cv2.findFundamentalMat(ref[0][qi], uv, cv2.FM_RANSAC, settings.ransac_px,
                                            0.999)
        opencv = set(qi[inliers.ravel().astype(bool)].tolist())
        found_qi, found_uv = match(ref, src, settings)
        assert len(found_qi) >= 100
        # every accepted match is one of the ratio test's, with its source pixel
        at = {q: i for i, q in enumerate(qi.tolist())}
        np.testing.assert_array_equal(found_uv, uv[[at[q] for q in found_qi.tolist()]])
        differ = len(opencv.symmetric_difference(found_qi.tolist()))
        assert differ <= 0.05 * len(qi), (differ, len(qi))


def _epipolar_pairs(seed: int, n: int, outlier_fraction: float, noise_px: float = 0.2):
    """Pixels (n, 2) of random points (1-4 m) in two 640x480 cameras 10 cm apart (turned 3
    deg), with Gaussian noise, a fraction of the second image's replaced by random pixels;
    the true fundamental matrix and which pairs are outliers."""
    rng = np.random.default_rng(seed)
    K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    X = np.c_[rng.uniform(-1.5, 1.5, n), rng.uniform(-1, 1, n), rng.uniform(1, 4, n)]
    R = cv2.Rodrigues(np.radians(3.0) * np.array([0.2, 1.0, 0.1]) / np.sqrt(1.05))[0]
    t = np.array([0.1, 0.01, 0.02])
    x1 = X @ K.T
    x2 = (X @ R.T + t) @ K.T
    x1 = x1[:, :2] / x1[:, 2:] + rng.normal(0, noise_px, (n, 2))
    x2 = x2[:, :2] / x2[:, 2:] + rng.normal(0, noise_px, (n, 2))
    outlier = rng.random(n) < outlier_fraction
    x2[outlier] = rng.uniform([0, 0], [640, 480], (int(outlier.sum()), 2))
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    Kinv = np.linalg.inv(K)
    return x1, x2, Kinv.T @ tx @ R @ Kinv, outlier


def _epipolar_error_px(F: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """The larger distance of either point from the other's epipolar line [px]."""
    h1, h2 = np.c_[x1, np.ones(len(x1))], np.c_[x2, np.ones(len(x2))]
    l2, l1 = h1 @ F.T, h2 @ F
    d = np.einsum("ni,ni->n", h2, l2)
    return np.maximum(np.abs(d) / np.hypot(l2[:, 0], l2[:, 1]),
                      np.abs(d) / np.hypot(l1[:, 0], l1[:, 1]))


def test_fundamental_inliers_keeps_the_true_pairs_and_drops_the_outliers():
    from dvc_perception.motion_depth._pose_compiled import fundamental_inliers

    for seed in range(5):
        x1, x2, F_true, outlier = _epipolar_pairs(seed, 300, 0.3)
        true_error = _epipolar_error_px(F_true, x1, x2)
        mask = fundamental_inliers(x1, x2, 1.0, 0.999, 1000, 0)
        # the true pairs (noise 0.2 px, within 0.6 px of the true lines) are kept, as many as
        # OpenCV's FM_RANSAC keeps (86-100 % of them in these windows)
        inliers = ~outlier & (true_error < 0.6)
        _, opencv = cv2.findFundamentalMat(x1, x2, cv2.FM_RANSAC, 1.0, 0.999)
        assert mask[inliers].mean() >= 0.85, mask[inliers].mean()
        assert mask[inliers].sum() >= opencv.ravel().astype(bool)[inliers].sum() - 2
        # random pixels are kept only by the chance of falling near their epipolar line (a
        # 2 px band across the image: under 1 %; OpenCV's FM_RANSAC keeps as many)
        assert (mask & outlier).sum() <= 2, (mask & outlier).sum()
        # deterministic for a seed
        np.testing.assert_array_equal(mask, fundamental_inliers(x1, x2, 1.0, 0.999, 1000, 0))
    assert not fundamental_inliers(x1[:7], x2[:7], 1.0, 0.999, 1000, 0).any()
    # pairs that do not move (a camera that stands still) fit every skew-symmetric F, none with
    # f33 = 1: all of them are inliers
    assert fundamental_inliers(x1, x1.copy(), 1.0, 0.999, 1000, 0).all()


def test_normal_equations_are_the_finite_difference_jacobians_sums():
    """J^T W J and J^T W r of the compiled assembly against central differences of the
    residuals (rotation perturbed on the left, as the solver updates it), float64."""
    from dvc_perception.motion_depth._pose_compiled import normal_equations

    rng = np.random.default_rng(0)
    K = np.array([[260.0, 0.0, 160.0], [0.0, 255.0, 120.0], [0.0, 0.0, 1.0]])
    S, P = 3, 7
    R = np.stack([cv2.Rodrigues(rng.normal(0, 0.05, 3))[0] for _ in range(S)])
    t = rng.normal(0, 0.1, (S, 3))
    rho = rng.uniform(0.3, 1.0, P)
    pts = np.r_[np.arange(P), np.arange(P), rng.integers(0, P, 5)].astype(np.int64)
    src = np.r_[np.zeros(P), np.ones(P), np.full(5, 2)].astype(np.int64)
    bearings = np.c_[rng.uniform(-0.5, 0.5, (P, 2)), np.ones(P)][pts]
    t[2] = [0.0, 0.0, -5.0]  # source 2 sees every point behind it: it adds nothing

    def residuals(R, t, rho):
        X = np.einsum("nij,nj->ni", R[src], bearings) / rho[pts][:, None] + t[src]
        return np.stack([K[0, 0] * X[:, 0] / X[:, 2] + K[0, 2],
                         K[1, 1] * X[:, 1] / X[:, 2] + K[1, 2]], 1), X[:, 2]

    clean, z = residuals(R, t, rho)
    uv = clean + rng.normal(0, 1.0, clean.shape)  # residuals of ~1 px: some past Huber's 0.5
    r = clean - uv
    e = np.linalg.norm(r, axis=1)
    w = np.where(e < 0.5, 1.0, 0.5 / e) * (z > 1e-3)
    J = np.zeros((len(pts), 2, 6 * S + P))
    h = 1e-6
    for j in range(6 * S + P):
        parts = []
        for sign in (1.0, -1.0):
            Rp, tp, rp = R.copy(), t.copy(), rho.copy()
            if j < 6 * S:
                s, k = divmod(j, 6)
                if k < 3:
                    Rp[s] = cv2.Rodrigues(sign * h * np.eye(3)[k])[0] @ R[s]
                else:
                    tp[s, k - 3] += sign * h
            else:
                rp[j - 6 * S] += sign * h
            parts.append(residuals(Rp, tp, rp)[0])
        J[:, :, j] = (parts[0] - parts[1]) / (2 * h)
    H = np.einsum("n,nai,naj->ij", w, J, J)
    g = np.einsum("n,nai,na->i", w, J, r)
    for depth_only in (False, True):
        Hpp, gp, Hpl, Hll, gl = normal_equations(R, t, rho, bearings, uv, pts, src, K[0, 0],
                                                 K[1, 1], K[0, 2], K[1, 2], 0.5, depth_only)
        np.testing.assert_allclose(Hll, np.diag(H)[6 * S:], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(gl, g[6 * S:], rtol=1e-6, atol=1e-6)
        if depth_only:
            assert not Hpp.any() and not gp.any() and not Hpl.any()
            continue
        np.testing.assert_allclose(Hpp, H[:6 * S, :6 * S], rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(gp, g[:6 * S], rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(Hpl, H[:6 * S, 6 * S:], rtol=1e-6, atol=1e-4)
        assert not Hpp[12:].any()  # the source behind: no block


def test_so3_exp_and_log_agree_with_rodrigues():
    rng = np.random.default_rng(3)
    axes = rng.normal(size=(8, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    for angle in (0.0, 1e-9, 1e-5, 1e-2, 0.5, 2.0, 3.1, np.pi - 1e-5):
        w = angle * axes
        R = _so3_exp(w)
        expected = np.stack([cv2.Rodrigues(v.reshape(3, 1))[0] for v in w])
        np.testing.assert_allclose(R, expected, atol=1e-14)
        # The log inverts the exp, more precisely than cv2.Rodrigues for tiny angles (near a
        # half turn, where the vector is ill-conditioned, it is cv2.Rodrigues's).
        if angle < 3.14:
            np.testing.assert_allclose(_so3_log(R), w, atol=1e-13)


def _point_window(seed: int) -> tuple:
    """Exact matches of 600 points (1-4 m) seen from a reference and 5 sources 3-15 cm behind
    it (320x240, f = 292.5 px, 0.5 px noise; unique descriptors, so matching is exact), the
    true relative poses, and odometry whose translations are exact and rotations 1 deg off."""
    rng = np.random.default_rng(seed)
    K = np.array([[292.5, 0.0, 160.0], [0.0, 292.5, 120.0], [0.0, 0.0, 1.0]])
    points = np.c_[rng.uniform(-2, 2, 600), rng.uniform(-1.5, 1.5, 600), rng.uniform(1, 4, 600)]
    descriptors = rng.integers(0, 100, (600, 128)).astype(np.float32)
    direction = rng.normal(size=3) * [1.0, 1.0, 0.3]
    direction /= np.linalg.norm(direction)

    def view(R: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = (points - c) @ R  # camera-to-world R, centre c
        uv = X @ K.T
        uv = uv[:, :2] / uv[:, 2:] + rng.normal(scale=0.5, size=(len(X), 2))
        ok = (uv[:, 0] > 0) & (uv[:, 0] < 320) & (uv[:, 1] > 0) & (uv[:, 1] < 240)
        return uv[ok], descriptors[ok]

    ref = view(np.eye(3), np.zeros(3))
    sources, truth, odometry = [], [], []
    for b in (0.03, 0.045, 0.07, 0.1, 0.15):
        T = np.eye(4)  # source camera-to-world (the reference's frame is the world)
        T[:3, :3] = cv2.Rodrigues(rng.normal(size=3) * np.radians(0.5) * b / 0.03)[0]
        T[:3, 3] = -direction * b
        sources.append(view(T[:3, :3], T[:3, 3]))
        truth.append(np.linalg.inv(T))
        P = _perturbation(rng, deg=1.0, metres=0.0)
        rotated = T.copy()
        rotated[:3, :3] = P[:3, :3] @ T[:3, :3]
        odometry.append(np.linalg.inv(rotated))
    return ref, sources, truth, odometry, K


def _scale(poses: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """The least-squares factor from the true translations to those of `poses`."""
    t = np.array([T[:3, 3] for T in poses])
    t_true = np.array([T[:3, 3] for T in truth])
    return float(np.sum(t * t_true) / np.sum(t_true * t_true))


def test_solve_scale_reaches_the_scale_of_the_converged_adjustment():
    """The window's scale is an exact gauge direction of the reprojection errors, held only by
    the weak translation prior: the damped steps barely move along it, so 15 iterations leave
    it where the rotations' correction pushed it (here: exact odometry translations, rotations
    1 deg off). With the closed-form scale step, 15 iterations give what the plain adjustment
    reaches after 300 (the reference), and the true scale."""
    plain, solved, converged = [], [], []
    for seed in range(6):
        ref, sources, truth, odometry, K = _point_window(seed)
        for out, settings in ((plain, PoseRefineSettings(solve_scale=False)),
                              (solved, PoseRefineSettings(solve_scale=True)),
                              (converged, PoseRefineSettings(iterations=300, solve_scale=False))):
            result = refine_window(ref, sources, odometry, K, settings)
            assert result.refined
            out.append(_scale(result.poses, truth))
    plain, solved, converged = (np.log(np.array(v)) for v in (plain, solved, converged))
    np.testing.assert_allclose(solved, converged, atol=0.005)
    assert np.abs(solved).max() < 0.02  # the odometry's translations are exact
    assert np.abs(plain).max() > 0.05  # what the step fixes


def _exact_problem(rng: np.random.Generator, odometry_deg: float, depth_factor: float,
                   odometry_m: float = 0.0) -> tuple[_Problem, np.ndarray]:
    """A window of 400 points (1.5-3 m) seen exactly from a reference and 4 sources 3-6 cm away
    (320x240, f = 260 px), its state set to the true poses with every translation times and
    every depth times `depth_factor` (the reprojections do not change), odometry the true poses
    with each rotation `odometry_deg` off about a random axis and each translation `odometry_m`
    off along a random direction. Returns it and the points (N, 3) in the reference camera
    [m]."""
    K = np.array([[260.0, 0.0, 160.0], [0.0, 260.0, 120.0], [0.0, 0.0, 1.0]])
    z = rng.uniform(1.5, 3.0, 400)
    uv = np.c_[rng.uniform(10, 310, 400), rng.uniform(10, 230, 400)]
    bearings = np.c_[uv, np.ones(400)] @ np.linalg.inv(K).T  # z = 1: inverse depth = 1 / z
    X = bearings * z[:, None]
    obs, truth, odometry = [], [], []
    for b in (0.03, 0.04, 0.05, 0.06):
        T = np.eye(4)  # reference camera -> source camera
        T[:3, :3] = cv2.Rodrigues(rng.normal(size=3) * np.radians(0.7))[0]
        direction = rng.normal(size=3) * [1.0, 1.0, 0.5]
        T[:3, 3] = b * direction / np.linalg.norm(direction)
        x = (X @ T[:3, :3].T + T[:3, 3]) @ K.T
        obs.append((np.arange(400), x[:, :2] / x[:, 2:]))
        truth.append(T)
        odometry.append(_perturbation(rng, deg=odometry_deg, metres=odometry_m) @ T
                        if odometry_deg > 0 or odometry_m > 0 else T.copy())
    problem = _Problem(K, bearings, obs, odometry, PoseRefineSettings())
    problem.R = np.stack([T[:3, :3] for T in truth])
    problem.t = np.stack([T[:3, 3] for T in truth]) * depth_factor
    problem.rho = 1.0 / (z * depth_factor)
    return problem, X


def test_scale_evidence_gives_the_factor_to_the_odometrys_own_triangulation():
    """Exact odometry, the window's state at 0.8 times the true scale (a gauge move: the same
    reprojections): the structure witness is log(1 / 0.8), every source agreeing (the variance
    floor), and the translations' per-source fits agree too."""
    problem, _ = _exact_problem(np.random.default_rng(1), odometry_deg=0.0, depth_factor=0.8)
    evidence = problem.scale_evidence()
    assert evidence is not None
    assert abs(evidence.structure_log_scale - np.log(1.0 / 0.8)) < 1e-6
    assert evidence.structure_variance == pytest.approx(_SCALE_VARIANCE_FLOOR, rel=1e-6)
    assert evidence.translation_variance == pytest.approx(_SCALE_VARIANCE_FLOOR, rel=1e-6)


def test_scale_evidence_of_noisy_odometry_rotations_scatters_and_weighs_little():
    """Odometry rotations 1 deg off (translations exact; the parallax is about as large), the
    state the truth: each source's triangulation with the odometry's pose is off by its own
    rotation error (mostly short), the structure witness scatters over the sources and the
    fused factor stays within 5 % of the (true) adjusted scale, where the witness alone is
    off by tens of percent. The witness is checked against the two rays' closest approach
    (in the reference camera) with the odometry's poses."""
    witnesses = []
    for seed in range(8):
        problem, X = _exact_problem(np.random.default_rng(100 + seed), odometry_deg=1.0,
                                    depth_factor=1.0)
        evidence = problem.scale_evidence()
        assert evidence is not None
        assert abs(fused_log_scale(evidence)) < 0.05
        witnesses.append(abs(evidence.structure_log_scale))
        # The witness: the mean over sources of the median (weighted by the squared sine of the
        # rays' angle under the state's rotation, those over 0.5 deg in front) of log(depth by
        # the odometry / true), the depth where the reference ray passes closest to the
        # source's ray.
        logs = []
        b = X / X[:, 2:]  # reference rays, z = 1: the parameter along them is the depth
        for j, T in enumerate(problem.odometry):
            uv = problem.uv[problem.src == j]
            centre = -T[:3, :3].T @ T[:3, 3]
            u = np.c_[uv, np.ones(len(uv))] @ np.linalg.inv(problem.K).T @ T[:3, :3]
            depth = np.array([np.linalg.lstsq(np.c_[bi, -ui], centre, rcond=None)[0][0]
                              for bi, ui in zip(b, u)])
            seen = u @ T[:3, :3].T @ problem.R[j]  # the source rays as the state turns them
            cos = np.einsum("ni,ni->n", seen, b) / (np.linalg.norm(seen, axis=1)
                                                    * np.linalg.norm(b, axis=1))
            sin2 = 1.0 - cos**2
            keep = (sin2 > np.sin(np.radians(0.5)) ** 2) & (depth > 0)
            values, weights = np.log(depth[keep] / X[keep, 2]), sin2[keep]
            order = np.argsort(values)
            half = np.searchsorted(np.cumsum(weights[order]), 0.5 * weights.sum())
            logs.append(values[order][half])
        assert evidence.structure_log_scale == pytest.approx(np.mean(logs), abs=1e-6)
    assert np.median(witnesses) > 0.2


def test_epipolar_distances_are_opencvs():
    """`_Problem._epipolar_sq`: each source pixel's squared distance from the epipolar line of
    its reference pixel, against OpenCV's lines (`computeCorrespondEpilines`) for the
    odometry's fundamental matrix (rotations 1 deg off: distances of a few px)."""
    problem, _ = _exact_problem(np.random.default_rng(3), odometry_deg=1.0, depth_factor=1.0)
    R = np.stack([T[:3, :3] for T in problem.odometry])
    t = np.stack([T[:3, 3] for T in problem.odometry])
    got = problem._epipolar_sq(R, t)
    K_inv = np.linalg.inv(problem.K)
    x1 = (problem.bearings @ problem.K.T)[:, :2]  # reference pixels (bearings: z = 1)
    for j, T in enumerate(problem.odometry):
        tx = np.array([[0, -T[2, 3], T[1, 3]], [T[2, 3], 0, -T[0, 3]], [-T[1, 3], T[0, 3], 0]])
        F = K_inv.T @ tx @ T[:3, :3] @ K_inv
        sel = problem.src == j
        lines = cv2.computeCorrespondEpilines(x1[sel].reshape(-1, 1, 2), 1, F).reshape(-1, 3)
        d = np.abs(np.einsum("ni,ni->n", lines, np.c_[problem.uv[sel], np.ones(sel.sum())]))
        np.testing.assert_allclose(np.sqrt(got[sel]), d, rtol=1e-6, atol=1e-6)
        assert np.median(d) > 1.0


def test_scale_variance_measures_the_odometrys_error_against_the_parallax():
    """`_Problem.scale_variance` (the state the truth: the adjusted poses fit the images):

    - exact odometry puts every match on its epipolar line: variance 0;
    - rotations 1 deg off (translations exact): the structure witness's error (the odometry's
      own triangulation, off by tens of percent) is of the size the variance says, over 12
      seeds (root mean square of error / std between 0.3 and 3), and 2 deg gives about twice
      the std;
    - translations 1 cm off (rotations exact) on 3-6 cm baselines: likewise the odometry's
      scale (the least-squares factor of its translations to the true ones, what
      `solve_scale` fits) is off by the size the variance says.
    """
    exact, _ = _exact_problem(np.random.default_rng(5), odometry_deg=0.0, depth_factor=1.0)
    assert exact.scale_variance(exact.parallax()) < 1e-12
    z_rot, z_trans, std1, std2 = [], [], [], []
    for seed in range(12):
        for deg, out in ((1.0, std1), (2.0, std2)):
            problem, _ = _exact_problem(np.random.default_rng(200 + seed), odometry_deg=deg,
                                        depth_factor=1.0)
            out.append(np.sqrt(problem.scale_variance(problem.parallax())))
            if deg == 1.0:
                evidence = problem.scale_evidence()
                assert evidence is not None
                z_rot.append(evidence.structure_log_scale / out[-1])
        problem, _ = _exact_problem(np.random.default_rng(300 + seed), odometry_deg=0.0,
                                    depth_factor=1.0, odometry_m=0.01)
        odo_t = np.array([T[:3, 3] for T in problem.odometry])
        log_scale = np.log(np.sum(odo_t * problem.t) / np.sum(problem.t * problem.t))
        z_trans.append(log_scale / np.sqrt(problem.scale_variance(problem.parallax())))
    for z in (z_rot, z_trans):
        assert 0.3 < np.sqrt(np.mean(np.square(z))) < 3.0
    assert 1.6 < np.median(std2) / np.median(std1) < 2.5


def test_fused_log_scale_weighs_the_witnesses_by_inverse_variance():
    e = ScaleEvidence(structure_log_scale=0.2, structure_variance=0.01, translation_variance=0.03)
    assert fused_log_scale(e) == pytest.approx(0.2 * (1 / 0.01) / (1 / 0.01 + 1 / 0.03))
    assert fused_log_scale(e, 0.05, 0.05) == pytest.approx(0.1)
    assert fused_log_scale(e, float("inf"), 0.05) == 0.0
    assert fused_log_scale(e, 0.05, float("inf")) == pytest.approx(0.2)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dvc_perception.config import FiducialConfig, PipelineConfig
from dvc_perception.demo.boards import render_board_view
from dvc_perception.errors import ConfigError, InputError, ShapeError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.pipeline.fiducial import (
    CHESSBOARD_FLAGS,
    SUBPIX_CRITERIA,
    FiducialSource,
)
from dvc_perception.pipeline.pipeline import Pipeline
from dvc_perception.pipeline.sources import KeypointDetection, KeypointSource

K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])
D = np.array([-0.12, 0.05, 0.001, -0.0015, 0.0])  # plumb_bob, a typical wide-ish lens
BOARDS = {
    "chessboard": FiducialConfig(board_type="chessboard", cols=9, rows=6, square_size_m=0.025),
    "charuco": FiducialConfig(board_type="charuco", cols=7, rows=5, square_size_m=0.04,
                              marker_size_m=0.03),
    "aruco_grid": FiducialConfig(board_type="aruco_grid", cols=4, rows=3, marker_size_m=0.05,
                                 marker_separation_m=0.012),
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small solves are ~20x faster single-threaded on a busy 2-core machine (as in the node)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _distort(ideal_rgb: np.ndarray, K: np.ndarray, D: np.ndarray) -> np.ndarray:
    """The image a lens with distortion D sees: sample the ideal image at undistort(p)."""
    h, w = ideal_rgb.shape[:2]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = np.stack([u.ravel(), v.ravel()], 1).reshape(-1, 1, 2)
    und = cv2.undistortPointsIter(pts, K, D, None, K,
                                  (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-9))
    maps = und.reshape(h, w, 2).astype(np.float32)
    return cv2.remap(ideal_rgb, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128))


def _rotation_error_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    return float(np.degrees(np.linalg.norm(Rotation.from_matrix(R_a @ R_b.T).as_rotvec())))


def _pipeline(board: FiducialConfig, **kw) -> Pipeline:
    return Pipeline.from_config(PipelineConfig(fiducial=board, **kw))


@pytest.mark.parametrize("kind", sorted(BOARDS))
def test_synthetic_board_with_distortion_within_1cm_2deg(kind):
    board = BOARDS[kind]
    camera = CameraModel(K, D, 640, 480, "plumb_bob")
    pipeline = _pipeline(board)
    for seed in range(2):
        rng = np.random.default_rng(seed)
        R = Rotation.from_rotvec(rng.normal(0.0, 0.3, 3)).as_matrix()
        t = np.array([rng.uniform(-0.12, -0.05), rng.uniform(-0.08, -0.04), rng.uniform(0.5, 0.7)])
        image = _distort(render_board_view(board, K, R, t, 640, 480), K, D)
        result = pipeline.process(image, camera, stamp=12.5)
        assert result.depth is None and result.stamp == 12.5
        assert len(result.poses) == 1, (kind, seed)
        pose = result.poses[0]
        assert pose.object_id == board.object_id
        assert np.linalg.norm(pose.t - t) < 0.01, (kind, seed, pose.t, t)
        assert _rotation_error_deg(pose.R, R) < 2.0
        assert pose.covariance.shape == (6, 6) and 0.5 <= pose.score <= 1.0
        assert pose.n_inliers >= 4 and set(result.timings) >= {"detect_ms", "pnp_ms", "total_ms"}


def test_partially_visible_charuco_still_gives_a_pose():
    board = BOARDS["charuco"]
    camera = CameraModel(K, np.zeros(0), 640, 480)
    R = Rotation.from_rotvec([0.1, -0.2, 0.05]).as_matrix()
    t = np.array([-0.14, -0.1, 0.6])
    image = render_board_view(board, K, R, t, 640, 480)
    full = _pipeline(board).process(image, camera, 0.0).poses[0]
    u_mid = int(K[0, 0] * (t[0] + 0.5 * board.cols * board.square_size_m) / t[2] + K[0, 2])
    image[:, u_mid:] = 128  # the right half of the board is hidden
    partial = _pipeline(board).process(image, camera, 0.0).poses
    assert len(partial) == 1
    assert 4 <= len(partial[0].keypoints_2d) < len(full.keypoints_2d)
    assert np.linalg.norm(partial[0].t - t) < 0.01
    assert _rotation_error_deg(partial[0].R, R) < 2.0


def test_no_board_no_pose_and_bad_inputs_are_typed():
    pipeline = _pipeline(BOARDS["chessboard"])
    camera = CameraModel(K, np.zeros(0), 640, 480)
    assert pipeline.process(np.full((480, 640, 3), 90, np.uint8), camera, 0.0).poses == []
    with pytest.raises(InputError, match="640x480"):
        pipeline.process(np.zeros((240, 320, 3), np.uint8), camera, 0.0)
    with pytest.raises(ShapeError):
        pipeline.process(np.zeros((480, 640), np.uint8), camera, 0.0)
    with pytest.raises(ShapeError):
        pipeline.process(np.zeros((480, 640, 3), np.float32), camera, 0.0)


def test_real_chessboard_matches_opencv_solvepnp(chessboard_dir):
    """Same corners, same camera: the pose equals OpenCV's solvePnP.

    The pipeline undistorts the corners and minimises the reprojection error in the ideal
    pinhole image; `cv2.solvePnP(..., D)` minimises it in the distorted image. On the same
    (undistorted) corners the two solvers agree to 1e-6; with D given to OpenCV the objectives
    differ slightly, which on this lens (k6 = -0.40) moves the optimum by up to 1.7e-3 rad.
    """
    camera = CameraModel.from_opencv_yaml(chessboard_dir / "intrinsics.yml", "M1", width=640,
                                          height=480)
    K_real, D_real = camera.K.numpy(), camera.opencv_distortion()
    board = BOARDS["chessboard"]
    pipeline = _pipeline(board)
    obj = FiducialSource(board)._points_obj
    images = sorted(chessboard_dir.glob("left*.jpg"))
    assert len(images) >= 10
    within_1e3 = 0
    for path in images:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        found, corners = cv2.findChessboardCorners(gray, (9, 6), flags=CHESSBOARD_FLAGS)
        assert found, path.name
        corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), SUBPIX_CRITERIA)
        poses = pipeline.process(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), camera, 0.0).poses
        assert len(poses) == 1, path.name
        pose = poses[0]
        same = np.allclose(pose.keypoints_2d, corners.reshape(-1, 2))
        flipped = np.allclose(pose.keypoints_2d, corners.reshape(-1, 2)[::-1])
        assert same or flipped, path.name  # the very corners OpenCV finds, maybe relabelled
        ordered = corners if same else corners[::-1]
        ideal = cv2.undistortPointsIter(ordered, K_real, D_real, None, K_real,
                                        (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100,
                                         1e-12))
        for uv, dist, tol in ((ideal, None, 1e-6), (ordered, D_real, 2.5e-3)):
            ok, rvec, tvec = cv2.solvePnP(obj, uv, K_real, dist, flags=cv2.SOLVEPNP_ITERATIVE)
            R_ref, t_ref = cv2.Rodrigues(rvec)[0], tvec.ravel()
            rel_t = np.linalg.norm(pose.t - t_ref) / np.linalg.norm(t_ref)
            rot = np.radians(_rotation_error_deg(pose.R, R_ref))
            assert rel_t < tol and rot < tol, (path.name, dist is None, rel_t, rot)
        within_1e3 += int(rel_t < 1e-3 and rot < 1e-3)
    assert within_1e3 >= len(images) - 1  # all but left03 within 1e-3 of solvePnP with D


class NoisyKeypoints:
    """A `KeypointSource` returning projections of known points plus Gaussian noise."""

    backend = "test:noisy-projections"
    object_ids = ("target",)

    def __init__(self, points_obj, R, t, sigma_px, seed, outlier_fraction=0.0, confidence=None):
        self.points_obj, self.R, self.t = points_obj, R, t
        self.sigma_px, self.outlier_fraction = sigma_px, outlier_fraction
        self.rng = np.random.default_rng(seed)
        self.confidence = confidence

    def detect(self, image_rgb: np.ndarray) -> list[KeypointDetection]:
        cam = self.points_obj @ self.R.T + self.t
        uv = cam[:, :2] / cam[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
        uv = uv + self.rng.normal(0.0, self.sigma_px, uv.shape)
        n_out = int(round(self.outlier_fraction * len(uv)))
        uv[:n_out] += self.rng.uniform(30.0, 80.0, (n_out, 2))
        conf = np.ones(len(uv)) if self.confidence is None else self.confidence
        return [KeypointDetection("target", uv, self.points_obj, conf)]


def _cube_points() -> np.ndarray:
    g = np.array([-0.05, 0.0, 0.05])
    return np.stack(np.meshgrid(g, g, g), -1).reshape(-1, 3)


@pytest.mark.slow
def test_published_covariance_matches_monte_carlo_spread():
    R = Rotation.from_rotvec([0.3, -0.4, 0.2]).as_matrix()
    t = np.array([0.03, -0.02, 0.5])
    camera = CameraModel(K, np.zeros(0), 640, 480)
    source = NoisyKeypoints(_cube_points(), R, t, sigma_px=0.7, seed=5)
    assert isinstance(source, KeypointSource)
    pipeline = Pipeline(PipelineConfig(), source)
    image = np.zeros((480, 640, 3), np.uint8)
    errors, covariances = [], []
    for _ in range(250):
        pose = pipeline.process(image, camera, 0.0).poses[0]
        dtheta = Rotation.from_matrix(pose.R @ R.T).as_rotvec()  # left perturbation
        errors.append(np.concatenate([pose.t - t, dtheta]))
        covariances.append(pose.covariance)
    errors_arr = np.array(errors)
    empirical = np.cov(errors_arr.T)
    predicted = np.mean(covariances, axis=0)
    ratio = np.diag(empirical) / np.diag(predicted)
    assert np.all((ratio > 0.7) & (ratio < 1.4)), ratio  # ~9% standard error at n = 250
    corr_emp = empirical / np.sqrt(np.outer(np.diag(empirical), np.diag(empirical)))
    corr_pred = predicted / np.sqrt(np.outer(np.diag(predicted), np.diag(predicted)))
    assert np.abs(corr_emp - corr_pred).max() < 0.2


def test_outliers_rejected_and_min_score_thresholds():
    R = Rotation.from_rotvec([0.1, 0.2, -0.1]).as_matrix()
    t = np.array([0.0, 0.0, 0.6])
    camera = CameraModel(K, np.zeros(0), 640, 480)
    image = np.zeros((480, 640, 3), np.uint8)
    pts = _cube_points()
    source = NoisyKeypoints(pts, R, t, sigma_px=0.3, seed=1, outlier_fraction=0.3)
    pose = Pipeline(PipelineConfig(min_score=0.5), source).process(image, camera, 0.0).poses[0]
    assert pose.n_inliers == len(pts) - round(0.3 * len(pts))
    assert abs(pose.score - pose.n_inliers / len(pts)) < 1e-12
    assert np.linalg.norm(pose.t - t) < 0.005 and _rotation_error_deg(pose.R, R) < 1.0
    # the RANSAC path ends at the same optimum, with the same covariance, as a plain fit of the
    # inliers (the outliers are the first 30 % of the points)
    n_out = len(pts) - pose.n_inliers
    inlier_source = NoisyKeypoints(pts, R, t, sigma_px=0.3, seed=1, outlier_fraction=0.3)
    det = inlier_source.detect(image)[0]
    clean = KeypointDetection("target", det.keypoints_px[n_out:], pts[n_out:],
                              det.confidence[n_out:])

    class Fixed:
        backend, object_ids = "test:fixed", ("target",)

        def detect(self, image_rgb):
            return [clean]

    plain = Pipeline(PipelineConfig(), Fixed()).process(image, camera, 0.0).poses[0]
    np.testing.assert_allclose(pose.t, plain.t, atol=1e-9)
    np.testing.assert_allclose(pose.covariance, plain.covariance, rtol=1e-4,
                               atol=1e-6 * np.abs(plain.covariance).max())
    source = NoisyKeypoints(pts, R, t, sigma_px=0.3, seed=1, outlier_fraction=0.3)
    assert Pipeline(PipelineConfig(min_score=0.8), source).process(image, camera, 0.0).poses == []
    # low confidence lowers the score: same geometry, half confidence everywhere
    source = NoisyKeypoints(pts, R, t, sigma_px=0.3, seed=1, confidence=np.full(len(pts), 0.5))
    assert Pipeline(PipelineConfig(min_score=0.6), source).process(image, camera, 0.0).poses == []


def test_config_errors_are_typed_and_name_the_value(tmp_path):
    with pytest.raises(ConfigError, match="unknown keys"):
        Pipeline.from_config({"fiducial": {"colz": 3}})
    with pytest.raises(ConfigError, match="1board"):
        Pipeline.from_config({"fiducial": {"object_id": "1board"}})
    with pytest.raises(ConfigError, match="marker_size_m"):
        Pipeline.from_config({"fiducial": {"board_type": "charuco", "marker_size_m": 0.05}})
    with pytest.raises(ConfigError, match="min_score"):
        Pipeline.from_config({"min_score": 1.5})
    with pytest.raises(ConfigError, match="expected int"):
        Pipeline.from_config({"fiducial": {"cols": "nine"}})
    with pytest.raises(ConfigError, match="network.model_path"):
        Pipeline.from_config({"keypoint_source": "network"})
    with pytest.raises(ConfigError, match="network.depth_model_path"):
        Pipeline.from_config({"depth_source": "network"})
    path = tmp_path / "p.yaml"
    path.write_text("perception_node:\n  ros__parameters:\n    pipeline:\n"
                    "      fiducial:\n        cols: 7\n")
    assert Pipeline.from_config(path).config.fiducial.cols == 7
    with pytest.raises(ConfigError, match="does not exist"):
        Pipeline.from_config(tmp_path / "missing.yaml")


def test_importing_the_pipeline_loads_no_ros():
    code = ("import sys, dvc_perception.pipeline.pipeline, dvc_perception.pipeline.fiducial;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'tensorrt')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


class SeveralInstances:
    """A `KeypointSource` seeing one object three times (noisy projections, some occluded)."""

    backend = "test:three-instances"
    object_ids = ("target",)

    def __init__(self, poses, confidences):
        self.poses, self.confidences = poses, confidences
        self.rng = np.random.default_rng(11)

    def detect(self, image_rgb: np.ndarray) -> list[KeypointDetection]:
        out = []
        for (R, t), conf in zip(self.poses, self.confidences):
            cam = _cube_points() @ R.T + t
            uv = cam[:, :2] / cam[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
            uv = uv + self.rng.normal(0.0, 0.3, uv.shape)
            out.append(KeypointDetection("target", uv, _cube_points(), conf))
        return out


def test_three_instances_of_one_object_give_three_ranked_poses():
    from std_msgs.msg import Header

    from dvc_perception.ros import convert

    poses = [(Rotation.from_rotvec(rv).as_matrix(), np.array(t)) for rv, t in (
        ([0.3, -0.4, 0.2], [-0.15, 0.0, 0.7]), ([2.0, 0.1, -0.3], [0.0, 0.05, 0.6]),
        ([-0.2, 1.2, 0.9], [0.18, -0.04, 0.8]))]
    n = len(_cube_points())
    confidences = [np.full(n, 0.6), np.full(n, 0.9), np.full(n, 0.75)]
    pipeline = Pipeline(PipelineConfig(), SeveralInstances(poses, confidences))
    camera = CameraModel(K, np.zeros(0), 640, 480)
    found = pipeline.process(np.zeros((480, 640, 3), np.uint8), camera, 0.0).poses
    assert [p.instance for p in found] == [0, 1, 2]
    assert [round(p.score, 2) for p in found] == [0.9, 0.75, 0.6]  # best first
    matched = set()
    for pose in found:  # each pose is one of the three ground truths, each matched once
        errs = [np.degrees(np.linalg.norm(Rotation.from_matrix(pose.R @ R.T).as_rotvec()))
                + 100 * np.linalg.norm(pose.t - t) for R, t in poses]
        k = int(np.argmin(errs))
        assert errs[k] < 1.0 and k not in matched
        matched.add(k)
    markers = convert.poses_to_marker_array(found, Header(frame_id="cam"), 0.05)
    ids = [(m.ns, m.id) for m in markers.markers]
    assert len(ids) == 9 == len(set(ids))  # one unique arrow per instance and axis

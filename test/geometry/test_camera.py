# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""CameraModel against OpenCV (projectPoints, undistortPointsIter, resize) and round trips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dvc_perception.errors import ConfigError, ShapeError
from dvc_perception.geometry.camera import CameraModel

K_REAL = np.array([[533.92, 0.0, 328.82], [0.0, 528.58, 237.24], [0.0, 0.0, 1.0]])
PLUMB_BOB = [-0.28, 0.09, 0.0012, -0.0009, -0.015]
RATIONAL = [-0.26, -0.13, 0.0011, 0.0007, 0.02, 0.01, -0.03, -0.40]


def _models() -> list[CameraModel]:
    return [
        CameraModel(K_REAL, PLUMB_BOB, 640, 480, "plumb_bob"),
        CameraModel(K_REAL, RATIONAL, 640, 480, "rational_polynomial"),
        CameraModel(K_REAL, [], 640, 480, "none"),
    ]


def _points_in_view(n: int, seed: int) -> np.ndarray:
    """(n, 3) camera-frame points whose images fall inside a 640x480 view, m."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.5, 3.0, n)
    x = rng.uniform(-0.55, 0.55, n) * z
    y = rng.uniform(-0.42, 0.42, n) * z
    return np.stack([x, y, z], axis=-1)


def _pixel_grid(width: int, height: int, step: float) -> np.ndarray:
    """(M, 2) px covering the image including its outer pixel edges (-0.5 ... w - 0.5)."""
    u, v = np.meshgrid(
        np.arange(-0.5, width - 0.5 + 1e-9, step), np.arange(-0.5, height - 0.5 + 1e-9, step)
    )
    return np.stack([u.ravel(), v.ravel()], axis=-1)


@pytest.mark.parametrize("cam", _models(), ids=lambda c: c.distortion_model)
def test_project_matches_opencv(cam: CameraModel) -> None:
    pts = _points_in_view(200, seed=1)
    ours = cam.project(torch.from_numpy(pts).reshape(2, 100, 3)).reshape(-1, 2).numpy()
    ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), cam.K.numpy(), cam.D.numpy())
    np.testing.assert_allclose(ours, ref.reshape(-1, 2), atol=1e-9, rtol=0)


@pytest.mark.parametrize("cam", _models()[:2], ids=lambda c: c.distortion_model)
def test_undistort_matches_opencv_converged(cam: CameraModel) -> None:
    uv = _pixel_grid(640, 480, 20.0)
    ours = cam.undistort_points(torch.from_numpy(uv)[None]).numpy()[0]
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 1000, 1e-15)
    K = cam.K.numpy()
    ref = cv2.undistortPointsIter(uv.reshape(-1, 1, 2), K, cam.D.numpy(), None, K, criteria)
    np.testing.assert_allclose(ours, ref.reshape(-1, 2), atol=1e-7, rtol=0)
    # OpenCV's default (5 fixed-point steps, what undistortPoints(P=K) gives) is visibly off at
    # the image corners of this lens; ours maps back onto the input.
    default = cv2.undistortPoints(uv.reshape(-1, 1, 2), K, cam.D.numpy(), P=K).reshape(-1, 2)

    def reproject(ideal: np.ndarray) -> np.ndarray:
        rays = np.concatenate([ideal, np.ones_like(ideal[:, :1])], 1) @ np.linalg.inv(K).T
        return cam.project(torch.from_numpy(rays)).numpy()

    assert np.abs(reproject(ours) - uv).max() < 1e-6
    assert np.abs(reproject(default) - uv).max() > 1e-3


def test_undistort_round_trip_whole_image() -> None:
    """project(undistort(uv)) == uv to < 1e-6 px over the real chessboard calibration."""
    cam = CameraModel(
        K_REAL, [-0.2585, -0.1297, 0, 0, 0, 0, 0, -0.4047], 640, 480, "rational_polynomial"
    )
    uv = torch.from_numpy(_pixel_grid(640, 480, 4.0))[None]
    ideal = cam.undistort_points(uv)
    rays = torch.cat([ideal, torch.ones_like(ideal[..., :1])], -1) @ torch.linalg.inv(cam.K).T
    back = cam.project(rays)
    assert (back - uv).abs().max().item() < 1e-6


@pytest.mark.parametrize("cam", _models(), ids=lambda c: c.distortion_model)
def test_project_then_undistort_is_pinhole(cam: CameraModel) -> None:
    pts = torch.from_numpy(_points_in_view(300, seed=2))
    pinhole = pts @ cam.K.T
    pinhole = pinhole[:, :2] / pinhole[:, 2:]
    np.testing.assert_allclose(cam.undistort_points(cam.project(pts)), pinhole, atol=1e-8, rtol=0)


def test_float32_and_batch_shapes_are_kept() -> None:
    cam = _models()[1]
    pts = torch.from_numpy(_points_in_view(12, seed=3)).reshape(2, 2, 3, 3).float()
    uv = cam.project(pts)
    assert uv.shape == (2, 2, 3, 2) and uv.dtype == torch.float32
    assert cam.undistort_points(uv).dtype == torch.float32
    ref = cam.project(pts.double())
    np.testing.assert_allclose(uv.double(), ref, atol=1e-3, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu() -> None:
    cam = CameraModel(torch.from_numpy(K_REAL).cuda(), torch.tensor(RATIONAL).cuda(), 640, 480,
                      "rational_polynomial")
    assert cam.K.device.type == "cpu"  # stored on the CPU, moved to the input's device
    pts = torch.from_numpy(_points_in_view(50, seed=6))
    uv = cam.project(pts.cuda())
    assert uv.device.type == "cuda"
    np.testing.assert_allclose(uv.cpu(), cam.project(pts), atol=1e-9, rtol=0)
    np.testing.assert_allclose(cam.undistort_points(uv).cpu(), cam.undistort_points(uv.cpu()),
                               atol=1e-9, rtol=0)


def test_project_and_undistort_are_differentiable() -> None:
    cam = _models()[1]
    pts = torch.from_numpy(_points_in_view(5, seed=4))[None].requires_grad_()
    assert torch.autograd.gradcheck(cam.project, (pts,))
    uv = cam.project(pts).detach().requires_grad_()
    assert torch.autograd.gradcheck(cam.undistort_points, (uv,))


def _blob_image(uv: np.ndarray, width: int, height: int, sigma: float) -> np.ndarray:
    """Gaussian blobs centred at `uv` (px), sampled at pixel centres (pixel (0,0) at 0,0)."""
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    img = np.zeros((height, width))
    for cu, cv in uv:
        img += np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * sigma**2))
    return img


def _centroids(img: np.ndarray, guesses: np.ndarray, radius: int) -> np.ndarray:
    out = []
    for gu, gv in guesses:
        u0, v0 = int(round(gu)) - radius, int(round(gv)) - radius
        win = img[v0 : v0 + 2 * radius + 1, u0 : u0 + 2 * radius + 1]
        vv, uu = np.mgrid[v0 : v0 + win.shape[0], u0 : u0 + win.shape[1]]
        out.append([(win * uu).sum() / win.sum(), (win * vv).sum() / win.sum()])
    return np.array(out)


@pytest.mark.parametrize(("new_w", "new_h", "interp"), [
    (320, 240, cv2.INTER_AREA), (960, 720, cv2.INTER_LINEAR), (480, 240, cv2.INTER_AREA)])
def test_scaled_matches_resized_image(new_w: int, new_h: int, interp: int) -> None:
    cam = _models()[0]
    pts_cam = np.array([[x, y, 2.0] for x in (-0.5, 0.0, 0.6) for y in (-0.4, 0.1, 0.5)])
    uv = cam.project(torch.from_numpy(pts_cam)).numpy()
    img = _blob_image(uv, 640, 480, sigma=6.0)
    small = cv2.resize(img, (new_w, new_h), interpolation=interp)
    sx, sy = new_w / 640, new_h / 480
    cam_s = cam.scaled(sx, sy)
    assert (cam_s.width, cam_s.height) == (new_w, new_h)
    expected = cam_s.project(torch.from_numpy(pts_cam)).numpy()
    found = _centroids(small, expected, radius=int(np.ceil(6.0 * 4 * max(sx, sy))))
    np.testing.assert_allclose(found, expected, atol=0.02, rtol=0)
    # The naive u' = s u is off by (s - 1) / 2 px: the test sees that.
    naive = uv * np.array([sx, sy])
    assert np.abs(found - naive).max() > 0.2
    resized = cam.resized(new_w, new_h)
    np.testing.assert_allclose(resized.K, cam_s.K, atol=1e-12, rtol=0)


def test_cropped_matches_sub_image() -> None:
    cam = _models()[1]
    pts_cam = np.array([[x, y, 1.5] for x in (-0.1, 0.0, 0.15) for y in (-0.1, 0.12)])
    uv = cam.project(torch.from_numpy(pts_cam)).numpy()
    img = _blob_image(uv, 640, 480, sigma=4.0)
    x0, y0, w, h = 150, 90, 320, 260
    crop = img[y0 : y0 + h, x0 : x0 + w]
    cam_c = cam.cropped(x0, y0, w, h)
    expected = cam_c.project(torch.from_numpy(pts_cam)).numpy()
    found = _centroids(crop, expected, radius=16)
    np.testing.assert_allclose(found, expected, atol=1e-3, rtol=0)
    ideal = cam.undistort_points(torch.from_numpy(uv)).numpy()
    ideal_c = cam_c.undistort_points(torch.from_numpy(expected)).numpy()
    np.testing.assert_allclose(ideal_c, ideal - [x0, y0], atol=1e-9, rtol=0)
    assert (cam_c.width, cam_c.height) == (w, h)


@pytest.mark.parametrize(("bx", "by"), [(2, 2), (3, 2), (4, 1)])
def test_binned_matches_block_averaged_image(bx: int, by: int) -> None:
    """Binning = the mean of each bx x by block (what a sensor reads out), rows and columns
    that do not fill a block dropped; the blobs' centroids land where the binned model says."""
    cam = CameraModel(K_REAL, PLUMB_BOB, 643, 481, "plumb_bob")  # sizes not multiples of bx, by
    pts_cam = np.array([[x, y, 2.0] for x in (-0.5, 0.0, 0.6) for y in (-0.4, 0.1, 0.5)])
    uv = cam.project(torch.from_numpy(pts_cam)).numpy()
    img = _blob_image(uv, 643, 481, sigma=8.0)
    w, h = 643 // bx, 481 // by
    binned_img = img[: h * by, : w * bx].reshape(h, by, w, bx).mean(axis=(1, 3))
    cam_b = cam.binned(bx, by)
    assert (cam_b.width, cam_b.height) == (w, h)
    expected = cam_b.project(torch.from_numpy(pts_cam)).numpy()
    found = _centroids(binned_img, expected, radius=24)  # 3 sigma of the least binned axis
    np.testing.assert_allclose(found, expected, atol=0.02, rtol=0)
    naive = uv / np.array([bx, by])  # image_geometry's (cx / b): (b - 1) / (2 b) px off
    assert np.abs(found - naive).max() > 0.2
    np.testing.assert_array_equal(cam_b.D, cam.D)
    # binning then undistorting = undistorting at full resolution, then binning the pixels
    ideal_b = cam_b.undistort_points(torch.from_numpy(expected)).numpy()
    ideal = cam.undistort_points(torch.from_numpy(uv)).numpy()
    np.testing.assert_allclose(ideal_b, (ideal + 0.5) / [bx, by] - 0.5, atol=1e-9, rtol=0)


def test_binned_refuses_bad_factors() -> None:
    cam = _models()[2]
    for bx, by in ((0, 1), (2.0, 2), (1, 481), (True, 1)):
        with pytest.raises(ConfigError, match="expected an integer in"):
            cam.binned(bx, by)  # type: ignore[arg-type]
    np.testing.assert_array_equal(cam.binned(1, 1).K, cam.K)


def test_scale_then_unscale_is_identity() -> None:
    cam = _models()[1]
    back = cam.scaled(0.5, 0.25).scaled(2.0, 4.0)
    np.testing.assert_allclose(back.K, cam.K, atol=1e-12, rtol=0)
    assert (back.width, back.height) == (640, 480)


def test_from_camera_info() -> None:
    cam = CameraModel.from_camera_info(K_REAL.ravel().tolist(), PLUMB_BOB, 640, 480, "plumb_bob")
    np.testing.assert_array_equal(cam.K, K_REAL)
    assert cam.K.dtype == torch.float64 and cam.D.dtype == torch.float64
    from_tensor = CameraModel(torch.from_numpy(K_REAL).float(), torch.zeros(5), 640, 480,
                              "plumb_bob")
    assert from_tensor.K.dtype == torch.float64 and from_tensor.D.dtype == torch.float64
    empty = CameraModel.from_camera_info(K_REAL.ravel(), [], 640, 480, "plumb_bob")
    assert empty.D.shape == (5,) and not empty.has_distortion
    with pytest.raises(ConfigError, match="9 numbers"):
        CameraModel.from_camera_info(K_REAL.ravel()[:8], [], 640, 480, "plumb_bob")
    with pytest.raises(ConfigError, match="equidistant"):
        CameraModel.from_camera_info(K_REAL.ravel(), [0.1] * 4, 640, 480, "equidistant")


def test_from_opencv_yaml_real_calibration(chessboard_dir: Path) -> None:
    cam = CameraModel.from_opencv_yaml(chessboard_dir / "intrinsics.yml", "M1", width=640,
                                       height=480)
    fs = cv2.FileStorage(str(chessboard_dir / "intrinsics.yml"), cv2.FILE_STORAGE_READ)
    K, D = fs.getNode("M1").mat(), fs.getNode("D1").mat().ravel()
    fs.release()
    assert cam.distortion_model == "rational_polynomial"
    np.testing.assert_array_equal(cam.K, K)
    np.testing.assert_array_equal(cam.D, D[:8])
    pts = _points_in_view(50, seed=5)
    ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K, D)  # all 14 coefficients
    np.testing.assert_allclose(cam.project(torch.from_numpy(pts)), ref.reshape(-1, 2), atol=1e-9)
    with pytest.raises(ConfigError, match="image_width"):
        CameraModel.from_opencv_yaml(chessboard_dir / "intrinsics.yml", "M2")


def _write_yaml(path: Path, d: np.ndarray, size: bool = True) -> Path:
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.write("camera_matrix", K_REAL)
    fs.write("distortion_coefficients", d.reshape(1, -1))
    if size:
        fs.write("image_width", 640)
        fs.write("image_height", 480)
    fs.release()
    return path


def test_from_opencv_yaml_coefficient_counts(tmp_path: Path) -> None:
    five = CameraModel.from_opencv_yaml(
        _write_yaml(tmp_path / "a.yml", np.array(PLUMB_BOB)), "camera_matrix")
    assert five.distortion_model == "plumb_bob" and (five.width, five.height) == (640, 480)
    four = CameraModel.from_opencv_yaml(
        _write_yaml(tmp_path / "b.yml", np.array(PLUMB_BOB[:4])), "camera_matrix")
    np.testing.assert_array_equal(four.D, PLUMB_BOB[:4] + [0.0])
    d14 = np.zeros(14)
    d14[:8] = RATIONAL
    ok = CameraModel.from_opencv_yaml(_write_yaml(tmp_path / "c.yml", d14), "camera_matrix")
    assert ok.distortion_model == "rational_polynomial"
    d14[9] = 1e-3  # a thin-prism coefficient: no ROS model has it
    with pytest.raises(ConfigError, match="beyond the eighth"):
        CameraModel.from_opencv_yaml(_write_yaml(tmp_path / "d.yml", d14), "camera_matrix")
    with pytest.raises(ConfigError, match="no node 'M1'"):
        CameraModel.from_opencv_yaml(tmp_path / "a.yml", "M1")
    with pytest.raises(ConfigError, match="width="):
        CameraModel.from_opencv_yaml(
            _write_yaml(tmp_path / "e.yml", np.array(PLUMB_BOB), size=False), "camera_matrix")
    with pytest.raises(ConfigError, match="does not exist"):
        CameraModel.from_opencv_yaml(tmp_path / "missing.yml")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"distortion_model": "fisheye"}, "distortion_model"),
    ({"D": [0.1, 0.2]}, "takes 5 coefficients"),
    ({"D": [0.1, 0.0, 0.0, 0.0, float("nan")]}, "finite"),
    ({"K": np.eye(2)}, r"shape \(3, 3\)"),
    ({"K": np.diag([500.0, -500.0, 1.0])}, "fx, fy > 0"),
    ({"K": np.diag([0.0, 500.0, 1.0])}, "fx, fy > 0"),
    ({"K": np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, np.inf]])}, "finite"),
    ({"K": np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 2.0]])}, "last rows"),
    ({"K": "not a matrix"}, "expected numbers"),
    ({"width": 0}, "width"),
    ({"height": 480.0}, "height"),
])
def test_invalid_models_raise(kwargs: dict, match: str) -> None:
    args = {"K": K_REAL, "D": PLUMB_BOB, "width": 640, "height": 480,
            "distortion_model": "plumb_bob"}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        CameraModel(**args)


def test_invalid_operations_raise() -> None:
    cam = _models()[0]
    with pytest.raises(ConfigError, match="whole number"):
        cam.scaled(1 / 3, 0.5)
    with pytest.raises(ConfigError, match="factor > 0"):
        cam.scaled(-1.0, 1.0)
    with pytest.raises(ConfigError, match="not inside"):
        cam.cropped(600, 0, 100, 100)
    with pytest.raises(ConfigError, match="integer"):
        cam.cropped(1.5, 0, 100, 100)
    with pytest.raises(ShapeError, match="points_cam"):
        cam.project(torch.zeros(4, 2))
    with pytest.raises(ShapeError, match="uv"):
        cam.undistort_points(torch.zeros(4, 3))

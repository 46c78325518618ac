# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from dvc_perception.errors import InputError
from dvc_perception.pipeline.pipeline import ObjectPose
from dvc_perception.ros import convert


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip(rgb, encoding):
    msg = convert.rgb_to_image_msg(rgb, Header(frame_id="cam"), encoding)
    np.testing.assert_array_equal(convert.image_msg_to_rgb(msg), rgb)


def test_mono8_and_padded_rows(rgb):
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    padded = np.zeros((7, 8), np.uint8)  # step 8 > width 5: padding must be skipped
    padded[:, :5] = gray
    msg = Image(height=7, width=5, encoding="mono8", step=8)
    msg.data = array.array("B", padded.tobytes())
    out = convert.image_msg_to_rgb(msg)
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


def test_bad_images_are_input_errors(rgb):
    msg = convert.rgb_to_image_msg(rgb, Header())
    msg.encoding = "16UC1"
    with pytest.raises(InputError, match="16UC1"):
        convert.image_msg_to_rgb(msg)
    msg = convert.rgb_to_image_msg(rgb, Header())
    msg.data = msg.data[:-10]
    with pytest.raises(InputError, match="truncated"):
        convert.image_msg_to_rgb(msg)
    msg = convert.rgb_to_image_msg(rgb, Header())
    msg.step = 3
    with pytest.raises(InputError, match="step"):
        convert.image_msg_to_rgb(msg)


def test_compressed_jpeg_png(rgb):
    for fmt, ext in (("rgb8; png compressed bgr8", ".png"), ("jpeg", ".jpg")):
        ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        msg = CompressedImage(format=fmt)
        msg.data = array.array("B", buf.tobytes())
        out = convert.compressed_msg_to_rgb(msg)
        reference = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(out, reference)
        if ext == ".png":
            np.testing.assert_array_equal(out, rgb)  # lossless
    with pytest.raises(InputError, match="decode"):
        convert.compressed_msg_to_rgb(CompressedImage(format="jpeg", data=b"\x00\x01junk"))
    with pytest.raises(InputError, match="jpeg or png"):
        convert.compressed_msg_to_rgb(CompressedImage(format="theora"))


def _info(**kw) -> CameraInfo:
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.k = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    info.d = [0.1, -0.05, 0.001, 0.002, 0.0]
    info.p = [480.0, 0.0, 330.0, 0.0, 0.0, 490.0, 235.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def test_camera_info_raw_and_rectified():
    raw = convert.camera_info_to_camera_model(_info(), rectified=False)
    np.testing.assert_array_equal(raw.K.numpy(), np.array(_info().k).reshape(3, 3))
    np.testing.assert_array_equal(raw.D.numpy(), np.array(_info().d))
    assert raw.distortion_model == "plumb_bob"
    rect = convert.camera_info_to_camera_model(_info(), rectified=True)
    np.testing.assert_array_equal(rect.K.numpy(), np.array(_info().p).reshape(3, 4)[:, :3])
    assert rect.distortion_model == "none"
    rational = convert.camera_info_to_camera_model(
        _info(distortion_model="rational_polynomial", d=[0.1, 0.01, 0, 0, 0, 0.02, 0, 0]),
        rectified=False,
    )
    assert rational.D.numel() == 8


@pytest.mark.parametrize(
    "change, message",
    [
        ({"distortion_model": "equidistant"}, "equidistant"),
        ({"binning_x": 641}, "binning 641x1 is larger than the 640x480 region"),
        ({"k": [0.0] * 9}, "fx, fy > 0"),
        ({"k": [float("nan")] + [0.0] * 7 + [1.0]}, "finite"),
        ({"width": 0}, "size"),
    ],
)
def test_camera_info_bad_values_are_input_errors(change, message):
    with pytest.raises(InputError, match=message):
        convert.camera_info_to_camera_model(_info(**change), rectified=False)


def _points(n: int, seed: int) -> np.ndarray:
    """(n, 3) m, camera frame, inside the 640x480 view of `_info()`."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.4, 3.0, n)
    return np.stack([rng.uniform(-0.5, 0.5, n) * z, rng.uniform(-0.4, 0.4, n) * z, z], -1)


def _roi_info(x: int, y: int, w: int, h: int, bx: int, by: int, **kw) -> CameraInfo:
    info = _info(**kw)
    info.binning_x, info.binning_y = bx, by
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = x, y, w, h
    info.roi.do_rectify = (w, h) != (0, 0)
    return info


#: (x_offset, y_offset, width, height, binning_x, binning_y), full-resolution px (REP 104)
ROI_BINNING = [(0, 0, 0, 0, 2, 2), (0, 0, 0, 0, 0, 3), (100, 60, 301, 201, 1, 0),
               (100, 60, 301, 201, 2, 2), (37, 11, 600, 455, 3, 4), (0, 0, 640, 480, 4, 2)]


@pytest.mark.parametrize("roi_binning", ROI_BINNING, ids=str)
@pytest.mark.parametrize("distortion", ["plumb_bob", "rational_polynomial", "none"])
def test_camera_info_roi_and_binning_match_full_resolution_opencv(roi_binning, distortion):
    """Reference: cv2.projectPoints with the full-resolution K, D, then the pixel moved into
    the ROI and binned by hand: binned pixel i covers full pixels x_offset + b i .. + b - 1,
    whose centres average to x_offset + b i + (b - 1) / 2."""
    x0, y0, rw, rh, bx, by = roi_binning
    d = {"plumb_bob": [0.1, -0.05, 0.001, 0.002, 0.01],
         "rational_polynomial": [-0.26, -0.13, 0.0011, 0.0007, 0.02, 0.01, -0.03, -0.40],
         "none": []}[distortion]
    info = _roi_info(*roi_binning, distortion_model=distortion if d else "plumb_bob", d=d)
    camera = convert.camera_info_to_camera_model(info, rectified=False)
    rw, rh = (rw or 640), (rh or 480)
    bx, by = max(bx, 1), max(by, 1)
    assert (camera.width, camera.height) == (rw // bx, rh // by)
    assert convert.camera_info_image_size(info) == (rw // bx, rh // by)
    pts = _points(300, seed=len(d) + bx)
    K = np.array(info.k).reshape(3, 3)
    full, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K, np.array(d))
    full = full.reshape(-1, 2)
    expected = (full - [x0, y0] - [(bx - 1) / 2, (by - 1) / 2]) / [bx, by]
    got = camera.project(torch.from_numpy(pts)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-9, rtol=0)
    if d:  # undistortion: the full-resolution model's (OpenCV, converged), moved likewise
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 1000, 1e-15)
        ideal = cv2.undistortPointsIter(full.reshape(-1, 1, 2), K, np.array(d), None, K,
                                        criteria).reshape(-1, 2)
        ideal_roi = (ideal - [x0, y0] - [(bx - 1) / 2, (by - 1) / 2]) / [bx, by]
        np.testing.assert_allclose(camera.undistort_points(torch.from_numpy(expected)).numpy(),
                                   ideal_roi, atol=1e-7, rtol=0)
    # rectified images: the same map applied to P, no distortion
    rect = convert.camera_info_to_camera_model(info, rectified=True)
    P = np.array(info.p).reshape(3, 4)
    uvw = pts @ P[:, :3].T
    expected_rect = (uvw[:, :2] / uvw[:, 2:] - [x0, y0] - [(bx - 1) / 2, (by - 1) / 2]) / [bx, by]
    np.testing.assert_allclose(rect.project(torch.from_numpy(pts)).numpy(), expected_rect,
                               atol=1e-9, rtol=0)


@pytest.mark.parametrize(("roi", "message"), [
    ((10, 0, 0, 0), "ROI .*x_offset 10.*: expected all zeros"),
    ((600, 0, 100, 100), "inside the 640x480 full-resolution image"),
    ((0, 400, 640, 81), "inside the 640x480"),
    ((5, 5, 0, 10), "non-empty region"),
])
def test_camera_info_bad_roi_is_an_input_error(roi, message):
    with pytest.raises(InputError, match=message):
        convert.camera_info_to_camera_model(_roi_info(*roi, 1, 1), rectified=False)


def test_camera_info_size_rule_names_roi_and_binning():
    assert convert.camera_info_size_rule(_info()) == ""
    rule = convert.camera_info_size_rule(_roi_info(100, 60, 301, 201, 2, 2))
    assert "ROI x_offset 100 y_offset 60 301x201, binning 2x2" in rule and "150x100 px" in rule


def test_depth_camera_info_keeps_roi_and_binning():
    info = _roi_info(100, 60, 300, 200, 2, 2)
    out = convert.depth_camera_info(info, Header(frame_id="cam"))
    assert (out.binning_x, out.binning_y, out.roi) == (2, 2, info.roi)
    assert (out.width, out.height, list(out.k)) == (640, 480, list(info.k))


def test_quaternion_matches_scipy_including_near_pi():
    rng = np.random.default_rng(1)
    rotations = list(Rotation.random(50, random_state=2)) + [
        Rotation.from_rotvec([np.pi - 1e-9, 0, 0]),
        Rotation.from_rotvec([0, 0, np.pi]),
        Rotation.identity(),
    ]
    for rot in rotations:
        q = convert.matrix_to_quaternion_xyzw(rot.as_matrix())
        ref = rot.as_quat()  # x, y, z, w
        assert min(np.abs(q - ref).max(), np.abs(q + ref).max()) < 1e-9
    del rng


def test_pose_covariance_is_row_major_ros_order():
    cov = np.arange(36, dtype=np.float64).reshape(6, 6)
    pose = ObjectPose("board", np.eye(3), np.array([0.1, 0.2, 0.3]), 1.0, cov, np.zeros((4, 2)), 4)
    msg = convert.object_pose_to_msg(pose, Header(frame_id="cam"))
    assert list(msg.pose.covariance) == list(range(36))
    assert msg.header.frame_id == "cam"
    assert (msg.pose.pose.position.x, msg.pose.pose.position.z) == (0.1, 0.3)
    markers = convert.poses_to_marker_array([pose], Header(frame_id="cam"), 0.1)
    assert {m.ns for m in markers.markers} == {"board"} and len(markers.markers) == 3


def test_point_cloud_backprojects_depth():
    depth = np.full((4, 6), 2.0, np.float32)
    depth[0, 0] = np.nan
    K = np.array([[100.0, 0, 2.0], [0, 100.0, 1.0], [0, 0, 1]])
    msg = convert.depth_to_point_cloud(depth, K, Header(), decimation=2)
    pts = np.frombuffer(msg.data, np.float32).reshape(-1, 3)
    assert msg.width == 5  # 2 x 3 decimated pixels, one NaN left out
    v, u = 2, 4
    expected = [(u - 2.0) / 100.0 * 2.0, (v - 1.0) / 100.0 * 2.0, 2.0]
    assert np.any(np.all(np.abs(pts - np.float32(expected)) < 1e-6, axis=1))


def test_pose_message_round_trip_and_bad_quaternions():
    from geometry_msgs.msg import Pose, Quaternion

    rng = np.random.default_rng(4)
    for _ in range(20):
        rvec = rng.normal(size=3)
        R, _ = cv2.Rodrigues(rvec)  # independent reference
        t = rng.normal(size=3)
        R_back, t_back = convert.msg_to_pose(convert.pose_to_msg(R, t))
        np.testing.assert_allclose(R_back, R, atol=1e-12)
        np.testing.assert_allclose(t_back, t, atol=0)
    msg = convert.pose_to_msg(np.eye(3), np.zeros(3))
    msg.orientation = Quaternion(x=0.0, y=0.0, z=0.0, w=2.0)  # not unit: normalised
    np.testing.assert_allclose(convert.msg_to_pose(msg)[0], np.eye(3), atol=0)
    for bad in (Quaternion(x=0.0, y=0.0, z=0.0, w=0.0), Quaternion(x=float("nan"), w=1.0)):
        with pytest.raises(InputError, match="quaternion"):
            convert.msg_to_pose(Pose(orientation=bad))

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Conversions between ROS messages and the pipeline's numpy / dataclass types. No algorithms.

Every function that reads a message validates it and raises `InputError` naming what was
expected and what arrived (encoding, size, truncation, NaN intrinsics, binning, ROI).
"""

from __future__ import annotations

import array
from collections.abc import Sequence

import cv2
import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, PoseArray, PoseWithCovarianceStamped, Quaternion
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from dvc_perception.errors import DvcError, InputError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.pipeline.pipeline import ObjectPose

#: Supported raw encodings -> (channels, cv2 conversion to RGB or None).
IMAGE_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
}


def stamp_to_ns(stamp: object) -> int:
    """A builtin_interfaces/Time as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)  # type: ignore[attr-defined]


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) -> (H, W, 3) uint8 RGB (a copy).

    Raises:
        InputError: unsupported encoding, zero size, a row step too small, truncated data.
    """
    encoding = msg.encoding.lower()
    if encoding not in IMAGE_ENCODINGS:
        raise InputError(
            f"image encoding {msg.encoding!r} is not supported; expected one of "
            f"{sorted(IMAGE_ENCODINGS)}"
        )
    channels, conversion = IMAGE_ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise InputError(f"image size {w}x{h}: expected a positive width and height")
    if step < w * channels:
        raise InputError(f"image step {step} < width {w} x {channels} channels ({encoding})")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * h:
        raise InputError(
            f"image data truncated: {data.size} bytes, expected {step * h} "
            f"({h} rows x step {step})"
        )
    rows = data[: step * h].reshape(h, step)[:, : w * channels]
    pixels = rows.reshape(h, w, channels)
    if conversion is None:
        return np.ascontiguousarray(pixels).copy()
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png, image_transport's format) -> (H, W, 3) RGB.

    Raises:
        InputError: a format other than jpeg/png, or data that does not decode.
    """
    fmt = msg.format.lower()
    if "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise InputError(f"compressed image format {msg.format!r}: expected jpeg or png")
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if bgr is None:
        raise InputError(
            f"compressed image ({msg.format!r}, {buffer.size} bytes) does not decode"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_image_msg(rgb: np.ndarray, header: Header, encoding: str = "rgb8") -> Image:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image in `encoding` (rgb8, bgr8, mono8, rgba8, bgra8)."""
    conversions = {
        "rgb8": None,
        "bgr8": cv2.COLOR_RGB2BGR,
        "mono8": cv2.COLOR_RGB2GRAY,
        "rgba8": cv2.COLOR_RGB2RGBA,
        "bgra8": cv2.COLOR_RGB2BGRA,
    }
    if encoding not in conversions:
        raise InputError(f"encoding {encoding!r}: expected one of {sorted(conversions)}")
    code = conversions[encoding]
    pixels = np.ascontiguousarray(rgb if code is None else cv2.cvtColor(rgb, code))
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(pixels.strides[0])
    msg.data = array.array("B", pixels.tobytes())
    return msg


def camera_info_to_camera_model(msg: CameraInfo, rectified: bool) -> CameraModel:
    """sensor_msgs/CameraInfo -> `CameraModel` of the image it describes.

    Args:
        msg: the camera_info.
        rectified: True for rectified images (``image_rect``): intrinsics from P[:3, :3], no
            distortion. False for raw images: K and D (plumb_bob or rational_polynomial).

    Raises:
        InputError: binning or a region of interest (unsupported), a distortion model other than
            plumb_bob / rational_polynomial, a zero size, or zero / non-finite intrinsics.
    """
    w, h = int(msg.width), int(msg.height)
    if w <= 0 or h <= 0:
        raise InputError(f"camera_info size {w}x{h}: expected a positive width and height")
    if int(msg.binning_x) > 1 or int(msg.binning_y) > 1:
        raise InputError(
            f"camera_info binning {msg.binning_x}x{msg.binning_y} is not supported (expected 0 "
            "or 1): publish full-resolution camera_info for the image"
        )
    roi = msg.roi
    full = (int(roi.x_offset), int(roi.y_offset)) == (0, 0) and (
        (int(roi.width), int(roi.height)) in ((0, 0), (w, h))
    )
    if not full:
        raise InputError(
            f"camera_info ROI (x {roi.x_offset}, y {roi.y_offset}, {roi.width}x{roi.height}) is "
            "not supported: expected the full image"
        )
    if rectified:
        P = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
        K, D, model = P[:, :3].copy(), np.zeros(0), "none"
        source = "P"
    else:
        K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        D = np.asarray(msg.d, dtype=np.float64)
        model = msg.distortion_model
        source = "K"
        if model not in ("plumb_bob", "rational_polynomial"):
            raise InputError(
                f"camera_info distortion_model {model!r}: expected plumb_bob or "
                "rational_polynomial (or set input_rectified for rectified images)"
            )
        if D.size == 0 or not np.any(D):
            D, model = np.zeros(0), "none"
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0.0 or K[1, 1] <= 0.0 or K[2, 2] != 1.0:
        raise InputError(
            f"camera_info {source}: expected finite intrinsics with fx, fy > 0 and a last row "
            f"(0, 0, 1), got {K.ravel().tolist()}"
        )
    if not np.all(np.isfinite(D)):
        raise InputError(f"camera_info D: expected finite coefficients, got {D.tolist()}")
    try:
        return CameraModel.from_camera_info(K.ravel().tolist(), D.tolist(), w, h, model)
    except DvcError as err:
        raise InputError(f"camera_info: {err}") from err


def matrix_to_quaternion_xyzw(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (4,) unit quaternion, ROS order (x, y, z, w), w >= 0.

    A numpy front end of `geometry.so3.matrix_to_quaternion` (Shepperd's method, float64).
    """
    import torch

    from dvc_perception.geometry.so3 import matrix_to_quaternion

    return matrix_to_quaternion(torch.as_tensor(np.asarray(R), dtype=torch.float64)).numpy()


def pose_to_msg(R: np.ndarray, t: np.ndarray) -> Pose:
    """Rotation (3, 3) and translation (3,) m -> geometry_msgs/Pose."""
    q = matrix_to_quaternion_xyzw(R)
    return Pose(
        position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def msg_to_pose(msg: Pose) -> tuple[np.ndarray, np.ndarray]:
    """geometry_msgs/Pose -> (R (3, 3), t (3,) m); the quaternion is normalised.

    Raises:
        InputError: a zero or non-finite quaternion or position (no rotation to read).
    """
    import torch

    from dvc_perception.geometry.so3 import quaternion_to_matrix

    q = np.array([msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w])
    t = np.array([msg.position.x, msg.position.y, msg.position.z], dtype=np.float64)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t)) and np.linalg.norm(q) > 0):
        raise InputError(f"pose: expected a finite position and a non-zero quaternion, got "
                         f"position {t.tolist()}, orientation (x, y, z, w) {q.tolist()}")
    R = quaternion_to_matrix(torch.as_tensor(q, dtype=torch.float64)).numpy()
    return R, t


def object_pose_to_msg(pose: ObjectPose, header: Header) -> PoseWithCovarianceStamped:
    """`ObjectPose` -> PoseWithCovarianceStamped; covariance (6, 6) ROS order, row-major 36."""
    msg = PoseWithCovarianceStamped()
    msg.header = header
    msg.pose.pose = pose_to_msg(pose.R, pose.t)
    msg.pose.covariance = np.ascontiguousarray(pose.covariance, dtype=np.float64).reshape(36)
    return msg


def poses_to_pose_array(poses: Sequence[ObjectPose], header: Header) -> PoseArray:
    """Every pose of a frame as one PoseArray (for RViz)."""
    msg = PoseArray()
    msg.header = header
    msg.poses = [pose_to_msg(p.R, p.t) for p in poses]
    return msg


def poses_to_marker_array(
    poses: Sequence[ObjectPose], header: Header, axis_length_m: float, lifetime_s: float = 1.0
) -> MarkerArray:
    """An x/y/z axis triad (red/green/blue arrows) per pose.

    Namespace = object id, marker id = 3 x instance + axis (unique per object and instance).
    """
    colours = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    markers = MarkerArray()
    lifetime = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1.0) * 1e9))
    for pose in poses:
        origin = pose.t
        for axis in range(3):
            m = Marker()
            m.header = header
            m.ns = pose.object_id
            m.id = 3 * pose.instance + axis
            m.type = Marker.ARROW
            m.action = Marker.ADD
            m.pose.orientation.w = 1.0
            tip = origin + axis_length_m * pose.R[:, axis]
            m.points = [
                Point(x=float(origin[0]), y=float(origin[1]), z=float(origin[2])),
                Point(x=float(tip[0]), y=float(tip[1]), z=float(tip[2])),
            ]
            m.scale.x = 0.1 * axis_length_m  # shaft diameter
            m.scale.y = 0.2 * axis_length_m  # head diameter
            m.scale.z = 0.3 * axis_length_m  # head length
            r, g, b = colours[axis]
            m.color = ColorRGBA(r=r, g=g, b=b, a=1.0)
            m.lifetime = lifetime
            markers.markers.append(m)
    return markers


def depth_to_image_msg(depth: np.ndarray, header: Header) -> Image:
    """(H, W) float32 m, NaN unknown -> sensor_msgs/Image 32FC1 (REP 118)."""
    d = np.ascontiguousarray(depth, dtype=np.float32)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(d.shape[0]), int(d.shape[1])
    msg.encoding = "32FC1"
    msg.is_bigendian = 0
    msg.step = int(d.strides[0])
    msg.data = array.array("B", d.tobytes())
    return msg


def depth_camera_info(info: CameraInfo, header: Header) -> CameraInfo:
    """camera_info of the published depth: the input's intrinsics (same resolution), `header`."""
    out = CameraInfo()
    out.header = header
    out.height, out.width = info.height, info.width
    out.distortion_model = info.distortion_model
    out.d, out.k, out.r, out.p = list(info.d), info.k, info.r, info.p
    return out


def depth_to_point_cloud(
    depth: np.ndarray, K: np.ndarray, header: Header, decimation: int
) -> PointCloud2:
    """Depth (H, W) m -> PointCloud2 (x, y, z float32, optical frame), every `decimation` px.

    `K` (3, 3) are the pinhole intrinsics of the depth image; NaN / non-positive depths are left
    out (the cloud is unorganised).
    """
    d = np.asarray(depth, dtype=np.float64)[::decimation, ::decimation]
    v, u = np.mgrid[0 : depth.shape[0] : decimation, 0 : depth.shape[1] : decimation]
    keep = np.isfinite(d) & (d > 0.0)
    z = d[keep]
    x = (u[keep] - K[0, 2]) / K[0, 0] * z
    y = (v[keep] - K[1, 2]) / K[1, 1] * z
    pts = np.stack([x, y, z], axis=1).astype(np.float32)
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = 1, int(pts.shape[0])
    msg.fields = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, n in enumerate("xyz")
    ]
    msg.is_bigendian = False
    msg.point_step = 12
    msg.row_step = 12 * int(pts.shape[0])
    msg.is_dense = True
    msg.data = array.array("B", pts.tobytes())
    return msg

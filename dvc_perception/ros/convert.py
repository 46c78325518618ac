# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Conversions between ROS messages and the pipeline's numpy / dataclass types. No algorithms.

Every function that reads a message validates it and raises `InputError` naming what was
expected and what arrived (encoding, size, truncation, NaN or implausible intrinsics, an ROI
outside the image).
"""

from __future__ import annotations

import array
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, PoseArray, PoseWithCovarianceStamped, Quaternion
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from dvc_perception.engines.preprocess import check_image_size
from dvc_perception.errors import DvcError, InputError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.pipeline.pipeline import ObjectPose


@dataclass(frozen=True)
class ImageEncoding:
    """How a sensor_msgs/Image encoding stores a pixel, and how it becomes RGB.

    Attributes:
        channels: values per pixel as stored: 3 (RGB/BGR), 4 (with alpha), 1 (mono, Bayer
            mosaic) or 2 (packed YUV 4:2:2: Y and, alternately, U or V).
        bytes_per_channel: 1, or 2 for 16-bit encodings (byte order from ``is_bigendian``;
            converted to 8 bit by keeping the high byte, ``>> 8``).
        to_rgb: ``cv2.cvtColor`` code to RGB (after the 8-bit reduction), None when RGB.
        even_width: the width must be even (4:2:2: each pixel pair shares one U and one V).
    """

    channels: int
    bytes_per_channel: int
    to_rgb: int | None
    even_width: bool = False


# OpenCV names a Bayer pattern by the 2nd and 3rd pixels of its 2nd row, ROS by its top-left
# 2x2 block read row by row, so ROS bayer_rggb8 (R G / G B) is OpenCV's BayerBG (the same code
# as its recent alias BayerRGGB, absent from older OpenCV 4 releases; test_input_encodings checks
# every pattern on a synthetic mosaic).
#: Every raw encoding `image_msg_to_rgb` converts (sensor_msgs/image_encodings names, lower case).
IMAGE_ENCODINGS: dict[str, ImageEncoding] = {
    "rgb8": ImageEncoding(3, 1, None),
    "bgr8": ImageEncoding(3, 1, cv2.COLOR_BGR2RGB),
    "mono8": ImageEncoding(1, 1, cv2.COLOR_GRAY2RGB),
    "rgba8": ImageEncoding(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": ImageEncoding(4, 1, cv2.COLOR_BGRA2RGB),
    "rgb16": ImageEncoding(3, 2, None),
    "bgr16": ImageEncoding(3, 2, cv2.COLOR_BGR2RGB),
    "mono16": ImageEncoding(1, 2, cv2.COLOR_GRAY2RGB),
    "yuv422_yuy2": ImageEncoding(2, 1, cv2.COLOR_YUV2RGB_YUY2, even_width=True),  # Y0 U Y1 V
    "yuyv": ImageEncoding(2, 1, cv2.COLOR_YUV2RGB_YUY2, even_width=True),  # newer ROS name
    "yuv422": ImageEncoding(2, 1, cv2.COLOR_YUV2RGB_UYVY, even_width=True),  # U Y0 V Y1 in ROS
    "uyvy": ImageEncoding(2, 1, cv2.COLOR_YUV2RGB_UYVY, even_width=True),
    "bayer_rggb8": ImageEncoding(1, 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": ImageEncoding(1, 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": ImageEncoding(1, 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": ImageEncoding(1, 1, cv2.COLOR_BayerGB2RGB),
}
#: Depth and other generic encodings (REP 118 / image_encodings ``<bits><U|S|F>C<n>``).
_GENERIC_ENCODING = re.compile(r"^(8|16|32|64)[usf]c[1-4]$")


def stamp_to_ns(stamp: object) -> int:
    """A builtin_interfaces/Time as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)  # type: ignore[attr-defined]


def frame_id_problem(header: Header) -> str | None:
    """Why `header` cannot place its data in the TF tree, or None when it can.

    An empty ``frame_id`` still lets the node compute poses, but every output copies it, so no
    consumer can transform them: a message to warn with (throttled), never a reason to refuse.
    """
    if not header.frame_id.strip():
        return (
            f"header.frame_id is {header.frame_id!r} (stamp {stamp_to_ns(header.stamp)} ns): "
            "outputs keep it and cannot be placed in TF; set the camera driver's frame_id "
            "(e.g. camera_optical_frame)"
        )
    return None


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB (a copy).

    Encodings (`IMAGE_ENCODINGS`): rgb8, bgr8, rgba8, bgra8 (alpha dropped), mono8 (grey
    replicated); rgb16, bgr16, mono16 (high byte kept, ``is_bigendian`` honoured); yuv422_yuy2 /
    yuyv (Y0 U Y1 V) and yuv422 / uyvy (U Y0 V Y1), BT.601 as OpenCV decodes them; bayer_rggb8,
    bayer_bggr8, bayer_gbrg8, bayer_grbg8 (bilinear demosaic). Row padding (``step`` larger than
    a row) is skipped.

    Raises:
        InputError: unsupported encoding (depth such as 16UC1 included), zero size, a side over
            `engines.preprocess.MAX_IMAGE_SIDE_PX`, an odd width for YUV 4:2:2, a row step too
            small, truncated data.
    """
    encoding = msg.encoding.lower()
    if encoding not in IMAGE_ENCODINGS:
        kind = (" is a depth or generic encoding, not a colour or mono camera image;"
                if _GENERIC_ENCODING.match(encoding) else " is not supported;")
        raise InputError(
            f"image encoding {msg.encoding!r}{kind} expected one of {sorted(IMAGE_ENCODINGS)}"
        )
    spec = IMAGE_ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise InputError(f"image size {w}x{h}: expected a positive width and height")
    check_image_size(w, h, f"{encoding} image")
    if spec.even_width and w % 2:
        raise InputError(f"image width {w} is odd: {encoding} (YUV 4:2:2) needs an even width")
    row_bytes = w * spec.channels * spec.bytes_per_channel
    if step < row_bytes:
        raise InputError(
            f"image step {step} < width {w} x {spec.channels} channels x "
            f"{spec.bytes_per_channel} bytes ({encoding})"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * h:
        raise InputError(
            f"image data truncated: {data.size} bytes, expected {step * h} "
            f"({h} rows x step {step})"
        )
    rows = data[: step * h].reshape(h, step)[:, :row_bytes].copy()  # never a view of msg.data
    if spec.bytes_per_channel == 2:  # a contiguous copy: an odd step cannot misalign the view
        rows = (rows.view(">u2" if msg.is_bigendian else "<u2") >> 8).astype(np.uint8)
    pixels = rows.reshape(h, w, spec.channels)
    if spec.to_rgb is None:
        return pixels
    return cv2.cvtColor(pixels if spec.channels > 1 else pixels[:, :, 0], spec.to_rgb)


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png, image_transport's format) -> (H, W, 3) RGB.

    Raises:
        InputError: a format other than jpeg/png, data that does not decode, or a decoded
            side over `engines.preprocess.MAX_IMAGE_SIDE_PX`.
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
    check_image_size(int(bgr.shape[1]), int(bgr.shape[0]), f"{msg.format!r} compressed image")
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


#: Largest plausible focal length [px] (a 1e6 px focal length is a 1 m lens on 1 um pixels):
#: above it camera_info holds a unit or calibration mistake, not a lens.
MAX_FOCAL_PX = 1e6
#: Largest plausible |distortion coefficient| (strong fisheye rational models stay below 1e2).
MAX_DISTORTION_COEFFICIENT = 1e3


def camera_info_roi_and_binning(msg: CameraInfo) -> tuple[tuple[int, int, int, int], int, int]:
    """The region of interest (x, y, width, height) in full-resolution px and the binning.

    REP 104: ``width`` x ``height`` is the full (calibrated) resolution; an all-zero ROI, or
    binning 0, means none; the image is the ROI downsampled by the binning.

    Raises:
        InputError: a zero size, an ROI that is partly zero, empty or not inside the full
            resolution image, or binning larger than the ROI.
    """
    w, h = int(msg.width), int(msg.height)
    if w <= 0 or h <= 0:
        raise InputError(f"camera_info size {w}x{h}: expected a positive width and height")
    r = msg.roi
    roi = (int(r.x_offset), int(r.y_offset), int(r.width), int(r.height))
    if roi == (0, 0, 0, 0):
        roi = (0, 0, w, h)
    x, y, rw, rh = roi
    if rw <= 0 or rh <= 0 or x + rw > w or y + rh > h:
        raise InputError(
            f"camera_info ROI (x_offset {x}, y_offset {y}, {rw}x{rh}): expected all zeros "
            f"(full image) or a non-empty region inside the {w}x{h} full-resolution image"
        )
    bx, by = max(1, int(msg.binning_x)), max(1, int(msg.binning_y))
    if bx > rw or by > rh:
        raise InputError(f"camera_info binning {bx}x{by} is larger than the {rw}x{rh} region "
                         "it bins")  # fmt: skip
    return roi, bx, by


def camera_info_image_size(msg: CameraInfo) -> tuple[int, int]:
    """(width, height) px of the image `msg` describes: the ROI size // binning (REP 104).

    Raises:
        InputError: as `camera_info_roi_and_binning`.
    """
    (_, _, rw, rh), bx, by = camera_info_roi_and_binning(msg)
    return rw // bx, rh // by


def camera_info_size_rule(msg: CameraInfo) -> str:
    """How `msg` sets the image size, for error messages ("" without ROI and binning)."""
    try:
        roi, bx, by = camera_info_roi_and_binning(msg)
    except InputError as err:
        return f" ({err})"
    if roi == (0, 0, int(msg.width), int(msg.height)) and (bx, by) == (1, 1):
        return ""
    w, h = roi[2] // bx, roi[3] // by
    return (f" (camera_info: {msg.width}x{msg.height} full resolution, ROI x_offset {roi[0]} "
            f"y_offset {roi[1]} {roi[2]}x{roi[3]}, binning {bx}x{by}: the image must be the "
            f"ROI size // binning = {w}x{h} px, REP 104)")  # fmt: skip


def camera_info_to_camera_model(msg: CameraInfo, rectified: bool) -> CameraModel:
    """sensor_msgs/CameraInfo -> `CameraModel` of the image it describes.

    Binning and region of interest (REP 104) are applied exactly: K, P and D describe the full
    resolution ``width`` x ``height``, and the image is the ROI (x_offset, y_offset, width,
    height, in full-resolution px) binned by ``binning_x`` x ``binning_y``, so an image pixel
    (i, j) covers full-resolution pixels ``x_offset + bx i .. x_offset + bx i + bx - 1``. A point
    at full-resolution u is then at ``(u - x_offset + 0.5) / bx - 0.5`` (pixel centres at
    integers): ``fx' = fx / bx``, ``cx' = (cx - x_offset + 0.5) / bx - 0.5``, likewise for v
    (`CameraModel.cropped`, then `CameraModel.binned`). image_geometry's PinholeCameraModel
    uses ``(cx - x_offset) / bx``, which leaves out the pixel-centre term and is (bx - 1) / (2
    bx) px off (0.25 px at 2x2 binning). The distortion acts on normalised coordinates, before
    K, and the ROI and binning are an affine map of pixel coordinates after it, so the reduced
    model projects, undistorts and rectifies exactly as the full-resolution model followed by
    that map. For rectified images the same map applies to P: image_proc rectifies an ROI image
    by cropping its full-resolution rectification map at the raw ROI (``do_rectify`` is not
    used).

    Args:
        msg: the camera_info.
        rectified: True for rectified images (``image_rect``): intrinsics from P[:3, :3], no
            distortion. False for raw images: K and D (plumb_bob or rational_polynomial).

    Plausibility (full resolution): fx, fy in (0, `MAX_FOCAL_PX`] px, the principal point at
    most one image size outside the image (cx in [-width, 2 width], cy in [-height, 2 height]
    px), every distortion coefficient finite with |d| <= `MAX_DISTORTION_COEFFICIENT`.

    Returns:
        The model of the image: ``camera_info_image_size(msg)`` px.

    Raises:
        InputError: an ROI or binning as `camera_info_roi_and_binning` refuses, a distortion
            model other than plumb_bob / rational_polynomial, a zero size, non-finite
            intrinsics or a last row other than (0, 0, 1), or a value outside the plausible
            ranges above (naming the field, e.g. ``K[0] (fx)``, and its value).
    """
    w, h = int(msg.width), int(msg.height)
    (x0, y0, rw, rh), bx, by = camera_info_roi_and_binning(msg)
    if rectified:
        P = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
        K, D, model = P[:, :3].copy(), np.zeros(0), "none"
        source, columns = "P", 4
    else:
        K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        D = np.asarray(msg.d, dtype=np.float64)
        model = msg.distortion_model
        source, columns = "K", 3
        if model not in ("plumb_bob", "rational_polynomial"):
            raise InputError(
                f"camera_info distortion_model {model!r}: expected plumb_bob or "
                "rational_polynomial (or set input_rectified for rectified images)"
            )
        _check_distortion(D)
        if D.size == 0 or not np.any(D):
            D, model = np.zeros(0), "none"
    if not np.all(np.isfinite(K)) or K[2, 2] != 1.0:
        raise InputError(
            f"camera_info {source}: expected finite intrinsics with fx, fy > 0 and a last row "
            f"(0, 0, 1), got {K.ravel().tolist()}"
        )
    _check_intrinsics(K, source, columns, w, h)
    try:
        camera = CameraModel.from_camera_info(K.ravel().tolist(), D.tolist(), w, h, model)
        if (x0, y0, rw, rh) != (0, 0, w, h):
            camera = camera.cropped(x0, y0, rw, rh)
        return camera.binned(bx, by) if (bx, by) != (1, 1) else camera
    except DvcError as err:
        raise InputError(f"camera_info: {err}") from err


def _check_distortion(D: np.ndarray) -> None:
    """Raise `InputError` naming the first non-finite or implausibly large coefficient."""
    for i, value in enumerate(D.tolist()):
        if not np.isfinite(value) or abs(value) > MAX_DISTORTION_COEFFICIENT:
            raise InputError(
                f"camera_info D[{i}] = {value}: expected a finite distortion coefficient with "
                f"|D[{i}]| <= {MAX_DISTORTION_COEFFICIENT:g}"
            )


def _check_intrinsics(K: np.ndarray, source: str, columns: int, width: int, height: int
                      ) -> None:
    """Raise `InputError` naming the first implausible focal length or principal point.

    `K` (3, 3) px was read from the row-major `source` matrix (K or P) of `columns` columns;
    fields are named by their index in it.
    """
    for name, row, col, low, high, open_low in (
        ("fx", 0, 0, 0.0, MAX_FOCAL_PX, True),
        ("fy", 1, 1, 0.0, MAX_FOCAL_PX, True),
        ("cx", 0, 2, -float(width), 2.0 * width, False),
        ("cy", 1, 2, -float(height), 2.0 * height, False),
    ):
        value = float(K[row, col])
        if (value <= low if open_low else value < low) or value > high:
            interval = f"({low:g}, {high:g}] px" if open_low else (
                f"[{low:g}, {high:g}] px, at most one image size outside the {width}x{height} "
                "image")  # fmt: skip
            raise InputError(
                f"camera_info {source}[{row * columns + col}] ({name}) = {value:g}: expected "
                f"{name} in {interval}"
            )


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


def pose_msg_to_matrix(msg: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> (4, 4) float64 transform (the quaternion normalised).

    Raises:
        InputError: a zero or non-finite quaternion or position (`msg_to_pose`).
    """
    R, t = msg_to_pose(msg)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def pose_in_frame(pose: ObjectPose, R: np.ndarray, t: np.ndarray) -> ObjectPose:
    """`pose` (object in the camera frame) expressed in another frame, ``T_frame_camera = (R, t)``.

    ``R' = R R_obj``, ``t' = R t_obj + t``. The covariance's translation and left-perturbation
    rotation angles (`ObjectPose.covariance`) are vectors in the camera frame, so both rotate:
    ``cov' = B cov B^T`` with ``B = diag(R, R)`` (exact; the transform itself is taken as known).
    Keypoints stay in image pixels.
    """
    R = np.asarray(R, np.float64)
    B = np.zeros((6, 6))
    B[:3, :3] = B[3:, 3:] = R
    return dataclasses.replace(pose, R=R @ pose.R, t=R @ pose.t + np.asarray(t, np.float64),
                               covariance=B @ pose.covariance @ B.T)  # fmt: skip


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
    """(H, W) float32 m, NaN unknown -> sensor_msgs/Image 32FC1 (REP 118).

    Any single-channel float image goes the same way (the depth's confidence, NaN included).
    """
    d = np.ascontiguousarray(depth, dtype=np.float32)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(d.shape[0]), int(d.shape[1])
    msg.encoding = "32FC1"
    msg.is_bigendian = 0
    msg.step = int(d.strides[0])
    msg.data = array.array("B", d.tobytes())
    return msg


#: Depth encodings `depth_image_msg_to_array` reads (REP 118): numpy dtype, metres per unit.
DEPTH_ENCODINGS: dict[str, tuple[str, float]] = {"32FC1": ("f4", 1.0), "16UC1": ("u2", 1e-3)}


def depth_image_msg_to_array(msg: Image) -> np.ndarray:
    """sensor_msgs/Image depth (REP 118) -> (H, W) float32 m, NaN where there is no measurement.

    ``32FC1`` is metres (NaN, +-inf: no usable depth, kept as NaN); ``16UC1`` is millimetres
    with 0 = no measurement. ``is_bigendian`` is honoured and row padding skipped.

    Raises:
        InputError: another encoding, a zero size, a row step too small, truncated data.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise InputError(f"depth image encoding {msg.encoding!r}: expected one of "
                         f"{sorted(DEPTH_ENCODINGS)} (REP 118)")  # fmt: skip
    kind, metres_per_unit = DEPTH_ENCODINGS[msg.encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise InputError(f"depth image size {w}x{h}: expected a positive width and height")
    row_bytes = w * int(kind[1])
    if step < row_bytes:
        raise InputError(f"depth image step {step} < width {w} x {kind[1]} bytes "
                         f"({msg.encoding})")  # fmt: skip
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * h:
        raise InputError(f"depth image data truncated: {data.size} bytes, expected {step * h} "
                         f"({h} rows x step {step})")  # fmt: skip
    rows = data[: step * h].reshape(h, step)[:, :row_bytes].copy()
    values = rows.view((">" if msg.is_bigendian else "<") + kind).astype(np.float32)
    if msg.encoding == "16UC1":
        values[values == 0] = np.nan
    values[~np.isfinite(values)] = np.nan
    return values * np.float32(metres_per_unit)


def depth_camera_info(info: CameraInfo, header: Header) -> CameraInfo:
    """camera_info of the published depth: the input's, binning and ROI included, `header`."""
    out = CameraInfo()
    out.header = header
    out.height, out.width = info.height, info.width
    out.distortion_model = info.distortion_model
    out.d, out.k, out.r, out.p = list(info.d), info.k, info.r, info.p
    out.binning_x, out.binning_y, out.roi = info.binning_x, info.binning_y, info.roi
    return out


def intrinsics_to_camera_info_msg(
    K: np.ndarray, width: int, height: int, header: Header
) -> CameraInfo:
    """Pinhole (3, 3) K [px] of a `width` x `height` image -> CameraInfo of a recorded camera.

    ``plumb_bob`` with zero distortion, R = I, P = [K | 0] (a monocular camera whose images
    are taken as rectified), no binning or region of interest.
    """
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    info = CameraInfo(header=header, height=int(height), width=int(width))
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = K.reshape(-1).tolist()
    info.r = np.eye(3).reshape(-1).tolist()
    info.p = np.hstack([K, np.zeros((3, 1))]).reshape(-1).tolist()
    return info


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


@dataclass(frozen=True)
class ObjectBox:
    """An object's axis-aligned bounding box in its own frame.

    Attributes:
        centre_obj: (3,) float64 m, the box centre in the object frame.
        size_m: (3,) float64 m, the box's extent along the object's x, y, z axes.
        source: where the box comes from (a mesh file, a board layout, 3D keypoints).
    """

    centre_obj: np.ndarray
    size_m: np.ndarray
    source: str = ""

    @classmethod
    def from_points(cls, points_obj: np.ndarray, source: str = "") -> ObjectBox:
        """The box of `points_obj` (N, 3) m, object frame (mesh vertices, board corners).

        Raises:
            InputError: not (N >= 1, 3) finite points.
        """
        pts = np.asarray(points_obj, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[0] < 1 or pts.shape[1] != 3 or not np.isfinite(pts).all():
            raise InputError(f"object box {source}: expected (N >= 1, 3) finite points, got "
                             f"shape {pts.shape}")
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        return cls(0.5 * (lo + hi), hi - lo, source)


def object_frame_name(object_id: str, instance: int, tf_prefix: str = "") -> str:
    """The TF child frame of an object instance: ``<tf_prefix><object_id>_<instance>``."""
    return f"{tf_prefix}{object_id}_{instance}"


def poses_to_detection_array(
    poses: Sequence[ObjectPose], header: Header, boxes: Mapping[str, ObjectBox]
) -> Any:
    """Every pose of a frame as a vision_msgs/Detection3DArray (vision_msgs 4.x, Humble+).

    Per pose: ``results[0].hypothesis`` = (object id, score), ``results[0].pose`` = the pose
    with the covariance `object_pose_to_msg` publishes; ``bbox.center`` = the pose applied to
    the object's box centre (orientation: the object's), ``bbox.size`` = the box extent [m];
    ``id`` = the instance index (rank by score within the object id). Empty `poses` give an
    array without detections (published, so "nothing seen" differs from "no output").

    Raises:
        InputError: a pose's object id has no box in `boxes`.
        ImportError: vision_msgs is not installed (callers check first).
    """
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    out = Detection3DArray()
    out.header = header
    for pose in poses:
        box = boxes.get(pose.object_id)
        if box is None:
            raise InputError(f"detections: no bounding box for object {pose.object_id!r}; "
                             f"known: {sorted(boxes)}")
        det = Detection3D()
        det.header = header
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = pose.object_id
        hypothesis.hypothesis.score = float(pose.score)
        hypothesis.pose = object_pose_to_msg(pose, header).pose
        det.results = [hypothesis]
        det.bbox.center = pose_to_msg(pose.R, pose.R @ box.centre_obj + pose.t)
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (float(v) for v in box.size_m)
        det.id = str(pose.instance)
        out.detections.append(det)
    return out


def poses_to_tf_message(poses: Sequence[ObjectPose], header: Header, tf_prefix: str = "") -> Any:
    """Every pose as a transform in a tf2_msgs/TFMessage (what TransformBroadcaster sends).

    Parent: ``header.frame_id`` (the camera's optical frame), child: `object_frame_name`,
    stamp: ``header.stamp``; the transform maps object coordinates into the camera frame.

    Raises:
        ImportError: tf2_msgs is not installed (callers check first).
    """
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    out = TFMessage()
    for pose in poses:
        tf = TransformStamped()
        tf.header = header
        tf.child_frame_id = object_frame_name(pose.object_id, pose.instance, tf_prefix)
        p = pose_to_msg(pose.R, pose.t)
        tf.transform.translation.x = p.position.x
        tf.transform.translation.y = p.position.y
        tf.transform.translation.z = p.position.z
        tf.transform.rotation = p.orientation
        out.transforms.append(tf)
    return out

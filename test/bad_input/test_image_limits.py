# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Images too large for OpenCV are a typed error before OpenCV sees them, and a replay turns a
too-large image, a corrupt message and an untyped failure each into one error record and goes
on with the good frames (read in the new encodings)."""

from __future__ import annotations

import array
from pathlib import Path

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
from rclpy.serialization import deserialize_message
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from dvc_perception.bag.io import AtomicBagWriter, BagReader
from dvc_perception.bag.replay import UNEXPECTED_KIND, ReplaySummary, _replay_frame, replay_bag
from dvc_perception.config import FiducialConfig
from dvc_perception.demo.boards import render_board_view
from dvc_perception.engines.preprocess import (
    MAX_IMAGE_SIDE_PX,
    check_rgb_image,
    preprocess_frame,
    warp_to_input,
)
from dvc_perception.errors import InputError
from dvc_perception.ros import convert

W, H = 320, 240
K = np.array([[300.0, 0.0, 159.5], [0.0, 300.0, 119.5], [0.0, 0.0, 1.0]])
IMAGE, INFO = "/camera/image_raw", "/camera/camera_info"
GARBAGE = b"\x00\x01\x00\x00" + bytes(range(7, 40))  # a CDR header, then nothing valid
TOO_WIDE = MAX_IMAGE_SIDE_PX + 1


def test_the_limit_is_opencvs_and_is_checked_first():
    """32767 px is where OpenCV's warp fails; 32766 px still warps."""
    affine = np.array([[0.01, 0.0, 0.0], [0.0, 0.01, 0.0]])
    assert MAX_IMAGE_SIDE_PX == 32766
    for shape in ((2, MAX_IMAGE_SIDE_PX, 3), (MAX_IMAGE_SIDE_PX, 2, 3)):
        image = np.zeros(shape, np.uint8)
        assert check_rgb_image(image) == (shape[1], shape[0])
        assert warp_to_input(image, affine, 16, 16).shape == (16, 16, 3)
    for shape in ((2, TOO_WIDE, 3), (TOO_WIDE, 2, 3)):
        image = np.zeros(shape, np.uint8)
        with pytest.raises(cv2.error, match="SHRT_MAX"):  # what the check keeps away
            warp_to_input(image, affine, 16, 16)
        size = f"{shape[1]}x{shape[0]}"
        with pytest.raises(InputError, match=f"frame is {size} px: expected at most 32766 px"):
            check_rgb_image(image, "frame")
        for resize in ("letterbox", "stretch"):  # the pipeline's network front end
            with pytest.raises(InputError, match="at most 32766 px per side"):
                preprocess_frame(image, (64, 48), resize=resize)


def test_ros_messages_too_large_are_refused_before_conversion():
    rgb = np.zeros((2, TOO_WIDE, 3), np.uint8)
    msg = convert.rgb_to_image_msg(rgb, Header(frame_id="cam"))
    with pytest.raises(InputError, match=r"rgb8 image is 32767x2 px: expected at most 32766"):
        convert.image_msg_to_rgb(msg)
    bayer = Image(height=TOO_WIDE, width=2, encoding="bayer_rggb8", step=2)
    bayer.data = array.array("B", bytes(2 * TOO_WIDE))
    with pytest.raises(InputError, match=r"bayer_rggb8 image is 2x32767 px"):
        convert.image_msg_to_rgb(bayer)
    ok, png = cv2.imencode(".png", rgb)
    compressed = CompressedImage(format="png", data=array.array("B", png.tobytes()))
    with pytest.raises(InputError, match=r"'png' compressed image is 32767x2 px"):
        convert.compressed_msg_to_rgb(compressed)


# ---------------------------------------------------------------------------------------- replay


def _header(ns: int) -> Header:
    return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="cam")


def _info(header: Header, w: int = W, h: int = H) -> CameraInfo:
    info = CameraInfo(header=header, width=w, height=h, distortion_model="plumb_bob")
    info.d = [0.0] * 5
    k = K.copy()
    k[0, 2], k[1, 2] = (w - 1) / 2, (h - 1) / 2
    info.k = k.ravel().tolist()
    info.r = np.eye(3).ravel().tolist()
    info.p = np.hstack([k, np.zeros((3, 1))]).ravel().tolist()
    return info


def _board_rgb(k: int) -> np.ndarray:
    board = FiducialConfig()
    centre = np.array([(board.cols - 1) * board.square_size_m / 2,
                       (board.rows - 1) * board.square_size_m / 2, 0.0])
    R = Rotation.from_rotvec([0.1 * k - 0.1, 0.1, 0.05]).as_matrix()
    return render_board_view(board, K, R, np.array([0.0, 0.0, 0.5]) - R @ centre, W, H)


def _bayer_rggb8(rgb: np.ndarray, header: Header) -> Image:
    """The R G / G B mosaic of `rgb`, built here (not by the code under test)."""
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    mosaic[0::2, 0::2], mosaic[0::2, 1::2] = rgb[0::2, 0::2, 0], rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2], mosaic[1::2, 1::2] = rgb[1::2, 0::2, 1], rgb[1::2, 1::2, 2]
    msg = Image(header=header, height=H, width=W, encoding="bayer_rggb8", step=W)
    msg.data = array.array("B", mosaic.tobytes())
    return msg


def _mono16_big_endian(rgb: np.ndarray, header: Header) -> Image:
    gray16 = rgb[:, :, 1].astype(">u2") * 257
    msg = Image(header=header, height=H, width=W, encoding="mono16", step=2 * W, is_bigendian=1)
    msg.data = array.array("B", gray16.tobytes())
    return msg


def _read(bag: Path, topic: str, cls: type) -> list:
    with BagReader(bag) as reader:
        if topic not in reader.topics():
            return []
        return [deserialize_message(m.rawdata, cls) for m in reader.messages([topic])]


def test_replay_records_a_too_large_image_and_a_corrupt_message_and_goes_on(tmp_path):
    # frames: rgb8, too large, bayer_rggb8, corrupt, mono16 (big-endian)
    stamps = [10**9 + k * 10**8 for k in range(5)]
    with AtomicBagWriter(tmp_path / "in") as writer:
        for k, ns in enumerate(stamps):
            header = _header(ns)
            info = _info(header)
            if k == 0:
                writer.write_message(IMAGE, convert.rgb_to_image_msg(_board_rgb(k), header), ns)
            elif k == 1:  # valid data, its own valid camera_info, one side over the limit
                big = np.full((2, TOO_WIDE, 3), 128, np.uint8)
                writer.write_message(IMAGE, convert.rgb_to_image_msg(big, header), ns)
                info = _info(header, TOO_WIDE, 2)
            elif k == 2:
                writer.write_message(IMAGE, _bayer_rggb8(_board_rgb(k), header), ns)
            elif k == 3:
                writer.write_raw(IMAGE, "sensor_msgs/msg/Image", ns, GARBAGE)
            else:
                writer.write_message(IMAGE, _mono16_big_endian(_board_rgb(k), header), ns)
            writer.write_message(INFO, info, ns)

    summary = replay_bag(tmp_path / "in", tmp_path / "out", progress=False)

    assert summary.frames_in == 5 and summary.frames_ok == 3
    assert [(e.kind, e.stamp_ns) for e in summary.errors] == [
        ("image", stamps[1]), ("deserialize", stamps[3])]
    assert "32767x2 px: expected at most 32766 px" in summary.errors[0].message
    errors = _read(tmp_path / "out", "/perception_node/frame_errors", DiagnosticArray)
    assert [e.status[0].values[0].value for e in errors] == ["image", "deserialize"]
    assert errors[0].header == _header(stamps[1])
    poses = _read(tmp_path / "out", "/perception_node/poses", PoseArray)
    assert [p.header for p in poses] == [_header(stamps[k]) for k in (0, 2, 4)]
    board = _read(tmp_path / "out", "/perception_node/board/pose", PoseWithCovarianceStamped)
    assert [b.header for b in board] == [_header(stamps[k]) for k in (0, 2, 4)]  # all found


class _NodeThatRaises:
    """Stands in for PerceptionNode in `_replay_frame`: its process_frame raises `error`."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def process_frame(self, image: Image, info: CameraInfo, **_options: object) -> None:
        raise self.error


def _opencv_error() -> cv2.error:
    try:  # a real OpenCV error: the warp of an image over its size limit
        cv2.warpAffine(np.zeros((2, TOO_WIDE), np.uint8), np.eye(2, 3), (4, 4))
    except cv2.error as err:
        return err
    raise AssertionError("OpenCV accepted a 32767 px wide image")


def test_an_untyped_frame_failure_is_one_record_and_interrupts_still_stop(tmp_path):
    header = _header(2 * 10**9)
    image = convert.rgb_to_image_msg(np.zeros((H, W, 3), np.uint8), header)
    summary = ReplaySummary("in", "out", IMAGE, INFO)
    with AtomicBagWriter(tmp_path / "out") as writer:
        _replay_frame(_NodeThatRaises(_opencv_error()), writer, "/perception_node", image,
                      _info(header), 5, summary)  # fmt: skip
        for stop in (KeyboardInterrupt(), SystemExit(3)):
            with pytest.raises(type(stop)):
                _replay_frame(_NodeThatRaises(stop), writer, "/perception_node", image,
                              _info(header), 6, summary)  # fmt: skip
    assert [(e.kind, e.stamp_ns) for e in summary.errors] == [(UNEXPECTED_KIND, 2 * 10**9)]
    assert summary.errors[0].message.startswith("error: OpenCV(")  # cv2.error's type name
    assert "\n" not in summary.errors[0].message
    errors = _read(tmp_path / "out", "/perception_node/frame_errors", DiagnosticArray)
    assert len(errors) == 1 and errors[0].header == header
    assert errors[0].status[0].values[0].value == "unexpected"
    assert "SHRT_MAX" in errors[0].status[0].message

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Every sensor_msgs/Image encoding the node reads, against references built here with numpy
(16-bit scaling and byte order, BT.601 YUV 4:2:2, the four Bayer mosaics), padded and odd rows,
and the camera_info plausibility checks and frame_id check of `ros.convert`."""

from __future__ import annotations

import array
import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from dvc_perception.errors import InputError
from dvc_perception.ros import convert

#: sensor_msgs/image_encodings Bayer names: the top-left 2x2 block, row by row.
BAYER = ("rggb", "bggr", "gbrg", "grbg")


def _image(encoding: str, pixels: np.ndarray, *, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image holding `pixels` (H, W[, C]) as is, rows padded by `pad` bytes."""
    h, w = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder(">" if bigendian else "<")
    rows = pixels.astype(dtype).reshape(h, -1).view(np.uint8)
    padded = np.zeros((h, rows.shape[1] + pad), np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = Image(height=h, width=w, encoding=encoding, step=padded.shape[1],
                is_bigendian=int(bigendian))  # fmt: skip
    msg.data = array.array("B", padded.tobytes())
    return msg


@pytest.fixture
def rgb() -> np.ndarray:
    """(7, 5, 3): odd width and height on purpose."""
    return np.random.default_rng(1).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)


def _to_16_bit(values8: np.ndarray, seed: int = 2) -> np.ndarray:
    """8-bit values in the high byte, noise in the low byte (which `>> 8` must drop)."""
    low = np.random.default_rng(seed).integers(0, 256, size=values8.shape, dtype=np.uint16)
    return (values8.astype(np.uint16) << 8) | low


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 3])  # 3: an odd step, so 2-byte rows start unaligned
def test_16_bit_encodings_keep_the_high_byte(rgb, bigendian, pad):
    gray8 = rgb[:, :, 1]
    cases = {
        "mono16": (_to_16_bit(gray8), np.repeat(gray8[:, :, None], 3, axis=2)),
        "rgb16": (_to_16_bit(rgb), rgb),
        "bgr16": (_to_16_bit(rgb)[:, :, ::-1], rgb),
    }
    for encoding, (stored, expected) in cases.items():
        msg = _image(encoding, stored, pad=pad, bigendian=bigendian)
        np.testing.assert_array_equal(convert.image_msg_to_rgb(msg), expected, err_msg=encoding)


def test_16_bit_byte_order_is_read_from_the_message(rgb):
    """The same bytes read as the other byte order give other pixels: is_bigendian matters."""
    msg = _image("mono16", _to_16_bit(rgb[:, :, 0]), bigendian=True)
    msg.is_bigendian = 0
    assert not np.array_equal(convert.image_msg_to_rgb(msg)[:, :, 0], rgb[:, :, 0])


def _bt601_yuv(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) float Y U V, ITU-R BT.601 studio range (Y 16..235)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    return np.stack([y, u, v], axis=-1)


def _pack_422(rgb: np.ndarray, order: str) -> np.ndarray:
    """(H, W, 3) RGB, pixel pairs of equal colour -> (H, W, 2) packed bytes, `order` YUYV/UYVY."""
    yuv = np.clip(np.rint(_bt601_yuv(rgb)), 0, 255).astype(np.uint8)
    y, u, v = yuv[..., 0], yuv[:, 0::2, 1], yuv[:, 0::2, 2]
    out = np.empty(rgb.shape[:2] + (2,), np.uint8)
    if order == "yuyv":
        out[..., 0] = y
        out[:, 0::2, 1], out[:, 1::2, 1] = u, v
    else:
        out[..., 1] = y
        out[:, 0::2, 0], out[:, 1::2, 0] = u, v
    return out


@pytest.mark.parametrize("encoding, order", [("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv"),
                                             ("yuv422", "uyvy"), ("uyvy", "uyvy")])
@pytest.mark.parametrize("pad", [0, 6])
def test_yuv422_round_trip_within_quantisation(encoding, order, pad):
    rng = np.random.default_rng(3)
    pairs = rng.integers(20, 236, size=(6, 4, 3), dtype=np.uint8)  # away from clipping
    rgb = np.repeat(pairs, 2, axis=1)  # 4:2:2 shares chroma per pixel pair: equal pairs
    out = convert.image_msg_to_rgb(_image(encoding, _pack_422(rgb, order), pad=pad))
    # Y and U/V rounded to 8 bit: at most 1.164 * 0.5 + 2.017 * 0.5 ~ 1.6 levels, plus 1 for
    # OpenCV's fixed-point arithmetic
    np.testing.assert_allclose(out.astype(int), rgb.astype(int), atol=3)
    swapped = "uyvy" if order == "yuyv" else "yuyv"  # the other packing must not pass
    wrong = convert.image_msg_to_rgb(_image(encoding, _pack_422(rgb, swapped)))
    assert np.abs(wrong.astype(int) - rgb.astype(int)).max() > 20


def test_yuv422_needs_an_even_width():
    packed = np.zeros((4, 5, 2), np.uint8)
    with pytest.raises(InputError, match="width 5 is odd.*uyvy"):
        convert.image_msg_to_rgb(_image("uyvy", packed))


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) Bayer mosaic; `pattern` names the top-left 2x2 block."""
    channel = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[pattern[2 * dy + dx]]]
    return out


@pytest.mark.parametrize("pattern", BAYER)
def test_bayer_flat_colours_come_back(pattern):
    colours = np.array([[[200, 120, 40], [30, 90, 220]],
                        [[60, 230, 150], [250, 10, 100]]], np.uint8)  # R != G != B everywhere
    block = 16
    rgb = np.repeat(np.repeat(colours, block, axis=0), block, axis=1)[:31, :33]  # odd sizes
    out = convert.image_msg_to_rgb(_image(f"bayer_{pattern}8", _mosaic(rgb, pattern)))
    assert out.shape == rgb.shape
    m = 3  # away from block edges and the image border, demosaicing a flat colour is exact
    for by in range(2):
        for bx in range(2):
            rows = slice(by * block + m, (by + 1) * block - m)
            region = out[rows, bx * block + m: (bx + 1) * block - m]
            np.testing.assert_array_equal(
                region, np.broadcast_to(colours[by, bx], region.shape),
                err_msg=f"bayer_{pattern}8, block {by}, {bx}")


def test_padding_truncation_and_step_checks_for_2_byte_and_odd_widths(rgb):
    msg = _image("mono16", _to_16_bit(rgb[:, :, 0]), pad=1)
    msg.data = msg.data[:-1]  # the last row's padding byte is missing
    with pytest.raises(InputError, match=r"truncated: 76 bytes, expected 77 \(7 rows x step 11"):
        convert.image_msg_to_rgb(msg)
    msg = _image("rgb16", _to_16_bit(rgb))
    msg.step = 5 * 3 * 2 - 1
    with pytest.raises(InputError, match="step 29 < width 5 x 3 channels x 2 bytes"):
        convert.image_msg_to_rgb(msg)
    msg = _image("mono8", rgb[:, :, 0], pad=3)
    np.testing.assert_array_equal(convert.image_msg_to_rgb(msg)[:, :, 2], rgb[:, :, 0])


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "8UC3"])
def test_depth_and_generic_encodings_are_refused_naming_the_expected_ones(rgb, encoding):
    msg = _image(encoding, rgb)
    with pytest.raises(InputError, match=rf"{encoding}' is a depth or generic encoding.*mono16"):
        convert.image_msg_to_rgb(msg)
    msg.encoding = "nv12"
    with pytest.raises(InputError, match="'nv12' is not supported.*bayer_rggb8"):
        convert.image_msg_to_rgb(msg)


def test_the_result_never_aliases_the_message(rgb):
    msg = _image("rgb8", rgb)
    out = convert.image_msg_to_rgb(msg)
    out[:] = 0
    np.testing.assert_array_equal(convert.image_msg_to_rgb(msg), rgb)


# ------------------------------------------------------------------------ camera_info checks


def _info(**fields) -> CameraInfo:
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.k = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    info.d = [0.1, -0.05, 0.001, 0.002, 0.0]
    info.p = [480.0, 0.0, 330.0, 0.0, 0.0, 490.0, 235.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    for name, value in fields.items():
        setattr(info, name, value)
    return info


def _k(fx=500.0, fy=510.0, cx=320.0, cy=240.0) -> list[float]:
    return [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("fields, message", [
    ({"d": [0.1, 2e3, 0.0, 0.0, 0.0]}, r"D\[1\] = 2000.0: .*\|D\[1\]\| <= 1000"),
    ({"d": [0.1, 0.0, 0.0, 0.0, -1001.0]}, r"D\[4\] = -1001.0"),
    ({"d": [0.1, 0.0, math.inf, 0.0, 0.0]}, r"D\[2\] = inf: expected a finite"),
    ({"d": [math.nan, 0.0, 0.0, 0.0, 0.0]}, r"D\[0\] = nan"),
    ({"k": _k(fx=0.0)}, r"K\[0\] \(fx\) = 0: expected fx in \(0, 1e\+06\] px"),
    ({"k": _k(fy=-5.0)}, r"K\[4\] \(fy\) = -5: expected fy in"),
    ({"k": _k(fx=2e6)}, r"K\[0\] \(fx\) = 2e\+06"),
    ({"k": _k(cx=-641.0)}, r"K\[2\] \(cx\) = -641: expected cx in \[-640, 1280\] px, at most "
                           "one image size outside the 640x480 image"),
    ({"k": _k(cx=1281.0)}, r"K\[2\] \(cx\) = 1281"),
    ({"k": _k(cy=960.5)}, r"K\[5\] \(cy\) = 960.5: expected cy in \[-480, 960\]"),
    ({"k": _k(cy=-500.0)}, r"K\[5\] \(cy\) = -500"),
])  # fmt: skip
def test_implausible_camera_info_names_the_field_and_value(fields, message):
    with pytest.raises(InputError, match=message):
        convert.camera_info_to_camera_model(_info(**fields), rectified=False)


def test_rectified_intrinsics_come_from_p_and_are_checked_there():
    p = [480.0, 0.0, 330.0, 0.0, 0.0, 490.0, -600.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    with pytest.raises(InputError, match=r"P\[6\] \(cy\) = -600"):
        convert.camera_info_to_camera_model(_info(p=p), rectified=True)
    bad_d = _info(d=[1e4, 0.0, 0.0, 0.0, 0.0])  # D is not used for rectified images
    assert convert.camera_info_to_camera_model(bad_d, rectified=True).distortion_model == "none"


def test_plausible_limits_are_accepted():
    """The boundaries themselves, and a strong rational model, still convert."""
    for k in (_k(cx=-640.0, cy=960.0), _k(cx=1280.0, cy=-480.0), _k(fx=1e6, fy=1e6)):
        model = convert.camera_info_to_camera_model(_info(k=k), rectified=False)
        np.testing.assert_array_equal(model.K.numpy().ravel(), k)
    d = [-0.3, 0.1, 0.0, 0.0, 0.0, 999.0, -1e3, 1e3]
    model = convert.camera_info_to_camera_model(
        _info(distortion_model="rational_polynomial", d=d), rectified=False)
    np.testing.assert_array_equal(model.D.numpy(), d)


def test_empty_frame_id_is_reported_not_refused(rgb):
    stamp = Time(sec=3, nanosec=5)
    for frame_id in ("", "  "):
        problem = convert.frame_id_problem(Header(stamp=stamp, frame_id=frame_id))
        assert problem is not None
        assert f"frame_id is {frame_id!r} (stamp 3000000005 ns)" in problem
    assert convert.frame_id_problem(Header(stamp=stamp, frame_id="camera_optical_frame")) is None
    msg = _image("rgb8", rgb)  # an image without frame_id still converts
    msg.header = Header(stamp=stamp, frame_id="")
    np.testing.assert_array_equal(convert.image_msg_to_rgb(msg), rgb)

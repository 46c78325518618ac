# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`rgbd2bag`: RGB-D sequence folders (7-Scenes and TUM layouts) -> rosbag2, read back.

Sequences are written here with OpenCV and numpy (lossless PNG colour, 16-bit depth with
invalid pixels, poses printed to 8 digits as the real files are); every message of the bag is
read back with the project's bag reader and compared with the files: stamps, frame ids, sizes,
pixels, depth in metres, K, and each pose through its quaternion (scipy, independent of the
converter's Shepperd code).
"""

from __future__ import annotations

import array
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from geometry_msgs.msg import PoseArray, PoseStamped
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image

from dvc_perception.bag.evaluate import evaluate_bag
from dvc_perception.bag.io import AtomicBagWriter, BagReader, deserialize
from dvc_perception.bag.rgbd import rgbd_sequence_to_bag
from dvc_perception.cli import main
from dvc_perception.errors import ConfigError, InputError
from dvc_perception.synth.synth_bag import (
    CAMERA_INFO_TOPIC,
    CAMERA_POSE_TOPIC,
    DEPTH_TOPIC,
    IMAGE_TOPIC,
)

W, H = 16, 12
K = np.array([[20.0, 0.0, 7.5], [0.0, 21.0, 5.5], [0.0, 0.0, 1.0]])
NODE = "/perception_node"
TYPES = {IMAGE_TOPIC: "sensor_msgs/msg/Image", CAMERA_INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
         DEPTH_TOPIC: "sensor_msgs/msg/Image", CAMERA_POSE_TOPIC: "geometry_msgs/msg/PoseStamped"}


def _pose(rng: np.random.Generator) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=rng).as_matrix()
    T[:3, 3] = rng.uniform(-2.0, 2.0, 3)
    return T


def _depth_png(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    """uint16 depth units with the sensor's two 'no measurement' values forced in."""
    d = rng.integers(300, 65000, (h, w)).astype(np.uint16)
    d[0, :3] = 0
    d[1, 0] = 65535
    return d


def _write_7scenes(root: Path, n: int = 6, seed: int = 0, ext: str = "png") -> dict[int, dict]:
    """A 7-Scenes folder of `n` frames; returns what was written, by frame number."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "camera-intrinsics.txt", K)
    frames = {}
    for k in range(n):
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        depth = _depth_png(rng)
        T = _pose(rng)
        assert cv2.imwrite(str(root / f"frame-{k:06d}.color.{ext}"), rgb[:, :, ::-1])
        assert cv2.imwrite(str(root / f"frame-{k:06d}.depth.png"), depth)
        np.savetxt(root / f"frame-{k:06d}.pose.txt", T, fmt="%.8f")  # round-off, as the real ones
        frames[k] = {"rgb": rgb, "depth": depth, "T": np.loadtxt(root / f"frame-{k:06d}.pose.txt")}
    return frames


def _read_bag(path: Path) -> tuple[dict, dict[str, list]]:
    """(topic infos, topic -> [(record time ns, message)]) of a converted bag."""
    classes = {IMAGE_TOPIC: Image, CAMERA_INFO_TOPIC: CameraInfo, DEPTH_TOPIC: Image,
               CAMERA_POSE_TOPIC: PoseStamped}
    with BagReader(path) as reader:
        topics = reader.topics()
        msgs = {t: [(m.timestamp_ns, deserialize(m, classes[t], k, path))
                    for k, m in enumerate(reader.messages([t]))] for t in topics}
    return topics, msgs


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def _check_pose(msg: PoseStamped, T: np.ndarray) -> None:
    q = msg.pose.orientation
    R = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    # 8 printed digits make the file's matrix a rotation to ~1e-8 only; a quaternion is exact
    off = np.abs(T[:3, :3] @ T[:3, :3].T - np.eye(3)).max()
    np.testing.assert_allclose(R, T[:3, :3], atol=2 * off + 1e-9)
    p = msg.pose.position
    np.testing.assert_array_equal([p.x, p.y, p.z], T[:3, 3])


def _check_frame(msgs: dict[str, list], i: int, stamp_ns: int, rgb: np.ndarray,
                 depth_png: np.ndarray, units_per_m: float, T: np.ndarray, K_file: np.ndarray,
                 frame_id: str = "camera_optical_frame", world: str = "world") -> None:
    h, w = depth_png.shape
    for topic in TYPES:
        record_ns, msg = msgs[topic][i]
        assert record_ns == _stamp_ns(msg) == stamp_ns, topic
        assert msg.header.frame_id == (world if topic == CAMERA_POSE_TOPIC else frame_id)
    image, info, depth = (msgs[t][i][1] for t in (IMAGE_TOPIC, CAMERA_INFO_TOPIC, DEPTH_TOPIC))
    assert (image.encoding, image.width, image.height, image.step) == ("rgb8", w, h, 3 * w)
    np.testing.assert_array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(h, w, 3),
                                  rgb)
    assert (info.width, info.height, info.distortion_model) == (w, h, "plumb_bob")
    np.testing.assert_array_equal(np.reshape(info.k, (3, 3)), K_file)
    np.testing.assert_array_equal(np.reshape(info.p, (3, 4))[:, :3], K_file)
    assert (depth.encoding, depth.width, depth.height, depth.step) == ("32FC1", w, h, 4 * w)
    got = np.frombuffer(bytes(depth.data), "<f4").reshape(h, w)
    invalid = (depth_png == 0) | (depth_png == 65535)
    assert invalid.any() and np.array_equal(np.isnan(got), invalid)
    expected = (depth_png.astype(np.float64) / units_per_m).astype(np.float32)
    np.testing.assert_array_equal(got[~invalid], expected[~invalid])
    _check_pose(msgs[CAMERA_POSE_TOPIC][i][1], T)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_7scenes_round_trip_with_selection(tmp_path, storage):
    frames = _write_7scenes(tmp_path / "seq", n=7)
    seq = rgbd_sequence_to_bag(tmp_path / "seq", tmp_path / "bag", storage=storage, start=1,
                               stride=2, max_frames=3, frame_id="cam", world_frame="map",
                               progress=False)
    assert [f.number for f in seq.frames] == [1, 3, 5] and seq.layout == "7scenes"
    topics, msgs = _read_bag(tmp_path / "bag")
    assert {t: (i.msgtype, i.count) for t, i in topics.items()} == {
        t: (msgtype, 3) for t, msgtype in TYPES.items()}
    for i, number in enumerate([1, 3, 5]):
        f = frames[number]
        # no time stamps in 7-Scenes: frame n at 1 s + n / 30 Hz, as bop2bag stamps
        stamp = 10**9 + round(number * 1e9 / 30.0)
        _check_frame(msgs, i, stamp, f["rgb"], f["depth"], 1000.0, f["T"], K,
                     frame_id="cam", world="map")


def test_7scenes_jpeg_colour_and_rate(tmp_path):
    frames = _write_7scenes(tmp_path / "seq", n=2, ext="jpg")
    rgbd_sequence_to_bag(tmp_path / "seq", tmp_path / "bag", rate_hz=7.0, progress=False)
    _, msgs = _read_bag(tmp_path / "bag")
    for i in range(2):
        rgb = cv2.imread(str(tmp_path / "seq" / f"frame-{i:06d}.color.jpg"))[:, :, ::-1]
        _check_frame(msgs, i, 10**9 + round(i * 1e9 / 7.0), rgb, frames[i]["depth"], 1000.0,
                     frames[i]["T"], K)


TUM_T0 = "1305031102.175304"  # a real fr1 stamp: float64 seconds lose its last nanoseconds


def _write_tum(root: Path, n: int = 5, seed: int = 1) -> dict:
    """TUM folder: colour at 30 Hz, depth 5 ms later, mocap at 100 Hz (offset 2 ms); the last
    colour image has no depth within 20 ms."""
    rng = np.random.default_rng(seed)
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    t0_ns = 1305031102175304000
    rgb_lines, depth_lines, gt_lines = ["# color images"], ["# depth maps"], ["# ground truth"]
    out: dict = {"rgb": [], "depth": [], "stamps": [], "gt": {}}
    for k in range(n):
        ns = t0_ns + k * 33_333_333
        name = f"{ns // 10**9}.{ns % 10**9:09d}"
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        depth = _depth_png(rng)
        cv2.imwrite(str(root / "rgb" / f"{name}.png"), rgb[:, :, ::-1])
        rgb_lines.append(f"{name} rgb/{name}.png")
        out["rgb"].append(rgb)
        out["stamps"].append(ns)
        if k < n - 1:
            d_ns = ns + 5_000_000
            d_name = f"{d_ns // 10**9}.{d_ns % 10**9:09d}"
            cv2.imwrite(str(root / "depth" / f"{d_name}.png"), depth)
            depth_lines.append(f"{d_name} depth/{d_name}.png")
        out["depth"].append(depth)
    for j in range(n * 4):
        g_ns = t0_ns + 2_000_000 + j * 10_000_000
        T = _pose(rng)
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        text = " ".join(f"{v:.6f}" for v in [*T[:3, 3], *q])
        gt_lines.append(f"{g_ns // 10**9}.{g_ns % 10**9:09d} {text}")
        values = [float(v) for v in text.split()]  # what the file says, to 6 digits
        T[:3, :3] = Rotation.from_quat(values[3:]).as_matrix()
        T[:3, 3] = values[:3]
        out["gt"][g_ns] = T
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    (root / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    np.savetxt(root / "K.txt", K)
    return out


def test_tum_round_trip_keeps_its_stamps_and_associates(tmp_path):
    tum = _write_tum(tmp_path / "tum", n=5)
    seq = rgbd_sequence_to_bag(tmp_path / "tum", tmp_path / "bag", intrinsics=tmp_path / "tum" /
                               "K.txt", progress=False)  # fmt: skip
    assert seq.layout == "tum" and seq.skipped == 1 and len(seq.frames) == 4
    topics, msgs = _read_bag(tmp_path / "bag")
    assert all(info.count == 4 for info in topics.values()) and set(topics) == set(TYPES)
    gt_stamps = np.array(sorted(tum["gt"]))
    for i in range(4):
        stamp = tum["stamps"][i]
        nearest = int(gt_stamps[np.argmin(np.abs(gt_stamps - stamp))])
        _check_frame(msgs, i, stamp, tum["rgb"][i], tum["depth"][i], 5000.0, tum["gt"][nearest],
                     K)
    assert _stamp_ns(msgs[IMAGE_TOPIC][0][1]) == 1305031102175304000


def test_focal_override_keeps_tum_depth_and_moves_7scenes_depth(tmp_path):
    """TUM's depth is registered to its colour images: a focal override leaves it as it is
    (unless told otherwise); 7-Scenes' depth has the file's K and moves onto the colour grid."""
    from dvc_perception.bag.rgbd import depth_on_colour_grid

    _write_tum(tmp_path / "tum", n=3)
    _write_7scenes(tmp_path / "7s", n=2)
    K_over = K.copy()
    K_over[0, 0] = K_over[1, 1] = 15.0

    def depth_images(seq_dir, name, **kwargs):
        intrinsics = seq_dir / "K.txt" if seq_dir.name == "tum" else None
        rgbd_sequence_to_bag(seq_dir, tmp_path / name, intrinsics=intrinsics, progress=False,
                             **kwargs)
        _, msgs = _read_bag(tmp_path / name)
        return [np.frombuffer(bytes(m.data), "<f4").reshape(m.height, m.width)
                for _, m in msgs[DEPTH_TOPIC]]

    for layout, moved_by_default in (("tum", False), ("7s", True)):
        plain = depth_images(tmp_path / layout, f"{layout}_plain")
        default = depth_images(tmp_path / layout, f"{layout}_f", focal_px=15.0)
        forced = depth_images(tmp_path / layout, f"{layout}_f_moved", focal_px=15.0,
                              depth_registered=False)
        kept = depth_images(tmp_path / layout, f"{layout}_f_kept", focal_px=15.0,
                            depth_registered=True)
        for p, d, f, k in zip(plain, default, forced, kept):
            moved = depth_on_colour_grid(p, K, K_over)
            assert not np.array_equal(moved, p, equal_nan=True)
            np.testing.assert_array_equal(d, moved if moved_by_default else p)
            np.testing.assert_array_equal(f, moved)
            np.testing.assert_array_equal(k, p)


def test_tum_needs_intrinsics_and_refuses_a_rate(tmp_path):
    _write_tum(tmp_path / "tum", n=2)
    with pytest.raises(InputError, match=r"TUM RGB-D sequence.*--intrinsics FILE"):
        rgbd_sequence_to_bag(tmp_path / "tum", tmp_path / "bag", progress=False)
    with pytest.raises(ConfigError, match=r"own time stamps, a rate \(30.0 Hz\) does not apply"):
        rgbd_sequence_to_bag(tmp_path / "tum", tmp_path / "bag", rate_hz=30.0,
                             intrinsics=tmp_path / "tum" / "K.txt", progress=False)
    with pytest.raises(InputError, match=r"0 of 2 colour images have a depth image and a pose "
                                         r"within 0.001 s"):
        rgbd_sequence_to_bag(tmp_path / "tum", tmp_path / "bag", max_dt_s=0.001,
                             intrinsics=tmp_path / "tum" / "K.txt", progress=False)
    gt = tmp_path / "tum" / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[1] = " ".join(lines[1].split()[:4] + ["0.5", "0.5", "0.5", "0.9"])
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"pose {gt}:2: expected a finite position and a unit "
                                         r"quaternion"):
        rgbd_sequence_to_bag(tmp_path / "tum", tmp_path / "bag", progress=False,
                             intrinsics=tmp_path / "tum" / "K.txt")
    assert not (tmp_path / "bag").exists()


def _break(root: Path, case: str) -> None:
    """Damage frame 2 (or the folder) of a 7-Scenes sequence as `case` says."""
    f2 = root / "frame-000002"
    if case == "no_intrinsics":
        (root / "camera-intrinsics.txt").unlink()
    elif case == "intrinsics_not_3x3":
        (root / "camera-intrinsics.txt").write_text("1 0 0\n0 1 0\n")
    elif case == "intrinsics_negative_focal":
        np.savetxt(root / "camera-intrinsics.txt", np.diag([-5.0, 5.0, 1.0]))
    elif case == "no_depth":
        Path(f"{f2}.depth.png").unlink()
    elif case == "no_pose":
        Path(f"{f2}.pose.txt").unlink()
    elif case == "no_colour":
        Path(f"{f2}.color.png").unlink()
    elif case == "two_colours":
        Path(f"{f2}.color.jpg").write_bytes(Path(f"{f2}.color.png").read_bytes())
    elif case == "pose_not_orthonormal":
        T = np.loadtxt(f"{f2}.pose.txt")
        T[:3, :3] *= 1.01
        np.savetxt(f"{f2}.pose.txt", T)
    elif case == "pose_reflection":
        T = np.loadtxt(f"{f2}.pose.txt")
        T[:3, 0] *= -1
        np.savetxt(f"{f2}.pose.txt", T)
    elif case == "pose_nan":
        T = np.loadtxt(f"{f2}.pose.txt")
        T[0, 3] = np.nan
        np.savetxt(f"{f2}.pose.txt", T)
    elif case == "pose_inf_rotation":
        T = np.loadtxt(f"{f2}.pose.txt")
        T[1, 1] = np.inf
        np.savetxt(f"{f2}.pose.txt", T)
    elif case == "pose_not_numbers":
        Path(f"{f2}.pose.txt").write_text("a b c d\n")
    elif case == "pose_3x4":
        np.savetxt(f"{f2}.pose.txt", np.eye(4)[:3])
    elif case == "pose_last_row":
        T = np.loadtxt(f"{f2}.pose.txt")
        T[3, 0] = 0.5
        np.savetxt(f"{f2}.pose.txt", T)
    elif case == "depth_8bit":
        cv2.imwrite(f"{f2}.depth.png", np.full((H, W), 7, np.uint8))
    elif case == "depth_other_size":
        cv2.imwrite(f"{f2}.depth.png", np.full((H, W + 2), 700, np.uint16))
    elif case == "size_changes":
        cv2.imwrite(f"{f2}.color.png", np.zeros((H + 2, W, 3), np.uint8))
        cv2.imwrite(f"{f2}.depth.png", np.full((H + 2, W), 700, np.uint16))
    elif case == "colour_not_an_image":
        Path(f"{f2}.color.png").write_bytes(b"\x00" * 100)
    elif case == "empty_folder":
        for p in root.iterdir():
            p.unlink()


# case -> fragments the error must contain (f2 stands for the damaged frame's path stem)
BAD_7SCENES = {
    "no_intrinsics": ["camera-intrinsics.txt not found", "3x3 camera matrix K"],
    "intrinsics_not_3x3": ["camera-intrinsics.txt", "3 rows of 3 numbers",
                           "got 2 rows of [3, 3] numbers"],
    "intrinsics_negative_focal": ["camera-intrinsics.txt", "fx, fy > 0"],
    "no_depth": ["{f2}.depth.png is missing", ".pose.txt"],
    "no_pose": ["{f2}.pose.txt is missing"],
    "no_colour": ["{f2}.color.jpg is missing", ".color.png"],
    "two_colours": ["frame 000002", "two colour images", "expected one"],
    "pose_not_orthonormal": ["pose {f2}.pose.txt", "not a rotation", "det R = 1.0303"],
    "pose_reflection": ["pose {f2}.pose.txt", "not a rotation", "det R = -1"],
    "pose_nan": ["pose {f2}.pose.txt", "expected finite numbers", "nan"],
    "pose_inf_rotation": ["pose {f2}.pose.txt", "expected finite numbers", "inf"],
    "pose_not_numbers": ["{f2}.pose.txt", "expected a 4x4 camera-to-world matrix"],
    "pose_3x4": ["{f2}.pose.txt", "4 rows of 4 numbers", "got 3 rows"],
    "pose_last_row": ["pose {f2}.pose.txt", "last row 0 0 0 1"],
    "depth_8bit": ["depth image {f2}.depth.png", "single-channel uint16", "1-channel uint8"],
    "depth_other_size": ["depth image {f2}.depth.png is 18x12", f"{W}x{H}", "registered"],
    "size_changes": ["colour image {f2}.color.png is 16x14", "(frame-000000.color.png) 16x12",
                     "one image size"],
    "colour_not_an_image": ["colour image {f2}.color.png", "does not decode"],
    "empty_folder": ["is not an RGB-D sequence", "camera-intrinsics.txt", "groundtruth.txt"],
}


@pytest.mark.parametrize("case", sorted(BAD_7SCENES))
def test_bad_7scenes_input_is_a_typed_error_naming_the_file(tmp_path, case):
    root = tmp_path / "seq"
    _write_7scenes(root, n=4)
    _break(root, case)
    with pytest.raises(InputError) as info:
        rgbd_sequence_to_bag(root, tmp_path / "bag", progress=False)
    for fragment in BAD_7SCENES[case]:
        assert fragment.format(f2=root / "frame-000002") in str(info.value), str(info.value)
    assert not (tmp_path / "bag").exists()  # atomic: nothing half-written
    assert not list(tmp_path.glob(".bag.tmp-*"))


def test_frames_outside_the_selection_are_not_read(tmp_path):
    root = tmp_path / "seq"
    frames = _write_7scenes(root, n=4)
    _break(root, "pose_nan")  # frame 2
    seq = rgbd_sequence_to_bag(root, tmp_path / "bag", max_frames=2, progress=False)
    assert [f.number for f in seq.frames] == [0, 1]
    np.testing.assert_array_equal(seq.frames[1].T_world_cam, frames[1]["T"])


@pytest.mark.parametrize(("options", "fragment"), [
    ({"stride": 0}, "stride >= 1"),
    ({"start": -1}, "start >= 0"),
    ({"max_frames": 0}, "max_frames >= 1"),
    ({"rate_hz": 0.0}, "rate_hz must be a finite number > 0"),
    ({"max_dt_s": 0.02}, "7-Scenes sequence (frame-NNNNNN files): it has no time stamps"),
    ({"frame_id": " "}, "frame_id must name a TF frame"),
    ({"world_frame": ""}, "world_frame must name a TF frame"),
])
def test_bad_options_are_config_errors(tmp_path, options, fragment):
    _write_7scenes(tmp_path / "seq", n=2)
    with pytest.raises(ConfigError) as info:
        rgbd_sequence_to_bag(tmp_path / "seq", tmp_path / "bag", progress=False, **options)
    assert fragment in str(info.value)


def test_selection_beyond_the_end_is_refused(tmp_path):
    _write_7scenes(tmp_path / "seq", n=2)
    with pytest.raises(InputError, match=r"has 2 frames and the selection .* keeps none"):
        rgbd_sequence_to_bag(tmp_path / "seq", tmp_path / "bag", start=5, progress=False)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    _write_7scenes(tmp_path / "seq", n=3)
    _break(tmp_path / "seq", "no_pose")
    rc = main(["rgbd2bag", str(tmp_path / "seq"), "-o", str(tmp_path / "bag")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip() == (f"dvc-perception rgbd2bag: error: {tmp_path}/seq/frame-000002.pose.txt"
                           " is missing: every frame needs its colour image (.color.jpg or "
                           ".color.png), .depth.png and .pose.txt")


def test_eval_scores_a_converted_bag_as_depth_ground_truth(tmp_path, capsys):
    """An output bag whose predicted depth equals the converted ground truth scores 0."""
    frames = _write_7scenes(tmp_path / "seq", n=3)
    assert main(["rgbd2bag", str(tmp_path / "seq"), "-o", str(tmp_path / "in"),
                 "--no-progress"]) == 0
    assert "wrote 3 frames" in capsys.readouterr().out
    with BagReader(tmp_path / "in") as reader, AtomicBagWriter(tmp_path / "out") as writer:
        for k, m in enumerate(reader.messages([DEPTH_TOPIC])):
            depth = deserialize(m, Image, k)
            writer.write_message(f"{NODE}/poses", PoseArray(header=depth.header), m.timestamp_ns)
            writer.write_message(f"{NODE}/depth/image_raw", depth, m.timestamp_ns)
    report = tmp_path / "report"
    assert main(["eval", str(tmp_path / "out"), "--gt", str(tmp_path / "in"),
                 "--report", str(report)]) == 0
    s = json.loads((report / "summary.json").read_text())
    valid = sum(int(np.isin(f["depth"], (0, 65535), invert=True).sum()) for f in frames.values())
    assert s["objects"] == {}  # /camera/pose is not an object's ground truth
    assert s["frames"] == s["frames_matched_gt"] == 3
    d = s["depth"]
    assert (d["abs_rel"], d["rmse_m"], d["delta_1_25"], d["density"]) == (0.0, 0.0, 1.0, 1.0)
    assert d["pixels"] == d["pixels_gt"] == valid
    # and a prediction 10 % too far is scored as such (the ground truth is not trivially empty)
    with BagReader(tmp_path / "in") as reader, AtomicBagWriter(tmp_path / "far") as writer:
        for k, m in enumerate(reader.messages([DEPTH_TOPIC])):
            depth = deserialize(m, Image, k)
            scaled = np.frombuffer(bytes(depth.data), "<f4") * np.float32(1.1)
            depth.data = array.array("B", scaled.astype("<f4").tobytes())
            writer.write_message(f"{NODE}/poses", PoseArray(header=depth.header), m.timestamp_ns)
            writer.write_message(f"{NODE}/depth/image_raw", depth, m.timestamp_ns)
    d = evaluate_bag(tmp_path / "far", tmp_path / "in").depth
    assert d is not None and d["abs_rel"] == pytest.approx(0.1, rel=1e-5)


def test_rgbd_kitchen_frames(kitchen_dir, tmp_path):
    assert main(["rgbd2bag", str(kitchen_dir), "-o", str(tmp_path / "bag"), "--start", "10",
                 "--stride", "5", "--max-frames", "3", "--no-progress"]) == 0
    topics, msgs = _read_bag(tmp_path / "bag")
    assert {t: i.count for t, i in topics.items()} == dict.fromkeys(TYPES, 3)
    K_file = np.loadtxt(kitchen_dir / "camera-intrinsics.txt")
    for i, number in enumerate([10, 15, 20]):
        stem = kitchen_dir / f"frame-{number:06d}"
        rgb = cv2.imread(f"{stem}.color.jpg")[:, :, ::-1]
        depth = cv2.imread(f"{stem}.depth.png", cv2.IMREAD_UNCHANGED)
        assert rgb.shape == (480, 640, 3) and depth.dtype == np.uint16
        _check_frame(msgs, i, 10**9 + round(number * 1e9 / 30.0), rgb, depth, 1000.0,
                     np.loadtxt(f"{stem}.pose.txt"), K_file)

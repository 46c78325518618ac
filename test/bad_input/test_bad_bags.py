# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Bad rosbags given to `replay`, `quantize --calib` and `eval`: one typed line and exit 2,
never a traceback nor a silent wrong answer; a bad message in a replay is an error record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseStamped, PoseWithCovarianceStamped
from rclpy.serialization import deserialize_message
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from dvc_perception.bag.io import AtomicBagWriter, BagReader, TopicInfo
from dvc_perception.bag.replay import choose_image_topic, is_colour_encoding, replay_bag
from dvc_perception.cli import main
from dvc_perception.config import FiducialConfig
from dvc_perception.demo.boards import render_board_view
from dvc_perception.errors import BagError
from dvc_perception.ros.convert import IMAGE_ENCODINGS, pose_to_msg, rgb_to_image_msg

W, H = 320, 240
K = np.array([[300.0, 0.0, 159.5], [0.0, 300.0, 119.5], [0.0, 0.0, 1.0]])
IMAGE, INFO, DEPTH = "/camera/image_raw", "/camera/camera_info", "/camera/depth/ground_truth"
GARBAGE = b"\x00\x01\x00\x00" + bytes(range(7, 40))  # a CDR header, then nothing valid


def _header(ns: int) -> Header:
    return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="cam")


def _info(header: Header, w: int = W, h: int = H) -> CameraInfo:
    info = CameraInfo(header=header, width=w, height=h, distortion_model="plumb_bob")
    info.d = [0.0] * 5
    Kwh = np.diag([w / W, h / H, 1.0]) @ K  # the lens of K, at this size (a plausible model)
    info.k = Kwh.ravel().tolist()
    info.r = np.eye(3).ravel().tolist()
    info.p = np.hstack([Kwh, np.zeros((3, 1))]).ravel().tolist()
    return info


def _board_image(k: int, header: Header) -> Image:
    board = FiducialConfig()
    centre = np.array([(board.cols - 1) * board.square_size_m / 2,
                       (board.rows - 1) * board.square_size_m / 2, 0.0])
    R = Rotation.from_rotvec([0.1 * k - 0.1, 0.1, 0.05]).as_matrix()
    t = np.array([0.0, 0.0, 0.5]) - R @ centre
    return rgb_to_image_msg(render_board_view(board, K, R, t, W, H), header)


def _camera_bag(path: Path, n: int, *, bad_image_at: int = -1, bad_info_at: int = -1) -> Path:
    """`n` board frames on IMAGE + INFO, one message of each replaced by garbage CDR."""
    with AtomicBagWriter(path) as writer:
        for k in range(n):
            ns = 10**9 + k * 10**8
            if k == bad_image_at:
                writer.write_raw(IMAGE, "sensor_msgs/msg/Image", ns, GARBAGE)
            else:
                writer.write_message(IMAGE, _board_image(k, _header(ns)), ns)
            if k == bad_info_at:
                writer.write_raw(INFO, "sensor_msgs/msg/CameraInfo", ns, GARBAGE)
            else:
                writer.write_message(INFO, _info(_header(ns)), ns)
    return path


def _read(bag: Path, topic: str, cls: type) -> list:
    with BagReader(bag) as reader:
        if topic not in reader.topics():
            return []
        return [deserialize_message(m.rawdata, cls) for m in reader.messages([topic])]


def _cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return rc, out, err


def _error_line(err: str, command: str) -> str:
    """The one error line (the last line of stderr)."""
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"dvc-perception {command}: error: "), err
    return line


# ---------------------------------------------------------------------------------------- replay


def test_replay_turns_undeserializable_messages_into_records_and_goes_on(tmp_path, capsys):
    bag = _camera_bag(tmp_path / "in", 4, bad_image_at=0, bad_info_at=2)
    rc, out, err = _cli(capsys, ["replay", str(bag), "-o", str(tmp_path / "out"),
                                 "--param", "sync.mode:=exact"])
    assert rc == 0, err
    assert f"replay: image topic {IMAGE} (auto-detected, rgb8), camera_info {INFO}" in err
    assert f"skipped camera_info message 2 on {INFO} (record time 1200000000 ns" in err
    assert "replayed 4 frames" in out and "(2 processed, 2 error records" in out
    assert "1 image message(s) did not deserialize" in out
    assert f"1 camera_info message(s) on {INFO} did not deserialize" in out
    errors = _read(tmp_path / "out", "/perception_node/frame_errors", DiagnosticArray)
    kinds = [e.status[0].values[0].value for e in errors]
    assert kinds == ["deserialize", "camera_info"]
    assert errors[0].header.stamp == Time(sec=1)  # the record time: the header is unreadable
    assert "message 0 on /camera/image_raw" in errors[0].status[0].message
    assert errors[1].header == _header(10**9 + 2 * 10**8)  # its camera_info was skipped
    poses = _read(tmp_path / "out", "/perception_node/poses", PoseArray)
    assert [p.header for p in poses] == [_header(10**9 + k * 10**8) for k in (1, 3)]
    board = _read(tmp_path / "out", "/perception_node/board/pose", PoseWithCovarianceStamped)
    assert len(board) == 2  # the good frames are processed

    summary = replay_bag(bag, tmp_path / "out2", progress=False,
                         parameters={"sync.mode": "exact"})
    assert summary.frames_in == summary.frames_ok + len(summary.errors) == 4
    assert summary.bad_images == 1 and summary.bad_camera_info == 1


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_replay_output_that_cannot_be_written(tmp_path, capsys, where):
    bag = _camera_bag(tmp_path / "in", 1)
    (tmp_path / "afile").write_text("not a directory")
    out = tmp_path / "afile" / "out" if where == "under_a_file" else Path("/proc/dvc_x/out")
    rc, _, err = _cli(capsys, ["replay", str(bag), "-o", str(out)])
    line = _error_line(err, "replay")
    assert rc == 2 and f"cannot write output bag {out}" in line
    assert ("afile is not a directory" if where == "under_a_file" else "No such file") in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "in"]


@pytest.mark.parametrize("kind", ["missing", "random_file", "garbage_metadata", "empty_dir"])
def test_replay_input_that_is_not_a_bag(tmp_path, capsys, kind):
    path = tmp_path / "in"
    if kind == "random_file":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    elif kind != "missing":
        path.mkdir()
        if kind == "garbage_metadata":
            (path / "metadata.yaml").write_text("rosbag2_bagfile_information: [1, {\n")
    rc, _, err = _cli(capsys, ["replay", str(path), "-o", str(tmp_path / "out")])
    line = _error_line(err, "replay")
    assert rc == 2 and f"{path}" in line and "bag" in line
    assert not (tmp_path / "out").exists()


def _depth_only_bag(path: Path) -> Path:
    with AtomicBagWriter(path) as writer:
        for k in range(2):
            ns = 10**9 + k * 10**8
            depth = np.full((H, W), 0.5, np.float32)
            msg = Image(header=_header(ns), height=H, width=W, encoding="32FC1", step=4 * W,
                        data=depth.tobytes())
            writer.write_message(DEPTH, msg, ns)
            writer.write_message(INFO, _info(_header(ns)), ns)
    return path


def test_replay_never_takes_a_depth_image_for_the_camera(tmp_path, capsys):
    bag = _depth_only_bag(tmp_path / "in")
    rc, _, err = _cli(capsys, ["replay", str(bag), "-o", str(tmp_path / "out")])
    line = _error_line(err, "replay")
    assert rc == 2 and "cannot auto-detect the image topic" in line
    assert f"{DEPTH} (32FC1)" in line and "pass --image-topic" in line
    rc, _, err = _cli(capsys, ["replay", str(bag), "-o", str(tmp_path / "out"),
                               "--image-topic", DEPTH])
    line = _error_line(err, "replay")
    assert rc == 2 and "encoding '32FC1'" in line and "colour or mono" in line
    assert not (tmp_path / "out").exists()


def test_image_topic_rule():
    def topics(**encodings: str) -> dict[str, TopicInfo]:
        out = {}
        for key, enc in encodings.items():
            name = "/" + key.replace("__", "/")
            msgtype = "sensor_msgs/msg/CompressedImage" if enc == "C" else "sensor_msgs/msg/Image"
            out[name] = TopicInfo(name, msgtype, 1, "" if enc == "C" else enc)
        return out

    # the encoding decides, not the name
    assert choose_image_topic(topics(cam__image="rgb8", gt__image="32FC1")) == (
        "/cam/image", "auto-detected, rgb8")
    assert choose_image_topic(topics(a__mono="mono16", a__range="16UC1"))[0] == "/a/mono"
    assert choose_image_topic(topics(a__raw="bayer_rggb8"))[0] == "/a/raw"
    # a raw topic wins over its own compressed twin; compressed alone is taken
    assert choose_image_topic(topics(c__image_raw="bgr8", c__image_raw__compressed="C")) == (
        "/c/image_raw", "auto-detected, bgr8")
    assert choose_image_topic(topics(c__image__compressed="C"))[1] == (
        "auto-detected, CompressedImage")
    with pytest.raises(BagError, match=r"several candidates: /a/image \(rgb8\), /b/image"):
        choose_image_topic(topics(a__image="rgb8", b__image="mono8"))
    assert choose_image_topic(topics(a__image="rgb8", b__image="mono8"), "/b/image") == (
        "/b/image", "given, mono8")
    assert all(is_colour_encoding(e) for e in IMAGE_ENCODINGS)
    assert not any(is_colour_encoding(e) for e in ("32FC1", "16UC1", "8UC1", "64FC1"))


# -------------------------------------------------------------------------------------- quantize

INPUT_HW = (48, 64)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from dvc_perception.engines.export import export_onnx
    from dvc_perception.engines.reference_nets import TinyKeypointNet

    metadata = {
        "dvc_format": 1, "task": "keypoints", "input_size": [INPUT_HW[1], INPUT_HW[0]],
        "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "object_ids": ["demo"],
        "keypoints_3d": {"demo": [[0.01 * i, -0.02 * i, 0.005] for i in range(8)]},
        "symmetries": {"demo": "none"},
        "provenance": {"git_commit": "0123abcd", "command": "pytest", "date": "2026-11-23",
                       "data_seed": 7},
        "architecture": {"factory": "dvc_perception.engines.reference_nets:build_reference_net",
                         "kwargs": {"name": "keypoint"}},
    }  # fmt: skip
    path = tmp_path_factory.mktemp("model") / "keypoint.onnx"
    export_onnx(TinyKeypointNet().eval(), (torch.zeros(1, 3, *INPUT_HW),), path,
                input_names=["image"], output_names=["keypoints", "confidence"],
                metadata=metadata)  # fmt: skip
    return path


def _quantize(model: Path, bag: Path, out: Path) -> list[str]:
    return ["quantize", str(model), "--calib", str(bag), "-o", str(out), "--max-frames", "2",
            "--check-tensorrt", ""]


def test_quantize_calibrates_on_the_camera_topic_of_the_synthetic_bag(
    tmp_path, capsys, tiny_model
):
    from dvc_perception.render.objects import find_object_yaml, load_object
    from dvc_perception.synth.scenes import SceneSampler, SynthConfig
    from dvc_perception.synth.synth_bag import write_bag

    small = SynthConfig(width=96, height=72, fx=86.0, fy=86.0, cx=47.5, cy=35.5)
    sampler = SceneSampler([load_object(find_object_yaml("demo_object"))], small, seed=3)
    bag = write_bag(sampler, tmp_path / "synth", 2, progress=False)
    with BagReader(bag) as reader:
        assert reader.topics()[DEPTH].encoding == "32FC1"  # sorts before /camera/image_raw
    rc, out, err = _cli(capsys, _quantize(tiny_model, bag, tmp_path / "q.onnx"))
    assert rc == 0, err
    assert f"calibration image topic {IMAGE} (auto-detected, rgb8)" in err
    assert "over 2 frames" in out


def test_quantize_calib_bag_with_a_corrupt_message(tmp_path, capsys, tiny_model):
    bag = _camera_bag(tmp_path / "calib", 3, bad_image_at=1)
    rc, _, err = _cli(capsys, _quantize(tiny_model, bag, tmp_path / "q.onnx"))
    line = _error_line(err, "quantize")
    assert rc == 2 and f"bag {bag}: message 1 on {IMAGE} (record time 1100000000 ns" in line
    assert not (tmp_path / "q.onnx").exists()
    rc, _, err = _cli(capsys, _quantize(tiny_model, _depth_only_bag(tmp_path / "depth"),
                                        tmp_path / "q.onnx"))  # fmt: skip
    line = _error_line(err, "quantize")
    assert rc == 2 and f"{DEPTH} (32FC1)" in line and "pass --topic" in line


# ------------------------------------------------------------------------------------------ eval


def _eval_bags(tmp: Path, gt_secs: list[int], out_secs: list[int], *,
               bad_gt_at: int = -1) -> tuple[Path, Path]:  # fmt: skip
    """A ground-truth bag (camera + /ground_truth/demo_object/pose) and a replay-like output."""
    R, t = Rotation.from_rotvec([0.2, 0.1, 0.0]).as_matrix(), np.array([0.0, 0.0, 0.5])
    topic = "/ground_truth/demo_object/pose"
    with AtomicBagWriter(tmp / "gt") as writer:
        for k, sec in enumerate(gt_secs):
            header = _header(sec * 10**9)
            rgb = np.full((24, 32, 3), 90, np.uint8)
            writer.write_message(IMAGE, rgb_to_image_msg(rgb, header), sec * 10**9)
            writer.write_message(INFO, _info(header, 32, 24), sec * 10**9)
            if k == bad_gt_at:
                writer.write_raw(topic, "geometry_msgs/msg/PoseStamped", sec * 10**9, GARBAGE)
            else:
                writer.write_message(topic, PoseStamped(header=header, pose=pose_to_msg(R, t)),
                                     sec * 10**9)  # fmt: skip
    with AtomicBagWriter(tmp / "out") as writer:
        for sec in out_secs:
            header = _header(sec * 10**9)
            writer.write_message("/perception_node/poses", PoseArray(header=header), sec * 10**9)
            msg = PoseWithCovarianceStamped(header=header)
            msg.pose.pose = pose_to_msg(R, t + 0.001)
            writer.write_message("/perception_node/demo_object/pose", msg, sec * 10**9)
    return tmp / "out", tmp / "gt"


def _eval(out: Path, gt: Path, *extra: str) -> list[str]:
    return ["eval", str(out), "--gt", str(gt), "--report", str(out.parent / "report"), *extra]


def test_eval_refuses_outputs_that_match_no_ground_truth(tmp_path, capsys):
    out, gt = _eval_bags(tmp_path, [1, 2, 3, 4, 5], [101, 102, 103, 104, 105])
    rc, _, err = _cli(capsys, _eval(out, gt))
    line = _error_line(err, "eval")
    assert rc == 2 and "only 0 of 5 output frames" in line and "--min-gt-match" in line
    assert "output stamp 101000000000 ns, nearest ground-truth stamp 5000000000 ns" in line
    assert not (tmp_path / "report").exists()
    # lowered on purpose: the numbers, with a warning giving the counts
    rc, stdout, err = _cli(capsys, _eval(out, gt, "--min-gt-match", "0"))
    assert rc == 0 and "warning: only 0 of 5 output frames have a ground-truth stamp" in err
    assert "detected 0/5" in stdout and "0 with ground truth" in stdout
    rc, _, err = _cli(capsys, _eval(out, gt, "--min-gt-match", "1.5"))
    assert rc == 2 and "--min-gt-match must be a fraction" in _error_line(err, "eval")


@pytest.mark.parametrize(("out_secs", "ok"), [([1, 2, 3, 4, 5], True), ([1, 2, 3, 9, 10], True),
                                              ([1, 2, 8, 9, 10], False)])  # fmt: skip
def test_eval_needs_half_of_the_output_frames_matched(tmp_path, capsys, out_secs, ok):
    out, gt = _eval_bags(tmp_path, [1, 2, 3, 4, 5], out_secs)
    rc, stdout, err = _cli(capsys, _eval(out, gt))
    matched = len({1, 2, 3, 4, 5} & set(out_secs))
    if ok:
        assert rc == 0 and "warning" not in err, err
        assert f"detected {matched}/5" in stdout and f"{matched} with ground truth" in stdout
    else:
        assert rc == 2 and f"only {matched} of 5 output frames" in _error_line(err, "eval")


def test_eval_bad_bags(tmp_path, capsys):
    out, gt = _eval_bags(tmp_path, [1, 2, 3], [1, 2, 3], bad_gt_at=1)
    rc, _, err = _cli(capsys, _eval(out, gt))
    line = _error_line(err, "eval")
    assert rc == 2 and f"bag {gt}" in line and "/ground_truth/demo_object/pose" in line
    assert "not a valid geometry_msgs/msg/PoseStamped" in line
    # outputs of another node (or not a replay output at all): no frames to score
    (tmp_path / "good").mkdir()
    out, gt = _eval_bags(tmp_path / "good", [1, 2, 3], [1, 2, 3])
    rc, _, err = _cli(capsys, _eval(out, gt, "--node", "/other"))
    line = _error_line(err, "eval")
    assert rc == 2 and "no /other/poses or /other/frame_errors messages" in line

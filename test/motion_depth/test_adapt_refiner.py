# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Self-supervised adaptation of the depth refiner (`adapt-depth-refiner`) on a real bag.

A short rendered room sequence (`synth.rooms`, 160x120) written to a rosbag2 with the camera's
image, camera_info and pose topics (no depth topic: adaptation must not need one). The starting
model is a small refiner whose heads are randomised and exported to ONNX as the shipped one is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Header

from dvc_perception.bag.io import AtomicBagWriter
from dvc_perception.bag.motion_frames import motion_topics, node_config, read_motion_frames
from dvc_perception.cli import main
from dvc_perception.errors import BagError, InputError, ModelSpecError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.models.depth_refiner import build_net
from dvc_perception.motion_depth.learned_refiner import classical_inputs
from dvc_perception.pipeline.depth_refiner import DepthRefiner, export_refiner
from dvc_perception.pipeline.multiview import motion_depth_settings
from dvc_perception.pipeline.pipeline import Pipeline
from dvc_perception.ros.convert import intrinsics_to_camera_info_msg, pose_to_msg, rgb_to_image_msg
from dvc_perception.synth.rooms import room_sequence
from dvc_perception.synth.synth_bag import CAMERA_INFO_TOPIC, CAMERA_POSE_TOPIC, IMAGE_TOPIC
from dvc_perception.train.adapt_refiner import (
    AdaptSettings,
    adapt,
    collect_windows,
    load_refiner_onnx,
    mean_photometric_loss,
)

W, H, FRAMES = 160, 120, 10
PROVENANCE = {"git_commit": "test", "command": "pytest", "date": "2026-12-07", "data_seed": 0}
#: The classical estimator at this size (the node's parameters, as `replay` takes them).
PARAMS = {"pipeline.multiview.internal_width": W, "pipeline.multiview.planes": 32,
          "pipeline.multiview.min_baseline_m": 0.02}


def _write_bag(path: Path, frames: list, *, images: bool = True, poses: bool = True) -> Path:
    """Frames k at 10 Hz: image, camera_info, camera pose (each optional)."""
    with AtomicBagWriter(path) as writer:
        for k, fr in enumerate(frames):
            ns = 1_000_000_000 + k * 100_000_000
            header = Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9),
                            frame_id="camera_optical_frame")
            writer.write_message(CAMERA_INFO_TOPIC,
                                 intrinsics_to_camera_info_msg(fr.K, W, H, header), ns)
            if images:
                writer.write_message(IMAGE_TOPIC, rgb_to_image_msg(fr.rgb, header), ns)
            if poses:
                T = fr.camera_to_world
                msg = PoseStamped(header=Header(stamp=header.stamp, frame_id="world"),
                                  pose=pose_to_msg(T[:3, :3], T[:3, 3]))
                writer.write_message(CAMERA_POSE_TOPIC, msg, ns)
    return path


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> dict:
    """The bag, its frames and a starting model (randomised heads) exported for 160x120."""
    root = tmp_path_factory.mktemp("adapt")
    frames = room_sequence(4, frames=FRAMES, width=W, height=H)
    torch.manual_seed(0)
    net = build_net(hidden=8, context=16, iterations=2)
    with torch.no_grad():
        for head in (net.delta[-1], net.fine[-1]):
            head.weight.normal_(0.0, 0.05)
            head.bias.normal_(0.0, 0.05)
    model = root / "start.onnx"
    export_refiner(net.eval(), model, W, H, PROVENANCE)
    return {"root": root, "frames": frames, "bag": _write_bag(root / "bag", frames),
            "model": model}


@pytest.fixture(scope="module")
def collected(room) -> tuple:
    """(AdaptData, counts) of the bag, read as the command reads it."""
    config = node_config(None, PARAMS)
    topics = motion_topics(room["bag"], config)
    frames = read_motion_frames(room["bag"], config, topics)
    return collect_windows(frames, motion_depth_settings(config.pipeline.multiview), (W, H))


def test_the_onnx_weights_load_into_torch_and_match_onnx_runtime(room):
    net, meta = load_refiner_onnx(room["model"])
    assert tuple(meta.input_size) == (W, H) and net.hidden == 8 and net.iterations == 2
    fr = room["frames"][4]
    grey = fr.rgb.mean(axis=2).astype(np.float32) / 255.0
    depth = fr.depth.copy()
    depth[:40] = np.nan
    conf = np.where(np.isfinite(depth), 0.8, 0.0).astype(np.float32)
    x, median = classical_inputs(grey, depth, conf)
    with torch.no_grad():
        log_depth, confidence = net.eval().export_forward(torch.from_numpy(x[None]))
    d, c = DepthRefiner(room["model"]).refine(grey, depth, conf)
    assert np.allclose(np.log(d), log_depth[0, 0].numpy() + median, atol=1e-4)
    assert np.allclose(c, confidence[0, 0].numpy(), atol=1e-4)


def test_the_classical_pass_records_windows(collected):
    data, counts = collected
    assert counts.get("ok", 0) == len(data.ref) >= 6 and len(data.greys) == FRAMES
    assert data.depth.shape == data.confidence.shape == (len(data.ref), H, W)
    assert data.sources.shape[0] == len(data.ref) and (data.sources[:, 0] >= 0).all()
    assert (data.sources < data.ref[:, None]).all()  # earlier frames only
    assert np.isfinite(data.depth).mean() > 0.3


def test_a_few_steps_lower_the_photometric_loss_and_export_loads(room, collected, tmp_path):
    data, _ = collected
    start, meta = load_refiner_onnx(room["model"])
    net, _ = load_refiner_onnx(room["model"])
    before = mean_photometric_loss(start, data)
    settings = AdaptSettings(steps=12, batch=2, lr=2e-3, seed=0)
    result = adapt(net, start, data, settings, tmp_path / "last.pt", "key", progress=False)
    assert result.steps == 12 and (tmp_path / "last.pt").is_file()
    after = mean_photometric_loss(net, data)
    assert after < before, (before, after)
    # resuming a finished run does nothing more; another run's checkpoint is refused
    again = adapt(net, start, data, settings, tmp_path / "last.pt", "key", progress=False)
    assert again.steps == 12 and again.resumed_from == 12
    with pytest.raises(Exception, match="another adaptation run"):
        adapt(net, start, data, settings, tmp_path / "last.pt", "other", progress=False)
    out = tmp_path / "adapted.onnx"
    export_refiner(net.eval(), out, W, H, PROVENANCE)
    refiner = DepthRefiner(out)
    m = 3
    grey, depth, conf = data.greys[data.ref[m]], data.depth[m], data.confidence[m]
    d1, c1 = refiner.refine(grey, depth, conf)
    d2, c2 = refiner.refine(grey, 2.5 * depth, conf)
    assert np.isfinite(d1).all() and np.allclose(d2, 2.5 * d1, rtol=1e-4)
    assert np.allclose(c1, c2, atol=1e-6)


def test_the_command_writes_a_model_the_pipeline_loads(room, tmp_path, capsys):
    out = tmp_path / "adapted.onnx"
    params = [a for name, value in PARAMS.items() for a in ("--param", f"{name}:={value}")]
    argv = ["adapt-depth-refiner", str(room["bag"]), "--out", str(out), "--model",
            str(room["model"]), "--steps", "2", "--no-progress", *params]
    assert main(argv) == 0
    assert "photometric loss over the" in capsys.readouterr().out
    run_dir = tmp_path / "adapted.onnx.run"
    assert (run_dir / "frames.npz").is_file() and (run_dir / "last.pt").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["depth_frames"] >= 6
    # a second run with more steps resumes from the cache and the checkpoint
    assert main([*argv[:6], "--steps", "3", *argv[8:]]) == 0
    err = capsys.readouterr().err
    assert "classical pass loaded from" in err
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from_step"] == 2
    # pipeline.multiview.refiner_model loads it unchanged and the depth comes through it
    pipeline = Pipeline.from_config({"depth_source": "multiview", "multiview": {
        "internal_width": W, "planes": 32, "min_baseline_m": 0.02, "refiner_model": str(out)}})
    statuses = []
    for k, fr in enumerate(room["frames"][:6]):
        found = pipeline.estimate_depth(fr.rgb, CameraModel(fr.K, [], W, H), 1.0 + 0.1 * k,
                                        camera_to_world=fr.camera_to_world)
        statuses.append(found.status)
    assert statuses[-1] == "ok" and np.isfinite(found.depth).any()


def test_bad_inputs_are_typed_errors(room, tmp_path):
    config = node_config(None, PARAMS)
    frames = room["frames"]
    no_images = _write_bag(tmp_path / "no_images", frames[:3], images=False)
    with pytest.raises(BagError, match="image topic"):
        motion_topics(no_images, config)
    no_poses = _write_bag(tmp_path / "no_poses", frames[:3], poses=False)
    with pytest.raises(BagError, match="camera pose topic .*PoseStamped"):
        motion_topics(no_poses, config)
    still = _write_bag(tmp_path / "still", [frames[0]] * 6)
    topics = motion_topics(still, config)
    with pytest.raises(InputError, match="0 frame.* with depth from motion .*expects at least"):
        collect_windows(read_motion_frames(still, config, topics),
                        motion_depth_settings(config.pipeline.multiview), (W, H))
    not_refiner = tmp_path / "depth.onnx"
    net = build_net(hidden=8, context=16, iterations=2)
    export_refiner(net.eval(), not_refiner, W, H, PROVENANCE, extra={"task": "depth"})
    with pytest.raises(ModelSpecError, match="expected a depth refiner"):
        load_refiner_onnx(not_refiner)
    assert main(["adapt-depth-refiner", str(no_poses), "--out", str(tmp_path / "x.onnx"),
                 "--model", str(room["model"]), "--no-progress"]) == 2

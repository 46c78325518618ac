# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Renderer shards -> train (pose and depth) -> evaluate -> export -> ONNX Runtime == torch."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from dvc_perception.cli import main
from dvc_perception.engines.export import read_model_metadata
from dvc_perception.train.checkpoints import load_checkpoint, model_from_checkpoint
from dvc_perception.train.datasets import DepthDataset, PoseDataset, load_object_infos
from dvc_perception.train.shards import ShardFrameSource

ort = pytest.importorskip("onnxruntime")

SIZE = ["--width", "128", "--height", "96"]


@pytest.mark.slow
def test_synth_train_evaluate_export_onnxruntime(tmp_path):
    train_dir, val_dir = tmp_path / "train", tmp_path / "val"
    assert main(["synth", "--frames", "16", "--out", str(train_dir), "--seed", "1",
                 "--frames-per-shard", "8", "--no-progress", *SIZE]) == 0
    assert main(["synth", "--frames", "4", "--out", str(val_dir), "--seed", "2",
                 "--no-progress", *SIZE]) == 0
    common = ["--data", str(train_dir), "--val-data", str(val_dir), "--input-size", "128x96",
              "--epochs", "2", "--batch-size", "4", "--max-steps-per-epoch", "2",
              "--threads", "1", "--no-progress"]
    pose_run, depth_run = tmp_path / "pose", tmp_path / "depth"
    assert main(["train", "pose", "--objects", "demo_object", "--out", str(pose_run),
                 "--pose-warmup-epochs", "1", "--crop", "64x48", *common]) == 0
    assert main(["train", "depth", "--out", str(depth_run), *common]) == 0
    rows = list(csv.DictReader((pose_run / "metrics.csv").open()))
    assert len(rows) == 2 and "val_add_recall" in rows[-1] and "train_pose_px" in rows[-1]
    assert 0.0 <= float(rows[-1]["val_add_recall"]) <= 1.0
    rows = list(csv.DictReader((depth_run / "metrics.csv").open()))
    assert np.isfinite(float(rows[-1]["val_abs_rel"]))

    pose_onnx, depth_onnx = tmp_path / "models" / "pose.onnx", tmp_path / "models" / "depth.onnx"
    assert main(["export", str(pose_run / "best.pt"), "--out", str(pose_onnx)]) == 0
    assert main(["export", str(depth_run / "best.pt"), "--out", str(depth_onnx)]) == 0
    meta = read_model_metadata(pose_onnx)
    assert meta.object_ids == ("demo_object",)
    assert meta.provenance["data"]["dir"] == str(train_dir)

    frames = ShardFrameSource(val_dir)
    objects = load_object_infos(["demo_object"])
    image = PoseDataset(frames, objects, 128, 96)[0]["image"][None].numpy()
    sess = ort.InferenceSession(str(pose_onnx), providers=["CPUExecutionProvider"])
    x2d, weights = sess.run(["x2d", "weights"], {"image": image})
    net = model_from_checkpoint(load_checkpoint(pose_run / "best.pt"))
    with torch.no_grad():
        ref = net(torch.from_numpy(image))
    np.testing.assert_allclose(x2d, ref.x2d.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(weights, ref.weights.numpy(), atol=1e-4, rtol=0)

    image = DepthDataset(frames, 128, 96)[0]["image"][None].numpy()
    sess = ort.InferenceSession(str(depth_onnx), providers=["CPUExecutionProvider"])
    (depth,) = sess.run(None, {"image": image})
    net = model_from_checkpoint(load_checkpoint(depth_run / "best.pt"))
    with torch.no_grad():
        ref_depth = net(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(depth, ref_depth, atol=1e-4, rtol=1e-5)


def test_depth_only_options_are_refused_for_pose_training(tmp_path, capsys):
    assert main(["train", "pose", "--toy", "4", "--silog-lambda", "0.5",
                 "--out", str(tmp_path / "run")]) == 2
    assert "--silog-lambda only applies to `train depth`" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

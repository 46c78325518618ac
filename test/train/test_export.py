# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import numpy as np
import pytest
import torch

from dvc_perception.cli import main
from dvc_perception.engines.export import read_model_metadata
from dvc_perception.errors import ModelSpecError
from dvc_perception.train.checkpoints import load_checkpoint, model_from_checkpoint
from dvc_perception.train.config import PoseLossConfig, TrainConfig
from dvc_perception.train.runner import RunSpec, run_training
from dvc_perception.train.toy import toy_object

pytestmark = pytest.mark.slow  # the module fixture trains two tiny runs (~7 s)

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(epochs=1, batch_size=2, max_steps_per_epoch=1, progress=False)
    pose = run_training(RunSpec(mode="pose", out_dir=str(root / "pose"), toy_frames=4,
                                input_width=64, input_height=48, train=cfg,
                                pose_loss=PoseLossConfig(pose_warmup_epochs=0)))
    depth = run_training(RunSpec(mode="depth", out_dir=str(root / "depth"), toy_frames=4,
                                 input_width=64, input_height=48, train=cfg))
    return root, pose, depth


def _ort_outputs(path, image):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"image": image})))


def test_exported_keypoint_model_matches_torch_and_describes_itself(runs, tmp_path):
    root, pose, _ = runs
    out = tmp_path / "pose_toy.onnx"
    assert main(["export", str(pose.best_checkpoint), "--out", str(out)]) == 0
    proto = onnx.load(str(out))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 48, 64]  # static shape
    meta = read_model_metadata(out)
    obj = toy_object()
    assert meta.task == "keypoints" and meta.input_size == (64, 48)
    assert meta.object_ids == (obj.object_id,)
    np.testing.assert_allclose(meta.keypoints_3d[obj.object_id], obj.keypoints_obj)
    assert meta.extra["output_stride"] == 4
    assert len(meta.provenance["git_commit"]) == 40
    rng = np.random.default_rng(0)
    image = rng.random((1, 3, 48, 64), dtype=np.float32)
    got = _ort_outputs(out, image)
    net = model_from_checkpoint(load_checkpoint(pose.best_checkpoint))
    with torch.no_grad():
        ref = net(torch.from_numpy(image))
    np.testing.assert_allclose(got["x2d"], ref.x2d.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["weights"], ref.weights.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["objectness"], ref.objectness.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["mask"], torch.sigmoid(ref.mask_logits).numpy(), atol=1e-4,
                               rtol=0)
    # the torch backend's sidecar rebuilds the same graph from the metadata's factory
    from dvc_perception.engines.torch_backend import module_from_metadata

    module = module_from_metadata(out).eval()
    with torch.no_grad():
        x2d = module(torch.from_numpy(image))[0]
    np.testing.assert_allclose(x2d.numpy(), ref.x2d.numpy(), atol=1e-5, rtol=0)


def test_exported_depth_model_matches_torch(runs, tmp_path):
    _, _, depth = runs
    out = tmp_path / "depth.onnx"
    assert main(["export", str(depth.best_checkpoint), "--out", str(out),
                 "--no-torch-weights"]) == 0
    assert not out.with_suffix(".pt").exists()
    meta = read_model_metadata(out)
    assert meta.task == "depth"
    assert meta.extra["focal_normalization"]["reference_focal_px"] == pytest.approx(300.0)
    image = np.random.default_rng(1).random((1, 3, 48, 64), dtype=np.float32)
    got = _ort_outputs(out, image)["depth_canonical"]
    net = model_from_checkpoint(load_checkpoint(depth.best_checkpoint))
    with torch.no_grad():
        ref = net(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-5)


def test_export_rejects_a_foreign_file(tmp_path):
    bogus = tmp_path / "x.pt"
    torch.save({"weights": 1}, bogus)
    with pytest.raises(ModelSpecError, match="lacks"):
        load_checkpoint(bogus)
    assert main(["export", str(bogus), "--out", str(tmp_path / "x.onnx")]) == 2

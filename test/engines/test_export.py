# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dvc_perception.engines.base import ModelMetadata
from dvc_perception.engines.export import export_onnx, onnx_opset, read_model_metadata
from dvc_perception.engines.reference_nets import TinyKeypointNet
from dvc_perception.errors import ConfigError, ModelSpecError

from .conftest import INPUT_HW, make_metadata


def _ort_run(path, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


@pytest.mark.parametrize("fixture", ["keypoint_net", "depth_net"])
def test_onnxruntime_matches_torch(fixture, request):
    net = request.getfixturevalue(fixture)
    x = torch.randn(1, 3, *INPUT_HW, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = net.module(x)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = _ort_run(net.onnx_path, x.numpy())
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("fixture", ["keypoint_net", "depth_net"])
def test_written_opset_is_17_and_graph_is_valid(fixture, request):
    proto = onnx.load(str(request.getfixturevalue(fixture).onnx_path))
    onnx.checker.check_model(proto)
    assert onnx_opset(proto) == 17
    assert [i.version for i in proto.opset_import if i.domain in ("", "ai.onnx")] == [17]


def test_opset_above_17_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="opset must be <= 17"):
        export_onnx(TinyKeypointNet(), (torch.zeros(1, 3, *INPUT_HW),), tmp_path / "m.onnx",
                    input_names=["image"], output_names=["keypoints", "confidence"],
                    metadata=make_metadata("keypoints", "keypoint"), opset=18)
    assert not (tmp_path / "m.onnx").exists()


def test_metadata_round_trip(keypoint_net):
    meta = read_model_metadata(keypoint_net.onnx_path)
    doc = make_metadata("keypoints", "keypoint")
    assert meta.task == "keypoints"
    assert meta.input_size == (INPUT_HW[1], INPUT_HW[0])
    assert meta.mean == tuple(doc["normalization"]["mean"])
    assert meta.std == tuple(doc["normalization"]["std"])
    assert meta.object_ids == ("demo",)
    assert meta.keypoints_3d == doc["keypoints_3d"]
    assert meta.symmetries == doc["symmetries"]
    assert dict(meta.provenance) == doc["provenance"]
    assert dict(meta.architecture) == doc["architecture"]
    # the raw property is plain JSON any tool can read
    props = {p.key: p.value for p in onnx.load(str(keypoint_net.onnx_path)).metadata_props}
    assert json.loads(props["dvc_perception"])["provenance"]["data_seed"] == 7
    assert ModelMetadata.from_mapping(json.loads(meta.to_json())) == meta


def test_missing_metadata_keys_are_named(tmp_path):
    doc = make_metadata("keypoints", "keypoint")
    del doc["normalization"], doc["provenance"]
    with pytest.raises(ModelSpecError, match=r"\['normalization', 'provenance'\]"):
        export_onnx(TinyKeypointNet(), (torch.zeros(1, 3, *INPUT_HW),), tmp_path / "m.onnx",
                    input_names=["image"], output_names=["keypoints", "confidence"], metadata=doc)


def test_read_metadata_of_model_without_it(tmp_path, keypoint_net):
    proto = onnx.load(str(keypoint_net.onnx_path))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ModelSpecError, match="no 'dvc_perception' entry"):
        read_model_metadata(bare)
    # the sidecar JSON is the documented fallback; an incomplete one names its missing keys
    bare.with_suffix(".json").write_text(json.dumps({"dvc_format": 1, "task": "keypoints"}))
    with pytest.raises(ModelSpecError, match="input_size"):
        read_model_metadata(bare)


def test_dynamic_batch_export(tmp_path):
    module = TinyKeypointNet().eval()
    path = export_onnx(module, (torch.zeros(1, 3, *INPUT_HW),), tmp_path / "dyn.onnx",
                       input_names=["image"], output_names=["keypoints", "confidence"],
                       metadata=make_metadata("keypoints", "keypoint"), dynamic_batch=True)
    x = torch.randn(3, 3, *INPUT_HW)
    got = _ort_run(path, x.numpy())
    with torch.no_grad():
        ref = module(x)
    np.testing.assert_allclose(got[0], ref[0].numpy(), atol=1e-4, rtol=0)
    assert got[0].shape == (3, 8, 2)

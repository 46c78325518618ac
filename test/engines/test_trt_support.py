# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""ONNX-parser support of our models against onnx-tensorrt's transcribed operator tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dvc_perception.engines.trt_support import check_tensorrt_support, load_operator_table
from dvc_perception.errors import ConfigError, ModelSpecError

REPO = Path(__file__).resolve().parents[2]
VERSIONS = ("8.6", "10")


def test_tables_carry_their_source_and_version():
    t8, t10 = load_operator_table("8.6"), load_operator_table("10.15")
    assert t8.tensorrt_version == "8.5" and t8.opset_max == 17
    assert t10.tensorrt_version == "10.15" and (t10.opset_min, t10.opset_max) == (9, 24)
    for t in (t8, t10):
        assert t.source["repository"] == "https://github.com/onnx/onnx-tensorrt"
        assert t.source["path"] == "docs/operators.md"
        assert t.source["header"].startswith(f"TensorRT {t.tensorrt_version} supports")
    assert len(t8.source["commit"]) == 40
    # spot checks against the documents: what changed between the two releases
    assert not t8.is_supported("LayerNormalization") and t10.is_supported("LayerNormalization")
    assert not t8.is_supported("IsInf") and t10.is_supported("IsInf")
    assert t8.operators["DequantizeLinear"]["types"] == ["INT8"]
    assert "x_zero_point" in t10.operators["DequantizeLinear"]["restrictions"]
    with pytest.raises(ConfigError, match="known"):
        load_operator_table("7.1")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("fixture", ["keypoint_net", "depth_net"])
def test_reference_nets_are_supported(fixture, version, request):
    report = check_tensorrt_support(request.getfixturevalue(fixture).onnx_path, version)
    assert report.ok, report.problems
    assert report.opset == 17
    assert {"Conv", "Relu", "Resize"} <= set(report.ops_used)


def _shipped_models() -> list[Path]:
    return sorted((REPO / "models").glob("**/*.onnx"))


@pytest.mark.parametrize("version", VERSIONS)
def test_shipped_models_are_supported(version):
    models = _shipped_models()
    if not models:
        pytest.skip("no shipped ONNX models in models/ yet")
    for path in models:
        check_tensorrt_support(path, version).raise_if_unsupported()


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)


def _reasons(model, version):
    return [p.reason for p in check_tensorrt_support(model, version).problems]


def test_opset_above_range_is_reported():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [X], [Y], opset=18)
    assert any("opset 18 outside" in r for r in _reasons(m, "8.6"))
    assert _reasons(m, "10") == []


def test_unsupported_and_unknown_ops():
    m = _model([helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"])], [X], [Y],
               [numpy_helper.from_array(np.ones(8, np.float32), "s"),
                numpy_helper.from_array(np.zeros(8, np.float32), "b")])
    assert _reasons(m, "8.6") == ["marked unsupported (N)"]
    assert _reasons(m, "10") == []
    custom = _model([helper.make_node("Foo", ["x"], ["y"], domain="com.acme")], [X], [Y])
    custom.opset_import.append(helper.make_opsetid("com.acme", 1))
    assert "plugin" in _reasons(custom, "10")[0]


def test_resize_modes():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    ok = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                          coordinate_transformation_mode="half_pixel")
    cubic = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")
    assert _reasons(_model([ok], [X], [Y], [scales]), "8.6") == []
    assert any("mode 'cubic'" in r for r in _reasons(_model([cubic], [X], [Y], [scales]), "10"))


def test_maxpool_indices_output_is_reported():
    idx = helper.make_tensor_value_info("i", TensorProto.INT64, None)
    m = _model([helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])], [X],
               [Y, idx])
    for v in VERSIONS:
        assert any("Indices" in r for r in _reasons(m, v))


def test_qdq_zero_point_must_be_int8_zero():
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    for zp, expect in [(np.array(0, np.int8), []),
                       (np.array(3, np.int8), ["must be zero"]),
                       (np.array(128, np.uint8), ["must be zero", "UINT8"])]:
        z = numpy_helper.from_array(zp, "z")
        m = _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                    helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
                   [X], [Y], [scale, z])
        reasons = _reasons(m, "8.6")
        for e in expect:
            assert any(e in r for r in reasons), reasons
        assert bool(reasons) == bool(expect)


def test_int32_bias_dequantize_is_rejected():
    bias = numpy_helper.from_array(np.arange(3, dtype=np.int32), "b")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    m = _model([helper.make_node("DequantizeLinear", ["b", "s"], ["y"])], [], [Y], [bias, scale])
    for v in VERSIONS:
        assert any("INT32" in r for r in _reasons(m, v))


def test_slice_axes_must_be_constant_in_8x():
    starts = numpy_helper.from_array(np.array([0], np.int64), "st")
    ends = numpy_helper.from_array(np.array([4], np.int64), "en")
    axes = helper.make_tensor_value_info("ax", TensorProto.INT64, [1])
    m = _model([helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])], [X, axes], [Y],
               [starts, ends])
    assert any("`axes` must be an initializer" in r for r in _reasons(m, "8.6"))
    with pytest.raises(ModelSpecError, match="not parseable by TensorRT 8.5"):
        check_tensorrt_support(m, "8.6").raise_if_unsupported()


def test_subgraphs_are_checked():
    then_g = helper.make_graph([helper.make_node("Unique", ["x"], ["u"])], "then", [],
                               [helper.make_tensor_value_info("u", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"])], "else", [],
                               [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    m = _model([helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
               [X, cond], [Y])
    report = check_tensorrt_support(m, "10")
    assert [p.op_type for p in report.problems] == ["Unique"]
    assert isinstance(m, onnx.ModelProto)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["keypoint", "depth"])
def test_the_networks_architectures_are_supported_fp32_and_int8(kind, tmp_path, calib_dir):
    """The real architectures (untrained, small input) before any shipped model exists."""
    factory = pytest.importorskip("dvc_perception.models.factory")
    import torch

    from dvc_perception.engines.calibrate import load_calibration_frames
    from dvc_perception.engines.export import export_onnx
    from dvc_perception.engines.quantize import quantize_onnx

    from .conftest import make_metadata

    size = {"input_width": 128, "input_height": 96}
    if kind == "keypoint":
        module, fac = factory.keypoint_export_module(**size), factory.KEYPOINT_FACTORY
    else:
        module, fac = factory.depth_export_module(**size), factory.DEPTH_FACTORY
    module.eval()
    with torch.no_grad():
        n_out = len(module(torch.zeros(1, 3, 96, 128))) if kind == "keypoint" else 1
    meta = make_metadata(kind, kind)
    meta["architecture"] = {"factory": fac, "kwargs": size}
    path = export_onnx(module, (torch.zeros(1, 3, 96, 128),), tmp_path / f"{kind}.onnx",
                       input_names=["image"], output_names=[f"out{i}" for i in range(n_out)],
                       metadata=meta)
    frames = load_calibration_frames(calib_dir, input_shape=(1, 3, 96, 128), max_frames=2)
    qdq = quantize_onnx(path, tmp_path / f"{kind}_int8.onnx", frames).output
    for model in (path, qdq):
        for version in VERSIONS:
            check_tensorrt_support(model, version).raise_if_unsupported()

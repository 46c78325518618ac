# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""ONNX Runtime and torch backends behind one interface, cross-checked against torch eager."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from dvc_perception.engines import load_engine
from dvc_perception.engines.base import Engine, TensorSpec
from dvc_perception.engines.onnxrt_backend import ONNXRT_OPTIONS
from dvc_perception.engines.reference_nets import TinyKeypointNet
from dvc_perception.errors import ConfigError, EngineUnavailableError, ModelSpecError, ShapeError

from .conftest import INPUT_HW


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, 3, *INPUT_HW)).astype(np.float32)


def _torch_reference(module: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, ...]:
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return tuple(o.numpy() for o in (out if isinstance(out, tuple) else (out,)))


def test_auto_picks_onnxruntime_here_and_says_why(keypoint_net, caplog):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here: auto would pick it")
    except ImportError:
        pass
    with caplog.at_level(logging.INFO, logger="dvc_perception.engines"):
        engine = load_engine(keypoint_net.onnx_path)
    assert engine.backend == "onnxruntime"
    assert isinstance(engine, Engine)
    assert "tensorrt package is not installed" in caplog.text


def test_onnxruntime_engine_specs_and_outputs(keypoint_net):
    engine = load_engine(keypoint_net.onnx_path, backend="onnxruntime",
                         options={"intra_op_num_threads": 1, "allow_spinning": False,
                                  "graph_optimization_level": "extended"})
    assert engine.inputs == (TensorSpec("image", (1, 3, *INPUT_HW), "float32"),)
    assert [o.name for o in engine.outputs] == ["keypoints", "confidence"]
    assert engine.outputs[0].shape == (1, 8, 2)
    x = _image(1)
    out = engine.run({"image": x})
    ref = _torch_reference(keypoint_net.module, x)
    np.testing.assert_allclose(out["keypoints"], ref[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["confidence"], ref[1], atol=1e-5, rtol=0)
    # torch tensors are accepted as inputs too
    out_t = engine.run({"image": torch.from_numpy(x)})
    np.testing.assert_array_equal(out_t["keypoints"], out["keypoints"])


@pytest.mark.parametrize("how", ["module", "factory", "metadata"])
def test_torch_backend_matches_onnxruntime(keypoint_net, how):
    options = {
        "module": {"module": keypoint_net.module},
        "factory": {"factory": lambda: keypoint_net.module},
        "metadata": None,  # architecture in metadata + keypoint.pt next to keypoint.onnx
    }[how]
    torch_engine = load_engine(keypoint_net.onnx_path, backend="torch", device="cpu",
                               options=options)
    source = {"module": "module option", "factory": "factory option",
              "metadata": "factory + state dict"}[how]
    assert torch_engine.source == source and torch_engine.description == f"torch ({source})"
    ort_engine = load_engine(keypoint_net.onnx_path, backend="onnxruntime")
    assert torch_engine.inputs == ort_engine.inputs
    assert torch_engine.outputs == ort_engine.outputs
    x = _image(2)
    a, b = torch_engine.run({"image": x}), ort_engine.run({"image": x})
    for name in ("keypoints", "confidence"):
        np.testing.assert_allclose(a[name], b[name], atol=1e-4, rtol=0)


def test_torch_backend_without_the_state_dict_runs_the_onnx_graph(keypoint_net, tmp_path):
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(keypoint_net.onnx_path.read_bytes())
    graph = load_engine(lone, backend="torch", device="cpu")
    twin = load_engine(keypoint_net.onnx_path, backend="torch", device="cpu")
    assert (graph.source, twin.source) == ("ONNX graph", "factory + state dict")
    x = _image(4)
    a, b = graph.run({"image": x}), twin.run({"image": x})
    for name in ("keypoints", "confidence"):  # keypoints in pixels: a few ulp of ~50
        np.testing.assert_allclose(a[name], b[name], atol=1e-4, rtol=0)
    # a twin that is there but does not fit is an error, never a silent fall-back to the graph
    torch.save({"nope": torch.zeros(1)}, lone.with_suffix(".pt"))
    with pytest.raises(ModelSpecError, match=r"lone\.pt: the state dict does not fit"):
        load_engine(lone, backend="torch", device="cpu")


def test_torch_backend_on_depth(depth_net):
    engine = load_engine(depth_net.onnx_path, backend="torch", device="cpu")
    x = _image(3)
    np.testing.assert_allclose(engine.run({"image": x})["depth"],
                               _torch_reference(depth_net.module, x)[0], atol=1e-6)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_inputs_are_checked(keypoint_net, backend):
    engine = load_engine(keypoint_net.onnx_path, backend=backend, device="cpu")
    expected = r"expected \(1,3,96,128\) float32, got \(1, 3, 96, 127\)"
    with pytest.raises(ShapeError, match=expected):
        engine.run({"image": np.zeros((1, 3, 96, 127), np.float32)})
    with pytest.raises(ShapeError, match="got .* float64"):
        engine.run({"image": np.zeros((1, 3, *INPUT_HW), np.float64)})
    with pytest.raises(ModelSpecError, match=r"missing \['image'\], unknown \['img'\]"):
        engine.run({"img": np.zeros((1, 3, *INPUT_HW), np.float32)})
    with pytest.raises(ModelSpecError, match="mapping"):
        engine.run(np.zeros((1, 3, *INPUT_HW), np.float32))


def test_options_validated_key_by_key(keypoint_net):
    with pytest.raises(ConfigError, match="unknown key 'threads'") as err:
        load_engine(keypoint_net.onnx_path, backend="onnxruntime", options={"threads": 2})
    for known in ONNXRT_OPTIONS:
        assert known in str(err.value)
    with pytest.raises(ConfigError, match="intra_op_num_threads must be int, got str"):
        load_engine(keypoint_net.onnx_path, backend="onnxruntime",
                    options={"intra_op_num_threads": "2"})
    with pytest.raises(ConfigError, match="must be >= 0"):
        load_engine(keypoint_net.onnx_path, backend="onnxruntime",
                    options={"intra_op_num_threads": -1})
    with pytest.raises(ConfigError, match="unknown key 'workspace_mib'"):
        load_engine(keypoint_net.onnx_path, backend="torch", device="cpu",
                    options={"workspace_mib": 64})
    with pytest.raises(ConfigError, match="backend must be one of"):
        load_engine(keypoint_net.onnx_path, backend="openvino")
    with pytest.raises(ConfigError, match="precision must be one of"):
        load_engine(keypoint_net.onnx_path, precision="int4")


def test_int8_of_a_float_model_on_onnxruntime_is_refused(keypoint_net):
    with pytest.raises(ConfigError, match="quantise it first"):
        load_engine(keypoint_net.onnx_path, backend="onnxruntime", precision="int8")


def test_unavailable_backends_say_what_is_missing(keypoint_net):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(EngineUnavailableError, match="TensorRT is not installed"):
            load_engine(keypoint_net.onnx_path, backend="tensorrt")
    if not torch.cuda.is_available():
        with pytest.raises(EngineUnavailableError, match="sees no CUDA device"):
            load_engine(keypoint_net.onnx_path, backend="torch", device="cuda")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(EngineUnavailableError, match="no CUDAExecutionProvider"):
            load_engine(keypoint_net.onnx_path, backend="onnxruntime", device="cuda")
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_engine(keypoint_net.onnx_path.with_name("nope.onnx"))


def test_torch_module_of_wrong_type_is_refused(keypoint_net):
    with pytest.raises(ConfigError, match="nn.Module"):
        load_engine(keypoint_net.onnx_path, backend="torch", device="cpu",
                    options={"module": TinyKeypointNet})


def test_importing_engines_loads_no_backend_library():
    code = (
        "import sys, dvc_perception.engines, dvc_perception.engines.tensorrt_backend, "
        "dvc_perception.engines.cache, dvc_perception.engines.trt_support; "
        "print(sorted(m for m in ('tensorrt', 'onnxruntime', 'rclpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_explicit_execution_providers(keypoint_net):
    import onnxruntime as ort

    engine = load_engine(keypoint_net.onnx_path, backend="onnxruntime",
                         options={"providers": ["CPUExecutionProvider"]})
    assert engine.providers == ("CPUExecutionProvider",)
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(EngineUnavailableError, match="TensorrtExecutionProvider"):
            load_engine(keypoint_net.onnx_path, backend="onnxruntime",
                        options={"providers": ["TensorrtExecutionProvider"]})

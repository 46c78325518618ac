# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Engine settings of the node (`pipeline.network.backend / precision / device /
engine_cache_dir`): checked at configure with the choice named, passed to the engines, and
reported on /diagnostics from the engine objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from rclpy.parameter import Parameter

from dvc_perception.config import NETWORK_BACKENDS, PRECISIONS, NetworkConfig, PipelineConfig
from dvc_perception.errors import ConfigError
from dvc_perception.pipeline.pipeline import (
    EngineSettings,
    default_engine_cache_dir,
    make_depth_source,
    make_keypoint_source,
)
from dvc_perception.ros.perception_node import PerceptionNode, pipeline_engine_values

pytestmark = pytest.mark.ros

MODELS = Path(__file__).resolve().parents[2] / "models"
POSE = MODELS / "pose_demo_object.onnx"
DEPTH = MODELS / "depth.onnx"


def test_choices_are_the_engines_own():
    from dvc_perception.engines.base import PRECISIONS as ENGINE_PRECISIONS
    from dvc_perception.engines.load import BACKENDS

    assert PRECISIONS == ENGINE_PRECISIONS
    assert set(NETWORK_BACKENDS) == set(BACKENDS)


@pytest.mark.parametrize("values, message", [
    ({"backend": "onnxruntime", "precision": "fp16"},
     "pipeline.network.precision: fp16 is not supported by backend onnxruntime"),
    ({"backend": "torch", "precision": "int8"},
     "pipeline.network.precision: int8 is not supported by backend torch"),
    ({"backend": "torch", "precision": "fp16", "device": "cpu"}, "needs a CUDA device"),
    ({"backend": "tensorrt", "device": "cpu"}, "pipeline.network.device: backend tensorrt"),
    ({"device": "gpu"}, "pipeline.network.device: expected"),
    ({"device": "cuda:x"}, "pipeline.network.device: expected"),
    ({"precision": "fp64"}, "pipeline.network.precision: expected one of"),
    ({"backend": "openvino"}, "pipeline.network.backend: expected one of"),
])
def test_unsupported_combinations_are_config_errors_naming_the_choice(values, message):
    with pytest.raises(ConfigError, match=message):
        NetworkConfig(**values)


@pytest.mark.parametrize("values", [
    {"backend": "auto", "precision": "fp16"},  # what auto resolves to decides, at configure
    {"backend": "tensorrt", "precision": "int8", "device": "cuda:1"},
    {"backend": "torch", "precision": "fp16", "device": "cuda"},
    {"backend": "onnxruntime", "precision": "int8", "device": "cpu"},
])
def test_combinations_that_may_run_are_accepted(values):
    assert NetworkConfig(**values).precision == values["precision"]


def test_engine_settings_from_config(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_engine_cache_dir() == tmp_path / "dvc_perception" / "engines"
    settings = EngineSettings.from_config(PipelineConfig())
    assert (settings.backend, settings.precision, settings.device) == ("onnxruntime", "fp32", None)
    assert settings.cache_dir == tmp_path / "dvc_perception" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_engine_cache_dir() == Path.home() / ".cache" / "dvc_perception" / "engines"
    explicit = PipelineConfig.from_mapping(
        {"network": {"engine_cache_dir": "~/engines", "device": "cpu", "backend": "torch"}})
    settings = EngineSettings.from_config(explicit)
    assert settings.cache_dir == Path.home() / "engines" and settings.device == "cpu"


def test_settings_reach_the_engines_and_diagnostics_read_them_back():
    config = PipelineConfig.from_mapping({
        "keypoint_source": "network", "depth_source": "network",
        "network": {"model_path": str(POSE), "depth_model_path": str(DEPTH), "backend": "torch",
                    "device": "cpu", "precision": "fp32"}})
    keypoints, depth = make_keypoint_source(config), make_depth_source(config)
    assert keypoints.engine.backend == "torch" == depth.engine.backend
    assert str(keypoints.engine.device) == "cpu" == str(depth.engine.device)

    class _Pipeline:  # the two attributes pipeline_engine_values reads
        keypoint_source, depth_source = keypoints, depth

    values = pipeline_engine_values(_Pipeline(), config)  # type: ignore[arg-type]
    assert (values["keypoints.backend"], values["keypoints.device"],
            values["keypoints.precision"]) == ("torch", "cpu", "fp32")
    assert (values["depth.backend"], values["depth.device"]) == ("torch", "cpu")
    assert values["model.depth"].startswith("depth.onnx sha256:")
    assert values["precision"] == "keypoints fp32; depth fp32; pnp float64"


def test_int8_on_a_float_model_fails_configure_naming_the_choice(ctx):
    node = PerceptionNode(context=ctx, parameter_overrides=[
        Parameter("torch_threads", value=0),
        Parameter("pipeline.keypoint_source", value="network"),
        Parameter("pipeline.network.model_path", value=str(POSE)),
        Parameter("pipeline.network.precision", value="int8")])
    try:
        error = node.startup_error
        assert "pipeline.network.backend 'onnxruntime', precision 'int8'" in error, error
        assert "pose_demo_object.onnx" in error and "float model" in error, error
        assert not node.startup_unexpected  # a typed error
    finally:
        node.destroy_node()


def test_fp16_on_onnxruntime_fails_configure_naming_the_parameter(ctx):
    node = PerceptionNode(context=ctx, parameter_overrides=[
        Parameter("torch_threads", value=0),
        Parameter("pipeline.network.precision", value="fp16")])
    try:
        assert "pipeline.network.precision: fp16 is not supported by backend onnxruntime" in (
            node.startup_error), node.startup_error
        assert node.pipeline is None
    finally:
        node.destroy_node()

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""TensorRT build settings (pure, no TensorRT) and the real TensorRT path where it exists."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from dvc_perception.engines import load_engine, tensorrt_build
from dvc_perception.engines.base import TensorSpec
from dvc_perception.engines.tensorrt_build import (
    DEFAULT_WORKSPACE_MIB,
    TENSORRT_OPTIONS,
    EngineBuilder,
    build_settings_from_options,
    import_tensorrt,
    is_qdq_model,
)
from dvc_perception.errors import ConfigError, EngineUnavailableError, ModelSpecError

STATIC = (TensorSpec("image", (1, 3, 96, 128), "float32"),)
DYNAMIC = (TensorSpec("image", (None, 3, 96, 128), "float32"),)


def test_fp32_and_fp16_flags():
    s = build_settings_from_options("fp32", None, inputs=STATIC, is_qdq=False)
    assert (s.fp16, s.int8, s.strongly_typed, s.use_calibrator) == (False,) * 4
    assert s.workspace_bytes == DEFAULT_WORKSPACE_MIB << 20
    assert s.profile_shapes == {"image": ((1, 3, 96, 128),) * 3}
    s = build_settings_from_options("fp16", {"workspace_mib": 256, "timing_cache": "/tmp/t.cache"},
                                    inputs=STATIC, is_qdq=False)
    assert (s.fp16, s.int8, s.strongly_typed) == (True, False, False)
    assert s.workspace_bytes == 256 * 1024 * 1024 and s.timing_cache == "/tmp/t.cache"


def test_int8_from_qdq_is_strongly_typed_without_precision_flags():
    s = build_settings_from_options("int8", None, inputs=STATIC, is_qdq=True)
    assert (s.strongly_typed, s.fp16, s.int8, s.use_calibrator) == (True, False, False, False)
    weak = build_settings_from_options("int8", {"strongly_typed": False}, inputs=STATIC,
                                       is_qdq=True)
    assert (weak.strongly_typed, weak.int8, weak.fp16) == (False, True, True)
    assert weak.cache_settings() != s.cache_settings()


def test_int8_from_float_needs_real_calibration_frames(tmp_path):
    with pytest.raises(ConfigError, match="random calibration is not offered"):
        build_settings_from_options("int8", None, inputs=STATIC, is_qdq=False)
    s = build_settings_from_options("int8", {"calibration_dir": str(tmp_path),
                                             "calibration_max_frames": 32},
                                    inputs=STATIC, is_qdq=False)
    assert (s.use_calibrator, s.int8, s.fp16, s.strongly_typed) == (True, True, True, False)
    assert s.calibration_max_frames == 32
    s64 = build_settings_from_options("int8", {"calibration_dir": str(tmp_path),
                                               "calibration_max_frames": 64},
                                      inputs=STATIC, is_qdq=False)
    assert s64.cache_settings() != s.cache_settings()  # a different calibration, a new engine


def test_inconsistent_requests_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="precision='int8'"):
        build_settings_from_options("fp16", None, inputs=STATIC, is_qdq=True)
    with pytest.raises(ConfigError, match="already carries its scales"):
        build_settings_from_options("int8", {"calibration_dir": str(tmp_path)}, inputs=STATIC,
                                    is_qdq=True)
    with pytest.raises(ConfigError, match="only applies to int8"):
        build_settings_from_options("fp16", {"strongly_typed": True}, inputs=STATIC,
                                    is_qdq=False)
    with pytest.raises(ConfigError, match="workspace_mib must be > 0"):
        build_settings_from_options("fp32", {"workspace_mib": 0}, inputs=STATIC, is_qdq=False)
    with pytest.raises(ConfigError, match="builder_optimization_level"):
        build_settings_from_options("fp32", {"builder_optimization_level": 9}, inputs=STATIC,
                                    is_qdq=False)
    with pytest.raises(ConfigError, match="unknown key 'intra_op_num_threads'") as err:
        build_settings_from_options("fp32", {"intra_op_num_threads": 1}, inputs=STATIC,
                                    is_qdq=False)
    assert all(k in str(err.value) for k in TENSORRT_OPTIONS)
    with pytest.raises(ConfigError, match="must be fp32, fp16 or int8"):
        build_settings_from_options("bf16", None, inputs=STATIC, is_qdq=False)


def test_profile_shapes():
    with pytest.raises(ConfigError, match="dynamic shape"):
        build_settings_from_options("fp32", None, inputs=DYNAMIC, is_qdq=False)
    prof = {"image": [[1, 3, 96, 128], [2, 3, 96, 128], [8, 3, 96, 128]]}
    s = build_settings_from_options("fp32", {"profile_shapes": prof}, inputs=DYNAMIC,
                                    is_qdq=False)
    assert s.profile_shapes["image"] == ((1, 3, 96, 128), (2, 3, 96, 128), (8, 3, 96, 128))
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        build_settings_from_options(
            "fp32", {"profile_shapes": {"image": [[4, 3, 96, 128], [2, 3, 96, 128],
                                                  [8, 3, 96, 128]]}},
            inputs=DYNAMIC, is_qdq=False)
    with pytest.raises(ConfigError, match="does not fit"):
        build_settings_from_options(
            "fp32", {"profile_shapes": {"image": [[1, 3, 64, 64]] * 3}}, inputs=DYNAMIC,
            is_qdq=False)
    with pytest.raises(ConfigError, match="unknown inputs"):
        build_settings_from_options(
            "fp32", {"profile_shapes": {"img": [[1, 3, 96, 128]] * 3}}, inputs=DYNAMIC,
            is_qdq=False)


def test_is_qdq_model(keypoint_net):
    assert not is_qdq_model(keypoint_net.onnx_path)


def test_build_and_runtime_import_one_way_without_tensorrt():
    code = (
        "import sys, dvc_perception.engines.tensorrt_build; "
        "print('dvc_perception.engines.tensorrt_backend' in sys.modules, "
        "'tensorrt' in sys.modules); "
        "import dvc_perception.engines.tensorrt_backend; print('tensorrt' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


class _FakeTensorRT:
    """The part of TensorRT 10's Python API that `EngineBuilder` uses, recording each call."""

    def __init__(self, *, parse_errors=(), build_result=b"ENGINE"):
        self.calls = []
        self.parse_errors = list(parse_errors)
        self.build_result = build_result
        calls = self.calls

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self):
                pass

        def tensor(name):
            return SimpleNamespace(name=name, shape=(1, 3, 96, 128), dtype="FLOAT")

        network = SimpleNamespace(num_inputs=1, num_outputs=1, get_input=lambda i: tensor("image"),
                                  get_output=lambda i: tensor("keypoints"))

        class Parser:
            def __init__(parser, net, logger):
                parser.num_errors = len(self.parse_errors)

            def parse_from_file(parser, path):
                calls.append(("parse", path))
                return not self.parse_errors

            def get_error(parser, i):
                return self.parse_errors[i]

        class TimingCache:
            def __init__(cache, blob):
                cache.blob = bytes(blob)

            def serialize(cache):
                return cache.blob + b"+new"

        class Config:
            builder_optimization_level = 3

            def set_memory_pool_limit(config, pool, size):
                calls.append(("pool", pool, size))

            def set_flag(config, flag):
                calls.append(("flag", flag))

            def add_optimization_profile(config, profile):
                calls.append(("profile", dict(profile.shapes)))

            def create_timing_cache(config, blob):
                config.cache = TimingCache(blob)
                return config.cache

            def set_timing_cache(config, cache, ignore_mismatch):
                calls.append(("timing_cache", cache.blob, ignore_mismatch))

            def get_timing_cache(config):
                return config.cache

        class Profile:
            def __init__(profile):
                profile.shapes = {}

            def set_shape(profile, name, mn, opt, mx):
                profile.shapes[name] = (mn, opt, mx)

        class Builder:
            def __init__(builder, logger):
                pass

            def create_network(builder, flags):
                calls.append(("network_flags", flags))
                return network

            def create_builder_config(builder):
                builder.config = Config()
                return builder.config

            def create_optimization_profile(builder):
                return Profile()

            def build_serialized_network(builder, net, config):
                calls.append(("build", config.builder_optimization_level))
                return self.build_result

        self.ILogger, self.Builder, self.OnnxParser = ILogger, Builder, Parser
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=0)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        self.BuilderFlag = SimpleNamespace(FP16="FP16", INT8="INT8")


def test_engine_builder_calls_with_fake_tensorrt(monkeypatch, tmp_path):
    fake = _FakeTensorRT()
    monkeypatch.setattr(tensorrt_build, "import_tensorrt", lambda: fake)
    cache = tmp_path / "sub" / "timing.cache"
    s = build_settings_from_options(
        "fp16", {"workspace_mib": 64, "timing_cache": str(cache),
                 "builder_optimization_level": 4}, inputs=STATIC, is_qdq=False)  # fmt: skip
    assert EngineBuilder(s).build(tmp_path / "m.onnx") == b"ENGINE"
    assert fake.calls == [
        ("network_flags", 0),
        ("parse", str(tmp_path / "m.onnx")),
        ("pool", "WORKSPACE", 64 << 20),
        ("flag", "FP16"),
        ("profile", {"image": ((1, 3, 96, 128),) * 3}),
        ("timing_cache", b"", False),  # read (empty: no file yet) before the build
        ("build", 4),
    ]
    assert cache.read_bytes() == b"+new"  # written after the build, parent created
    fake.calls.clear()
    EngineBuilder(s).build(tmp_path / "m.onnx")  # the cache is read back and extended
    assert ("timing_cache", b"+new", False) in fake.calls
    assert cache.read_bytes() == b"+new+new"
    assert sorted(p.name for p in cache.parent.iterdir()) == ["timing.cache"]  # no temp left


def test_engine_builder_strongly_typed_and_failures(monkeypatch, tmp_path):
    fake = _FakeTensorRT()
    monkeypatch.setattr(tensorrt_build, "import_tensorrt", lambda: fake)
    qdq = build_settings_from_options("int8", None, inputs=STATIC, is_qdq=True)
    EngineBuilder(qdq).build(tmp_path / "q.onnx")
    assert ("network_flags", 1) in fake.calls
    assert not [c for c in fake.calls if c[0] == "flag"]  # strongly typed: no precision flags
    fp32 = build_settings_from_options("fp32", None, inputs=STATIC, is_qdq=False)
    fake.parse_errors = ["node 3: unsupported op"]
    with pytest.raises(ModelSpecError, match="unsupported op"):
        EngineBuilder(fp32).build(tmp_path / "m.onnx")
    fake.parse_errors, fake.build_result = [], None
    with pytest.raises(EngineUnavailableError, match="returned None"):
        EngineBuilder(fp32).build(tmp_path / "m.onnx")


def _tensorrt_or_skip():
    try:
        return import_tensorrt()
    except EngineUnavailableError as err:
        pytest.skip(str(err))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_matches_onnxruntime(keypoint_net, tmp_path, precision):
    _tensorrt_or_skip()
    x = np.random.default_rng(0).normal(size=(1, 3, 96, 128)).astype(np.float32)
    trt_engine = load_engine(keypoint_net.onnx_path, backend="tensorrt", precision=precision,
                             cache_dir=tmp_path, options={"timing_cache": str(tmp_path / "tc")})
    ref = load_engine(keypoint_net.onnx_path, backend="onnxruntime").run({"image": x})
    got = trt_engine.run({"image": x})
    tol = 1e-3 if precision == "fp32" else 5e-2
    np.testing.assert_allclose(got["keypoints"], ref["keypoints"], atol=tol * 100, rtol=0)
    # second load comes from the cache
    cached = load_engine(keypoint_net.onnx_path, backend="tensorrt", precision=precision,
                         cache_dir=tmp_path)
    np.testing.assert_array_equal(cached.run({"image": x})["keypoints"], got["keypoints"])

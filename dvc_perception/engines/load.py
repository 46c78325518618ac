# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`load_engine`: one call that picks and builds a backend for an ONNX model."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dvc_perception.engines.base import PRECISIONS, Engine
from dvc_perception.errors import ConfigError, EngineUnavailableError, ModelSpecError

_LOG = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "tensorrt", "onnxruntime", "torch")


def tensorrt_availability() -> tuple[bool, str]:
    """Whether the TensorRT backend can run here, and why (or why not).

    Imports nothing heavy unless TensorRT itself is installed.
    """
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return False, "the tensorrt package is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, f"tensorrt is installed but torch {torch.__version__} sees no CUDA device"
    return True, f"tensorrt is installed and CUDA device {torch.cuda.get_device_name(0)!r} exists"


def choose_backend(backend: str) -> tuple[str, str]:
    """Resolve ``"auto"`` to a concrete backend; returns (backend, reason).

    ``auto`` picks TensorRT when it is importable and a CUDA device exists, else ONNX Runtime.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend, "asked for explicitly"
    ok, why = tensorrt_availability()
    if ok:
        return "tensorrt", why
    return "onnxruntime", why


def load_engine(
    onnx_path: str | os.PathLike[str],
    backend: str = "auto",
    precision: str = "fp32",
    device: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Engine:
    """Load `onnx_path` on a backend.

    Args:
        onnx_path: ONNX model (a QDQ model for int8 on ONNX Runtime / explicit TensorRT int8).
        backend: "auto" | "tensorrt" | "onnxruntime" | "torch". ``auto`` picks TensorRT when it
            is importable and a CUDA device exists, else ONNX Runtime (CUDA execution provider
            when available, else CPU), and logs why.
        precision: "fp32" | "fp16" | "int8".
        device: None (best available), "cpu", "cuda" or "cuda:N".
        cache_dir: TensorRT engine cache directory (ignored by the other backends).
        options: backend-specific settings, validated key by key: see ``ONNXRT_OPTIONS``,
            ``TORCH_OPTIONS``, ``TENSORRT_OPTIONS``. Under ``auto`` they must suit the backend
            that is picked.

    Raises:
        ModelSpecError: the file does not exist.
        ConfigError: unknown backend/precision or invalid options.
        EngineUnavailableError: the asked backend cannot run here (says what is missing).
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise ModelSpecError(f"model file {path} does not exist")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    chosen, why = choose_backend(backend)
    _LOG.info("load_engine(%s): backend %s (%s), precision %s", path, chosen, why, precision)
    if chosen == "tensorrt":
        from dvc_perception.engines.tensorrt_backend import TensorRTEngine

        return TensorRTEngine(
            path, precision=precision, device=device, cache_dir=cache_dir, options=options
        )
    if chosen == "onnxruntime":
        from dvc_perception.engines.onnxrt_backend import OnnxRuntimeEngine
        from dvc_perception.engines.tensorrt_build import is_qdq_model

        qdq = is_qdq_model(path)
        if precision == "int8" and not qdq:
            raise ConfigError(
                f"{path} is a float model; for int8 on ONNX Runtime quantise it first "
                f"(`dvc-perception quantize`) and load the QDQ model"
            )
        if precision != "int8" and qdq:
            raise ConfigError(f"{path} is a QDQ (int8) model; load it with precision='int8'")
        if precision == "fp16":
            raise EngineUnavailableError(
                "onnxruntime fp16 needs a model exported in float16; use fp32 or int8 here, "
                "or the tensorrt / torch backend on a GPU"
            )
        return OnnxRuntimeEngine(path, precision=precision, device=device, options=options)
    from dvc_perception.engines.torch_backend import TorchEngine

    return TorchEngine(path, precision=precision, device=device, options=options)

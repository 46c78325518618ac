# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""ONNX Runtime backend: CPU with configurable threads; CUDA / TensorRT execution providers."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from dvc_perception.engines.base import EngineSpecs, TensorSpec, check_inputs, check_options
from dvc_perception.errors import ConfigError, EngineUnavailableError, ModelSpecError

_LOG = logging.getLogger(__name__)

ONNXRT_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "intra_op_num_threads": int,  # threads inside one operator; 0 = ORT default
    "inter_op_num_threads": int,  # threads across operators (parallel mode only)
    "providers": (list, tuple),  # explicit EP list, e.g. ["CPUExecutionProvider"]
    "graph_optimization_level": str,  # "disable" | "basic" | "extended" | "all"
    "device_id": int,  # CUDA device for the CUDA / TensorRT EPs
    "allow_spinning": bool,  # intra-op threads busy-wait between ops (ORT default True); False
    # frees the cores for other work (PnP, ROS) on a small CPU, at some latency cost
}
_OPT_LEVELS = ("disable", "basic", "extended", "all")

# ONNX Runtime type strings -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def default_providers(device: str | None) -> tuple[list[str], str]:
    """Execution providers for `device` and a sentence saying why they were chosen.

    Args:
        device: None (best available), "cpu", or "cuda" / "cuda:N".

    Raises:
        EngineUnavailableError: "cuda" asked but ONNX Runtime has no CUDA provider here.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device is not None and device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"onnxruntime device must be None, 'cpu' or 'cuda[:N]', got {device!r}")
    if device == "cpu":
        return ["CPUExecutionProvider"], "device='cpu' asked"
    if "CUDAExecutionProvider" in available:
        return (
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            "ONNX Runtime has the CUDA execution provider",
        )
    if device is not None:
        raise EngineUnavailableError(
            f"device {device!r} asked but this ONNX Runtime has no CUDAExecutionProvider "
            f"(available: {available}); install onnxruntime-gpu"
        )
    return ["CPUExecutionProvider"], f"no CUDA execution provider (available: {available})"


class OnnxRuntimeEngine(EngineSpecs):
    """Runs an ONNX file with ONNX Runtime.

    Args:
        onnx_path: the model.
        precision: "fp32" for a float model, "int8" for a QDQ model (checked), "fp16" for a
            model exported in half precision.
        device: None, "cpu" or "cuda[:N]" (see `default_providers`).
        options: see `ONNXRT_OPTIONS`; unknown keys raise ConfigError.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        *,
        precision: str = "fp32",
        device: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise EngineUnavailableError(f"onnxruntime is not installed ({err})") from err
        opts = check_options("onnxruntime", options, ONNXRT_OPTIONS)
        self.precision = precision
        so = ort.SessionOptions()
        for key in ("intra_op_num_threads", "inter_op_num_threads"):
            if key in opts:
                if opts[key] < 0:
                    raise ConfigError(f"onnxruntime options: {key} must be >= 0, got {opts[key]}")
                setattr(so, key, opts[key])
        if "allow_spinning" in opts:
            so.add_session_config_entry(
                "session.intra_op.allow_spinning", "1" if opts["allow_spinning"] else "0"
            )
        level = opts.get("graph_optimization_level", "all")
        if level not in _OPT_LEVELS:
            raise ConfigError(
                f"onnxruntime options: graph_optimization_level must be one of {_OPT_LEVELS}, "
                f"got {level!r}"
            )
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        if "providers" in opts:
            providers = [str(p) for p in opts["providers"]]
            missing = [p for p in providers if p not in ort.get_available_providers()]
            if missing:
                raise EngineUnavailableError(
                    f"onnxruntime providers {missing} are not available here "
                    f"(available: {ort.get_available_providers()})"
                )
            why = "providers given in options"
        else:
            providers, why = default_providers(device)
        if "device_id" in opts:
            providers_arg: list[Any] = [
                (p, {"device_id": opts["device_id"]}) if p != "CPUExecutionProvider" else p
                for p in providers
            ]
        else:
            providers_arg = list(providers)
        try:
            self._session = ort.InferenceSession(
                str(onnx_path), sess_options=so, providers=providers_arg
            )
        except Exception as err:  # noqa: BLE001 - ORT raises its own untyped errors
            raise ModelSpecError(f"onnxruntime cannot load {onnx_path}: {err}") from err
        self.providers = tuple(self._session.get_providers())
        _LOG.info("onnxruntime: %s with %s (%s)", onnx_path, list(self.providers), why)
        self._inputs = tuple(_spec(a) for a in self._session.get_inputs())
        self._outputs = tuple(_spec(a) for a in self._session.get_outputs())

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run one inference (inputs are checked first; torch tensors are accepted)."""
        check_inputs(self._inputs, feeds)
        arrays = {k: _to_numpy(v) for k, v in feeds.items()}
        values = self._session.run([o.name for o in self._outputs], arrays)
        return {o.name: np.asarray(v) for o, v in zip(self._outputs, values)}


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)

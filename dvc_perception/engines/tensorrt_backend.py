# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""TensorRT 10 runtime: run an ONNX model as a cached (or freshly built) engine on a CUDA device.

`TensorRTEngine` derives the build settings and engine-cache key from the model and options,
deserializes the cached engine or builds one with `dvc_perception.engines.tensorrt_build` (and
caches it), then runs it: inputs are moved to CUDA torch tensors, outputs are preallocated
torch tensors, addresses go to ``set_tensor_address`` and ``execute_async_v3`` runs on a torch
CUDA stream (no pycuda). ``tensorrt`` is imported only inside `TensorRTEngine.__init__`, so
importing this module never needs TensorRT. Options: see
`dvc_perception.engines.tensorrt_build.TENSORRT_OPTIONS`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.engines.base import EngineSpecs, TensorSpec, check_inputs
from dvc_perception.engines.tensorrt_build import (
    EngineBuilder,
    build_settings_from_options,
    import_tensorrt,
    is_qdq_model,
    make_logger,
)
from dvc_perception.errors import ConfigError, EngineUnavailableError

_LOG = logging.getLogger(__name__)


class TensorRTEngine(EngineSpecs):
    """Runs an ONNX model as a TensorRT 10 engine on a CUDA device (built or from the cache).

    Args:
        onnx_path: the model (a QDQ model for explicit INT8).
        precision: "fp32", "fp16" or "int8".
        device: None or "cuda[:N]".
        cache_dir: where serialized engines are cached (None: build every time).
        options: see `tensorrt_build.TENSORRT_OPTIONS`.

    Raises:
        EngineUnavailableError: no TensorRT, no CUDA, or the build failed.
        ConfigError: invalid options (see `build_settings_from_options`).
    """

    backend = "tensorrt"

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        *,
        precision: str = "fp32",
        device: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        from dvc_perception.engines.cache import (
            make_cache_key,
            read_cached_engine,
            write_cached_engine,
        )
        from dvc_perception.engines.torch_backend import onnx_io_specs
        from dvc_perception.files import file_sha256

        trt = import_tensorrt()
        import torch

        self.precision = precision
        onnx_inputs, _ = onnx_io_specs(onnx_path)
        settings = build_settings_from_options(
            precision, options, inputs=onnx_inputs, is_qdq=is_qdq_model(onnx_path)
        )
        if device is not None and not device.startswith("cuda"):
            raise ConfigError(f"tensorrt runs on 'cuda[:N]', got device {device!r}")
        index = int(device.split(":")[1]) if device and ":" in device else settings.device_id
        self.device = torch.device("cuda", index)
        props = torch.cuda.get_device_properties(self.device)
        calib_hash = ""
        if settings.use_calibrator:
            calib_hash = _dir_hash(settings.calibration_dir, file_sha256)
        key = make_cache_key(
            onnx_path,
            trt_version=trt.__version__,
            gpu_name=props.name,
            compute_capability=(props.major, props.minor),
            precision=precision,
            input_shapes=settings.profile_shapes,
            calibration_sha256=calib_hash,
            settings=settings.cache_settings(),
        )
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        engine = None
        with torch.cuda.device(self.device):
            if cache_dir is not None:
                cached = read_cached_engine(cache_dir, key)
                if cached.state == "hit":
                    engine = self._runtime.deserialize_cuda_engine(cached.payload)
                    if engine is None:
                        _LOG.warning("cached engine failed to deserialize; rebuilding")
                _LOG.info("engine cache %s: %s %s", cache_dir, cached.state, cached.reason)
            if engine is None:
                blob = EngineBuilder(settings).build(onnx_path)
                if cache_dir is not None:
                    write_cached_engine(cache_dir, key, blob)
                engine = self._runtime.deserialize_cuda_engine(blob)
            if engine is None:
                raise EngineUnavailableError(
                    f"TensorRT could not deserialize the engine of {onnx_path}"
                )
            self._engine = engine
            self._context = engine.create_execution_context()
            self._stream = torch.cuda.Stream(device=self.device)
        self._torch_dtypes = _trt_to_torch_dtypes(trt)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins, outs = [], []
        for name in names:
            dtype = self._torch_dtypes[engine.get_tensor_dtype(name)]
            shape = tuple(int(d) if d >= 0 else None for d in engine.get_tensor_shape(name))
            spec = TensorSpec(name, shape, str(dtype).replace("torch.", ""))
            (ins if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(spec)
        self._inputs, self._outputs = tuple(ins), tuple(outs)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run one inference; numpy or torch in, numpy out (synchronises the stream)."""
        return {k: v.cpu().numpy() for k, v in self.run_torch(feeds).items()}

    def run_torch(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run one inference and return CUDA torch tensors (the stream is synchronised)."""
        import torch

        check_inputs(self._inputs, feeds)
        keep = []
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            for spec in self._inputs:
                x = torch.as_tensor(feeds[spec.name]).to(self.device, non_blocking=True)
                x = x.contiguous()
                keep.append(x)
                self._context.set_input_shape(spec.name, tuple(x.shape))
                self._context.set_tensor_address(spec.name, int(x.data_ptr()))
            outputs = {}
            for spec in self._outputs:
                shape = tuple(self._context.get_tensor_shape(spec.name))
                dtype = self._torch_dtypes[self._engine.get_tensor_dtype(spec.name)]
                y = torch.empty(shape, dtype=dtype, device=self.device)
                self._context.set_tensor_address(spec.name, int(y.data_ptr()))
                outputs[spec.name] = y
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise EngineUnavailableError("TensorRT execute_async_v3 reported failure")
        self._stream.synchronize()
        return outputs


def _trt_to_torch_dtypes(trt: Any) -> dict[Any, Any]:
    import torch

    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT8: torch.int8,
        trt.DataType.BOOL: torch.bool,
        trt.DataType.UINT8: torch.uint8,
    }
    if hasattr(trt.DataType, "INT64"):
        table[trt.DataType.INT64] = torch.int64
    return table


def _dir_hash(directory: str, file_sha256: Any) -> str:
    """Hash of every file name and content in a calibration directory (sorted)."""
    import hashlib

    h = hashlib.sha256()
    root = Path(directory)
    if not root.exists():
        raise ConfigError(f"calibration_dir {directory} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for p in files:
        h.update(str(p.relative_to(root) if root.is_dir() else p.name).encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()

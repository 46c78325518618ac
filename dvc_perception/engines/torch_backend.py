# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""torch backend: runs the torch module itself (eager, optionally `torch.compile`), CPU or CUDA.

The reference path against which the other backends are checked, and the CUDA path that can be
measured on a GPU machine without TensorRT.

How the module is found (in this order; the engine's ``source`` attribute, its ``description``
and its load log line say which one runs, never silently):

1. ``module=`` given to `TorchEngine` (an ``nn.Module``) or ``factory=`` (a zero-argument
   callable returning one); `load_engine(..., options={"module": m})` passes it through.
   ``source`` is ``"module option"`` / ``"factory option"``.
2. The "torch twin", when it exists: the ONNX metadata ``architecture`` is
   ``{"factory": "package.module:function", "kwargs": {...}}`` and the weights are a state dict
   saved with ``torch.save(model.state_dict(), ...)`` next to the ONNX file, same stem, suffix
   ``.pt`` (``models/pose.onnx`` -> ``models/pose.pt``). The factory name is looked up in
   `model_factories` (the package's own networks); no module named in metadata is imported.
   This is the training code's own network, exact w.r.t. it. ``source`` is
   ``"factory + state dict"``; a twin that is present but refused, corrupt or does not fit is an
   error (no fallback).
3. Without a ``.pt`` twin: the ONNX graph itself, run in torch by the interpreter in
   `dvc_perception.engines.onnx_torch` (the weights come from the ONNX file; an op it does not
   implement is a `ModelSpecError` at load). ``source`` is ``"ONNX graph"``.

Input/output names, shapes and dtypes come from the ONNX graph so all backends agree; the
module's outputs (a tensor or a tuple) map to the ONNX outputs in order.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.engines.base import EngineSpecs, TensorSpec, check_inputs, check_options
from dvc_perception.errors import ConfigError, EngineUnavailableError, ModelSpecError
from dvc_perception.safe_load import load_torch_file

_LOG = logging.getLogger(__name__)

TORCH_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "compile": bool,  # wrap the module in torch.compile
    "num_threads": int,  # torch.set_num_threads for CPU runs (process-wide; documented)
    "module": object,  # an nn.Module instance to run
    "factory": object,  # a zero-argument callable returning the nn.Module
    "half": bool,  # run in float16 on CUDA (inputs are cast; outputs returned as float32)
}

_ONNX_TO_NUMPY = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 9: "bool"}


def onnx_io_specs(onnx_path: str | os.PathLike[str]) -> tuple[tuple[TensorSpec, ...], ...]:
    """(inputs, outputs) TensorSpecs read from an ONNX graph (initializers excluded)."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}

    def spec(value_info: Any) -> TensorSpec:
        t = value_info.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        return TensorSpec(value_info.name, dims, _ONNX_TO_NUMPY.get(t.elem_type, str(t.elem_type)))

    ins = tuple(spec(v) for v in proto.graph.input if v.name not in inits)
    outs = tuple(spec(v) for v in proto.graph.output)
    return ins, outs


def model_factories() -> dict[str, Callable[..., Any]]:
    """``architecture.factory`` names of exported models -> the callables that rebuild them."""
    from dvc_perception.engines.reference_nets import REFERENCE_FACTORY, build_reference_net
    from dvc_perception.models.factory import EXPORT_FACTORIES

    return {**EXPORT_FACTORIES, REFERENCE_FACTORY: build_reference_net}


def module_from_metadata(onnx_path: str | os.PathLike[str]) -> Any:
    """Rebuild the torch module of an exported model (see the module docstring convention).

    The ``.pt`` file is read by `load_torch_file` (``weights_only=True``): a pickle holding
    anything but tensors and plain values is refused without running it.

    Raises:
        ModelSpecError: metadata has no usable ``architecture``, or the ``.pt`` file is
            missing, corrupt, refused or does not fit the network.
    """
    import torch

    from dvc_perception.engines.export import read_model_metadata

    meta = read_model_metadata(onnx_path)
    arch = meta.architecture
    factory_name = arch.get("factory") if isinstance(arch, Mapping) else None
    if not isinstance(factory_name, str) or ":" not in factory_name:
        raise ModelSpecError(
            f"{onnx_path}: metadata 'architecture' must be {{'factory': 'module:function', "
            f"'kwargs': {{...}}}} for the torch backend, got {arch!r}"
        )
    factories = model_factories()
    if factory_name not in factories:
        raise ModelSpecError(
            f"{onnx_path}: unknown factory {factory_name!r}; the torch backend builds "
            f"{sorted(factories)}"
        )
    weights = Path(onnx_path).with_suffix(".pt")
    if not weights.is_file():
        raise ModelSpecError(f"{onnx_path}: torch backend needs the state dict {weights}")
    factory = factories[factory_name]
    module = factory(**dict(arch.get("kwargs", {})))
    state = load_torch_file(weights, what="torch-backend state dict")
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelSpecError(f"{weights}: expected a state dict (names -> tensors), got "
                             f"{type(state).__name__}")
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ModelSpecError(f"{weights}: the state dict does not fit {factory_name}: "
                             f"{' '.join(str(err).split())[:300]}") from err
    return module


class TorchEngine(EngineSpecs):
    """Runs a torch ``nn.Module`` behind the `Engine` interface.

    Args:
        onnx_path: the exported ONNX file: gives the I/O specs (and the module, see module doc).
        precision: "fp32", or "fp16" (CUDA only, same as option ``half``).
        device: None (CUDA when available, else CPU), "cpu" or "cuda[:N]".
        options: see `TORCH_OPTIONS`.

    Raises:
        EngineUnavailableError: CUDA asked but torch has no CUDA device here.
    """

    backend = "torch"
    #: which module runs (see the module docstring): "module option", "factory option",
    #: "factory + state dict" or "ONNX graph"
    source: str

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        *,
        precision: str = "fp32",
        device: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        import torch

        opts = check_options("torch", options, TORCH_OPTIONS)
        if precision not in ("fp32", "fp16"):
            raise ConfigError(f"torch backend runs fp32 or fp16, got precision {precision!r}")
        half = precision == "fp16" or bool(opts.get("half", False))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailableError(
                f"device {device!r} asked but torch {torch.__version__} sees no CUDA device"
            )
        if half and not device.startswith("cuda"):
            raise ConfigError("torch backend: fp16 needs a CUDA device; use fp32 on CPU")
        self.device = torch.device(device)
        self.precision = "fp16" if half else "fp32"
        if "num_threads" in opts:
            torch.set_num_threads(int(opts["num_threads"]))
        owned = False  # a module built here may be moved and cast in place
        if "module" in opts:
            module, self.source = opts["module"], "module option"
        elif "factory" in opts:
            factory: Callable[[], Any] = opts["factory"]
            module, self.source = factory(), "factory option"
        elif Path(onnx_path).with_suffix(".pt").is_file():
            module, self.source = module_from_metadata(onnx_path), "factory + state dict"
            owned = True
        else:
            from dvc_perception.engines.onnx_torch import module_from_onnx

            module, self.source = module_from_onnx(onnx_path), "ONNX graph"
            owned = True
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(f"torch backend: module must be an nn.Module, got {type(module)}")
        first = next(iter(module.parameters()), None)
        if not owned and (half or (first is not None and first.device != self.device)):
            module = copy.deepcopy(module)  # never move or cast the caller's module in place
        module = module.eval().to(self.device)
        if half:
            module = module.half()
        self._module = torch.compile(module) if opts.get("compile", False) else module
        self._half = half
        self._inputs, self._outputs = onnx_io_specs(onnx_path)
        _LOG.info("torch: %s from the %s on %s (%s)", type(module).__name__, self.source,
                  self.device, self.precision)

    @property
    def description(self) -> str:
        """``"torch (ONNX graph)"``, ``"torch (factory + state dict)"``, ... (see ``source``)."""
        return f"{self.backend} ({self.source})"

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run one inference; outputs are float32 numpy arrays on the host."""
        out = self.run_torch(feeds)
        return {k: v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
                for k, v in out.items()}

    def run_torch(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Like `run` but returns torch tensors on the engine's device (no host copy)."""
        import torch

        check_inputs(self._inputs, feeds)
        args = []
        for spec in self._inputs:
            x = torch.as_tensor(feeds[spec.name], device=self.device)
            args.append(x.half() if self._half and x.is_floating_point() else x)
        with torch.inference_mode():
            result = self._module(*args)
        values = result if isinstance(result, (tuple, list)) else (result,)
        if len(values) != len(self._outputs):
            raise ModelSpecError(
                f"torch module returned {len(values)} outputs, ONNX graph has "
                f"{[o.name for o in self._outputs]}"
            )
        return {o.name: v for o, v in zip(self._outputs, values)}

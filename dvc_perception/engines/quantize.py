# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Static INT8 quantisation to a QDQ ONNX model with ONNX Runtime's quantisation tools.

The output is what both consumers want:

- ONNX Runtime runs it on CPU with int8 kernels (QDQ node units are fused into QLinear ops);
- TensorRT's explicit-quantisation path parses it (Q/DQ with INT8 types and zero points of 0):
  weights are quantised per output channel and symmetric, activations symmetric (int8, zero
  point 0), as TensorRT requires. `dvc_perception.engines.trt_support` checks this.

Calibration uses real frames (a directory of images, synthetic shards, or frames decoded from a
rosbag by the CLI) preprocessed exactly like deployment; see `dvc_perception.engines.calibrate`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.errors import ConfigError, ModelSpecError
from dvc_perception.files import atomic_path

_LOG = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_OP_TYPES: tuple[str, ...] = (
    "Conv", "ConvTranspose", "Gemm", "Relu", "Concat", "Resize", "MaxPool", "AveragePool",
)
"""Operators that get Q/DQ: the convolutional backbone, so int8 tensors flow from layer to layer
without a float round trip at every ReLU, concat or upsampling. The heads stay float on
purpose: quantising the soft-argmax (Softmax, Mul, ReduceSum, MatMul) moves keypoints by tens
of pixels, and an 8-bit Add/Softplus at the depth output would step depth by range/256."""
TARGETS: tuple[str, ...] = ("tensorrt", "onnxruntime-cpu")
"""``tensorrt``: int8 activations with zero point 0 (symmetric), what TensorRT's parser
accepts; runs in ONNX Runtime too. ``onnxruntime-cpu``: uint8 asymmetric activations (U8S8),
ONNX Runtime's fast x86 path; TensorRT rejects these models (uint8 zero points)."""


@dataclass(frozen=True)
class QuantizeReport:
    """What `quantize_onnx` did.

    Attributes:
        output: path of the QDQ model.
        num_frames: calibration frames used.
        num_quantize_nodes: QuantizeLinear nodes in the output.
        num_dequantize_nodes: DequantizeLinear nodes in the output.
        method: calibration method.
        target: "tensorrt" or "onnxruntime-cpu".
    """

    output: Path
    num_frames: int
    num_quantize_nodes: int
    num_dequantize_nodes: int
    method: str
    target: str


def _frames_reader(input_name: str, frames: Sequence[np.ndarray]) -> Any:
    """An onnxruntime ``CalibrationDataReader`` over preprocessed frames."""
    from onnxruntime.quantization import CalibrationDataReader

    class _FramesReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = [{input_name: f} for f in frames]
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._iter, None)  # None ends calibration (reader protocol)

        def rewind(self) -> None:
            self._iter = iter(self._feeds)

    return _FramesReader()


def quantize_onnx(
    model_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    *,
    method: str = "minmax",
    per_channel: bool = True,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    target: str = "tensorrt",
) -> QuantizeReport:
    """Quantise a float ONNX model to a static INT8 QDQ model.

    Args:
        model_path: float ONNX model with one input shaped (1, 3, H, W).
        output_path: where the QDQ model is written (atomically); metadata is carried over.
        frames: preprocessed calibration frames, each (1, 3, H, W) float32 (see
            `calibrate.load_calibration_frames`).
        method: "minmax", "entropy" or "percentile" calibration of activation ranges.
        per_channel: per-output-channel weight scales.
        op_types: operator types to quantise.
        target: "tensorrt" (symmetric int8 activations) or "onnxruntime-cpu" (uint8), see
            `TARGETS`.

    Raises:
        ConfigError: unknown method, no frames, or frames of the wrong shape.
        ModelSpecError: the input model is not a float model with one input.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if target not in TARGETS:
        raise ConfigError(f"quantisation target must be one of {TARGETS}, got {target!r}")
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method}")
    model_path, output_path = Path(model_path), Path(output_path)
    proto = onnx.load(str(model_path))
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        raise ModelSpecError(f"{model_path} is already quantised (it has Q/DQ nodes)")
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelSpecError(f"quantisation needs a model with one input, got {len(inputs)}")
    input_name = inputs[0].name
    dims = tuple(d.dim_value for d in inputs[0].type.tensor_type.shape.dim)
    frame_list = [np.asarray(f, dtype=np.float32) for f in frames]
    if not frame_list:
        raise ConfigError("quantisation needs calibration frames; none were given")
    bad = [f.shape for f in frame_list if len(f.shape) != len(dims) or any(
        d and d != s for d, s in zip(dims, f.shape))]
    if bad:
        raise ConfigError(f"calibration frames {bad[0]} do not fit the model input {dims}")
    calib = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    metadata = [(p.key, p.value) for p in proto.metadata_props]
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_path.parent) as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(model_path), str(pre), skip_symbolic_shape=True)
        qdq = Path(tmp) / "qdq.onnx"
        quantize_static(
            str(pre),
            str(qdq),
            _frames_reader(input_name, frame_list),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            activation_type=QuantType.QInt8 if target == "tensorrt" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calib,
            extra_options={
                # zero point 0: TensorRT's requirement
                "ActivationSymmetric": target == "tensorrt",
                "WeightSymmetric": True,
                # Keep biases float: ORT would otherwise emit an int32 DequantizeLinear per
                # bias, which TensorRT's parser rejects (DequantizeLinear takes INT8 only).
                "QuantizeBias": False,
            },
        )
        out = onnx.load(str(qdq))
        del out.metadata_props[:]
        for key, value in metadata:
            out.metadata_props.add(key=key, value=value)
        out.metadata_props.add(key="dvc_quantization", value=(
            f"static int8 QDQ for {target}, {method} calibration over {len(frame_list)} "
            f"frames, per_channel={per_channel}, op_types={list(op_types)}"
        ))
        with atomic_path(output_path) as tmp_out:
            onnx.save(out, str(tmp_out))
    n_q = sum(n.op_type == "QuantizeLinear" for n in out.graph.node)
    n_dq = sum(n.op_type == "DequantizeLinear" for n in out.graph.node)
    if n_q == 0 or n_dq == 0:
        raise ModelSpecError(f"quantisation produced no Q/DQ nodes for {model_path}")
    _LOG.info("quantised %s -> %s (%d Q, %d DQ)", model_path, output_path, n_q, n_dq)
    return QuantizeReport(output_path, len(frame_list), n_q, n_dq, method, target)


def model_input_shape(model_path: str | os.PathLike[str]) -> tuple[int, ...]:
    """Static shape of the single input of an ONNX model.

    Raises:
        ModelSpecError: not exactly one input, or a dynamic dimension.
    """
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelSpecError(f"{model_path}: expected one input, got {len(inputs)}")
    dims: list[Any] = [
        d.dim_value if d.HasField("dim_value") else None
        for d in inputs[0].type.tensor_type.shape.dim
    ]
    if any(d is None for d in dims):
        raise ModelSpecError(f"{model_path}: input has dynamic dims {dims}; export it static")
    return tuple(int(d) for d in dims)

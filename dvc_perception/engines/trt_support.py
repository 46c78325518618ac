# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Check, without TensorRT, that an ONNX model is within what TensorRT's ONNX parser supports.

The supported-operator tables are transcriptions of onnx-tensorrt's ``docs/operators.md``
shipped in ``engines/data/`` with their source (repository, path, commit or revision header):

- ``8.5``: the table for TensorRT 8.5 (opset <= 17), used as the stand-in for TensorRT 8.6 /
  JetPack 6, which has the same opset ceiling (the 8.6 revision of the file was not available
  when the data was transcribed).
- ``10.15``: the table for TensorRT 10.15 (opsets 9..24).

Beyond "is the operator in the table", the per-operator restrictions that can bite our networks
are checked on the graph: pooling rank and dilations, MaxPool's ``Indices`` output, the Resize
modes, zero points of Quantize/DequantizeLinear (must be 0, and INT8 rather than UINT8),
initializer-only ``axes`` / ``K`` / ``axis`` inputs, Dropout in training mode.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvc_perception.errors import ConfigError, ModelSpecError

DATA_DIR = Path(__file__).resolve().parent / "data"
TABLE_FILES: dict[str, str] = {
    "8.5": "tensorrt_8.5_onnx_operators.json",
    "10.15": "tensorrt_10.15_onnx_operators.json",
}
TARGETS: dict[str, str] = {"8.6": "8.5", "8.5": "8.5", "10": "10.15", "10.15": "10.15"}
"""Requested TensorRT version -> table used (8.6 is checked against the 8.5 table)."""

_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                 "align_corners"}
_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_TYPE_NAMES = {"int8": "INT8", "uint8": "UINT8", "int32": "INT32", "int64": "INT64",
               "float32": "FP32", "float16": "FP16", "int4": "INT4", "uint4": "UINT4"}


@dataclass(frozen=True)
class OperatorTable:
    """One transcribed support matrix."""

    tensorrt_version: str
    opset_min: int
    opset_max: int
    source: dict[str, str]
    operators: dict[str, dict[str, Any]]

    def is_supported(self, op_type: str) -> bool:
        """Whether the table lists `op_type` as supported ("Y")."""
        entry = self.operators.get(op_type)
        return bool(entry and entry["supported"])


def load_operator_table(version: str) -> OperatorTable:
    """The transcribed table for a TensorRT version ("8.6", "8.5", "10", "10.15").

    Raises:
        ConfigError: no table for that version (the known ones are listed).
    """
    if version not in TARGETS:
        raise ConfigError(f"no TensorRT operator table for {version!r}; known: {sorted(TARGETS)}")
    doc = json.loads((DATA_DIR / TABLE_FILES[TARGETS[version]]).read_text())
    return OperatorTable(
        tensorrt_version=doc["tensorrt_version"],
        opset_min=int(doc["opset_min"]),
        opset_max=int(doc["opset_max"]),
        source=dict(doc["source"]),
        operators=dict(doc["operators"]),
    )


@dataclass(frozen=True)
class SupportProblem:
    """One reason TensorRT's ONNX parser would reject (part of) the model."""

    op_type: str
    node: str
    reason: str


@dataclass(frozen=True)
class SupportReport:
    """Result of `check_tensorrt_support`."""

    tensorrt_version: str
    opset: int
    ops_used: tuple[str, ...]
    problems: tuple[SupportProblem, ...]

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def raise_if_unsupported(self) -> None:
        """Raise ModelSpecError listing every problem (no-op when `ok`)."""
        if self.problems:
            lines = "; ".join(f"{p.op_type} '{p.node}': {p.reason}" for p in self.problems)
            raise ModelSpecError(
                f"not parseable by TensorRT {self.tensorrt_version}: {lines}"
            )


def check_tensorrt_support(model: str | os.PathLike[str] | Any, version: str) -> SupportReport:
    """Check an ONNX model (path or ModelProto) against TensorRT `version`'s parser support.

    Subgraphs (If/Loop/Scan bodies) are checked too.
    """
    import onnx

    table = load_operator_table(version)
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(
        str(model), load_external_data=False
    )
    opset = next(
        (int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0
    )
    problems: list[SupportProblem] = []
    if not table.opset_min <= opset <= table.opset_max:
        problems.append(SupportProblem(
            "(model)", proto.graph.name,
            f"opset {opset} outside TensorRT {table.tensorrt_version}'s range "
            f"{table.opset_min}..{table.opset_max}",
        ))
    ops: set[str] = set()
    _check_graph(proto.graph, table, problems, ops, set())
    return SupportReport(table.tensorrt_version, opset, tuple(sorted(ops)), tuple(problems))


def _check_graph(graph: Any, table: OperatorTable, problems: list[SupportProblem],
                 ops: set[str], outer_consts: set[str]) -> None:
    from onnx import numpy_helper

    consts: dict[str, Any] = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = attr.t
    const_names = set(consts) | outer_consts

    def const_value(name: str) -> Any:
        return numpy_helper.to_array(consts[name]) if name in consts else None

    for node in graph.node:
        label = node.name or (node.output[0] if node.output else "")
        default_domain = node.domain in ("", "ai.onnx")
        ops.add(node.op_type if default_domain else f"{node.domain}:{node.op_type}")
        if node.domain not in ("", "ai.onnx"):
            problems.append(SupportProblem(
                node.op_type, label, f"custom domain {node.domain!r} needs a TensorRT plugin"
            ))
            continue
        if not table.is_supported(node.op_type):
            listed = node.op_type in table.operators
            problems.append(SupportProblem(
                node.op_type, label,
                "marked unsupported (N)" if listed else "not in the support matrix",
            ))
            continue
        for reason in _restriction_problems(node, table, const_names, const_value):
            problems.append(SupportProblem(node.op_type, label, reason))
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                _check_graph(attr.g, table, problems, ops, const_names)


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _restriction_problems(node: Any, table: OperatorTable, const_names: set[str],
                          const_value: Any) -> list[str]:
    """The documented per-operator restrictions that this node violates."""
    op, v10 = node.op_type, table.tensorrt_version.startswith("10")
    out: list[str] = []

    def needs_const(index: int, what: str) -> None:
        if len(node.input) > index and node.input[index] and node.input[index] not in const_names:
            out.append(f"{what} must be an initializer (build-time constant)")

    if op in ("AveragePool", "MaxPool", "LpPool"):
        kernel = _attr(node, "kernel_shape", [])
        if op != "LpPool" and len(kernel) not in (2, 3):
            out.append(f"only 2D or 3D pooling, kernel_shape {list(kernel)}")
        dil = _attr(node, "dilations", [])
        if v10 and dil and any(d != 1 for d in dil):
            out.append(f"dilations must be empty or all ones, got {list(dil)}")
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            out.append("the Indices output is unsupported")
    elif op == "Resize":
        coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
        mode = _attr(node, "mode", "nearest")
        nearest = _attr(node, "nearest_mode", "round_prefer_floor")
        if coord not in _RESIZE_COORD:
            out.append(f"coordinate_transformation_mode {coord!r} unsupported")
        if mode not in _RESIZE_MODES:
            out.append(f"mode {mode!r} unsupported (nearest, linear only)")
        if mode == "nearest" and nearest not in _RESIZE_NEAREST:
            out.append(f"nearest_mode {nearest!r} unsupported")
        if _attr(node, "antialias", 0):
            out.append("antialias is unsupported")
        if _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            out.append("keep_aspect_ratio_policy must be 'stretch'")
    elif op in ("QuantizeLinear", "DequantizeLinear"):
        # The quantised side must be a type TensorRT lists for DequantizeLinear (INT8 in 8.x;
        # INT8/FP8/FP4/INT4 in 10.x): an int32 bias DQ or a uint8 zero point is rejected.
        quantized_types = set(table.operators["DequantizeLinear"]["types"])
        what = "y_zero_point" if op == "QuantizeLinear" else "x_zero_point"
        if op == "DequantizeLinear" and const_value(node.input[0]) is not None:
            x_type = _TYPE_NAMES.get(const_value(node.input[0]).dtype.name, "?")
            if x_type not in quantized_types:
                out.append(
                    f"quantised input is {x_type}; TensorRT takes {sorted(quantized_types)}"
                )
        if len(node.input) > 2 and node.input[2]:
            zp = const_value(node.input[2])
            if zp is None:
                out.append(f"{what} must be a constant")
            else:
                if zp.any():
                    out.append(f"{what} must be zero (symmetric quantisation)")
                zp_type = _TYPE_NAMES.get(zp.dtype.name, zp.dtype.name)
                if zp_type not in quantized_types:
                    out.append(
                        f"{what} is {zp_type}; TensorRT quantises to {sorted(quantized_types)}"
                    )
    elif op in ("Slice",) and not v10:
        needs_const(3, "`axes`")
    elif op in ("Squeeze", "Unsqueeze"):
        needs_const(1, "`axes`")
    elif op.startswith("Reduce") and v10:
        needs_const(1, "`axes`")
    elif op == "CumSum":
        needs_const(1, "`axis`")
    elif op == "TopK":
        needs_const(1, "`K`")
        if v10 and _attr(node, "sorted", 1) != 1:
            out.append("`sorted` must be 1")
    elif op == "Dropout" and v10 and len(node.input) > 2 and node.input[2]:
        value = const_value(node.input[2])
        if value is None or bool(value):
            out.append("`is_training` must be an initializer that evaluates to False")
    return out

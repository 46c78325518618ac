# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""A small ONNX-graph interpreter: an ONNX ``ModelProto`` as a torch ``nn.Module``.

The torch backend runs a shipped ``.onnx`` file with it when the file has no ``.pt`` twin
(`torch_backend`), so the weights have one source, the ONNX file. It is not a general ONNX
runtime: it covers the default-domain ops (opset 13 and newer) that the package's exported
networks use, listed in `SUPPORTED_OPS`, and only the attribute values their exports contain.

- Every node is checked when the module is built: an op outside `SUPPORTED_OPS`, another op
  domain, an attribute the op's implementation does not read, or an attribute value it does not
  implement (a Resize mode, a Pad mode, ...) raises `ModelSpecError` naming the op and the node,
  at load time, never in the middle of a run.
- Float initializers and float ``Constant`` nodes become buffers, so ``.to(device)`` and
  ``.half()`` act on them as on any module. Integer and bool constants stay on the host as plain
  tensors (they are shapes, axes and indices; ``.half()`` never touches them) and follow the data
  to its device where an op mixes them with it.
- Inputs that are shape-like parameters (Reshape's shape, Slice's starts/ends/axes/steps,
  Unsqueeze/Reduce* axes, Resize scales/sizes, Pad pads, ConstantOfShape's shape) are read as
  python ints/floats: from the constant itself when it is one (resolved once, at build time),
  else from the tensor at run time (``Shape`` yields a host tensor, so this costs no device
  sync for the static-shape graphs of the shipped models).
- ``Cast`` to float32 and ``ConstantOfShape`` with a float32 value produce the module's float
  dtype (float16 after ``.half()``), so an fp16 module stays fp16 throughout.

Nodes run in topological order (the order of the graph, sorted when it is not).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dvc_perception.errors import ModelSpecError

#: The ONNX ops the interpreter implements (default domain, opset >= 13).
SUPPORTED_OPS: tuple[str, ...] = (
    "Abs", "Add", "And", "ArgMax", "AveragePool", "Cast", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "Div", "Exp", "Flatten", "Gather", "Gemm", "GlobalAveragePool",
    "Identity", "LessOrEqual", "MatMul", "MaxPool", "Mul", "Pad", "ReduceMax", "ReduceSum",
    "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Slice", "Softmax", "Sub", "Tanh",
    "Transpose", "Unsqueeze", "Where",
)
MIN_OPSET = 13

# op -> input positions read as python values (see the module docstring)
_PARAM_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Slice": (1, 2, 3, 4), "Unsqueeze": (1,), "ReduceSum": (1,),
    "ReduceMax": (1,), "Resize": (1, 2, 3), "Pad": (1, 2, 3), "ConstantOfShape": (0,),
}

_Fn = Callable[[list[Any], "_Runtime"], Any]


class _Runtime:
    """What an op needs to know about the module at run time."""

    __slots__ = ("device", "fdtype")

    def __init__(self, device: Any, fdtype: Any) -> None:
        self.device, self.fdtype = device, fdtype


class _Node:
    """A NodeProto with attribute access that records which attributes were read."""

    def __init__(self, proto: Any, where: str) -> None:
        from onnx import helper

        self.proto = proto
        self.op = proto.op_type
        self.label = f"{where}: ONNX node {proto.name or '(unnamed)'!r} (op {self.op}, " \
                     f"outputs {list(proto.output)})"
        self._attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        self._read: set[str] = set()

    def get(self, name: str, default: Any = None) -> Any:
        self._read.add(name)
        value = self._attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def fail(self, what: str) -> ModelSpecError:
        return ModelSpecError(f"{self.label}: {what}")

    def require(self, name: str, allowed: Sequence[Any], default: Any) -> Any:
        value = self.get(name, default)
        if value not in allowed:
            raise self.fail(f"attribute {name}={value!r} is not implemented by the torch "
                            f"ONNX-graph interpreter (implemented: {list(allowed)})")
        return value

    def unread(self) -> list[str]:
        return sorted(set(self._attrs) - self._read)


def _torch_dtype(onnx_type: int) -> Any:
    from onnx import helper

    return torch.from_numpy(np.zeros(0, helper.tensor_dtype_to_np_dtype(onnx_type))).dtype


def _to_tensor(tensor_proto: Any) -> Any:
    from onnx import numpy_helper

    return torch.from_numpy(np.array(numpy_helper.to_array(tensor_proto), copy=True))


def _torch_pads(pads: Sequence[int]) -> list[int]:
    """ONNX ``[b0, .., bn-1, e0, .., en-1]`` -> torch.nn.functional.pad's last-dim-first pairs."""
    n = len(pads) // 2
    out: list[int] = []
    for axis in reversed(range(n)):
        out += [int(pads[axis]), int(pads[axis + n])]
    return out


# ---------------------------------------------------------------------------------------------
# op builders: each reads and checks the node's attributes (at load) and returns fn(args, rt)


def _unary(name: str) -> Callable[[_Node], _Fn]:
    def build(node: _Node) -> _Fn:
        fn = getattr(torch, name)
        return lambda a, rt: fn(a[0])
    return build


def _binary(name: str) -> Callable[[_Node], _Fn]:
    def build(node: _Node) -> _Fn:
        if name == "div":
            def div(a: list[Any], rt: _Runtime) -> Any:
                x, y = a
                if not x.is_floating_point() and not y.is_floating_point():
                    return torch.div(x, y, rounding_mode="trunc")  # ONNX integer Div truncates
                return x / y
            return div
        fn = getattr(torch, name)
        return lambda a, rt: fn(a[0], a[1])
    return build


def _identity(node: _Node) -> _Fn:
    return lambda a, rt: a[0]


def _clip(node: _Node) -> _Fn:
    def clip(a: list[Any], rt: _Runtime) -> Any:
        lo = a[1] if len(a) > 1 else None
        hi = a[2] if len(a) > 2 else None
        return a[0] if lo is None and hi is None else torch.clamp(a[0], min=lo, max=hi)
    return clip


def _cast(node: _Node) -> _Fn:
    from onnx import TensorProto

    to = node.get("to")
    node.get("saturate")
    target = _torch_dtype(to)
    follow = to == TensorProto.FLOAT  # float32 -> the module's float dtype (fp16 after .half())
    return lambda a, rt: a[0].to(rt.fdtype if follow else target)


def _conv(node: _Node) -> _Fn:
    node.require("auto_pad", ("NOTSET",), "NOTSET")
    node.get("kernel_shape")
    pads, strides = node.get("pads"), node.get("strides")
    dilations, group = node.get("dilations"), node.get("group", 1)

    def conv(a: list[Any], rt: _Runtime) -> Any:
        x, w = a[0], a[1]
        b = a[2] if len(a) > 2 else None
        nd = w.dim() - 2
        p = list(pads) if pads else [0] * (2 * nd)
        if p[:nd] == p[nd:]:
            padding: Any = p[:nd]
        else:
            x, padding = F.pad(x, _torch_pads(p)), 0
        fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        return fn(x, w, b, list(strides) if strides else 1, padding,
                  list(dilations) if dilations else 1, group)
    return conv


def _pool(node: _Node, kind: str) -> _Fn:
    node.require("auto_pad", ("NOTSET",), "NOTSET")
    kernel = list(node.get("kernel_shape"))
    nd = len(kernel)
    strides = list(node.get("strides") or [1] * nd)
    pads = list(node.get("pads") or [0] * (2 * nd))
    if pads[:nd] != pads[nd:]:
        raise node.fail(f"asymmetric pads {pads} are not implemented")
    if kind == "max":
        if len([o for o in node.proto.output if o]) > 1:
            raise node.fail("the Indices output of MaxPool is not implemented")
        node.require("storage_order", (0,), 0)
        dil = list(node.get("dilations") or [1] * nd)
        ceil = bool(node.get("ceil_mode", 0))
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
        return lambda a, rt: fn(a[0], kernel, strides, pads[:nd], dil, ceil_mode=ceil)
    node.require("ceil_mode", (0,), 0)
    node.require("dilations", (None, [1] * nd), None)
    include = bool(node.get("count_include_pad", 0))
    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
    return lambda a, rt: fn(a[0], kernel, strides, pads[:nd], count_include_pad=include)


def _global_average_pool(node: _Node) -> _Fn:
    return lambda a, rt: a[0].mean(dim=tuple(range(2, a[0].dim())), keepdim=True)


def _resize(node: _Node) -> _Fn:
    mode = node.require("mode", ("nearest", "linear"), "nearest")
    if mode == "nearest":
        node.require("coordinate_transformation_mode", ("asymmetric",), "half_pixel")
        node.require("nearest_mode", ("floor",), "round_prefer_floor")
    else:
        node.require("coordinate_transformation_mode", ("half_pixel",), "half_pixel")
        node.get("nearest_mode")
    node.get("cubic_coeff_a")  # cubic mode only
    node.require("exclude_outside", (0,), 0)
    node.get("extrapolation_value")  # tf_crop_and_resize only
    node.require("antialias", (0,), 0)
    node.require("axes", (None,), None)
    node.require("keep_aspect_ratio_policy", ("stretch",), "stretch")

    def resize(a: list[Any], rt: _Runtime) -> Any:
        x = a[0]
        scales = a[2] if len(a) > 2 and a[2] else None
        sizes = a[3] if len(a) > 3 and a[3] else None
        nd = x.dim() - 2
        lead = (scales or [1.0, 1.0])[:2] if sizes is None else [
            sizes[i] / x.shape[i] for i in range(2)]
        if nd not in (1, 2, 3) or any(s != 1 for s in lead):
            raise node.fail(f"resizing {x.dim()}-D data on its first two axes is not implemented")
        interp = "nearest" if mode == "nearest" else ("linear", "bilinear", "trilinear")[nd - 1]
        extra = {} if mode == "nearest" else {"align_corners": False}
        if sizes is not None:
            return F.interpolate(x, size=[int(s) for s in sizes[2:]], mode=interp, **extra)
        # torch maps coordinates with the given scale as ONNX does (no recompute); output
        # lengths are floor(length * scale) in both
        return F.interpolate(x, scale_factor=[float(s) for s in scales[2:]], mode=interp,
                             recompute_scale_factor=False, **extra)
    return resize


def _concat(node: _Node) -> _Fn:
    axis = node.get("axis")
    return lambda a, rt: torch.cat([t for t in a if t is not None], dim=axis)


def _constant_of_shape(node: _Node) -> _Fn:
    value = node.get("value")
    fill = _to_tensor(value).reshape(-1) if value is not None else torch.zeros(1)
    follow = fill.dtype == torch.float32

    def constant_of_shape(a: list[Any], rt: _Runtime) -> Any:
        shape = [int(s) for s in a[0]]
        if follow:
            return torch.full(shape, float(fill[0]), dtype=rt.fdtype, device=rt.device)
        return torch.full(shape, fill[0].item(), dtype=fill.dtype)  # integers stay on the host
    return constant_of_shape


def _normalize_axes(axes: Sequence[int], rank: int) -> list[int]:
    return [int(ax) + rank if int(ax) < 0 else int(ax) for ax in axes]


def _unsqueeze(node: _Node) -> _Fn:
    attr_axes = node.get("axes")  # opset < 13 form

    def unsqueeze(a: list[Any], rt: _Runtime) -> Any:
        x = a[0]
        axes = a[1] if len(a) > 1 and a[1] is not None else attr_axes
        for ax in sorted(_normalize_axes(axes, x.dim() + len(axes))):
            x = x.unsqueeze(ax)
        return x
    return unsqueeze


def _reshape(node: _Node) -> _Fn:
    allowzero = bool(node.get("allowzero", 0))

    def reshape(a: list[Any], rt: _Runtime) -> Any:
        x = a[0]
        shape = [int(s) for s in a[1]]
        if not allowzero:
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return x.reshape(shape)
    return reshape


def _flatten(node: _Node) -> _Fn:
    axis = node.get("axis", 1)

    def flatten(a: list[Any], rt: _Runtime) -> Any:
        x = a[0]
        ax = axis + x.dim() if axis < 0 else axis
        return x.reshape(math.prod(x.shape[:ax]), math.prod(x.shape[ax:]))
    return flatten


def _transpose(node: _Node) -> _Fn:
    perm = node.get("perm")
    return lambda a, rt: a[0].permute(
        list(perm) if perm is not None else list(reversed(range(a[0].dim()))))


def _slice(node: _Node) -> _Fn:
    def slice_(a: list[Any], rt: _Runtime) -> Any:
        x = a[0]
        starts, ends = a[1], a[2]
        axes = a[3] if len(a) > 3 and a[3] is not None else list(range(len(starts)))
        steps = a[4] if len(a) > 4 and a[4] is not None else [1] * len(starts)
        for ax, start, end, step in zip(_normalize_axes(axes, x.dim()), starts, ends, steps):
            if step == 0:
                raise node.fail("Slice step 0")
            # ONNX clamps starts/ends exactly as python/numpy slicing does
            r = range(*slice(int(start), int(end), int(step)).indices(x.shape[ax]))
            if step > 0:
                x = x.narrow(ax, r.start, len(r)) if r.step == 1 else \
                    x[(slice(None),) * ax + (slice(r.start, r.stop, r.step),)]
            else:
                x = x.index_select(ax, torch.tensor(list(r), dtype=torch.int64, device=x.device))
        return x
    return slice_


def _gather(node: _Node) -> _Fn:
    axis = node.get("axis", 0)

    def gather(a: list[Any], rt: _Runtime) -> Any:
        x, idx = a
        ax = axis + x.dim() if axis < 0 else axis
        flat = idx.reshape(-1).long()
        flat = torch.where(flat < 0, flat + x.shape[ax], flat)
        out = x.index_select(ax, flat)
        return out.reshape(*x.shape[:ax], *idx.shape, *x.shape[ax + 1:])
    return gather


def _shape(node: _Node) -> _Fn:
    start, end = node.get("start", 0), node.get("end")
    return lambda a, rt: torch.tensor(list(a[0].shape)[start:end], dtype=torch.int64)


def _argmax(node: _Node) -> _Fn:
    axis, keep = node.get("axis", 0), bool(node.get("keepdims", 1))
    last = bool(node.get("select_last_index", 0))

    def argmax(a: list[Any], rt: _Runtime) -> Any:
        x = a[0]
        if not last:
            return torch.argmax(x, dim=axis, keepdim=keep)  # first maximal index, as ONNX
        n = x.shape[axis]
        return n - 1 - torch.argmax(x.flip(axis), dim=axis, keepdim=keep)
    return argmax


def _where(node: _Node) -> _Fn:
    return lambda a, rt: torch.where(a[0], a[1], a[2])


def _softmax(node: _Node) -> _Fn:
    axis = node.get("axis", -1)
    return lambda a, rt: torch.softmax(a[0], dim=axis)


def _reduce(node: _Node, kind: str) -> _Fn:
    keep = bool(node.get("keepdims", 1))
    noop = bool(node.get("noop_with_empty_axes", 0))
    attr_axes = node.get("axes")  # ReduceMax before opset 18
    fn = torch.sum if kind == "sum" else torch.amax

    def reduce(a: list[Any], rt: _Runtime) -> Any:
        x = a[0]
        axes = a[1] if len(a) > 1 and a[1] is not None else attr_axes
        if not axes:
            if noop:
                return x
            axes = list(range(x.dim()))
        return fn(x, dim=_normalize_axes(axes, x.dim()), keepdim=keep)
    return reduce


def _pad(node: _Node) -> _Fn:
    mode = node.require("mode", ("constant", "edge"), "constant")

    def pad(a: list[Any], rt: _Runtime) -> Any:
        x = a[0]
        pads = [int(p) for p in a[1]]
        value = a[2] if len(a) > 2 and a[2] is not None else [0]
        axes = a[3] if len(a) > 3 and a[3] is not None else list(range(x.dim()))
        axes = _normalize_axes(axes, x.dim())
        full = [0] * (2 * x.dim())
        for i, ax in enumerate(axes):
            full[ax], full[ax + x.dim()] = pads[i], pads[i + len(axes)]
        if mode == "constant":
            return F.pad(x, _torch_pads(full), value=float(list(value)[0]))
        for ax in range(x.dim()):  # edge: repeat the border (negative pads crop)
            b, e = full[ax], full[ax + x.dim()]
            if b or e:
                n = x.shape[ax]
                idx = torch.arange(-b, n + e, device=x.device).clamp_(0, n - 1)
                x = x.index_select(ax, idx)
        return x
    return pad


def _matmul(node: _Node) -> _Fn:
    return lambda a, rt: torch.matmul(a[0], a[1])


def _gemm(node: _Node) -> _Fn:
    alpha, beta = float(node.get("alpha", 1.0)), float(node.get("beta", 1.0))
    ta, tb = bool(node.get("transA", 0)), bool(node.get("transB", 0))

    def gemm(a: list[Any], rt: _Runtime) -> Any:
        x = a[0].t() if ta else a[0]
        w = a[1].t() if tb else a[1]
        y = x @ w
        if alpha != 1.0:
            y = y * alpha
        c = a[2] if len(a) > 2 else None
        if c is not None:
            y = y + (c if beta == 1.0 else c * beta)
        return y
    return gemm


_BUILDERS: dict[str, Callable[[_Node], _Fn]] = {
    "Abs": _unary("abs"), "Exp": _unary("exp"), "Relu": _unary("relu"),
    "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"),
    "Add": _binary("add"), "Sub": _binary("sub"), "Mul": _binary("mul"), "Div": _binary("div"),
    "LessOrEqual": _binary("le"), "And": _binary("logical_and"),
    "ArgMax": _argmax, "AveragePool": lambda n: _pool(n, "avg"), "Cast": _cast, "Clip": _clip,
    "Concat": _concat, "ConstantOfShape": _constant_of_shape, "Conv": _conv,
    "Flatten": _flatten, "Gather": _gather, "Gemm": _gemm,
    "GlobalAveragePool": _global_average_pool, "Identity": _identity, "MatMul": _matmul,
    "MaxPool": lambda n: _pool(n, "max"), "Pad": _pad, "ReduceMax": lambda n: _reduce(n, "max"),
    "ReduceSum": lambda n: _reduce(n, "sum"), "Reshape": _reshape, "Resize": _resize,
    "Shape": _shape, "Slice": _slice, "Softmax": _softmax, "Transpose": _transpose,
    "Unsqueeze": _unsqueeze, "Where": _where,
}
assert set(_BUILDERS) | {"Constant"} == set(SUPPORTED_OPS)


def _constant_value(node: _Node) -> Any:
    """The tensor of a ``Constant`` node."""
    present = [a.name for a in node.proto.attribute]
    kinds = {"value": None, "value_float": torch.float32, "value_floats": torch.float32,
             "value_int": torch.int64, "value_ints": torch.int64}
    if len(present) != 1 or present[0] not in kinds:
        raise node.fail(f"Constant with attribute(s) {present} is not implemented (only one of "
                        f"{sorted(kinds)})")
    value = node.get(present[0])
    if present[0] == "value":
        return _to_tensor(value)
    return torch.tensor(value, dtype=kinds[present[0]])


def _toposort(nodes: Sequence[Any], available: set[str], where: str) -> list[Any]:
    """Nodes in an order where every input is produced before use (graph order when valid)."""
    done = set(available) | {""}
    pending, order = list(nodes), []
    while pending:
        rest = []
        for node in pending:
            if all(i in done for i in node.input):
                order.append(node)
                done.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in done})
            raise ModelSpecError(f"{where}: ONNX graph inputs {missing[:5]} are never produced "
                                 f"(or the graph has a cycle)")
        pending = rest
    return order


class OnnxGraphModule(torch.nn.Module):
    """An ONNX graph as an ``nn.Module``: ``forward(*graph_inputs) -> tuple(graph_outputs)``.

    Args:
        model: an ``onnx.ModelProto``.
        where: what the model is, for error messages (e.g. its path).

    Raises:
        ModelSpecError: an op, op domain, attribute or attribute value the interpreter does not
            implement (naming the op and the node), an opset older than 13, or a broken graph.
    """

    def __init__(self, model: Any, *, where: str = "ONNX model") -> None:
        super().__init__()
        graph = model.graph
        versions = {o.domain: o.version for o in model.opset_import}
        opset = versions.get("", versions.get("ai.onnx"))
        if opset is None or opset < MIN_OPSET:
            raise ModelSpecError(f"{where}: the torch ONNX-graph interpreter needs default-domain "
                                 f"opset >= {MIN_OPSET}, the model has {opset}")
        self.register_buffer("_dtype_probe", torch.zeros(()), persistent=False)
        self._buffer_of: dict[str, str] = {}  # float constant name -> buffer attribute
        self._host: dict[str, Any] = {}  # integer / bool constants, kept on the host
        consts: dict[str, Any] = {}  # every constant, at build time

        def add_constant(name: str, tensor: Any) -> None:
            consts[name] = tensor
            if tensor.is_floating_point():
                attr = f"_c{len(self._buffer_of)}"
                self.register_buffer(attr, tensor)
                self._buffer_of[name] = attr
            else:
                self._host[name] = tensor

        inits = {i.name for i in graph.initializer}
        self.input_names = [v.name for v in graph.input if v.name not in inits]
        self.output_names = [v.name for v in graph.output]
        for init in graph.initializer:
            add_constant(init.name, _to_tensor(init))
        # (op, label, input names, output names, param positions, static params, fn)
        self._steps: list[tuple[str, str, list[str], list[str], tuple[int, ...], dict, _Fn]] = []
        for proto in _toposort(graph.node, set(self.input_names) | inits, where):
            node = _Node(proto, where)
            if proto.domain not in ("", "ai.onnx"):
                raise node.fail(f"op domain {proto.domain!r} is not implemented by the torch "
                                f"ONNX-graph interpreter")
            if node.op == "Constant":
                fn: _Fn | None = None
                add_constant(proto.output[0], _constant_value(node))
            elif node.op in _BUILDERS:
                fn = _BUILDERS[node.op](node)
            else:
                raise node.fail(f"op {node.op!r} is not implemented by the torch ONNX-graph "
                                f"interpreter (it implements {', '.join(SUPPORTED_OPS)})")
            if node.unread():
                raise node.fail(f"attribute(s) {node.unread()} of {node.op} are not implemented "
                                f"by the torch ONNX-graph interpreter")
            if fn is None:
                continue
            params = _PARAM_INPUTS.get(node.op, ())
            statics = {i: consts[n].tolist() for i, n in enumerate(proto.input)
                       if i in params and n in consts}
            self._steps.append((node.op, node.label, list(proto.input), list(proto.output),
                                params, statics, fn))
        produced = set(self.input_names) | inits | {o for s in self._steps for o in s[3]} | set(
            self._host) | set(self._buffer_of)
        missing = [o for o in self.output_names if o not in produced]
        if missing:
            raise ModelSpecError(f"{where}: graph outputs {missing} are never produced")
        self.where = where

    def forward(self, *inputs: Any) -> tuple[Any, ...]:
        """Run the graph: the graph inputs in order -> the graph outputs in order."""
        if len(inputs) != len(self.input_names):
            raise ModelSpecError(f"{self.where}: expected inputs {self.input_names}, "
                                 f"got {len(inputs)} tensors")
        probe = self._dtype_probe
        rt = _Runtime(probe.device, probe.dtype)
        env: dict[str, Any] = dict(self._host)
        env.update({name: getattr(self, attr) for name, attr in self._buffer_of.items()})
        env.update(zip(self.input_names, inputs))
        for _op, label, names, outs, params, statics, fn in self._steps:
            args: list[Any] = []
            devices = set()
            for i, name in enumerate(names):
                if i in statics:
                    args.append(statics[i])
                elif not name:
                    args.append(None)
                elif i in params:
                    args.append(env[name].tolist())
                else:
                    t = env[name]
                    devices.add(t.device)
                    args.append(t)
            if len(devices) > 1:  # host integer constants meet device data: move them over
                target = next(d for d in devices if d.type != "cpu")
                args = [a.to(target) if i not in params and a is not None else a
                        for i, a in enumerate(args)]
            try:
                result = fn(args, rt)
            except Exception as err:
                if hasattr(err, "add_note"):  # python >= 3.11
                    err.add_note(f"while running {label}")
                raise
            results = result if isinstance(result, tuple) else (result,)
            for name, value in zip(outs, results):
                if name:
                    env[name] = value
        return tuple(env[name] for name in self.output_names)


def module_from_onnx(onnx_path: str | os.PathLike[str]) -> OnnxGraphModule:
    """Load an ONNX file and build its `OnnxGraphModule` (all checks happen here).

    Raises:
        ModelSpecError: the file is unreadable, or see `OnnxGraphModule`.
    """
    import onnx

    try:
        proto = onnx.load(str(onnx_path))
    except Exception as err:  # noqa: BLE001 - protobuf / IO errors of many kinds
        raise ModelSpecError(f"{onnx_path}: cannot read the ONNX file ({err})") from err
    return OnnxGraphModule(proto, where=str(onnx_path))

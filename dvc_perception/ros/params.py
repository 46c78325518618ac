# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""ROS parameters of `perception_node`, generated from the config dataclasses.

Every leaf field of `NodeConfig` (dotted names: ``sync.mode``, ``pipeline.fiducial.cols``) is one
parameter whose descriptor (type, description with unit, range, allowed values, read-only) comes
from the field's metadata, so the dataclasses, the descriptors and `config/perception.yaml` agree
(a test checks the three). ``additional_constraints`` says when a change takes effect: ``live``
(applied to the running node), ``read at configure`` (refused while the node is configured) or,
via the descriptor's ``read_only``, start-up only.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from dvc_perception.config import (
    NodeConfig,
    check_parameter_names,
    field_metadata,
    flatten_dataclass,
    unflatten,
)
from dvc_perception.errors import ConfigError

_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
    tuple: ParameterType.PARAMETER_DOUBLE_ARRAY,  # a fixed-length list of floats
}


def parameter_defaults() -> dict[str, Any]:
    """Default value of every node parameter, by dotted name."""
    return flatten_dataclass(NodeConfig())


def parameter_descriptors() -> dict[str, ParameterDescriptor]:
    """The `ParameterDescriptor` of every node parameter, by dotted name."""
    defaults = parameter_defaults()
    out: dict[str, ParameterDescriptor] = {}
    for name, meta in field_metadata(NodeConfig).items():
        default = defaults[name]
        d = ParameterDescriptor(
            name=name,
            type=_TYPES[type(default)],
            description=str(meta.get("doc", "")),
            read_only=bool(meta.get("read_only", False)),
        )
        constraints = []
        if "choices" in meta:
            constraints.append("one of: " + ", ".join(meta["choices"]))
        if meta.get("live"):
            constraints.append("live: a change applies to the next frames")
        elif not meta.get("read_only"):
            constraints.append("read at configure: refused while the node is configured")
        d.additional_constraints = "; ".join(constraints)
        if "range" in meta:
            lo, hi = meta["range"]
            if isinstance(default, float):
                d.floating_point_range = [
                    FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)
                ]
            else:
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        out[name] = d
    return out


def declare_node_parameters(node: Node) -> None:
    """Declare every parameter on `node` with its default and descriptor.

    Overrides (params files, ``-p``, ``parameter_overrides``) are checked here: a name the node
    does not have is refused with the closest known one (rclpy would ignore it), and a value of
    the wrong type or out of range is refused naming the parameter.

    Raises:
        ConfigError: an unknown parameter name, or an override rclpy refuses.
    """
    overrides = getattr(node, "_parameter_overrides", {})  # rclpy: params files + overrides
    check_parameter_names(overrides, source=f"{node.get_name()} parameter overrides")
    defaults = parameter_defaults()
    for name, descriptor in parameter_descriptors().items():
        try:
            node.declare_parameter(name, defaults[name], descriptor)
        except ParameterException as err:
            given = overrides[name].value if name in overrides else None
            raise ConfigError(f"parameter {name!r}: {_expected(descriptor)}, got {given!r}") \
                from err


def _expected(d: ParameterDescriptor) -> str:
    """What a parameter takes, in words (type, range)."""
    names = {v: k.__name__ for k, v in _TYPES.items()}
    names[ParameterType.PARAMETER_DOUBLE_ARRAY] = "list of floats"
    text = f"expected a {names.get(d.type, 'value')}"
    for r in [*d.floating_point_range, *d.integer_range]:
        text += f" in [{r.from_value}, {r.to_value}]"
    return text


def proposed_node_config(node: Node, params: list[Parameter]) -> NodeConfig:
    """The `NodeConfig` the node's parameters would give with `params` set.

    Raises:
        ConfigError: the result is not valid (a choice not in its list, a cross-field rule).
    """
    values = {name: node.get_parameter(name).value for name in parameter_defaults()}
    for p in params:
        if p.name in values and p.type_ != Parameter.Type.NOT_SET:
            values[p.name] = p.value
    return NodeConfig.from_mapping(unflatten(values))


def validate_parameter_change(node: Node, params: list[Parameter]) -> SetParametersResult:
    """Accept a runtime parameter change only if the resulting `NodeConfig` is valid.

    rclpy checks types, ranges and read-only from the descriptors; this adds the allowed
    choices (``sync.mode``, ``keypoint_source``, ...) and the cross-field rules, so a bad value
    is refused with the reason instead of breaking the next configure.
    """
    try:
        proposed_node_config(node, params)
    except ConfigError as err:
        return SetParametersResult(successful=False, reason=str(err))
    return SetParametersResult(successful=True)


def read_node_config(node: Node) -> NodeConfig:
    """The node's current parameters as a validated `NodeConfig`.

    Raises:
        ConfigError: a value is out of range or not allowed (named with the parameter).
    """
    values = {name: node.get_parameter(name).value for name in parameter_defaults()}
    return NodeConfig.from_mapping(unflatten(values))

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""ROS parameters of `perception_node`, generated from the config dataclasses.

Every leaf field of `NodeConfig` (dotted names: ``sync.mode``, ``pipeline.fiducial.cols``) is one
parameter whose descriptor (type, description with unit, range, allowed values, read-only) comes
from the field's metadata, so the dataclasses, the descriptors and `config/perception.yaml` agree
(a test checks the three).
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)
from rclpy.node import Node

from dvc_perception.config import NodeConfig, field_metadata, flatten_dataclass, unflatten

_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
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
        if "choices" in meta:
            d.additional_constraints = "one of: " + ", ".join(meta["choices"])
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
    """Declare every parameter on `node` with its default and descriptor."""
    defaults = parameter_defaults()
    for name, descriptor in parameter_descriptors().items():
        node.declare_parameter(name, defaults[name], descriptor)


def read_node_config(node: Node) -> NodeConfig:
    """The node's current parameters as a validated `NodeConfig`.

    Raises:
        ConfigError: a value is out of range or not allowed (named with the parameter).
    """
    values = {name: node.get_parameter(name).value for name in parameter_defaults()}
    return NodeConfig.from_mapping(unflatten(values))

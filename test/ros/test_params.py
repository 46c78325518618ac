# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The YAML, the ROS parameter descriptors and the config dataclass defaults agree."""

from __future__ import annotations

import rclpy
import yaml
from rcl_interfaces.msg import ParameterType
from rclpy.context import Context

from dvc_perception.config import NodeConfig, flatten_dataclass, ros_parameters_section
from dvc_perception.resources import find_share_file
from dvc_perception.ros.params import parameter_descriptors

_PY = {
    ParameterType.PARAMETER_BOOL: bool,
    ParameterType.PARAMETER_INTEGER: int,
    ParameterType.PARAMETER_DOUBLE: float,
    ParameterType.PARAMETER_STRING: str,
    ParameterType.PARAMETER_DOUBLE_ARRAY: tuple,
}


def _flatten(mapping: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in mapping.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, list):  # a double array: the dataclasses hold a tuple
            out[f"{prefix}{k}"] = tuple(v)
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_yaml_equals_descriptors_equals_defaults():
    document = yaml.safe_load(find_share_file("config/perception.yaml").read_text())
    from_yaml = _flatten(ros_parameters_section(document))
    defaults = flatten_dataclass(NodeConfig())
    descriptors = parameter_descriptors()
    assert set(from_yaml) == set(defaults) == set(descriptors)
    for name, value in defaults.items():
        assert from_yaml[name] == value and type(from_yaml[name]) is type(value), name
        assert _PY[descriptors[name].type] is type(value), name
        assert descriptors[name].description, name


def test_yaml_documents_every_parameter_with_a_comment():
    lines = find_share_file("config/perception.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert lines[i - 1].strip().startswith("#"), f"undocumented: {stripped}"


def test_real_node_declares_the_descriptors(tmp_path):
    from dvc_perception.ros.perception_node import PerceptionNode

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        from rclpy.parameter import Parameter

        node = PerceptionNode(
            context=ctx, parameter_overrides=[Parameter("autostart", value=False)]
        )
        try:
            expected = parameter_descriptors()
            got = node.describe_parameters(list(expected))
            for d in got:
                e = expected[d.name]
                assert (d.type, d.read_only, d.description) == (
                    e.type, e.read_only, e.description
                ), d.name
                assert list(d.floating_point_range) == list(e.floating_point_range), d.name
                assert list(d.integer_range) == list(e.integer_range), d.name
            assert node.get_parameter("autostart").value is False
            assert node.get_parameter("pipeline.fiducial.cols").value == 9
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_fiducial_yaml_sets_only_known_parameters():
    document = yaml.safe_load(find_share_file("config/fiducial.yaml").read_text())
    config = NodeConfig.from_mapping(ros_parameters_section(document))  # rejects unknown keys
    assert config.pipeline.keypoint_source == "fiducial"
    assert config.pipeline.fiducial.board_type == "charuco"
    assert set(_flatten(ros_parameters_section(document))) <= set(parameter_descriptors())

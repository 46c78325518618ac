# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The shipped `ros2 bag play` QoS overrides offer what the node's reliable inputs ask for."""

from __future__ import annotations

import yaml
from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy

from dvc_perception.resources import find_share_file
from dvc_perception.ros.qos import input_qos


def test_overrides_match_the_reliable_input_profile() -> None:
    overrides = yaml.safe_load(find_share_file("config/bag_play_qos_overrides.yaml").read_text())
    wanted = input_qos(reliable=True)
    assert {"/camera/image_raw", "/camera/camera_info"} <= set(overrides)
    for topic, qos in overrides.items():
        assert set(qos) == {"reliability", "durability", "history", "depth"}, topic
        assert ReliabilityPolicy[qos["reliability"].upper()] == wanted.reliability
        assert DurabilityPolicy[qos["durability"].upper()] == wanted.durability
        assert HistoryPolicy[qos["history"].upper()] == wanted.history
        assert qos["depth"] == wanted.depth

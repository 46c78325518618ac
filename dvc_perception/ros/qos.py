# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""QoS profiles of the node's inputs and outputs."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)


def input_qos(reliable: bool) -> QoSProfile:
    """Inputs: sensor-data (BEST_EFFORT, KEEP_LAST 5) by default; RELIABLE for bag replay.

    A BEST_EFFORT subscription also receives from RELIABLE publishers (camera drivers use
    either), so the default connects to every driver. The reliable profile keeps 20 messages:
    a reader's KEEP_LAST history also overwrites what the executor has not taken yet, and a
    replay sends bursts while the worker holds the CPU.
    """
    if not reliable:
        return qos_profile_sensor_data
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=20,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def output_qos() -> QoSProfile:
    """Outputs: RELIABLE, KEEP_LAST 5, VOLATILE (RViz and sensor-data subscribers accept it)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=5,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def tf_qos() -> QoSProfile:
    """/tf: what tf2_ros's TransformBroadcaster uses (RELIABLE, VOLATILE, KEEP_LAST 100)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=100,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def tf_static_listener_qos() -> QoSProfile:
    """/tf_static subscription: tf2_ros's static listener (RELIABLE, TRANSIENT_LOCAL, depth 100).

    Transient local: the transforms latched by static broadcasters before the node started
    arrive too.
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=100,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )

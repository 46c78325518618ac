# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus

from dvc_perception.ros.diagnostics import ERROR_KINDS, FrameStats, build_diagnostics


def test_rates_percentiles_and_counters():
    stats = FrameStats(window=50)
    rng = np.random.default_rng(0)
    latencies = rng.uniform(5.0, 40.0, 30)
    for i, lat in enumerate(latencies):
        received = 100.0 + 0.1 * i  # 10 Hz
        stats.image_received(received)
        stats.frame_done(received, received + lat / 1e3, overhead_ms=1.0, n_poses=1)
    stats.error("image", "bad encoding")
    values = stats.snapshot(now=100.0 + 0.1 * 29 + 0.05)
    assert abs(values["input_rate_hz"] - 10.0) < 1e-6
    assert abs(values["latency_p50_ms"] - np.percentile(latencies, 50)) < 1e-9
    assert abs(values["latency_p95_ms"] - np.percentile(latencies, 95)) < 1e-9
    assert values["frames_received"] == 30 and values["poses_published"] == 30
    assert values["errors.image"] == 1 and values["last_error"] == "image: bad encoding"
    assert all(f"errors.{k}" in values for k in ERROR_KINDS)
    assert values["dropped.middleware_lost.image"] == 0  # always reported
    stats.middleware_lost("image", 3)  # what the message-lost event callback reports
    stats.middleware_lost("image", 2)
    assert stats.snapshot()["dropped.middleware_lost.image"] == 5
    # 10 s later nothing arrived: rates fall to 0
    assert stats.snapshot(now=200.0)["input_rate_hz"] == 0.0


def test_diagnostic_array_message():
    values = {"a": 1.23456, "b": 2, "c": "x"}
    msg = build_diagnostics("perception_node: pipeline", "fiducial", values, Time(sec=5),
                            warn=True, message="1 frames rejected")
    (status,) = msg.status
    assert status.level == DiagnosticStatus.WARN and status.hardware_id == "fiducial"
    assert [(kv.key, kv.value) for kv in status.values] == [("a", "1.235"), ("b", "2"), ("c", "x")]
    assert msg.header.stamp.sec == 5

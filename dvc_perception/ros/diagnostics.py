# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Frame statistics of the node (rates, latency percentiles, drops, errors) and /diagnostics.

Times come from the steady clock (`time.monotonic`), never the ROS clock, so latencies stay
right under `use_sim_time` and bag replay.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

#: Error and drop kinds reported on /diagnostics (always present, 0 when none happened).
ERROR_KINDS = ("image", "camera_info", "size_mismatch", "pipeline", "publish")


class FrameStats:
    """Thread-safe counters and windows of recent latencies; updated by callbacks and worker.

    Args:
        window: number of recent frames kept for the latency percentiles.
    """

    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self._received: deque[float] = deque(maxlen=window)  # steady times of received images
        self._published: deque[float] = deque(maxlen=window)
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._overhead_ms: deque[float] = deque(maxlen=window)
        self.frames_received = 0
        self.frames_processed = 0
        self.poses_published = 0
        self.errors: Counter[str] = Counter({k: 0 for k in ERROR_KINDS})
        self.last_error = ""

    def image_received(self, now: float) -> None:
        """An image arrived at steady time `now` [s]."""
        with self._lock:
            self.frames_received += 1
            self._received.append(now)

    def frame_done(
        self, received: float, now: float, overhead_ms: float, n_poses: int
    ) -> None:
        """A frame received at `received` was published at `now` (steady [s])."""
        with self._lock:
            self.frames_processed += 1
            self.poses_published += n_poses
            self._published.append(now)
            self._latency_ms.append(1e3 * (now - received))
            self._overhead_ms.append(overhead_ms)

    def error(self, kind: str, message: str) -> None:
        """A frame was rejected (`kind` one of ERROR_KINDS)."""
        with self._lock:
            self.errors[kind] += 1
            self.last_error = f"{kind}: {message}"

    def snapshot(self, now: float | None = None) -> dict[str, float | int | str]:
        """Current values: rates over the last 5 s [Hz], latency percentiles [ms], counters."""
        now = time.monotonic() if now is None else now
        with self._lock:
            lat = np.asarray(self._latency_ms, dtype=np.float64)
            ovh = np.asarray(self._overhead_ms, dtype=np.float64)
            out: dict[str, float | int | str] = {
                "input_rate_hz": _rate(self._received, now),
                "output_rate_hz": _rate(self._published, now),
                "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
                "latency_p95_ms": float(np.percentile(lat, 95)) if lat.size else float("nan"),
                "node_overhead_p50_ms": (
                    float(np.percentile(ovh, 50)) if ovh.size else float("nan")
                ),
                "frames_received": self.frames_received,
                "frames_processed": self.frames_processed,
                "poses_published": self.poses_published,
                "last_error": self.last_error,
            }
            for kind, n in sorted(self.errors.items()):
                out[f"errors.{kind}"] = n
        return out


def _rate(times: deque[float], now: float, span_s: float = 5.0) -> float:
    """Events per second among `times` within the last `span_s` seconds."""
    recent = [t for t in times if now - t <= span_s]
    if len(recent) < 2:
        return 0.0
    return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)


def build_diagnostics(
    name: str,
    hardware_id: str,
    values: dict[str, float | int | str],
    stamp: object,
    warn: bool,
    message: str,
) -> DiagnosticArray:
    """A DiagnosticArray with one status `name` holding `values` as key/value strings."""
    status = DiagnosticStatus()
    status.level = DiagnosticStatus.WARN if warn else DiagnosticStatus.OK
    status.name = name
    status.hardware_id = hardware_id
    status.message = message
    status.values = [KeyValue(key=k, value=_format(v)) for k, v in values.items()]
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array


def _format(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Frame statistics of the node (rates, latency percentiles, drops, errors) and /diagnostics.

Times come from the steady clock (`time.monotonic`), never the ROS clock, so latencies stay
right under `use_sim_time` and bag replay.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

#: Error and drop kinds reported on /diagnostics (always present, 0 when none happened).
ERROR_KINDS = ("image", "camera_info", "size_mismatch", "pipeline", "output_frame", "publish")
#: Depth outcomes of ``depth_source: multiview`` (`pipeline.multiview.DEPTH_STATUSES`, plus
#: ``busy``: the frame came while the depth of an earlier one was running and got none).
DEPTH_COUNTS = ("ok", "carried", "first_frame", "no_motion", "no_pose", "bad_pose", "busy")


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
        self.lost: Counter[str] = Counter({"image": 0, "camera_info": 0})
        self.last_error = ""
        self.tracks_lost = 0
        self.depth: Counter[str] = Counter({k: 0 for k in DEPTH_COUNTS})
        self.depth_fallback = 0
        self._depth_ms: deque[float] = deque(maxlen=window)
        self.camera_poses = 0
        self.camera_poses_rejected = 0
        self.last_depth_note = ""

    def depth_done(self, status: str, fallback: bool, ms: float, note: str = "") -> None:
        """A frame's multiview depth ended with `status` in `ms` [ms] (`note`: why not ok)."""
        with self._lock:
            self.depth[status] += 1
            self.depth_fallback += int(fallback)
            self._depth_ms.append(ms)
            if note:
                self.last_depth_note = f"{status}: {note}"

    def depth_busy(self) -> None:
        """A frame got no depth: the depth of an earlier frame was still running."""
        with self._lock:
            self.depth["busy"] += 1

    def camera_pose(self, accepted: bool, note: str = "") -> None:
        """A camera pose message arrived (`accepted`: usable, else rejected: NaN, ...)."""
        with self._lock:
            self.camera_poses += 1
            if not accepted:
                self.camera_poses_rejected += 1
                self.last_depth_note = f"camera pose rejected: {note}"

    def depth_snapshot(self) -> dict[str, float | int | str]:
        """Multiview depth values of /diagnostics.

        ``depth.<status>`` counts, ``depth.fallback``, ``depth_p50_ms``, the camera poses
        received and rejected, and the last reason a frame had no depth.
        """
        with self._lock:
            ms = np.asarray(self._depth_ms, dtype=np.float64)
            out: dict[str, float | int | str] = {
                f"depth.{k}": n for k, n in sorted(self.depth.items())}
            out["depth.fallback"] = self.depth_fallback
            out["depth_p50_ms"] = float(np.percentile(ms, 50)) if ms.size else float("nan")
            out["camera_poses.received"] = self.camera_poses
            out["camera_poses.rejected"] = self.camera_poses_rejected
            out["depth.last_problem"] = self.last_depth_note
        return out

    def track_lost(self) -> None:
        """A track ended (``pipeline.tracking``): its object's pose is no longer published."""
        with self._lock:
            self.tracks_lost += 1

    def middleware_lost(self, topic: str, count: int) -> None:
        """The middleware reports `count` more messages of `topic` lost before any callback."""
        with self._lock:
            self.lost[topic] += count

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
                "tracking.lost": self.tracks_lost,
                "last_error": self.last_error,
            }
            for kind, n in sorted(self.errors.items()):
                out[f"errors.{kind}"] = n
            for topic, n in sorted(self.lost.items()):
                out[f"dropped.middleware_lost.{topic}"] = n
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


#: ONNX Runtime execution provider -> the device it runs on, for /diagnostics.
_PROVIDER_DEVICES = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "cuda (onnxruntime TensorRT EP)",
}


def engine_device(engine: object) -> str:
    """The device an engine object runs on: ONNX Runtime's first provider, or its ``device``."""
    providers = getattr(engine, "providers", None)
    if providers:
        first = str(providers[0])
        return _PROVIDER_DEVICES.get(first, first)
    device = getattr(engine, "device", None)
    return str(device) if device is not None else "unknown"


def source_engine_values(role: str, source: object) -> dict[str, str]:
    """``<role>.backend / .device / .precision`` of a keypoint or depth source, as it runs.

    Read from the source's engine object (what `engines.load_engine` resolved, e.g. ``auto`` ->
    ``onnxruntime``), never from the configuration; a source without an engine (the fiducial
    source: OpenCV) gives its own backend string and ``n/a``.
    """
    engine = getattr(source, "engine", None)
    if engine is None:
        return {f"{role}.backend": str(getattr(source, "backend", type(source).__name__)),
                f"{role}.device": "n/a", f"{role}.precision": "n/a"}
    return {f"{role}.backend": str(getattr(engine, "backend", type(engine).__name__)),
            f"{role}.device": engine_device(engine),
            f"{role}.precision": str(getattr(engine, "precision", "unknown"))}


def model_file_value(path: str | Path, digits: int = 12) -> str:
    """``<file name> sha256:<first digits>`` of a model file (which model runs, exactly)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"{Path(path).name} sha256:{digest.hexdigest()[:digits]}"

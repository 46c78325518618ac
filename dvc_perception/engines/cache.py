# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
r"""Serialized-engine cache: content-derived keys, atomic writes, verified reads.

A TensorRT engine is only valid for the exact network, TensorRT version, GPU and build settings
it was built with. The key therefore hashes the ONNX *bytes* (never the path: the same path can
hold a retrained model), the TensorRT version, the GPU name and compute capability, the
precision, the input shapes of the optimisation profile and, for calibrated INT8, a hash of the
calibration data. (jetson-inference names its cache similarly; Isaac ROS keys on the path only.)

File format (little endian)::

    b"DVCENG1\\n" | u32 header length | header JSON | payload
    (header: key digest, key fields, payload sha256, payload size)

`read_cached_engine` tells a hit from a *miss* (no file) and from an *invalid* file (header key,
checksum or size mismatch), which is reported with a warning so the caller rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from dvc_perception.errors import ConfigError
from dvc_perception.files import atomic_path, file_sha256

_LOG = logging.getLogger(__name__)

MAGIC = b"DVCENG1\n"
_LEN = struct.Struct("<I")


@dataclass(frozen=True)
class EngineCacheKey:
    """Everything a serialized TensorRT engine depends on.

    Attributes:
        onnx_sha256: hex sha256 of the ONNX file bytes.
        trt_version: ``tensorrt.__version__``.
        gpu_name: e.g. "Orin" or "NVIDIA H100 80GB HBM3".
        compute_capability: (major, minor).
        precision: "fp32" | "fp16" | "int8".
        input_shapes: input name -> (min, opt, max) shapes of the optimisation profile.
        calibration_sha256: hash of the calibration frames for calibrated INT8, else "".
        settings: other build settings that change the engine (workspace, strongly typed ...),
            as a sorted string.
    """

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    input_shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    calibration_sha256: str = ""
    settings: str = ""

    def digest(self) -> str:
        """Hex sha256 over a canonical JSON of every field."""
        doc = asdict(self)
        doc["compute_capability"] = list(self.compute_capability)
        doc["input_shapes"] = {
            k: [list(s) for s in v] for k, v in sorted(self.input_shapes.items())
        }
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def filename(self) -> str:
        """Readable, unique cache file name: precision, TRT version, GPU, short digest."""
        gpu = "".join(c if c.isalnum() else "-" for c in self.gpu_name).strip("-") or "gpu"
        sm = f"sm{self.compute_capability[0]}{self.compute_capability[1]}"
        return f"{self.precision}_trt{self.trt_version}_{gpu}_{sm}_{self.digest()[:16]}.engine"


def sha256_arrays(arrays: Sequence[object]) -> str:
    """Hex sha256 over numpy arrays (shape, dtype and bytes), for calibration data."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(a)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def make_cache_key(
    onnx_path: str | os.PathLike[str],
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    precision: str,
    input_shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
    calibration_sha256: str = "",
    settings: str = "",
) -> EngineCacheKey:
    """The cache key of an engine built from `onnx_path` (hashes the file's bytes)."""
    if not trt_version or not gpu_name:
        raise ConfigError("engine cache key needs a TensorRT version and a GPU name")
    return EngineCacheKey(
        onnx_sha256=file_sha256(onnx_path),
        trt_version=trt_version,
        gpu_name=gpu_name,
        compute_capability=(int(compute_capability[0]), int(compute_capability[1])),
        precision=precision,
        input_shapes={
            k: tuple(tuple(int(d) for d in s) for s in v)  # type: ignore[misc]
            for k, v in input_shapes.items()
        },
        calibration_sha256=calibration_sha256,
        settings=settings,
    )


@dataclass(frozen=True)
class CacheRead:
    """Outcome of a cache read.

    Attributes:
        state: ``hit``, ``miss`` (no file) or ``invalid`` (file present but unusable).
        payload: the serialized engine on a hit, else b"".
        reason: why the file is invalid.
    """

    state: str
    payload: bytes = b""
    reason: str = ""


def write_cached_engine(cache_dir: str | os.PathLike[str], key: EngineCacheKey,
                        payload: bytes) -> Path:
    """Write `payload` under `key` atomically (`files.atomic_path`).

    Returns:
        The cache file path.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    header = json.dumps(
        {
            "key": key.digest(),
            "fields": json.loads(json.dumps(asdict(key), default=list)),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "payload_size": len(payload),
        },
        sort_keys=True,
    ).encode()
    path = cache_dir / key.filename()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(_LEN.pack(len(header)))
        f.write(header)
        f.write(payload)
    return path


def read_cached_engine(cache_dir: str | os.PathLike[str], key: EngineCacheKey) -> CacheRead:
    """Read the engine cached under `key`.

    Returns:
        A `CacheRead`: state "hit" with the payload, "miss", or "invalid" for an unreadable,
        truncated, mismatched or corrupt file (a warning is logged; the caller rebuilds and
        overwrites it).
    """
    path = Path(cache_dir) / key.filename()
    if not path.is_file():
        return CacheRead("miss")
    try:
        data = path.read_bytes()
    except OSError as err:
        return _invalid(path, f"unreadable ({err})")
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LEN.size:
        return _invalid(path, "bad magic (not a dvc_perception engine cache file)")
    (n,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    try:
        header = json.loads(data[start:start + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return _invalid(path, f"corrupt header ({err})")
    payload = data[start + n:]
    if not isinstance(header, dict) or header.get("key") != key.digest():
        return _invalid(path, "header key does not match the requested key")
    if header.get("payload_size") != len(payload):
        return _invalid(
            path, f"payload size {len(payload)} != {header.get('payload_size')} (truncated)"
        )
    if header.get("payload_sha256") != hashlib.sha256(payload).hexdigest():
        return _invalid(path, "payload checksum mismatch (corrupt)")
    return CacheRead("hit", payload=payload)


def _invalid(path: Path, reason: str) -> CacheRead:
    _LOG.warning("engine cache %s is invalid: %s; it will be rebuilt", path, reason)
    return CacheRead("invalid", reason=reason)

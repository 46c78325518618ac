# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The TensorRT engine cache, tested without TensorRT: keys, atomic writes, corrupt files."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os

import pytest

from dvc_perception.engines.cache import (
    MAGIC,
    make_cache_key,
    read_cached_engine,
    sha256_arrays,
    write_cached_engine,
)

BASE = dict(
    trt_version="10.3.0",
    gpu_name="Orin",
    compute_capability=(8, 7),
    precision="fp16",
    input_shapes={"image": ((1, 3, 96, 128),) * 3},
    calibration_sha256="",
    settings="fp16=True",
)


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "a" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(b"onnx-bytes-v1" * 100)
    return path


def test_key_hashes_onnx_bytes_not_path(onnx_file, tmp_path):
    key = make_cache_key(onnx_file, **BASE)
    assert key.onnx_sha256 == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    copy = tmp_path / "elsewhere.onnx"
    copy.write_bytes(onnx_file.read_bytes())
    assert make_cache_key(copy, **BASE).digest() == key.digest()
    assert make_cache_key(copy, **BASE).filename() == key.filename()
    onnx_file.write_bytes(b"onnx-bytes-v2" * 100)  # retrained model, same path
    assert make_cache_key(onnx_file, **BASE).digest() != key.digest()


@pytest.mark.parametrize("field, value", [
    ("trt_version", "10.3.1"),
    ("gpu_name", "NVIDIA H100 80GB HBM3"),
    ("compute_capability", (9, 0)),
    ("compute_capability", (8, 6)),
    ("precision", "int8"),
    ("input_shapes", {"image": ((1, 3, 96, 160),) * 3}),
    ("input_shapes", {"image": ((1, 3, 96, 128), (2, 3, 96, 128), (4, 3, 96, 128))}),
    ("calibration_sha256", sha256_arrays([b"frame"])),
    ("settings", "fp16=True;ws=2048"),
])
def test_every_component_changes_the_key(onnx_file, field, value):
    base = make_cache_key(onnx_file, **BASE)
    changed = make_cache_key(onnx_file, **{**BASE, field: value})
    assert changed.digest() != base.digest()
    assert changed.filename() != base.filename()


def test_filename_names_precision_version_and_gpu(onnx_file):
    name = make_cache_key(onnx_file, **BASE).filename()
    assert name.startswith("fp16_trt10.3.0_Orin_sm87_") and name.endswith(".engine")


def test_round_trip_and_atomic_write(onnx_file, tmp_path):
    key = make_cache_key(onnx_file, **BASE)
    cache = tmp_path / "cache"
    assert read_cached_engine(cache, key).state == "miss"
    payload = os.urandom(4096)
    path = write_cached_engine(cache, key, payload)
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # no temp file left
    got = read_cached_engine(cache, key)
    assert (got.state, got.payload) == ("hit", payload)
    write_cached_engine(cache, key, payload[::-1])  # overwrite in place (os.replace)
    assert read_cached_engine(cache, key).payload == payload[::-1]


def _corrupt(path, how):
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[-10] ^= 0xFF
    elif how == "truncate":
        data = data[:-100]
    elif how == "magic":
        data[:len(MAGIC)] = b"X" * len(MAGIC)
    elif how == "header":
        data[len(MAGIC) + 6] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how, reason", [
    ("flip", "checksum"), ("truncate", "truncated"), ("magic", "bad magic"),
    ("header", "header"),
])
def test_corrupt_file_is_invalid_with_a_warning(onnx_file, tmp_path, caplog, how, reason):
    key = make_cache_key(onnx_file, **BASE)
    path = write_cached_engine(tmp_path, key, os.urandom(2048))
    _corrupt(path, how)
    with caplog.at_level(logging.WARNING):
        got = read_cached_engine(tmp_path, key)
    assert got.state == "invalid" and got.payload == b""
    assert reason in got.reason
    assert "will be rebuilt" in caplog.text


def test_mismatched_key_in_header_is_invalid(onnx_file, tmp_path):
    key = make_cache_key(onnx_file, **BASE)
    other = dataclasses.replace(key, gpu_name="Xavier")
    # a file written for `other` copied to `key`'s name: header key does not match
    src = write_cached_engine(tmp_path / "o", other, b"engine")
    (tmp_path / "k").mkdir()
    os.replace(src, tmp_path / "k" / key.filename())
    got = read_cached_engine(tmp_path / "k", key)
    assert got.state == "invalid" and "does not match" in got.reason

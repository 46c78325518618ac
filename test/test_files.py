# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""files.atomic_path: a reader sees the old file or the whole new one, never a partial one."""

from __future__ import annotations

import pytest

from dvc_perception.files import atomic_path, atomic_write_bytes, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_finished_write_replaces_the_file_and_creates_folders(tmp_path):
    target = tmp_path / "runs" / "a" / "history.csv"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target and not target.exists()
        tmp.write_text("epoch,loss\n")
    assert target.read_text() == "epoch,loss\n"
    atomic_write_text(target, "x")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert target.read_text() == "x" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["history.csv"]


def test_a_finished_write_has_the_usual_permissions_not_mkstemps(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "model.onnx", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

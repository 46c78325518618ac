# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Bad files and paths given to the CLI's sub-commands (config and object YAML, meshes, models,
datasets, image folders): each ends in one line naming the file and what was expected, exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dvc_perception.cli import main

LMO_MESH = Path(__file__).resolve().parents[2].parent / "shared/data/lmo/models/obj_000005.ply"


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _random_bytes(n: int = 3000) -> bytes:
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


def _object_yaml(tmp: Path, mesh: str, unit: str = "mm") -> Path:
    return _write(tmp / "object.yaml", f"id: x\nmesh: {mesh}\nunit: {unit}\n")


# (case id, builder(tmp) -> argv, fragments the one-line error must contain)
CASES = {
    "synth_config_not_yaml": (
        lambda t: ["synth", "--frames", "1", "--out", str(t / "o"), "--config",
                   str(_write(t / "c.yaml", "a: [\n"))],
        ["c.yaml", "is not valid YAML", "line 2"]),
    "synth_config_not_a_mapping": (
        lambda t: ["synth", "--frames", "1", "--out", str(t / "o"), "--config",
                   str(_write(t / "c.yaml", "- 1\n- 2\n"))],
        ["c.yaml", "expected a mapping, got list"]),
    "synth_config_unknown_field": (
        lambda t: ["synth", "--frames", "1", "--out", str(t / "o"), "--config",
                   str(_write(t / "c.yaml", "widht: 320\n"))],
        ["unknown keys ['widht']"]),
    "object_yaml_is_binary": (
        lambda t: ["synth", "--frames", "1", "--out", str(t / "o"), "--objects",
                   str(_write(t / "o.yaml", _random_bytes()))],
        ["o.yaml", "not UTF-8 text"]),
    "object_yaml_absent": (
        lambda t: ["synth", "--frames", "1", "--out", str(t / "o"), "--objects",
                   str(t / "none.yaml")],
        ["none.yaml", "not found"]),
    "object_id_unknown": (
        lambda t: ["synth", "--frames", "1", "--out", str(t / "o"), "--objects", "no_such_obj"],
        ["config/objects/no_such_obj.yaml", "not found"]),
    "mesh_random_bytes": (
        lambda t: ["synth", "--frames", "1", "--out", str(t / "o"), "--objects",
                   str(_object_yaml(t, str(_write(t / "m.ply", _random_bytes()))))],
        ["m.ply", "not a PLY file"]),
    "mesh_truncated": (
        lambda t: ["synth", "--frames", "1", "--out", str(t / "o"), "--objects",
                   str(_object_yaml(t, str(_write(
                       t / "m.ply", "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n"
                                    "end_header\n1 2\n"))))],
        ["m.ply", "malformed mesh file"]),
    "mesh_absent": (
        lambda t: ["synth", "--frames", "1", "--out", str(t / "o"), "--objects",
                   str(_object_yaml(t, str(t / "none.ply")))],
        ["none.ply", "not found"]),
    "mesh_unknown_unit": (
        lambda t: ["synth", "--frames", "1", "--out", str(t / "o"), "--objects",
                   str(_object_yaml(t, str(LMO_MESH), unit="furlong"))],
        ["unknown unit 'furlong'"]),
    "synth_zero_frames": (
        lambda t: ["synth", "--frames", "0", "--out", str(t / "o")],
        ["num_frames", "got 0"]),
    "synth_bag_exists": (
        lambda t: ["synth", "--frames", "1", "--bag", str(_write(t / "b", "x"))],
        ["already exists"]),
    "quantize_model_random_bytes": (
        lambda t: ["quantize", str(_write(t / "m.onnx", _random_bytes())), "--calib", str(t),
                   "-o", str(t / "q.onnx")],
        ["m.onnx", "not a readable ONNX model"]),
    "quantize_model_absent": (
        lambda t: ["quantize", str(t / "none.onnx"), "--calib", str(t), "-o", str(t / "q.onnx")],
        ["none.onnx", "does not exist"]),
    "bop_scene_absent": (
        lambda t: ["bop2bag", str(t / "none"), "test/000002", "-o", str(t / "b")],
        ["test/000002", "has no rgb"]),
    "demo_images_absent": (
        lambda t: ["demo", "--images", str(t / "none")],
        ["none", "not a folder"]),
    "train_data_not_shards": (
        lambda t: ["train", "pose", "--data", str(t), "--out", str(t / "run")],
        ["index.json", "BOP scene folder", str(Path("/"))]),
    "train_toy_with_objects": (
        lambda t: ["train", "pose", "--toy", "4", "--objects",
                   str(_write(t / "o.yaml", _random_bytes())), "--out", str(t / "run")],
        ["--objects does not apply with --toy"]),
    "replay_input_random_file": (
        lambda t: ["replay", str(_write(t / "x.bin", _random_bytes())), "-o", str(t / "o")],
        ["x.bin", "cannot open"]),
    "replay_input_absent": (
        lambda t: ["replay", str(t / "none"), "-o", str(t / "o")],
        ["none", "does not exist"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_is_one_line_exit_2(tmp_path, case, capsys):
    build, fragments = CASES[case]
    if case == "mesh_unknown_unit" and not LMO_MESH.is_file():
        pytest.skip(f"{LMO_MESH} is absent (../shared/data exists on dev and CI machines only)")
    rc = main(build(tmp_path))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and "[ERROR]" not in ln]
    assert rc == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("dvc-perception "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)

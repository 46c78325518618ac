# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh
import yaml

from dvc_perception.errors import ConfigError, MeshError
from dvc_perception.render.objects import (
    compute_diameter,
    farthest_point_sampling,
    find_object_yaml,
    load_object,
    write_missing_fields,
)

REPO = Path(__file__).resolve().parents[2]
LMO_IDS = (1, 5, 6, 8, 9, 10, 11, 12)


def _distance_to_surface(mesh, points: np.ndarray) -> np.ndarray:
    tm = trimesh.Trimesh(mesh.vertices.double().numpy(), mesh.faces.numpy(), process=False)
    _, dist, _ = trimesh.proximity.closest_point(tm, points)
    return dist


def test_demo_object_description() -> None:
    obj = load_object(find_object_yaml("demo_object"))
    assert obj.object_id == "demo_object" and obj.unit == "m"
    assert obj.keypoints.shape == (17, 3)  # 16 surface points + the centre
    kp = obj.keypoints.double().numpy()
    # Surface keypoints lie on the mesh; the last one is the bounding-box centre.
    assert _distance_to_surface(obj.mesh, kp[:-1]).max() < 1e-5
    v = obj.mesh.vertices.double().numpy()
    np.testing.assert_allclose(kp[-1], 0.5 * (v.min(0) + v.max(0)), atol=1e-6)
    assert obj.diameter_m == pytest.approx(compute_diameter(obj.mesh), abs=1e-6)
    assert obj.symmetries_discrete.shape == (0, 4, 4)


@pytest.mark.slow
def test_lmo_descriptions_match_bop_models_info(lmo_dir: Path) -> None:
    info = json.loads((lmo_dir / "models" / "models_info.json").read_text())
    for k in LMO_IDS:
        obj = load_object(REPO / "config" / "objects" / f"lmo_obj_{k:02d}.yaml",
                          data_root=lmo_dir.parent)  # fmt: skip
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", obj.object_id)
        assert obj.diameter_m == pytest.approx(info[str(k)]["diameter"] / 1000.0, abs=1e-6)
        # The BOP diameter is the max vertex distance: ours agrees within 0.5 mm.
        assert compute_diameter(obj.mesh) == pytest.approx(obj.diameter_m, abs=5e-4)
        sym = np.asarray(info[str(k)].get("symmetries_discrete", []), float).reshape(-1, 4, 4)
        sym[:, :3, 3] /= 1000.0
        np.testing.assert_allclose(obj.symmetries_discrete, sym, atol=1e-9)
        assert obj.keypoints.shape == (9, 3)


def test_keypoints_computed_and_written_back(tmp_path: Path) -> None:
    for name in ("demo_object.obj", "demo_object.mtl", "demo_object.png"):
        shutil.copy(REPO / "config" / "objects" / name, tmp_path / name)
    path = tmp_path / "demo_object.yaml"
    path.write_text("# header kept\nid: demo_object\nmesh: demo_object.obj\nunit: m\n")
    computed = load_object(path).keypoints
    assert write_missing_fields(path) is True
    assert path.read_text().startswith("# header kept\n")
    data = yaml.safe_load(path.read_text())
    np.testing.assert_allclose(np.asarray(data["keypoints"]), computed.numpy(), atol=1e-6)
    np.testing.assert_allclose(load_object(path).keypoints.numpy(), computed.numpy(), atol=1e-6)
    assert write_missing_fields(path) is False


def test_farthest_point_sampling_spreads_points() -> None:
    rng = np.random.default_rng(0)
    pts = rng.random((500, 3))
    idx = farthest_point_sampling(pts, 8)
    chosen = pts[idx]
    gaps = np.linalg.norm(chosen[:, None] - chosen[None], axis=-1) + np.eye(8) * 9
    random_gaps = np.linalg.norm(pts[:8, None] - pts[None, :8], axis=-1) + np.eye(8) * 9
    assert len(set(idx.tolist())) == 8 and gaps.min() > random_gaps.min()


def test_bad_descriptions(tmp_path: Path) -> None:
    def write(text: str) -> Path:
        p = tmp_path / "o.yaml"
        p.write_text(text)
        return p

    with pytest.raises(ConfigError, match="not found"):
        load_object(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_object(write("id: a\nmesh: m.ply\nunit: m\ncolour: red\n"))
    with pytest.raises(ConfigError, match="ROS name token"):
        load_object(write("id: my-object\nmesh: m.ply\nunit: m\n"))
    with pytest.raises(MeshError, match="unknown unit"):
        load_object(write("id: a\nmesh: m.ply\nunit: furlong\n"))
    with pytest.raises(MeshError, match="not found"):
        load_object(write("id: a\nmesh: m.ply\nunit: mm\n"))
    with pytest.raises(MeshError, match="not found"):
        load_object(write("id: a\nmesh: ${DVC_SHARED_DATA}/x.ply\nunit: mm\n"),
                    data_root=tmp_path)  # fmt: skip


def test_continuous_symmetry_and_data_root(tmp_path: Path) -> None:
    for name in ("demo_object.obj", "demo_object.mtl", "demo_object.png"):
        shutil.copy(REPO / "config" / "objects" / name, tmp_path / name)
    path = tmp_path / "sym.yaml"
    path.write_text(
        "id: sym_obj\nmesh: ${DVC_SHARED_DATA}/demo_object.obj\nunit: m\ndiameter: 0.1\n"
        "symmetries:\n  discrete: []\n  continuous:\n"
        "    - {axis: [0, 0, 1], offset: [0, 0, 0.01]}\n"
    )
    obj = load_object(path, data_root=tmp_path)
    assert obj.mesh_path == tmp_path / "demo_object.obj"
    assert obj.symmetries_continuous[0].axis == (0.0, 0.0, 1.0)
    assert obj.symmetries_continuous[0].offset == (0.0, 0.0, 0.01)
    path.write_text("id: s\nmesh: demo_object.obj\nunit: m\nsymmetries:\n  continuous: [{}]\n")
    with pytest.raises(ConfigError, match="malformed symmetries"):
        load_object(path)

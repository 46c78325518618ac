# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from dvc_perception.errors import MeshError
from dvc_perception.render.mesh import load_mesh, mesh_from_arrays, validate_mesh, write_obj
from dvc_perception.synth.demo_object import make_demo_mesh

REPO = Path(__file__).resolve().parents[2]
TETRA_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def _write_ascii_ply(path: Path, v: np.ndarray, f: np.ndarray, colours: bool = False) -> None:
    lines = ["ply", "format ascii 1.0", f"element vertex {len(v)}"]
    lines += [f"property float {c}" for c in "xyz"]
    if colours:
        lines += [f"property uchar {c}" for c in ("red", "green", "blue")]
    lines += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    for i, p in enumerate(v):
        extra = f" {i * 10} {i * 20} {i * 30}" if colours else ""
        lines.append(" ".join(str(x) for x in p) + extra)
    lines += ["3 " + " ".join(str(i) for i in face) for face in f]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("folder", ["models", "models_eval"])
def test_lmo_ply_matches_trimesh(lmo_dir: Path, folder: str) -> None:
    # ASCII (models/, with normals + colours) and binary little-endian (models_eval/) PLY.
    for path in sorted((lmo_dir / folder).glob("obj_*.ply"))[:3]:
        mesh = load_mesh(path, "mm", allow_non_manifold=True)
        ref = trimesh.load(path, process=False)
        np.testing.assert_allclose(mesh.vertices.numpy(), ref.vertices / 1000.0, atol=1e-7)
        np.testing.assert_array_equal(mesh.faces.numpy(), ref.faces)
        if folder == "models":
            colours = ref.visual.vertex_colors[:, :3] / 255.0
            np.testing.assert_allclose(mesh.vertex_colors.numpy(), colours, atol=1e-6)
            np.testing.assert_allclose(mesh.normals.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_units_scale_to_metres(tmp_path: Path) -> None:
    path = tmp_path / "t.ply"
    _write_ascii_ply(path, TETRA_V * 50.0, TETRA_F, colours=True)
    for unit, scale in (("mm", 1e-3), ("cm", 1e-2), ("m", 1.0)):
        mesh = load_mesh(path, unit)
        np.testing.assert_allclose(mesh.vertices.numpy(), TETRA_V * 50.0 * scale, rtol=1e-6)
    assert mesh.vertex_colors[3].tolist() == pytest.approx([30 / 255, 60 / 255, 90 / 255])


def test_obj_with_texture_round_trip(tmp_path: Path) -> None:
    mesh = make_demo_mesh()
    write_obj(mesh, tmp_path / "d.obj", texture_name="d.png")
    back = load_mesh(tmp_path / "d.obj", "m")
    np.testing.assert_allclose(back.vertices.numpy(), mesh.vertices.numpy(), atol=1e-6)
    np.testing.assert_array_equal(back.faces.numpy(), mesh.faces.numpy())
    np.testing.assert_allclose(back.uv.numpy(), mesh.uv.numpy(), atol=1e-6)
    np.testing.assert_allclose(back.texture.numpy(), mesh.texture.numpy(), atol=1 / 255)


def test_shipped_demo_object_matches_generator() -> None:
    shipped = load_mesh(REPO / "config" / "objects" / "demo_object.obj", "m")
    fresh = make_demo_mesh()
    np.testing.assert_allclose(shipped.vertices.numpy(), fresh.vertices.numpy(), atol=1e-6)
    np.testing.assert_array_equal(shipped.faces.numpy(), fresh.faces.numpy())
    np.testing.assert_allclose(shipped.texture.numpy(), fresh.texture.numpy(), atol=1 / 255)
    # Closed surface apart from the texture seam: trimesh agrees it has a positive volume.
    tm = trimesh.Trimesh(fresh.vertices.numpy(), fresh.faces.numpy())
    tm.merge_vertices()
    assert tm.is_watertight and tm.volume > 0


def test_missing_file_and_unknown_unit(tmp_path: Path) -> None:
    with pytest.raises(MeshError, match="not found"):
        load_mesh(tmp_path / "nope.ply", "mm")
    path = tmp_path / "t.ply"
    _write_ascii_ply(path, TETRA_V, TETRA_F)
    with pytest.raises(MeshError, match="unknown unit 'inch'"):
        load_mesh(path, "inch")
    (tmp_path / "t.stl").write_text("solid")
    with pytest.raises(MeshError, match="unknown mesh format"):
        load_mesh(tmp_path / "t.stl", "m")


def test_empty_and_malformed(tmp_path: Path) -> None:
    path = tmp_path / "empty.ply"
    _write_ascii_ply(path, np.zeros((0, 3)), np.zeros((0, 3), dtype=int))
    with pytest.raises(MeshError, match="empty mesh"):
        load_mesh(path, "m")
    (tmp_path / "bad.ply").write_text("hello\n")
    with pytest.raises(MeshError, match="not a PLY"):
        load_mesh(tmp_path / "bad.ply", "m")
    (tmp_path / "empty.obj").write_text("# nothing\n")
    with pytest.raises(MeshError, match="empty mesh"):
        load_mesh(tmp_path / "empty.obj", "m")


def test_invalid_geometry_raises() -> None:
    v = TETRA_V.copy()
    v[2, 1] = np.nan
    with pytest.raises(MeshError, match="NaN"):
        mesh_from_arrays(v, TETRA_F)
    with pytest.raises(MeshError, match="face indices must lie in"):
        mesh_from_arrays(TETRA_V, np.array([[0, 1, 4]]))
    with pytest.raises(MeshError, match="degenerate"):
        mesh_from_arrays(TETRA_V, np.array([[0, 1, 1]]))
    # Three triangles on one edge (0-1): non-manifold.
    fan = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 3]])
    with pytest.raises(MeshError, match="non-manifold"):
        mesh_from_arrays(TETRA_V, fan)
    mesh = mesh_from_arrays(TETRA_V, fan, allow_non_manifold=True)
    validate_mesh(mesh, allow_non_manifold=True)


def test_computed_normals_point_outwards() -> None:
    mesh = mesh_from_arrays(TETRA_V, TETRA_F)
    centre = torch.as_tensor(TETRA_V.mean(axis=0), dtype=torch.float32)
    assert bool(((mesh.vertices - centre) * mesh.normals).sum(dim=1).gt(0).all())

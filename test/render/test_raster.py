# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import trimesh

from dvc_perception.errors import ConfigError, InputError, ShapeError
from dvc_perception.render.mesh import load_mesh, mesh_from_arrays
from dvc_perception.render.raster import render
from dvc_perception.render.raster_numba import numba_available
from dvc_perception.synth.demo_object import make_demo_mesh

LMO_K = torch.tensor([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])
BACKENDS = ["torch"] + (["numba"] if numba_available() else [])


def _rot(ax: float, ay: float, az: float) -> torch.Tensor:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return torch.as_tensor(rz @ ry @ rx, dtype=torch.float32)


def _square(half: float, z: float = 0.0) -> object:
    v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])
    return mesh_from_arrays(v, np.array([[0, 1, 2], [0, 2, 3]]), name="square")


def _ray_cast_depth(mesh_cam: trimesh.Trimesh, K: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    d = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones(len(xs))], axis=1)
    loc, ray, _ = mesh_cam.ray.intersects_location(np.zeros_like(d), d, multiple_hits=True)
    z = np.full(len(xs), np.inf)
    np.minimum.at(z, ray, loc[:, 2])
    return z


@pytest.mark.slow
def test_depth_matches_ray_caster_on_lmo_eval_meshes(lmo_dir: Path) -> None:
    # The default backend (numba where installed); test_numba_and_torch_paths_agree covers the
    # other one.
    backend = "auto"
    rng = np.random.default_rng(0)
    paths = sorted((lmo_dir / "models_eval").glob("obj_*.ply"))
    assert len(paths) == 8
    for i, path in enumerate(paths):
        mesh = load_mesh(path, "mm", allow_non_manifold=True)  # obj 12's eval mesh: 1 bad edge
        R = _rot(*rng.uniform(-np.pi, np.pi, size=3))
        t = torch.tensor([0.01 * i - 0.03, 0.02, 0.45])
        res = render(mesh, (R, t), LMO_K, 640, 480, backend=backend)
        mask = res.mask.numpy()
        interior = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        ys, xs = np.nonzero(interior)
        assert len(xs) > 1000, path.name
        pick = rng.choice(len(xs), size=500, replace=False)
        xs, ys = xs[pick], ys[pick]
        verts_cam = (mesh.vertices.double() @ R.double().T + t.double()).numpy()
        ref = _ray_cast_depth(
            trimesh.Trimesh(verts_cam, mesh.faces.numpy(), process=False),
            LMO_K.double().numpy(), xs.astype(float), ys.astype(float),
        )  # fmt: skip
        got = res.depth.numpy()[ys, xs]
        assert np.isfinite(ref).all(), path.name
        np.testing.assert_allclose(got, ref, atol=1e-3, err_msg=path.name)
        assert np.isnan(res.depth.numpy()[~mask]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_pixel_centres_are_integer_coordinates(backend: str) -> None:
    # A fronto-parallel square whose image spans x, y in [9.5, 19.5] px covers exactly the
    # pixels 10..19 (their centres are inside; 9 and 20 are outside).
    f, z = 100.0, 1.0
    K = torch.tensor([[f, 0.0, 14.5], [0.0, f, 14.5], [0.0, 0.0, 1.0]])
    res = render(_square(0.05), (torch.eye(3), torch.tensor([0.0, 0.0, z])), K, 30, 30,
                 backend=backend)  # fmt: skip
    expected = np.zeros((30, 30), dtype=bool)
    expected[10:20, 10:20] = True
    np.testing.assert_array_equal(res.mask.numpy(), expected)
    np.testing.assert_allclose(res.depth.numpy()[expected], z, atol=1e-6)
    assert (res.instance_ids.numpy()[expected] == 0).all()
    assert (res.instance_ids.numpy()[~expected] == -1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_z_buffer_occlusion_and_instances(backend: str) -> None:
    near, far = _square(0.03), _square(0.2)
    K = torch.tensor([[200.0, 0.0, 31.5], [0.0, 200.0, 31.5], [0.0, 0.0, 1.0]])
    eye = torch.eye(3).expand(2, 3, 3)
    t = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.5]])  # far square first in the list
    res = render([far, near], (eye, t), K, 64, 64, backend=backend)
    inst = res.instance_ids.numpy()
    assert inst[32, 32] == 1 and inst[15, 15] == 0 and inst[2, 2] == -1
    assert res.depth[32, 32].item() == pytest.approx(0.5, abs=1e-6)
    assert res.depth[15, 15].item() == pytest.approx(2.0, abs=1e-5)
    # The near square spans +-0.03 * 200 / 0.5 = +-12 px around the centre.
    assert (inst == 1).sum() == 24 * 24


def test_tilted_plane_depth_is_perspective_correct() -> None:
    # Depth of a tilted plane: the ray through pixel (u, v) meets n . X = d.
    mesh = _square(0.5)
    R = _rot(0.5, -0.3, 0.2)
    t = torch.tensor([0.05, -0.02, 1.5])
    K = torch.tensor([[300.0, 0.0, 80.0], [0.0, 300.0, 60.0], [0.0, 0.0, 1.0]])
    res = render(mesh, (R, t), K, 160, 120, backend="torch")
    n = R[:, 2].double().numpy()
    d = float(n @ t.double().numpy())
    v, u = np.nonzero(res.mask.numpy())
    ray = np.stack([(u - 80.0) / 300.0, (v - 60.0) / 300.0, np.ones(len(u))], axis=1)
    z_ref = d / (ray @ n)
    np.testing.assert_allclose(res.depth.numpy()[v, u], z_ref, rtol=1e-5)


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
def test_numba_and_torch_paths_agree() -> None:
    mesh = make_demo_mesh()
    plane = _square(0.3)
    R = torch.stack([_rot(0.3, 1.0, -0.4), _rot(0.1, 0.0, 0.0)])
    t = torch.tensor([[0.01, 0.0, 0.35], [0.0, 0.0, 0.8]])
    K = LMO_K * torch.tensor([[0.5], [0.5], [1.0]])
    a = render([mesh, plane], (R, t), K, 320, 240, backend="torch")
    b = render([mesh, plane], (R, t), K, 320, 240, backend="numba")
    assert torch.equal(a.mask, b.mask)
    assert torch.equal(a.instance_ids, b.instance_ids)
    assert torch.equal(a.face_ids, b.face_ids)
    torch.testing.assert_close(a.depth, b.depth, atol=1e-6, rtol=0, equal_nan=True)
    torch.testing.assert_close(a.color, b.color, atol=1e-4, rtol=0)


def test_texture_and_lighting() -> None:
    mesh = make_demo_mesh()
    R, t = _rot(0.2, 0.4, 0.0), torch.tensor([0.0, 0.0, 0.3])
    K = LMO_K * torch.tensor([[0.5], [0.5], [1.0]])
    unlit = render(mesh, (R, t), K, 320, 240, shade=False, backend="torch")
    lit = render(mesh, (R, t), K, 320, 240, backend="torch")
    m = unlit.mask
    # Textured: several distinct colours appear (red, green, blue, yellow bands).
    hues = {tuple(c) for c in (unlit.color[m] > 0.5).int().tolist()}
    assert len(hues) >= 4
    # Lambert: lit = unlit * (ambient + diffuse * max(0, n.l)) is within [ambient, a + d] x unlit.
    ratio = (lit.color[m].sum(-1) / unlit.color[m].sum(-1).clamp_min(1e-6)).numpy()
    assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 1.1 + 1e-4
    assert ratio.max() - ratio.min() > 0.3


def test_bad_inputs() -> None:
    mesh = _square(0.1)
    pose = (torch.eye(3), torch.tensor([0.0, 0.0, 1.0]))
    with pytest.raises(ShapeError, match="K"):
        render(mesh, pose, torch.eye(4), 10, 10)
    with pytest.raises(ShapeError, match="R"):
        render([mesh, mesh], pose, LMO_K, 10, 10)
    with pytest.raises(ShapeError, match="poses"):
        render(mesh, torch.eye(3), LMO_K, 10, 10)
    with pytest.raises(InputError, match="image size"):
        render(mesh, pose, LMO_K, 0, 10)
    with pytest.raises(InputError, match="at least one mesh"):
        render([], pose, LMO_K, 10, 10)
    with pytest.raises(ConfigError, match="backend"):
        render(mesh, pose, LMO_K, 10, 10, backend="opengl")
    with pytest.raises(ConfigError, match="hard"):
        render(mesh, pose, LMO_K, 10, 10, soft=True, backend="numba")


def test_faces_behind_near_plane_are_dropped() -> None:
    res = render(_square(0.1), (torch.eye(3), torch.tensor([0.0, 0.0, -1.0])), LMO_K, 64, 48)
    assert not res.mask.any() and torch.isnan(res.depth).all()

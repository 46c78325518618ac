# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`Lighting`: Blinn-Phong highlights and extra directional lights, hard and soft modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvc_perception.errors import ConfigError
from dvc_perception.render.mesh import mesh_from_arrays
from dvc_perception.render.raster import Lighting, render
from dvc_perception.render.raster_numba import numba_available
from dvc_perception.synth.demo_object import make_demo_mesh

K = torch.tensor([[100.0, 0.0, 40.0], [0.0, 100.0, 30.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
W, H = 80, 60
ALBEDO = float(np.float32(0.6))  # vertex colours are stored as float32
MODES = [("torch", False), ("torch", True)] + ([("numba", False)] if numba_available() else [])


def _facing_plane(normal: tuple[float, float, float] = (0.0, 0.0, -1.0)):
    """A 1 m square at z = 1 m covering the view, grey albedo, all vertex normals `normal`."""
    v = np.array([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    mesh = mesh_from_arrays(
        v, np.array([[0, 1, 2], [0, 2, 3]]), normals=np.tile(normal, (4, 1)),
        vertex_colors=np.full((4, 3), ALBEDO),
    ).to(dtype=torch.float64)  # fmt: skip
    return mesh, (torch.eye(3, dtype=torch.float64), torch.tensor([0.0, 0.0, 1.0]).double())


def _view_dirs() -> np.ndarray:
    """(H, W, 3) unit directions from each pixel's surface point to the camera."""
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    ray = np.stack([(u - 40.0) / 100.0, (v - 30.0) / 100.0, np.ones_like(u)], axis=-1)
    return -ray / np.linalg.norm(ray, axis=-1, keepdims=True)


@pytest.mark.parametrize(("backend", "soft"), MODES)
def test_highlight_matches_blinn_phong_on_a_facing_plane(backend: str, soft: bool) -> None:
    # Light along the view axis (towards the camera); n = -z. Independent per-pixel reference:
    # h = normalise(l + v), colour = albedo * (ambient + diffuse * n.l) + specular * (n.h)^s.
    mesh, pose = _facing_plane()
    light = Lighting(ambient=0.2, diffuse=0.3, direction_cam=(0.0, 0.0, -1.0), specular=0.4,
                     shininess=30.0)  # fmt: skip
    res = render(mesh, pose, K, W, H, lighting=light, soft=soft, backend=backend)
    l_dir = np.array([0.0, 0.0, -1.0])
    half = l_dir + _view_dirs()
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    n_h = half @ np.array([0.0, 0.0, -1.0])
    want = ALBEDO * (0.2 + 0.3 * 1.0) + 0.4 * n_h**30
    want_rgb = np.repeat(want[..., None], 3, -1)
    np.testing.assert_allclose(res.color.numpy(), want_rgb, atol=1e-9, rtol=0)
    # The centre pixel looks straight along the light: the full highlight.
    assert res.color[30, 40, 0].item() == pytest.approx(ALBEDO * 0.5 + 0.4, abs=1e-12)
    assert want.min() < ALBEDO * 0.5 + 0.4 * 0.5  # the highlight falls off towards the border


@pytest.mark.parametrize(("backend", "soft"), MODES)
def test_extra_lights_add_lambert_terms_and_highlights(backend: str, soft: bool) -> None:
    normal = np.array([0.3, -0.2, -1.0])
    normal /= np.linalg.norm(normal)
    mesh, pose = _facing_plane(tuple(normal))
    main, extra = np.array([1.0, 0.0, -1.0]), np.array([-0.5, 0.4, -1.0])
    light = Lighting(ambient=0.1, diffuse=0.3, direction_cam=tuple(main), specular=0.2,
                     shininess=8.0, extra_lights=(((*extra, 0.25)),))  # fmt: skip
    res = render(mesh, pose, K, W, H, lighting=light, soft=soft, backend=backend)
    view = _view_dirs()
    want = np.full((H, W), ALBEDO * 0.1)
    for direction, weight in ((main, 0.3), (extra, 0.25)):
        d = direction / np.linalg.norm(direction)
        want += ALBEDO * weight * max(float(normal @ d), 0.0)
        half = d + view
        half /= np.linalg.norm(half, axis=-1, keepdims=True)
        want += 0.2 * np.clip(half @ normal, 0.0, None) ** 8
    # normals are stored in float32: 1e-7
    np.testing.assert_allclose(res.color.numpy()[..., 1], np.clip(want, 0, 1), atol=1e-7, rtol=0)


@pytest.mark.parametrize(("backend", "soft"), MODES)
def test_default_lighting_is_exactly_lambert(backend: str, soft: bool) -> None:
    # The new fields at their defaults, or switched off explicitly (zero highlight, an extra
    # light of zero intensity), reproduce albedo * (ambient + diffuse * max(0, n.l)) bit for bit.
    mesh = make_demo_mesh()
    theta = 0.7
    R = torch.tensor([[np.cos(theta), 0, np.sin(theta)], [0, 1, 0],
                      [-np.sin(theta), 0, np.cos(theta)]], dtype=torch.float32)  # fmt: skip
    pose = (R, torch.tensor([0.0, 0.0, 0.3]))
    Kf = K.float() * torch.tensor([[1.5], [1.5], [1.0]])
    base = Lighting(ambient=0.35, diffuse=0.7, direction_cam=(0.5, -0.4, -1.0))
    off = Lighting(ambient=0.35, diffuse=0.7, direction_cam=(0.5, -0.4, -1.0), specular=0.0,
                   shininess=3.0, extra_lights=((1.0, 0.0, 0.0, 0.0),))  # fmt: skip
    a = render(mesh, pose, Kf, W, H, lighting=base, soft=soft, backend=backend)
    b = render(mesh, pose, Kf, W, H, lighting=off, soft=soft, backend=backend)
    assert torch.equal(a.color, b.color)
    # ...and that is the Lambert formula (independent reference from the unlit render).
    mesh_n, pose_n = _facing_plane((0.2, 0.1, -1.0))
    lit = render(mesh_n, pose_n, K, W, H, lighting=base, soft=soft, backend=backend)
    n = np.array([0.2, 0.1, -1.0]) / np.linalg.norm([0.2, 0.1, -1.0])
    d = np.array([0.5, -0.4, -1.0]) / np.linalg.norm([0.5, -0.4, -1.0])
    want = ALBEDO * (0.35 + 0.7 * n @ d)
    np.testing.assert_allclose(lit.color.numpy(), np.full((H, W, 3), want), atol=1e-7, rtol=0)


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
def test_numba_and_torch_agree_with_highlights() -> None:
    mesh = make_demo_mesh()
    pose = (torch.eye(3), torch.tensor([0.01, 0.0, 0.3]))
    Kf = K.float() * torch.tensor([[1.5], [1.5], [1.0]])
    light = Lighting(specular=0.5, shininess=12.0, extra_lights=((-1.0, 0.5, -0.5, 0.3),))
    a = render(mesh, pose, Kf, W, H, lighting=light, backend="torch")
    b = render(mesh, pose, Kf, W, H, lighting=light, backend="numba")
    torch.testing.assert_close(a.color, b.color, atol=1e-4, rtol=0)
    plain = render(mesh, pose, Kf, W, H, backend="numba")
    assert (b.color - plain.color)[b.mask].abs().max() > 0.05  # the highlight shows


def test_soft_gradcheck_with_highlights_and_extra_lights() -> None:
    v = np.array([[0.05, 0, 0], [-0.05, 0, 0], [0, 0.04, 0], [0, -0.04, 0], [0, 0, 0.03],
                  [0, 0, -0.03]])  # fmt: skip
    f = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5],
                  [0, 3, 5]])  # fmt: skip
    colours = np.random.default_rng(0).uniform(0.2, 0.6, (6, 3))
    mesh = mesh_from_arrays(v, f, vertex_colors=colours).to(dtype=torch.float64)
    Ks = torch.tensor([[60.0, 0, 15.3], [0, 60.0, 15.7], [0, 0, 1]], dtype=torch.float64)
    light = Lighting(ambient=0.2, diffuse=0.3, direction_cam=(0.3, -0.2, -1.0), specular=0.2,
                     shininess=6.0, extra_lights=((-0.6, 0.3, -1.0, 0.2),))  # fmt: skip
    proj = torch.randn(6, 32 * 32 * 3, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(1))  # fmt: skip
    R0 = torch.tensor([[0.9, 0.0, 0.43589], [0.0, 1.0, 0.0], [-0.43589, 0.0, 0.9]]).double()

    def colour(verts: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r = render(mesh.with_vertices(verts), (R, t), Ks, 32, 32, soft=True, lighting=light)
        return proj @ r.color.reshape(-1)

    inputs = (
        mesh.vertices.clone().requires_grad_(),
        R0.clone().requires_grad_(),
        torch.tensor([0.003, -0.002, 0.4], dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(colour, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_lighting_validation() -> None:
    with pytest.raises(ConfigError, match="specular"):
        Lighting(specular=-0.1)
    with pytest.raises(ConfigError, match="shininess"):
        Lighting(shininess=0.0)
    with pytest.raises(ConfigError, match="ambient"):
        Lighting(ambient=float("nan"))
    with pytest.raises(ConfigError, match="direction"):
        Lighting(direction_cam=(0.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match=r"extra_lights\[0\] intensity"):
        Lighting(extra_lights=((0.0, 0.0, -1.0, -0.5),))
    with pytest.raises(ConfigError, match=r"extra_lights\[1\] direction"):
        Lighting(extra_lights=((0.0, 0.0, -1.0, 0.5), (0.0, 0.0, 0.0, 0.5)))
    with pytest.raises(ConfigError, match=r"expected \(dx, dy, dz, intensity\)"):
        Lighting(extra_lights=((0.0, 0.0, -1.0),))  # type: ignore[arg-type]

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import numpy as np
import pytest
import torch

from dvc_perception.render.mesh import mesh_from_arrays
from dvc_perception.render.raster import SoftSettings, render
from dvc_perception.synth.demo_object import make_demo_mesh

OCTA_V = np.array(
    [[0.05, 0, 0], [-0.05, 0, 0], [0, 0.04, 0], [0, -0.04, 0], [0, 0, 0.03], [0, 0, -0.03]]
)
OCTA_F = np.array(
    [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
)


def _small_problem():
    colours = np.random.default_rng(0).random((6, 3))
    mesh = mesh_from_arrays(OCTA_V, OCTA_F, vertex_colors=colours).to(dtype=torch.float64)
    K = torch.tensor([[60.0, 0, 15.3], [0, 60.0, 15.7], [0, 0, 1]], dtype=torch.float64)
    a, b = 0.4, 0.3
    ry = torch.tensor([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = torch.tensor([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    R = (ry @ rx).to(torch.float64)
    t = torch.tensor([0.003, -0.002, 0.4], dtype=torch.float64)
    return mesh, K, R, t


def test_soft_gradcheck_vertices_rotation_translation() -> None:
    mesh, K, R, t = _small_problem()
    proj = torch.randn(
        8, 32 * 32 * 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )

    def f(verts: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r = render(mesh.with_vertices(verts), (R, t), K, 32, 32, soft=True)
        out = torch.cat(
            [
                r.mask.reshape(-1),
                torch.nan_to_num(r.depth, nan=0.0).reshape(-1),
                r.color.reshape(-1),
            ]
        )
        return proj @ out  # a few random projections keep the analytic Jacobian cheap

    inputs = (mesh.vertices.clone().requires_grad_(), R.clone().requires_grad_(),
              t.clone().requires_grad_())  # fmt: skip
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_soft_matches_hard_and_silhouette_falls_off() -> None:
    mesh, K, R, t = _small_problem()
    hard = render(mesh, (R, t), K, 32, 32, backend="torch")
    soft = render(mesh, (R, t), K, 32, 32, soft=True, soft_settings=SoftSettings(sigma_px=1.0))
    torch.testing.assert_close(soft.depth, hard.depth, equal_nan=True)
    torch.testing.assert_close(soft.color, hard.color)
    cover = hard.mask
    assert bool((soft.mask[cover] == 1).all())
    outside = soft.mask[~cover]
    assert bool((outside >= 0).all() and (outside < 1).all())
    # Next to the silhouette the soft mask is large; far from it, zero.
    import cv2

    ring = cv2.dilate(cover.numpy().astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ring &= ~cover.numpy()
    far = ~cv2.dilate(cover.numpy().astype(np.uint8), np.ones((11, 11), np.uint8)).astype(bool)
    assert soft.mask.numpy()[ring].mean() > 0.2
    assert (soft.mask.numpy()[far] == 0).all()


@pytest.mark.slow
def test_soft_silhouette_gradient_recovers_translation() -> None:
    # Render-and-compare: gradient descent on a silhouette loss pulls t back to the target.
    mesh = make_demo_mesh()
    K = torch.tensor([[150.0, 0, 31.5], [0, 150.0, 31.5], [0, 0, 1]])
    R = torch.eye(3)
    target = render(mesh, (R, torch.tensor([0.0, 0.0, 0.4])), K, 64, 64, soft=True).mask.detach()
    t = torch.tensor([0.012, -0.008, 0.4], requires_grad=True)
    opt = torch.optim.Adam([t], lr=3e-3)
    for _ in range(20):
        opt.zero_grad()
        loss = ((render(mesh, (R, t), K, 64, 64, soft=True).mask - target) ** 2).mean()
        loss.backward()
        opt.step()
    assert float(t[:2].detach().norm()) < 0.004


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_soft_render_runs_on_cuda() -> None:
    mesh, K, R, t = _small_problem()
    cpu = render(mesh, (R, t), K, 32, 32, soft=True)
    gpu = render(mesh.to("cuda"), (R.cuda(), t.cuda()), K.cuda(), 32, 32, soft=True)
    torch.testing.assert_close(gpu.mask.cpu(), cpu.mask)
    torch.testing.assert_close(gpu.depth.cpu(), cpu.depth, equal_nan=True)

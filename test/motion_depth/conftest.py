# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""A rendered scene with exact depth for the motion-depth tests.

A textured back wall, a textured box turned 35 deg (two faces seen obliquely) and a slanted
textured panel, rendered by the project's hard renderer (`render.raster.render`, unlit texture:
the brightness of a surface point does not change with the viewpoint) at 160x120, f = 140 px,
from a camera that translates 4 cm per frame (mostly sideways, a little down and forwards) and
turns 0.3 deg (yaw) and 0.1 deg (pitch) per frame. The renderer's depth is exact (perspective-
correct z of planar faces), so it is the ground truth.
"""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest
import torch

from dvc_perception.render.mesh import Mesh, mesh_from_arrays
from dvc_perception.render.raster import render

WIDTH, HEIGHT, FOCAL_PX = 160, 120, 140.0
#: Camera translation per frame [m] (direction (1, 0.15, 0.2)) and rotation per frame [deg].
STEP_M = 0.04
YAW_DEG, PITCH_DEG = 0.3, 0.1


def _texture(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """(size, size, 3) float32 grey noise with blobs of `sigma` and 3 `sigma` texels.

    Each surface's `sigma` is about 1.5 px at its distance: finer texture would alias (the
    renderer samples the texture once per pixel, without mip-mapping), so the same point would
    look different from two viewpoints.
    """
    t = sum(w * cv2.GaussianBlur(rng.uniform(0, 1, (size, size)).astype(np.float32), (0, 0), s)
            for s, w in ((sigma, 1.0), (3 * sigma, 2.0)))
    t = cv2.normalize(t, None, 0.05, 0.95, cv2.NORM_MINMAX)
    return np.repeat(t[..., None], 3, axis=2)


def _quad(corners: list[list[float]], texture: np.ndarray, name: str) -> Mesh:
    uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], float)
    return mesh_from_arrays(np.asarray(corners, float), np.array([[0, 1, 2], [0, 2, 3]]), uv=uv,
                            texture=texture, name=name)


def _box(centre: np.ndarray, half: float, yaw_rad: float, texture: np.ndarray) -> Mesh:
    """A cube, its six faces with their own vertices and a 3x2 texture atlas (no repeats)."""
    c = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * half
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    vertices, uv, faces = [], [], []
    for k, quad in enumerate(quads):
        u0, v0 = (k % 3) / 3, (k // 3) / 2
        for corner, (du, dv) in zip(quad, ((0, 0), (1, 0), (1, 1), (0, 1))):
            vertices.append(c[corner])
            uv.append([u0 + du / 3, v0 + dv / 2])
        faces += [[4 * k, 4 * k + 1, 4 * k + 2], [4 * k, 4 * k + 2, 4 * k + 3]]
    cy, sy = np.cos(yaw_rad), np.sin(yaw_rad)
    R = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return mesh_from_arrays(np.array(vertices) @ R.T + centre, np.array(faces), uv=np.array(uv),
                            texture=texture, name="box")


@pytest.fixture(scope="session")
def rendered_scene() -> types.SimpleNamespace:
    """The scene of the module docstring (world frame: the optical frame of camera 0).

    Attributes: ``K`` (3, 3) px, ``W``, ``H``, ``pose(k)`` -> (4, 4) camera-to-world of frame k
    (k may be fractional); ``render(camera_to_world, box=True)`` -> (colour (H, W, 3) float in
    [0, 1], depth (H, W) float64 m; ``box=False`` leaves the box out: a scene change);
    ``rgb8(colour, noise, seed)`` -> (H, W, 3) uint8 with Gaussian sensor noise of `noise` grey
    levels; ``grey(colour)`` -> (H, W) float32 in [0, 1]; ``relative(k_ref, k_src)`` -> (4, 4)
    reference camera -> source camera.
    """
    rng = np.random.default_rng(7)
    wall = _quad([[-4, -3, 3.2], [4, -3, 3.2], [4, 3, 3.2], [-4, 3, 3.2]],
                 _texture(rng, 1024, 4.0), "wall")
    box = _box(np.array([-0.2, 0.1, 1.5]), 0.25, np.radians(35.0), _texture(rng, 512, 8.0))
    panel = _quad([[0.3, -0.6, 2.0], [1.2, -0.6, 2.5], [1.2, 0.5, 2.5], [0.3, 0.5, 2.0]],
                  _texture(rng, 256, 6.0), "panel")
    with_box = [m.to(dtype=torch.float64) for m in (wall, box, panel)]
    without_box = [with_box[0], with_box[2]]
    K = np.array([[FOCAL_PX, 0.0, (WIDTH - 1) / 2], [0.0, FOCAL_PX, (HEIGHT - 1) / 2],
                  [0.0, 0.0, 1.0]])

    def pose(k: float) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = cv2.Rodrigues(np.radians([PITCH_DEG * k, YAW_DEG * k, 0.0]))[0]
        T[:3, 3] = STEP_M * k * np.array([1.0, 0.15, 0.2])
        return T

    def render_view(camera_to_world: np.ndarray, box: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
        meshes = with_box if box else without_box
        T_cam_world = torch.from_numpy(np.linalg.inv(camera_to_world))
        r = render(meshes, T_cam_world.expand(len(meshes), 4, 4), torch.from_numpy(K), WIDTH,
                   HEIGHT, shade=False)
        return r.color.numpy(), r.depth.numpy()

    def rgb8(colour: np.ndarray, noise: float = 0.0, seed: int = 0) -> np.ndarray:
        n = np.random.default_rng(seed).normal(0.0, noise, colour.shape) if noise else 0.0
        return np.clip(colour * 255.0 + n + 0.5, 0, 255).astype(np.uint8)

    def grey(colour: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(colour.astype(np.float32), cv2.COLOR_RGB2GRAY)

    def relative(k_ref: float, k_src: float) -> np.ndarray:
        return np.linalg.inv(pose(k_src)) @ pose(k_ref)

    return types.SimpleNamespace(K=K, W=WIDTH, H=HEIGHT, pose=pose, render=render_view,
                                 rgb8=rgb8, grey=grey, relative=relative)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Procedural content of synthetic scenes: random rotations, textures, planes and distractors.

Every function draws from the `numpy.random.Generator` it is given, so a scene is reproducible
from its seed. Meshes are in metres, object frame; textures (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch

from dvc_perception.errors import ConfigError
from dvc_perception.render.mesh import Mesh, compute_vertex_normals, mesh_from_arrays


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotation (normalised Gaussian quaternion): every view and in-plane angle."""
    q = rng.normal(size=4)
    x, y, z, w = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotation_y(a: float) -> np.ndarray:
    """(3, 3) rotation by `a` rad about the y axis."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_x(a: float) -> np.ndarray:
    """(3, 3) rotation by `a` rad about the x axis."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def procedural_texture(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """(size, size, 3) uint8 random texture: checker, stripes, smooth noise or a gradient."""
    kind = int(rng.integers(4))
    c1, c2 = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    u, v = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size))
    if kind == 0:
        n = int(rng.integers(2, 16))
        a = (((u * n).astype(int) + (v * n).astype(int)) % 2).astype(np.float64)
    elif kind == 1:
        ang, freq = rng.uniform(0, np.pi), rng.uniform(2, 20)
        a = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (u * np.cos(ang) + v * np.sin(ang)))
    elif kind == 2:
        cells = int(rng.integers(3, 12))
        small = rng.random((cells, cells)).astype(np.float32)
        a = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    else:
        a = u * rng.uniform(-1, 1) + v * rng.uniform(-1, 1)
        a = (a - a.min()) / max(a.max() - a.min(), 1e-6)
    img = c1 * (1 - a[..., None]) + c2 * a[..., None]
    img += rng.normal(size=img.shape) * rng.uniform(0, 12)
    return img.clip(0, 255).astype(np.uint8)


def clutter_texture(rng: np.random.Generator, size: int = 512,
                    radius_range: tuple[float, float] = (1 / 80, 1 / 4),
                    saturation: float = 1.0) -> np.ndarray:
    """(size, size, 3) uint8 "dead leaves" clutter: overlapping shapes covering a texture.

    A `procedural_texture` background under filled ellipses, rotated rectangles and thick
    lines drawn one over another, sizes log-uniform in `radius_range` (fractions of `size`:
    many small, some large, the scale mix of natural images that dead-leaves models
    reproduce), colours of random grey level and saturation, as many as cover the texture
    about 1-2 times over. A plane textured with it looks like the busy desk or shelf behind
    real objects rather than a smooth wall. `saturation` < 1 scales every pixel's colour
    towards its grey level (``grey + saturation * (rgb - grey)``, grey the channel mean): the
    greys, whites and muted colours of most real rooms; 1 leaves the texture as drawn.
    """
    r_min, r_max = size * radius_range[0], size * radius_range[1]
    mean_r2 = (r_max**2 - r_min**2) / (2.0 * np.log(r_max / r_min))  # E[r^2], log-uniform r
    n_shapes = int(rng.uniform(1.0, 2.0) * size * size / (np.pi * mean_r2 * 0.6))
    base = procedural_texture(rng, min(size, 256))  # what shows between the shapes
    img = np.ascontiguousarray(cv2.resize(base, (size, size), interpolation=cv2.INTER_LINEAR))
    for _ in range(n_shapes):
        r = r_min * (r_max / r_min) ** rng.random()
        cx, cy = rng.uniform(0, size, size=2)
        grey = rng.uniform(0, 255)
        colour = tuple(float(c) for c in grey + (rng.uniform(0, 255, size=3) - grey)
                       * rng.uniform(0.1, 1.0))
        kind = int(rng.integers(3))
        angle = float(rng.uniform(0, 180))
        if kind == 0:
            axes = (max(1, int(r)), max(1, int(r * rng.uniform(0.3, 1.0))))
            cv2.ellipse(img, (int(cx), int(cy)), axes, angle, 0, 360, colour, -1)
        elif kind == 1:
            w, h = r * rng.uniform(0.5, 1.5, size=2)
            box = cv2.boxPoints(((float(cx), float(cy)), (float(w), float(h)), angle))
            cv2.fillPoly(img, [np.int32(box)], colour)
        else:
            d = np.array([np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))]) * r * 1.5
            p0, p1 = np.int32([cx, cy] - d), np.int32([cx, cy] + d)
            cv2.line(img, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), colour,
                     max(1, int(r * rng.uniform(0.1, 0.3))))
    if saturation != 1.0:
        rgb = img.astype(np.float32)
        grey = rgb.mean(axis=2, keepdims=True)
        img = np.clip(grey + np.float32(saturation) * (rgb - grey) + 0.5, 0, 255).astype(np.uint8)
    return img


def plane_mesh(
    rng: np.random.Generator, half: float, device: torch.device, cells: int = 1,
    clutter: bool = False, clutter_saturation: float = 1.0,
) -> Mesh:
    """A textured square of half-size `half` [m] in its z = 0 plane, normal +z.

    `cells` x `cells` quads: the renderer drops faces with a vertex behind the near plane, so a
    finely divided plane loses only its cells behind the camera (a moving camera needs that).
    `clutter`: a `clutter_texture` instead of a `procedural_texture`: for a divided plane (a back
    plane several metres across, of which the view sees a part) 1024 px with shapes of 1/300 to
    1/12 of it (about 2-40 cm), else 256 px with shapes of 1/80 to 1/4; its colours scaled
    towards grey by `clutter_saturation` (`clutter_texture`'s `saturation`).
    """
    g = np.linspace(0.0, 1.0, cells + 1)
    gu, gv = np.meshgrid(g, g)
    uv = np.stack([gu.ravel(), gv.ravel()], axis=1)
    v = np.concatenate([(uv * 2.0 - 1.0) * half, np.zeros((len(uv), 1))], axis=1)
    faces = []
    for r in range(cells):
        for c in range(cells):
            a = r * (cells + 1) + c
            faces += [[a, a + 1, a + cells + 2], [a, a + cells + 2, a + cells + 1]]
    mesh = mesh_from_arrays(
        v,
        np.asarray(faces),
        normals=np.tile([0.0, 0.0, 1.0], (len(v), 1)),
        uv=uv,
        texture=(_plane_clutter(rng, cells, clutter_saturation) if clutter
                 else procedural_texture(rng)),
        name="plane",
    )
    return mesh.to(device)


def _plane_clutter(rng: np.random.Generator, cells: int, saturation: float) -> np.ndarray:
    if cells > 1:
        return clutter_texture(rng, 1024, (1 / 300, 1 / 12), saturation)
    return clutter_texture(rng, 256, saturation=saturation)


def plane_pose(centre: np.ndarray, normal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pose of a plane mesh (normal +z) at `centre` with its normal along `normal`."""
    z = normal / np.linalg.norm(normal)
    a = rng.normal(size=3)
    x = a - z * (a @ z)
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    T[:3, 3] = centre
    return T


def distractor_mesh(rng: np.random.Generator, size: float, device: torch.device) -> Mesh:
    """A box, ellipsoid or cylinder about `size` [m] across, random colour or texture."""
    kind = int(rng.integers(3))
    dims = size * rng.uniform(0.4, 1.0, size=3) / 2
    if kind == 0:
        v, f = _box()
    elif kind == 1:
        v, f = _ellipsoid()
    else:
        v, f = _cylinder()
    v = v * dims
    colour = np.tile(rng.uniform(0.05, 1.0, size=3), (len(v), 1))
    colour *= rng.uniform(0.7, 1.0, size=(len(v), 1))  # some per-vertex variation
    return mesh_from_arrays(v, f, vertex_colors=colour, name="distractor").to(device)


def transferred_colours(shape: Mesh, source: Mesh) -> np.ndarray:
    """(V, 3) float32 colours for `shape`'s vertices from `source`'s: nearest vertex, both boxed.

    Both meshes' vertices are mapped into the unit cube by their own axis-aligned bounding
    boxes; each vertex of `shape` takes the colour of the nearest `source` vertex there, so
    `source`'s colour layout (its photographed texture) is laid over `shape`'s surface.

    Raises:
        ConfigError: `source` has neither vertex colours nor a texture.
    """

    def boxed(mesh: Mesh) -> np.ndarray:
        v = mesh.vertices.detach().cpu().double().numpy()
        lo, hi = v.min(axis=0), v.max(axis=0)
        return (v - lo) / np.maximum(hi - lo, 1e-9)

    a, b = boxed(shape), boxed(source)
    colours = vertex_colours(source)
    b_sq = (b * b).sum(axis=1)
    nearest = np.empty(len(a), np.int64)
    for start in range(0, len(a), 1024):  # (1024, Vb) distances at a time
        chunk = a[start:start + 1024]
        d2 = b_sq[None, :] - 2.0 * chunk @ b.T
        nearest[start:start + 1024] = np.argmin(d2, axis=1)
    return colours[nearest].astype(np.float32)


def vertex_colours(mesh: Mesh) -> np.ndarray:
    """(V, 3) float32 RGB in [0, 1] of `mesh`'s vertices: its vertex colours, or its texels.

    Without vertex colours, the texture at each vertex's texture coordinates (nearest texel).

    Raises:
        ConfigError: the mesh has neither.
    """
    if mesh.vertex_colors is not None:
        return mesh.vertex_colors.detach().cpu().float().numpy()
    if mesh.uv is None or mesh.texture is None:
        raise ConfigError(f"{mesh.name}: neither vertex colours nor a texture to take "
                          f"colours from")
    tex = mesh.texture.detach().cpu().float().numpy()
    uv = np.clip(mesh.uv.detach().cpu().double().numpy(), 0.0, 1.0)
    h, w = tex.shape[:2]
    rows = np.rint((1.0 - uv[:, 1]) * (h - 1)).astype(np.int64)  # v up, row 0 at the top
    cols = np.rint(uv[:, 0] * (w - 1)).astype(np.int64)
    return tex[rows, cols].astype(np.float32)


def chimera_mesh(shape: Mesh, colours: np.ndarray, stretch: np.ndarray,
                 device: torch.device) -> Mesh:
    """A distractor: `shape` stretched by `stretch` (3,) along its axes, with `colours` (V, 3).

    With the colours of another object (`transferred_colours`) it has a real object's surface
    statistics (photographed colours, shading, size) but the look of no object of the scene.
    `shape` was validated when it was loaded, and a positive stretch keeps it valid, so only
    the vertices and normals are made anew.
    """
    v = torch.as_tensor(shape.vertices.detach().cpu().double().numpy()
                        * np.asarray(stretch, float)[None], dtype=torch.float32)
    faces = shape.faces.detach().cpu()
    return dataclasses.replace(
        shape, vertices=v, faces=faces, normals=compute_vertex_normals(v, faces),
        vertex_colors=torch.as_tensor(np.ascontiguousarray(colours, dtype=np.float32)),
        uv=None, texture=None, name=f"chimera of {shape.name}").to(device)


def _box() -> tuple[np.ndarray, np.ndarray]:
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    f = np.array(
        [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
         [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    )  # fmt: skip
    return v, f


def _ellipsoid(n_lat: int = 10, n_lon: int = 16) -> tuple[np.ndarray, np.ndarray]:
    th = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    v = np.concatenate([ring, [[0, 0, 1], [0, 0, -1]]])
    top, bot = len(ring), len(ring) + 1
    f = []
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            f += [[a, c, b], [b, c, d]]
    last = (n_lat - 2) * n_lon
    for j in range(n_lon):
        f += [[top, j, (j + 1) % n_lon], [bot, last + (j + 1) % n_lon, last + j]]
    return v, np.array(f)


def _cylinder(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = np.stack([np.cos(a), np.sin(a)], -1)
    v = np.concatenate(
        [np.c_[ring, -np.ones(n)], np.c_[ring, np.ones(n)], [[0, 0, -1], [0, 0, 1]]]
    )
    f = []
    for j in range(n):
        k = (j + 1) % n
        f += [[j, k, n + k], [j, n + k, n + j], [2 * n, k, j], [2 * n + 1, n + j, n + k]]
    return v, np.array(f)

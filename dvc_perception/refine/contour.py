# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Sparse silhouette contour of a mesh: points on the rim, outward normals, line extents.

The refiner follows the object's outline, not its pixels: N points (100-200) on the projected
silhouette's contour, each lifted to a 3D point on the mesh (object frame) with the contour's
outward normal lifted to a 3D direction, so that the point can be re-projected at any nearby
pose (Stoiber et al., "A Sparse Gaussian Approach to Region-Based 6DoF Object Tracking", ACCV
2020; "SRT3D", IJCV 2022). Two sources:

- `render_contour`: a hard render (`render.raster.rasterize`) of the silhouette at the pose
  itself, exact for that pose; costs one rasterisation of the whole mesh.
- `ContourModel` / `build_contour_model`: SRT3D's sparse viewpoint model, the contours of
  renders from the vertices of a geodesic sphere around the object, computed once per mesh; at
  run time the view closest to the current viewing direction is taken (no rendering).

Each point also stores how far the line along its normal stays inside the silhouette (`inner_m`)
and outside it (`outer_m`), in metres at the point's depth, so lines can be limited to the
stretch where the "inside | outside" step model holds.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch

from dvc_perception.errors import EngineUnavailableError, MeshError, ShapeError, check_shape
from dvc_perception.render.mesh import Mesh
from dvc_perception.render.raster import rasterize

#: Renders nearer than this [m] are not drawn (the rasterizer's near plane).
ZNEAR_M = 0.01


@functools.lru_cache(maxsize=1)
def _load_kernels() -> ModuleType | None:
    try:
        from dvc_perception.refine import _compiled
    except ImportError:
        return None
    return _compiled


def kernels() -> ModuleType:
    """The compiled kernels (imports numba on first use).

    Raises:
        EngineUnavailableError: numba is not installed.
    """
    mod = _load_kernels()
    if mod is None:
        raise EngineUnavailableError("the refiner needs numba (a dependency of dvc_perception, "
                                     "requirements/dev.txt); it is not installed")
    return mod


@dataclass(frozen=True)
class ContourPoints:
    """Sampled contour of one silhouette.

    Attributes:
        points_obj: (N, 3) float64 points on the silhouette's rim, object frame, m.
        normals_obj: (N, 3) float64 outward contour normal (in the image plane of the render)
            rotated into the object frame; its image-plane part at a nearby pose gives the 2D
            normal there.
        inner_m: (N,) float64 length of the segment along -normal inside the silhouette, m
            (at the point's depth; px = m * f / z).
        outer_m: (N,) float64 the same outside the silhouette, capped by the render's margin.
    """

    points_obj: np.ndarray
    normals_obj: np.ndarray
    inner_m: np.ndarray
    outer_m: np.ndarray

    @property
    def num_points(self) -> int:
        """N."""
        return int(self.points_obj.shape[0])


def _empty_contour() -> ContourPoints:
    return ContourPoints(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0))


def mesh_arrays(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) float64 vertices [m] and (F, 3) int64 faces of `mesh`, on the CPU.

    Raises:
        MeshError: no vertices or no faces.
    """
    vertices = mesh.vertices.detach().to("cpu", torch.float64).numpy()
    faces = mesh.faces.detach().to("cpu", torch.int64).numpy()
    if vertices.shape[0] == 0 or faces.shape[0] == 0:
        raise MeshError(f"{mesh.name}: the refiner needs a mesh with vertices and faces, got "
                        f"{vertices.shape[0]} vertices and {faces.shape[0]} faces")
    return np.ascontiguousarray(vertices), np.ascontiguousarray(faces)


def _silhouette_contour(vertices: np.ndarray, faces: np.ndarray, R: np.ndarray, t: np.ndarray,
                        K: np.ndarray, width: int, height: int, num_points: int,
                        normal_radius_px: int, max_distance_px: int, backend: str
                        ) -> ContourPoints:
    """Rasterise the silhouette in a `width` x `height` window with intrinsics K and sample it."""
    cam = vertices @ R.T + t
    z = np.ascontiguousarray(cam[:, 2])
    px = np.empty((cam.shape[0], 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        px[:, 0] = (K[0, 0] * cam[:, 0] + K[0, 1] * cam[:, 1]) / z + K[0, 2]
        px[:, 1] = K[1, 1] * cam[:, 1] / z + K[1, 2]
    face_buf = rasterize(torch.from_numpy(px), torch.from_numpy(z), torch.from_numpy(faces),
                         width, height, znear=ZNEAR_M, backend=backend).numpy()
    mask = (face_buf >= 0).reshape(height, width)
    out_p = np.zeros((num_points, 3))
    out_n = np.zeros((num_points, 3))
    inner = np.zeros(num_points)
    outer = np.zeros(num_points)
    n = kernels().extract_contour(
        mask, face_buf, px, z, faces, K, R, t, num_points, normal_radius_px, max_distance_px,
        out_p, out_n, inner, outer)  # fmt: skip
    return ContourPoints(out_p[:n], out_n[:n], inner[:n], outer[:n])


def render_contour(mesh: Mesh, R: np.ndarray, t: np.ndarray, K: np.ndarray, *,
                   num_points: int = 200, normal_radius_px: int = 3,
                   max_distance_px: int = 64, max_window_px: int = 1024,
                   backend: str = "auto") -> ContourPoints:
    """Contour of `mesh` rendered at the object-in-camera pose (R, t) with intrinsics K.

    The silhouette is rasterised in a window around the projected bounding box (padded by
    `max_distance_px`, not clipped to any image: points outside an image are kept), scaled down
    when the box is wider than `max_window_px`.

    Args:
        mesh: the object's mesh, metres.
        R: (3, 3) rotation, object in camera.
        t: (3,) translation, m.
        K: (3, 3) pinhole intrinsics, px.
        num_points: points to sample, evenly over the contour pixels.
        normal_radius_px: radius of the disc the contour normal is estimated over, px.
        max_distance_px: cap on the inner / outer line extents, px of the window.
        max_window_px: largest rendered window side, px.
        backend: visibility pass, as `render.raster.rasterize` ("auto", "torch", "numba").

    Returns:
        `ContourPoints` with N <= num_points; N = 0 when the box reaches behind the near plane
        (a pose at or behind the camera) or the silhouette is empty.

    Raises:
        MeshError: an empty mesh.
        ShapeError: R, t or K of the wrong shape.
    """
    vertices, faces = mesh_arrays(mesh)
    R = _as_pose(R, t)
    t = np.asarray(t, np.float64).reshape(3)
    K = np.asarray(K, np.float64)
    check_shape(K, "3,3", name="K")
    lo, hi = vertices.min(0), vertices.max(0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])]) @ R.T + t
    if not np.all(corners[:, 2] > ZNEAR_M) or not np.all(np.isfinite(corners)):
        return _empty_contour()
    u = (K[0, 0] * corners[:, 0] + K[0, 1] * corners[:, 1]) / corners[:, 2] + K[0, 2]
    v = K[1, 1] * corners[:, 1] / corners[:, 2] + K[1, 2]
    pad = max_distance_px + normal_radius_px + 2
    side = max(u.max() - u.min(), v.max() - v.min())
    scale = min(1.0, max_window_px / max(side, 1.0))
    pad_s = int(math.ceil(pad))
    x0 = math.floor(u.min() * scale) - pad_s
    y0 = math.floor(v.min() * scale) - pad_s
    width = int(math.ceil(u.max() * scale)) + pad_s - x0 + 1
    height = int(math.ceil(v.max() * scale)) + pad_s - y0 + 1
    Kw = K.copy()
    Kw[:2] *= scale
    Kw[0, 2] -= x0
    Kw[1, 2] -= y0
    contour = _silhouette_contour(vertices, faces, R, t, Kw, width, height, num_points,
                                  normal_radius_px, max_distance_px, backend)
    return contour


def _as_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    R = np.asarray(R, np.float64)
    check_shape(R, "3,3", name="R")
    check_shape(np.asarray(t), "3", name="t")
    return R


# ------------------------------------------------------------------------------------------
# Sparse viewpoint model


def geodesic_directions(subdivisions: int) -> np.ndarray:
    """Unit vectors of a subdivided icosahedron: (10 * 4^s + 2, 3), about 63 / 2^s deg apart.

    ``subdivisions`` 2, 3, 4 give 162, 642, 2562 directions (~16, ~8, ~4 deg spacing).

    Raises:
        ShapeError: a negative count.
    """
    if subdivisions < 0:
        raise ShapeError(f"subdivisions: expected >= 0, got {subdivisions}")
    g = (1.0 + math.sqrt(5.0)) / 2.0
    verts = [(-1, g, 0), (1, g, 0), (-1, -g, 0), (1, -g, 0), (0, -1, g), (0, 1, g),
             (0, -1, -g), (0, 1, -g), (g, 0, -1), (g, 0, 1), (-g, 0, -1), (-g, 0, 1)]
    tris = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
            (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8),
            (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    points = [np.asarray(p, np.float64) / np.linalg.norm(p) for p in verts]
    for _ in range(subdivisions):
        mid: dict[tuple[int, int], int] = {}
        new = []
        for a, b, c in tris:
            ab, bc, ca = (_midpoint(points, mid, a, b), _midpoint(points, mid, b, c),
                          _midpoint(points, mid, c, a))
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        tris = new
    return np.stack(points)


def _midpoint(points: list[np.ndarray], mid: dict[tuple[int, int], int], a: int, b: int
              ) -> int:
    """Index of the unit vector halfway between points a and b, appended once per edge."""
    key = (min(a, b), max(a, b))
    if key not in mid:
        m = points[a] + points[b]
        points.append(m / np.linalg.norm(m))
        mid[key] = len(points) - 1
    return mid[key]


def look_at_origin(direction: np.ndarray, distance_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Pose (R (3, 3), t (3,) m) of an object seen from ``distance_m * direction`` (object frame).

    The camera's optical axis points at the object origin; its image x axis is horizontal with
    respect to the object's y axis (or z, when the view is along y).
    """
    zc = -np.asarray(direction, np.float64)
    zc = zc / np.linalg.norm(zc)
    up = np.array([0.0, 1.0, 0.0]) if abs(zc[1]) < 0.9 else np.array([0.0, 0.0, 1.0])
    xc = np.cross(up, zc)
    xc /= np.linalg.norm(xc)
    yc = np.cross(zc, xc)
    R = np.stack([xc, yc, zc])  # rows: camera axes in the object frame
    return R, np.array([0.0, 0.0, float(distance_m)])


@dataclass(frozen=True)
class ContourModel:
    """SRT3D's sparse viewpoint model of one mesh: contour points from M viewing directions.

    Attributes:
        name: the mesh's name.
        view_directions: (M, 3) float64 unit vectors from the object origin towards the camera,
            object frame.
        points_obj: (M, N, 3) float64 contour points of each view, m (rows past `counts` zero).
        normals_obj: (M, N, 3) float64 lifted outward normals.
        inner_m: (M, N) float64 inner line extents, m.
        outer_m: (M, N) float64 outer line extents, m.
        counts: (M,) int64 valid points of each view.
        radius_m: distance of the farthest vertex from the object origin, m.
    """

    name: str
    view_directions: np.ndarray
    points_obj: np.ndarray
    normals_obj: np.ndarray
    inner_m: np.ndarray
    outer_m: np.ndarray
    counts: np.ndarray
    radius_m: float

    def view_index(self, R: np.ndarray, t: np.ndarray) -> int:
        """Index of the stored view closest to the viewing direction of the pose (R, t)."""
        camera_obj = -np.asarray(R).T @ np.asarray(t)
        norm = float(np.linalg.norm(camera_obj))
        if not norm > 0:
            return 0
        return int(np.argmax(self.view_directions @ (camera_obj / norm)))

    def contour(self, R: np.ndarray, t: np.ndarray, num_points: int | None = None
                ) -> ContourPoints:
        """The contour of the view closest to the pose (R (3, 3), t (3,) m).

        With `num_points` below the stored count, that many points evenly spaced in the
        stored order (which follows the rendered contour pixels' row-major order).
        """
        i = self.view_index(R, t)
        n = int(self.counts[i])
        sel = slice(0, n)
        if num_points is not None and 0 < num_points < n:
            sel = ((2 * np.arange(num_points) + 1) * n) // (2 * num_points)
        return ContourPoints(self.points_obj[i, sel], self.normals_obj[i, sel],
                             self.inner_m[i, sel], self.outer_m[i, sel])


def build_contour_model(mesh: Mesh, *, num_points: int = 200, subdivisions: int = 3,
                        image_size_px: int = 512, distance_m: float = 0.8,
                        normal_radius_px: int = 3, backend: str = "auto") -> ContourModel:
    """Render `mesh` from every direction of `geodesic_directions(subdivisions)` and sample.

    Each view is a hard render of `image_size_px` square, the object filling about 80 % of it,
    from `distance_m` (at least three times the object's radius), looking at the origin.
    Costs one rasterisation per view (642 views for the default: ~2 s for a 45k-face mesh).

    Raises:
        MeshError: an empty mesh.
        ShapeError: a bad count or size.
    """
    if num_points < 1 or image_size_px < 32 or not distance_m > 0:
        raise ShapeError(f"build_contour_model: expected num_points >= 1, image_size_px >= 32,"
                         f" distance_m > 0, got {num_points}, {image_size_px}, {distance_m}")
    vertices, faces = mesh_arrays(mesh)
    radius = float(np.linalg.norm(vertices, axis=1).max())
    distance = max(float(distance_m), 3.0 * radius)
    f = 0.4 * image_size_px * (distance - radius) / max(radius, 1e-9)
    c = (image_size_px - 1) / 2.0
    K = np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
    dirs = geodesic_directions(subdivisions)
    M = dirs.shape[0]
    P = np.zeros((M, num_points, 3))
    Nn = np.zeros((M, num_points, 3))
    inner = np.zeros((M, num_points))
    outer = np.zeros((M, num_points))
    counts = np.zeros(M, np.int64)
    max_dist = image_size_px // 8
    for i, d in enumerate(dirs):
        R, t = look_at_origin(d, distance)
        cp = _silhouette_contour(vertices, faces, R, t, K, image_size_px, image_size_px,
                                 num_points, normal_radius_px, max_dist, backend)
        n = cp.num_points
        P[i, :n], Nn[i, :n], inner[i, :n], outer[i, :n] = (
            cp.points_obj, cp.normals_obj, cp.inner_m, cp.outer_m)
        counts[i] = n
    return ContourModel(mesh.name, dirs, P, Nn, inner, outer, counts, radius)

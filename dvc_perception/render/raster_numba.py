# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Compiled (numba) hard z-buffer, CPU only; the same result as `raster.rasterize_faces`.

Optional: numba is a development / data-generation dependency (``requirements/dev.txt``). Without
it the torch rasterizer is used. The kernel loops over faces and their pixel bounding boxes
(pixel centres at integer coordinates) and keeps, per pixel, the nearest face and its
screen-space barycentrics. Ties in depth go to the larger face index, as in the torch path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from dvc_perception.errors import EngineUnavailableError


def numba_available() -> bool:
    """Whether numba can be imported here."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _kernel() -> Callable[..., Any]:
    """Compile the kernel once per process (numba caches the machine code on disk too)."""
    try:
        import numba
    except ImportError as err:
        raise EngineUnavailableError(f"numba is not installed: {err}") from err

    @numba.njit(cache=True, nogil=True)
    def kernel(px, z, faces, width, height, znear, zbuf, fbuf, bbuf):  # pragma: no cover
        for f in range(faces.shape[0]):
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            z0, z1, z2 = z[i0], z[i1], z[i2]
            if z0 <= znear or z1 <= znear or z2 <= znear:
                continue
            x0, y0 = px[i0, 0], px[i0, 1]
            x1, y1 = px[i1, 0], px[i1, 1]
            x2, y2 = px[i2, 0], px[i2, 1]
            area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
            if not (abs(area2) > 1e-12):
                continue
            inv = 1.0 / area2
            xmin = max(int(np.ceil(min(x0, x1, x2))), 0)
            xmax = min(int(np.floor(max(x0, x1, x2))), width - 1)
            ymin = max(int(np.ceil(min(y0, y1, y2))), 0)
            ymax = min(int(np.floor(max(y0, y1, y2))), height - 1)
            iz0, iz1, iz2 = 1.0 / z0, 1.0 / z1, 1.0 / z2
            for y in range(ymin, ymax + 1):
                dy = y - y0
                for x in range(xmin, xmax + 1):
                    dx = x - x0
                    b1 = (dx * (y2 - y0) - dy * (x2 - x0)) * inv
                    if b1 < 0.0:
                        continue
                    b2 = ((x1 - x0) * dy - (y1 - y0) * dx) * inv
                    if b2 < 0.0:
                        continue
                    b0 = 1.0 - b1 - b2
                    if b0 < 0.0:
                        continue
                    d = 1.0 / (b0 * iz0 + b1 * iz1 + b2 * iz2)
                    p = y * width + x
                    if d < zbuf[p] or (d == zbuf[p] and f > fbuf[p]):
                        zbuf[p] = d
                        fbuf[p] = f
                        bbuf[p, 0] = b0
                        bbuf[p, 1] = b1
                        bbuf[p, 2] = b2

    return kernel


@functools.lru_cache(maxsize=1)
def _shade_kernel() -> Callable[..., Any]:
    import numba

    @numba.njit(cache=True, nogil=True)
    def kernel(
        fbuf,
        bbuf,
        faces,
        face_mesh,
        face_offset,
        z,
        attr,
        tex,
        tex_off,
        tex_h,
        tex_w,
        ambient,
        diffuse,
        light,
        shade,
        background,
        color,
        depth,
        inst,
        face_local,
    ):  # pragma: no cover
        for p in range(fbuf.shape[0]):
            f = fbuf[p]
            if f < 0:
                color[p, 0] = background[0]
                color[p, 1] = background[1]
                color[p, 2] = background[2]
                continue
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            w0, w1, w2 = bbuf[p, 0] / z[i0], bbuf[p, 1] / z[i1], bbuf[p, 2] / z[i2]
            s = w0 + w1 + w2
            depth[p] = 1.0 / s
            w0, w1, w2 = w0 / s, w1 / s, w2 / s
            m = face_mesh[f]
            inst[p] = m
            face_local[p] = f - face_offset[m]
            # Scalars, not small arrays: an allocation per pixel would dominate the run time.
            r = w0 * attr[i0, 0] + w1 * attr[i1, 0] + w2 * attr[i2, 0]
            g = w0 * attr[i0, 1] + w1 * attr[i1, 1] + w2 * attr[i2, 1]
            b = w0 * attr[i0, 2] + w1 * attr[i1, 2] + w2 * attr[i2, 2]
            th, tw = tex_h[m], tex_w[m]
            if tw > 0:  # bilinear, border clamp: torch grid_sample(align_corners=False)
                u = w0 * attr[i0, 6] + w1 * attr[i1, 6] + w2 * attr[i2, 6]
                v = w0 * attr[i0, 7] + w1 * attr[i1, 7] + w2 * attr[i2, 7]
                x = min(max(u * tw - 0.5, 0.0), tw - 1.0)
                y = min(max((1.0 - v) * th - 0.5, 0.0), th - 1.0)
                x0, y0 = int(np.floor(x)), int(np.floor(y))
                x1, y1 = min(x0 + 1, tw - 1), min(y0 + 1, th - 1)
                fx, fy = x - x0, y - y0
                base = tex_off[m]
                q00, q01 = base + y0 * tw + x0, base + y0 * tw + x1
                q10, q11 = base + y1 * tw + x0, base + y1 * tw + x1
                c00, c01 = (1.0 - fx) * (1.0 - fy), fx * (1.0 - fy)
                c10, c11 = (1.0 - fx) * fy, fx * fy
                r *= c00 * tex[q00, 0] + c01 * tex[q01, 0] + c10 * tex[q10, 0] + c11 * tex[q11, 0]
                g *= c00 * tex[q00, 1] + c01 * tex[q01, 1] + c10 * tex[q10, 1] + c11 * tex[q11, 1]
                b *= c00 * tex[q00, 2] + c01 * tex[q01, 2] + c10 * tex[q10, 2] + c11 * tex[q11, 2]
            if shade:
                nx = w0 * attr[i0, 3] + w1 * attr[i1, 3] + w2 * attr[i2, 3]
                ny = w0 * attr[i0, 4] + w1 * attr[i1, 4] + w2 * attr[i2, 4]
                nz = w0 * attr[i0, 5] + w1 * attr[i1, 5] + w2 * attr[i2, 5]
                nn = np.sqrt(nx * nx + ny * ny + nz * nz)
                if nn < 1e-9:
                    nn = 1e-9
                lam = (nx * light[0] + ny * light[1] + nz * light[2]) / nn
                k = ambient + diffuse * max(lam, 0.0)
                r, g, b = (
                    min(max(r * k, 0.0), 1.0),
                    min(max(g * k, 0.0), 1.0),
                    min(max(b * k, 0.0), 1.0),
                )
            color[p, 0] = r
            color[p, 1] = g
            color[p, 2] = b

    return kernel


def shade_numba(
    face_buf: np.ndarray,
    bary: np.ndarray,
    faces: np.ndarray,
    face_mesh: np.ndarray,
    face_offset: np.ndarray,
    z: np.ndarray,
    attr: np.ndarray,
    textures: list[np.ndarray | None],
    ambient: float,
    diffuse: float,
    light: np.ndarray,
    shade: bool,
    background: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Interpolate, texture and shade every pixel in one pass (the hard mode of `render`).

    Args:
        face_buf: (P,) int64 face per pixel, -1 for none (from `rasterize_faces_numba`).
        bary: (P, 3) float64 screen-space barycentrics.
        faces: (F, 3) int64 vertex indices (all meshes concatenated).
        face_mesh: (F,) int64 mesh index of each face.
        face_offset: (M,) int64 index of each mesh's first face.
        z: (V,) float64 vertex depth [m].
        attr: (V, 8) float64: albedo RGB, camera-frame normal, uv.
        textures: per mesh an (Ht, Wt, 3) float texture in [0, 1] or None.
        ambient: ambient light term.
        diffuse: directional light term.
        light: (3,) unit direction towards the light, camera frame.
        shade: apply lighting.
        background: (3,) RGB where nothing is hit.

    Returns:
        color (P, 3) float64, depth (P,) float64 [m] (NaN = nothing), instance (P,) int64,
        face index within its mesh (P,) int64 (-1 = nothing).
    """
    n = face_buf.shape[0]
    n_mesh = face_offset.shape[0]
    tex_h = np.zeros(n_mesh, dtype=np.int64)
    tex_w = np.zeros(n_mesh, dtype=np.int64)
    tex_off = np.zeros(n_mesh, dtype=np.int64)
    chunks = [np.zeros((1, 3))]
    total = 1
    for i, tex in enumerate(textures):
        if tex is not None:
            tex_h[i], tex_w[i] = tex.shape[0], tex.shape[1]
            tex_off[i] = total
            chunks.append(np.asarray(tex, dtype=np.float64).reshape(-1, 3))
            total += tex.shape[0] * tex.shape[1]
    color = np.empty((n, 3))
    depth = np.full(n, np.nan)
    inst = np.full(n, -1, dtype=np.int64)
    face_local = np.full(n, -1, dtype=np.int64)
    _shade_kernel()(
        face_buf, np.ascontiguousarray(bary, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int64), np.ascontiguousarray(face_mesh),
        np.ascontiguousarray(face_offset, dtype=np.int64),
        np.ascontiguousarray(z, dtype=np.float64), np.ascontiguousarray(attr, dtype=np.float64),
        np.concatenate(chunks), tex_off, tex_h, tex_w, float(ambient), float(diffuse),
        np.ascontiguousarray(light, dtype=np.float64), bool(shade),
        np.ascontiguousarray(background, dtype=np.float64), color, depth, inst, face_local,
    )  # fmt: skip
    return color, depth, inst, face_local


def rasterize_faces_numba(
    px: np.ndarray, z: np.ndarray, faces: np.ndarray, width: int, height: int, znear: float = 0.01
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hard z-buffer with numba.

    Args:
        px: (V, 2) float64 projected vertices [px].
        z: (V,) float64 vertex depth [m].
        faces: (F, 3) int64 vertex indices.
        width: W [px].
        height: H [px].
        znear: faces with a vertex nearer than this [m] are dropped.

    Returns:
        face_buf (H * W,) int64 (-1 = nothing), depth (H * W,) float64 [m] (inf = nothing),
        barycentrics (H * W, 3) float64, screen space (not perspective-corrected).

    Raises:
        EngineUnavailableError: numba is not installed.
    """
    hw = width * height
    zbuf = np.full(hw, np.inf)
    fbuf = np.full(hw, -1, dtype=np.int64)
    bbuf = np.zeros((hw, 3))
    _kernel()(
        np.ascontiguousarray(px, dtype=np.float64),
        np.ascontiguousarray(z, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int64),
        int(width),
        int(height),
        float(znear),
        zbuf,
        fbuf,
        bbuf,
    )
    return fbuf, zbuf, bbuf

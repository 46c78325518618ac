# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Triangle meshes: PLY (ASCII and binary, per-vertex colour and normals) and OBJ (+ texture).

Every `Mesh` is in metres; the file's unit is given explicitly (`unit="mm"` for the BOP / LM-O
meshes), never guessed. Loading validates the mesh (see `validate_mesh`) and raises `MeshError`
naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dvc_perception.errors import MeshError

#: Scale from each supported unit to metres.
UNIT_SCALE: dict[str, float] = {"m": 1.0, "cm": 0.01, "mm": 0.001}


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh in metres, in its object frame.

    Attributes:
        vertices: (V, 3) float, metres, object frame.
        faces: (F, 3) int64 vertex indices, counter-clockwise seen from outside.
        normals: (V, 3) float unit vertex normals (object frame), or None.
        vertex_colors: (V, 3) float RGB in [0, 1], or None.
        uv: (V, 2) float texture coordinates (u right, v up, OBJ convention), or None.
        texture: (Ht, Wt, 3) float RGB in [0, 1] (row 0 is the top of the image), or None.
        name: a label for error messages (usually the file name).
    """

    vertices: Tensor
    faces: Tensor
    normals: Tensor | None = None
    vertex_colors: Tensor | None = None
    uv: Tensor | None = None
    texture: Tensor | None = None
    name: str = "mesh"

    @property
    def num_vertices(self) -> int:
        """Number of vertices V."""
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        """Number of triangles F."""
        return int(self.faces.shape[0])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Mesh:
        """A copy on `device` with floating tensors in `dtype` (faces stay int64)."""

        def conv(x: Tensor | None, floating: bool = True) -> Tensor | None:
            if x is None:
                return None
            return x.to(device=device, dtype=dtype if floating else None)

        return dataclasses.replace(
            self,
            vertices=conv(self.vertices),
            faces=conv(self.faces, floating=False),
            normals=conv(self.normals),
            vertex_colors=conv(self.vertex_colors),
            uv=conv(self.uv),
            texture=conv(self.texture),
        )

    def with_vertices(self, vertices: Tensor) -> Mesh:
        """The same mesh with other vertex positions (V, 3) m, e.g. ones that require grad."""
        if tuple(vertices.shape) != tuple(self.vertices.shape):
            raise MeshError(
                f"{self.name}: new vertices must have shape {tuple(self.vertices.shape)}, "
                f"got {tuple(vertices.shape)}"
            )
        return dataclasses.replace(self, vertices=vertices)

    def face_areas(self) -> Tensor:
        """(F,) triangle areas in m^2."""
        v = self.vertices[self.faces]
        return 0.5 * torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).norm(dim=-1)


def compute_vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted vertex normals. vertices (V, 3), faces (F, 3). Returns (V, 3) unit vectors."""
    v = vertices[faces]
    fn = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])  # length = 2 * area
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(0, faces[:, k], fn)
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def validate_mesh(mesh: Mesh, *, allow_non_manifold: bool = False) -> None:
    """Check what the renderer relies on.

    Checked: at least one vertex and one face; vertices (V, 3) finite (no NaN / inf); faces (F, 3)
    with indices in ``[0, V)``; no face repeating a vertex index (degenerate); no edge shared by
    more than two faces (a non-manifold edge); attribute arrays with one row per vertex. Not
    checked: watertightness (open meshes, e.g. a background plane, are fine) and zero-area faces
    with distinct indices (harmless for rasterization).

    Args:
        mesh: the mesh to check.
        allow_non_manifold: skip the non-manifold edge check (the renderer itself copes with
            such edges; e.g. the decimated BOP ``models_eval`` mesh of LM-O object 12 has one).

    Raises:
        MeshError: naming the mesh and the first failed check.
    """
    name = mesh.name
    v, f = mesh.vertices, mesh.faces
    if v.dim() != 2 or v.shape[1] != 3:
        raise MeshError(f"{name}: vertices must be (V, 3), got {tuple(v.shape)}")
    if f.dim() != 2 or f.shape[1] != 3:
        raise MeshError(f"{name}: faces must be (F, 3), got {tuple(f.shape)}")
    if v.shape[0] == 0 or f.shape[0] == 0:
        raise MeshError(f"{name}: empty mesh ({v.shape[0]} vertices, {f.shape[0]} faces)")
    if not bool(torch.isfinite(v).all()):
        bad = int((~torch.isfinite(v)).any(dim=1).sum())
        raise MeshError(f"{name}: {bad} vertices are NaN or infinite")
    if f.dtype != torch.int64:
        raise MeshError(f"{name}: faces must be int64, got {f.dtype}")
    lo, hi = int(f.min()), int(f.max())
    if lo < 0 or hi >= v.shape[0]:
        raise MeshError(
            f"{name}: face indices must lie in [0, {v.shape[0]}), got range [{lo}, {hi}]"
        )
    degenerate = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
    if bool(degenerate.any()):
        raise MeshError(
            f"{name}: {int(degenerate.sum())} degenerate faces repeat a vertex index "
            f"(first: face {int(degenerate.nonzero()[0, 0])})"
        )
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(dim=1).values
    _, counts = torch.unique(edges[:, 0] * v.shape[0] + edges[:, 1], return_counts=True)
    if not allow_non_manifold and bool((counts > 2).any()):
        raise MeshError(
            f"{name}: non-manifold: {int((counts > 2).sum())} edges are shared by more than "
            f"two faces"
        )
    for attr, width in (("normals", 3), ("vertex_colors", 3), ("uv", 2)):
        a = getattr(mesh, attr)
        if a is not None and tuple(a.shape) != (v.shape[0], width):
            raise MeshError(
                f"{name}: {attr} must be ({v.shape[0]}, {width}), got {tuple(a.shape)}"
            )
    if mesh.texture is not None and mesh.uv is None:
        raise MeshError(f"{name}: a texture needs uv coordinates")


def load_mesh(path: str | Path, unit: str, *, allow_non_manifold: bool = False) -> Mesh:
    """Load a PLY or OBJ mesh and convert it to metres.

    Args:
        path: a ``.ply`` (ASCII or binary, triangles or polygons, optional per-vertex normals
            ``nx ny nz`` and colours ``red green blue``) or ``.obj`` file (``v``, ``vt``, ``vn``,
            ``f``; the ``map_Kd`` texture of the first material of its ``mtllib``, via OpenCV).
        unit: the file's length unit, one of ``UNIT_SCALE`` ("m", "cm", "mm").
        allow_non_manifold: passed to `validate_mesh`.

    Returns:
        The validated mesh in metres (float32). Normals are computed when the file has none.

    Raises:
        MeshError: missing file, unknown unit or format, malformed content, or a failed
            `validate_mesh` check.
    """
    path = Path(path)
    if unit not in UNIT_SCALE:
        raise MeshError(f"{path}: unknown unit {unit!r}; expected one of {sorted(UNIT_SCALE)}")
    if not path.is_file():
        raise MeshError(f"mesh file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".ply":
            arrays = _read_ply(path)
        elif suffix == ".obj":
            arrays = _read_obj(path)
        else:
            raise MeshError(f"{path}: unknown mesh format {suffix!r}; expected .ply or .obj")
    except (ValueError, IndexError, KeyError, UnicodeDecodeError) as err:
        raise MeshError(f"{path}: malformed mesh file: {err}") from err
    return mesh_from_arrays(
        **arrays, scale=UNIT_SCALE[unit], name=path.name, allow_non_manifold=allow_non_manifold
    )


def mesh_from_arrays(
    vertices: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray | None = None,
    vertex_colors: np.ndarray | None = None,
    uv: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    *,
    scale: float = 1.0,
    name: str = "mesh",
    allow_non_manifold: bool = False,
) -> Mesh:
    """Build and validate a float32 `Mesh` from numpy arrays.

    Args:
        vertices: (V, 3) positions in the source unit; multiplied by `scale` to get metres.
        faces: (F, 3) integer vertex indices.
        normals: (V, 3) vertex normals (normalised here) or None (computed).
        vertex_colors: (V, 3) RGB, uint8 (0..255) or float in [0, 1], or None.
        uv: (V, 2) texture coordinates or None.
        texture: (Ht, Wt, 3) RGB image, uint8 or float in [0, 1], or None.
        scale: metres per source unit.
        name: label for error messages.
        allow_non_manifold: passed to `validate_mesh`.

    Raises:
        MeshError: when `validate_mesh` fails.
    """
    v = torch.as_tensor(np.asarray(vertices, dtype=np.float64) * scale, dtype=torch.float32)
    f = torch.as_tensor(np.asarray(faces, dtype=np.int64).reshape(-1, 3))

    def colour(a: np.ndarray | None) -> Tensor | None:
        if a is None:
            return None
        a = np.asarray(a)
        a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
        return torch.as_tensor(np.ascontiguousarray(a))

    n = None if normals is None else torch.as_tensor(np.asarray(normals, dtype=np.float32))
    mesh = Mesh(
        vertices=v,
        faces=f,
        normals=n,
        vertex_colors=colour(vertex_colors),
        uv=None if uv is None else torch.as_tensor(np.asarray(uv, dtype=np.float32)),
        texture=colour(texture),
        name=name,
    )
    validate_mesh(mesh, allow_non_manifold=allow_non_manifold)
    if n is None:
        n = compute_vertex_normals(v, f)
    else:
        n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return dataclasses.replace(mesh, normals=n)


# --------------------------------------------------------------------------------------------
# PLY

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def _read_ply(path: Path) -> dict[str, np.ndarray | None]:
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise MeshError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    body_start = data.index(b"\n", end) + 1
    header = data[:end].decode("ascii").splitlines()
    fmt = ""
    elements: list[tuple[str, int, list[tuple[str, ...]]]] = []
    for line in header:
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            if not elements:
                raise MeshError(f"{path}: property before any element")
            elements[-1][2].append(tuple(tok[1:]))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise MeshError(f"{path}: unsupported PLY format {fmt!r}")
    values: dict[str, dict[str, np.ndarray]] = {}
    if fmt == "ascii":
        tokens = data[body_start:].split()
        pos = 0
        for name, count, props in elements:
            if any(p[0] == "list" for p in props):
                if len(props) != 1:
                    raise MeshError(f"{path}: element {name!r} mixes lists and scalars")
                rows, pos = _ascii_lists(tokens, pos, count)
                values[name] = {props[0][-1]: rows}
            else:
                n = count * len(props)
                arr = np.array(tokens[pos : pos + n], dtype=np.float64).reshape(count, len(props))
                pos += n
                values[name] = {p[1]: arr[:, i] for i, p in enumerate(props)}
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        buf = memoryview(data)[body_start:]
        pos = 0
        for name, count, props in elements:
            if any(p[0] == "list" for p in props):
                if len(props) != 1:
                    raise MeshError(f"{path}: element {name!r} mixes lists and scalars")
                _, ctype, itype, pname = props[0]
                rows, pos = _binary_lists(
                    buf, pos, count, order + _PLY_TYPES[ctype], order + _PLY_TYPES[itype]
                )
                values[name] = {pname: rows}
            else:
                dt = np.dtype([(p[1], order + _PLY_TYPES[p[0]]) for p in props])
                arr = np.frombuffer(buf, dtype=dt, count=count, offset=pos)
                pos += dt.itemsize * count
                values[name] = {p[1]: arr[p[1]] for p in props}
    vert = values.get("vertex")
    face = values.get("face")
    if vert is None or face is None or not {"x", "y", "z"} <= set(vert):
        raise MeshError(f"{path}: PLY needs 'vertex' (x, y, z) and 'face' elements")
    faces = next(iter(face.values()))
    out: dict[str, np.ndarray | None] = {
        "vertices": np.stack([vert["x"], vert["y"], vert["z"]], axis=1),
        "faces": faces,
        "normals": None,
        "vertex_colors": None,
    }
    if {"nx", "ny", "nz"} <= set(vert):
        out["normals"] = np.stack([vert["nx"], vert["ny"], vert["nz"]], axis=1)
    if {"red", "green", "blue"} <= set(vert):
        rgb = np.stack([vert["red"], vert["green"], vert["blue"]], axis=1)
        out["vertex_colors"] = rgb.astype(np.float32) / 255.0
    return out


def _triangulate(polys: list[np.ndarray]) -> np.ndarray:
    tris = [p[[0, i, i + 1]] for p in polys for i in range(1, len(p) - 1)]
    return np.array(tris, dtype=np.int64).reshape(-1, 3)


def _ascii_lists(tokens: list[bytes], pos: int, count: int) -> tuple[np.ndarray, int]:
    # Fast path: all triangles ("3 a b c" rows).
    n = 4 * count
    arr = np.array(tokens[pos : pos + n], dtype=np.int64).reshape(-1, 4) if count else None
    if arr is not None and arr.shape[0] == count and bool((arr[:, 0] == 3).all()):
        return arr[:, 1:], pos + n
    polys = []
    for _ in range(count):
        k = int(tokens[pos])
        polys.append(np.array(tokens[pos + 1 : pos + 1 + k], dtype=np.int64))
        pos += 1 + k
    return _triangulate(polys), pos


def _binary_lists(
    buf: memoryview, pos: int, count: int, ctype: str, itype: str
) -> tuple[np.ndarray, int]:
    cdt, idt = np.dtype(ctype), np.dtype(itype)
    # Fast path: all triangles, fixed record size.
    rec = np.dtype([("n", cdt), ("i", idt, (3,))])
    if count and len(buf) - pos >= rec.itemsize * count:
        arr = np.frombuffer(buf, dtype=rec, count=count, offset=pos)
        if bool((arr["n"] == 3).all()):
            return arr["i"].astype(np.int64), pos + rec.itemsize * count
    polys = []
    for _ in range(count):
        k = int(np.frombuffer(buf, dtype=cdt, count=1, offset=pos)[0])
        pos += cdt.itemsize
        polys.append(np.frombuffer(buf, dtype=idt, count=k, offset=pos).astype(np.int64))
        pos += idt.itemsize * k
    return _triangulate(polys), pos


# --------------------------------------------------------------------------------------------
# OBJ


def _read_obj(path: Path) -> dict[str, np.ndarray | None]:
    pos: list[list[float]] = []
    tex: list[list[float]] = []
    nor: list[list[float]] = []
    corners: list[tuple[int, int, int]] = []  # (v, vt, vn), 0-based, -1 when absent
    tris: list[list[int]] = []
    corner_index: dict[tuple[int, int, int], int] = {}
    mtllib: str | None = None
    for line in path.read_text().splitlines():
        tok = line.split()
        if not tok or tok[0].startswith("#"):
            continue
        key = tok[0]
        if key == "v":
            pos.append([float(x) for x in tok[1:4]])
        elif key == "vt":
            tex.append([float(x) for x in tok[1:3]])
        elif key == "vn":
            nor.append([float(x) for x in tok[1:4]])
        elif key == "mtllib" and mtllib is None:
            mtllib = line.split(None, 1)[1].strip()
        elif key == "f":
            poly = []
            for c in tok[1:]:
                parts = c.split("/")
                idx = []
                for j, count in enumerate((len(pos), len(tex), len(nor))):
                    s = parts[j] if j < len(parts) else ""
                    if s == "":
                        idx.append(-1)
                    else:
                        i = int(s)
                        idx.append(i - 1 if i > 0 else count + i)
                key3 = (idx[0], idx[1], idx[2])
                if key3 not in corner_index:
                    corner_index[key3] = len(corners)
                    corners.append(key3)
                poly.append(corner_index[key3])
            tris.extend([poly[0], poly[i], poly[i + 1]] for i in range(1, len(poly) - 1))
    if not corners:
        return {"vertices": np.zeros((0, 3)), "faces": np.zeros((0, 3), dtype=np.int64)}
    c = np.array(corners, dtype=np.int64)
    # Order the split vertices by (v, vt, vn): a file whose corners are all "i/i/i" keeps its
    # vertex order (and indices) exactly.
    order = np.lexsort((c[:, 2], c[:, 1], c[:, 0]))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    c = c[order]
    tris = rank[np.asarray(tris, dtype=np.int64)].tolist()
    for arr, col, what in ((pos, 0, "v"), (tex, 1, "vt"), (nor, 2, "vn")):
        if bool((c[:, col] >= len(arr)).any()) or bool((c[:, col] < -1).any()):
            raise MeshError(f"{path}: a face references a missing '{what}' entry")
    if bool((c[:, 0] < 0).any()):
        raise MeshError(f"{path}: a face corner has no vertex index")
    out: dict[str, np.ndarray | None] = {
        "vertices": np.asarray(pos, dtype=np.float64)[c[:, 0]],
        "faces": np.asarray(tris, dtype=np.int64),
        "normals": None,
        "uv": None,
        "texture": None,
    }
    if nor and bool((c[:, 2] >= 0).all()):
        out["normals"] = np.asarray(nor, dtype=np.float64)[c[:, 2]]
    if tex and bool((c[:, 1] >= 0).all()):
        out["uv"] = np.asarray(tex, dtype=np.float64)[c[:, 1]]
        if mtllib is not None:
            out["texture"] = _read_mtl_texture(path.parent / mtllib)
    return out


def _read_mtl_texture(mtl_path: Path) -> np.ndarray | None:
    """RGB uint8 image of the first ``map_Kd`` in `mtl_path`; None if the MTL names none."""
    if not mtl_path.is_file():
        raise MeshError(f"material file not found: {mtl_path}")
    for line in mtl_path.read_text().splitlines():
        tok = line.split(None, 1)
        if len(tok) == 2 and tok[0] == "map_Kd":
            image_path = mtl_path.parent / tok[1].strip().split()[-1]
            return read_rgb_image(image_path)
    return None


def read_rgb_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB image read with OpenCV. Raises MeshError when unreadable."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MeshError(f"texture image not found or unreadable: {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def write_obj(mesh: Mesh, path: str | Path, texture_name: str | None = None) -> None:
    """Write `mesh` (metres) as OBJ; with `texture_name`, also an MTL and the texture PNG.

    Vertices are written in metres with 6 decimals (micrometre resolution).
    """
    import cv2

    path = Path(path)
    v = mesh.vertices.detach().cpu().double().numpy()
    lines = [f"# {mesh.name}: written by dvc_perception.render.mesh.write_obj (metres)"]
    has_tex = texture_name is not None and mesh.uv is not None and mesh.texture is not None
    if has_tex:
        lines.append(f"mtllib {path.stem}.mtl")
        lines.append("usemtl material0")
    lines += [f"v {a:.6f} {b:.6f} {c:.6f}" for a, b, c in v]
    if has_tex:
        lines += [f"vt {a:.6f} {b:.6f}" for a, b in mesh.uv.detach().cpu().double().numpy()]
    if mesh.normals is not None:
        lines += [f"vn {a:.5f} {b:.5f} {c:.5f}" for a, b, c in mesh.normals.cpu().numpy()]
    f = mesh.faces.cpu().numpy() + 1
    for a, b, c in f:
        if has_tex:
            lines.append(f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}")
        else:
            lines.append(f"f {a}//{a} {b}//{b} {c}//{c}")
    path.write_text("\n".join(lines) + "\n")
    if has_tex:
        (path.parent / f"{path.stem}.mtl").write_text(
            f"newmtl material0\nKa 1 1 1\nKd 1 1 1\nmap_Kd {texture_name}\n"
        )
        rgb = (mesh.texture.detach().cpu().numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(path.parent / texture_name), np.ascontiguousarray(rgb[:, :, ::-1]))

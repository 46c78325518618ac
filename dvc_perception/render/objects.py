# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Object descriptions: ``config/objects/<id>.yaml`` -> `ObjectDescription`.

YAML keys (lengths in metres)::

    id: demo_object                # ROS name token: [A-Za-z_][A-Za-z0-9_]*
    mesh: demo_object.obj          # relative to the YAML's directory, or ${DVC_SHARED_DATA}/...
    unit: m                        # the mesh file's unit: m, cm or mm
    mesh_sha256: 3f0c...           # optional: sha256 of the mesh file, checked when loading; it
                                   # identifies the object in a dataset whatever the file's name
    diameter: 0.117                # [m] max distance between two vertices (computed if absent)
    symmetries:                    # BOP models_info.json style, translations in metres
      discrete: []                 # list of 4x4 transforms, row-major, 16 numbers each
      continuous: []               # list of {axis: [x, y, z], offset: [x, y, z]}
    keypoints:                     # (N + 1, 3) [m] object frame: N farthest-point samples on the
      - [0.01, 0.02, 0.03]         # surface, then the bounding-box centre (computed if absent)

``${DVC_SHARED_DATA}`` in the mesh path is replaced by the ``data_root`` argument, else the
``DVC_SHARED_DATA`` environment variable, else ``../shared/data`` beside the checkout.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from dvc_perception.config import load_yaml_mapping
from dvc_perception.errors import ConfigError, MeshError
from dvc_perception.files import file_sha256
from dvc_perception.render.mesh import UNIT_SCALE, Mesh, load_mesh
from dvc_perception.resources import shared_data_dir

_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KNOWN_KEYS = {"id", "mesh", "unit", "mesh_sha256", "diameter", "symmetries", "keypoints"}
_DATA_VAR = "${DVC_SHARED_DATA}"


@dataclass(frozen=True)
class ContinuousSymmetry:
    """Rotation symmetry about `axis` through `offset` (object frame)."""

    axis: tuple[float, float, float]
    offset: tuple[float, float, float]  # [m]


@dataclass(frozen=True)
class ObjectDescription:
    """A known object: its mesh and the facts the networks and PnP need.

    Attributes:
        object_id: ROS name token, used in topic names (``/ground_truth/<object_id>/pose``).
        mesh_path: resolved path of the mesh file.
        unit: the mesh file's unit.
        mesh: the loaded mesh, metres.
        diameter_m: largest vertex-to-vertex distance [m].
        symmetries_discrete: (S, 4, 4) float64 transforms (translation in metres); S may be 0.
        symmetries_continuous: rotation symmetries (axis, offset).
        keypoints: (N + 1, 3) float32 [m] object frame; the last row is the centre.
        yaml_path: the description file.
    """

    object_id: str
    mesh_path: Path
    unit: str
    mesh: Mesh
    diameter_m: float
    symmetries_discrete: np.ndarray
    symmetries_continuous: tuple[ContinuousSymmetry, ...]
    keypoints: torch.Tensor
    yaml_path: Path | None = None

    @property
    def symmetric(self) -> bool:
        """Whether any symmetry is declared (poses are then scored with ADD-S)."""
        return len(self.symmetries_discrete) > 0 or len(self.symmetries_continuous) > 0

    def symmetries_as_plain(self) -> dict[str, list]:
        """The symmetries as JSON-ready lists (model metadata): discrete 4x4 row-major, axes."""
        return {
            "discrete": [np.asarray(s).reshape(-1).tolist() for s in self.symmetries_discrete],
            "continuous": [{"axis": list(c.axis), "offset": list(c.offset)}
                           for c in self.symmetries_continuous],
        }


def resolve_mesh_path(mesh: str, yaml_dir: Path, data_root: str | Path | None = None) -> Path:
    """Resolve a YAML ``mesh`` entry (see module doc).

    Raises:
        ConfigError: the path uses ``${DVC_SHARED_DATA}`` and no data root is known.
    """
    if _DATA_VAR in mesh:
        root = Path(data_root) if data_root is not None else None
        if root is None and os.environ.get("DVC_SHARED_DATA"):
            root = Path(os.environ["DVC_SHARED_DATA"])
        if root is None:
            root = shared_data_dir()
        if root is None:
            raise ConfigError(
                f"mesh path {mesh!r} needs a data root: pass data_root or set DVC_SHARED_DATA"
            )
        mesh = mesh.replace(_DATA_VAR, str(root))
    path = Path(mesh)
    return path if path.is_absolute() else yaml_dir / path


def farthest_point_sampling(points: np.ndarray, count: int, start: int = 0) -> np.ndarray:
    """Indices of `count` points of (N, 3) `points`, each the farthest from those chosen."""
    if count > len(points):
        raise ConfigError(f"cannot choose {count} keypoints from {len(points)} points")
    chosen = [start]
    dist = np.linalg.norm(points - points[start], axis=1)
    for _ in range(count - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(points - points[nxt], axis=1))
    return np.asarray(chosen)


def sample_surface(mesh: Mesh, count: int, seed: int) -> np.ndarray:
    """(count, 3) float64 points sampled uniformly (area-weighted) on the surface [m]."""
    rng = np.random.default_rng(seed)
    v = mesh.vertices.detach().cpu().double().numpy()
    tri = v[mesh.faces.cpu().numpy()]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face = rng.choice(len(tri), size=count, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(count)), rng.random(count)
    w = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)
    return (w[:, :, None] * tri[face]).sum(axis=1)


def compute_keypoints(mesh: Mesh, count: int = 8, seed: int = 0) -> np.ndarray:
    """(count + 1, 3) keypoints [m]: farthest-point samples on the surface, then the centre.

    The centre is the bounding-box centre; sampling starts at the surface point farthest from
    it, so the result does not depend on the sample order beyond `seed`.
    """
    v = mesh.vertices.detach().cpu().double().numpy()
    centre = 0.5 * (v.min(axis=0) + v.max(axis=0))
    pts = sample_surface(mesh, 20000, seed)
    start = int(np.argmax(np.linalg.norm(pts - centre, axis=1)))
    idx = farthest_point_sampling(pts, count, start)
    return np.concatenate([pts[idx], centre[None]], axis=0)


def compute_diameter(mesh: Mesh) -> float:
    """Largest distance between two vertices [m] (over the convex hull's vertices)."""
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import pdist

    v = mesh.vertices.detach().cpu().double().numpy()
    return float(pdist(v[ConvexHull(v).vertices]).max())


def load_object(
    path: str | Path, *, data_root: str | Path | None = None, num_keypoints: int = 8
) -> ObjectDescription:
    """Load ``config/objects/<id>.yaml`` and its mesh.

    Missing ``keypoints`` / ``diameter`` are computed (seed 0, `num_keypoints` surface points);
    `write_missing_fields` stores them back into the file.

    Raises:
        ConfigError: unreadable YAML, unknown keys, bad id, bad symmetries or keypoints.
        MeshError: the mesh cannot be loaded (missing, unknown unit, invalid).
    """
    path = Path(path)
    data = _read_yaml(path)
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(_KNOWN_KEYS)}")
    for key in ("id", "mesh", "unit"):
        if key not in data:
            raise ConfigError(f"{path}: missing key {key!r}")
    object_id = str(data["id"])
    if not _ID_RE.match(object_id):
        raise ConfigError(
            f"{path}: id {object_id!r} is not a ROS name token ([A-Za-z_][A-Za-z0-9_]*)"
        )
    unit = str(data["unit"])
    if unit not in UNIT_SCALE:
        raise MeshError(f"{path}: unknown unit {unit!r}; expected one of {sorted(UNIT_SCALE)}")
    mesh_path = resolve_mesh_path(str(data["mesh"]), path.parent, data_root)
    if "mesh_sha256" in data and mesh_path.is_file():
        actual = file_sha256(mesh_path)
        if actual != str(data["mesh_sha256"]):
            raise MeshError(f"{path}: mesh {mesh_path} has sha256 {actual}; the description "
                            f"expects {data['mesh_sha256']} (another object, or a changed mesh)")
    mesh = load_mesh(mesh_path, unit)
    sym = data.get("symmetries") or {}
    if not isinstance(sym, dict) or set(sym) - {"discrete", "continuous"}:
        raise ConfigError(f"{path}: symmetries must be a mapping with discrete / continuous")
    try:
        disc = np.asarray(sym.get("discrete") or [], dtype=np.float64).reshape(-1, 4, 4)
        cont = tuple(
            ContinuousSymmetry(
                axis=tuple(float(x) for x in c["axis"]),  # type: ignore[arg-type]
                offset=tuple(float(x) for x in c.get("offset", (0, 0, 0))),  # type: ignore[arg-type]
            )
            for c in (sym.get("continuous") or [])
        )
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"{path}: malformed symmetries: {err}") from err
    if "keypoints" in data:
        kp = np.asarray(data["keypoints"], dtype=np.float64)
        if kp.ndim != 2 or kp.shape[1] != 3 or len(kp) < 4 or not np.isfinite(kp).all():
            raise ConfigError(f"{path}: keypoints must be (N >= 4, 3) finite, got {kp.shape}")
    else:
        kp = compute_keypoints(mesh, num_keypoints)
    diameter = float(data["diameter"]) if "diameter" in data else compute_diameter(mesh)
    if diameter <= 0:
        raise ConfigError(f"{path}: diameter must be > 0 m, got {diameter}")
    return ObjectDescription(
        object_id=object_id,
        mesh_path=mesh_path,
        unit=unit,
        mesh=mesh,
        diameter_m=diameter,
        symmetries_discrete=disc,
        symmetries_continuous=cont,
        keypoints=torch.as_tensor(kp, dtype=torch.float32),
        yaml_path=path,
    )


def write_missing_fields(path: str | Path, *, data_root: str | Path | None = None) -> bool:
    """Compute and store ``keypoints`` and ``diameter`` when the YAML lacks them.

    Comment lines starting with ``#`` are kept (moved to the top); other comments are lost.

    Returns:
        True if the file was rewritten.
    """
    path = Path(path)
    data = _read_yaml(path)
    if "keypoints" in data and "diameter" in data:
        return False
    obj = load_object(path, data_root=data_root)
    data.setdefault("diameter", round(obj.diameter_m, 6))
    data.setdefault("symmetries", {"discrete": [], "continuous": []})
    data["keypoints"] = [[round(float(x), 6) for x in row] for row in obj.keypoints.tolist()]
    header = "".join(f"{line}\n" for line in path.read_text().splitlines() if line.startswith("#"))
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return True


def shipped_objects_by_mesh_sha256() -> dict[str, str]:
    """``mesh_sha256`` -> object id of the shipped descriptions (``config/objects/*.yaml``).

    Reads the YAML files only (no mesh is loaded); descriptions without a checksum are left out.
    """
    from dvc_perception.resources import find_share_file

    folder = find_share_file("config/objects")
    table: dict[str, str] = {}
    for path in sorted(folder.glob("*.yaml")):
        data = _read_yaml(path)
        if "mesh_sha256" in data and "id" in data:
            table[str(data["mesh_sha256"])] = str(data["id"])
    return table


def find_object_yaml(name_or_path: str) -> Path:
    """A YAML path for ``demo_object`` (shipped ``config/objects/<id>.yaml``) or a file path."""
    from dvc_perception.resources import find_share_file

    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"object description not found: {p}")
        return p
    return find_share_file(f"config/objects/{name_or_path}.yaml")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"object description not found: {path}")
    return load_yaml_mapping(path, "object description")

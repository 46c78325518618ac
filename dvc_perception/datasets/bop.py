# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""BOP-format scenes (Hodan et al., BOP benchmark): frames, intrinsics and ground-truth poses.

A scene folder holds ``rgb/`` images, ``scene_camera.json`` (``cam_K``) and ``scene_gt.json``
(``cam_R_m2c``, ``cam_t_m2c`` in mm per object). `read_bop_scene` returns them in image-id order
with translations in metres. `bag.bop` writes such a scene as a rosbag2; training on BOP scenes
reads it from here without importing `bag`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dvc_perception.errors import InputError
from dvc_perception.geometry.symmetry import symmetry_transforms


def bop_frame_stamp_ns(index: int, rate_hz: float) -> int:
    """Stamp [ns] of the `index`-th frame (image-id order) of a scene replayed at `rate_hz`.

    BOP stores no time stamps; frames are stamped ``1 s + index / rate_hz``.
    """
    return 10**9 + round(index * 1e9 / rate_hz)


def bop_object_id(dataset: str, obj_id: int) -> str:
    """ROS-name-safe object id of a BOP object: ``bop_object_id("lmo", 1) == "lmo_obj_01"``."""
    return f"{dataset}_obj_{obj_id:02d}"


@dataclass(frozen=True)
class BopFrame:
    """One annotated BOP image: id, rgb path, intrinsics and object-in-camera poses (metres)."""

    image_id: int
    rgb_path: Path
    K: np.ndarray  # (3, 3)
    poses: tuple[tuple[int, np.ndarray, np.ndarray], ...]  # (obj_id, R (3,3), t (3,) m)


def read_bop_scene(dataset_dir: str | Path, scene: str) -> list[BopFrame]:
    """Frames of `scene` (e.g. ``test/000002``) in image-id order.

    Raises:
        InputError: a required file (rgb/, scene_camera.json, scene_gt.json) is missing or bad.
    """
    scene_dir = Path(dataset_dir) / scene
    for required in ("rgb", "scene_camera.json", "scene_gt.json"):
        if not (scene_dir / required).exists():
            raise InputError(f"BOP scene {scene_dir} has no {required}")
    try:
        cameras = json.loads((scene_dir / "scene_camera.json").read_text())
        gts = json.loads((scene_dir / "scene_gt.json").read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"BOP scene {scene_dir}: bad JSON: {err}") from err
    frames = []
    for key in sorted(cameras, key=int):
        rgb = _find_rgb(scene_dir / "rgb", int(key))
        K = np.asarray(cameras[key]["cam_K"], dtype=np.float64).reshape(3, 3)
        poses = tuple(
            (
                int(g["obj_id"]),
                np.asarray(g["cam_R_m2c"], dtype=np.float64).reshape(3, 3),
                np.asarray(g["cam_t_m2c"], dtype=np.float64) / 1000.0,
            )
            for g in gts.get(key, [])
        )
        frames.append(BopFrame(int(key), rgb, K, poses))
    if not frames:
        raise InputError(f"BOP scene {scene_dir} has no frames in scene_camera.json")
    return frames


def _find_rgb(rgb_dir: Path, image_id: int) -> Path:
    for ext in (".png", ".jpg", ".tif"):
        path = rgb_dir / f"{image_id:06d}{ext}"
        if path.is_file():
            return path
    raise InputError(f"no rgb image for image id {image_id} in {rgb_dir}")


def bop_object_ids(dataset_dir: str | Path) -> dict[int, str]:
    """BOP ``obj_id`` -> object id, for every mesh in the dataset's ``models/`` folder.

    An object whose mesh file has the ``mesh_sha256`` of a shipped description
    (``config/objects/*.yaml``) gets that description's id, whatever the dataset folder is
    called (a copy of ``lmo`` named ``lmo_test`` gives the same ids); any other object gets
    `bop_object_id` of the folder name.

    Raises:
        InputError: the dataset has no ``models/obj_<6-digit id>.ply`` meshes.
    """
    from dvc_perception.files import file_sha256
    from dvc_perception.render.objects import shipped_objects_by_mesh_sha256

    root = Path(dataset_dir)
    meshes = sorted((root / "models").glob("obj_*.ply"))
    if not meshes:
        raise InputError(f"BOP dataset {root} has no models/obj_<6-digit id>.ply meshes")
    known = shipped_objects_by_mesh_sha256()
    name = root.resolve().name
    ids: dict[int, str] = {}
    for mesh in meshes:
        try:
            obj_id = int(mesh.stem.split("_")[1])
        except (IndexError, ValueError):
            continue  # not a BOP object mesh name
        ids[obj_id] = known.get(file_sha256(mesh), bop_object_id(name, obj_id))
    return ids


@dataclass(frozen=True)
class BopModelInfo:
    """One object of ``models_info.json``, in metres.

    Attributes:
        diameter_m: the object's diameter [m].
        symmetries: (R (3, 3), t (3,) m) transforms that leave the object looking the same,
            identity first: the discrete ones, and the continuous ones sampled (see
            `read_models_info`).
    """

    diameter_m: float
    symmetries: tuple[tuple[np.ndarray, np.ndarray], ...]


def read_models_info(dataset_dir: str | Path, *, max_sym_step_rad: float = 0.01
                     ) -> dict[int, BopModelInfo]:
    """``models/models_info.json`` -> obj_id -> `BopModelInfo` (mm converted to m).

    Symmetries by `geometry.symmetry.symmetry_transforms` (as BOP's toolkit builds them, the
    zero rotation of a continuous symmetry included so the identity stays in the set).

    Raises:
        InputError: the file is missing or malformed.
    """
    path = Path(dataset_dir) / "models" / "models_info.json"
    if not path.is_file():
        raise InputError(f"BOP dataset {dataset_dir} has no models/models_info.json")
    try:
        raw = json.loads(path.read_text())
        out: dict[int, BopModelInfo] = {}
        for key, info in raw.items():
            discrete = []
            for sym in info.get("symmetries_discrete", []):
                m = np.asarray(sym, np.float64).reshape(4, 4).copy()
                m[:3, 3] /= 1000.0
                discrete.append(m)
            continuous = [(sym["axis"], np.asarray(sym.get("offset", (0, 0, 0))) / 1000.0)
                          for sym in info.get("symmetries_continuous", [])]
            syms = symmetry_transforms(discrete, continuous, max_step_rad=max_sym_step_rad)
            out[int(key)] = BopModelInfo(float(info["diameter"]) / 1000.0, tuple(syms))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: malformed models_info: {err}") from err
    return out


def read_scene_gt_info(dataset_dir: str | Path, scene: str) -> dict[int, list[dict]]:
    """``scene_gt_info.json``: image id -> one entry per ground-truth object.

    Entries are in ``scene_gt.json``'s order: ``bbox_visib`` and ``bbox_obj`` (x, y, w, h) px
    (visible part, whole object), ``visib_fract``.

    Raises:
        InputError: the file is missing or malformed.
    """
    path = Path(dataset_dir) / scene / "scene_gt_info.json"
    if not path.is_file():
        raise InputError(f"BOP scene {Path(dataset_dir) / scene} has no scene_gt_info.json")
    try:
        raw = json.loads(path.read_text())
        return {int(k): [{"bbox_visib": [float(v) for v in e["bbox_visib"]],
                          "bbox_obj": [float(v) for v in e["bbox_obj"]],
                          "visib_fract": float(e["visib_fract"])} for e in entries]
                for k, entries in raw.items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: malformed scene_gt_info: {err}") from err


def read_eval_points(dataset_dir: str | Path, obj_id: int) -> np.ndarray:
    """(N, 3) float64 m: vertices of ``models_eval/obj_<6-digit id>.ply`` (else ``models/``)."""
    from dvc_perception.render.mesh import load_mesh

    root = Path(dataset_dir)
    for folder in ("models_eval", "models"):
        path = root / folder / f"obj_{obj_id:06d}.ply"
        if path.is_file():
            mesh = load_mesh(path, "mm", allow_non_manifold=True)  # only the vertices are used
            return mesh.vertices.detach().cpu().numpy().astype(np.float64)
    raise InputError(f"BOP dataset {root} has no models_eval/ or models/ mesh of object {obj_id}")

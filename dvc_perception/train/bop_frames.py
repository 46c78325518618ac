# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Training frames from a real BOP-format scene folder (fine-tuning on a few labelled images).

A scene folder ``<dataset>/<split>/<scene>`` (e.g. ``lmo/test/000002``) holds ``rgb/``,
``scene_camera.json`` (``cam_K`` per image, optional ``depth_scale``) and ``scene_gt.json``
(``cam_R_m2c``, ``cam_t_m2c`` [mm] per object instance), optionally ``mask_visib/`` and
``depth/``; the object meshes are ``<dataset>/models/obj_<6-digit id>.ply`` (mm). It is read by
`datasets.bop.read_bop_scene`. Objects are identified by mesh sha256 (`bop_object_ids`): only
those matching a shipped description (``config/objects/*.yaml``) are annotated.

Visible masks come from ``mask_visib/<image:06d>_<gt index:06d>.png`` when the folder has one.
Otherwise they are rendered from the ground-truth poses with the hard z-buffer
(`render.raster.rasterize`), every object of the scene that has a mesh in ``models/`` in one
z-buffer so the objects occlude each other. Occluders that are not modelled (a hand, a box, an
object the dataset does not annotate) are not masked out: a rendered mask covers them.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import torch

from dvc_perception.datasets.bop import BopFrame, bop_object_ids, read_bop_scene
from dvc_perception.errors import ConfigError, InputError
from dvc_perception.train.datasets import Frame, ObjectAnnotation


def is_bop_scene_dir(path: str | os.PathLike[str]) -> bool:
    """Whether `path` looks like a BOP scene folder (``scene_gt.json`` and ``rgb/``)."""
    p = Path(path)
    return (p / "scene_gt.json").is_file() and (p / "rgb").is_dir()


class BopFrameSource:
    """Frames of one BOP scene folder, annotated with the objects this project knows.

    Images (and depth) are decoded on every access, so memory holds only the rendered masks:
    one (H, W) uint8 instance map per frame once it has been touched (0.3 MB at 640x480).
    DataLoader worker processes each keep their own cache.

    Args:
        scene_dir: ``<dataset>/<split>/<scene>``; the dataset (with ``models/``) is its
            grandparent.
        with_depth: give each frame its depth map (``depth/<image:06d>.png`` x ``depth_scale``
            mm -> m, 0 -> NaN).
        with_masks: give each annotation its visible mask (``mask_visib/`` or rendered).
        render_backend: rasterizer backend for rendered masks: "auto", "torch" or "numba"
            (as in `render.raster.render`).
        objects_by_mesh_sha256: mesh sha256 -> object id of the objects to annotate; None:
            the shipped descriptions' (`render.objects.shipped_objects_by_mesh_sha256`).

    Attributes:
        scene_dir: the scene folder.
        dataset_dir: its dataset folder.
        object_ids: sorted ids of the annotated (known) objects that occur in the scene.
        skipped_objects: the scene's objects left unannotated (no shipped description).
        mask_source: "mask_visib", "rendered", or None without masks.
        seed: None (real data has no generator seed; kept for provenance).

    Raises:
        InputError: a required file is missing or unreadable (rgb/, scene_camera.json,
            scene_gt.json, models/ meshes, a mask_visib or depth image of an annotation).
        ConfigError: no object of the scene matches a known description, `with_depth` for a
            scene without ``depth/`` and ``depth_scale``, or an unknown `render_backend`.
    """

    def __init__(
        self, scene_dir: str | os.PathLike[str], *, with_depth: bool = False,
        with_masks: bool = True, render_backend: str = "auto",
        objects_by_mesh_sha256: Mapping[str, str] | None = None,
    ) -> None:
        from dvc_perception.files import file_sha256
        from dvc_perception.render.objects import shipped_objects_by_mesh_sha256

        if render_backend not in ("auto", "torch", "numba"):
            raise ConfigError(f"render_backend must be auto, torch or numba, got "
                              f"{render_backend!r}")
        self.scene_dir = Path(scene_dir)
        if not is_bop_scene_dir(self.scene_dir):
            raise InputError(f"{self.scene_dir} is not a BOP scene folder (expected "
                             f"scene_gt.json and rgb/)")
        resolved = self.scene_dir.resolve()
        self.dataset_dir = resolved.parent.parent
        scene = f"{resolved.parent.name}/{resolved.name}"
        self._frames: list[BopFrame] = read_bop_scene(self.dataset_dir, scene)
        cameras = _read_json(self.scene_dir / "scene_camera.json")
        self._depth_scale: list[float] | None = None
        if with_depth:
            self._depth_scale = self._depth_scales(cameras)
        ids = bop_object_ids(self.dataset_dir)  # also: InputError without models/ meshes
        table = (shipped_objects_by_mesh_sha256() if objects_by_mesh_sha256 is None
                 else dict(objects_by_mesh_sha256))
        in_scene = sorted({obj for f in self._frames for obj, _, _ in f.poses})
        names = {o: ids.get(o, f"obj_id {o} (no models/ mesh)") for o in in_scene}
        self._known: dict[int, str] = {}
        for o in in_scene:
            if o in ids:
                found = table.get(file_sha256(self._mesh_path(o)))
                if found is not None:
                    self._known[o] = found
        self.object_ids = sorted(set(self._known.values()))
        self.skipped_objects = sorted(names[o] for o in in_scene if o not in self._known)
        if not self._known:
            raise ConfigError(
                f"BOP scene {self.scene_dir}: none of its objects {sorted(names.values())} "
                f"matches a known object description by mesh sha256 (known: "
                f"{sorted(set(table.values()))}); add config/objects/<id>.yaml with the "
                f"mesh's mesh_sha256"
            )
        if self.skipped_objects:
            warnings.warn(
                f"BOP scene {self.scene_dir}: objects {self.skipped_objects} match no known "
                f"object description (config/objects/*.yaml, by mesh sha256) and are not "
                f"annotated", stacklevel=2,
            )
        self.seed = None
        self.mask_source: str | None = None
        self._meshes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._rendered: dict[int, np.ndarray] = {}
        self._render_backend = render_backend
        if with_masks and (self.scene_dir / "mask_visib").is_dir():
            self.mask_source = "mask_visib"
            for f in self._frames:
                for g, (obj, _, _) in enumerate(f.poses):
                    if obj in self._known and not self._mask_path(f.image_id, g).is_file():
                        raise InputError(f"BOP scene {self.scene_dir}: mask_visib/ has no "
                                         f"{self._mask_path(f.image_id, g).name}")
        elif with_masks:
            self.mask_source = "rendered"
            self._meshes = self._load_meshes(in_scene)

    def _depth_scales(self, cameras: dict) -> list[float]:
        """Per-frame ``depth_scale`` (checking that every depth image exists)."""
        scales = []
        for f in self._frames:
            scale = cameras.get(str(f.image_id), {}).get("depth_scale")
            if not (self.scene_dir / "depth").is_dir() or scale is None:
                raise ConfigError(f"BOP scene {self.scene_dir} has no depth (needs depth/ and "
                                  f"depth_scale in scene_camera.json): cannot train depth on it")
            if not self._depth_path(f.image_id).is_file():
                raise InputError(f"BOP scene {self.scene_dir}: depth/ has no "
                                 f"{self._depth_path(f.image_id).name}")
            scales.append(float(scale))
        return scales

    def _load_meshes(self, obj_ids: list[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """obj_id -> ((V, 3) float64 m object frame vertices, (F, 3) int64 faces).

        The dataset's own ``models/`` files (BOP meshes are in mm) of every scene object that
        has one, known or not, so unannotated objects still occlude. A known object's file is
        the shipped description's mesh (same sha256).
        """
        from dvc_perception.render.mesh import load_mesh

        meshes = {}
        for obj in obj_ids:
            path = self._mesh_path(obj)
            if path.is_file():
                mesh = load_mesh(path, "mm", allow_non_manifold=True)  # visibility only
                meshes[obj] = (mesh.vertices.detach().double().cpu(), mesh.faces.cpu())
        return meshes

    def __len__(self) -> int:
        """Number of frames (every image of scene_camera.json, in image-id order)."""
        return len(self._frames)

    def __getitem__(self, index: int) -> Frame:
        """Frame `index`: RGB, ``cam_K``, depth or None, the known objects' annotations.

        Annotations are in ``scene_gt.json`` order; R (3, 3) and t (3,) m object-in-camera.
        """
        f = self._frames[index]
        image = _read_image(f.rgb_path, cv2.IMREAD_COLOR)
        image = np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        h, w = image.shape[:2]
        instances = None
        if self.mask_source == "rendered":
            instances = self._instance_map(index, f, w, h)
        objects = []
        for g, (obj, R, t) in enumerate(f.poses):
            if obj not in self._known:
                continue
            mask = None
            if instances is not None:
                mask = instances == g + 1
            elif self.mask_source == "mask_visib":
                mask = self._read_mask(f.image_id, g, (h, w))
            objects.append(ObjectAnnotation(object_id=self._known[obj], R=R, t=t, mask=mask))
        depth = None
        if self._depth_scale is not None:
            raw = _read_image(self._depth_path(f.image_id), cv2.IMREAD_UNCHANGED)
            if raw.shape[:2] != (h, w) or raw.ndim != 2:
                raise InputError(f"{self._depth_path(f.image_id)}: expected a ({h}, {w}) depth "
                                 f"image, got {raw.shape}")
            depth = raw.astype(np.float32) * np.float32(self._depth_scale[index] / 1000.0)
            depth[raw == 0] = np.nan
        return Frame(image=image, K=f.K, depth=depth, objects=tuple(objects))

    def _instance_map(self, index: int, f: BopFrame, width: int, height: int) -> np.ndarray:
        """(H, W) gt index + 1 of the nearest rendered object per pixel, 0 for none (cached)."""
        cached = self._rendered.get(index)
        if cached is not None:
            return cached
        from dvc_perception.render.raster import rasterize

        points, faces, owner = [], [], []
        offset = 0
        for g, (obj, R, t) in enumerate(f.poses):
            if obj not in self._meshes:
                continue
            vertices, tris = self._meshes[obj]
            points.append(vertices @ torch.from_numpy(R).T + torch.from_numpy(t))
            faces.append(tris + offset)
            owner.append(torch.full((tris.shape[0],), g + 1, dtype=torch.long))
            offset += vertices.shape[0]
        dtype = np.uint8 if len(f.poses) < 255 else np.int32
        out = np.zeros((height, width), dtype)
        if points:
            X = torch.cat(points)  # (V, 3) m camera frame
            uvw = X @ torch.from_numpy(f.K).T
            px = uvw[:, :2] / uvw[:, 2:].clamp_min(1e-9)
            face_buf = rasterize(px, X[:, 2], torch.cat(faces), width, height,
                                 backend=self._render_backend)
            ids = torch.cat(owner)
            hit = face_buf >= 0
            flat = torch.zeros_like(face_buf)
            flat[hit] = ids[face_buf[hit]]
            out = flat.reshape(height, width).numpy().astype(dtype)
        self._rendered[index] = out
        return out

    def _mesh_path(self, obj_id: int) -> Path:
        return self.dataset_dir / "models" / f"obj_{obj_id:06d}.ply"

    def _mask_path(self, image_id: int, gt_index: int) -> Path:
        return self.scene_dir / "mask_visib" / f"{image_id:06d}_{gt_index:06d}.png"

    def _depth_path(self, image_id: int) -> Path:
        return self.scene_dir / "depth" / f"{image_id:06d}.png"

    def _read_mask(self, image_id: int, gt_index: int, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) bool visible mask of ``mask_visib/`` (non-zero pixels)."""
        path = self._mask_path(image_id, gt_index)
        raw = _read_image(path, cv2.IMREAD_GRAYSCALE)
        if raw.shape != shape:
            raise InputError(f"{path}: expected a {shape} mask (the rgb image's size), "
                             f"got {raw.shape}")
        return raw > 0


def _read_image(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise InputError(f"cannot read image {path} (missing or not an image)")
    return image


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: unreadable JSON: {err}") from err
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data

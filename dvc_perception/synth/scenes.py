# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Synthetic training scenes: objects, distractors, textured planes, lighting, camera effects.

``SceneSampler(objects, config, seed).sample(index)`` returns a `SynthFrame`; the same
(objects, config, seed, index) gives the same frame on every run (each frame draws from its own
``numpy.random.default_rng((seed, index))``), so frames can be generated in any order or in
parallel. With ``config.sequence = True`` one static scene is sampled from the seed and the
camera moves around it (an orbit about the vertical axis through the objects' centroid).

Each frame holds ``objects_per_frame`` distinct objects and ``instances_per_object`` copies of
each (default one). Every copy is its own instance: its own pose, ``instance_ids`` value and
annotation row, so object ids repeat in `SynthFrame.object_ids`. Placement rule: distinct
objects are placed independently of each other (as they always were; they may intersect); each
further copy of an object is redrawn (up to ``COPY_PLACEMENT_TRIES`` times, same distributions)
until its bounding sphere (about the object origin) overlaps no instance placed before it, else
the try with the most clearance is kept, so copies rarely interpenetrate.

`synth.shards` stores frames on disk; `synth.procedural` makes the textures and shapes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from dvc_perception.config_utils import dataclass_from_mapping
from dvc_perception.errors import ConfigError, InputError
from dvc_perception.render.mesh import Mesh
from dvc_perception.render.objects import ObjectDescription
from dvc_perception.render.raster import Lighting, rasterize, render
from dvc_perception.synth.procedural import (
    distractor_mesh,
    plane_mesh,
    plane_pose,
    random_rotation,
    rotation_x,
    rotation_y,
)

#: instance_ids value of distractor shapes; background planes and empty pixels are -1.
DISTRACTOR_ID = -2

#: Draws of a further copy's pose before the one with the most clearance is kept.
COPY_PLACEMENT_TRIES = 20


@dataclass(frozen=True)
class SynthConfig:
    """Scene and camera-effect distributions. Ranges are (low, high), sampled uniformly.

    The default camera is LM-O's (640x480, fx 572.4, fy 573.6).
    """

    width: int = 640
    height: int = 480
    fx: float = 572.4114
    fy: float = 573.57043
    cx: float = 325.2611
    cy: float = 242.04899
    objects_per_frame: tuple[int, int] = (1, 3)  # distinct objects per frame
    # copies of each chosen object (inclusive); each copy is a separate instance. The default
    # (1, 1) draws no extra random numbers: frames are the same as without this field.
    instances_per_object: tuple[int, int] = (1, 1)
    distance_m: tuple[float, float] = (0.4, 1.0)  # object centre depth [m]
    image_margin: float = 0.1  # object centres avoid this fraction of the image border
    distractors_per_frame: tuple[int, int] = (0, 3)
    distractor_size_m: tuple[float, float] = (0.03, 0.12)
    occluder_probability: float = 0.5  # a distractor is put in front of an object
    extra_planes: tuple[int, int] = (0, 2)  # textured planes besides the back plane
    back_plane_gap_m: tuple[float, float] = (0.1, 1.0)  # behind the farthest object [m]
    # "centre": the gap is measured from the farthest object centre (depth along the optical
    # axis); "surface": the clearance between the objects' back surface and the plane, along
    # its normal, so with a gap of 0 the farthest object rests on the plane (a table seen from
    # above) and the plane's distance follows from the object's
    back_plane_from: str = "centre"
    back_plane_tilt_deg: float = 25.0
    ambient: tuple[float, float] = (0.3, 0.7)
    diffuse: tuple[float, float] = (0.2, 0.8)
    noise_std: tuple[float, float] = (0.0, 0.03)  # Gaussian pixel noise, image in [0, 1]
    blur_probability: float = 0.3
    blur_sigma_px: tuple[float, float] = (0.5, 1.5)
    color_jitter: float = 0.15  # per-channel gain in 1 +- jitter, brightness and contrast
    jpeg_probability: float = 0.5
    jpeg_quality: tuple[int, int] = (40, 95)
    sequence: bool = False  # one static scene, moving camera
    orbit_amplitude_deg: float = 20.0  # sequence: camera yaw swing about the scene centroid
    orbit_period_frames: int = 120  # sequence: frames per back-and-forth swing

    def __post_init__(self) -> None:
        ipo = self.instances_per_object
        if (
            not isinstance(ipo, tuple) or len(ipo) != 2
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in ipo)
            or not 1 <= ipo[0] <= ipo[1]
        ):  # fmt: skip
            raise ConfigError(
                f"synth.instances_per_object: expected integers 1 <= min <= max, got {ipo!r}"
            )
        if self.width <= 0 or self.height <= 0 or self.fx <= 0 or self.fy <= 0:
            raise ConfigError(
                f"synth camera: width, height, fx, fy must be > 0, got {self.width}, "
                f"{self.height}, {self.fx}, {self.fy}"
            )
        for name in (
            "objects_per_frame", "distance_m", "distractors_per_frame", "distractor_size_m",
            "extra_planes", "back_plane_gap_m", "ambient", "diffuse", "noise_std",
            "blur_sigma_px", "jpeg_quality",
        ):  # fmt: skip
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ConfigError(f"synth.{name}: expected 0 <= low <= high, got ({lo}, {hi})")
        if self.objects_per_frame[1] < 1:
            raise ConfigError("synth.objects_per_frame: at least one object per frame")
        if self.back_plane_from not in ("centre", "surface"):
            raise ConfigError(
                f"synth.back_plane_from: expected 'centre' or 'surface', got "
                f"{self.back_plane_from!r}"
            )
        if self.distance_m[0] <= 0.05:
            raise ConfigError(f"synth.distance_m must start above 0.05 m, got {self.distance_m}")
        if self.orbit_period_frames < 1:
            raise ConfigError("synth.orbit_period_frames must be >= 1")

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 pinhole intrinsics [px]."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SynthConfig:
        """From a mapping (e.g. YAML); lists become tuples; unknown keys raise ConfigError."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return dataclass_from_mapping(cls, values, section="synth")


@dataclass(frozen=True)
class SynthFrame:
    """One synthetic frame and its ground truth (numpy). M objects, N keypoints each.

    Attributes:
        index: frame index within its sampler.
        rgb: (H, W, 3) uint8 camera image (after noise, blur, jitter, JPEG).
        depth: (H, W) float32 [m] dense depth of the whole scene (objects, distractors,
            planes), noise-free; NaN where nothing was hit.
        instance_ids: (H, W) int16: k for object instance k (row k of the arrays below),
            `DISTRACTOR_ID` (-2) for distractors, -1 for background planes / nothing.
        object_ids: M object ids, one per instance, sorted; an id repeats once per copy of
            its object (``SynthConfig.instances_per_object``), its copies in adjacent rows.
        R: (M, 3, 3) float64 object-in-camera rotations.
        t: (M, 3) float64 [m] object-in-camera translations (``X_cam = R X_obj + t``).
        keypoints_2d: (M, N, 2) float32 [px] projections of the objects' 3D keypoints.
        keypoints_visible: (M, N) bool: inside the image and the object's own surface (not
            another object or a distractor) is seen within one pixel of the projection.
        visib_fraction: (M,) float32 visible / unoccluded silhouette pixels (1 = unoccluded).
        K: (3, 3) float64 [px] intrinsics (no distortion).
        T_world_cam: (4, 4) float64 camera pose in the scene frame (identity unless sequence).
    """

    index: int
    rgb: np.ndarray
    depth: np.ndarray
    instance_ids: np.ndarray
    object_ids: tuple[str, ...]
    R: np.ndarray
    t: np.ndarray
    keypoints_2d: np.ndarray
    keypoints_visible: np.ndarray
    visib_fraction: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray

    def mask(self, k: int) -> np.ndarray:
        """(H, W) bool visible mask of object instance k."""
        return self.instance_ids == k


@dataclass(frozen=True)
class _Scene:
    """Meshes and their poses in the scene (world) frame, plus lighting."""

    meshes: list[Mesh]
    T_world: list[np.ndarray]  # (4, 4) each
    kinds: list[int]  # object index into the sampler's object list, or -1 distractor / -2 plane
    lighting: Lighting


class SceneSampler:
    """Samples reproducible synthetic frames of known objects.

    Args:
        objects: object descriptions (meshes in metres, keypoints). All must have the same
            number of keypoints.
        config: scene and effect distributions.
        seed: base seed; frame ``i`` draws from ``default_rng((seed, i))``.
        device: torch device for rendering (CPU by default).
        render_backend: hard-rasterizer backend, as in `render` ("auto", "torch", "numba").
    """

    def __init__(
        self,
        objects: Sequence[ObjectDescription],
        config: SynthConfig,
        seed: int = 0,
        device: torch.device | str = "cpu",
        render_backend: str = "auto",
    ) -> None:
        if not objects:
            raise ConfigError("SceneSampler needs at least one object")
        counts = {o.keypoints.shape[0] for o in objects}
        if len(counts) != 1:
            raise ConfigError(f"all objects must have the same number of keypoints, got {counts}")
        ids = [o.object_id for o in objects]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"object ids must be unique, got {ids}")
        self.objects = list(objects)
        self.config = config
        self.seed = int(seed)
        self.device = torch.device(device)
        if render_backend not in ("auto", "torch", "numba"):
            raise ConfigError(
                f"render_backend must be auto, torch or numba, got {render_backend!r}"
            )
        self.render_backend = render_backend
        self._meshes = [o.mesh.to(self.device) for o in self.objects]
        # bounding-sphere radius about the object origin [m], for placing copies
        self._radii = [
            float(o.mesh.vertices.detach().cpu().double().norm(dim=1).max()) for o in self.objects
        ]
        self._sequence_scene: _Scene | None = None

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 intrinsics [px]."""
        return self.config.K

    def sample(self, index: int) -> SynthFrame:
        """Frame `index` (any order; deterministic for a given seed and config)."""
        if index < 0:
            raise InputError(f"frame index must be >= 0, got {index}")
        cfg = self.config
        rng = np.random.default_rng((self.seed, index))
        if cfg.sequence:
            if self._sequence_scene is None:
                self._sequence_scene = self._sample_scene(
                    np.random.default_rng((self.seed, 2**32))
                )
            scene = self._sequence_scene
            T_world_cam = self._orbit_pose(scene, index)
        else:
            scene = self._sample_scene(rng)
            T_world_cam = np.eye(4)
        return self._render_frame(index, scene, T_world_cam, rng)

    def __iter__(self) -> Iterator[SynthFrame]:
        """Frames 0, 1, 2, ... (endless)."""
        index = 0
        while True:
            yield self.sample(index)
            index += 1

    # ---------------------------------------------------------------------------------------
    # scene sampling

    def _sample_scene(self, rng: np.random.Generator) -> _Scene:
        cfg = self.config
        K_inv = np.linalg.inv(cfg.K)
        n_obj = int(rng.integers(cfg.objects_per_frame[0], cfg.objects_per_frame[1] + 1))
        n_obj = max(1, min(n_obj, len(self.objects)))
        chosen = sorted(
            rng.choice(len(self.objects), size=n_obj, replace=False).tolist(),
            key=lambda i: self.objects[i].object_id,
        )
        meshes: list[Mesh] = []
        poses: list[np.ndarray] = []
        kinds: list[int] = []
        centres = []
        copies_lo, copies_hi = cfg.instances_per_object
        for i in chosen:
            T = self._object_pose(rng, K_inv)
            # no draws at all with the default (1, 1): frames stay as they were
            n_copies = int(rng.integers(copies_lo, copies_hi + 1)) if copies_hi > 1 else 1
            for c in range(n_copies):
                if c > 0:
                    T = self._copy_pose(rng, K_inv, i, kinds, centres)
                meshes.append(self._meshes[i])
                poses.append(T)
                kinds.append(i)
                centres.append(T[:3, 3])
        n_obj = len(meshes)  # object instances
        far = max(c[2] for c in centres)
        n_dis = int(rng.integers(cfg.distractors_per_frame[0], cfg.distractors_per_frame[1] + 1))
        for _ in range(n_dis):
            size = rng.uniform(*cfg.distractor_size_m)
            T = np.eye(4)
            T[:3, :3] = random_rotation(rng)
            if rng.random() < cfg.occluder_probability:
                target = centres[int(rng.integers(len(centres)))]
                lateral = rng.normal(size=2) * 0.5 * size
                T[:3, 3] = target * rng.uniform(0.55, 0.85) + np.array([*lateral, 0.0])
            else:
                z = rng.uniform(cfg.distance_m[0], far + 0.1)
                uv1 = np.array([rng.uniform(0, cfg.width), rng.uniform(0, cfg.height), 1.0])
                T[:3, 3] = z * (K_inv @ uv1)
            meshes.append(distractor_mesh(rng, size, self.device))
            poses.append(T)
            kinds.append(-1)
        # Back plane: covers the whole view (vertices kept in front of the camera).
        gap = rng.uniform(*cfg.back_plane_gap_m)
        tilt = np.deg2rad(cfg.back_plane_tilt_deg) * np.sqrt(rng.random())
        azim = rng.uniform(0, 2 * np.pi)
        normal = np.array(
            [np.sin(tilt) * np.cos(azim), np.sin(tilt) * np.sin(azim), -np.cos(tilt)]
        )
        if cfg.back_plane_from == "surface":
            # the gap is the clearance along the normal; depth is on the optical axis
            touching = self._touching_plane_depth(meshes[:n_obj], poses[:n_obj], normal)
            depth = touching + gap / abs(float(normal[2]))
        else:
            depth = far + gap
        half = 2.0 * depth * max(cfg.width / cfg.fx, cfg.height / cfg.fy)
        # Corners lie half * sqrt(2) from the centre: keep them at least 0.1 * depth in front.
        half = min(half, 0.9 * depth / max(np.sqrt(2.0) * np.sin(tilt), 1e-6))
        meshes.append(plane_mesh(rng, half, self.device, cells=8))
        poses.append(plane_pose(np.array([0.0, 0.0, depth]), normal, rng))
        kinds.append(-2)
        for _ in range(int(rng.integers(cfg.extra_planes[0], cfg.extra_planes[1] + 1))):
            # Behind the nearest object and at most ~half the view wide, so that extra planes
            # add clutter and partial occlusion but never blank out the whole frame.
            near = min(c[2] for c in centres)
            z = rng.uniform(near, max(near, depth))  # a tilted back plane can be nearer
            uv1 = np.array([rng.uniform(0, cfg.width), rng.uniform(0, cfg.height), 1.0])
            n = -np.array([0.0, 0.0, 1.0]) + rng.normal(size=3) * 0.5
            if n[2] > -0.3:
                n[2] = -0.3
            half_extra = min(rng.uniform(0.1, 0.4), 0.25 * z * cfg.width / cfg.fx)
            meshes.append(plane_mesh(rng, half_extra, self.device))
            poses.append(plane_pose(z * (K_inv @ uv1), n / np.linalg.norm(n), rng))
            kinds.append(-2)
        light_dir = rng.normal(size=3)
        light_dir[2] = -abs(light_dir[2]) - 0.5  # from the camera side
        lighting = Lighting(
            ambient=float(rng.uniform(*cfg.ambient)),
            diffuse=float(rng.uniform(*cfg.diffuse)),
            direction_cam=tuple(float(x) for x in light_dir),  # type: ignore[arg-type]
        )
        return _Scene(meshes=meshes, T_world=poses, kinds=kinds, lighting=lighting)

    def _object_pose(self, rng: np.random.Generator, K_inv: np.ndarray) -> np.ndarray:
        """(4, 4) pose of one object instance: depth, image position, then a uniform rotation."""
        cfg = self.config
        z = rng.uniform(*cfg.distance_m)
        m = cfg.image_margin
        u = rng.uniform(m * cfg.width, (1 - m) * cfg.width)
        v = rng.uniform(m * cfg.height, (1 - m) * cfg.height)
        T = np.eye(4)
        T[:3, :3] = random_rotation(rng)
        T[:3, 3] = z * (K_inv @ np.array([u, v, 1.0]))
        return T

    def _copy_pose(
        self,
        rng: np.random.Generator,
        K_inv: np.ndarray,
        obj: int,
        kinds: list[int],
        centres: list[np.ndarray],
    ) -> np.ndarray:
        """Pose of a further copy of object `obj`, clear of the instances placed so far.

        Drawn as `_object_pose` until the copy's bounding sphere overlaps none of the placed
        instances' (``COPY_PLACEMENT_TRIES`` draws at most); else the draw with the largest
        clearance (centre distance / sum of radii) is kept.
        """
        r = self._radii[obj]
        placed = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
        reach = r + np.asarray([self._radii[k] for k in kinds], dtype=np.float64)
        best, best_clearance = None, -1.0
        for _ in range(COPY_PLACEMENT_TRIES):
            T = self._object_pose(rng, K_inv)
            dist = np.linalg.norm(placed - T[:3, 3], axis=1)
            clearance = float(np.min(dist / np.maximum(reach, 1e-12))) if len(dist) else np.inf
            if clearance > best_clearance:
                best, best_clearance = T, clearance
            if clearance >= 1.0:
                break
        assert best is not None
        return best

    @staticmethod
    def _touching_plane_depth(
        meshes: list[Mesh], poses: list[np.ndarray], normal: np.ndarray
    ) -> float:
        """Optical-axis depth [m] of the plane with unit `normal` that touches the objects.

        The normal points at the camera (normal_z < 0); every vertex lies on or in front of the
        plane (a point X is in front when normal . X > normal_z * depth).
        """
        reach = []
        for mesh, T in zip(meshes, poses):
            v = mesh.vertices.detach().cpu().double().numpy() @ T[:3, :3].T + T[:3, 3]
            reach.append(float(np.max((v @ normal) / normal[2])))
        return max(reach)

    def _orbit_pose(self, scene: _Scene, index: int) -> np.ndarray:
        cfg = self.config
        obj_centres = [T[:3, 3] for T, k in zip(scene.T_world, scene.kinds) if k >= 0]
        c = np.mean(obj_centres, axis=0)
        yaw = np.deg2rad(cfg.orbit_amplitude_deg) * np.sin(
            2.0 * np.pi * index / cfg.orbit_period_frames
        )
        pitch = 0.25 * yaw * np.cos(2.0 * np.pi * index / cfg.orbit_period_frames)
        R = rotation_y(yaw) @ rotation_x(pitch)
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = c - R @ c  # rotate about the vertical axis through the centroid
        return T

    # ---------------------------------------------------------------------------------------
    # rendering and ground truth

    def _render_frame(
        self, index: int, scene: _Scene, T_world_cam: np.ndarray, rng: np.random.Generator
    ) -> SynthFrame:
        cfg = self.config
        T_cam_world = np.linalg.inv(T_world_cam)
        T_cam = np.stack([T_cam_world @ T for T in scene.T_world])  # (S, 4, 4)
        poses = torch.as_tensor(T_cam, dtype=torch.float32, device=self.device)
        K_t = torch.as_tensor(cfg.K, device=self.device)
        with torch.no_grad():
            res = render(
                scene.meshes, poses, K_t, cfg.width, cfg.height, lighting=scene.lighting,
                backend=self.render_backend,
            )  # fmt: skip
        inst_mesh = res.instance_ids.cpu().numpy()
        kinds = np.asarray(scene.kinds)
        obj_slots = [s for s, k in enumerate(scene.kinds) if k >= 0]
        instance_ids = np.full(inst_mesh.shape, -1, dtype=np.int16)
        hit = inst_mesh >= 0
        kind_at = np.where(hit, kinds[np.clip(inst_mesh, 0, None)], -3)
        instance_ids[kind_at == -1] = DISTRACTOR_ID
        for k, s in enumerate(obj_slots):
            instance_ids[inst_mesh == s] = k
        object_ids = tuple(self.objects[scene.kinds[s]].object_id for s in obj_slots)
        R = T_cam[obj_slots, :3, :3]
        t = T_cam[obj_slots, :3, 3]
        kp3d = np.stack(
            [self.objects[scene.kinds[s]].keypoints.double().numpy() for s in obj_slots]
        )
        kp_cam = np.einsum("mij,mnj->mni", R, kp3d) + t[:, None, :]
        uvw = kp_cam @ cfg.K.T
        kp2d = uvw[..., :2] / uvw[..., 2:]
        visible = _keypoint_visibility(kp2d, kp_cam[..., 2], instance_ids, cfg.width, cfg.height)
        visib = np.zeros(len(obj_slots), dtype=np.float32)
        for k, s in enumerate(obj_slots):
            full = self._silhouette_pixels(scene.meshes[s], T_cam[s])
            visib[k] = float((instance_ids == k).sum()) / max(full, 1)
        rgb = _camera_effects(res.color.cpu().numpy(), rng, cfg)
        return SynthFrame(
            index=index,
            rgb=rgb,
            depth=res.depth.cpu().numpy().astype(np.float32),
            instance_ids=instance_ids,
            object_ids=object_ids,
            R=R.copy(),
            t=t.copy(),
            keypoints_2d=kp2d.astype(np.float32),
            keypoints_visible=visible,
            visib_fraction=visib,
            K=cfg.K,
            T_world_cam=T_world_cam,
        )

    def _silhouette_pixels(self, mesh: Mesh, T: np.ndarray) -> int:
        """Pixels the mesh would cover alone at pose T (for the visible fraction)."""
        cfg = self.config
        Tt = torch.as_tensor(T, dtype=torch.float32, device=self.device)
        Kt = torch.as_tensor(cfg.K, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            X = mesh.vertices @ Tt[:3, :3].T + Tt[:3, 3]
            uvw = X @ Kt.T
            px = uvw[:, :2] / uvw[:, 2:].clamp_min(1e-9)
            buf = rasterize(
                px, X[:, 2], mesh.faces, cfg.width, cfg.height, backend=self.render_backend
            )
        return int((buf >= 0).sum())


def _keypoint_visibility(
    kp2d: np.ndarray, kp_z: np.ndarray, instance_ids: np.ndarray, width: int, height: int
) -> np.ndarray:
    """(M, N) bool: in front, inside the image, own instance within the 3x3 neighbourhood."""
    m_count, n_count = kp2d.shape[:2]
    out = np.zeros((m_count, n_count), dtype=bool)
    x = np.rint(kp2d[..., 0]).astype(np.int64)
    y = np.rint(kp2d[..., 1]).astype(np.int64)
    inside = (kp_z > 0) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            xx = np.clip(x + dx, 0, width - 1)
            yy = np.clip(y + dy, 0, height - 1)
            own = instance_ids[yy, xx] == np.arange(m_count)[:, None]
            out |= inside & own
    return out


def _camera_effects(color: np.ndarray, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """Colour jitter, blur, noise, then JPEG. color (H, W, 3) float [0, 1] -> uint8 RGB."""
    img = color.astype(np.float32)  # a copy: the in-place steps below do not touch `color`
    j = cfg.color_jitter
    if j > 0:
        gain = rng.uniform(1 - j, 1 + j, size=3)
        brightness = rng.uniform(-j, j) * 0.5
        contrast = rng.uniform(1 - j, 1 + j)
        mean = float(img.mean())
        # (img * gain - mean) * contrast + mean + brightness, as one multiply-add per pixel.
        img *= (gain * contrast).astype(np.float32)
        img += np.float32(mean * (1.0 - contrast) + brightness)
    if rng.random() < cfg.blur_probability:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(*cfg.blur_sigma_px)))
    sigma = rng.uniform(*cfg.noise_std)
    if sigma > 0:
        noise = rng.standard_normal(img.shape, dtype=np.float32)
        noise *= np.float32(sigma)
        img += noise
    img *= np.float32(255.0)
    img += np.float32(0.5)
    np.clip(img, 0.0, 255.0, out=img)
    out = img.astype(np.uint8)
    if rng.random() < cfg.jpeg_probability:
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise InputError("JPEG encoding failed")
        out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])
    return out

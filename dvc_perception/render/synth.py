# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Synthetic training scenes: objects, distractors, textured planes, lighting, camera effects.

``SceneSampler(objects, config, seed).sample(index)`` returns a `SynthFrame`; the same
(objects, config, seed, index) gives the same frame on every run (each frame draws from its own
``numpy.random.default_rng((seed, index))``), so frames can be generated in any order or in
parallel. With ``config.sequence = True`` one static scene is sampled from the seed and the
camera moves around it (an orbit about the vertical axis through the objects' centroid).

Shards (`write_shards` / `load_shards`) store frames on disk; see `write_shards` for the format.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from dvc_perception.config_utils import dataclass_from_mapping
from dvc_perception.errors import ConfigError, InputError
from dvc_perception.render.mesh import Mesh, mesh_from_arrays
from dvc_perception.render.objects import ObjectDescription
from dvc_perception.render.raster import Lighting, rasterize, render
from dvc_perception.safe_load import load_npz

#: instance_ids value of distractor shapes; background planes and empty pixels are -1.
DISTRACTOR_ID = -2
SHARD_FORMAT = "dvc_synth_shards/1"


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
        object_ids: M object ids, sorted.
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
        for i in chosen:
            z = rng.uniform(*cfg.distance_m)
            m = cfg.image_margin
            u = rng.uniform(m * cfg.width, (1 - m) * cfg.width)
            v = rng.uniform(m * cfg.height, (1 - m) * cfg.height)
            T = np.eye(4)
            T[:3, :3] = _random_rotation(rng)
            T[:3, 3] = z * (K_inv @ np.array([u, v, 1.0]))
            meshes.append(self._meshes[i])
            poses.append(T)
            kinds.append(i)
            centres.append(T[:3, 3])
        far = max(c[2] for c in centres)
        n_dis = int(rng.integers(cfg.distractors_per_frame[0], cfg.distractors_per_frame[1] + 1))
        for _ in range(n_dis):
            size = rng.uniform(*cfg.distractor_size_m)
            T = np.eye(4)
            T[:3, :3] = _random_rotation(rng)
            if rng.random() < cfg.occluder_probability:
                target = centres[int(rng.integers(len(centres)))]
                lateral = rng.normal(size=2) * 0.5 * size
                T[:3, 3] = target * rng.uniform(0.55, 0.85) + np.array([*lateral, 0.0])
            else:
                z = rng.uniform(cfg.distance_m[0], far + 0.1)
                uv1 = np.array([rng.uniform(0, cfg.width), rng.uniform(0, cfg.height), 1.0])
                T[:3, 3] = z * (K_inv @ uv1)
            meshes.append(_distractor_mesh(rng, size, self.device))
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
        meshes.append(_plane_mesh(rng, half, self.device, cells=8))
        poses.append(_plane_pose(np.array([0.0, 0.0, depth]), normal, rng))
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
            meshes.append(_plane_mesh(rng, half_extra, self.device))
            poses.append(_plane_pose(z * (K_inv @ uv1), n / np.linalg.norm(n), rng))
            kinds.append(-2)
        light_dir = rng.normal(size=3)
        light_dir[2] = -abs(light_dir[2]) - 0.5  # from the camera side
        lighting = Lighting(
            ambient=float(rng.uniform(*cfg.ambient)),
            diffuse=float(rng.uniform(*cfg.diffuse)),
            direction_cam=tuple(float(x) for x in light_dir),  # type: ignore[arg-type]
        )
        return _Scene(meshes=meshes, T_world=poses, kinds=kinds, lighting=lighting)

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
        R = _rot_y(yaw) @ _rot_x(pitch)
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


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
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


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_x(a: float) -> np.ndarray:
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


def _plane_mesh(
    rng: np.random.Generator, half: float, device: torch.device, cells: int = 1
) -> Mesh:
    """A textured square of half-size `half` [m] in its z = 0 plane, normal +z.

    `cells` x `cells` quads: the renderer drops faces with a vertex behind the near plane, so a
    finely divided plane loses only its cells behind the camera (a moving camera needs that).
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
        texture=procedural_texture(rng),
        name="plane",
    )
    return mesh.to(device)


def _plane_pose(centre: np.ndarray, normal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pose of a plane mesh (normal +z) at `centre` with its normal along `normal`."""
    z = normal / np.linalg.norm(normal)
    a = rng.normal(size=3)
    x = a - z * (a @ z)
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    T[:3, 3] = centre
    return T


def _distractor_mesh(rng: np.random.Generator, size: float, device: torch.device) -> Mesh:
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


# ------------------------------------------------------------------------------------------
# shards


def write_shards(
    sampler: SceneSampler,
    out_dir: str | Path,
    num_frames: int,
    *,
    frames_per_shard: int = 50,
    compress: bool = False,
    progress: bool = True,
) -> Path:
    """Write frames ``0 .. num_frames - 1`` of `sampler` as npz shards plus ``index.json``.

    Format (``SHARD_FORMAT``): ``shard_00000.npz`` ... each with ``rgb`` (n, H, W, 3) uint8,
    ``depth`` (n, H, W) float32 [m] (NaN = nothing), ``instance_ids`` (n, H, W) int16, ``frame``
    (n,) int64 frame indices. ``index.json``: ``format``, ``width``, ``height``, ``K`` (3x3),
    ``seed``, ``config`` (the `SynthConfig` fields), ``objects`` (id -> ``keypoints_3d``
    (N, 3) m, ``diameter`` m, ``mesh``), and ``frames``: one record per frame with ``index``,
    ``shard`` (file name), ``offset`` (row in the shard), ``object_ids``, ``R`` (M, 3, 3),
    ``t`` (M, 3) m, ``keypoints_2d`` (M, N, 2) px, ``keypoints_visible`` (M, N),
    ``visib_fraction`` (M,), ``T_world_cam`` (4, 4).

    Returns:
        The path of ``index.json``.
    """
    from tqdm import tqdm

    if num_frames < 1 or frames_per_shard < 1:
        raise ConfigError(
            f"num_frames and frames_per_shard must be >= 1, got {num_frames}, {frames_per_shard}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = sampler.config
    records: list[dict[str, Any]] = []
    save = np.savez_compressed if compress else np.savez
    buf: list[SynthFrame] = []
    shard_no = 0

    def flush() -> None:
        nonlocal shard_no, buf
        name = f"shard_{shard_no:05d}.npz"
        save(
            out / name,
            rgb=np.stack([f.rgb for f in buf]),
            depth=np.stack([f.depth for f in buf]),
            instance_ids=np.stack([f.instance_ids for f in buf]),
            frame=np.array([f.index for f in buf], dtype=np.int64),
        )
        for offset, f in enumerate(buf):
            records.append(_frame_record(f, name, offset))
        shard_no += 1
        buf = []

    for i in tqdm(range(num_frames), desc="synth", unit="frame", disable=not progress):
        buf.append(sampler.sample(i))
        if len(buf) == frames_per_shard:
            flush()
    if buf:
        flush()
    index = {
        "format": SHARD_FORMAT,
        "width": cfg.width,
        "height": cfg.height,
        "K": cfg.K.tolist(),
        "seed": sampler.seed,
        "config": dataclasses.asdict(cfg),
        "objects": {
            o.object_id: {
                "keypoints_3d": o.keypoints.double().tolist(),
                "diameter": o.diameter,
                "mesh": str(o.mesh_path),
            }
            for o in sampler.objects
        },
        "frames": records,
    }
    path = out / "index.json"
    path.write_text(json.dumps(index))
    return path


def _frame_record(f: SynthFrame, shard: str, offset: int) -> dict[str, Any]:
    return {
        "index": f.index,
        "shard": shard,
        "offset": offset,
        "object_ids": list(f.object_ids),
        "R": f.R.tolist(),
        "t": f.t.tolist(),
        "keypoints_2d": f.keypoints_2d.astype(np.float64).tolist(),
        "keypoints_visible": f.keypoints_visible.tolist(),
        "visib_fraction": f.visib_fraction.astype(np.float64).tolist(),
        "T_world_cam": f.T_world_cam.tolist(),
    }


SHARD_HINT = "regenerate the shard directory with `dvc-perception synth`"


def read_shard_arrays(
    path: str | Path, keys: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """The arrays of one ``.npz`` shard (all when `keys` is None), decompressed.

    Read with ``allow_pickle=False`` (numpy's default, kept on purpose): a shard holding object
    arrays is refused instead of unpickled.

    Raises:
        InputError: a missing, truncated or corrupt shard, or one lacking `keys` (named).
    """
    return load_npz(path, keys, what="synthetic shard", hint=SHARD_HINT)


class ShardReader:
    """Random access to frames written by `write_shards` (one shard cached at a time).

    ``len(reader)``, ``reader[i] -> SynthFrame`` (i-th record of ``index.json``), iteration in
    order. ``reader.index`` is the parsed ``index.json``.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        path = self.directory / "index.json"
        if not path.is_file():
            raise InputError(f"not a synth shard directory (no index.json): {self.directory}")
        self.index = json.loads(path.read_text())
        if self.index.get("format") != SHARD_FORMAT:
            raise InputError(
                f"{path}: expected format {SHARD_FORMAT!r}, got {self.index.get('format')!r}"
            )
        self._K = np.asarray(self.index["K"], dtype=np.float64)
        self._cached: tuple[str, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.index["frames"])

    def __getitem__(self, i: int) -> SynthFrame:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for {len(self)} frames")
        rec = self.index["frames"][i]
        if self._cached is None or self._cached[0] != rec["shard"]:
            self._cached = (rec["shard"], read_shard_arrays(self.directory / rec["shard"]))
        arrays = self._cached[1]
        o = rec["offset"]
        m = len(rec["object_ids"])
        n_kp = len(next(iter(self.index["objects"].values()))["keypoints_3d"])
        return SynthFrame(
            index=int(rec["index"]),
            rgb=arrays["rgb"][o],
            depth=arrays["depth"][o],
            instance_ids=arrays["instance_ids"][o],
            object_ids=tuple(rec["object_ids"]),
            R=np.asarray(rec["R"], dtype=np.float64).reshape(m, 3, 3),
            t=np.asarray(rec["t"], dtype=np.float64).reshape(m, 3),
            keypoints_2d=np.asarray(rec["keypoints_2d"], dtype=np.float32).reshape(m, n_kp, 2),
            keypoints_visible=np.asarray(rec["keypoints_visible"], dtype=bool).reshape(m, n_kp),
            visib_fraction=np.asarray(rec["visib_fraction"], dtype=np.float32).reshape(m),
            K=self._K,
            T_world_cam=np.asarray(rec["T_world_cam"], dtype=np.float64),
        )

    def __iter__(self) -> Iterator[SynthFrame]:
        for i in range(len(self)):
            yield self[i]

    def keypoints_3d(self, object_id: str) -> np.ndarray:
        """(N, 3) float64 [m] model keypoints of `object_id` (last row: centre)."""
        return np.asarray(self.index["objects"][object_id]["keypoints_3d"], dtype=np.float64)


def load_shards(directory: str | Path) -> ShardReader:
    """Open a shard directory written by `write_shards`."""
    return ShardReader(directory)

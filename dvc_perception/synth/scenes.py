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

Realism settings (all off by default; off, they draw no random numbers, so existing seeds give
the same frames bit for bit): ``objects_on_plane`` rests the objects on the back plane (a table
seen from above or obliquely, as in LM-O); ``lights_per_frame`` adds directional lights,
``specular`` / ``shininess`` Blinn-Phong highlights (`Lighting`); ``shadow_probability`` casts
the main light's shadows with a shadow map (`cast_shadows`); ``white_balance``, ``gamma``,
``motion_blur_probability`` and ``shot_noise`` are further sensor effects (`_camera_effects`).

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
from dvc_perception.errors import ConfigError, InputError, ShapeError
from dvc_perception.render.mesh import Mesh
from dvc_perception.render.objects import ObjectDescription
from dvc_perception.render.raster import Lighting, rasterize, render
from dvc_perception.render.raster_numba import numba_available
from dvc_perception.synth.backgrounds import BackgroundPhotos
from dvc_perception.synth.procedural import (
    chimera_mesh,
    clutter_texture,
    distractor_mesh,
    plane_mesh,
    plane_pose,
    random_rotation,
    rotation_x,
    rotation_y,
    transferred_colours,
    vertex_colours,
)

#: instance_ids value of distractor shapes; background planes and empty pixels are -1.
DISTRACTOR_ID = -2

#: Draws of a further copy's pose before the one with the most clearance is kept.
COPY_PLACEMENT_TRIES = 20

#: Diffuse intensity of each extra light, as a fraction of the main light's (uniform range).
EXTRA_LIGHT_FRACTION = (0.2, 0.6)

#: Motion-blur kernel length [px], inclusive range.
MOTION_BLUR_PX = (3, 9)

#: mesh_distractor_probability: a chimera's stretch along each of its mesh axes (uniform range).
MESH_DISTRACTOR_STRETCH = (0.6, 1.6)

#: objects_on_plane: an instance whose viewing ray meets the plane at more than this angle from
#: its normal (cosine below 0.1) keeps its drawn depth, as does one that would come nearer
#: than half of ``distance_m[0]``.
_MIN_RAY_PLANE_COSINE = 0.1


@dataclass(frozen=True)
class SynthConfig:
    """Scene and camera-effect distributions. Ranges are (low, high), sampled uniformly.

    The default camera is LM-O's (640x480, fx 572.4, fy 573.6).

    Realism settings (defaults: off, no random numbers drawn, frames unchanged):

    - ``lights_per_frame``: (min, max) directional lights per scene, the main one included.
      Each extra light comes from the camera's half-space with a diffuse intensity of
      ``EXTRA_LIGHT_FRACTION`` times the main light's; drawn only when max > 1.
    - ``specular``: Blinn-Phong highlight weight (`Lighting.specular`), white, added to every
      light; drawn, with ``shininess`` (the exponent), only when its high end is > 0.
    - ``objects_on_plane``: after the back plane is placed, every object instance (and every
      distractor not placed as an occluder) slides along its own camera ray, so its image
      position is kept, until its farthest vertex along the plane normal touches the plane:
      objects resting on a table seen from above or obliquely. The plane's optical-axis depth
      is then the mean of the depths at which it would touch each instance, so instances stay
      near ``distance_m``; ``back_plane_gap_m`` (still drawn) and ``back_plane_from`` do not
      apply. Occluding distractors follow their target along its ray. Instances may then
      overlap each other a little (accepted); one whose ray meets the plane too obliquely
      (``_MIN_RAY_PLANE_COSINE``) keeps its drawn depth. Rotations stay uniform.
    - ``shadow_probability``: per scene, the main light casts shadows (`cast_shadows`: an
      orthographic shadow map along the light): shadowed pixels lose the main light's diffuse
      term, keep ambient and the extra lights.
    - ``white_balance``: colour temperature, ``r *= 1 + w s`` and ``b *= 1 - w s`` with
      ``s ~ U(-1, 1)``; 0 is off.
    - ``gamma``: exposure curve ``img ** g``, ``g`` drawn from the range unless it is (1, 1).
    - ``motion_blur_probability``: a linear kernel of ``MOTION_BLUR_PX`` px in a random
      direction.
    - ``shot_noise``: signal-dependent noise of std ``k * sqrt(img)`` (img in [0, 1]), ``k``
      drawn unless the high end is 0.
    - ``clutter_texture_probability``: each plane (back and extra) gets a dead-leaves
      `procedural.clutter_texture` (the busy background of a real desk) instead of a smooth
      `procedural_texture` with this probability; drawn only when > 0.
    - ``clutter_saturation``: each clutter texture's colours are scaled towards grey by a
      factor drawn from this range (`procedural.clutter_texture`'s ``saturation``), unless it
      is (1, 1): lower values give the greys, whites and muted colours of real rooms.
    - ``background_clutter_probability``: per frame, every background pixel (planes and empty
      space, instance id -1; not objects, not distractors) is replaced, before the camera
      effects, by a dead-leaves clutter image drawn in image space at the frame's size (shapes
      of 1/250 to 1/12 of its larger side, about 2.5-53 px at 640x480; saturation from
      ``clutter_saturation``): busy, sharp clutter right behind every object at the objects'
      own scale, where clutter textures on the 3D planes are mostly far away and small. It is
      painted on the image, not on a surface: the depth map still holds the planes, and a
      ``sequence`` would flicker, so it is refused with ``sequence`` (for detection and pose
      training only).
    - ``background_photos`` / ``background_photo_probability`` / ``background_photo_zoom``:
      per frame, with this probability, every background pixel (as for the clutter above) is
      replaced, before the camera effects, by a random crop of one of these photographs
      (image files, directories or glob patterns; `backgrounds.BackgroundPhotos`): photos of
      the robot's workspace without the objects, so the networks see real background clutter
      behind synthetic objects. The zoom (>= 1) sets the crop: 1 is the whole photo. It is
      drawn before the clutter background; a frame that gets a photo gets no clutter. Paths
      are resolved, and must name images, when the `SceneSampler` is made; refused with
      ``sequence``, as the clutter.
    - ``mesh_distractor_probability``: each distractor is, with this probability, a *chimera*
      of the objects' own meshes instead of a box, ellipsoid or cylinder: one object's mesh
      stretched along its axes by ``MESH_DISTRACTOR_STRETCH`` (each axis drawn) and coloured
      with another object's vertex colours (`procedural.transferred_colours`). Real clutter
      (tools, other products) has photographed textures and object-like shapes, which flat
      primitives lack; the chimera has both, and the look of none of the objects. It keeps the
      source object's size (times the stretch). Needs 2 objects or more; drawn only when > 0.
    - ``object_cluster_spread``: 0 places objects independently over the image; > 0 draws one
      cluster centre per frame (uniform inside the margin) and each object's image position
      around it, Gaussian with this standard deviation as a fraction of the image width,
      clipped to the margin: the piles of LM-O rather than objects spread over the frame.
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
    # realism (see the class docstring); every default is off and draws no random numbers
    lights_per_frame: tuple[int, int] = (1, 1)  # directional lights, the main one included
    specular: tuple[float, float] = (0.0, 0.0)  # Blinn-Phong highlight weight
    shininess: tuple[float, float] = (10.0, 60.0)  # Blinn-Phong exponent (with specular)
    objects_on_plane: bool = False  # instances slide along their rays onto the back plane
    shadow_probability: float = 0.0  # per scene: the main light casts shadows
    white_balance: float = 0.0  # colour temperature gain r *= 1 + w s, b *= 1 - w s
    gamma: tuple[float, float] = (1.0, 1.0)  # exposure curve img ** g
    motion_blur_probability: float = 0.0  # linear kernel, MOTION_BLUR_PX long
    shot_noise: tuple[float, float] = (0.0, 0.0)  # noise std k * sqrt(img), img in [0, 1]
    clutter_texture_probability: float = 0.0  # per plane: dead-leaves clutter texture
    clutter_saturation: tuple[float, float] = (1.0, 1.0)  # clutter colours towards grey
    background_clutter_probability: float = 0.0  # per frame: image-space clutter background
    background_photos: tuple[str, ...] = ()  # image files, directories, glob patterns
    background_photo_probability: float = 0.0  # per frame: a photo behind the objects
    background_photo_zoom: tuple[float, float] = (1.0, 2.5)  # crop zoom into the photo
    object_cluster_spread: float = 0.0  # object positions around one centre [image widths]
    mesh_distractor_probability: float = 0.0  # per distractor: a chimera of the object meshes

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
            "blur_sigma_px", "jpeg_quality", "specular", "shot_noise",
        ):  # fmt: skip
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ConfigError(f"synth.{name}: expected 0 <= low <= high, got ({lo}, {hi})")
        self._check_realism()
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

    def _check_realism(self) -> None:
        """Validate the realism settings (see the class docstring).

        Raises:
            ConfigError: naming the field, what it expects and what arrived.
        """
        lights = self.lights_per_frame
        if (
            not isinstance(lights, tuple) or len(lights) != 2
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                       for n in lights)
            or not 1 <= lights[0] <= lights[1]
        ):  # fmt: skip
            raise ConfigError(
                f"synth.lights_per_frame: expected integers 1 <= min <= max, got {lights!r}"
            )
        for name in ("specular", "shininess", "gamma", "shot_noise", "clutter_saturation"):
            pair = getattr(self, name)
            if (
                not isinstance(pair, tuple) or len(pair) != 2
                or not all(isinstance(x, (int, float)) and np.isfinite(x) for x in pair)
            ):  # fmt: skip
                raise ConfigError(f"synth.{name}: expected two finite numbers, got {pair!r}")
        lo, hi = self.shininess
        if not 1 <= lo <= hi:  # as `Lighting.shininess`
            raise ConfigError(f"synth.shininess: expected 1 <= low <= high, got ({lo}, {hi})")
        lo, hi = self.gamma
        if not 0 < lo <= hi:
            raise ConfigError(f"synth.gamma: expected 0 < low <= high, got ({lo}, {hi})")
        if not isinstance(self.objects_on_plane, bool):
            raise ConfigError(
                f"synth.objects_on_plane: expected true or false, got {self.objects_on_plane!r}"
            )
        for name in ("shadow_probability", "motion_blur_probability",
                     "clutter_texture_probability", "background_clutter_probability",
                     "background_photo_probability", "mesh_distractor_probability"):
            p = getattr(self, name)
            if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
                raise ConfigError(f"synth.{name}: expected a probability in [0, 1], got {p!r}")
        for name in ("background_clutter_probability", "background_photo_probability"):
            if self.sequence and getattr(self, name) > 0:
                raise ConfigError(f"synth.{name}: expected 0 with sequence: the background "
                                  "is painted on each image, not on a 3D surface")
        photos = self.background_photos
        if not isinstance(photos, tuple) or not all(isinstance(x, str) for x in photos):
            raise ConfigError(f"synth.background_photos: expected a list of paths or glob "
                              f"patterns, got {photos!r}")
        if self.background_photo_probability > 0 and not photos:
            raise ConfigError("synth.background_photo_probability: > 0 needs "
                              "synth.background_photos (image files, directories or globs)")
        zoom = self.background_photo_zoom
        if (not isinstance(zoom, tuple) or len(zoom) != 2
                or not all(isinstance(x, (int, float)) for x in zoom)
                or not 1.0 <= zoom[0] <= zoom[1] < float("inf")):
            raise ConfigError(f"synth.background_photo_zoom: expected 1 <= low <= high, "
                              f"got {zoom!r}")
        lo, hi = self.clutter_saturation
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(
                f"synth.clutter_saturation: expected 0 <= low <= high <= 1, got ({lo}, {hi})")
        w = self.white_balance
        if not (isinstance(w, (int, float)) and 0.0 <= w < 1.0):
            raise ConfigError(f"synth.white_balance: expected 0 <= w < 1, got {w!r}")
        spread = self.object_cluster_spread
        if not (isinstance(spread, (int, float)) and 0.0 <= spread <= 1.0):
            raise ConfigError(
                f"synth.object_cluster_spread: expected 0 <= spread <= 1, got {spread!r}"
            )

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
    shadows: bool = False  # the main light casts shadows (`cast_shadows`)
    back_plane: int = -1  # index of the back plane in `meshes`


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
        if config.mesh_distractor_probability > 0:
            if len(self.objects) < 2:
                raise ConfigError("synth.mesh_distractor_probability: > 0 needs 2 objects or "
                                  "more (a chimera takes one's shape and another's colours)")
            for mesh in self._meshes:
                vertex_colours(mesh)  # ConfigError now when a mesh has no colours to lend
        self._chimera_colours: dict[tuple[int, int], np.ndarray] = {}  # (shape, colours)
        self._sequence_scene: _Scene | None = None
        self._photos = (
            BackgroundPhotos(config.background_photos, config.background_photo_zoom)
            if config.background_photo_probability > 0 else None
        )

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

    def _chimera(self, rng: np.random.Generator) -> Mesh:
        """A chimera distractor: one object's stretched mesh in another's colours."""
        n = len(self.objects)
        a = int(rng.integers(n))
        b = (a + 1 + int(rng.integers(n - 1))) % n  # any other object
        stretch = rng.uniform(*MESH_DISTRACTOR_STRETCH, size=3)
        if (a, b) not in self._chimera_colours:
            self._chimera_colours[(a, b)] = transferred_colours(self._meshes[a], self._meshes[b])
        return chimera_mesh(self._meshes[a], self._chimera_colours[(a, b)], stretch, self.device)

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
        m = cfg.image_margin
        cluster = (  # no draw with the default 0: frames stay as they were
            rng.uniform([m * cfg.width, m * cfg.height], [(1 - m) * cfg.width,
                                                          (1 - m) * cfg.height])
            if cfg.object_cluster_spread > 0 else None
        )
        for i in chosen:
            T = self._object_pose(rng, K_inv, cluster)
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
        occluders: list[tuple[int, int, np.ndarray]] = []  # (slot, target instance, offset)
        for _ in range(n_dis):
            size = rng.uniform(*cfg.distractor_size_m)
            chimera = (self._chimera(rng) if cfg.mesh_distractor_probability > 0
                       and rng.random() < cfg.mesh_distractor_probability else None)
            if chimera is not None:  # its own size: the object's, stretched
                size = float(2.0 * chimera.vertices.norm(dim=1).max())
            T = np.eye(4)
            T[:3, :3] = random_rotation(rng)
            if rng.random() < cfg.occluder_probability:
                target_k = int(rng.integers(len(centres)))
                target = centres[target_k]
                lateral = rng.normal(size=2) * 0.5 * size
                T[:3, 3] = target * rng.uniform(0.55, 0.85) + np.array([*lateral, 0.0])
                occluders.append((len(meshes), target_k, np.array([*lateral, 0.0])))
            else:
                z = rng.uniform(cfg.distance_m[0], far + 0.1)
                uv1 = np.array([rng.uniform(0, cfg.width), rng.uniform(0, cfg.height), 1.0])
                T[:3, 3] = z * (K_inv @ uv1)
            meshes.append(chimera if chimera is not None
                          else distractor_mesh(rng, size, self.device))
            poses.append(T)
            kinds.append(-1)
        # Back plane: covers the whole view (vertices kept in front of the camera).
        gap = rng.uniform(*cfg.back_plane_gap_m)
        tilt = np.deg2rad(cfg.back_plane_tilt_deg) * np.sqrt(rng.random())
        azim = rng.uniform(0, 2 * np.pi)
        normal = np.array(
            [np.sin(tilt) * np.cos(azim), np.sin(tilt) * np.sin(azim), -np.cos(tilt)]
        )
        if cfg.objects_on_plane:
            # the instances come to rest on the plane: put it where it touches them on average
            depth = float(
                np.mean(
                    [self._touching_plane_depth([m], [T], normal) for m, T in
                     zip(meshes[:n_obj], poses[:n_obj])]
                )
            )  # fmt: skip
            self._rest_on_plane(meshes, poses, n_obj, occluders, normal, depth)
            centres = [T[:3, 3] for T in poses[:n_obj]]
        elif cfg.back_plane_from == "surface":
            # the gap is the clearance along the normal; depth is on the optical axis
            touching = self._touching_plane_depth(meshes[:n_obj], poses[:n_obj], normal)
            depth = touching + gap / abs(float(normal[2]))
        else:
            depth = far + gap
        half = 2.0 * depth * max(cfg.width / cfg.fx, cfg.height / cfg.fy)
        # Corners lie half * sqrt(2) from the centre: keep them at least 0.1 * depth in front.
        half = min(half, 0.9 * depth / max(np.sqrt(2.0) * np.sin(tilt), 1e-6))
        back_plane = len(meshes)
        meshes.append(plane_mesh(rng, half, self.device, cells=8, **self._clutter(rng)))
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
            meshes.append(plane_mesh(rng, half_extra, self.device, **self._clutter(rng)))
            poses.append(plane_pose(z * (K_inv @ uv1), n / np.linalg.norm(n), rng))
            kinds.append(-2)
        light_dir = rng.normal(size=3)
        light_dir[2] = -abs(light_dir[2]) - 0.5  # from the camera side
        ambient = float(rng.uniform(*cfg.ambient))
        diffuse = float(rng.uniform(*cfg.diffuse))
        lighting = Lighting(
            ambient=ambient,
            diffuse=diffuse,
            direction_cam=tuple(float(x) for x in light_dir),  # type: ignore[arg-type]
            **self._sample_light_extras(rng, diffuse),
        )
        # no draw with the default 0: frames stay as they were
        shadows = cfg.shadow_probability > 0 and bool(rng.random() < cfg.shadow_probability)
        return _Scene(meshes=meshes, T_world=poses, kinds=kinds, lighting=lighting,
                      shadows=shadows, back_plane=back_plane)  # fmt: skip

    def _sample_light_extras(self, rng: np.random.Generator, diffuse: float) -> dict[str, Any]:
        """`Lighting` keywords of the extra lights and the highlight (none drawn when off).

        Args:
            rng: the scene's generator.
            diffuse: the main light's diffuse term (extra lights are a fraction of it).

        Returns:
            ``extra_lights``, ``specular`` and ``shininess`` where drawn; empty with the
            default settings.
        """
        cfg = self.config
        extras: dict[str, Any] = {}
        if cfg.lights_per_frame[1] > 1:
            n_lights = int(rng.integers(cfg.lights_per_frame[0], cfg.lights_per_frame[1] + 1))
            lights = []
            for _ in range(n_lights - 1):
                d = rng.normal(size=3)
                d[2] = -abs(d[2]) - 0.2  # the camera's half-space, grazing light included
                intensity = diffuse * rng.uniform(*EXTRA_LIGHT_FRACTION)
                lights.append((float(d[0]), float(d[1]), float(d[2]), float(intensity)))
            extras["extra_lights"] = tuple(lights)
        if cfg.specular[1] > 0:
            extras["specular"] = float(rng.uniform(*cfg.specular))
            extras["shininess"] = float(rng.uniform(*cfg.shininess))
        return extras

    def _rest_on_plane(
        self,
        meshes: list[Mesh],
        poses: list[np.ndarray],
        n_obj: int,
        occluders: list[tuple[int, int, np.ndarray]],
        normal: np.ndarray,
        depth: float,
    ) -> None:
        """Slide instances along their camera rays onto the plane (``objects_on_plane``).

        Updates `poses` in place: each of the first `n_obj` (object instances) and each
        distractor that is not an occluder moves along the ray through its origin until its
        farthest vertex along the plane normal lies on the plane; an occluder keeps its offset
        from its target's ray, scaled with it. No random numbers are drawn.

        Args:
            meshes: the scene's meshes so far (instances first, then distractors).
            poses: their (4, 4) camera-frame poses [m].
            n_obj: number of object instances.
            occluders: (slot, target instance, lateral offset [m]) of each occluder.
            normal: (3,) unit plane normal towards the camera (normal_z < 0).
            depth: the plane's depth on the optical axis [m]: points X with
                ``normal . X = normal_z * depth`` lie on it.
        """
        min_depth = 0.5 * self.config.distance_m[0]
        target_of = {slot: (k, offset) for slot, k, offset in occluders}
        scale = np.ones(n_obj)
        for slot in range(len(meshes)):
            if slot in target_of:
                continue
            T = poses[slot]
            t = T[:3, 3]
            toward = float(normal @ t)  # < 0: the ray meets the plane ahead
            if toward > -_MIN_RAY_PLANE_COSINE * float(np.linalg.norm(t)):
                continue
            v = meshes[slot].vertices.detach().cpu().double().numpy()
            reach = float(np.min((v @ T[:3, :3].T) @ normal))  # farthest vertex, from t
            s = (float(normal[2]) * depth - reach) / toward
            if s * t[2] < min_depth:
                continue
            T[:3, 3] = s * t
            if slot < n_obj:
                scale[slot] = s
        for slot, (k, offset) in target_of.items():
            T = poses[slot]
            T[:3, 3] = scale[k] * (T[:3, 3] - offset) + offset

    def _backdrop(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray | None:
        """This frame's image-space background, (h, w, 3) float32 [0, 1], or None.

        A photo with ``background_photo_probability``, else a clutter image with
        ``background_clutter_probability`` (`SynthConfig`); no draw for a probability of 0.
        """
        cfg = self.config
        if self._photos is not None and rng.random() < cfg.background_photo_probability:
            return self._photos.draw(rng, h, w)
        p = cfg.background_clutter_probability
        if p > 0 and rng.random() < p:
            texture = clutter_texture(rng, max(h, w), (1 / 250, 1 / 12),
                                      self._clutter_saturation(rng))[:h, :w]
            return texture.astype(np.float32) / np.float32(255.0)
        return None

    def _clutter(self, rng: np.random.Generator) -> dict[str, bool | float]:
        """`plane_mesh`'s clutter arguments for the next plane.

        Whether it gets a clutter texture (no draw when the probability is 0) and that
        texture's saturation (drawn unless the range is (1, 1)).
        """
        p = self.config.clutter_texture_probability
        clutter = bool(p > 0 and rng.random() < p)
        saturation = self._clutter_saturation(rng) if clutter else 1.0
        return {"clutter": clutter, "clutter_saturation": saturation}

    def _clutter_saturation(self, rng: np.random.Generator) -> float:
        """One clutter texture's saturation factor from ``clutter_saturation``.

        1 without a draw when the range is (1, 1).
        """
        lo, hi = self.config.clutter_saturation
        return float(rng.uniform(lo, hi)) if (lo, hi) != (1.0, 1.0) else 1.0

    def _object_pose(self, rng: np.random.Generator, K_inv: np.ndarray,
                     cluster: np.ndarray | None = None) -> np.ndarray:
        """(4, 4) pose of one object instance: depth, image position, then a uniform rotation.

        The image position is uniform inside the margin, or with `cluster` (u, v) px Gaussian
        around it (``object_cluster_spread`` image widths), clipped to the margin.
        """
        cfg = self.config
        z = rng.uniform(*cfg.distance_m)
        m = cfg.image_margin
        if cluster is None:
            u = rng.uniform(m * cfg.width, (1 - m) * cfg.width)
            v = rng.uniform(m * cfg.height, (1 - m) * cfg.height)
        else:
            du, dv = rng.normal(size=2) * cfg.object_cluster_spread * cfg.width
            u = float(np.clip(cluster[0] + du, m * cfg.width, (1 - m) * cfg.width))
            v = float(np.clip(cluster[1] + dv, m * cfg.height, (1 - m) * cfg.height))
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
        color = res.color.cpu().numpy()
        if scene.shadows:
            # the back plane (behind everything) receives shadows but casts none
            casters = [s for s in range(len(scene.meshes)) if s != scene.back_plane]
            color = cast_shadows(
                color, res.depth.cpu().numpy(), [scene.meshes[s] for s in casters],
                T_cam[casters], cfg.K, scene.lighting, backend=self.render_backend,
            )  # fmt: skip
        backdrop = self._backdrop(rng, *instance_ids.shape)
        if backdrop is not None:  # every background pixel (not objects, not distractors)
            color = np.where((instance_ids == -1)[..., None], backdrop, color)
        rgb = _camera_effects(color, rng, cfg)
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
    """Camera effects on a rendered image: color (H, W, 3) float [0, 1] -> uint8 RGB.

    In order: colour jitter, white balance, exposure curve (gamma), motion blur, defocus blur,
    shot noise, Gaussian noise, JPEG. A step that is off draws no random numbers.
    """
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
    if cfg.white_balance > 0:
        shift = cfg.white_balance * rng.uniform(-1.0, 1.0)
        img *= np.array([1.0 + shift, 1.0, 1.0 - shift], dtype=np.float32)
    if cfg.gamma != (1.0, 1.0):
        np.clip(img, 0.0, None, out=img)
        np.power(img, np.float32(rng.uniform(*cfg.gamma)), out=img)
    if cfg.motion_blur_probability > 0 and rng.random() < cfg.motion_blur_probability:
        img = cv2.filter2D(img, -1, _motion_kernel(rng))
    if rng.random() < cfg.blur_probability:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(*cfg.blur_sigma_px)))
    if cfg.shot_noise[1] > 0:
        k = rng.uniform(*cfg.shot_noise)
        noise = rng.standard_normal(img.shape, dtype=np.float32)
        noise *= np.sqrt(np.clip(img, 0.0, None))
        noise *= np.float32(k)
        img += noise
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


def _motion_kernel(rng: np.random.Generator) -> np.ndarray:
    """(L, L) float32 linear motion-blur kernel summing to 1.

    A centred segment of ``L ~ MOTION_BLUR_PX`` px in a uniformly random direction, drawn with
    sub-pixel samples spread bilinearly.
    """
    length = int(rng.integers(MOTION_BLUR_PX[0], MOTION_BLUR_PX[1] + 1))
    angle = rng.uniform(0.0, np.pi)
    kernel = np.zeros((length, length), dtype=np.float32)
    c = (length - 1) / 2.0
    for r in np.linspace(-c, c, 4 * length):
        x, y = c + r * np.cos(angle), c + r * np.sin(angle)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                          (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):  # fmt: skip
            if 0 <= x0 + dx < length and 0 <= y0 + dy < length:
                kernel[y0 + dy, x0 + dx] += w
    return kernel / kernel.sum()


def cast_shadows(
    color: np.ndarray,
    depth: np.ndarray,
    casters: Sequence[Mesh],
    T_cam: np.ndarray,
    K: np.ndarray,
    lighting: Lighting,
    *,
    backend: str = "auto",
    map_px_per_camera_px: float = 1.5,
    max_map_px: int = 1024,
) -> np.ndarray:
    """Darken what `casters` shadow from the main light of `lighting` (a shadow map).

    The casters are rasterized in an orthographic view along the main light into a distance
    map that covers the visible surface, with ``map_px_per_camera_px`` times the footprint of a
    camera pixel (at the median depth) per map pixel (Williams, "Casting curved shadows on
    curved surfaces", SIGGRAPH 1978). A visible point is in shadow where it lies farther from
    the light than the map's bilinearly interpolated distance by more than a slope-scaled bias
    (one map pixel plus twice the tangent of the light's incidence angle). A shadowed pixel
    keeps ambient and the extra lights but loses the main light's diffuse term: its colour is
    scaled by ``(k - diffuse * n.l) / k``, ``k`` the `Lighting` sum at the normal ``n``
    estimated from the depth map (one-sided differences, not across depth edges); a highlight
    is scaled with it (an approximation, as is that clamped colours stay clamped). Pixels
    turned away from the light (``n.l <= 0``) are unchanged. A surface that shadows nothing
    (a back plane behind everything) may be left out of `casters`: it still receives shadows.

    Args:
        color: (H, W, 3) float RGB in [0, 1], rendered with `lighting`.
        depth: (H, W) [m] depth along the optical axis, NaN where nothing was hit.
        casters: S meshes (metres, object frames) that cast shadows.
        T_cam: (S, 4, 4) object-in-camera poses [m] of `casters`.
        K: (3, 3) intrinsics [px] of the render (no skew).
        lighting: the lighting of the render; its main light casts the shadows.
        backend: hard-rasterizer backend of the map, as in `render`.
        map_px_per_camera_px: map pixel size in camera-pixel footprints.
        max_map_px: the shadow map's longest side [px] at most.

    Returns:
        (H, W, 3) RGB in the dtype of `color`; `color` is not modified.

    Raises:
        ShapeError: inconsistent shapes.
        InputError: ``map_px_per_camera_px <= 0`` or ``max_map_px < 8``.
    """
    if not map_px_per_camera_px > 0 or max_map_px < 8:
        raise InputError(
            f"cast_shadows: expected map_px_per_camera_px > 0 and max_map_px >= 8, got "
            f"{map_px_per_camera_px}, {max_map_px}"
        )
    height, width = depth.shape
    if color.shape != (height, width, 3) or T_cam.shape != (len(casters), 4, 4):
        raise ShapeError(
            f"cast_shadows: expected color (H, W, 3) with depth (H, W) and T_cam "
            f"({len(casters)}, 4, 4), got {color.shape}, {depth.shape}, {T_cam.shape}"
        )
    out = color.copy()
    f32 = np.float32
    valid = np.isfinite(depth)
    if not casters or not valid.any():
        return out
    light = np.asarray(lighting.direction_cam, dtype=np.float64)
    light /= np.linalg.norm(light)
    # Light frame (right-handed): e1, e2 span the map, the third axis points away from the light.
    e1 = np.cross(light, [1.0, 0.0, 0.0] if abs(light[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    to_light = np.stack([e1, np.cross(-light, e1), -light])  # (3, 3): q = to_light @ X_cam
    # receivers: the visible points in the light frame, as (H, W) float32 images
    z = np.where(valid, depth, 0.0).astype(f32)
    cols = (np.arange(width) - K[0, 2]) / K[0, 0]  # the ray through (u, v) is (cols, rows, 1)
    rows = (np.arange(height) - K[1, 2]) / K[1, 1]
    q = [
        (to_light[i, 0] * cols[None, :] + to_light[i, 1] * rows[:, None] + to_light[i, 2])
        .astype(f32) * z for i in range(3)
    ]  # fmt: skip
    # the map: around the receivers, pixel centres at integers, a spare pixel on each side
    q_valid = [c[valid] for c in q]
    lo = np.array([q_valid[0].min(), q_valid[1].min()], dtype=np.float64)
    extent = np.array([q_valid[0].max(), q_valid[1].max()]) - lo
    size = max(
        map_px_per_camera_px * float(np.median(z[::4, ::4][valid[::4, ::4]])) / K[0, 0],
        float(extent.max()) / (max_map_px - 3),
    )
    lo -= size
    map_w, map_h = (np.floor(extent / size).astype(int) + 3).tolist()
    map_dist = _orthographic_depth(casters, T_cam, to_light, lo, size, map_w, map_h, backend)
    # where nothing casts: just beyond every receiver, so that no tap there shadows
    beyond = float(q_valid[2].max()) + 2.0 * size
    caster_dist = cv2.remap(
        np.where(np.isfinite(map_dist), map_dist, beyond).astype(f32),
        (q[0] - f32(lo[0])) * f32(1.0 / size), (q[1] - f32(lo[1])) * f32(1.0 / size),
        cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=beyond,
    )  # fmt: skip
    # candidates behind the map by at least the smallest bias; then normals, on those only
    pix = np.flatnonzero(valid & (q[2] - f32(size) > caster_dist))
    n = _depth_normals(q, z, pix)
    ray_q = [c.reshape(-1)[pix] for c in q]
    sign = np.where(n[0] * ray_q[0] + n[1] * ray_q[1] + n[2] * ray_q[2] > 0, -1, 1)
    n = [c * sign for c in n]  # towards the camera
    n_l = -n[2]  # n . light: the light is (0, 0, -1) in the light frame
    n_l_safe = np.maximum(n_l, 1e-3)
    tan = np.sqrt(np.maximum(1.0 - n_l_safe**2, 0.0)) / n_l_safe
    bias = size * (1.0 + 2.0 * np.minimum(tan, 10.0))
    shadowed = (n_l > 1e-3) & (ray_q[2] - bias > caster_dist.reshape(-1)[pix])
    pix, n, n_l = pix[shadowed], [c[shadowed] for c in n], n_l[shadowed]
    # shadowed: the main light's diffuse term is gone
    k = lighting.ambient + lighting.diffuse * n_l
    for dx_l, dy_l, dz_l, intensity in lighting.extra_lights:
        d = to_light @ (np.array([dx_l, dy_l, dz_l]) / np.linalg.norm([dx_l, dy_l, dz_l]))
        k = k + intensity * np.maximum(n[0] * d[0] + n[1] * d[1] + n[2] * d[2], 0.0)
    flat = out.reshape(-1, 3)
    flat[pix] *= (1.0 - lighting.diffuse * n_l / k)[:, None].astype(out.dtype)
    return out


def _orthographic_depth(
    casters: Sequence[Mesh],
    T_cam: np.ndarray,
    to_light: np.ndarray,
    lo: np.ndarray,
    size: float,
    map_w: int,
    map_h: int,
    backend: str,
) -> np.ndarray:
    """(map_h, map_w) distance [m] of the nearest caster along the light; inf for none.

    Map pixel (x, y) (centres at integers) sees ``lo + size * (x, y)`` of the light frame's
    first two axes; distance is the third. The pinhole rasterizer does the orthographic view: a
    vertex (x, y, dist) goes to (x' w, y' w, w) with map coordinates (x', y') and
    ``w = 1 / (c - dist)``; with K = I it projects to (x', y'), and since depth is interpolated
    as 1 / z linearly, the depth buffer holds 1 / (c - dist) of the nearest surface.
    """
    verts, faces, n_verts = [], [], 0
    for mesh, T in zip(casters, T_cam):
        v = mesh.vertices.detach().cpu().double().numpy()
        verts.append(v @ (to_light @ T[:3, :3]).T + to_light @ T[:3, 3])
        faces.append(mesh.faces.detach().cpu() + n_verts)
        n_verts += v.shape[0]
    q_v = np.concatenate(verts)
    c = float(q_v[:, 2].max()) + 1.0
    w = 1.0 / (c - q_v[:, 2])
    map_px = (q_v[:, :2] - lo) / size
    faces_t = torch.cat(faces)
    if backend == "numba" or (backend == "auto" and numba_available()):
        from dvc_perception.render.raster_numba import rasterize_faces_numba

        _, depth, _ = rasterize_faces_numba(map_px, w, faces_t.numpy(), map_w, map_h, 0.0)
    else:
        eye = torch.eye(3, dtype=torch.float64)
        uvw = np.concatenate([map_px * w[:, None], w[:, None]], axis=1)
        depth = render(
            Mesh(vertices=torch.from_numpy(uvw), faces=faces_t, name="shadow casters"),
            (eye, torch.zeros(3, dtype=torch.float64)), eye, map_w, map_h, znear=0.0,
            shade=False, backend=backend,
        ).depth.numpy().reshape(-1)  # fmt: skip
    dist = np.full(map_h * map_w, np.inf)
    hit = np.isfinite(depth)
    dist[hit] = c - 1.0 / depth[hit]
    return dist.reshape(map_h, map_w)


def _depth_normals(q: list[np.ndarray], z: np.ndarray, pix: np.ndarray) -> list[np.ndarray]:
    """Unit surface normals (unoriented) at pixels `pix` of a depth map's 3D points.

    In each image direction the one-sided difference with the smaller depth step is used, so
    that normals do not straddle depth edges.

    Args:
        q: 3 x (H, W) coordinates of each pixel's surface point [m] (any orthonormal frame).
        z: (H, W) depth along the optical axis [m].
        pix: (P,) int64 row-major pixel indices.

    Returns:
        3 x (P,) float64 normal components in the frame of `q`.
    """
    height, width = z.shape
    zf = z.reshape(-1)
    qf = [c.reshape(-1) for c in q]
    row, col = np.divmod(pix, width)
    tangents = []
    for offset, has_prev, has_next in (
        (1, col > 0, col < width - 1), (width, row > 0, row < height - 1)
    ):  # fmt: skip
        prev = np.where(has_prev, pix - offset, pix)
        nxt = np.where(has_next, pix + offset, pix)
        step_prev = np.where(has_prev, np.abs(zf[pix] - zf[prev]), np.inf)
        step_next = np.where(has_next, np.abs(zf[nxt] - zf[pix]), np.inf)
        fwd = step_next <= step_prev
        a, b = np.where(fwd, nxt, pix), np.where(fwd, pix, prev)
        tangents.append([c[a].astype(np.float64) - c[b] for c in qf])
    tx, ty = tangents
    n = [
        tx[1] * ty[2] - tx[2] * ty[1],
        tx[2] * ty[0] - tx[0] * ty[2],
        tx[0] * ty[1] - tx[1] * ty[0],
    ]
    norm = np.maximum(np.sqrt(n[0] ** 2 + n[1] ** 2 + n[2] ** 2), 1e-20)
    return [c / norm for c in n]

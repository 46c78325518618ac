# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Training datasets: frames with ground truth -> network-input tensors, with augmentation.

A *frame source* is any sequence of `Frame` (an RGB image, its pinhole intrinsics, optional
metric depth and per-object poses/masks); `ShardFrameSource` reads the synthetic shards of
`render/synth.py`. `PoseDataset` and `DepthDataset` map a frame to the network input size
(letterbox: scale by min(W/w, H/h), image at the top-left, zero padding), apply a seeded
augmentation (random scale and shift with the intrinsics updated exactly, colour jitter,
noise, blur) and compute the targets (2D keypoints by projecting the object's 3D keypoints with
the ground-truth pose, visibility, masks at the heatmap stride, depth). With `ZoomSampling`,
`PoseDataset` instead crops around one jittered instance box of the full-resolution frame, as
the two-stage pipeline's `engines.preprocess.ZoomCrop` does at serving time.

Determinism: sample i in epoch e is augmented with ``numpy.random.default_rng([seed, e, i])``,
independent of worker, rank and order, so training resumes and data-parallel runs reproduce.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dvc_perception.engines.preprocess import (
    ZoomCrop,
    box_from_mask,
    letterbox_affine,
    warp_to_input,
)
from dvc_perception.errors import ConfigError, ShapeError, check_shape
from dvc_perception.geometry.symmetry import canonical_pose, transforms_from_plain
from dvc_perception.models.heads import heatmap_cell_centres
from dvc_perception.models.keypoint_net import HEATMAP_STRIDE
from dvc_perception.render.objects import ObjectDescription, sample_surface


@dataclass(frozen=True)
class ObjectInfo:
    """What training and evaluation know about one object.

    Attributes:
        object_id: the id (output channel group of the keypoint network).
        keypoints_obj: (K, 3) float64 m, object frame, the 3D keypoints.
        diameter_m: object diameter [m] (ADD threshold is 0.1 of it).
        symmetric: evaluate with ADD-S instead of ADD.
        points_obj: (N, 3) float64 m, object frame, surface points for ADD(-S).
        symmetries: the object's symmetry description (copied into model metadata).
    """

    object_id: str
    keypoints_obj: np.ndarray
    diameter_m: float
    symmetric: bool
    points_obj: np.ndarray
    symmetries: Any = None

    def __post_init__(self) -> None:
        check_shape(self.keypoints_obj, "K,3", name=f"{self.object_id}.keypoints_obj")
        check_shape(self.points_obj, "N,3", name=f"{self.object_id}.points_obj")
        if not self.diameter_m > 0:
            raise ConfigError(f"{self.object_id}: diameter_m must be > 0, got {self.diameter_m}")


@dataclass(frozen=True)
class ObjectAnnotation:
    """Ground truth of one object instance in a frame.

    Attributes:
        object_id: which object.
        R: (3, 3) object-in-camera rotation.
        t: (3,) m object-in-camera translation.
        mask: (H, W) bool visible-pixel mask of this instance, or None.
        keypoints_visible: (K,) bool visibility of the 3D keypoints under this pose, or None
            (then: in image and on the visible mask; also when a symmetric object's targets use
            another of its symmetric poses, see `PoseDataset`).
    """

    object_id: str
    R: np.ndarray
    t: np.ndarray
    mask: np.ndarray | None = None
    keypoints_visible: np.ndarray | None = None


@dataclass(frozen=True)
class Frame:
    """One frame with ground truth.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        K: (3, 3) float64 pinhole intrinsics px (the image is undistorted).
        depth: (H, W) float32 m (float16 from shards opened for dense pose targets), NaN
            where unknown, or None.
        objects: the annotated object instances.
    """

    image: np.ndarray
    K: np.ndarray
    depth: np.ndarray | None = None
    objects: tuple[ObjectAnnotation, ...] = field(default_factory=tuple)


class FrameSource(Protocol):
    """A sequence of frames (`len` and integer indexing)."""

    def __len__(self) -> int:
        """Number of frames."""
        ...

    def __getitem__(self, index: int) -> Frame:
        """Frame `index`."""
        ...


@dataclass(frozen=True)
class AugmentConfig:
    """Seeded augmentation; every range is symmetric around "no change".

    Attributes:
        scale: random zoom factor range (the intrinsics scale with it).
        shift_frac: random shift as a fraction of the input size.
        brightness: additive brightness range (RGB in [0, 1]).
        contrast: multiplicative contrast range around 1.
        saturation: saturation range around 1.
        channel_gain: per-channel gain range around 1 (white balance).
        noise_std: maximum Gaussian noise standard deviation.
        blur_prob: probability of a Gaussian blur (sigma 0.5 to 1.2 px).
    """

    scale: tuple[float, float] = (0.85, 1.2)
    shift_frac: float = 0.1
    brightness: float = 0.15
    contrast: float = 0.25
    saturation: float = 0.3
    channel_gain: float = 0.1
    noise_std: float = 0.03
    blur_prob: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"augment.scale: expected 0 < lo <= hi, got {self.scale}")
        if not 0 <= self.blur_prob <= 1:
            raise ConfigError(f"augment.blur_prob: expected in [0, 1], got {self.blur_prob}")


@dataclass(frozen=True)
class ZoomSampling:
    """Zoom-crop items for the keypoint network of the two-stage pipeline.

    Serving (`pipeline.network.TwoStageKeypointSource`) cuts
    ``ZoomCrop.from_box(box, (W, H), input_size, scale=crop_scale)`` out of the full-resolution
    frame around each detector box; training with this sampling builds the same crops. Each item
    picks one usable instance (below) of a network object, seeded like the augmentation, takes
    the box of its visible mask (source px, ``(x, y, w, h)``, x the first column), jitters it as
    a detector's error would and crops around it. Jitter (uniform, independent draws): the box
    centre moves by up to `shift_frac` x the box's longer side along each axis, and its width
    and height scale by one factor in `scale_range`. `exact` (no jitter) is the
    detector-perfect crop that validation uses.

    Attributes:
        crop_scale: crop side in units of the (jittered) box's longer side, as serving's
            ``crop_scale``.
        shift_frac: maximum centre shift per axis, as a fraction of the box's longer side.
        scale_range: range of the box size factor.
        min_visible_px: an instance is usable with at least this many visible mask pixels at
            the source resolution (an annotation without a mask never is).
    """

    crop_scale: float = 1.5
    shift_frac: float = 0.1
    scale_range: tuple[float, float] = (0.9, 1.15)
    min_visible_px: int = 50

    def __post_init__(self) -> None:
        if not (np.isfinite(self.crop_scale) and self.crop_scale > 0):
            raise ConfigError(f"zoom crop_scale: expected > 0, got {self.crop_scale}")
        if not 0 <= self.shift_frac < 1:
            raise ConfigError(f"zoom shift_frac: expected in [0, 1), got {self.shift_frac}")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"zoom scale_range: expected 0 < lo <= hi, got {self.scale_range}")
        if self.min_visible_px < 1:
            raise ConfigError(f"zoom min_visible_px: expected >= 1, got {self.min_visible_px}")

    def exact(self) -> ZoomSampling:
        """The same sampling without jitter (the visible box itself: validation)."""
        return dataclasses.replace(self, shift_frac=0.0, scale_range=(1.0, 1.0))

    def jitter(self, box_xywh: Sequence[float], rng: np.random.Generator
               ) -> tuple[float, float, float, float]:
        """`box_xywh` with its centre shifted and its size scaled by random draws of `rng`."""
        x, y, w, h = (float(v) for v in box_xywh)
        if self.shift_frac == 0 and self.scale_range == (1.0, 1.0):
            return x, y, w, h
        side = max(w, h)
        du, dv = rng.uniform(-self.shift_frac, self.shift_frac, size=2) * side
        a = float(rng.uniform(*self.scale_range))
        cu, cv = x + 0.5 * w + du, y + 0.5 * h + dv
        return cu - 0.5 * a * w, cv - 0.5 * a * h, a * w, a * h


def _augment_affine(
    base: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig, width: int, height: int
) -> np.ndarray:
    """Compose a random zoom about the input centre and a shift onto `base` (2x3)."""
    a = float(rng.uniform(*cfg.scale))
    dx, dy = rng.uniform(-cfg.shift_frac, cfg.shift_frac, size=2) * (width, height)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    zoom = np.array([[a, 0.0, cx - a * cx + dx], [0.0, a, cy - a * cy + dy], [0.0, 0.0, 1.0]])
    return (zoom @ np.vstack([base, [0.0, 0.0, 1.0]]))[:2]


#: standard normal float32 samples that `_photometric` draws its pixel noise from (one random
#: window per image: i.i.d. within an image, ~20x cheaper than drawing fresh normals per pixel)
_NOISE_BANK_SIZE = 1 << 21
_noise_bank: np.ndarray | None = None


def _pixel_noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Standard normal float32 noise of `shape` (a random window of the fixed noise bank)."""
    global _noise_bank
    n = int(np.prod(shape))
    if _noise_bank is None or _noise_bank.size < n + 1:
        size = max(_NOISE_BANK_SIZE, 2 * n)
        _noise_bank = np.random.default_rng(0x5EED).standard_normal(size, dtype=np.float32)
    start = int(rng.integers(0, _noise_bank.size - n))
    return _noise_bank[start : start + n].reshape(shape)


def _photometric(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Colour jitter, blur and noise on (H, W, 3) float32 RGB in [0, 1] (float32 throughout).

    Saturation (towards the per-pixel grey), per-channel gain, then contrast about the image
    mean and brightness: all affine in RGB, so they are applied as one 3x4 colour matrix.
    """
    img = image.astype(np.float32, copy=False)
    saturation = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    gain = rng.uniform(1 - cfg.channel_gain, 1 + cfg.channel_gain, size=3)
    contrast = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    brightness = rng.uniform(-cfg.brightness, cfg.brightness)
    # row-vector colour map: rgb' = rgb @ M, M = ((1 - s)/3 * ones + s * I) @ diag(gain)
    colour = ((1 - saturation) / 3.0 * np.ones((3, 3)) + saturation * np.eye(3)) * gain
    mean = float((np.asarray(cv2.mean(img)[:3]) @ colour).mean())  # cv2.mean: float64 sums
    affine = np.empty((3, 4))
    affine[:, :3] = (colour * contrast).T  # cv2.transform: dst = affine @ [rgb, 1]
    affine[:, 3] = mean * (1 - contrast) + brightness
    img = cv2.transform(img, affine)
    if rng.uniform() < cfg.blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.2)))
    noise_std = np.float32(rng.uniform(0, cfg.noise_std))
    img += _pixel_noise(img.shape, rng) * noise_std
    return np.clip(img, 0.0, 1.0, out=img)


def _warp(
    array: np.ndarray, affine: np.ndarray, width: int, height: int, *, nearest: bool, fill: float
) -> np.ndarray:
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(
        array, affine, (width, height), flags=flags, borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill,
    )


def _prepare(
    frame: Frame,
    width: int,
    height: int,
    augment: AugmentConfig | None,
    rng: np.random.Generator,
    crop: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(affine 2x3, image (h, w, 3) float32 [0, 1], K (3, 3) float64) of the network input.

    Without `crop` the output is the full input (width x height). With ``crop = (cw, ch)`` it is
    a cw x ch window of it, at a multiple of 4 px (the heatmap grid stays aligned), centred near
    a random annotated object 80 % of the time and anywhere otherwise; K is shifted with it.
    """
    check_shape(frame.image, "H,W,3", name="frame.image")
    src_h, src_w = frame.image.shape[:2]
    affine = letterbox_affine(src_w, src_h, width, height)
    if augment is not None:
        affine = _augment_affine(affine, rng, augment, width, height)
    out_w, out_h = width, height
    if crop is not None:
        cw, ch = crop
        K_full = np.vstack([affine, [0.0, 0.0, 1.0]]) @ np.asarray(frame.K, dtype=np.float64)
        centres = [K_full @ np.asarray(a.t, np.float64) for a in frame.objects if a.t[2] > 0]
        if centres and rng.uniform() < 0.8:
            c = centres[int(rng.integers(len(centres)))]
            x0 = c[0] / c[2] - cw / 2 + rng.uniform(-0.3, 0.3) * cw
            y0 = c[1] / c[2] - ch / 2 + rng.uniform(-0.3, 0.3) * ch
        else:
            x0, y0 = rng.uniform(0, width - cw), rng.uniform(0, height - ch)
        x0 = int(np.clip(4 * round(x0 / 4), 0, width - cw))
        y0 = int(np.clip(4 * round(y0 / 4), 0, height - ch))
        affine = affine - np.array([[0.0, 0.0, x0], [0.0, 0.0, y0]])
        out_w, out_h = cw, ch
    image, K = _input_from_affine(frame, affine, out_w, out_h, augment, rng)
    return affine, image, K


def _input_from_affine(
    frame: Frame,
    affine: np.ndarray,
    out_w: int,
    out_h: int,
    augment: AugmentConfig | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(image (out_h, out_w, 3) float32 [0, 1], K (3, 3) float64) of the input `affine` makes.

    The frame goes through serving's warp (`engines.preprocess.warp_to_input`), then the
    photometric augmentation when `augment` is given; ``K' = A K`` exactly.
    """
    image = warp_to_input(frame.image, affine, out_w, out_h)  # serving's map (preprocess)
    if augment is not None:
        image = _photometric(image, rng, augment)
    K = np.vstack([affine, [0.0, 0.0, 1.0]]) @ np.asarray(frame.K, dtype=np.float64)
    return image, K


def _check_crop(
    crop: tuple[int, int] | None, width: int, height: int
) -> tuple[int, int] | None:
    """Validate a training crop size (multiples of 16 within the input)."""
    if crop is None:
        return None
    if not (crop[0] % 16 == 0 and crop[1] % 16 == 0 and 32 <= crop[0] <= width
            and 32 <= crop[1] <= height):
        raise ConfigError(f"crop: expected multiples of 16 within the input size, got {crop}")
    return int(crop[0]), int(crop[1])


def _stride_pool(mask: np.ndarray, stride: int) -> np.ndarray:
    """(H, W) {0, 1} -> (H/stride, W/stride) covered fraction."""
    h, w = mask.shape
    if h % stride or w % stride:
        raise ShapeError(f"mask: expected sides divisible by {stride}, got {mask.shape}")
    # INTER_AREA at an integer factor is exactly the block mean (and ~10x faster than numpy's)
    return cv2.resize(mask, (w // stride, h // stride), interpolation=cv2.INTER_AREA)


class _EpochFrames(Dataset):
    """Frames with a per-epoch augmentation stream (subclasses set frames, seed and epoch)."""

    frames: FrameSource
    seed: int
    epoch: int

    def _rng(self, index: int) -> np.random.Generator:
        """The generator of item `index` in the current epoch (seed, epoch, index)."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of `epoch`."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Number of frames."""
        return len(self.frames)


class _InstanceTargets(NamedTuple):
    """Targets of one annotated instance in one network input (see `PoseDataset`)."""

    R: np.ndarray
    t: np.ndarray
    uv: np.ndarray
    inside: np.ndarray
    visible: np.ndarray
    mask: np.ndarray | None  # (H/4, W/4) covered fraction, None without a mask annotation
    mask_px: int  # visible pixels at the input size (0 without a mask)
    present: bool
    coordinates: np.ndarray | None = None  # (3, H/4, W/4) m object frame, dense targets only
    coordinates_valid: np.ndarray | None = None  # (H/4, W/4) bool


class PoseDataset(_EpochFrames):
    """Frames -> keypoint-network inputs and targets.

    Args:
        frames: the frame source.
        objects: the objects of the network, in its output order (O of them, K keypoints each).
        input_width: network input width px.
        input_height: network input height px.
        augment: augmentation, or None (validation).
        seed: augmentation seed.
        min_mask_px: an object counts as present with at least this many visible pixels at the
            input size (when its annotation has a mask).
        crop: (width, height) multiples of 16: train on random crops of the input, mostly
            around an object (the network is fully convolutional; ~input/crop times cheaper per
            sample). None: the whole input.
        zoom: zoom-crop items instead of the letterboxed frame (`ZoomSampling`: the input is an
            object-centred crop of the full-resolution frame around one sampled instance, as
            the two-stage pipeline feeds the network; its box jitter replaces the geometric
            zoom/shift augmentation, the photometric one stays). The sampled instance is always
            `present`; every other network object in the crop is a target as usual (of several
            instances of one object, the one with the most visible pixels in the crop; other
            instances of the sampled object are not targets). A frame without a usable instance
            present in its crop gives the letterboxed item the default mode gives. Not with
            `crop`. None: the letterboxed frame.
        coordinates: also give dense object-coordinate targets (needs frames with depth and
            masks): for every stride-4 cell whose centre falls on an instance's visible mask,
            the object-frame point seen there (the depth back-projected through the cell
            centre's source pixel, moved into the object frame by the instance's pose; the
            canonical pose of a symmetric object, as the keypoints).

    Items (dict of tensors): ``image`` (3, H, W) float32 RGB [0, 1]; ``K`` (3, 3) float64 of the
    input image; ``keypoints`` (O, K, 2) float32 px; ``kp_in_image`` (O, K) bool;
    ``kp_visible`` (O, K) float32; ``present`` (O,) bool; ``R`` (O, 3, 3) float64; ``t`` (O, 3)
    float64 m; ``mask`` (O, H/4, W/4) float32 covered fraction; ``index`` () long; with
    `coordinates` also ``coordinates`` (O, 3, H/4, W/4) float32 m and ``coordinates_valid``
    (O, H/4, W/4) bool.
    """

    def __init__(
        self,
        frames: FrameSource,
        objects: Sequence[ObjectInfo],
        input_width: int,
        input_height: int,
        *,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        min_mask_px: int = 40,
        crop: tuple[int, int] | None = None,
        zoom: ZoomSampling | None = None,
        coordinates: bool = False,
    ) -> None:
        if not objects:
            raise ConfigError("PoseDataset: no objects")
        n_kp = {int(o.keypoints_obj.shape[0]) for o in objects}
        if len(n_kp) != 1:
            raise ConfigError(f"PoseDataset: objects must share one keypoint count, got {n_kp}")
        if input_width % HEATMAP_STRIDE or input_height % HEATMAP_STRIDE:
            raise ConfigError(f"input size must be a multiple of {HEATMAP_STRIDE}")
        if zoom is not None and crop is not None:
            raise ConfigError("PoseDataset: zoom crops and crop exclude each other")
        self.frames = frames
        self.objects = tuple(objects)
        self.width, self.height = int(input_width), int(input_height)
        self.augment = augment
        self.seed = int(seed)
        self.min_mask_px = int(min_mask_px)
        self.crop = _check_crop(crop, self.width, self.height)
        self.zoom = zoom
        self.coordinates = bool(coordinates)
        self.epoch = 0
        self._index = {o.object_id: i for i, o in enumerate(self.objects)}
        self._symmetries = [transforms_from_plain(o.symmetries) for o in self.objects]

    def _targets(self, ann: ObjectAnnotation, j: int, frame: Frame, K: np.ndarray,
                 affine: np.ndarray, out_w: int, out_h: int) -> _InstanceTargets:
        """Targets of instance `ann` (network object `j`) in the input `affine` / `K` make."""
        # a symmetric object's pose is taken as its canonical equivalent, so the keypoint
        # targets (and the pose loss) never depend on which of the look-alike poses was drawn
        R, t = canonical_pose(ann.R, ann.t, self._symmetries[j])
        # an annotation's keypoint visibility is that of the keypoints under the drawn pose;
        # under a symmetric equivalent keypoint k lands elsewhere, so it is taken from the mask
        drawn = np.allclose(R, ann.R, rtol=0.0, atol=1e-12) and np.allclose(
            t, ann.t, rtol=0.0, atol=1e-12)
        kp_visible = ann.keypoints_visible if drawn else None
        cam = self.objects[j].keypoints_obj @ R.T + t
        uv = (cam @ K.T)[:, :2] / np.maximum(cam[:, 2:], 1e-6)
        inside = (
            (cam[:, 2] > 1e-3)
            & (uv[:, 0] >= -0.5) & (uv[:, 0] <= out_w - 0.5)
            & (uv[:, 1] >= -0.5) & (uv[:, 1] <= out_h - 0.5)
        )
        mask, mask_px = None, 0
        if ann.mask is not None:
            check_shape(ann.mask, f"{frame.image.shape[0]},{frame.image.shape[1]}",
                        name=f"{ann.object_id}.mask")
            full = _warp(ann.mask.astype(np.uint8), affine, out_w, out_h, nearest=True,
                         fill=0.0)
            mask = _stride_pool(full.astype(np.float32), HEATMAP_STRIDE)
            mask_px = int(full.sum())
            obj_present = mask_px >= self.min_mask_px
        else:
            full = None
            obj_present = True
        if kp_visible is not None:
            vis = np.asarray(kp_visible, bool) & inside
        elif full is not None:
            ui = np.clip(np.rint(uv[:, 0]), 0, out_w - 1).astype(int)
            vi = np.clip(np.rint(uv[:, 1]), 0, out_h - 1).astype(int)
            vis = inside & (full[vi, ui] > 0)
        else:
            vis = inside
        coords = valid = None
        if self.coordinates:
            coords, valid = _coordinate_targets(frame, ann, R, t, affine, out_w, out_h)
        return _InstanceTargets(R, t, uv, inside, vis, mask, mask_px,
                                obj_present and int(inside.sum()) >= 4, coords, valid)

    def _zoom_input(self, frame: Frame, rng: np.random.Generator
                    ) -> tuple[np.ndarray, int, _InstanceTargets] | None:
        """(affine, the sampled instance's object slot, its targets) of a zoom crop, or None.

        The usable instances are tried in a random order (jittered box each) until one is
        present in its crop; None when none is.
        """
        assert self.zoom is not None
        src_h, src_w = frame.image.shape[:2]
        usable = []
        for a, ann in enumerate(frame.objects):
            j = self._index.get(ann.object_id)
            if j is None or ann.mask is None or not float(ann.t[2]) > 0:
                continue
            check_shape(ann.mask, f"{src_h},{src_w}", name=f"{ann.object_id}.mask")
            mask = np.asarray(ann.mask, bool)
            box, count = box_from_mask(mask), int(np.count_nonzero(mask))
            if box is not None and count >= self.zoom.min_visible_px:
                usable.append((a, j, box))
        for c in rng.permutation(len(usable)) if usable else ():
            a, j, box = usable[int(c)]
            crop = ZoomCrop.from_box(self.zoom.jitter(box, rng), (src_w, src_h),
                                     (self.width, self.height), scale=self.zoom.crop_scale)
            affine = crop.affine
            K = np.vstack([affine, [0.0, 0.0, 1.0]]) @ np.asarray(frame.K, dtype=np.float64)
            targets = self._targets(frame.objects[a], j, frame, K, affine, self.width,
                                    self.height)
            if targets.present:
                return affine, j, targets
        return None

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Sample `index` (see the class docstring for the keys)."""
        frame = self.frames[index]
        rng = self._rng(index)
        zoomed = None
        if self.zoom is not None:
            check_shape(frame.image, "H,W,3", name="frame.image")
            zoomed = self._zoom_input(frame, rng)
        if zoomed is None:
            if self.zoom is not None:
                rng = self._rng(index)  # the fallback is exactly the letterboxed item
            affine, image, K = _prepare(frame, self.width, self.height, self.augment, rng,
                                        self.crop)
        else:
            affine = zoomed[0]
            image, K = _input_from_affine(frame, affine, self.width, self.height, self.augment,
                                          rng)
        out_h, out_w = int(image.shape[0]), int(image.shape[1])
        o, k = len(self.objects), int(self.objects[0].keypoints_obj.shape[0])
        h, w = out_h // HEATMAP_STRIDE, out_w // HEATMAP_STRIDE
        keypoints = np.zeros((o, k, 2), np.float32)
        in_image = np.zeros((o, k), bool)
        visible = np.zeros((o, k), np.float32)
        present = np.zeros(o, bool)
        R = np.tile(np.eye(3), (o, 1, 1))
        t = np.tile(np.array([0.0, 0.0, 1.0]), (o, 1))
        masks = np.zeros((o, h, w), np.float32)
        coords = np.zeros((o, 3, h, w), np.float32) if self.coordinates else None
        coords_valid = np.zeros((o, h, w), bool) if self.coordinates else None
        chosen: dict[int, _InstanceTargets] = {}
        for ann in frame.objects:
            j = self._index.get(ann.object_id)
            if j is None:
                continue
            if zoomed is None:  # the letterboxed frame: the last instance of an object wins
                chosen[j] = self._targets(ann, j, frame, K, affine, out_w, out_h)
                self._store(chosen[j], j, keypoints, in_image, visible, present, R, t, masks,
                            coords, coords_valid)
                continue
            if j == zoomed[1]:  # other instances of the sampled object are no targets
                continue
            cand = self._targets(ann, j, frame, K, affine, out_w, out_h)
            if j not in chosen or (cand.present, cand.mask_px) > (chosen[j].present,
                                                                  chosen[j].mask_px):
                chosen[j] = cand
        if zoomed is not None:
            chosen[zoomed[1]] = zoomed[2]
            for j, targets in chosen.items():
                self._store(targets, j, keypoints, in_image, visible, present, R, t, masks,
                            coords, coords_valid)
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "K": torch.from_numpy(K),
            "keypoints": torch.from_numpy(keypoints),
            "kp_in_image": torch.from_numpy(in_image),
            "kp_visible": torch.from_numpy(visible),
            "present": torch.from_numpy(present),
            "R": torch.from_numpy(R),
            "t": torch.from_numpy(t),
            "mask": torch.from_numpy(masks),
            "index": torch.tensor(int(index)),
        }
        if coords is not None and coords_valid is not None:
            item["coordinates"] = torch.from_numpy(coords)
            item["coordinates_valid"] = torch.from_numpy(coords_valid)
        return item

    @staticmethod
    def _store(targets: _InstanceTargets, j: int, keypoints: np.ndarray, in_image: np.ndarray,
               visible: np.ndarray, present: np.ndarray, R: np.ndarray, t: np.ndarray,
               masks: np.ndarray, coords: np.ndarray | None = None,
               coords_valid: np.ndarray | None = None) -> None:
        """Write one instance's targets into slot `j` (a missing mask leaves the slot's)."""
        R[j], t[j] = targets.R, targets.t
        keypoints[j], in_image[j] = targets.uv, targets.inside
        if targets.mask is not None:
            masks[j] = targets.mask
        visible[j] = targets.visible
        present[j] = targets.present
        if coords is not None and targets.coordinates is not None:
            coords[j] = targets.coordinates
        if coords_valid is not None and targets.coordinates_valid is not None:
            coords_valid[j] = targets.coordinates_valid


def _coordinate_targets(frame: Frame, ann: ObjectAnnotation, R: np.ndarray, t: np.ndarray,
                        affine: np.ndarray, out_w: int, out_h: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Dense object-coordinate targets of one instance at the stride-4 cell centres.

    Each cell centre (input px ``4 j + 1.5``) is mapped back through `affine` to its source
    position (u, v). Where the nearest source pixel is on the instance's visible mask with
    finite depth, the depth there is interpolated (inverse depth, bilinear, when the four
    neighbouring pixels are all on the mask: exact on planes; else the nearest pixel's), and
    the point ``d K^-1 (u, v, 1)`` is moved into the object frame: ``R^T (X - t)``.

    Returns:
        (coordinates (3, H/4, W/4) float32 m, valid (H/4, W/4) bool); all invalid without a
        mask or depth.
    """
    h, w = out_h // HEATMAP_STRIDE, out_w // HEATMAP_STRIDE
    coords = np.zeros((3, h, w), np.float32)
    if ann.mask is None or frame.depth is None:
        return coords, np.zeros((h, w), bool)
    centres = heatmap_cell_centres(w, HEATMAP_STRIDE).numpy().astype(np.float64)
    rows = heatmap_cell_centres(h, HEATMAP_STRIDE).numpy().astype(np.float64)
    uu, vv = np.meshgrid(centres, rows)
    inv = np.linalg.inv(np.vstack([affine, [0.0, 0.0, 1.0]]))
    src = np.stack([uu, vv, np.ones_like(uu)], -1) @ inv.T  # (h, w, 3) source px, homogeneous
    src_h, src_w = frame.depth.shape
    mask = np.asarray(ann.mask, bool)
    depth_map = np.asarray(frame.depth, np.float64)
    on = mask & np.isfinite(depth_map) & (depth_map > 0)
    inv_depth = np.where(on, 1.0 / np.where(on, depth_map, 1.0), 0.0)

    def sample(ui: np.ndarray, vi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inside = (ui >= 0) & (ui < src_w) & (vi >= 0) & (vi < src_h)
        ui, vi = np.clip(ui, 0, src_w - 1), np.clip(vi, 0, src_h - 1)
        return inside & on[vi, ui], inv_depth[vi, ui]

    valid, idepth = sample(np.rint(src[..., 0]).astype(np.int64),
                           np.rint(src[..., 1]).astype(np.int64))
    u0, v0 = np.floor(src[..., 0]).astype(np.int64), np.floor(src[..., 1]).astype(np.int64)
    fu, fv = src[..., 0] - u0, src[..., 1] - v0
    corners = [sample(u0 + du, v0 + dv) for dv in (0, 1) for du in (0, 1)]
    all_on = np.logical_and.reduce([c[0] for c in corners])
    bilinear = ((1 - fu) * (1 - fv) * corners[0][1] + fu * (1 - fv) * corners[1][1]
                + (1 - fu) * fv * corners[2][1] + fu * fv * corners[3][1])
    idepth = np.where(all_on, bilinear, idepth)
    depth = np.where(valid, 1.0 / np.where(valid, idepth, 1.0), 0.0)
    rays = src @ np.linalg.inv(np.asarray(frame.K, np.float64)).T  # (h, w, 3), z = 1
    obj = (rays * depth[..., None] - np.asarray(t, np.float64)) @ np.asarray(R, np.float64)
    coords[:] = np.where(valid[None], obj.transpose(2, 0, 1), 0.0)  # R^T (X - t)
    return coords, valid


class DepthDataset(_EpochFrames):
    """Frames -> depth-network inputs and targets.

    Args:
        frames: the frame source (every frame needs `depth`).
        input_width: network input width px.
        input_height: network input height px.
        augment: augmentation, or None (validation).
        seed: augmentation seed.
        crop: (width, height) multiples of 16: train on random crops of the input (the depth
            net is fully convolutional and the focal length does not change). None: whole input.

    Items: ``image`` (3, H, W) float32 RGB [0, 1]; ``depth`` (1, H, W) float32 m (NaN unknown,
    and in the letterbox padding); ``fx`` () float64 px focal of the input image; ``index``.
    """

    def __init__(
        self,
        frames: FrameSource,
        input_width: int,
        input_height: int,
        *,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        crop: tuple[int, int] | None = None,
    ) -> None:
        self.frames = frames
        self.width, self.height = int(input_width), int(input_height)
        self.augment = augment
        self.seed = int(seed)
        self.crop = _check_crop(crop, self.width, self.height)
        self.epoch = 0

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Sample `index` (see the class docstring for the keys)."""
        frame = self.frames[index]
        if frame.depth is None:
            raise ShapeError(f"frame {index}: the depth dataset needs a depth map, got None")
        check_shape(frame.depth, f"{frame.image.shape[0]},{frame.image.shape[1]}",
                    name="frame.depth")
        rng = self._rng(index)
        affine, image, K = _prepare(frame, self.width, self.height, self.augment, rng, self.crop)
        depth = _warp(np.asarray(frame.depth, np.float32), affine, image.shape[1],
                      image.shape[0], nearest=True, fill=float("nan"))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "depth": torch.from_numpy(depth[None]),
            "fx": torch.tensor(float(K[0, 0]), dtype=torch.float64),
            "index": torch.tensor(int(index)),
        }


class ListFrameSource:
    """Frames held in memory (tests, small experiments)."""

    def __init__(self, frames: Sequence[Frame]) -> None:
        self._frames = list(frames)

    def __len__(self) -> int:
        """Number of frames."""
        return len(self._frames)

    def __getitem__(self, index: int) -> Frame:
        """Frame `index`."""
        return self._frames[index]


class SubsetFrameSource:
    """A subset of another source, by index list (train/validation splits)."""

    def __init__(self, source: FrameSource, indices: Sequence[int]) -> None:
        self._source = source
        self._indices = [int(i) for i in indices]

    def __len__(self) -> int:
        """Number of frames."""
        return len(self._indices)

    def __getitem__(self, index: int) -> Frame:
        """Frame `index` of the subset."""
        return self._source[self._indices[index]]


class ConcatFrameSource:
    """Several sources one after the other (e.g. shards generated in parallel with two seeds)."""

    def __init__(self, sources: Sequence[FrameSource]) -> None:
        if not sources:
            raise ConfigError("ConcatFrameSource: no sources")
        self._sources = list(sources)
        self._ends = np.cumsum([len(s) for s in self._sources])

    def __len__(self) -> int:
        """Total number of frames."""
        return int(self._ends[-1])

    def __getitem__(self, index: int) -> Frame:
        """Frame `index` of the concatenation."""
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        k = int(np.searchsorted(self._ends, index, side="right"))
        start = 0 if k == 0 else int(self._ends[k - 1])
        return self._sources[k][index - start]


def split_train_val(
    source: FrameSource, val_fraction: float, seed: int
) -> tuple[SubsetFrameSource, SubsetFrameSource]:
    """Seeded random split of a source into (train, validation).

    Raises:
        ConfigError: `val_fraction` outside (0, 1) or leaving either side empty.
    """
    n = len(source)
    n_val = int(round(n * val_fraction))
    if not 0 < val_fraction < 1 or n_val < 1 or n_val >= n:
        raise ConfigError(f"val_fraction {val_fraction} of {n} frames leaves a split empty")
    perm = np.random.default_rng(seed).permutation(n)
    return SubsetFrameSource(source, sorted(perm[n_val:])), SubsetFrameSource(
        source, sorted(perm[:n_val])
    )


def object_info_to_mapping(info: ObjectInfo) -> dict[str, Any]:
    """Plain mapping of an ObjectInfo (lists, JSON-able)."""
    return {
        "object_id": info.object_id,
        "keypoints_obj": info.keypoints_obj.tolist(),
        "diameter_m": info.diameter_m,
        "symmetric": info.symmetric,
        "points_obj": info.points_obj.tolist(),
        "symmetries": info.symmetries,
    }


def object_info_from_description(
    desc: ObjectDescription, *, num_points: int = 1000, seed: int = 0
) -> ObjectInfo:
    """ObjectInfo of an object description (surface sampled for ADD(-S)).

    The object counts as symmetric (ADD-S) when it has any discrete or continuous symmetry.
    """
    return ObjectInfo(
        object_id=str(desc.object_id),
        keypoints_obj=np.asarray(desc.keypoints.detach().cpu().double().numpy()),
        diameter_m=float(desc.diameter_m),
        symmetric=desc.symmetric,
        points_obj=sample_surface(desc.mesh, num_points, seed),
        symmetries=desc.symmetries_as_plain(),
    )


def load_object_infos(names: Sequence[str], *, num_points: int = 1000) -> list[ObjectInfo]:
    """ObjectInfos for shipped object ids (``config/objects/<id>.yaml``) or YAML paths."""
    from dvc_perception.render.objects import find_object_yaml, load_object

    return [
        object_info_from_description(load_object(find_object_yaml(n)), num_points=num_points)
        for n in names
    ]

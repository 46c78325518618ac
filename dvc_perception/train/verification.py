# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Box-verifier training data: labelled zoom crops of candidate boxes (``train verify``).

The box verifier (`models.verifier_net.VerifierNet`) looks at a zoom crop of the
**full-resolution** frame around each detector box and says which class (or background) it
shows; the pipeline re-scores the box by the geometric mean of its detection score and the
probability of its class (`pipeline.network.NetworkDetector`).
`VerifierDataset` builds those crops exactly as serving does (``ZoomCrop.from_box(box, (W, H),
(S, S), scale=crop_scale)`` and `engines.preprocess.warp_to_input`'s map), from three kinds of
candidate box per frame (`VerifySampling`):

- *true boxes*: the visible-mask box of an annotated instance (`engines.preprocess.box_from_mask`)
  jittered like a detector's error (`ZoomSampling.jitter`);
- *detector candidates*: the boxes an exported detector proposes on the frame
  (`detector_candidates`, computed once before training and cached in the run directory); the
  wrong ones are the hard background examples, the right ones serving-like object examples;
- *random boxes*: anywhere in the frame, or near an instance (shifted off it, or much larger
  or smaller), sized like the frame's instances.

Labels (the `label_boxes` rule): IoU >= `VerifySampling.positive_iou` with the visible box of a
usable instance of a network object (at least `min_visible_px` visible pixels) -> that object's
class ``1 + o``; IoU < `negative_iou` with the visible box of every instance of a network object
-> background (0); in between (or overlapping a barely visible instance) the box is not used.
Instances of other objects count as background. About `object_fraction` of each frame's crops
are object crops (fewer when the frame has too few), the rest background, `hard_fraction` of it
from the detector's wrong candidates when there are any.

Determinism: as the other datasets, item i of epoch e draws from
``numpy.random.default_rng([seed, e, i])``; validation (no augmentation, epoch 0) is fixed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from dvc_perception.engines.preprocess import ZoomCrop, box_from_mask
from dvc_perception.errors import ConfigError, ModelSpecError, check_shape
from dvc_perception.files import atomic_path, file_sha256
from dvc_perception.train.datasets import (
    AugmentConfig,
    Frame,
    FrameSource,
    ZoomSampling,
    _EpochFrames,
    _photometric,
)

#: crop kinds in an item's ``source``
SOURCE_TRUE, SOURCE_DETECTOR, SOURCE_RANDOM = 0, 1, 2
#: label of a box that is not used (between the two IoU thresholds)
SKIP = -1


@dataclass(frozen=True)
class VerifySampling:
    """How `VerifierDataset` picks and labels the crops of a frame.

    Attributes:
        crop_scale: crop side in units of the box's longer side (serving's ``crop_scale``; the
            exported model records it).
        crops_per_frame: crops per item (N); a training step sees batch size x N crops.
        object_fraction: share of object crops per frame (the rest is background).
        hard_fraction: share of the background crops taken from the detector's wrong
            candidates, while the frame has unused ones (the rest: random boxes).
        detector_positive_fraction: share of the object crops taken from the detector's right
            candidates, when there are any (the rest: jittered true boxes).
        jitter_shift_frac: jitter of true boxes: centre shift per axis, fraction of the longer
            side (as `ZoomSampling.shift_frac`).
        jitter_scale_range: jitter of true boxes: size factor range.
        positive_iou: least IoU with a usable instance's visible box for an object label.
        negative_iou: background when the IoU with every network instance is below this.
        min_visible_px: an instance is usable (a positive) with this many visible pixels.
        shift_px: training only: the crop moves by up to this many input px per axis
            (augmentation; validation crops are exactly serving's).
        grey_prob: training only: probability of a greyscale crop.
    """

    crop_scale: float = 1.5
    crops_per_frame: int = 8
    object_fraction: float = 0.5
    hard_fraction: float = 0.5
    detector_positive_fraction: float = 0.3
    jitter_shift_frac: float = 0.12
    jitter_scale_range: tuple[float, float] = (0.85, 1.2)
    positive_iou: float = 0.5
    negative_iou: float = 0.3
    min_visible_px: int = 50
    shift_px: float = 4.0
    grey_prob: float = 0.1

    def __post_init__(self) -> None:
        if not (np.isfinite(self.crop_scale) and self.crop_scale > 0):
            raise ConfigError(f"verify crop_scale: expected > 0, got {self.crop_scale}")
        if isinstance(self.crops_per_frame, bool) or int(self.crops_per_frame) < 1:
            raise ConfigError(f"verify crops_per_frame: expected >= 1, got "
                              f"{self.crops_per_frame}")
        for name in ("object_fraction", "hard_fraction", "detector_positive_fraction",
                     "grey_prob"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"verify {name}: expected in [0, 1], got "
                                  f"{getattr(self, name)}")
        if not 0.0 <= self.negative_iou <= self.positive_iou <= 1.0 or self.positive_iou <= 0:
            raise ConfigError(f"verify IoU thresholds: expected 0 <= negative_iou <= "
                              f"positive_iou <= 1, got {self.negative_iou}, {self.positive_iou}")
        if self.shift_px < 0 or self.min_visible_px < 1:
            raise ConfigError(f"verify shift_px >= 0 and min_visible_px >= 1, got "
                              f"{self.shift_px}, {self.min_visible_px}")
        # the jitter's own checks (ranges)
        ZoomSampling(self.crop_scale, self.jitter_shift_frac, self.jitter_scale_range)

    @property
    def jitter(self) -> ZoomSampling:
        """The true-box jitter (`ZoomSampling.jitter`)."""
        return ZoomSampling(self.crop_scale, self.jitter_shift_frac, self.jitter_scale_range,
                            self.min_visible_px)


def box_ious(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(N, M) IoU of boxes ``(x, y, w, h)`` px (N, 4) with (M, 4) (0 where a union is empty)."""
    a = np.asarray(boxes, np.float64).reshape(-1, 4)
    b = np.asarray(others, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
                 - np.maximum(a[:, None, 0], b[None, :, 0]), 0.0, None)
    ih = np.clip(np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
                 - np.maximum(a[:, None, 1], b[None, :, 1]), 0.0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass(frozen=True)
class FrameInstances:
    """The visible boxes of a frame's instances of network objects.

    Attributes:
        boxes: (M, 4) float64 visible-mask boxes ``(x, y, w, h)`` px.
        slots: (M,) int64 network object index of each.
        usable: (M,) bool: enough visible pixels to be a positive.
    """

    boxes: np.ndarray
    slots: np.ndarray
    usable: np.ndarray


def frame_instances(frame: Frame, index: Mapping[str, int], min_visible_px: int
                    ) -> FrameInstances:
    """Visible boxes of the instances of the objects in `index` (id -> slot) that have a mask."""
    h, w = frame.image.shape[:2]
    boxes, slots, usable = [], [], []
    for ann in frame.objects:
        j = index.get(ann.object_id)
        if j is None or ann.mask is None:
            continue
        check_shape(ann.mask, f"{h},{w}", name=f"{ann.object_id}.mask")
        mask = np.asarray(ann.mask, bool)
        box = box_from_mask(mask)
        if box is None:
            continue
        boxes.append(box)
        slots.append(j)
        usable.append(int(np.count_nonzero(mask)) >= min_visible_px)
    return FrameInstances(np.asarray(boxes, np.float64).reshape(-1, 4),
                          np.asarray(slots, np.int64), np.asarray(usable, bool))


def label_boxes(boxes: np.ndarray, instances: FrameInstances, positive_iou: float = 0.5,
                negative_iou: float = 0.3) -> np.ndarray:
    """(N,) int64 labels of boxes (N, 4): ``1 + slot``, 0 (background) or `SKIP` (-1).

    ``1 + slot`` of the usable instance with the highest IoU when it reaches `positive_iou`;
    else 0 when the IoU with every instance (usable or not) is below `negative_iou`; else SKIP.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.zeros(len(boxes), np.int64)
    if len(instances.boxes) == 0 or len(boxes) == 0:
        return out
    iou = box_ious(boxes, instances.boxes)
    usable_iou = np.where(instances.usable[None], iou, -1.0)
    best = usable_iou.argmax(axis=1)
    positive = usable_iou[np.arange(len(boxes)), best] >= positive_iou
    out[positive] = 1 + instances.slots[best[positive]]
    out[~positive & (iou.max(axis=1) >= negative_iou)] = SKIP
    return out


class VerifierDataset(_EpochFrames):
    """Frames -> N labelled zoom crops each, for the box verifier.

    Args:
        frames: the frame source (instances need visible masks).
        object_ids: the verifier's classes, in output order (label ``1 + o``).
        input_size: crop side S px.
        sampling: crop selection and labelling (`VerifySampling`).
        candidates: per frame of `frames`, the detector's candidate boxes (K, 4) px (from
            `detector_candidates`), or None (no detector: background only from random boxes).
        augment: photometric augmentation (`AugmentConfig`: colour, blur, noise; its geometric
            fields are unused), with `sampling`'s crop shift and greyscale; None: validation,
            the crops serving would cut.
        seed: sampling / augmentation seed.

    Items: ``crops`` (N, 3, S, S) float32 RGB [0, 1]; ``labels`` (N,) int64 (0 background,
    1 + o object o); ``valid`` (N,) bool (False: a slot no usable box filled, label 0);
    ``boxes`` (N, 4) float64 source px; ``source`` (N,) int64 (`SOURCE_TRUE`,
    `SOURCE_DETECTOR`, `SOURCE_RANDOM`); ``index`` ().
    """

    def __init__(
        self,
        frames: FrameSource,
        object_ids: Sequence[str],
        input_size: int,
        *,
        sampling: VerifySampling | None = None,
        candidates: Sequence[np.ndarray] | None = None,
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        if not object_ids:
            raise ConfigError("VerifierDataset: no objects")
        if candidates is not None and len(candidates) != len(frames):
            raise ConfigError(f"VerifierDataset: {len(candidates)} candidate lists for "
                              f"{len(frames)} frames")
        self.frames = frames
        self.object_ids = tuple(str(o) for o in object_ids)
        self.size = int(input_size)
        self.sampling = sampling or VerifySampling()
        self.candidates = candidates
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self._index = {o: i for i, o in enumerate(self.object_ids)}

    def select_boxes(self, frame: Frame, candidates: np.ndarray | None, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (N, 4), labels (N,), valid (N,), source (N,)) of one frame's crops."""
        cfg = self.sampling
        n = int(cfg.crops_per_frame)
        src_h, src_w = frame.image.shape[:2]
        inst = frame_instances(frame, self._index, cfg.min_visible_px)
        det = np.zeros((0, 4)) if candidates is None else np.asarray(candidates,
                                                                    np.float64).reshape(-1, 4)
        det_labels = label_boxes(det, inst, cfg.positive_iou, cfg.negative_iou)
        det_pos = list(np.flatnonzero(det_labels > 0))
        det_neg = list(rng.permutation(np.flatnonzero(det_labels == 0)))
        usable = np.flatnonzero(inst.usable)
        boxes = np.zeros((n, 4), np.float64)
        labels = np.zeros(n, np.int64)
        valid = np.zeros(n, bool)
        source = np.full(n, SOURCE_RANDOM, np.int64)

        def label(box: Sequence[float]) -> int:
            return int(label_boxes(np.asarray(box)[None], inst, cfg.positive_iou,
                                   cfg.negative_iou)[0])

        k = 0
        n_obj = int(round(n * cfg.object_fraction)) if len(usable) else 0
        for _ in range(n_obj):
            if det_pos and rng.uniform() < cfg.detector_positive_fraction:
                c = det_pos[int(rng.integers(len(det_pos)))]
                boxes[k], labels[k], source[k] = det[c], det_labels[c], SOURCE_DETECTOR
                valid[k] = True
                k += 1
                continue
            for _try in range(4):
                box = cfg.jitter.jitter(inst.boxes[usable[int(rng.integers(len(usable)))]], rng)
                lab = label(box)
                if lab > 0:
                    boxes[k], labels[k], source[k], valid[k] = box, lab, SOURCE_TRUE, True
                    k += 1
                    break
        sizes = inst.boxes[:, 2:] if len(inst.boxes) else None
        while k < n:
            if det_neg and rng.uniform() < cfg.hard_fraction:
                c = det_neg.pop()
                boxes[k], labels[k], source[k], valid[k] = det[c], 0, SOURCE_DETECTOR, True
                k += 1
                continue
            for _try in range(10):
                box = _random_box(rng, src_w, src_h, inst.boxes, sizes)
                if label(box) == 0:
                    boxes[k], labels[k], source[k], valid[k] = box, 0, SOURCE_RANDOM, True
                    break
            k += 1  # a slot no box filled stays invalid
        return boxes, labels, valid, source

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Item `index` (see the class docstring for the keys)."""
        frame = self.frames[index]
        check_shape(frame.image, "H,W,3", name="frame.image")
        rng = self._rng(index)
        cands = None if self.candidates is None else self.candidates[index]
        boxes, labels, valid, source = self.select_boxes(frame, cands, rng)
        src_h, src_w = frame.image.shape[:2]
        s = self.size
        # warp_to_input's map, with the float image made once for the N crops
        image = frame.image.astype(np.float32) / np.float32(255.0)
        crops = np.zeros((len(boxes), 3, s, s), np.float32)
        cfg = self.sampling
        for k, box in enumerate(boxes):
            if not valid[k]:
                continue
            affine = ZoomCrop.from_box(box, (src_w, src_h), (s, s), scale=cfg.crop_scale).affine
            if self.augment is not None and cfg.shift_px > 0:
                affine[:, 2] += rng.uniform(-cfg.shift_px, cfg.shift_px, size=2)
            crop = cv2.warpAffine(image, affine, (s, s), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
            if self.augment is not None:
                crop = _photometric(crop, rng, self.augment)
                if rng.uniform() < cfg.grey_prob:
                    crop[:] = crop.mean(axis=2, keepdims=True)
            crops[k] = crop.transpose(2, 0, 1)
        return {
            "crops": torch.from_numpy(crops),
            "labels": torch.from_numpy(labels),
            "valid": torch.from_numpy(valid),
            "boxes": torch.from_numpy(boxes),
            "source": torch.from_numpy(source),
            "index": torch.tensor(int(index)),
        }


def _random_box(rng: np.random.Generator, width: int, height: int, instance_boxes: np.ndarray,
                sizes: np.ndarray | None) -> tuple[float, float, float, float]:
    """A random box, half near a random instance, half anywhere.

    Near: beside it, or on it at 2-3x or 0.25-0.45x its size. Anywhere: sized like one of the
    frame's instances (x0.6-1.6) when it has any.
    """
    if sizes is not None and len(sizes):
        w, h = sizes[int(rng.integers(len(sizes)))] * rng.uniform(0.6, 1.6)
    else:
        side = rng.uniform(0.04, 0.3) * min(width, height)
        aspect = rng.uniform(0.6, 1.6)
        w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
    w, h = float(max(w, 4.0)), float(max(h, 4.0))
    if len(instance_boxes) and rng.uniform() < 0.5:
        bx, by, bw, bh = instance_boxes[int(rng.integers(len(instance_boxes)))]
        if rng.uniform() < 0.5:  # beside it
            angle = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(0.6, 1.3) * max(bw, bh)
            cu, cv = bx + bw / 2 + dist * np.cos(angle), by + bh / 2 + dist * np.sin(angle)
            w, h = bw * rng.uniform(0.8, 1.25), bh * rng.uniform(0.8, 1.25)
        else:  # on it, at the wrong scale
            a = rng.uniform(2.0, 3.0) if rng.uniform() < 0.5 else rng.uniform(0.25, 0.45)
            cu = bx + bw / 2 + rng.uniform(-0.3, 0.3) * bw
            cv = by + bh / 2 + rng.uniform(-0.3, 0.3) * bh
            w, h = bw * a, bh * a
        w, h = float(max(w, 4.0)), float(max(h, 4.0))
        return float(cu - w / 2), float(cv - h / 2), w, h
    x = rng.uniform(0, max(width - w, 1.0))
    y = rng.uniform(0, max(height - h, 1.0))
    return float(x), float(y), w, h


# ---------------------------------------------------------------- detector candidates (cache)

#: detector settings of the candidates (`pipeline.network.NetworkDetector`)
CANDIDATE_MIN_SCORE = 0.001
CANDIDATE_MAX_PER_CLASS = 5
CACHE_NAME = "verify_candidates.npz"


def open_candidate_detector(path: str | os.PathLike[str]) -> Any:
    """`pipeline.network.NetworkDetector` of an exported detector (candidate settings).

    Raises:
        ModelSpecError: no such file, or not an exported detector (``task: detector``), with
            what `--hard-negatives` expects.
    """
    from dvc_perception.pipeline.network import NetworkDetector

    if not Path(path).is_file():
        raise ModelSpecError(f"--hard-negatives {path}: no such file (expected an exported "
                             f"detector ONNX model, e.g. models/detector_lmo.onnx)")
    try:
        return NetworkDetector(path, min_detection_score=CANDIDATE_MIN_SCORE,
                               max_per_class=CANDIDATE_MAX_PER_CLASS)
    except ModelSpecError as err:
        raise ModelSpecError(f"--hard-negatives {path}: expected an exported detector "
                             f"(task 'detector', `dvc-perception export` of a `train detect` "
                             f"run): {err}") from err


def detector_candidates(frames: FrameSource, detector: Any, indices: Sequence[int], *,
                        progress: bool = False, desc: str = "candidates") -> list[np.ndarray]:
    """The detector's boxes (K, 4) float32 source px on the frames `indices` of `frames`."""
    from tqdm import tqdm

    out = []
    for i in tqdm(indices, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        dets = detector.detect_boxes(np.ascontiguousarray(frames[int(i)].image))
        out.append(np.asarray([d.box_xywh for d in dets], np.float32).reshape(-1, 4))
    return out


def _read_cache(path: Path, key: str, roles: Mapping[str, int]
                ) -> dict[str, list[np.ndarray]] | None:
    """The cached candidates when `path` holds them for `key` (and the frame counts), else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            out = {}
            for role, n in roles.items():
                offsets, boxes = z[f"{role}_offsets"], z[f"{role}_boxes"]
                if len(offsets) != n + 1:
                    return None
                out[role] = [boxes[offsets[i]:offsets[i + 1]] for i in range(n)]
            return out
    except (OSError, KeyError, ValueError):
        return None  # unreadable or stale: computed again


def _write_cache(path: Path, key: str, table: Mapping[str, list[np.ndarray]]) -> None:
    arrays: dict[str, np.ndarray] = {"key": np.array(key)}
    for role, lists in table.items():
        counts = [len(b) for b in lists]
        arrays[f"{role}_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        arrays[f"{role}_boxes"] = (np.concatenate(lists) if lists else np.zeros((0, 4))
                                   ).astype(np.float32).reshape(-1, 4)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def cached_candidates(
    sources: Mapping[str, FrameSource],
    detector_path: str | os.PathLike[str],
    cache_path: str | os.PathLike[str],
    key: Mapping[str, Any],
    *,
    progress: bool = False,
    device: torch.device | None = None,
) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
    """The detector's candidate boxes on every frame of each source, computed once.

    The table is cached in `cache_path` under `key` (with the detector file's sha256 and the
    candidate settings added), so a resumed run (or a new one on the same data and detector)
    reads it instead. Under ``torchrun`` each process computes its share of the frames
    (i = rank mod world size) and the shares are gathered (the process group is started here,
    as `loop.train` would); rank 0 writes the cache.

    Args:
        sources: role ("train", "val") -> frames.
        detector_path: exported detector ONNX model.
        cache_path: the cache file (in the run directory).
        key: what identifies the frames (data directories, split).
        progress: a progress bar (rank 0).
        device: the training device (the process group's backend: nccl on CUDA, else gloo).

    Returns:
        (role -> per-frame (K, 4) float32 boxes, provenance: file, sha256, settings, seconds,
        whether it came from the cache).

    Raises:
        ModelSpecError: the detector file is missing or not a detector.
    """
    detector = open_candidate_detector(detector_path)
    full_key = json.dumps({**dict(key), "detector_sha256": file_sha256(detector_path),
                           "min_score": CANDIDATE_MIN_SCORE,
                           "max_per_class": CANDIDATE_MAX_PER_CLASS}, sort_keys=True)
    cache = Path(cache_path)
    roles = {r: len(s) for r, s in sources.items()}
    info: dict[str, Any] = {"detector": str(detector_path),
                            "detector_sha256": json.loads(full_key)["detector_sha256"],
                            "min_score": CANDIDATE_MIN_SCORE,
                            "max_per_class": CANDIDATE_MAX_PER_CLASS, "cache": str(cache)}
    found = _read_cache(cache, full_key, roles)
    if found is not None:
        return found, {**info, "from_cache": True, "seconds": 0.0}
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    t0 = time.monotonic()
    mine = {r: detector_candidates(s, detector, range(rank, len(s), world),
                                   progress=progress and rank == 0,
                                   desc=f"detector candidates ({r}, {len(s)} frames)")
            for r, s in sources.items()}
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            on_gpu = device is not None and device.type == "cuda"
            if on_gpu:
                torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl" if on_gpu else "gloo")
        shares: list[Any] = [None] * world
        dist.all_gather_object(shares, mine)
        table = {r: [shares[i % world][r][i // world] for i in range(n)]
                 for r, n in roles.items()}
    else:
        table = mine
    seconds = time.monotonic() - t0
    if rank == 0:
        _write_cache(cache, full_key, table)
    if world > 1:
        dist.barrier()
    return table, {**info, "from_cache": False, "seconds": round(seconds, 1)}

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Calibration frames for INT8: real images in, network-ready (1, 3, H, W) float32 arrays out.

Sources (all give RGB uint8 frames):

- a directory of PNG/JPG images (`image_dir_frames`), searched recursively, sorted by path;
- synthetic shards written by `dvc-perception synth` (`synthetic_shard_frames`, `synth.shards`);
- rosbags are read by the `dvc-perception quantize` command (the ROS edge), which hands the
  decoded frames to the same preprocessing.

Preprocessing is deployment's own, `engines.preprocess.preprocess_frame`, with the resize mode,
mean and std of the model metadata. Random data is never used for calibration.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.engines.base import ModelMetadata
from dvc_perception.engines.preprocess import preprocess_frame
from dvc_perception.errors import ConfigError, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def resize_mode_from_metadata(extra: Any) -> str:
    """"letterbox" when the metadata's ``resize`` text starts with it, else "stretch"."""
    text = str(extra.get("resize", "stretch")) if hasattr(extra, "get") else "stretch"
    return "letterbox" if text.strip().lower().startswith("letterbox") else "stretch"


def image_dir_frames(directory: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """RGB uint8 frames from every PNG/JPG under `directory` (recursive, sorted by path).

    Raises:
        ConfigError: the directory does not exist or holds no image.
        InputError: an image cannot be decoded.
    """
    import cv2

    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"calibration directory {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {root}")
    for path in files:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"cannot decode image {path}")
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def synthetic_shard_frames(directory: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """RGB uint8 frames (H, W, 3) of the synthetic shards in `directory` (`synth.shards`).

    Raises:
        InputError: not a shard directory, or a missing or corrupt shard (named).
    """
    from dvc_perception.synth.shards import load_shards

    for frame in load_shards(directory):
        yield frame.rgb


def frames_from_source(source: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """RGB frames from a directory: synthetic shards, else the PNG/JPG images under it.

    A directory holding an ``index.json`` is read as the renderer's synthetic shards.
    """
    root = Path(source)
    if not root.exists():
        raise ConfigError(f"calibration source {root} does not exist")
    if (root / "index.json").is_file():
        return synthetic_shard_frames(root)
    return image_dir_frames(root)


def load_calibration_frames(
    source: str | os.PathLike[str] | Iterable[np.ndarray],
    *,
    input_shape: Sequence[int],
    max_frames: int = 256,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    resize: str = "stretch",
) -> list[np.ndarray]:
    """Up to `max_frames` preprocessed frames, each shaped like the input (1, 3, H, W).

    Args:
        source: a directory (images or synthetic shards) or an iterable of RGB uint8 frames.
        input_shape: the network input shape (1, 3, H, W).
        max_frames: frames to keep (the first ones, in source order).
        mean: normalisation mean (from the model metadata).
        std: normalisation std (from the model metadata).
        resize: "stretch" or "letterbox" (from the model metadata, `resize_mode_from_metadata`).

    Raises:
        ConfigError: wrong input shape, or the source yields no frame.
    """
    if len(input_shape) != 4 or input_shape[1] != 3 or input_shape[0] != 1:
        raise ConfigError(f"calibration needs an input shaped (1, 3, H, W), got {input_shape}")
    height, width = int(input_shape[2]), int(input_shape[3])
    frames_iter = (
        frames_from_source(source) if isinstance(source, (str, os.PathLike)) else iter(source)
    )
    out: list[np.ndarray] = []
    for rgb in frames_iter:
        out.append(preprocess_frame(rgb, (width, height), mean, std, resize))
        if len(out) >= max_frames:
            break
    if not out:
        raise ConfigError(f"calibration source {source} gave no frames")
    return out


def shard_instance_crops(
    source: str | os.PathLike[str] | Iterable[np.ndarray],
    *,
    input_shape: Sequence[int],
    crop_scale: float,
    max_frames: int = 256,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
) -> list[np.ndarray]:
    """Up to `max_frames` zoom-crop inputs (B, 3, H, W): one crop per object instance.

    The crop of each instance is the one the two-stage pipeline takes around a detected box
    (`ZoomCrop.from_box` of the instance's visible-mask box at `crop_scale`), so a zoom-crop
    model (keypoints, or the box verifier) is calibrated on what it will see. A model with a
    static batch B > 1 (the box verifier: B = 16) gets B consecutive crops per input; an
    incomplete last batch is left out.

    Raises:
        ConfigError: `source` is not a synthetic shard directory (instance masks give the
            boxes: images or bags have none), or it yields no instance.
    """
    from dvc_perception.engines.preprocess import ZoomCrop, box_from_mask
    from dvc_perception.synth.shards import load_shards

    if not isinstance(source, (str, os.PathLike)) or not (Path(source) / "index.json").is_file():
        raise ConfigError(
            f"a model trained on zoom crops calibrates on crops around object instances: "
            f"give synthetic shards (dvc-perception synth --out DIR) as the calibration "
            f"source, not {source if isinstance(source, (str, os.PathLike)) else 'frames'}"
        )
    if len(input_shape) != 4 or input_shape[1] != 3 or not int(input_shape[0] or 0) >= 1:
        raise ConfigError(f"calibration needs an input shaped (B, 3, H, W) with a static "
                          f"batch B, got {input_shape}")
    batch, size = int(input_shape[0]), (int(input_shape[3]), int(input_shape[2]))
    out: list[np.ndarray] = []
    crops: list[np.ndarray] = []
    for frame in load_shards(source):
        height, width = frame.rgb.shape[:2]
        for k in sorted(int(v) for v in np.unique(frame.instance_ids) if v >= 0):
            box = box_from_mask(frame.instance_ids == k)
            if box is None:
                continue
            crop = ZoomCrop.from_box(box, (width, height), size, scale=crop_scale)
            crops.append(crop.network_input(frame.rgb, mean, std))
            if len(crops) == batch:
                out.append(np.concatenate(crops))
                crops = []
                if len(out) >= max_frames:
                    return out
    if not out:
        raise ConfigError(f"calibration source {source} has fewer than {batch} object "
                          "instances to crop")
    return out


def model_calibration_inputs(
    metadata: ModelMetadata,
    source: str | os.PathLike[str] | Iterable[np.ndarray],
    *,
    input_shape: Sequence[int],
    max_frames: int = 256,
) -> list[np.ndarray]:
    """Calibration inputs built as the model described by `metadata` is served.

    Whole frames, resized as its ``resize`` says (`load_calibration_frames`), or, for a model
    trained on zoom crops (``input_kind: zoom_crop``), crops around every instance of synthetic
    shards at its ``crop_scale`` (`shard_instance_crops`); normalised by its mean and std.
    """
    extra = metadata.extra
    if extra.get("input_kind") == "zoom_crop":
        return shard_instance_crops(source, input_shape=input_shape,
                                    crop_scale=float(extra["crop_scale"]),
                                    max_frames=max_frames, mean=metadata.mean, std=metadata.std)
    return load_calibration_frames(source, input_shape=input_shape, max_frames=max_frames,
                                   mean=metadata.mean, std=metadata.std,
                                   resize=resize_mode_from_metadata(extra))

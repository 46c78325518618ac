# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Calibration frames for INT8: real images in, network-ready (1, 3, H, W) float32 arrays out.

Sources (all give RGB uint8 frames):

- a directory of PNG/JPG images (`image_dir_frames`), searched recursively, sorted by path;
- synthetic shards written by the renderer (`synthetic_shard_frames`, through
  ``dvc_perception.render.synth.load_shards`` when that module exists);
- rosbags are read by the `dvc-perception quantize` command (the ROS edge), which hands the
  decoded frames to the same preprocessing.

Preprocessing matches deployment as the model metadata describes it: ``resize`` "stretch"
(resize to the input, ``cv2.INTER_AREA`` when shrinking) or "letterbox" (metadata ``resize``
starting with "letterbox": scale s = min(W/w, H/h), image at the top-left, zero padding,
``u_in = s * (u + 0.5) - 0.5``, bilinear), scale to [0, 1], subtract the metadata mean, divide
by its std, HWC -> CHW. Random data is never used for calibration.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.errors import ConfigError, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
RESIZE_MODES = ("stretch", "letterbox")


def resize_mode_from_metadata(extra: Any) -> str:
    """"letterbox" when the metadata's ``resize`` text starts with it, else "stretch"."""
    text = str(extra.get("resize", "stretch")) if hasattr(extra, "get") else "stretch"
    return "letterbox" if text.strip().lower().startswith("letterbox") else "stretch"


def preprocess_frame(
    rgb: np.ndarray,
    input_size: tuple[int, int],
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    resize: str = "stretch",
) -> np.ndarray:
    """One RGB frame -> network input.

    Args:
        rgb: (H, W, 3) uint8 RGB image.
        input_size: (width, height) px of the network input.
        mean: per-channel mean of RGB in [0, 1].
        std: per-channel std of RGB in [0, 1].
        resize: "stretch" or "letterbox" (see the module docstring).

    Returns:
        (1, 3, height, width) float32.

    Raises:
        InputError: not an (H, W, 3) uint8 image.
    """
    import cv2

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
    if resize not in RESIZE_MODES:
        raise ConfigError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    width, height = int(input_size[0]), int(input_size[1])
    x = rgb.astype(np.float32) / 255.0
    if resize == "letterbox":
        s = min(width / rgb.shape[1], height / rgb.shape[0])
        affine = np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]])
        x = cv2.warpAffine(x, affine, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    elif rgb.shape[:2] != (height, width):
        shrink = rgb.shape[0] > height or rgb.shape[1] > width
        x = cv2.resize(
            x, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


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


def synthetic_shards_available() -> bool:
    """Whether the renderer's ``load_shards`` exists in this checkout."""
    try:
        module = importlib.import_module("dvc_perception.render.synth")
    except ImportError:
        return False
    return hasattr(module, "load_shards")


def synthetic_shard_frames(directory: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """RGB uint8 frames from synthetic shards (``dvc_perception.render.synth.load_shards``).

    Each sample is expected to expose an RGB image as ``sample["rgb"]``/``sample["image"]`` or an
    attribute ``rgb``/``image``; float images in [0, 1] are converted to uint8.

    Raises:
        ConfigError: the renderer's shard reader is absent or a sample has no image.
    """
    if not synthetic_shards_available():
        raise ConfigError(
            "synthetic shards need dvc_perception.render.synth.load_shards, which this "
            "checkout does not have; give a directory of images instead"
        )
    synth = importlib.import_module("dvc_perception.render.synth")
    for sample in _iter_samples(synth.load_shards(directory)):
        yield _sample_rgb(sample)


def _iter_samples(shards: Any) -> Iterator[Any]:
    """Flatten what load_shards returns: samples, or shards that are sequences of samples."""
    for item in shards:
        if _has_image(item):
            yield item
        elif isinstance(item, Iterable) and not isinstance(item, (str, bytes)):
            yield from _iter_batch(item)
        else:
            raise ConfigError(f"synthetic shard item of type {type(item).__name__} has no image")


def _iter_batch(batch: Any) -> Iterator[Any]:
    if isinstance(batch, dict):  # a shard as a dict of stacked arrays
        key = next((k for k in ("rgb", "image", "images") if k in batch), None)
        if key is None:
            raise ConfigError(f"synthetic shard has no rgb/image array; keys {sorted(batch)}")
        for img in np.asarray(batch[key]):
            yield {"rgb": img}
        return
    yield from batch


def _has_image(item: Any) -> bool:
    if isinstance(item, dict):
        return any(k in item for k in ("rgb", "image")) and np.ndim(
            item.get("rgb", item.get("image"))
        ) == 3
    return any(np.ndim(getattr(item, k, None)) == 3 for k in ("rgb", "image"))


def _sample_rgb(sample: Any) -> np.ndarray:
    if isinstance(sample, dict):
        img = sample.get("rgb", sample.get("image"))
    else:
        img = getattr(sample, "rgb", None)
        if img is None:
            img = getattr(sample, "image", None)
    if img is None:
        raise ConfigError("synthetic sample has no rgb/image")
    arr = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[2] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


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

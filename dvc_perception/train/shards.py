# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Training frames from the renderer's synthetic shards (``render/synth.py``, `load_shards`).

`ShardFrameSource` converts each `SynthFrame` into a training `Frame` (RGB, K, depth, per-object
pose, visible mask and keypoint visibility). Shuffled training touches frames in random order,
and the shard reader keeps one decoded shard at a time, so the source decodes every shard once
and keeps the arrays the task needs in memory (``keep``): about 0.3 MB per 320x240 frame for
pose training (RGB + instance ids), 0.5 MB for depth (RGB + float32 depth).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.errors import ConfigError
from dvc_perception.train.datasets import Frame, ObjectAnnotation

_FIELDS = ("rgb", "depth", "instance_ids")


def frame_from_synth(frame: Any, *, with_depth: bool = True, with_masks: bool = True) -> Frame:
    """A training `Frame` from a `synth.scenes.SynthFrame` (e.g. sampled on the fly).

    Args:
        frame: the synthetic frame.
        with_depth: keep its depth map.
        with_masks: keep per-object visible masks (from ``instance_ids``).
    """
    objects = tuple(
        ObjectAnnotation(
            object_id=str(oid), R=np.asarray(frame.R[k], np.float64),
            t=np.asarray(frame.t[k], np.float64),
            mask=frame.instance_ids == k if with_masks else None,
            keypoints_visible=np.asarray(frame.keypoints_visible[k], bool),
        )
        for k, oid in enumerate(frame.object_ids)
    )
    return Frame(image=frame.rgb, K=np.asarray(frame.K, np.float64),
                 depth=frame.depth if with_depth else None, objects=objects)


class ShardFrameSource:
    """Frames of a shard directory, decoded once and held in memory.

    Args:
        directory: a directory written by ``dvc-perception synth --out`` (``index.json``).
        keep: arrays to keep per frame, among "rgb", "depth", "instance_ids"; leaving out
            "depth" gives frames without depth, leaving out "instance_ids" frames without masks.
        depth_dtype: dtype depth is held in (float16 halves its memory: 0.5 mm steps at 1 m).

    Attributes:
        seed: the generator seed recorded in ``index.json``.
        index: the parsed ``index.json``.

    Raises:
        InputError: not a shard directory, or a shard that is missing, truncated or corrupt
            (named; every shard is read here, in this process, before any DataLoader worker).
            Shards are read with ``allow_pickle=False``.
        ConfigError: `keep` is invalid, or the index lists no frames.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, keep: Sequence[str] = _FIELDS,
        depth_dtype: Any = np.float32,
    ) -> None:
        from dvc_perception.synth.shards import load_shards, read_shard_arrays

        unknown = set(keep) - set(_FIELDS)
        if unknown or "rgb" not in keep:
            raise ConfigError(f"keep: expected 'rgb' and a subset of {_FIELDS}, got {keep}")
        self.directory = Path(directory)
        reader = load_shards(self.directory)
        self.index = reader.index
        self.seed = self.index.get("seed")
        self._K = np.asarray(self.index["K"], dtype=np.float64)
        records = self.index["frames"]
        if not records:
            raise ConfigError(f"{self.directory}: the shard index lists no frames")
        self._records = records
        self._arrays: dict[str, list[np.ndarray]] = {k: [] for k in keep}
        loaded: dict[str, dict[str, np.ndarray]] = {}
        for rec in records:
            shard = rec["shard"]
            if shard not in loaded:
                loaded.clear()  # keep one decoded shard at a time
                loaded[shard] = read_shard_arrays(self.directory / shard, keep)
            for k in keep:
                array = loaded[shard][k][rec["offset"]]
                if k == "depth":
                    array = array.astype(depth_dtype, copy=False)
                self._arrays[k].append(np.ascontiguousarray(array))

    def __len__(self) -> int:
        """Number of frames."""
        return len(self._records)

    def __getitem__(self, i: int) -> Frame:
        """Frame `i` (the i-th record of ``index.json``)."""
        rec = self._records[i]
        m = len(rec["object_ids"])
        R = np.asarray(rec["R"], dtype=np.float64).reshape(m, 3, 3)
        t = np.asarray(rec["t"], dtype=np.float64).reshape(m, 3)
        vis = [np.asarray(v, dtype=bool) for v in rec["keypoints_visible"]]
        ids = self._arrays["instance_ids"][i] if "instance_ids" in self._arrays else None
        objects = tuple(
            ObjectAnnotation(
                object_id=str(oid), R=R[k], t=t[k],
                mask=None if ids is None else ids == k, keypoints_visible=vis[k],
            )
            for k, oid in enumerate(rec["object_ids"])
        )
        depth = self._arrays["depth"][i] if "depth" in self._arrays else None
        return Frame(image=self._arrays["rgb"][i], K=self._K, depth=depth, objects=objects)

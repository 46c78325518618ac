# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Shard storage of synthetic frames: `write_shards` (npz shards + ``index.json``), `load_shards`.

See `write_shards` for the format (``SHARD_FORMAT``). Shards are read with ``allow_pickle=False``
(`safe_load.load_npz`); a missing, truncated or corrupt shard is an `InputError` naming it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.errors import ConfigError, InputError
from dvc_perception.safe_load import load_npz
from dvc_perception.synth.scenes import SceneSampler, SynthFrame

SHARD_FORMAT = "dvc_synth_shards/1"



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
    ``shard`` (file name), ``offset`` (row in the shard), ``object_ids`` (M, one per instance:
    ids repeat for copies; row k is ``instance_ids == k``), ``R`` (M, 3, 3),
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
                "diameter": o.diameter_m,
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

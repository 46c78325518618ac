# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Records of a training run: its result, provenance, metrics CSV and curves, plain values."""

from __future__ import annotations

import csv
import dataclasses
import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from dvc_perception.files import atomic_path


@dataclass(frozen=True)
class TrainResult:
    """What a finished run leaves behind."""

    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path
    history: tuple[dict[str, float], ...]
    best_metric: float


def is_finite_number(x: Any) -> bool:
    """Whether `x` is an int or float with a finite value."""
    return isinstance(x, (int, float)) and math.isfinite(float(x))


def git_commit(repo: Path | None = None) -> dict[str, Any]:
    """{"commit": sha or "unknown", "dirty": bool or None} of the checkout holding this code."""
    where = repo or Path(__file__).resolve().parent.parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=where, capture_output=True, text=True, timeout=10,
                                check=True).stdout
        return {"commit": sha, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def to_jsonable(value: Any) -> Any:
    """Dataclasses, mappings, arrays, paths and non-finite floats as JSON-able values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, Tensor)):
        return np.asarray(value).tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_csv(path: Path, history: Sequence[Mapping[str, float]]) -> None:
    """One row per epoch; the columns are the union of keys, in first-seen order."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in columns})


def plot_curves(path: Path, history: Sequence[Mapping[str, float]], title: str) -> None:
    """A PNG grid with one panel per logged quantity against the epoch (matplotlib Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    skip = {"epoch", "step", "time_s", "lr", "skipped_steps"}
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys and k not in skip]
    if not keys:
        return
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows), dpi=90)
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        pts = [(r["epoch"], r[key]) for r in history if key in r and is_finite_number(r[key])]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", markersize=3)
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path))


def to_plain(value: Any) -> Any:
    """`value` with builtin types only: what ``torch.load(weights_only=True)`` accepts.

    Tensors stay tensors (detached, on the CPU); numpy scalars and arrays, paths, dataclasses
    and subclasses of str/int/float (``torch.__version__``) become plain Python values. Unlike
    `to_jsonable`, non-finite floats stay floats.
    """
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, (bool, type(None))):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # the characters, whatever a subclass's __str__ says
    for base in (int, float, bytes):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {to_plain(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [to_plain(v) for v in value]
        return tuple(items) if type(value) is tuple else items
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value

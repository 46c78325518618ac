# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Best depth AbsRel possible when the back plane's distance cannot be seen in the image.

The synthetic scenes put a textured back plane at a random gap behind the objects
(`SynthConfig.back_plane_gap_m`). Nothing in a rendered image shows that gap: the plane's
texture is scaled with its distance, and the lighting has no fall-off or shadows. Even a
network that knows the object's depth and the whole scene's structure exactly must then guess
the gap. Moving a plane along the camera rays scales all its depths by one ratio
r = (z + g_guess) / (z + g_true) (z: depth of the object the gap is measured from), so every
background pixel has |r - 1| relative error whatever the plane's tilt. For the best guess given
z, averaged over the uniform gap, this script gives the resulting AbsRel over the split, with
object and distractor pixels counted as exact. It is a lower bound: real networks also misjudge
the object's depth and the structure. Extra planes are counted as if they moved with the back
plane (they are placed between the object and the back plane). For scenes with
``back_plane_from: surface`` the gap starts at the object's back surface, not its centre; the
ratio then uses the centre depth all the same (a few per cent of z either way).

    .venv/bin/python benchmarks/depth_information_limit.py data/demo_val
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dvc_perception.synth.shards import load_shards


def best_expected_error(z_m: float, gap_m: tuple[float, float], samples: int = 401) -> float:
    """min over guesses g of E_gap |(z + g) / (z + gap) - 1|, gap ~ U(gap_m)."""
    gaps = np.linspace(gap_m[0], gap_m[1], samples)
    guesses = np.linspace(gap_m[0], gap_m[1], samples // 2 + 1)
    err = np.abs((z_m + guesses[:, None]) / (z_m + gaps[None, :]) - 1.0).mean(axis=1)
    return float(err.min())


def information_limit(directory: Path) -> dict[str, float]:
    """AbsRel lower bound, background pixel fraction and mean per-frame error of a split."""
    reader = load_shards(directory)
    index = reader.index
    gap = tuple(float(g) for g in index["config"]["back_plane_gap_m"])
    total_err = total_px = 0.0
    background = []
    for frame in reader:
        valid = np.isfinite(frame.depth) & (frame.depth > 0)
        bg = valid & (frame.instance_ids == -1)
        z = float(frame.t[:, 2].max())  # the gap is measured behind the farthest object
        total_err += best_expected_error(z, gap) * bg.sum()
        total_px += valid.sum()
        background.append(bg.sum() / max(valid.sum(), 1))
    return {
        "frames": len(reader),
        "gap_low_m": gap[0],
        "gap_high_m": gap[1],
        "background_fraction": float(np.mean(background)),
        "abs_rel_lower_bound": total_err / total_px,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("splits", nargs="+", type=Path, help="synth shard directories")
    args = parser.parse_args()
    for split in args.splits:
        print(split, json.dumps(information_limit(split)))


if __name__ == "__main__":
    main()

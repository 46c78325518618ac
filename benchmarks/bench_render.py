# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Rendering and synthesis speed: frames/s and soft-render forward+backward time.

    .venv/bin/python benchmarks/bench_render.py [--frames 20] [--write]

Synthesis = `SceneSampler.sample` (scene sampling, hard render of object + distractors +
textured planes, GT keypoints / visibility / visible fraction, camera effects), one object per
frame, for the demo object and the largest LM-O mesh (obj_000005, 45k faces), with the hard
rasterizer's torch and numba backends. Soft = ``render(..., soft=True)`` forward + backward of
``mask.sum() + depth.nansum() + color.sum()`` w.r.t. vertices, R and t. With --write, the
table replaces the "## Rendering and synthesis" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dvc_perception.render.objects import find_object_yaml, load_object
from dvc_perception.render.raster import render
from dvc_perception.render.raster_numba import numba_available
from dvc_perception.synth.scenes import SceneSampler, SynthConfig

REPO = Path(__file__).resolve().parent.parent
LARGEST_LMO = "lmo_obj_05"  # obj_000005.ply: 22831 vertices, 45666 faces


def _config(width: int, height: int) -> SynthConfig:
    base = SynthConfig(objects_per_frame=(1, 1))
    s = width / base.width
    return dataclasses.replace(
        base, width=width, height=height, fx=base.fx * s, fy=base.fy * s,
        cx=(base.cx + 0.5) * s - 0.5, cy=(base.cy + 0.5) * s - 0.5,
    )  # fmt: skip


def _synth_fps(obj, width: int, height: int, backend: str, frames: int) -> tuple[float, float]:
    """(frames per wall-clock second, frames per CPU-second of this process)."""
    sampler = SceneSampler([obj], _config(width, height), seed=0, render_backend=backend)
    sampler.sample(10_000)  # warm-up (numba compile / caches)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(frames):
        sampler.sample(i)
    return frames / (time.perf_counter() - t0), frames / (time.process_time() - c0)


def _soft_ms(obj, width: int, height: int, repeats: int) -> float:
    K = torch.tensor(
        [[572.4 * width / 640, 0, (width - 1) / 2], [0, 572.4 * width / 640, (height - 1) / 2],
         [0, 0, 1.0]]
    )  # fmt: skip
    R0 = torch.tensor([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])
    times = []
    for _ in range(repeats + 1):
        verts = obj.mesh.vertices.clone().requires_grad_()
        R = R0.clone().requires_grad_()
        z = float(K[0, 0]) * obj.diameter_m / (0.5 * height)  # object about half the image high
        t = torch.tensor([0.0, 0.0, z], requires_grad=True)
        t0 = time.perf_counter()
        r = render(obj.mesh.with_vertices(verts), (R, t), K, width, height, soft=True)
        loss = r.mask.sum() + torch.nan_to_num(r.depth).sum() + r.color.sum()
        loss.backward()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--soft-repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (1: on a shared 2-core machine more threads spin and slow "
        "the many small tensor ops down several-fold)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    objects = {
        "demo_object": load_object(find_object_yaml("demo_object")),
        LARGEST_LMO: load_object(find_object_yaml(LARGEST_LMO)),
    }
    backends = ["torch"] + (["numba"] if numba_available() else [])
    rows = ["| object (faces) | size | synth fps, torch | synth fps, numba | numba frames per "
            "CPU-second | soft fwd+bwd ms |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, obj in objects.items():
        for width, height in ((320, 240), (640, 480)):
            fps = {b: _synth_fps(obj, width, height, b, args.frames) for b in backends}
            soft_size = (128, 128) if width == 320 else (640, 480)
            soft = _soft_ms(obj, *soft_size, args.soft_repeats)
            nan = (float("nan"), float("nan"))
            row = (
                f"| {name} ({obj.mesh.num_faces}) | {width}x{height} | {fps['torch'][0]:.1f} | "
                f"{fps.get('numba', nan)[0]:.1f} | {fps.get('numba', nan)[1]:.1f} | "
                f"{soft:.0f} (at {soft_size[0]}x{soft_size[1]}) |"
            )
            rows.append(row)
            print(row, flush=True)
    command = (
        f".venv/bin/python benchmarks/bench_render.py --frames {args.frames} "
        f"--soft-repeats {args.soft_repeats} --threads {args.threads}"
    )
    text = (
        f"Command: `{command}`, torch {torch.__version__}, {torch.get_num_threads()} torch "
        f"threads, numpy {np.__version__}, {platform.machine()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average before / after "
        f"{load0:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (a shared machine: "
        "wall-clock frames/s drop with the load; frames per CPU-second hardly do).\n"
        'The hard renderer\'s default backend is numba where installed (`backend="auto"`), '
        "else torch.\n"
        "Synthesis = `SceneSampler.sample`: one object + 0-3 distractors + textured back plane "
        "and 0-2 extra planes, full GT (keypoints, visibility, visible fraction via a second "
        "raster pass), camera effects (jitter, blur, noise, JPEG). Soft = `render(soft=True)` "
        "forward + backward w.r.t. vertices, R, t, one object filling about half the image "
        "height.\n\n" + "\n".join(rows) + "\n"
    )
    print(text)
    if args.write:
        path = REPO / "benchmarks" / "RESULTS.md"
        md = path.read_text()
        pattern = re.compile(r"(## Rendering and synthesis[^\n]*\n)(.*?)(?=\n## |\Z)", re.S)
        if not pattern.search(md):
            raise SystemExit("RESULTS.md has no '## Rendering and synthesis' section")
        path.write_text(pattern.sub(lambda m: m.group(1) + "\n" + text, md, count=1))


if __name__ == "__main__":
    main()

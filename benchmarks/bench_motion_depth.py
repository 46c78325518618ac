# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Time of depth from motion for one keyframe (`motion_depth.MotionDepthEstimator.estimate`).

    .venv/bin/python benchmarks/bench_motion_depth.py [--frames 200] [--warm-up 5]
        [--internal-width 320] [--threads 0] [--no-refine] [--data DIR] [--json FILE]
        [--kernels]

On the real 7-Scenes kitchen sequence (``../shared/data/rgbd_kitchen``, 640x480, its
KinectFusion poses; skipped with a message where the folder is absent), the node's estimator
settings (`pipeline.multiview` defaults: 320x240 internal, 64 planes, up to 4 sources, pose
refinement and temporal fusion on). Frames are fed in order; the first `--warm-up` frames with
depth are not timed (they load the compiled kernels and OpenCV's SIFT). The estimator's own stage
timings per frame: ``features`` (SIFT of the new frame; stored frames keep theirs), ``poses`` (its
SIFT matches into the source frames + the window bundle adjustment), ``sweep`` (plane-sweep ZNCC +
SGM + winner + speckles + fusion), ``total`` (the whole `estimate`, including the colour -> grey
resize and the nearest upsampling to 640x480). Median and 90th percentile in ms. A sanity line
gives AbsRel and density against the sensor depth over the timed frames (not the issue's
evaluation, which goes through rgbd2bag + replay + eval) and the minor page faults per frame
(``estimator.keep_freed_memory``).
The CPU may be shared: the load average before and after is printed. By default every frame
of the sequence after the warm-up is timed (110 keyframes on the kitchen): its first 30 frames
need fewer source frames than the rest and took 10-20 % less (benchmarks/RESULTS.md, issue 22).

``--kernels`` also times the plane sweep's compiled kernels on one reference frame with 3 sources
(the sweep's median in the sequence; sequence frames 100 and 96, 90, 80 before it, the given
poses), median of 10 runs: ``stats`` (reference window statistics), ``cost`` (warp + ZNCC of
every source over every plane, averaged), ``sgm_winner`` (4 paths + winner), ``seen``, and the
whole `sweep.plane_sweep_depth` (adds the P2 map and the speckle filter).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import cv2
import numba
import numpy as np

from dvc_perception.config import MultiviewConfig
from dvc_perception.datasets.rgbd import iter_rgbd_images, read_rgbd_sequence
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.motion_depth.estimator import (
    STATUS_OK,
    MotionDepthEstimator,
    internal_size,
    keep_freed_memory,
)
from dvc_perception.motion_depth.sweep import plane_sweep_depth
from dvc_perception.pipeline.multiview import motion_depth_settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "rgbd_kitchen"
STAGES = ("features", "poses", "sweep", "total")
#: Issue 22: depth for one keyframe at 320x240 internal resolution on this CPU.
TARGET_MS = 100.0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(data: Path, frames: int, warm_up: int, internal_width: int, refine: bool) -> dict:
    """Feed the sequence to one estimator; stage timings of the timed frames, and a sanity
    check of their depth."""
    config = MultiviewConfig(internal_width=internal_width, refine_poses=refine)
    settings = motion_depth_settings(config)
    sequence = read_rgbd_sequence(data)
    estimator = MotionDepthEstimator(settings)
    timings: dict[str, list[float]] = {s: [] for s in STAGES}
    sources, refined, abs_rel, density, faults = [], [], [], [], []
    with_depth = 0
    for frame, rgb, depth_true in iter_rgbd_images(sequence):
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        r = estimator.estimate(rgb, sequence.K, frame.T_world_cam, frame.stamp_ns * 1e-9)
        if r.status != STATUS_OK:
            continue
        with_depth += 1
        if with_depth <= warm_up:
            continue
        for s in STAGES:
            timings[s].append(r.timings[s])
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
        sources.append(r.sources)
        refined.append(r.pose_refined)
        valid = np.isfinite(depth_true) & (depth_true > 0)
        found = valid & np.isfinite(r.depth)
        density.append(found.sum() / max(valid.sum(), 1))
        if found.any():
            abs_rel.append(float(np.mean(np.abs(r.depth[found] - depth_true[found])
                                         / depth_true[found])))
        if len(timings["total"]) == frames:
            break
    h, w = rgb.shape[:2]
    internal = (min(internal_width, w), round(h * min(internal_width, w) / w))
    return {"timings_ms": timings, "sources": sources, "pose_refined": refined,
            "abs_rel": abs_rel, "density": density, "page_faults": faults, "image": (w, h),
            "internal": internal,
            "planes": settings.sweep.planes, "max_sources": settings.keyframes.max_sources}


def time_kernels(data: Path, internal_width: int, runs: int = 10) -> dict[str, float]:
    """Median ms of each plane-sweep kernel on one frame with 3 sources (module docstring)."""
    from dvc_perception.motion_depth import _compiled

    settings = motion_depth_settings(MultiviewConfig(internal_width=internal_width)).sweep
    sequence = read_rgbd_sequence(data)
    wanted = {100: "ref", 96: 0, 90: 1, 80: 2}
    greys: dict[object, np.ndarray] = {}
    poses: dict[object, np.ndarray] = {}
    for i, (frame, rgb, _) in enumerate(iter_rgbd_images(sequence)):
        if i in wanted:
            h, w = rgb.shape[:2]
            grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            grey = cv2.resize(grey, internal_size(w, h, internal_width),
                              interpolation=cv2.INTER_AREA)
            greys[wanted[i]] = grey.astype(np.float32) / 255.0
            poses[wanted[i]] = frame.T_world_cam
        if len(greys) == len(wanted):
            break
    ref = greys.pop("ref")
    K = CameraModel(sequence.K, np.zeros(0), w, h).resized(ref.shape[1], ref.shape[0]).K.numpy()
    relative = [np.linalg.inv(poses[k]) @ poses["ref"] for k in range(3)]
    sources = [greys[k] for k in range(3)]
    # the kernels' inputs, as `plane_sweep_depth` makes them
    inv = settings.inverse_depths()
    r = settings.window_radius
    srcs = np.stack(sources)
    A = np.stack([K @ T[:3, :3] @ np.linalg.inv(K) for T in relative])
    b = np.stack([K @ T[:3, 3] for T in relative])
    mean, inv_std = _compiled.reference_stats(ref, r)
    cost = np.empty((ref.shape[0], len(inv), ref.shape[1]), np.float32)
    _compiled.sweep_cost(ref, mean, inv_std, srcs, A, b, inv, r, cost)
    p2 = np.full(ref.shape, settings.p2, np.float32)
    idx, _ = _compiled.sgm_winner(cost, np.float32(settings.p1), p2, False)
    steps = {
        "stats": lambda: _compiled.reference_stats(ref, r),
        "cost": lambda: _compiled.sweep_cost(ref, mean, inv_std, srcs, A, b, inv, r,
                                             np.empty_like(cost)),
        "sgm_winner": lambda: _compiled.sgm_winner(cost, np.float32(settings.p1), p2, False),
        "seen": lambda: _compiled.seen_at(idx, A, b, inv),
        "plane_sweep_depth": lambda: plane_sweep_depth(ref, sources, relative, K, settings),
    }
    out = {}
    for name, step in steps.items():
        step()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            step()
            times.append(1e3 * (time.perf_counter() - t0))
        out[name] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="7-Scenes or TUM RGB-D sequence folder")
    parser.add_argument("--frames", type=int, default=200,
                        help="timed frames with depth (at most; default: the whole sequence)")
    parser.add_argument("--warm-up", type=int, default=5, help="untimed frames with depth first")
    parser.add_argument("--internal-width", type=int, default=320)
    parser.add_argument("--threads", type=int, default=0, help="numba threads (0: default)")
    parser.add_argument("--no-refine", action="store_true", help="pose refinement off")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--kernels", action="store_true",
                        help="also time the sweep's kernels on one frame")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} is absent (the shared data exists on dev and CI machines "
              "only); pass --data SEQ_DIR")
        return
    if args.threads > 0:
        numba.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result = run(args.data, args.frames, args.warm_up, args.internal_width, not args.no_refine)
    wall_s = time.perf_counter() - t0
    load_after = os.getloadavg()
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel ran
        layer = "none"
    machine = {"cpu": _cpu_model(), "cores": os.cpu_count(),
               "numba": numba.__version__, "numba_threads": numba.get_num_threads(),
               "numba_threading_layer": layer, "opencv": cv2.__version__,
               "opencv_threads": cv2.getNumThreads(), "numpy": np.__version__}
    timed = len(result["timings_ms"]["total"])
    print(f"{machine['cpu']} ({machine['cores']} cores), numba {machine['numba']} "
          f"({machine['numba_threads']} threads, {layer} layer), OpenCV {machine['opencv']} "
          f"({machine['opencv_threads']} threads), numpy {machine['numpy']}; load average "
          f"{' '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{' '.join(f'{x:.2f}' for x in load_after)} after ({wall_s:.0f} s)")
    w, h = result["image"]
    iw, ih = result["internal"]
    print(f"{args.data.name}: {w}x{h} input, {iw}x{ih} internal, {result['planes']} planes, up "
          f"to {result['max_sources']} sources (median {statistics.median(result['sources'])}), "
          f"pose refinement {'off' if args.no_refine else 'on'} (refined "
          f"{np.mean(result['pose_refined']):.0%} of frames); {timed} timed frames after "
          f"{args.warm_up} warm-up frames with depth")
    print("| stage | median ms | p90 ms |")
    print("|---|---|---|")
    for stage in STAGES:
        t = result["timings_ms"][stage]
        print(f"| {stage} | {statistics.median(t):.1f} | {np.percentile(t, 90):.1f} |")
    total = statistics.median(result["timings_ms"]["total"])
    print(f"target (issue 22): <= {TARGET_MS:.0f} ms per keyframe at 320x240: "
          f"{'met' if total <= TARGET_MS else 'not met'} ({total:.0f} ms median total)")
    print(f"sanity: AbsRel {np.mean(result['abs_rel']):.3f}, density "
          f"{np.mean(result['density']):.2f} of the sensor's valid pixels (timed frames); "
          f"{statistics.median(result['page_faults']):.0f} page faults per frame (median; "
          f"malloc keeps freed memory: {keep_freed_memory()})")
    if args.kernels:
        kernels = time_kernels(args.data, args.internal_width)
        result["kernels_ms"] = kernels
        print("sweep kernels, one frame, 3 sources (median ms): "
              + ", ".join(f"{k} {v:.1f}" for k, v in kernels.items()))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": machine, "load_average_before": load_before,
            "load_average_after": load_after, "wall_s": wall_s, "args": {
                k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            **result}, indent=1))


if __name__ == "__main__":
    main()

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception adapt-depth-refiner BAG --out FILE.onnx`: tune the refiner on a bag, no labels.

Self-supervised test-time adaptation of the learned depth refiner (`train.adapt_refiner`): the
bag's images, camera_info and camera poses (read as `replay` reads them for ``depth_source:
multiview``; no depth topic is read) run once through the classical depth from motion, then the
refiner (``--model``, default the shipped ``models/depth_refiner.onnx``) is fine-tuned with a
photometric loss between each frame and its source frames warped with the refined depth and the
poses the window bundle adjustment produced. The scale stays the classical one. Use the result
with ``--param pipeline.multiview.refiner_model:=FILE.onnx``.

The run directory (``--run-dir``, default ``FILE.run/`` beside the output) keeps the classical
pass's output (``frames.npz``) and the checkpoint (``last.pt``): running the same command again
resumes. ``--minutes`` bounds the training time (all runs of the directory together),
``--steps`` the steps. The node's ``pipeline.multiview`` parameters (``--params``, ``--param``)
set the classical estimator, as for `replay`.

Experimental: measured on the real kitchen sequence it made the depth worse (AbsRel 0.172 ->
0.189 with the given poses; benchmarks/RESULTS.md): the photometric loss cannot see flat
surfaces, where the refiner's synthetic prior is better.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: Parameters of the classical estimator, from the node's configuration.
_MULTIVIEW = "pipeline.multiview"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `adapt-depth-refiner`."""
    parser.add_argument("bag", help="rosbag2 with a camera image, its camera_info and the "
                        "camera's poses (geometry_msgs/PoseStamped)")  # fmt: skip
    parser.add_argument("--out", required=True, metavar="FILE.onnx",
                        help="the adapted refiner (ONNX, the shipped refiner's metadata)")
    parser.add_argument("--model", default="", metavar="FILE.onnx",
                        help="the refiner to start from (default: the shipped "
                        "models/depth_refiner.onnx)")  # fmt: skip
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="training time budget [min] (default 20; resumed runs count)")
    parser.add_argument("--steps", type=int, default=None,
                        help="at most this many steps (default: until --minutes)")
    parser.add_argument("--batch", type=int, default=2, help="frames per step (default 2)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (1e-4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the frame draws (0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--run-dir", default="", help="cache and checkpoint directory "
                        "(default: FILE.run beside --out)")  # fmt: skip
    parser.add_argument("--params", default="", help="node parameters YAML "
                        "(default: the shipped config/perception.yaml)")  # fmt: skip
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="parameter override, repeatable (pipeline.multiview.* sets the "
                        "classical estimator)")  # fmt: skip
    parser.add_argument("--image-topic", default="", help="auto-detected when omitted")
    parser.add_argument("--camera-info-topic", default="", help="auto-detected when omitted")
    parser.add_argument("--pose-topic", default="", help="camera pose topic "
                        "(PoseStamped); auto-detected when omitted")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Collect (or load) the classical pass, adapt, export; print a summary."""
    import torch

    from dvc_perception.bag.motion_frames import motion_topics, node_config
    from dvc_perception.commands.replay import parse_param_overrides
    from dvc_perception.files import file_sha256
    from dvc_perception.pipeline.multiview import motion_depth_settings
    from dvc_perception.resources import find_share_file
    from dvc_perception.train.adapt_refiner import (
        AdaptSettings,
        adapt,
        load_refiner_onnx,
        mean_photometric_loss,
    )

    torch.set_num_threads(max(1, args.threads))
    log = _logger()
    settings = AdaptSettings(steps=args.steps, minutes=args.minutes, batch=args.batch,
                             lr=args.lr, seed=args.seed)
    model = Path(args.model) if args.model else find_share_file("models/depth_refiner.onnx")
    start, meta = load_refiner_onnx(model)
    net = copy.deepcopy(start)
    config = node_config(args.params or None, parse_param_overrides(args.param))
    estimator_settings = motion_depth_settings(config.pipeline.multiview)
    topics = motion_topics(args.bag, config, args.image_topic, args.camera_info_topic,
                           args.pose_topic)
    out = Path(args.out)
    run_dir = Path(args.run_dir) if args.run_dir else out.with_name(out.name + ".run")
    run_dir.mkdir(parents=True, exist_ok=True)
    size = (int(meta.input_size[0]), int(meta.input_size[1]))
    cache_key = {"bag": str(Path(args.bag).resolve()), "topics": topics.__dict__,
                 "estimator": repr(estimator_settings), "size": list(size)}
    t0 = time.time()
    data, counts = _classical_pass(args.bag, config, topics, estimator_settings, size,
                                   run_dir / "frames.npz", cache_key, not args.no_progress, log)
    classical_s = time.time() - t0
    log(f"adapt-depth-refiner: {len(data.ref)} frames with depth of {len(data.greys)} read "
        f"({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); classical pass "
        f"{classical_s:.0f} s")
    model_sha = file_sha256(model)[:16]
    run_key = hashlib.sha256(json.dumps(
        {**cache_key, "model": model_sha, "batch": settings.batch, "lr": settings.lr,
         "seed": settings.seed}, sort_keys=True).encode()).hexdigest()[:16]
    before = mean_photometric_loss(start, data)
    result = adapt(net, start, data, settings, run_dir / "last.pt", run_key,
                   progress=not args.no_progress)
    after = mean_photometric_loss(net, data)
    _export(net, out, meta, model, model_sha, args, settings, result, len(data.ref),
            (before, after))
    summary = {"frames_read": int(len(data.greys)), "depth_frames": int(len(data.ref)),
               "statuses": counts, "steps": result.steps, "train_s": round(result.train_s, 1),
               "resumed_from_step": result.resumed_from, "photometric_before": before,
               "photometric_after": after, "model": str(model), "out": str(out),
               "history": result.history}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"adapted {model} on {args.bag}: {result.steps} steps, {result.train_s / 60:.1f} min "
          f"of training; photometric loss over the {len(data.ref)} depth frames {before:.4f} "
          f"-> {after:.4f}; wrote {out} (use --param "
          f"{_MULTIVIEW}.refiner_model:={out})")  # fmt: skip
    return 0


def _logger() -> Callable[[str], None]:
    """One-line notes on stderr."""
    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    return log


def _classical_pass(bag: str, config: Any, topics: Any, estimator_settings: Any,
                    size: tuple[int, int], cache: Path, key: dict[str, Any], progress: bool,
                    log: Callable[[str], None]) -> tuple[Any, dict[str, int]]:
    """(AdaptData, status counts) from `cache` when it was written for `key`, else computed."""
    from tqdm import tqdm

    from dvc_perception.bag.motion_frames import read_motion_frames
    from dvc_perception.train.adapt_refiner import AdaptData, collect_windows

    if cache.is_file():
        data, meta = AdaptData.load(cache)
        if meta.get("key") == key:
            log(f"adapt-depth-refiner: classical pass loaded from {cache}")
            return data, meta["counts"]
        log(f"adapt-depth-refiner: {cache} is of another bag or settings: computed again")
    bar = tqdm(total=topics.images, desc="classical depth", unit="frame", disable=not progress)
    try:
        data, counts = collect_windows(read_motion_frames(bag, config, topics, log),
                                       estimator_settings, size, lambda status: bar.update(1))
    finally:
        bar.close()
    data.save(cache, {"key": key, "counts": counts})
    return data, counts


def _export(net: Any, out: Path, meta: Any, model: Path, model_sha: str,
            args: argparse.Namespace, settings: Any, result: Any, frames: int,
            losses: tuple[float, float]) -> None:
    """Export with `export_refiner` (the shipped refiner's metadata) and the adaptation's."""
    from dvc_perception.pipeline.depth_refiner import export_refiner
    from dvc_perception.train.records import git_commit

    commit = git_commit()
    provenance = {
        "git_commit": commit["commit"], "git_dirty": commit["dirty"],
        "command": " ".join(["dvc-perception", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_seed": settings.seed,
        "base_model": {"path": str(model), "sha256_16": model_sha,
                       "provenance": dict(meta.provenance)},
    }
    adaptation = {
        "kind": "self-supervised test-time adaptation (photometric, no depth labels)",
        "bag": str(args.bag), "depth_frames": frames, "steps": result.steps,
        "train_s": round(result.train_s, 1), "batch": settings.batch, "lr": settings.lr,
        "photometric_before": round(losses[0], 5), "photometric_after": round(losses[1], 5),
    }
    width, height = meta.input_size
    net.eval()
    export_refiner(net, out, width, height, provenance, extra={"adaptation": adaptation})

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception synth`: synthetic training frames (npz shards) and/or a rosbag2.

Examples::

    dvc-perception synth --objects demo_object --frames 200 --out out/synth_demo
    dvc-perception synth --objects lmo_obj_01 lmo_obj_05 --frames 100 --bag out/synth.mcap_bag
    dvc-perception synth --objects demo_object --frames 120 --sequence --bag out/seq --fps 30
    dvc-perception synth --objects lmo_obj_01 lmo_obj_05 --instances-per-object 2 3 --out out/bin

The shard format is documented in `dvc_perception.synth.shards.write_shards`.
"""

from __future__ import annotations

import argparse

from dvc_perception.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `synth`."""
    parser.add_argument(
        "--objects", nargs="+", default=["demo_object"],
        help="object ids (shipped config/objects/<id>.yaml) or YAML paths",
    )  # fmt: skip
    parser.add_argument("--frames", type=int, default=100, help="number of frames")
    parser.add_argument("--out", help="shard output directory (npz shards + index.json)")
    parser.add_argument("--bag", help="rosbag2 output directory (must not exist)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--fps", type=float, default=10.0, help="bag stamping rate [Hz]")
    parser.add_argument("--frame-id", default="camera_optical_frame", help="bag header frame_id")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequence", action="store_true", help="static scene, moving camera")
    parser.add_argument("--config", help="YAML mapping of SynthConfig fields")
    parser.add_argument(
        "--width", type=int, help="image width [px]; intrinsics scale with it (default 640)"
    )
    parser.add_argument("--height", type=int, help="image height [px] (default 480)")
    parser.add_argument(
        "--instances-per-object", nargs=2, type=int, metavar=("MIN", "MAX"),
        help="copies of each chosen object per frame, each a separate instance (overrides "
        "the config's instances_per_object; default 1 1)",
    )  # fmt: skip
    parser.add_argument("--frames-per-shard", type=int, default=50)
    parser.add_argument("--compress", action="store_true", help="zlib-compressed npz shards")
    parser.add_argument("--data-root", help="replaces ${DVC_SHARED_DATA} in mesh paths")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (default 1: the renderer runs many small tensor ops that "
        "more threads slow down on a busy CPU; run several processes with other seeds instead)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Build the sampler from the arguments, write the outputs, print a summary."""
    import dataclasses

    import torch

    from dvc_perception.config import load_yaml_mapping
    from dvc_perception.render.objects import find_object_yaml, load_object
    from dvc_perception.synth.scenes import SceneSampler, SynthConfig
    from dvc_perception.synth.shards import write_shards
    from dvc_perception.synth.synth_bag import write_bag

    if not args.out and not args.bag:
        raise ConfigError("synth: give --out DIR and/or --bag OUT")
    if args.threads < 1:
        raise ConfigError(f"synth: --threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    values: dict = {}
    if args.config:
        values.update(load_yaml_mapping(args.config, "--config (SynthConfig fields)"))
    if args.instances_per_object is not None:
        values["instances_per_object"] = tuple(args.instances_per_object)
    cfg = SynthConfig.from_mapping(values)
    width = args.width or cfg.width
    height = args.height or cfg.height
    if (width, height) != (cfg.width, cfg.height):
        sx, sy = width / cfg.width, height / cfg.height
        cfg = dataclasses.replace(
            cfg, width=width, height=height, fx=cfg.fx * sx, fy=cfg.fy * sy,
            cx=(cfg.cx + 0.5) * sx - 0.5, cy=(cfg.cy + 0.5) * sy - 0.5,
        )  # fmt: skip
    if args.sequence:
        cfg = dataclasses.replace(cfg, sequence=True)
    objects = [load_object(find_object_yaml(o), data_root=args.data_root) for o in args.objects]
    sampler = SceneSampler(objects, cfg, seed=args.seed)
    if args.out:
        index = write_shards(
            sampler, args.out, args.frames, frames_per_shard=args.frames_per_shard,
            compress=args.compress, progress=not args.no_progress,
        )  # fmt: skip
        print(f"wrote {args.frames} frames ({width}x{height}) to {index.parent}")
    if args.bag:
        bag = write_bag(
            sampler, args.bag, args.frames, fps=args.fps, storage=args.storage,
            frame_id=args.frame_id, progress=not args.no_progress,
        )  # fmt: skip
        print(f"wrote {args.frames} frames ({args.storage}, {args.fps} Hz) to {bag}")
    return 0

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception bop2bag DATASET_DIR SCENE -o BAG`: a BOP scene as a rosbag2."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `bop2bag`."""
    parser.add_argument("dataset_dir", help="BOP dataset root, e.g. ../shared/data/lmo")
    parser.add_argument("scene", help="scene folder inside it, e.g. test/000002")
    parser.add_argument("-o", "--output", required=True, help="output bag directory")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--rate", type=float, default=10.0, help="stamping rate [Hz]")
    parser.add_argument("--frame-id", default="camera_optical_frame")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag")


def run(args: argparse.Namespace) -> int:
    """Convert and print a one-line summary."""
    from dvc_perception.bag.bop import bop_scene_to_bag

    n = bop_scene_to_bag(
        args.dataset_dir, args.scene, args.output, storage=args.storage, rate_hz=args.rate,
        frame_id=args.frame_id, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"wrote {n} frames of {args.dataset_dir}/{args.scene} to {args.output}")
    return 0

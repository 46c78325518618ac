# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception rgbd2bag SEQ_DIR -o BAG`: an RGB-D sequence with camera poses as a rosbag2."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `rgbd2bag`."""
    parser.add_argument("seq_dir", help="7-Scenes (frame-NNNNNN.color/depth/pose files) or TUM "
                        "RGB-D (rgb.txt, depth.txt, groundtruth.txt) folder, e.g. "
                        "../shared/data/rgbd_kitchen")  # fmt: skip
    parser.add_argument("-o", "--output", required=True, help="output bag directory")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--intrinsics", default=None, metavar="FILE",
                        help="text file with the 3x3 K (required for TUM; default for 7-Scenes: "
                        "the folder's camera-intrinsics.txt)")  # fmt: skip
    parser.add_argument("--focal-px", type=float, default=None, metavar="F",
                        help="write fx = fy = F [px] in camera_info instead of the "
                        "intrinsics file's (principal point unchanged; e.g. from "
                        "estimate-focal); 7-Scenes depth images keep the file's K and are "
                        "moved onto the colour camera's pixel grid")  # fmt: skip
    registered = parser.add_mutually_exclusive_group()
    registered.add_argument("--depth-registered", dest="depth_registered", action="store_true",
                            default=None, help="the depth images are on the colour camera's "
                            "pixel grid already (aligned depth; the default for TUM): written "
                            "as they are, also with --focal-px")  # fmt: skip
    registered.add_argument("--depth-unregistered", dest="depth_registered",
                            action="store_false", help="the depth images have the intrinsics "
                            "file's K (the default for 7-Scenes): with --focal-px they are moved "
                            "onto the colour camera's pixel grid")  # fmt: skip
    parser.add_argument("--start", type=int, default=0, help="frames to skip at the beginning")
    parser.add_argument("--stride", type=int, default=1, help="keep every N-th frame")
    parser.add_argument("--max-frames", type=int, default=None, help="at most N frames")
    parser.add_argument("--rate", type=float, default=None,
                        help="7-Scenes stamping rate [Hz] (default 30; TUM has time stamps)")
    parser.add_argument("--max-dt", type=float, default=None, help="TUM: largest colour-depth "
                        "and colour-pose time difference [s] (default 0.02)")  # fmt: skip
    parser.add_argument("--frame-id", default="camera_optical_frame",
                        help="camera optical frame of the image, camera_info and depth")
    parser.add_argument("--world-frame", default="world", help="frame_id of the camera poses")
    parser.add_argument("--perturb-m", type=float, default=0.0, metavar="M",
                        help="perturb every written camera pose by exactly M metres (random "
                        "direction per frame; to test noisy odometry)")  # fmt: skip
    parser.add_argument("--perturb-deg", type=float, default=0.0, metavar="D",
                        help="perturb every written camera pose by exactly D degrees about its "
                        "centre (random axis per frame)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Convert and print a one-line summary."""
    from dvc_perception.bag.rgbd import depth_is_registered, rgbd_sequence_to_bag

    seq = rgbd_sequence_to_bag(
        args.seq_dir, args.output, storage=args.storage, frame_id=args.frame_id,
        world_frame=args.world_frame, intrinsics=args.intrinsics, start=args.start,
        stride=args.stride, max_frames=args.max_frames, rate_hz=args.rate,
        max_dt_s=args.max_dt, overwrite=args.overwrite, progress=not args.no_progress,
        perturb_m=args.perturb_m, perturb_deg=args.perturb_deg, seed=args.seed,
        focal_px=args.focal_px, depth_registered=args.depth_registered,
    )  # fmt: skip
    skipped = (f" ({seq.skipped} colour images without a depth image and a pose within the "
               "time tolerance left out)" if seq.skipped else "")  # fmt: skip
    print(f"wrote {len(seq.frames)} frames of {args.seq_dir} ({seq.layout} layout) to "
          f"{args.output}{skipped}")
    if args.focal_px is not None:
        print(f"camera_info focal length overridden (--focal-px): fx = fy = {args.focal_px:g} "
              f"px, not the intrinsics file's fx {seq.K[0, 0]:g} fy {seq.K[1, 1]:g} (principal "
              "point unchanged)")
        registered = depth_is_registered(seq.layout, args.depth_registered)
        print("depth ground truth: " + ("written as it is, taken as registered to the colour "
                                        "image (--depth-unregistered moves it)" if registered
                                        else "moved from the intrinsics file's K onto the colour "
                                        "camera's pixel grid (same centre and orientation "
                                        "assumed; --depth-registered keeps it as it is)"))
    return 0

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception estimate-focal SEQ_DIR`: the focal length the images and poses imply.

Reads an RGB-D sequence folder (the `rgbd2bag` layouts, `datasets.rgbd`) or a bag written by
`rgbd2bag` (``/camera/image_raw``, ``/camera/camera_info``, ``/camera/pose``), runs
`motion_depth.focal.estimate_focal` and prints the estimate, the per-window table, the residuals
and the verdict. It changes no file (``--json OUT`` writes a new one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `estimate-focal`."""
    parser.add_argument("seq_dir", help="7-Scenes or TUM RGB-D folder (as rgbd2bag reads), or "
                        "a bag written by rgbd2bag")  # fmt: skip
    parser.add_argument("--intrinsics", default=None, metavar="FILE",
                        help="text file with the 3x3 K (required for TUM; default for 7-Scenes: "
                        "the folder's camera-intrinsics.txt)")  # fmt: skip
    parser.add_argument("--frames", default=None, metavar="A:B",
                        help="only frames A..B-1 (positions in time order, as a Python slice)")
    parser.add_argument("--windows", type=int, default=30, metavar="N",
                        help="frames per window (default 30)")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the result here")


def _slice(text: str | None) -> tuple[int, int | None]:
    from dvc_perception.errors import ConfigError

    if text is None:
        return 0, None
    try:
        a, b = text.split(":")
        start, stop = int(a or 0), (int(b) if b else None)
    except ValueError as err:
        raise ConfigError(f"--frames: expected A:B (e.g. 0:122), got {text!r}") from err
    if start < 0 or (stop is not None and stop <= start):
        raise ConfigError(f"--frames: expected 0 <= A < B, got {text!r}")
    return start, stop


def _folder_frames(path: Path, intrinsics: str | None, start: int, stop: int | None
                   ) -> tuple[np.ndarray, list[int], Iterator]:
    from dvc_perception.datasets.rgbd import iter_rgbd_images, read_rgbd_sequence

    seq = read_rgbd_sequence(path, intrinsics=intrinsics, start=start,
                             max_frames=None if stop is None else stop - start)  # fmt: skip
    frames = ((rgb, frame.T_world_cam) for frame, rgb, _ in iter_rgbd_images(seq))
    return seq.K, [f.number for f in seq.frames], frames


def _bag_frames(path: Path, start: int, stop: int | None
                ) -> tuple[np.ndarray, list[int], Iterator]:
    """Images, camera_info and poses of a bag by header stamp (rgbd2bag's topics)."""
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo, Image

    from dvc_perception.bag.io import BagReader, deserialize
    from dvc_perception.errors import InputError
    from dvc_perception.ros.convert import image_msg_to_rgb, pose_msg_to_matrix
    from dvc_perception.synth.synth_bag import CAMERA_INFO_TOPIC, CAMERA_POSE_TOPIC, IMAGE_TOPIC

    def stamp(msg) -> int:
        return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec

    with BagReader(path) as reader:
        missing = {IMAGE_TOPIC, CAMERA_INFO_TOPIC, CAMERA_POSE_TOPIC} - set(reader.topics())
        if missing:
            raise InputError(f"bag {path} lacks {sorted(missing)}: expected rgbd2bag's topics")
        infos = [deserialize(m, CameraInfo, k, path)
                 for k, m in enumerate(reader.messages([CAMERA_INFO_TOPIC]))]
        poses = {}
        for k, m in enumerate(reader.messages([CAMERA_POSE_TOPIC])):
            msg = deserialize(m, PoseStamped, k, path)
            poses[stamp(msg)] = pose_msg_to_matrix(msg.pose)
        stamps = sorted(set(poses) & {stamp(m) for m in infos})[start:stop]
    if not stamps:
        raise InputError(f"bag {path}: no frame with an image, camera_info and pose selected")
    K = np.reshape(infos[0].k, (3, 3))

    def frames() -> Iterator:
        keep = set(stamps)
        with BagReader(path) as reader:
            for k, m in enumerate(reader.messages([IMAGE_TOPIC])):
                msg = deserialize(m, Image, k, path)
                if stamp(msg) in keep:
                    yield image_msg_to_rgb(msg), poses[stamp(msg)]

    return K, list(range(start, start + len(stamps))), frames()


def run(args: argparse.Namespace) -> int:
    """Estimate, print, and write ``--json``."""
    from dvc_perception.motion_depth.focal import (
        FOCAL_TOLERANCE,
        RESIDUAL_RATIO,
        WINDOW_AGREEMENT,
        estimate_focal,
    )

    path = Path(args.seq_dir)
    start, stop = _slice(args.frames)
    t0 = time.perf_counter()
    is_bag = (path / "metadata.yaml").is_file() or path.suffix in (".mcap", ".db3")
    if is_bag:
        K, numbers, frames = _bag_frames(path, start, stop)
    else:
        K, numbers, frames = _folder_frames(path, args.intrinsics, start, stop)
    r = estimate_focal(frames, K, window=args.windows)
    seconds = time.perf_counter() - t0
    pct = 100 * r.relative_difference
    print(f"{path}: frames {numbers[0]}-{numbers[-1]} ({r.frames}), camera_info fx {K[0, 0]:g} "
          f"fy {K[1, 1]:g} cx {K[0, 2]:g} cy {K[1, 2]:g} px")
    print(f"pairs {r.pairs}, matches {r.matches}, median rotation {r.median_rotation_deg:.1f} deg")
    print(f"focal estimate: {r.f_px:.1f} px ({pct:+.1f} % from {r.nominal_f_px:g})")
    print(f"windows of {args.windows} frames:")
    print("  frames      pairs  matches    f [px]  vs median")
    for w in r.windows:
        rel = ("" if w.f_px is None or r.window_median_px is None
               else f"{100 * (w.f_px / r.window_median_px - 1):+.1f} %")
        f_text = "-" if w.f_px is None else f"{w.f_px:.1f}" + ("" if w.bracketed else " (edge)")
        print(f"  {numbers[w.first]:>4}-{numbers[w.last]:<5} {w.pairs:>6} {w.matches:>8} "
              f"{f_text:>9}  {rel}")
    if r.window_spread is not None:
        print(f"window median {r.window_median_px:.1f} px, largest deviation "
              f"{100 * r.window_spread:.1f} % (agreement needs <= {100 * WINDOW_AGREEMENT:g} %)")
    print(f"median |Sampson| residual: {r.residual_px:.2f} px at {r.f_px:.1f}, "
          f"{r.nominal_residual_px:.2f} px at the camera_info's focal length (disagreement "
          f"needs a ratio < {RESIDUAL_RATIO:g} and a difference > {100 * FOCAL_TOLERANCE:g} %)")
    print(f"verdict: {r.verdict.value}: {r.reason}")
    print(f"time {seconds:.1f} s")
    if args.json:
        out = dataclasses.asdict(r)
        out.update(verdict=r.verdict.value, source=str(path), frame_numbers=numbers,
                   camera_info_K=np.asarray(K).tolist(), window_frames=args.windows,
                   seconds=seconds)  # fmt: skip
        for w in out["windows"]:
            w.update(first_frame=numbers[w["first"]], last_frame=numbers[w["last"]])
        Path(args.json).write_text(json.dumps(out, indent=2, allow_nan=True) + "\n")
    return 0

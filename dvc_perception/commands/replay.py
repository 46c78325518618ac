# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception replay IN_BAG -o OUT_BAG`: every frame through the node's code, none dropped."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `replay`."""
    parser.add_argument("input_bag", help="rosbag2 (mcap or sqlite3) with camera topics")
    parser.add_argument("-o", "--output", required=True, help="output bag directory")
    parser.add_argument("--params", default="", help="node parameters YAML "
                        "(default: the shipped config/perception.yaml)")  # fmt: skip
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="parameter override, repeatable (e.g. sync.mode:=exact)")
    parser.add_argument("--image-topic", default="", help="auto-detected when omitted")
    parser.add_argument("--camera-info-topic", default="", help="auto-detected when omitted")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--copy-inputs", action="store_true", help="copy input topics too")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def parse_param_overrides(items: list[str]) -> dict[str, object]:
    """``["a.b:=3", "c:=true"]`` -> ``{"a.b": 3, "c": True}`` (values parsed as YAML scalars)."""
    import yaml

    from dvc_perception.errors import ConfigError

    out: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ConfigError(f"--param {item!r}: expected NAME:=VALUE")
        try:
            out[name] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            reason = " ".join(str(err).split())
            raise ConfigError(f"--param {item!r}: the value is not a YAML scalar: {reason}") \
                from err
    return out


def run(args: argparse.Namespace) -> int:
    """Replay and print a summary (the topics chosen and skipped messages on stderr)."""
    import sys

    from dvc_perception.bag.replay import replay_bag

    s = replay_bag(
        args.input_bag, args.output, params_file=args.params or None,
        parameters=parse_param_overrides(args.param), image_topic=args.image_topic,
        camera_info_topic=args.camera_info_topic, storage=args.storage,
        copy_inputs=args.copy_inputs, overwrite=args.overwrite,
        log=lambda line: print(line, file=sys.stderr),
    )  # fmt: skip
    print(f"replayed {s.frames_in} frames of {s.image_topic} ({s.frames_ok} processed, "
          f"{len(s.errors)} error records, {s.detections} detections) in {s.wall_s:.1f} s "
          f"({s.frames_per_s:.1f} frames/s) -> {s.output_bag}")  # fmt: skip
    if s.bad_images:
        print(f"  {s.bad_images} image message(s) did not deserialize: error records of kind "
              "deserialize, stamped with their record time")  # fmt: skip
    if s.bad_camera_info:
        print(f"  {s.bad_camera_info} camera_info message(s) on {s.camera_info_topic} did not "
              "deserialize and were skipped")  # fmt: skip
    for err in s.errors[:10]:
        print(f"  frame {err.stamp_ns} ns: {err.kind}: {err.message}")
    return 0

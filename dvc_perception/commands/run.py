# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception run`: start `perception_node` without a ROS install (pip wheels only).

The same node and parameters as ``ros2 run dvc_perception perception_node --ros-args
--params-file FILE``; remaps and the namespace are passed as ROS arguments.
"""

from __future__ import annotations

import argparse

from dvc_perception.errors import ConfigError
from dvc_perception.resources import find_share_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `dvc-perception run`."""
    parser.add_argument(
        "--params-file",
        default="",
        help="ROS parameters YAML (default: the shipped config/perception.yaml)",
    )
    parser.add_argument("--namespace", default="", help="node namespace, e.g. /camera")
    parser.add_argument(
        "--remap",
        action="append",
        default=[],
        metavar="FROM:=TO",
        help="topic remap, repeatable (e.g. image:=/camera/image_raw)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="parameter override, repeatable (e.g. sync.mode:=latest)",
    )
    parser.add_argument("--log-level", default="info", help="ROS log level")


def run(args: argparse.Namespace) -> int:
    """Start the node; returns its exit status (0 after SIGINT)."""
    from dvc_perception.ros.perception_node import run_node

    params_file = args.params_file or str(find_share_file("config/perception.yaml"))
    ros_args = ["dvc-perception-run", "--ros-args", "--params-file", params_file]
    for remap in args.remap:
        if ":=" not in remap:
            raise ConfigError(f"--remap {remap!r}: expected FROM:=TO")
        ros_args += ["-r", remap]
    for param in args.param:
        if ":=" not in param:
            raise ConfigError(f"--param {param!r}: expected NAME:=VALUE")
        ros_args += ["-p", param]
    if args.namespace:
        ros_args += ["-r", f"__ns:={args.namespace}"]
    ros_args += ["--log-level", args.log_level]
    return run_node(ros_args)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception`: one command with sub-commands. No logic lives here.

Each sub-command is a module exposing ``add_arguments(parser)`` and ``run(args) -> int``; the
table below names them and they are imported only when their sub-command runs, so
`dvc-perception --help` stays fast and importing this module loads neither torch nor rclpy.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dvc_perception.errors import DvcError

# (sub-command, module, one-line help). A static table: no import-time registry.
SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("demo", "dvc_perception.commands.demo", "chessboard poses by the PnP layer next to OpenCV's"),
    ("run", "dvc_perception.commands.run", "start perception_node (no ROS install needed)"),
    ("bop2bag", "dvc_perception.commands.bop2bag", "convert a BOP-format scene into a rosbag2"),
    ("rgbd2bag", "dvc_perception.commands.rgbd2bag", "convert an RGB-D sequence into a rosbag2"),
    ("estimate-focal", "dvc_perception.commands.estimate_focal",
     "the focal length an RGB-D sequence's images and poses imply"),
    ("replay", "dvc_perception.commands.replay", "replay a rosbag2 through the node's code"),
    ("adapt-depth-refiner", "dvc_perception.commands.adapt_depth_refiner",
     "tune the depth refiner on a bag without labels (experimental)"),
    ("eval", "dvc_perception.commands.evaluate", "score a replayed bag against ground truth"),
    ("eval-bop", "dvc_perception.commands.eval_bop", "bop2bag + replay + eval in one step"),
    ("quantize", "dvc_perception.commands.quantize", "INT8 QDQ ONNX from calibration frames"),
    ("train", "dvc_perception.commands.train", "train the keypoint (pose) or depth network"),
    ("export", "dvc_perception.commands.export", "export a checkpoint to ONNX with metadata"),
    ("synth", "dvc_perception.commands.synth", "synthetic training shards and/or a rosbag2"),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command's arguments."""
    parser = argparse.ArgumentParser(
        prog="dvc-perception", description="Object poses and metric depth for ROS 2."
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (default: one line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, help_text in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error (default: one line)")
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dvc-perception` console script.

    Exit codes: 0 done, 2 a problem with the input (a typed `DvcError` or an OS error on a file
    the user named; one line on stderr), 1 an unexpected error (a bug: one line, and the
    traceback with ``--debug``), 130 interrupted.
    """
    args = build_parser().parse_args(argv)
    prefix = f"dvc-perception {args.command}: error:"
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print(f"dvc-perception {args.command}: interrupted", file=sys.stderr)
        return 130
    except (DvcError, OSError) as err:
        if args.debug:
            raise
        print(f"{prefix} {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a bug: say so in one line, trace on --debug
        if args.debug:
            raise
        print(f"{prefix} unexpected {type(err).__name__}: {_one_line(err)} (this is a bug in "
              "dvc_perception; rerun with --debug for the traceback and report it)",
              file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    """The error's message on one line (an OS error names its file)."""
    if isinstance(err, OSError) and not isinstance(err, DvcError) and err.filename:
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())

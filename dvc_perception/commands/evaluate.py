# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception eval OUT_BAG --gt IN_BAG`: metrics, summary.json and an HTML report."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `eval`."""
    parser.add_argument("output_bag", help="bag written by `dvc-perception replay`")
    parser.add_argument("--gt", required=True, help="input bag with /ground_truth/... topics "
                        "and/or depth ground truth")
    parser.add_argument("--gt-depth-topic", default=None, metavar="TOPIC",
                        help="depth ground truth in --gt, registered to the camera image (32FC1 "
                        "m or 16UC1 mm; default /camera/depth/ground_truth); a bag with it and "
                        "no pose ground truth is scored on depth alone")
    parser.add_argument("--report", default="", help="report directory (default: "
                        "<output_bag>_report)")  # fmt: skip
    parser.add_argument("--node", default="/perception_node", help="node name of the outputs")
    parser.add_argument("--data-root", default=None,
                        help="root for ${DVC_SHARED_DATA} meshes in object YAMLs")
    parser.add_argument("--min-gt-match", type=float, default=None, metavar="FRACTION",
                        help="fraction of the output frames that must have a ground-truth "
                        "stamp (default 0.5); lower it to evaluate deliberately anyway")


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report, print the headline numbers."""
    import sys
    from pathlib import Path

    from dvc_perception.bag.evaluate import DEFAULT_MIN_GT_MATCH, evaluate_bag, format_summary
    from dvc_perception.bag.report import write_report
    from dvc_perception.errors import ConfigError
    from dvc_perception.synth.synth_bag import DEPTH_TOPIC

    min_match = DEFAULT_MIN_GT_MATCH if args.min_gt_match is None else args.min_gt_match
    if not 0.0 <= min_match <= 1.0:
        raise ConfigError(f"--min-gt-match must be a fraction in [0, 1], got {min_match}")
    result = evaluate_bag(args.output_bag, args.gt, node_name=args.node,
                          data_root=args.data_root, min_gt_match=min_match,
                          gt_depth_topic=args.gt_depth_topic or DEPTH_TOPIC)  # fmt: skip
    if result.frames_matched_gt < DEFAULT_MIN_GT_MATCH * result.frames:
        print(f"dvc-perception eval: warning: only {result.frames_matched_gt} of "
              f"{result.frames} output frames have a ground-truth stamp (--min-gt-match "
              f"{min_match:g}); ground-truth frames without an output count as missed",
              file=sys.stderr)  # fmt: skip
    report_dir = Path(args.report or f"{str(args.output_bag).rstrip('/')}_report")
    index = write_report(result, report_dir, gt_bag=args.gt)
    print(format_summary(result.summary()))
    print(f"report: {index}")
    return 0

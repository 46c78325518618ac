# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception eval OUT_BAG --gt IN_BAG`: metrics, summary.json and an HTML report."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `eval`."""
    parser.add_argument("output_bag", help="bag written by `dvc-perception replay`")
    parser.add_argument("--gt", required=True, help="input bag with /ground_truth/... topics")
    parser.add_argument("--report", default="", help="report directory (default: "
                        "<output_bag>_report)")  # fmt: skip
    parser.add_argument("--node", default="/perception_node", help="node name of the outputs")
    parser.add_argument("--data-root", default=None,
                        help="root for ${DVC_SHARED_DATA} meshes in object YAMLs")


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report, print the headline numbers."""
    from pathlib import Path

    from dvc_perception.bag.evaluate import evaluate_bag, format_summary
    from dvc_perception.bag.report import write_report

    result = evaluate_bag(args.output_bag, args.gt, node_name=args.node,
                          data_root=args.data_root)  # fmt: skip
    report_dir = Path(args.report or f"{str(args.output_bag).rstrip('/')}_report")
    index = write_report(result, report_dir, gt_bag=args.gt)
    print(format_summary(result.summary()))
    print(f"report: {index}")
    return 0

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception eval-bop DATASET_DIR SCENE`: bop2bag + replay + eval in one step.

The node runs the network keypoint source with ``--model``, by default the shipped
``models/pose_<dataset>.onnx`` (``pose_lmo.onnx`` for ``../shared/data/lmo``) when it exists;
``--params``/``--param`` configure anything else (and a ``pipeline.network.model_path`` given
there wins).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `eval-bop`."""
    parser.add_argument("dataset_dir", help="BOP dataset root, e.g. ../shared/data/lmo")
    parser.add_argument("scene", help="scene folder inside it, e.g. test/000002")
    parser.add_argument("--output", default="", help="directory for bags, summary and report "
                        "(default: out/eval_<dataset>_<scene>)")  # fmt: skip
    parser.add_argument("--params", default="", help="node parameters YAML for the replay")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE")
    parser.add_argument("--model", default="",
                        help="keypoint network ONNX model (default: the shipped "
                             "models/pose_<dataset>.onnx when it exists, e.g. pose_lmo.onnx)")
    parser.add_argument("--data-root", default=None,
                        help="root for ${DVC_SHARED_DATA} meshes in object YAMLs")


def run(args: argparse.Namespace) -> int:
    """Convert, replay, evaluate; print the headline numbers and where the report is."""
    import shutil
    from pathlib import Path

    from dvc_perception.bag.bop import bop_scene_to_bag
    from dvc_perception.bag.evaluate import evaluate_bag, format_summary
    from dvc_perception.bag.replay import replay_bag
    from dvc_perception.bag.report import write_report
    from dvc_perception.commands.replay import parse_param_overrides
    from dvc_perception.errors import ModelSpecError

    name = f"{Path(args.dataset_dir).resolve().name}_{args.scene.replace('/', '_')}"
    out = Path(args.output or f"out/eval_{name}")
    out.mkdir(parents=True, exist_ok=True)
    in_bag, out_bag = out / "input_bag", out / "output_bag"
    for bag in (in_bag, out_bag):
        if bag.exists():
            shutil.rmtree(bag)
    overrides = parse_param_overrides(args.param)
    model = args.model
    if not model and "pipeline.network.model_path" not in overrides:
        model = _shipped_model(Path(args.dataset_dir).resolve().name)
    if model:
        if not Path(model).is_file():
            raise ModelSpecError(f"--model {model}: no such file")
        overrides = {"pipeline.keypoint_source": "network", "pipeline.network.model_path": model,
                     **overrides}
        print(f"keypoints: network {model}")
    bop_scene_to_bag(args.dataset_dir, args.scene, in_bag)
    replay_bag(in_bag, out_bag, params_file=args.params or None, parameters=overrides)
    result = evaluate_bag(out_bag, in_bag, data_root=args.data_root)
    index = write_report(result, out, gt_bag=in_bag)
    print(format_summary(result.summary()))
    print(f"summary: {out / 'summary.json'}\nreport: {index}")
    return 0


def _shipped_model(dataset: str) -> str:
    """Path of the shipped ``models/pose_<dataset>.onnx``, or "" when there is none."""
    from dvc_perception.errors import ConfigError
    from dvc_perception.resources import find_share_file

    try:
        return str(find_share_file(f"models/pose_{dataset}.onnx"))
    except ConfigError:
        return ""

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception eval-bop DATASET_DIR SCENE`: bop2bag + replay + eval in one step.

The dataset's objects are identified by their meshes (`datasets.bop.bop_object_ids`: the
sha256 of ``models/obj_<6-digit id>.ply`` against the shipped object descriptions), not by the
folder's name.
The node runs the network keypoint source with ``--model`` (or a ``pipeline.network.model_path``
given with ``--param``), by default the shipped ``models/pose_*.onnx`` that knows most of the
dataset's objects. A model that knows none of them is an error naming both sets of objects;
nothing falls back to another keypoint source unless ``--param pipeline.keypoint_source:=...``
asks for it. A zoom-crop keypoint model (metadata ``input_kind: zoom_crop``) is the second stage
of the two-stage path: its detector is ``--detector`` (or
``pipeline.network.detector_model_path``), by default the shipped ``models/detector_*.onnx``
that knows most of the keypoint model's objects; a zoom-crop model without any detector is an
error, never a whole-image run.

``--refine`` (the same as ``--param pipeline.refine.enabled:=true``) refines every network pose
by render-and-compare against the image (`refine.refine_pose`, after PnP in the pipeline), with
each object's mesh from ``config/objects/<id>.yaml``; the other ``pipeline.refine.*`` settings
come from ``--param`` / ``--params`` as usual.
"""

from __future__ import annotations

import argparse
from pathlib import Path


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
    parser.add_argument("--detector", default="",
                        help="detector ONNX model of the two-stage path (default, for a zoom-crop "
                             "keypoint model: the shipped models/detector_*.onnx knowing most of "
                             "its objects)")
    parser.add_argument("--refine", action="store_true",
                        help="refine every pose by aligning the object's mesh outline with the "
                             "image after PnP (= --param pipeline.refine.enabled:=true; the "
                             "pipeline.refine.* parameters tune it)")
    parser.add_argument("--data-root", default=None,
                        help="root for ${DVC_SHARED_DATA} meshes in object YAMLs")


def with_refine(overrides: dict[str, object], refine: bool) -> dict[str, object]:
    """`overrides` plus ``pipeline.refine.enabled: true`` when `refine` (``--refine``).

    Raises:
        ConfigError: ``--refine`` with ``--param pipeline.refine.enabled:=`` anything but true.
    """
    from dvc_perception.errors import ConfigError

    if not refine:
        return overrides
    value = overrides.get("pipeline.refine.enabled", True)
    if value is not True:
        raise ConfigError(f"--refine contradicts --param pipeline.refine.enabled:={value!r}; "
                          "give one of them")
    return {**overrides, "pipeline.refine.enabled": True}


def run(args: argparse.Namespace) -> int:
    """Convert, replay, evaluate; print the headline numbers and where the report is."""
    import json
    import shutil

    from dvc_perception.bag.bop import bop_scene_to_bag
    from dvc_perception.bag.bop_eval import bop_summary, format_bop_summary
    from dvc_perception.bag.evaluate import evaluate_bag, format_summary
    from dvc_perception.bag.replay import replay_bag
    from dvc_perception.bag.report import write_report
    from dvc_perception.commands.replay import parse_param_overrides
    from dvc_perception.datasets.bop import bop_object_ids
    from dvc_perception.errors import ModelSpecError
    from dvc_perception.files import atomic_write_text

    overrides = with_refine(parse_param_overrides(args.param), args.refine)
    ids = bop_object_ids(args.dataset_dir)  # once: a sha256 of every mesh
    dataset_objects = set(ids.values())
    if overrides.get("pipeline.keypoint_source", "network") == "network":
        model = args.model or str(overrides.get("pipeline.network.model_path", ""))
        if model:
            if not Path(model).is_file():
                raise ModelSpecError(f"--model {model}: no such file")
            _check_model_objects(Path(model), dataset_objects)
        else:
            model = _best_shipped_model(dataset_objects, args.dataset_dir)
        overrides = {**overrides, "pipeline.keypoint_source": "network",
                     "pipeline.network.model_path": model}
        detector = _detector_for(Path(model), args.detector or str(
            overrides.get("pipeline.network.detector_model_path", "")))
        if detector:
            overrides["pipeline.network.detector_model_path"] = detector
            print(f"detector: {detector}")
        print(f"keypoints: network {model}")
    name = f"{Path(args.dataset_dir).resolve().name}_{args.scene.replace('/', '_')}"
    out = Path(args.output or f"out/eval_{name}")
    out.mkdir(parents=True, exist_ok=True)
    in_bag, out_bag = out / "input_bag", out / "output_bag"
    for bag in (in_bag, out_bag):
        if bag.exists():
            shutil.rmtree(bag)
    bop_scene_to_bag(args.dataset_dir, args.scene, in_bag, object_ids=ids)
    replay_bag(in_bag, out_bag, params_file=args.params or None, parameters=overrides)
    result = evaluate_bag(out_bag, in_bag, data_root=args.data_root)
    index = write_report(result, out, gt_bag=in_bag)
    bop = bop_summary(result, args.dataset_dir, args.scene, object_ids=ids)
    summary = {**json.loads((out / "summary.json").read_text()), "bop": bop}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True))
    print(format_summary(result.summary()))
    print(format_bop_summary(bop))
    print(f"summary: {out / 'summary.json'}\nreport: {index}")
    return 0


def _model_objects(path: Path) -> set[str]:
    """Object ids a keypoint model's metadata lists."""
    from dvc_perception.engines.export import read_model_metadata

    return set(read_model_metadata(path).object_ids)


def _check_model_objects(path: Path, dataset_objects: set[str]) -> None:
    """ModelSpecError when the model knows none of the dataset's objects."""
    from dvc_perception.errors import ModelSpecError

    known = _model_objects(path)
    if not known & dataset_objects:
        raise ModelSpecError(f"{path} knows objects {sorted(known)}, none of the dataset's "
                             f"{sorted(dataset_objects)}")


def _detector_for(keypoint_model: Path, detector: str) -> str:
    """The detector to run with `keypoint_model` ("" for a whole-image model without one).

    Raises:
        ModelSpecError: `detector` is not a file; a zoom-crop model and no detector given or
            shipped that knows any of its objects.
    """
    from dvc_perception.engines.export import read_model_metadata
    from dvc_perception.errors import ModelSpecError

    if detector:
        if not Path(detector).is_file():
            raise ModelSpecError(f"--detector {detector}: no such file")
        return detector
    if read_model_metadata(keypoint_model).extra.get("input_kind") != "zoom_crop":
        return ""
    wanted = _model_objects(keypoint_model)
    best, _ = _shipped_model_knowing("detector_*.onnx", wanted)
    if best is None:
        raise ModelSpecError(
            f"{keypoint_model} is a zoom-crop keypoint model (the second stage of the two-stage "
            f"path) and no detector knows its objects {sorted(wanted)}: pass --detector "
            "(train one with `dvc-perception train detect`)"
        )
    return str(best)


def _best_shipped_model(dataset_objects: set[str], dataset_dir: str) -> str:
    """The shipped ``models/pose_*.onnx`` knowing most of the dataset's objects.

    Raises:
        ModelSpecError: no shipped model knows any of them (both sets named).
    """
    from dvc_perception.errors import ModelSpecError

    best, models = _shipped_model_knowing("pose_*.onnx", dataset_objects)
    if best is None:
        shipped = {m.name: sorted(_model_objects(m)) for m in models}
        raise ModelSpecError(
            f"no keypoint model for {dataset_dir}: its objects are {sorted(dataset_objects)}; "
            f"the shipped models know {shipped}; train one (`dvc-perception train pose`) and "
            "pass --model"
        )
    return str(best)


def _shipped_model_knowing(pattern: str, wanted: set[str]) -> tuple[Path | None, list[Path]]:
    """The shipped ``models/<pattern>`` knowing most of `wanted`, and all that match.

    Returns:
        (the best model, None when none knows any of `wanted`; every match, sorted).
    """
    from dvc_perception.errors import ConfigError
    from dvc_perception.resources import find_share_file

    try:
        models = sorted(find_share_file("models").glob(pattern))
    except ConfigError:
        models = []
    scored = [(len(_model_objects(m) & wanted), m) for m in models]
    count, best = max(scored, key=lambda s: s[0], default=(0, None))
    return (best if count else None), models

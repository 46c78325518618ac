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
error, never a whole-image run. The detector's boxes are re-scored by the box verifier
``--verifier`` (or ``pipeline.network.verifier_model_path``), by default the shipped
``models/verifier_*.onnx`` that knows every class of the detector, if one is shipped;
``--no-verifier`` keeps the detector's own scores.

``--refine`` (the same as ``--param pipeline.refine.enabled:=true``) refines every network pose
by render-and-compare against the image (`refine.refine_pose`, after PnP in the pipeline), with
each object's mesh from ``config/objects/<id>.yaml``; the other ``pipeline.refine.*`` settings
come from ``--param`` / ``--params`` as usual. ``--search`` (``pipeline.search.enabled`` and
refinement on) finds each detector box's pose with the mesh alone (`refine.search`) instead of
the keypoint network: about 0.8 s per box.

``--init gt-perturbed --perturb-deg D --perturb-frac F --seed S`` (with ``--refine``; an error
without it) measures the refiner alone: every target's pose starts from the scene's ground
truth perturbed by exactly D deg and F diameters (``models_info.json`` diameters; directions
drawn per target in image-id then ``scene_gt.json`` order from one generator seeded by S, as
``benchmarks/eval_refine_bop.py`` draws them) instead of the network's, and ``summary.json``
gets ``init``: ADD(-S)@0.1d and median errors before and after refinement, the translation
error split into image-plane and depth parts (`refine.evaluation`). Only published poses count
after (``--param pipeline.min_score:=0.0`` counts every usable refinement, as the benchmark).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dvc_perception.commands.replay import add_refine_arguments


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
    parser.add_argument("--verifier", default="",
                        help="box verifier ONNX model re-scoring the detector's boxes (default: "
                             "the shipped models/verifier_*.onnx knowing every detector class, "
                             "if any)")
    parser.add_argument("--no-verifier", action="store_true",
                        help="no box verifier: the detector's own scores")
    add_refine_arguments(parser)
    parser.add_argument("--data-root", default=None,
                        help="root for ${DVC_SHARED_DATA} meshes in object YAMLs")


def run(args: argparse.Namespace) -> int:
    """Convert, replay, evaluate; print the headline numbers and where the report is."""
    import json
    import shutil

    from dvc_perception.bag.bop import bop_scene_to_bag
    from dvc_perception.bag.bop_eval import bop_summary, format_bop_summary
    from dvc_perception.bag.evaluate import evaluate_bag, format_summary
    from dvc_perception.bag.replay import replay_bag
    from dvc_perception.bag.report import write_report
    from dvc_perception.commands.replay import refine_options
    from dvc_perception.datasets.bop import bop_object_ids
    from dvc_perception.errors import ModelSpecError
    from dvc_perception.files import atomic_write_text

    overrides, perturbation = refine_options(args)
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
            verifier = _verifier_for(Path(detector), args.verifier or str(
                overrides.get("pipeline.network.verifier_model_path", "")), args.no_verifier)
            overrides["pipeline.network.verifier_model_path"] = verifier
            print(f"verifier: {verifier or 'none'}")
        print(f"keypoints: network {model}")
    name = f"{Path(args.dataset_dir).resolve().name}_{args.scene.replace('/', '_')}"
    out = Path(args.output or f"out/eval_{name}")
    out.mkdir(parents=True, exist_ok=True)
    in_bag, out_bag = out / "input_bag", out / "output_bag"
    for bag in (in_bag, out_bag):
        if bag.exists():
            shutil.rmtree(bag)
    n_frames = bop_scene_to_bag(args.dataset_dir, args.scene, in_bag, object_ids=ids)
    init = _perturbed_starts(args, ids, n_frames, perturbation)
    replay_bag(in_bag, out_bag, params_file=args.params or None, parameters=overrides,
               initial_poses=init[2] if init else None)
    result = evaluate_bag(out_bag, in_bag, data_root=args.data_root)
    index = write_report(result, out, gt_bag=in_bag)
    bop = bop_summary(result, args.dataset_dir, args.scene, object_ids=ids)
    summary = {**json.loads((out / "summary.json").read_text()), "bop": bop}
    if init:
        summary["init"] = _before_after(init, result, perturbation)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True))
    print(format_summary(result.summary()))
    print(format_bop_summary(bop))
    if init:
        from dvc_perception.refine.evaluation import format_before_after

        print(f"refinement from the ground truth perturbed by {perturbation.describe()} "
              "(after: the published poses; unpublished ones count as failures):")
        print(format_before_after(summary["init"]["summary"]))
    print(f"summary: {out / 'summary.json'}\nreport: {index}")
    return 0


def _perturbed_starts(args: argparse.Namespace, ids: dict[int, str], n_frames: int,
                      perturbation: Any) -> tuple[Any, Any, Any] | None:
    """(truth, starts, starts by bag stamp) of ``--init gt-perturbed``; None for network."""
    if perturbation is None:
        return None
    from dvc_perception.bag.init_eval import bop_truth, starts_by_stamp
    from dvc_perception.datasets.bop import bop_frame_stamp_ns
    from dvc_perception.refine.evaluation import perturbed_starts

    stamps = [bop_frame_stamp_ns(k, 10.0) for k in range(n_frames)]  # bop_scene_to_bag's rate
    truth = bop_truth(args.dataset_dir, args.scene, ids, frame_keys=stamps)
    starts = perturbed_starts(truth, perturbation.deg, perturbation.frac, perturbation.seed)
    return truth, starts, starts_by_stamp(truth, starts)


def _before_after(init: tuple[Any, Any, Any], result: Any, perturbation: Any) -> dict[str, Any]:
    """The ``init`` section of summary.json: setup, rows and their before/after summary."""
    from dvc_perception.bag.init_eval import before_after_rows
    from dvc_perception.refine.evaluation import summarise_before_after

    rows = before_after_rows(init[0], init[1], result)
    return {"init": "gt-perturbed", "perturb_deg": perturbation.deg,
            "perturb_frac": perturbation.frac, "seed": perturbation.seed,
            "summary": summarise_before_after(rows), "rows": rows}


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


def _verifier_for(detector: Path, verifier: str, none: bool) -> str:
    """The box verifier to run with `detector` ("" for none).

    Raises:
        ModelSpecError: `verifier` is not a file, or given together with `none`.
    """
    from dvc_perception.errors import ModelSpecError

    if none:
        if verifier:
            raise ModelSpecError(f"--no-verifier and a verifier ({verifier}) exclude each other")
        return ""
    if verifier:
        if not Path(verifier).is_file():
            raise ModelSpecError(f"--verifier {verifier}: no such file")
        return verifier
    wanted = _model_objects(detector)
    best, _ = _shipped_model_knowing("verifier_*.onnx", wanted)
    return str(best) if best is not None and wanted <= _model_objects(best) else ""


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

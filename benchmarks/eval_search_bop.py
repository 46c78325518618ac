# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The mesh-only pose search on a BOP scene's real images, from the true visible boxes.

Measures the pose stage of ``pipeline.search`` alone, as if the detector were perfect: for
every ground-truth target with ``visib_fract >= 0.1`` (image-id, then ``scene_gt.json``
order) `refine.search.search_pose` searches its ``bbox_visib`` from ``scene_gt_info.json`` with
the object's sparse viewpoint model (`refine.build_contour_model`), and the summary gives
ADD(-S)@0.1d per object (ADD-S for objects with symmetries in ``models_info.json``; BOP eval
points) with the macro and micro averages, and the median time per target. The end-to-end
number with the shipped detector is ``eval-bop ... --refine --param
pipeline.search.enabled:=true``.

    .venv/bin/python benchmarks/eval_search_bop.py ../shared/data/lmo test/000002 \\
        [--num-rotations 200] [--seed 0] [--cache-dir DIR] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from eval_refine_bop import _contour_model

from dvc_perception.bag.init_eval import bop_truth
from dvc_perception.datasets.bop import bop_object_ids, read_bop_scene, read_scene_gt_info
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.refine import RefineSettings
from dvc_perception.refine.evaluation import pose_errors
from dvc_perception.refine.search import SearchSettings, search_pose
from dvc_perception.render.mesh import load_mesh


def evaluate(dataset: str, scene: str, settings: SearchSettings, refine: RefineSettings,
             cache_dir: str | None = None) -> dict:
    """Per-target rows and a summary (see the module doc)."""
    frames = read_bop_scene(dataset, scene)
    ids = bop_object_ids(dataset)
    truth = bop_truth(dataset, scene, ids)
    info = read_scene_gt_info(dataset, scene)
    entries = [e for f in frames for e in info[f.image_id]]
    if len(entries) != len(truth):
        raise SystemExit(f"scene_gt_info lists {len(entries)} targets, scene_gt {len(truth)}")
    models = {}
    for oid in sorted({oid for f in frames for oid, _, _ in f.poses}):
        mesh = load_mesh(Path(dataset) / "models" / f"obj_{oid:06d}.ply", "mm")
        models[ids[oid]] = _contour_model(mesh, cache_dir)
    images = {f.image_id: (np.ascontiguousarray(cv2.imread(str(f.rgb_path))[:, :, ::-1]), f.K)
              for f in frames}
    rows = []
    for gt, entry in zip(truth, entries):
        if entry["visib_fract"] < 0.1:
            continue
        rgb, K = images[gt.frame]
        camera = CameraModel(K, [], rgb.shape[1], rgb.shape[0])
        start = time.perf_counter()
        found = search_pose(rgb, camera, models[gt.object_id], entry["bbox_visib"], settings,
                            refine)
        elapsed = time.perf_counter() - start
        row = {"frame": gt.frame, "object_id": gt.object_id, "visib_fract": entry["visib_fract"],
               "cost": found.cost, "s": elapsed, "ok": False}
        if np.isfinite(found.cost):
            row.update(pose_errors(gt, (found.R, found.t)))
        rows.append(row)
    objects = sorted({r["object_id"] for r in rows})
    per = {o: float(np.mean([r["ok"] for r in rows if r["object_id"] == o])) for o in objects}
    summary = {"add_01d_per_object": per, "add_01d_macro": float(np.mean(list(per.values()))),
               "add_01d_micro": float(np.mean([r["ok"] for r in rows])), "targets": len(rows),
               "s_median": statistics.median(r["s"] for r in rows)}
    return {"rows": rows, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("scene")
    parser.add_argument("--num-rotations", type=int, default=SearchSettings.num_rotations)
    parser.add_argument("--seed", type=int, default=0, help="turns the set of rotations")
    parser.add_argument("--cache-dir", help="keep the sparse viewpoint models here (npz)")
    parser.add_argument("--json", help="write rows and summary here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = SearchSettings(num_rotations=args.num_rotations, seed=args.seed)
    result = evaluate(args.dataset, args.scene, settings, RefineSettings(), args.cache_dir)
    result["settings"] = vars(args)
    result["load_average"] = os.getloadavg()
    s = result["summary"]
    per = ", ".join(f"{k}: {100 * v:.0f} %" for k, v in s["add_01d_per_object"].items())
    print(f"{args.scene}: {s['targets']} targets from their true visible boxes, "
          f"{args.num_rotations} rotations, rotation set {args.seed}")
    print(f"ADD(-S)@0.1d macro {100 * s['add_01d_macro']:.1f} %, micro "
          f"{100 * s['add_01d_micro']:.1f} %; median {s['s_median']:.2f} s per target")
    print(f"per object: {per}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()

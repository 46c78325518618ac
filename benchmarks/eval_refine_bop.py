# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The refiner alone on a BOP scene's real images, from perturbed ground truth.

For every ground-truth target of every image (all objects, whatever their visible fraction),
the initial pose is ``R0 = exp(D a) R_gt``, ``t0 = t_gt + F * diameter * u`` with a, u unit
vectors drawn uniformly, per target in image-id then ``scene_gt.json`` order, from one numpy
generator seeded by S (exact magnitudes D deg and F diameters). Each target is refined alone
(`refine.refine_pose`, one instance per call, timed), and the summary gives ADD(-S)@0.1d
before and after (ADD-S for objects with symmetries in ``models_info.json``; BOP eval points;
an unusable refinement counts as a failure), the median rotation error, the translation error
split into its image-plane part (orthogonal to the ray through the true centre) and its depth
part (along that ray), and the median time per instance. Starts, rows and summary are
`dvc_perception.refine.evaluation`'s, as in ``eval-bop --init gt-perturbed``. The sparse
viewpoint models (`refine.build_contour_model`) are built once per object
first; their build time is reported apart.

    .venv/bin/python benchmarks/eval_refine_bop.py ../shared/data/lmo test/000002 \\
        --perturb-deg 10 --perturb-frac 0.1 --seed 0 [--contour render] [--json OUT.json]
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

from dvc_perception.bag.init_eval import bop_truth
from dvc_perception.datasets.bop import bop_object_ids, read_bop_scene
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.refine import (
    ContourModel,
    RefineSettings,
    build_contour_model,
    refine_pose,
)
from dvc_perception.refine.evaluation import (
    compare_to_truth,
    format_before_after,
    perturbed_starts,
    summarise_before_after,
)
from dvc_perception.render.mesh import Mesh, load_mesh


def _contour_model(mesh: Mesh, cache_dir: str | None) -> ContourModel:
    """`build_contour_model(mesh)`, kept in `cache_dir` (npz by mesh name) when given."""
    if cache_dir is None:
        return build_contour_model(mesh)
    path = Path(cache_dir) / f"contour_{mesh.name}.npz"
    if path.is_file():
        z = np.load(path)
        return ContourModel(mesh.name, z["view_directions"], z["points_obj"], z["normals_obj"],
                            z["inner_m"], z["outer_m"], z["counts"], float(z["radius_m"]))
    model = build_contour_model(mesh)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: getattr(model, k) for k in model.__dataclass_fields__ if k != "name"})
    return model


def evaluate(dataset: str, scene: str, deg: float, frac: float, seed: int, contour: str,
             settings: RefineSettings, cache_dir: str | None = None) -> dict:
    """Per-target rows and a summary (see the module doc)."""
    frames = read_bop_scene(dataset, scene)
    ids = bop_object_ids(dataset)
    truth = bop_truth(dataset, scene, ids)
    starts = perturbed_starts(truth, deg, frac, seed)
    models, build_s = {}, {}
    for oid in sorted({oid for f in frames for oid, _, _ in f.poses}):
        mesh = load_mesh(Path(dataset) / "models" / f"obj_{oid:06d}.ply", "mm")
        t0 = time.perf_counter()
        models[ids[oid]] = _contour_model(mesh, cache_dir) if contour == "model" else mesh
        build_s[ids[oid]] = time.perf_counter() - t0
    images = {}
    for frame in frames:
        bgr = cv2.imread(str(frame.rgb_path), cv2.IMREAD_COLOR)
        images[frame.image_id] = (np.ascontiguousarray(bgr[:, :, ::-1]), frame.K)
    rows = []
    for gt, (R0, t0) in zip(truth, starts):
        rgb, K = images[gt.frame]
        camera = CameraModel(K, [], rgb.shape[1], rgb.shape[0])
        start = time.perf_counter()
        res = refine_pose(rgb, camera, models[gt.object_id], R0, t0, settings)
        elapsed = time.perf_counter() - start
        usable = bool(res.usable(settings.min_lines)[0])
        after = (res.R[0].numpy(), res.t[0].numpy()) if usable else None
        row = compare_to_truth(gt, (R0, t0), after)
        row.update({"ms": elapsed * 1e3, "cost": float(res.cost[0]),
                    "converged": bool(res.converged[0]), "iterations": int(res.iterations[0]),
                    "lines": int(res.num_lines[0])})
        rows.append(row)
    summary = summarise_before_after(rows)
    summary["ms_median"] = statistics.median(r["ms"] for r in rows)
    summary["converged"] = float(np.mean([r["converged"] for r in rows]))
    return {"rows": rows, "summary": summary, "build_s": build_s,
            "setup": {"dataset": dataset, "scene": scene, "perturb_deg": deg,
                      "perturb_frac": frac, "seed": seed, "contour": contour}}


def _print(result: dict) -> None:
    s = result["summary"]
    setup = result["setup"]
    print(f"{setup['scene']}: {s['all']['n']} targets, perturbation {setup['perturb_deg']} deg"
          f" / {setup['perturb_frac']} d, seed {setup['seed']}, contour {setup['contour']}")
    table = {k: v for k, v in s.items() if k not in ("ms_median", "converged")}
    print(format_before_after(table))
    builds = ", ".join(f"{k}: {v:.2f}" for k, v in result["build_s"].items())
    print(f"median time per instance: {s['ms_median']:.2f} ms; converged "
          f"{100 * s['converged']:.0f} %; model build s: {builds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("scene")
    parser.add_argument("--perturb-deg", type=float, default=10.0)
    parser.add_argument("--perturb-frac", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contour", choices=("model", "render"), default="model",
                        help="sparse viewpoint model (default) or a render per iteration")
    parser.add_argument("--settings", default="{}",
                        help="JSON mapping of RefineSettings fields to override")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", help="write rows and summary here")
    parser.add_argument("--cache-dir", help="keep the sparse viewpoint models here (npz)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = RefineSettings.from_mapping(json.loads(args.settings))
    result = evaluate(args.dataset, args.scene, args.perturb_deg, args.perturb_frac, args.seed,
                      args.contour, settings, args.cache_dir)
    result["settings"] = {k: getattr(settings, k) for k in settings.__dataclass_fields__}
    result["load_average"] = os.getloadavg()
    _print(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()

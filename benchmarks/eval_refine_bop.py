# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The refiner alone on a BOP scene's real images, from perturbed ground truth.

For every ground-truth target of every image (all objects, whatever their visible fraction),
the initial pose is ``R0 = exp(D a) R_gt``, ``t0 = t_gt + F * diameter * u`` with a, u unit
vectors drawn uniformly, per target in image-id then ``scene_gt.json`` order, from one numpy
generator seeded by S (exact magnitudes D deg and F diameters). Each target is refined alone
(`refine.refine_pose`, one instance per call, timed), and the summary gives ADD(-S)@0.1d
before and after (ADD-S for objects with symmetries in ``models_info.json``; BOP eval points),
the median rotation error, the translation error split into its image-plane part (orthogonal to
the ray through the true centre) and its depth part (along that ray), and the median time per
instance. The sparse viewpoint models (`refine.build_contour_model`) are built once per object
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

from dvc_perception.datasets.bop import (
    read_bop_scene,
    read_eval_points,
    read_models_info,
    read_scene_gt_info,
)
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.geometry.metrics import add_error, adds_error, rotation_error_deg
from dvc_perception.geometry.so3 import rotvec_to_matrix
from dvc_perception.refine import (
    ContourModel,
    RefineSettings,
    build_contour_model,
    refine_pose,
)
from dvc_perception.render.mesh import Mesh, load_mesh


def perturbed_pose(R_gt: np.ndarray, t_gt: np.ndarray, diameter_m: float, deg: float,
                   frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(exp(deg * a) R_gt, t_gt + frac * diameter * u)``, a and u uniform unit vectors."""
    a = rng.normal(size=3)
    a /= np.linalg.norm(a)
    u = rng.normal(size=3)
    u /= np.linalg.norm(u)
    dR = rotvec_to_matrix(torch.from_numpy(np.deg2rad(deg) * a)).numpy()
    return dR @ R_gt, t_gt + frac * diameter_m * u


def translation_split(t_est: np.ndarray, t_gt: np.ndarray) -> tuple[float, float]:
    """(image-plane part, depth part) of ``t_est - t_gt`` [m], w.r.t. the ray through t_gt."""
    d = t_est - t_gt
    ray = t_gt / np.linalg.norm(t_gt)
    along = float(d @ ray)
    return float(np.linalg.norm(d - along * ray)), abs(along)


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
    info = read_models_info(dataset)
    gt_info = read_scene_gt_info(dataset, scene)
    obj_ids = sorted({oid for f in frames for oid, _, _ in f.poses})
    models, eval_points, build_s = {}, {}, {}
    for oid in obj_ids:
        mesh = load_mesh(Path(dataset) / "models" / f"obj_{oid:06d}.ply", "mm")
        t0 = time.perf_counter()
        models[oid] = _contour_model(mesh, cache_dir) if contour == "model" else mesh
        build_s[oid] = time.perf_counter() - t0
        eval_points[oid] = read_eval_points(dataset, oid)
    rng = np.random.default_rng(seed)
    rows = []
    for frame in frames:
        bgr = cv2.imread(str(frame.rgb_path), cv2.IMREAD_COLOR)
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        camera = CameraModel(frame.K, [], rgb.shape[1], rgb.shape[0])
        for k, (oid, R_gt, t_gt) in enumerate(frame.poses):
            diameter = info[oid].diameter_m
            R0, t0 = perturbed_pose(R_gt, t_gt, diameter, deg, frac, rng)
            start = time.perf_counter()
            res = refine_pose(rgb, camera, models[oid], R0, t0, settings)
            elapsed = time.perf_counter() - start
            R1, t1 = res.R[0].numpy(), res.t[0].numpy()
            symmetric = len(info[oid].symmetries) > 1
            metric = adds_error if symmetric else add_error
            pts = eval_points[oid]
            row = {"image_id": frame.image_id, "obj_id": oid, "symmetric": symmetric,
                   "visib_fract": gt_info[frame.image_id][k]["visib_fract"],
                   "diameter_m": diameter, "ms": elapsed * 1e3,
                   "cost": float(res.cost[0]), "converged": bool(res.converged[0]),
                   "iterations": int(res.iterations[0]), "lines": int(res.num_lines[0])}
            for tag, R, t in (("before", R0, t0), ("after", R1, t1)):
                err = float(metric(R, t, R_gt, t_gt, pts))
                plane, depth = translation_split(t, t_gt)
                row[tag] = {"add_m": err, "ok": err < 0.1 * diameter,
                            "rot_deg": float(rotation_error_deg(R, R_gt)),
                            "t_plane_mm": plane * 1e3, "t_depth_mm": depth * 1e3}
            rows.append(row)
    return {"rows": rows, "summary": summarise(rows), "build_s": build_s,
            "setup": {"dataset": dataset, "scene": scene, "perturb_deg": deg,
                      "perturb_frac": frac, "seed": seed, "contour": contour}}


def summarise(rows: list[dict]) -> dict:
    """ADD(-S)@0.1d and median errors before / after, overall, by object and by visibility."""

    def block(sel: list[dict]) -> dict:
        out: dict = {"n": len(sel)}
        if not sel:
            return out
        for tag in ("before", "after"):
            out[tag] = {
                "add_01d": float(np.mean([r[tag]["ok"] for r in sel])),
                "rot_deg_median": statistics.median(r[tag]["rot_deg"] for r in sel),
                "t_plane_mm_median": statistics.median(r[tag]["t_plane_mm"] for r in sel),
                "t_depth_mm_median": statistics.median(r[tag]["t_depth_mm"] for r in sel),
            }
        return out

    summary = {"all": block(rows), "ms_median": statistics.median(r["ms"] for r in rows),
               "converged": float(np.mean([r["converged"] for r in rows]))}
    summary["visib>=0.5"] = block([r for r in rows if r["visib_fract"] >= 0.5])
    summary["visib<0.5"] = block([r for r in rows if r["visib_fract"] < 0.5])
    summary["by_object"] = {str(o): block([r for r in rows if r["obj_id"] == o])
                            for o in sorted({r["obj_id"] for r in rows})}
    return summary


def _print(result: dict) -> None:
    s = result["summary"]
    setup = result["setup"]
    print(f"{setup['scene']}: {s['all']['n']} targets, perturbation {setup['perturb_deg']} deg"
          f" / {setup['perturb_frac']} d, seed {setup['seed']}, contour {setup['contour']}")
    print("| subset | n | ADD(-S)@0.1d before | after | rot deg med before | after | "
          "t plane mm med before | after | t depth mm med before | after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    keys = ["all", "visib>=0.5", "visib<0.5"] + [f"obj {k}" for k in s["by_object"]]
    for key in keys:
        b = s["by_object"][key[4:]] if key.startswith("obj ") else s[key]
        if b["n"] == 0:
            continue
        bf, af = b["before"], b["after"]
        print(f"| {key} | {b['n']} | {100 * bf['add_01d']:.1f} % | {100 * af['add_01d']:.1f} % | "
              f"{bf['rot_deg_median']:.2f} | {af['rot_deg_median']:.2f} | "
              f"{bf['t_plane_mm_median']:.1f} | {af['t_plane_mm_median']:.1f} | "
              f"{bf['t_depth_mm_median']:.1f} | {af['t_depth_mm_median']:.1f} |")
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

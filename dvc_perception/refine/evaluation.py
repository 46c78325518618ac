# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Measuring the refiner alone: starts from perturbed ground truth, numbers before and after.

The one implementation behind ``eval-bop --init gt-perturbed``, ``replay --init gt-perturbed``
and ``benchmarks/eval_refine_bop.py``:

- `perturbed_starts`: per ground-truth instance, in the order given, ``R0 = exp(D a) R_gt`` and
  ``t0 = t_gt + F * diameter * u``, a and u unit vectors drawn uniformly (a normal 3-vector,
  normalised: a, then u) from one numpy generator seeded by S, so the magnitudes are exactly
  D deg and F diameters.
- `compare_to_truth`: one instance's errors before (the start) and after (the refined pose, or
  None when the refinement was unusable or the pose not reported: a failure): ADD, or ADD-S for
  symmetric objects, against 0.1 diameter; rotation error; the translation error split into
  its image-plane part (orthogonal to the ray through the true centre) and depth part (along it).
- `summarise_before_after` / `format_before_after`: ADD(-S)@0.1d (failures count) and median
  errors (of the refined instances) before and after, overall, by visibility and by object.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dvc_perception.geometry.metrics import add_error, adds_error, rotation_error_deg
from dvc_perception.geometry.so3 import rotvec_to_matrix

#: Pose: (R (3, 3), t (3,) m), object in camera.
Pose = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TruthInstance:
    """One ground-truth object instance in one frame.

    Attributes:
        frame: the frame's key (a stamp [ns] or an image id).
        object_id: the object's id.
        R: (3, 3) float64 rotation, object in camera.
        t: (3,) float64 m.
        diameter_m: the object's diameter [m].
        points_obj: (M, 3) float64 m, the points ADD / ADD-S averages over.
        symmetric: ADD-S instead of ADD.
        visib_fract: visible fraction of the object (None: unknown).
    """

    frame: int
    object_id: str
    R: np.ndarray
    t: np.ndarray
    diameter_m: float
    points_obj: np.ndarray
    symmetric: bool
    visib_fract: float | None = None


def perturb_pose(R_gt: np.ndarray, t_gt: np.ndarray, diameter_m: float, deg: float, frac: float,
                 rng: np.random.Generator) -> Pose:
    """``(exp(deg * a) R_gt, t_gt + frac * diameter_m * u)``, a then u drawn from `rng`."""
    a = rng.normal(size=3)
    a /= np.linalg.norm(a)
    u = rng.normal(size=3)
    u /= np.linalg.norm(u)
    dR = rotvec_to_matrix(torch.from_numpy(np.deg2rad(deg) * a)).numpy()
    return dR @ R_gt, t_gt + frac * diameter_m * u


def perturbed_starts(truth: Sequence[TruthInstance], deg: float, frac: float, seed: int
                     ) -> list[Pose]:
    """`perturb_pose` of each instance of `truth`, in order, from one generator seeded `seed`."""
    rng = np.random.default_rng(seed)
    return [perturb_pose(g.R, g.t, g.diameter_m, deg, frac, rng) for g in truth]


def translation_error_split(t_est: np.ndarray, t_gt: np.ndarray) -> tuple[float, float]:
    """(image-plane part, depth part) [m] of ``t_est - t_gt``, w.r.t. the ray through `t_gt`.

    The depth part is the absolute component along the viewing ray of the true centre, the
    image-plane part the norm of the rest (orthogonal to the ray).
    """
    d = np.asarray(t_est, np.float64) - np.asarray(t_gt, np.float64)
    ray = t_gt / np.linalg.norm(t_gt)
    along = float(d @ ray)
    return float(np.linalg.norm(d - along * ray)), abs(along)


def pose_errors(truth: TruthInstance, pose: Pose) -> dict[str, Any]:
    """ADD(-S) [m] and whether it is below 0.1 diameter, rotation [deg], plane / depth [mm]."""
    R, t = pose
    metric = adds_error if truth.symmetric else add_error
    add = float(metric(R, t, truth.R, truth.t, truth.points_obj))
    plane, depth = translation_error_split(t, truth.t)
    return {"add_m": add, "ok": add < 0.1 * truth.diameter_m,
            "rot_deg": float(rotation_error_deg(R, truth.R)),
            "t_plane_mm": 1e3 * plane, "t_depth_mm": 1e3 * depth}


def compare_to_truth(truth: TruthInstance, before: Pose, after: Pose | None) -> dict[str, Any]:
    """One instance's row: ``before`` and ``after`` errors (`pose_errors`; after None: failed)."""
    return {"frame": truth.frame, "object_id": truth.object_id, "symmetric": truth.symmetric,
            "visib_fract": truth.visib_fract, "diameter_m": truth.diameter_m,
            "before": pose_errors(truth, before),
            "after": None if after is None else pose_errors(truth, after)}


def _block(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    if not rows:
        return out
    out["n_refined"] = sum(r["after"] is not None for r in rows)
    for tag in ("before", "after"):
        errors = [r[tag] for r in rows if r[tag] is not None]
        out[tag] = {"add_01d": float(np.mean([e is not None and e["ok"]
                                              for e in (r[tag] for r in rows)]))}
        for key in ("rot_deg", "t_plane_mm", "t_depth_mm"):
            out[tag][f"{key}_median"] = (statistics.median(e[key] for e in errors)
                                         if errors else None)
    return out


def summarise_before_after(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """ADD(-S)@0.1d and median errors before / after: all, by visibility (when known), by object.

    ``add_01d`` counts an unrefined instance (``after`` None) as a failure; the medians are
    over the instances that have errors, ``n_refined`` says how many.
    """
    summary: dict[str, Any] = {"all": _block(rows)}
    if any(r["visib_fract"] is not None for r in rows):
        summary["visib>=0.5"] = _block([r for r in rows if (r["visib_fract"] or 0.0) >= 0.5])
        summary["visib<0.5"] = _block([r for r in rows if (r["visib_fract"] or 0.0) < 0.5])
    summary["by_object"] = {o: _block([r for r in rows if r["object_id"] == o])
                            for o in sorted({r["object_id"] for r in rows})}
    return summary


def format_before_after(summary: dict[str, Any]) -> str:
    """`summarise_before_after` as a Markdown table (one row per subset)."""
    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = ["| subset | n | refined | ADD(-S)@0.1d before | after | rot deg med before | "
             "after | t plane mm med before | after | t depth mm med before | after |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    subsets = [(k, v) for k, v in summary.items() if k != "by_object"]
    subsets += [(f"obj {k}", v) for k, v in summary["by_object"].items()]
    for name, b in subsets:
        if not b["n"]:
            continue
        bf, af = b["before"], b["after"]
        cells = [f"{100 * bf['add_01d']:.1f} %", f"{100 * af['add_01d']:.1f} %"]
        for key in ("rot_deg_median", "t_plane_mm_median", "t_depth_mm_median"):
            cells += [number(bf[key], ".2f" if key.startswith("rot") else ".1f"),
                      number(af[key], ".2f" if key.startswith("rot") else ".1f")]
        lines.append(f"| {name} | {b['n']} | {b['n_refined']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


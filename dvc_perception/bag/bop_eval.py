# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""BOP-style numbers for a replayed BOP scene: detection recall/precision, ADD(-S), AR_MSSD/MSPD.

Targets are the ground-truth objects with ``visib_fract >= min_visib`` (0.1, as BOP). Per
object and image at most one estimate exists (the node reports one pose per object id). An
estimate is a correct detection when its box, the bounding box of the object's ``models_eval``
mesh projected at the estimated pose and clipped to the image, has IoU >= 0.5 with the target's
``bbox_visib`` (``detection_recall``, BOP's rule). The pipeline has no detector box of its own
yet; the projected box covers the whole object, so on occluded targets even a perfect pose can
miss IoU 0.5 with the visible box: ``detection_recall_full_box`` compares the same box with the
whole object's ``bbox_obj`` (like with like). Recall = correct detections / targets; precision =
correct detections / estimates, where an estimate of an object annotated in that image with
``visib_fract < min_visib`` is ignored.

Pose errors over targets (a missed target counts as an infinite error): ADD (ADD-S for objects
with symmetries) at 0.1 x diameter, and BOP's AR_MSSD and AR_MSPD (`geometry.bop_metrics`) with
the symmetries of ``models_info.json``. BOP's leaderboard AR also averages VSD, which needs
depth: these numbers are not that AR. Macro averages are over objects, micro over targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dvc_perception.bag.evaluate import EvalResult
from dvc_perception.datasets.bop import (
    bop_frame_stamp_ns,
    bop_object_ids,
    read_bop_scene,
    read_eval_points,
    read_models_info,
    read_scene_gt_info,
)
from dvc_perception.errors import InputError
from dvc_perception.geometry.bop_metrics import (
    MSPD_THRESHOLDS_PX,
    MSSD_THRESHOLDS,
    average_recall,
    box_iou,
    mspd_error,
    mssd_error,
    projected_box,
)
from dvc_perception.geometry.metrics import add_error, adds_error

MIN_IOU = 0.5
MIN_VISIB = 0.1


def bop_summary(result: EvalResult, dataset_dir: str | Path, scene: str, *,
                rate_hz: float = 10.0, min_visib: float = MIN_VISIB,
                object_ids: Mapping[int, str] | None = None) -> dict[str, Any]:
    """The BOP-style section of the summary (see the module docstring).

    Args:
        result: `evaluate_bag` of the replay of the scene's bag (written by `bop_scene_to_bag`
            at `rate_hz`).
        dataset_dir: the BOP dataset root.
        scene: the scene folder, e.g. ``test/000002``.
        rate_hz: the stamping rate the bag was written with.
        min_visib: targets below this visible fraction are ignored.
        object_ids: BOP obj_id -> object id as the bag was written (default:
            `bop_object_ids` of the dataset).

    Returns:
        ``{"objects": {object_id: {...}}, "macro": {...}, "micro": {...}, "definitions": str}``.

    Raises:
        InputError: the dataset lacks a file the numbers need (named).
    """
    frames = read_bop_scene(dataset_dir, scene)
    gt_info = read_scene_gt_info(dataset_dir, scene)
    infos = read_models_info(dataset_dir)
    ids = bop_object_ids(dataset_dir) if object_ids is None else object_ids
    first = cv2.imread(str(frames[0].rgb_path), cv2.IMREAD_UNCHANGED)
    if first is None:
        raise InputError(f"cannot decode image {frames[0].rgb_path}")
    height, width = first.shape[:2]
    mspd_thresholds = [th * width / 640.0 for th in MSPD_THRESHOLDS_PX]
    points: dict[int, np.ndarray] = {}
    per_object: dict[str, dict[str, list]] = {}
    for k, frame in enumerate(frames):
        stamp = bop_frame_stamp_ns(k, rate_hz)
        entries = gt_info.get(frame.image_id, [])
        if len(entries) != len(frame.poses):
            raise InputError(f"{scene}: image {frame.image_id} has {len(frame.poses)} entries "
                             f"in scene_gt.json but {len(entries)} in scene_gt_info.json")
        ignored: set[str] = set()
        for (obj_id, R_gt, t_gt), entry in zip(frame.poses, entries):
            object_id = ids.get(obj_id)
            if object_id is None or obj_id not in infos:
                raise InputError(f"{dataset_dir}: object {obj_id} of {scene} has no mesh or "
                                 "models_info entry")
            if entry["visib_fract"] < min_visib:
                ignored.add(object_id)
                continue
            if obj_id not in points:
                points[obj_id] = read_eval_points(dataset_dir, obj_id)
            info = infos[obj_id]
            rec = per_object.setdefault(object_id, _empty(info.diameter_m, len(info.symmetries)))
            ev = result.objects.get(object_id)
            est = ev.all_estimates.get(stamp) if ev is not None else None
            rec["targets"] += 1
            if est is None:
                for key in ("add_ok", "mssd", "mspd"):
                    rec[key].append(False if key == "add_ok" else np.inf)
                continue
            R_est, t_est = est
            box = projected_box(R_est, t_est, points[obj_id], frame.K, width, height)
            hit = box is not None and box_iou(box, entry["bbox_visib"]) >= MIN_IOU
            rec["correct"] += int(hit)
            rec["correct_full"] += int(box is not None
                                       and box_iou(box, entry["bbox_obj"]) >= MIN_IOU)
            metric = adds_error if len(info.symmetries) > 1 else add_error
            pts = points[obj_id]
            add = float(metric(R_est[None], t_est[None], R_gt[None], t_gt[None], pts)[0])
            rec["add_ok"].append(add < 0.1 * info.diameter_m)
            rec["mssd"].append(mssd_error(R_est, t_est, R_gt, t_gt, points[obj_id],
                                          info.symmetries))
            rec["mspd"].append(mspd_error(R_est, t_est, R_gt, t_gt, points[obj_id], frame.K,
                                          info.symmetries))
        for object_id, ev in result.objects.items():  # estimates count once per image
            if stamp in ev.all_estimates and object_id not in ignored:
                per_object.setdefault(object_id, _empty(None, 0))["estimates"] += 1
    return _summarise(per_object, mspd_thresholds)


def _empty(diameter_m: float | None, n_symmetries: int) -> dict[str, Any]:
    return {"targets": 0, "estimates": 0, "correct": 0, "correct_full": 0, "add_ok": [],
            "mssd": [], "mspd": [],
            "diameter_m": diameter_m, "n_symmetries": n_symmetries}


def _summarise(per_object: dict[str, dict[str, Any]], mspd_thresholds: list[float]
               ) -> dict[str, Any]:
    objects: dict[str, dict[str, Any]] = {}
    for object_id, rec in sorted(per_object.items()):
        if not rec["targets"]:
            objects[object_id] = {"targets": 0, "estimates": rec["estimates"]}
            continue
        mssd_th = [th * rec["diameter_m"] for th in MSSD_THRESHOLDS]
        objects[object_id] = {
            "targets": rec["targets"],
            "estimates": rec["estimates"],
            "correct_detections": rec["correct"],
            "detection_recall": rec["correct"] / rec["targets"],
            "detection_precision": rec["correct"] / rec["estimates"] if rec["estimates"] else None,
            "detection_recall_full_box": rec["correct_full"] / rec["targets"],
            "metric": "ADD-S" if rec["n_symmetries"] > 1 else "ADD",
            "add_recall_0.1d": float(np.mean(rec["add_ok"])),
            "ar_mssd": average_recall(rec["mssd"], mssd_th),
            "ar_mspd": average_recall(rec["mspd"], mspd_thresholds),
            "_mssd_rel": [e / rec["diameter_m"] for e in rec["mssd"]],
            "_mspd": list(rec["mspd"]),
        }
    scored = {k: v for k, v in objects.items() if v["targets"]}
    keys = ("detection_recall", "detection_recall_full_box", "add_recall_0.1d", "ar_mssd",
            "ar_mspd")
    macro = {k: float(np.mean([v[k] for v in scored.values()])) if scored else None for k in keys}
    precisions = [v["detection_precision"] for v in scored.values()
                  if v["detection_precision"] is not None]
    macro["detection_precision"] = float(np.mean(precisions)) if precisions else None
    targets = sum(v["targets"] for v in scored.values())
    estimates = sum(v["estimates"] for v in objects.values())
    correct = sum(v["correct_detections"] for v in scored.values())
    mssd_rel = [e for v in scored.values() for e in v.pop("_mssd_rel")]
    mspd = [e for v in scored.values() for e in v.pop("_mspd")]
    micro = {
        "targets": targets,
        "detection_recall": correct / targets if targets else None,
        "detection_precision": correct / estimates if estimates else None,
        "add_recall_0.1d": (sum(v["add_recall_0.1d"] * v["targets"] for v in scored.values())
                            / targets) if targets else None,
        "ar_mssd": average_recall(mssd_rel, MSSD_THRESHOLDS) if targets else None,
        "ar_mspd": average_recall(mspd, mspd_thresholds) if targets else None,
    }
    return {"objects": objects, "macro": macro, "micro": micro,
            "definitions": "targets visib_fract >= 0.1; detection: projected model box IoU >= "
                           "0.5 with bbox_visib; AR_MSSD 0.05-0.50 d, AR_MSPD 5-50 px x w/640; "
                           "not BOP's AR (no VSD)"}


def format_bop_summary(section: dict[str, Any]) -> str:
    """The macro and micro lines of `bop_summary`, for the terminal."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f} %"

    lines = []
    for name in ("macro", "micro"):
        s = section[name]
        lines.append(f"BOP {name}: detection recall {pct(s['detection_recall'])}, precision "
                     f"{pct(s['detection_precision'])}, ADD(-S)@0.1d {pct(s['add_recall_0.1d'])}, "
                     f"AR_MSSD {pct(s['ar_mssd'])}, AR_MSPD {pct(s['ar_mspd'])}")
    return "\n".join(lines)

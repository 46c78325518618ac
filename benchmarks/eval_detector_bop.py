# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Detection recall / precision of an exported detector alone on a BOP scene's real images.

The first stage of the two-stage path, measured without the keypoint network: for each target
with ``visib_fract >= 0.1``, the detector's best-scoring box of that object class in the image
counts when its IoU with the ground truth's ``bbox_visib`` is >= 0.5 (at most one detection per
object and image, as `eval-bop`'s definition). Precision: correct / (object-image pairs with a
detection). Reported at several score thresholds, per object and macro-averaged, so the synthesis
ablations (`tools/ablate_synthesis.sh`) compare one number that does not depend on keypoints.

    .venv/bin/python benchmarks/eval_detector_bop.py models/detector_lmo.onnx \\
        ../shared/data/lmo test/000002 [--verifier VERIFIER.onnx] [--json OUT.json]

With ``--verifier`` the detector's boxes are re-scored by the box verifier
(`pipeline.network.BoxVerifier`: score = detection score x the verifier's probability of the
box's class, over the detector's ``--candidates`` best boxes per class), as the pipeline does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dvc_perception.datasets.bop import (  # noqa: E402
    bop_object_ids,
    read_bop_scene,
    read_scene_gt_info,
)
from dvc_perception.geometry.bop_metrics import box_iou  # noqa: E402
from dvc_perception.pipeline.network import NetworkDetector  # noqa: E402

THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.5)


def evaluate(detector_path: str, dataset_dir: str, scene: str, verifier: str = "",
             candidates: int = 10, precision: str = "fp32") -> dict:
    """Per-threshold, per-object recall and precision (fractions), plus counts."""
    ids = bop_object_ids(dataset_dir)  # BOP obj_id -> shipped object id (by mesh sha256)
    detector = NetworkDetector(detector_path, min_detection_score=min(THRESHOLDS),
                               max_per_class=1, verifier_path=verifier or None,
                               verifier_candidates=candidates, precision=precision)
    gt_info = read_scene_gt_info(dataset_dir, scene)
    known = set(detector.object_ids)
    # per (image, object id): best detection (score, box) and the GT targets
    rows = []  # (object_id, has_target, iou of the best box or None, score or None)
    for frame in read_bop_scene(dataset_dir, scene):
        bgr = cv2.imread(str(frame.rgb_path), cv2.IMREAD_COLOR)
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        best = {}
        for det in detector.detect_boxes(rgb):
            oid = detector.object_ids[det.class_index]
            if oid not in best or det.score > best[oid][0]:
                best[oid] = (det.score, det.box_xywh)
        targets = {}
        for (obj_id, _R, _t), info in zip(frame.poses, gt_info[frame.image_id]):
            oid = ids.get(obj_id)
            if oid in known and info["visib_fract"] >= 0.1:
                targets[oid] = info["bbox_visib"]
        for oid in known:
            score, box = best.get(oid, (None, None))
            iou = box_iou(box, targets[oid]) if (box is not None and oid in targets) else None
            rows.append((oid, oid in targets, iou, score))
    out: dict = {"detector": detector_path, "verifier": verifier,
                 "scene": f"{dataset_dir}/{scene}", "targets": sum(r[1] for r in rows),
                 "thresholds": {}}
    for thr in THRESHOLDS:
        per = {}
        for oid in sorted(known):
            mine = [r for r in rows if r[0] == oid]
            n_targets = sum(r[1] for r in mine)
            dets = [r for r in mine if r[3] is not None and r[3] >= thr]
            correct = sum(1 for r in dets if r[2] is not None and r[2] >= 0.5)
            per[oid] = {"targets": n_targets, "detections": len(dets), "correct": correct,
                        "recall": correct / n_targets if n_targets else None,
                        "precision": correct / len(dets) if dets else None}
        recalls = [v["recall"] for v in per.values() if v["recall"] is not None]
        precisions = [v["precision"] or 0.0 for v in per.values() if v["targets"]]
        out["thresholds"][str(thr)] = {
            "macro_recall": float(np.mean(recalls)) if recalls else 0.0,
            "macro_precision": float(np.mean(precisions)) if precisions else 0.0,
            "per_object": per,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("detector")
    parser.add_argument("dataset_dir")
    parser.add_argument("scene")
    parser.add_argument("--verifier", default="", help="box verifier ONNX (task verifier)")
    parser.add_argument("--candidates", type=int, default=10,
                        help="boxes per class the verifier re-scores (default 10)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                        help="int8: QDQ models from `dvc-perception quantize` (both of them)")
    parser.add_argument("--json", default="", help="also write the result here")
    args = parser.parse_args()
    result = evaluate(args.detector, args.dataset_dir, args.scene, args.verifier,
                      args.candidates, args.precision)
    print(f"{result['targets']} targets (visib_fract >= 0.1), {args.detector}"
          + (f" + {args.verifier}" if args.verifier else ""))
    for thr, r in result["thresholds"].items():
        per = " ".join(f"{o.split('_')[-1]}:{v['correct']}/{v['targets']}"
                       for o, v in r["per_object"].items())
        print(f"score >= {thr}: recall {100 * r['macro_recall']:.1f} %  precision "
              f"{100 * r['macro_precision']:.1f} %  ({per})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

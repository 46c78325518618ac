# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Per-frame latency of the two-stage pose path on this CPU, by number of instances in view.

The two-stage source runs the detector once on the letterboxed frame, then the keypoint network
once per detected instance on its zoom crop, then PnP + RANSAC per instance. Its cost is
``detector + N x (crop + keypoint net + PnP)``; this script measures each part and whole frames
with N = 1, 2, 4 and 8 instances, at the deployed sizes (detector 320x240, keypoint net on
128x128 crops, the 8 LM-O objects, 9 keypoints each), with ONNX Runtime on the CPU.

The networks are untrained (their cost does not depend on their weights). So that N is known,
the detector's boxes are replaced by N fixed boxes on a real LM-O image (the detector itself is
still run and timed in every frame); everything after the boxes is the pipeline's own code.

    .venv/bin/python benchmarks/bench_two_stage.py [--iters 30] [--ort-threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from dvc_perception.config import PipelineConfig
from dvc_perception.engines.export import export_onnx
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.models.detector_net import DetectorNet, DetectorNetConfig, DetectorNetForExport
from dvc_perception.models.keypoint_net import KeypointNet, KeypointNetConfig, KeypointNetForExport
from dvc_perception.pipeline.detection import BoxDetection
from dvc_perception.pipeline.pipeline import Pipeline
from dvc_perception.train.checkpoints import INPUT_NAME, KEYPOINT_OUTPUTS, export_metadata

REPO = Path(__file__).resolve().parent.parent
LMO_IMAGE = REPO.parent / "shared" / "data" / "lmo" / "test" / "000002" / "rgb" / "000107.png"
OBJECTS = tuple(f"lmo_obj_{i:02d}" for i in (1, 5, 6, 8, 9, 10, 11, 12))
BOXES = [(296, 330, 44, 40), (301, 258, 94, 74), (180, 140, 120, 150), (420, 200, 110, 90),
         (60, 300, 90, 100), (500, 60, 80, 120), (250, 40, 70, 60), (380, 350, 140, 100)]


def _export(root: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    prov = {"git": {"commit": "0" * 40}, "command": ["bench"], "date": "2026-12-06",
            "data": {"seed": 0}, "seeds": {"train": 0}}
    kp_cfg = KeypointNetConfig(object_ids=OBJECTS, num_keypoints=9, input_width=128,
                               input_height=128)
    objects = [{"object_id": o, "keypoints_obj": rng.uniform(-0.05, 0.05, (9, 3)).tolist(),
                "diameter_m": 0.15, "symmetries": None} for o in OBJECTS]
    kp_ckpt = {"model_kind": "keypoint", "model_config": dataclasses.asdict(kp_cfg),
               "objects": objects, "provenance": prov, "input_kind": "zoom_crop",
               "crop_scale": 1.5}
    det_cfg = DetectorNetConfig(object_ids=OBJECTS)
    det_meta = {"dvc_format": 1, "task": "detector", "input_size": [320, 240],
                "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3},
                "provenance": {"git_commit": "0" * 40, "command": "bench", "date": "2026-12-06",
                               "data_seed": 0}, "object_ids": list(OBJECTS)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kp = export_onnx(KeypointNetForExport(KeypointNet(kp_cfg)), (torch.zeros(1, 3, 128, 128),),
                         root / "kp.onnx", input_names=[INPUT_NAME],
                         output_names=list(KEYPOINT_OUTPUTS),
                         metadata=export_metadata(kp_ckpt, command=["bench"]))
        det = export_onnx(DetectorNetForExport(DetectorNet(det_cfg)),
                          (torch.zeros(1, 3, 240, 320),), root / "det.onnx",
                          input_names=[INPUT_NAME],
                          output_names=list(DetectorNetForExport.output_names), metadata=det_meta)
    return det, kp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--ort-threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.ort_threads))
    bgr = cv2.imread(str(LMO_IMAGE)) if LMO_IMAGE.is_file() else None
    rgb = (np.ascontiguousarray(bgr[:, :, ::-1]) if bgr is not None
           else np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    camera = CameraModel(np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1]]),
                         np.zeros(0), 640, 480)
    with tempfile.TemporaryDirectory() as tmp:
        det, kp = _export(Path(tmp))
        cfg = PipelineConfig.from_mapping({"keypoint_source": "network", "min_score": 0.0,
                                           "network": {"model_path": str(kp),
                                                       "detector_model_path": str(det)}})
        pipe = Pipeline.from_config(cfg)
        source = pipe.keypoint_source
        real_detect_boxes = source.detect_boxes
        t0 = time.perf_counter()
        for _ in range(args.iters):
            real_detect_boxes(rgb)
        det_ms = 1e3 * (time.perf_counter() - t0) / args.iters
        print(f"host: {platform.processor() or platform.machine()}, load average "
              f"{os.getloadavg()[0]:.2f}; ORT threads {args.ort_threads}; {args.iters} iters; "
              f"image {'LM-O 000107' if bgr is not None else 'random'}")
        print(f"detector (letterbox 320x240 + ORT + decode): {det_ms:.1f} ms")
        print("| instances | frame p50 ms | frame p90 ms | keypoints ms (p50) | pnp ms (p50) |")
        print("|---|---|---|---|---|")
        for n in (1, 2, 4, 8):
            boxes = [BoxDetection(k % len(OBJECTS), 0.9, tuple(map(float, b)))
                     for k, b in enumerate(BOXES[:n])]

            def fixed(image, boxes=boxes):
                real_detect_boxes(image)  # the detector still runs every frame
                return boxes

            source.detect_boxes = fixed
            frames = [pipe.process(rgb, camera, 0.0) for _ in range(args.iters)]
            total = np.array([f.timings["total_ms"] for f in frames])
            detect = np.array([f.timings["detect_ms"] for f in frames])
            pnp = np.array([f.timings["pnp_ms"] for f in frames])
            print(f"| {n} | {np.median(total):.1f} | {np.percentile(total, 90):.1f} | "
                  f"{np.median(detect) - det_ms:.1f} | {np.median(pnp):.2f} |")


if __name__ == "__main__":
    main()

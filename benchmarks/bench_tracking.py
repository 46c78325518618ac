# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Frame-to-frame jitter of a static scene's pose, with and without tracking.

    .venv/bin/python benchmarks/bench_tracking.py [--frames 60] [--noise 3] [--threads 1]

The scene is frame 0 of the demo-object sample bag (`demo.samples.write_demo_object_sample_bag`,
seed 7: the demo object on a table with distractors and textured planes, 640x480), held still;
each frame adds fresh Gaussian sensor noise (``--noise``, 8-bit levels, seeded per frame) to
it. The shipped keypoint network (``models/pose_demo_object.onnx``, ONNX Runtime) gives the
detections. Modes: PnP alone; PnP then refinement on every frame; tracking (refinement from
the previous pose, detection every 5 frames); tracking with detection on the first frame only.
Per mode: the median and RMS over consecutive frames of the rotation change [deg] and of the
translation change split into image-plane and depth parts (w.r.t. the viewing ray) [mm]; the
median error against the ground truth; ms per frame (pipeline ``total_ms``, median).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics

import numpy as np
import torch
import yaml

from dvc_perception.config import PipelineConfig
from dvc_perception.demo.samples import DEMO_POSE_MODEL, DEMO_SYNTH_CONFIG
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.geometry.metrics import rotation_error_deg
from dvc_perception.pipeline.pipeline import Pipeline
from dvc_perception.refine.evaluation import translation_error_split
from dvc_perception.render.objects import find_object_yaml, load_object
from dvc_perception.resources import find_share_file
from dvc_perception.synth.scenes import SceneSampler, SynthConfig

MODES = {
    "PnP only": {"refine": {"enabled": False}},
    "PnP + refine every frame": {"refine": {"enabled": True}},
    "tracking, detect_every 5": {"refine": {"enabled": True},
                                 "tracking": {"enabled": True, "detect_every": 5}},
    "tracking, detect once": {"refine": {"enabled": True},
                              "tracking": {"enabled": True, "detect_every": 1000}},
}


def static_frames(n: int, noise: float) -> tuple[list[np.ndarray], CameraModel, np.ndarray,
                                                  np.ndarray]:
    """`n` noisy copies of the sample scene's frame 0, its camera and the true (R, t)."""
    values = yaml.safe_load(find_share_file(DEMO_SYNTH_CONFIG).read_text()) or {}
    cfg = dataclasses.replace(SynthConfig.from_mapping(values), sequence=True)
    frame = SceneSampler([load_object(find_object_yaml("demo_object"))], cfg, seed=7).sample(0)
    h, w = frame.rgb.shape[:2]
    images = [np.clip(frame.rgb + np.random.default_rng(k).normal(0.0, noise, frame.rgb.shape),
                      0, 255).astype(np.uint8) for k in range(n)]
    return images, CameraModel(frame.K, [], w, h), frame.R[0], frame.t[0]


def jitter(poses: list[tuple[np.ndarray, np.ndarray] | None], R_gt: np.ndarray,
           t_gt: np.ndarray) -> dict[str, float]:
    """Consecutive-frame changes and errors of a pose sequence (None: no pose that frame)."""
    rot, plane, depth = [], [], []
    for a, b in zip(poses, poses[1:]):
        if a is None or b is None:
            continue
        rot.append(float(rotation_error_deg(b[0], a[0])))
        p, d = translation_error_split(b[1], a[1])
        plane.append(1e3 * p)
        depth.append(1e3 * d)
    found = [p for p in poses if p is not None]
    err_t = [1e3 * float(np.linalg.norm(t - t_gt)) for _, t in found]
    err_r = [float(rotation_error_deg(R, R_gt)) for R, _ in found]

    def stats(x: list[float]) -> tuple[float, float]:
        return (statistics.median(x), float(np.sqrt(np.mean(np.square(x))))) if x else (
            float("nan"), float("nan"))

    out = {"frames_with_pose": len(found)}
    for name, values in (("rot_deg", rot), ("plane_mm", plane), ("depth_mm", depth)):
        out[f"{name}_median"], out[f"{name}_rms"] = stats(values)
    out["err_t_mm_median"] = statistics.median(err_t) if err_t else float("nan")
    out["err_rot_deg_median"] = statistics.median(err_r) if err_r else float("nan")
    return out


def run_mode(settings: dict, images: list[np.ndarray], camera: CameraModel) -> tuple[list, float]:
    """The best demo-object pose of each frame (None when none) and the median ms per frame."""
    model = str(find_share_file(DEMO_POSE_MODEL))
    config = PipelineConfig.from_mapping({"keypoint_source": "network",
                                          "network": {"model_path": model}, **settings})
    pipeline = Pipeline.from_config(config)
    poses, ms = [], []
    for k, image in enumerate(images):
        result = pipeline.process(image, camera, 0.1 * k)
        best = [p for p in result.poses if p.object_id == "demo_object" and p.instance == 0]
        poses.append((best[0].R, best[0].t) if best else None)
        ms.append(result.timings["total_ms"])
    return poses, statistics.median(ms[1:] or ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--noise", type=float, default=3.0, help="sensor noise std, 8-bit")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, camera, R_gt, t_gt = static_frames(args.frames, args.noise)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}; {args.frames} frames, noise {args.noise}")
    print("| mode | frames with pose | rot change deg median / RMS | plane change mm median / "
          "RMS | depth change mm median / RMS | error t mm median | error rot deg median | "
          "ms / frame |")
    print("|---|---|---|---|---|---|---|---|")
    for name, settings in MODES.items():
        poses, ms = run_mode(settings, images, camera)
        j = jitter(poses, R_gt, t_gt)
        print(f"| {name} | {j['frames_with_pose']} | {j['rot_deg_median']:.3f} / "
              f"{j['rot_deg_rms']:.3f} | {j['plane_mm_median']:.2f} / {j['plane_mm_rms']:.2f} | "
              f"{j['depth_mm_median']:.2f} / {j['depth_mm_rms']:.2f} | "
              f"{j['err_t_mm_median']:.1f} | {j['err_rot_deg_median']:.2f} | {ms:.1f} |")


if __name__ == "__main__":
    main()

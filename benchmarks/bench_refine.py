# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Speed of `refine.refine_pose` per instance at 640x480, and of the paths it could replace.

    .venv/bin/python benchmarks/bench_refine.py [--repeats 30] [--threads 1] [--soft]

For each object (the demo object, 2.2k faces; the largest LM-O mesh, obj_000005, 45.7k faces,
when the shared data is there) a hard-rendered, textured frame over smooth random colours with
noise; each repeat refines one instance from a new 10 deg / 0.1 diameter perturbation of the
true pose with the default settings. Rows: the sparse viewpoint model (`ContourModel`, the
default run-time path: no rendering per iteration) and a contour render per correspondence
iteration (`Mesh`), median and 90th percentile ms per instance, wall clock; the model's build
time once per object. With --soft, the differentiable renderer's forward + backward at
640x480 (``render(soft=True)``, the render-and-compare path the sparse refiner stands in for).
The CPU may be shared (the load average is printed): compare rows of one run only.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import cv2
import numpy as np
import torch

from dvc_perception.errors import ConfigError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.geometry.so3 import rotvec_to_matrix
from dvc_perception.refine import build_contour_model, refine_pose
from dvc_perception.render.objects import find_object_yaml, load_object
from dvc_perception.render.raster import render

WIDTH, HEIGHT = 640, 480
K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])
#: (object, distance [m]): both appear 110-130 px wide, as LM-O objects at ~1 m.
OBJECTS = (("demo_object", 0.45), ("lmo_obj_05", 1.0))


def _frame(mesh, distance: float, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axis = rng.normal(size=3)
    R = rotvec_to_matrix(torch.from_numpy(axis / np.linalg.norm(axis) * 1.2)).numpy()
    t = np.array([0.02, -0.01, distance])
    res = render(mesh, (torch.from_numpy(R), torch.from_numpy(t)), torch.from_numpy(K), WIDTH,
                 HEIGHT)
    bg = cv2.resize(rng.uniform(0.1, 0.9, (7, 9, 3)), (WIDTH, HEIGHT),
                    interpolation=cv2.INTER_CUBIC)
    img = np.where(res.mask.numpy()[..., None], res.color.numpy(), bg)
    img = np.clip(img * 255 + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    return img, R, t


def _perturbed(R: np.ndarray, t: np.ndarray, diameter: float, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(size=3)
    u = rng.normal(size=3)
    dR = rotvec_to_matrix(torch.from_numpy(np.deg2rad(10.0) * a / np.linalg.norm(a))).numpy()
    return dR @ R, t + 0.1 * diameter * u / np.linalg.norm(u)


def _soft_render(mesh, R: np.ndarray, t: np.ndarray) -> None:
    """One differentiable render at (R, t) and the backward pass of a scalar to R and t."""
    Rt = torch.from_numpy(R).requires_grad_()
    tt = torch.from_numpy(t).requires_grad_()
    out = render(mesh, (Rt, tt), torch.from_numpy(K), WIDTH, HEIGHT, soft=True)
    (out.mask.sum() + out.color.sum()).backward()


def _time_ms(fn, repeats: int) -> tuple[float, float]:
    fn(0)  # warm-up: kernels loaded (compiled the first time on a machine)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i + 1)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), float(np.percentile(times, 90))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--soft", action="store_true", help="also time the soft renderer")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    camera = CameraModel(K, [], WIDTH, HEIGHT)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {args.threads} thread(s), load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| object | faces | path | median ms / instance | p90 ms | note |")
    print("|---|---|---|---|---|---|")
    for name, distance in OBJECTS:
        try:
            obj = load_object(find_object_yaml(name))
        except (ConfigError, OSError) as err:  # LM-O meshes live in the shared data only
            print(f"| {name} | - | - | - | - | skipped: {err} |")
            continue
        mesh = obj.mesh.to(dtype=torch.float64)
        rng = np.random.default_rng(0)
        image, R, t = _frame(mesh, distance, rng)
        t0 = time.perf_counter()
        model = build_contour_model(mesh)
        build_s = time.perf_counter() - t0
        starts = [_perturbed(R, t, obj.diameter_m, rng) for _ in range(args.repeats + 1)]
        for label, source in (("sparse viewpoint model", model), ("contour render", mesh)):
            med, p90 = _time_ms(
                lambda i, src=source, img=image, st=starts: refine_pose(img, camera, src, *st[i]),
                args.repeats)
            note = f"model built once in {build_s:.1f} s (642 views)" if source is model else ""
            print(f"| {name} | {mesh.num_faces} | {label} | {med:.2f} | {p90:.2f} | {note} |")
        if args.soft:
            med, p90 = _time_ms(lambda _, m=mesh, R=R, t=t: _soft_render(m, R, t),
                                max(3, args.repeats // 10))
            print(f"| {name} | {mesh.num_faces} | soft render fwd+bwd | {med:.2f} | {p90:.2f} | "
                  "one render, no refinement |")


if __name__ == "__main__":
    main()

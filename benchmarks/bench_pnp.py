# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Benchmark solve_pnp (forward, forward+backward) next to OpenCV solvePnP looped over the batch.

Usage:
    .venv/bin/python benchmarks/bench_pnp.py            # full grid, markdown table on stdout
    .venv/bin/python benchmarks/bench_pnp.py --quick    # smoke run
    .venv/bin/python benchmarks/bench_pnp.py --threads 1 --device cuda

Times are medians over repeats, in milliseconds per batch. Problems: synthetic, 1 px noise,
non-planar, closed-form start (no init). OpenCV columns: SQPNP, and ITERATIVE (its own start),
one call per sample, float64 (OpenCV's dtype).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from dvc_perception.geometry.pnp import solve_pnp
from dvc_perception.geometry.synthetic import synthetic_pnp_problem


def _median_ms(fn, repeats: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def run_benchmark(
    batches: Sequence[int] = (1, 16, 64, 256),
    points: Sequence[int] = (8, 50, 500),
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    repeats: int = 20,
    device: str = "cpu",
    with_opencv: bool = True,
) -> list[dict]:
    """Time every (B, N, dtype); returns one dict per row."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows = []
    for n in points:
        for b in batches:
            s64 = synthetic_pnp_problem(b, n, 1.0, seed=b * 1000 + n)
            cv_sq = cv_it = float("nan")
            if with_opencv:
                obj = s64.points_obj.numpy()
                img = s64.keypoints_px.numpy()
                K = s64.K.numpy()

                def loop(flag, obj=obj, img=img, K=K, b=b):
                    for i in range(b):
                        cv2.solvePnP(obj[i], img[i], K[i], None, flags=flag)

                cv_sq = _median_ms(lambda: loop(cv2.SOLVEPNP_SQPNP), repeats, lambda: None)
                cv_it = _median_ms(lambda: loop(cv2.SOLVEPNP_ITERATIVE), repeats, lambda: None)
            for dtype in dtypes:
                x2d = s64.keypoints_px.to(dev, dtype)
                x3d = s64.points_obj.to(dev, dtype)
                K_t = s64.K.to(dev, dtype)

                def forward(x2d=x2d, x3d=x3d, K_t=K_t):
                    with torch.no_grad():
                        solve_pnp(x2d, x3d, K_t)

                x2d_g = x2d.clone().requires_grad_()

                def forward_backward(x2d_g=x2d_g, x3d=x3d, K_t=K_t):
                    r = solve_pnp(x2d_g, x3d, K_t)
                    (r.t.sum() + r.rvec.sum()).backward()

                with torch.no_grad():
                    res = solve_pnp(x2d, x3d, K_t)
                rows.append({
                    "B": b, "N": n, "dtype": str(dtype).replace("torch.", ""),
                    "forward_ms": _median_ms(forward, repeats, sync),
                    "forward_backward_ms": _median_ms(forward_backward, repeats, sync),
                    "opencv_sqpnp_ms": cv_sq, "opencv_iterative_ms": cv_it,
                    "converged": float(res.converged.float().mean()),
                })
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Rows as a markdown table."""
    lines = ["| B | N | dtype | forward ms | fwd+bwd ms | OpenCV SQPNP loop ms | "
             "OpenCV ITERATIVE loop ms | converged |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['B']} | {r['N']} | {r['dtype']} | {r['forward_ms']:.2f} | "
                     f"{r['forward_backward_ms']:.2f} | {r['opencv_sqpnp_ms']:.2f} | "
                     f"{r['opencv_iterative_ms']:.2f} | {r['converged']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid, few repeats")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    if args.quick:
        rows = run_benchmark(batches=(1, 64), points=(50,), dtypes=(torch.float64,),
                             repeats=3, device=args.device)
    else:
        rows = run_benchmark(repeats=args.repeats, device=args.device)
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, numpy {np.__version__}, "
          f"{platform.processor() or platform.machine()}, torch threads "
          f"{torch.get_num_threads()}, device {args.device}")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Benchmark solve_pnp (forward, forward+backward) next to OpenCV solvePnP looped over the batch.

Usage:
    .venv/bin/python benchmarks/bench_pnp.py            # full grid, markdown table on stdout
    .venv/bin/python benchmarks/bench_pnp.py --quick    # smoke run
    .venv/bin/python benchmarks/bench_pnp.py --threads 1 --device cuda
    .venv/bin/python benchmarks/bench_pnp.py --targets --threads 1 --json out/bench_pnp.json

Times are medians over repeats, in milliseconds per batch. Problems: synthetic, 1 px noise,
non-planar, closed-form start (no init). OpenCV columns: SQPNP, and ITERATIVE (its own start),
one call per sample, float64 (OpenCV's dtype). ``impl`` is solve_pnp's implementation (``auto``:
compiled for CPU float64, torch otherwise).

``--targets`` measures the issue-18 targets instead of the grid: B=1, N=50 forward against one
OpenCV ITERATIVE / SQPNP call; B=64, N=50 forward+backward against an OpenCV SQPNP loop; weighted
RANSAC on one object (17 keypoints, 64 hypotheses); median rotation error on 1,000 seeded
problems (N=8 and 50) against OpenCV SQPNP + solvePnPRefineLM. ``--json FILE`` writes the rows
(and the machine, load average, versions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from dvc_perception.geometry.pnp import solve_pnp, solve_pnp_ransac, warm_up
from dvc_perception.geometry.so3 import matrix_to_rotvec
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
    impl: str = "auto",
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
                        solve_pnp(x2d, x3d, K_t, impl=impl)

                x2d_g = x2d.clone().requires_grad_()

                def forward_backward(x2d_g=x2d_g, x3d=x3d, K_t=K_t):
                    r = solve_pnp(x2d_g, x3d, K_t, impl=impl)
                    (r.t.sum() + r.rvec.sum()).backward()

                with torch.no_grad():
                    res = solve_pnp(x2d, x3d, K_t, impl=impl)
                rows.append({
                    "B": b, "N": n, "dtype": str(dtype).replace("torch.", ""), "impl": impl,
                    "forward_ms": _median_ms(forward, repeats, sync),
                    "forward_backward_ms": _median_ms(forward_backward, repeats, sync),
                    "opencv_sqpnp_ms": cv_sq, "opencv_iterative_ms": cv_it,
                    "converged": float(res.converged.float().mean()),
                })
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Rows as a markdown table."""
    lines = ["| B | N | dtype | impl | forward ms | fwd+bwd ms | OpenCV SQPNP loop ms | "
             "OpenCV ITERATIVE loop ms | converged |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['B']} | {r['N']} | {r['dtype']} | {r.get('impl', 'auto')} | "
                     f"{r['forward_ms']:.2f} | "
                     f"{r['forward_backward_ms']:.2f} | {r['opencv_sqpnp_ms']:.2f} | "
                     f"{r['opencv_iterative_ms']:.2f} | {r['converged']:.2f} |")
    return "\n".join(lines)


def _cv_sqpnp_refine(obj: np.ndarray, img: np.ndarray, K: np.ndarray) -> np.ndarray:
    """OpenCV's best: SQPNP, then solvePnPRefineLM. Returns R (3,3)."""
    _, rv, tv = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_SQPNP)
    rv, tv = cv2.solvePnPRefineLM(obj, img, K, None, rv, tv)
    return cv2.Rodrigues(rv)[0]


def _rot_err_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    rv = matrix_to_rotvec(torch.as_tensor(Ra) @ torch.as_tensor(Rb).transpose(-1, -2))
    return np.degrees(rv.norm(dim=-1).numpy())


def run_targets(repeats: int = 200, accuracy_problems: int = 1000,
                impls: Sequence[str] = ("compiled", "torch")) -> list[dict]:
    """The issue-18 targets (CPU, float64); one dict per row (``ms`` and ratios)."""
    rows: list[dict] = []
    slow = max(5, repeats // 20)  # the torch path is ~50x slower: fewer repeats

    def row(name: str, impl: str, ms: float, ref_ms: dict[str, float], target: str) -> None:
        r = {"name": name, "impl": impl, "ms": ms, "target": target}
        for key, val in ref_ms.items():
            r[f"{key}_ms"] = val
            r[f"ratio_vs_{key}"] = ms / val
        rows.append(r)

    # B=1, N=50 forward vs one OpenCV call
    s = synthetic_pnp_problem(1, 50, 1.0, seed=1050)
    obj, img, K = s.points_obj[0].numpy(), s.keypoints_px[0].numpy(), s.K[0].numpy()
    cv_ref = {
        "opencv_iterative": _median_ms(
            lambda: cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_ITERATIVE), repeats, _nop),
        "opencv_sqpnp": _median_ms(
            lambda: cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_SQPNP), repeats, _nop),
    }
    for impl in impls:
        def fwd(impl: str = impl) -> None:
            with torch.no_grad():
                solve_pnp(s.keypoints_px, s.points_obj, s.K, impl=impl)
        row("B1_N50_forward", impl, _median_ms(fwd, repeats if impl != "torch" else slow, _nop),
            cv_ref, "<= OpenCV ITERATIVE single call (goal <= 0.1 ms)")

    # B=64, N=50 forward+backward vs an OpenCV SQPNP loop over the batch
    s = synthetic_pnp_problem(64, 50, 1.0, seed=6450)
    objs, imgs, Ks = s.points_obj.numpy(), s.keypoints_px.numpy(), s.K.numpy()

    def cv_loop() -> None:
        for i in range(64):
            cv2.solvePnP(objs[i], imgs[i], Ks[i], None, flags=cv2.SOLVEPNP_SQPNP)

    cv_ref = {"opencv_sqpnp_loop": _median_ms(cv_loop, max(5, repeats // 4), _nop)}
    x2d = s.keypoints_px.clone().requires_grad_()
    for impl in impls:
        def fwd_bwd(impl: str = impl) -> None:
            r = solve_pnp(x2d, s.points_obj, s.K, impl=impl)
            (r.t.sum() + r.rvec.sum()).backward()

        def fwd64(impl: str = impl) -> None:
            with torch.no_grad():
                solve_pnp(s.keypoints_px, s.points_obj, s.K, impl=impl)
        n = max(5, repeats // 4) if impl != "torch" else slow
        row("B64_N50_forward_backward", impl, _median_ms(fwd_bwd, n, _nop), cv_ref,
            "<= 0.25x SQPNP loop (goal <= 1.5 ms)")
        row("B64_N50_forward", impl, _median_ms(fwd64, n, _nop), cv_ref, "(for reference)")

    # weighted RANSAC, one object: 17 keypoints, 64 hypotheses, 30 % outliers
    s = synthetic_pnp_problem(1, 17, 1.0, seed=1764, outlier_ratio=0.3)
    w = 0.5 + torch.rand(1, 17, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    obj, img, K = s.points_obj[0].numpy(), s.keypoints_px[0].numpy(), s.K[0].numpy()
    cv_ref = {"opencv_ransac_unweighted": _median_ms(
        lambda: cv2.solvePnPRansac(obj, img, K, None, iterationsCount=64, reprojectionError=4.0,
                                   confidence=0.999999, flags=cv2.SOLVEPNP_EPNP), repeats, _nop)}
    for impl in impls:
        def ransac(impl: str = impl) -> None:
            with torch.no_grad():
                solve_pnp_ransac(s.keypoints_px, s.points_obj, s.K, w, num_hypotheses=64,
                                 threshold_px=4.0, impl=impl)
        row("ransac_17kp_64hyp_weighted", impl,
            _median_ms(ransac, repeats if impl != "torch" else slow, _nop), cv_ref, "<= 1 ms")

    # accuracy: median rotation error on seeded problems vs OpenCV SQPNP + refineLM
    for n in (8, 50):
        s = synthetic_pnp_problem(accuracy_problems, n, 1.0, seed=7000 + n)
        objs, imgs, Ks = s.points_obj.numpy(), s.keypoints_px.numpy(), s.K.numpy()
        R_cv = np.stack([_cv_sqpnp_refine(objs[i], imgs[i], Ks[i])
                         for i in range(accuracy_problems)])
        err_cv = float(np.median(_rot_err_deg(R_cv, s.R_gt.numpy())))
        with torch.no_grad():
            res = solve_pnp(s.keypoints_px, s.points_obj, s.K, impl=impls[0])
        err = float(np.median(_rot_err_deg(res.R.numpy(), s.R_gt.numpy())))
        rows.append({"name": f"accuracy_N{n}_median_rot_err_deg", "impl": impls[0],
                     "ours_deg": err, "opencv_sqpnp_refinelm_deg": err_cv,
                     "ratio_vs_opencv": err / err_cv, "valid": float(res.valid.float().mean()),
                     "target": "ratio <= 1.01"})
    return rows


def _nop() -> None:
    pass


def targets_table(rows: list[dict]) -> str:
    """Target rows as a markdown table."""
    lines = ["| benchmark | impl | ours | reference | ratio | target |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "ms" in r:
            refs = [k[:-3] for k in r if k.endswith("_ms") and k != "ms"]
            ref = ", ".join(f"{k} {r[k + '_ms']:.3f} ms" for k in refs)
            ratio = ", ".join(f"{r['ratio_vs_' + k]:.3f}" for k in refs)
            lines.append(f"| {r['name']} | {r['impl']} | {r['ms']:.3f} ms | {ref} | {ratio} | "
                         f"{r['target']} |")
        else:
            lines.append(f"| {r['name']} | {r['impl']} | {r['ours_deg']:.5f} deg | OpenCV "
                         f"SQPNP+refineLM {r['opencv_sqpnp_refinelm_deg']:.5f} deg | "
                         f"{r['ratio_vs_opencv']:.4f} | {r['target']} |")
    return "\n".join(lines)


def _machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
            "opencv": cv2.__version__, "numpy": np.__version__,
            "torch_threads": torch.get_num_threads()}


def _timed(fn: Callable[[], list[dict]]) -> tuple[list[dict], dict]:
    before = os.getloadavg()
    t0 = time.perf_counter()
    rows = fn()
    info = {"load_average_before": before, "load_average_after": os.getloadavg(),
            "seconds": time.perf_counter() - t0}
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid, few repeats")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--targets", action="store_true", help="the issue-18 target rows")
    parser.add_argument("--impl", default="auto", help="solve_pnp impl for the grid")
    parser.add_argument("--json", type=Path, default=None, help="write the rows to this file")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    warm = warm_up()  # load (or compile) the compiled kernels before timing
    if args.targets:
        rows, info = _timed(lambda: run_targets(repeats=max(args.repeats, 50)))
        table = targets_table(rows)
    elif args.quick:
        rows, info = _timed(lambda: run_benchmark(batches=(1, 64), points=(50,),
                                                  dtypes=(torch.float64,), repeats=3,
                                                  device=args.device, impl=args.impl))
        table = markdown_table(rows)
    else:
        rows, info = _timed(lambda: run_benchmark(repeats=args.repeats, device=args.device,
                                                  impl=args.impl))
        table = markdown_table(rows)
    machine = _machine()
    print(f"{machine['cpu']} ({machine['cores']} cores), torch {torch.__version__}, OpenCV "
          f"{cv2.__version__}, numpy {np.__version__}, torch threads "
          f"{torch.get_num_threads()}, device {args.device}; warm_up {warm:.2f} s; load average "
          f"{info['load_average_before'][0]:.2f} before, {info['load_average_after'][0]:.2f} "
          f"after")
    print(table)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "warm_up_s": warm, **info,
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

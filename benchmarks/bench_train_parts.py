# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Two small parts of a pose training step, each against the formulation used before 2026-12-01.

- The windowed soft-argmax (`models.heads.soft_argmax_2d`, window 7) on the keypoint head's
  (B, 17, 32, 40) logits of a 160x128 crop: the window as the outer product of a row and a column
  test (now) vs the (B, C, h*w, 2) Chebyshev differences (before, re-stated here). Forward +
  backward; both give the same outputs (checked, printed).
- The AdamW update of the keypoint network's parameters (`train.loop.build_optimizer`): fused
  (one kernel per step, now) vs the per-tensor loop, the CPU default (before). Both give the same
  parameters after the timed steps (max difference printed).

    .venv/bin/python benchmarks/bench_train_parts.py [--batch 16] [--iters 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import Tensor

from dvc_perception.models.heads import heatmap_cell_centres, soft_argmax_2d
from dvc_perception.models.keypoint_net import KeypointNet, KeypointNetConfig


def _soft_argmax_before(logits: Tensor, stride: int, window: int) -> Tensor:
    """xy (B, C, 2) px: the window from (B, C, h*w, 2) Chebyshev differences."""
    b, c, h, w = (int(n) for n in logits.shape)
    flat = logits.reshape(b, c, h * w)
    us = heatmap_cell_centres(w, stride, dtype=logits.dtype)
    vs = heatmap_cell_centres(h, stride, dtype=logits.dtype)
    grid = torch.stack(
        [us.unsqueeze(0).expand(h, w).reshape(-1), vs.unsqueeze(1).expand(h, w).reshape(-1)],
        dim=-1)
    peak = grid[flat.argmax(dim=-1)]
    dist = (grid.view(1, 1, h * w, 2) - peak.unsqueeze(2)).abs().amax(dim=-1)
    inside = dist <= stride * (window // 2) + 0.5 * stride
    flat = torch.where(inside, flat, torch.full_like(flat, -1.0e4))
    return torch.softmax(flat, dim=-1) @ grid


def _median_ms(fn, iters: int) -> float:
    times = []
    for _ in range(iters + 2):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times = sorted(times[2:])  # two warm-up calls
    return 1e3 * times[len(times) // 2]


def bench_soft_argmax(batch: int, iters: int) -> tuple[str, list[tuple[str, float]]]:
    """(check note, [(row name, ms)]) of the soft-argmax."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, 17, 32, 40, generator=gen)
    now = soft_argmax_2d(logits, 4, window=7)[0]
    before = _soft_argmax_before(logits, 4, window=7)
    note = f"soft-argmax: max |now - before| = {float((now - before).abs().max()):.2e} px"

    def run(fn):
        x = logits.detach().requires_grad_()
        fn(x).square().sum().backward()

    rows = [("soft-argmax window 7, (h*w, 2) differences (before)",
             lambda x: _soft_argmax_before(x, 4, 7)),
            ("soft-argmax window 7, row x column test (now)",
             lambda x: soft_argmax_2d(x, 4, window=7)[0])]
    return note, [(name, _median_ms(lambda f=fn: run(f), iters)) for name, fn in rows]


def bench_adamw(iters: int) -> tuple[str, list[tuple[str, float]]]:
    """(check note, [(row name, ms)]) of the AdamW update."""
    net = KeypointNet(KeypointNetConfig(object_ids=("demo_object",), num_keypoints=17))
    params = [p for p in net.parameters() if p.requires_grad]
    n = sum(p.numel() for p in params)
    results = {}
    for name, fused in (("AdamW per-tensor loop, the CPU default (before)", False),
                        ("AdamW fused (now)", True)):
        ps = [copy.deepcopy(p.detach()).requires_grad_() for p in params]
        gen = torch.Generator().manual_seed(1)
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen)
        opt = torch.optim.AdamW(ps, lr=3e-3, weight_decay=1e-4, fused=fused)
        ms = _median_ms(opt.step, iters)
        results[name] = (ms, ps)
    (_, a), (_, b) = results.values()
    diff = max(float((x - y).abs().max()) for x, y in zip(a, b))
    note = (f"AdamW: {n} parameters in {len(params)} tensors; after {iters + 2} equal steps "
            f"max |fused - per-tensor| = {diff:.2e}")
    return note, [(name, ms) for name, (ms, _) in results.items()]


def main() -> None:
    """Print a markdown table of the times, before vs now."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = [bench_soft_argmax(args.batch, args.iters), bench_adamw(args.iters)]
    print(f"# torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}")
    for note, _ in parts:
        print(f"# {note}")
    print("| part of a pose training step | ms (median) |")
    print("|---|---|")
    for _, rows in parts:
        for name, ms in rows:
            print(f"| {name} | {ms:.2f} |")


if __name__ == "__main__":
    main()

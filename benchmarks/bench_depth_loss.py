# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Depth-loss time per training batch: masked sums (`train.losses`) vs boolean indexing.

Forward + backward of ``silog_loss + depth_l1_loss`` on a (B, 1, H, W) float32 prediction with
a fifth of the target pixels invalid, as `train.tasks.DepthTask.loss` calls them. "indexing" is
the formulation used until 2026-12-01 (``pred[valid]``, ``d[has]``), re-stated here; both give
the same loss (checked, printed).

    .venv/bin/python benchmarks/bench_depth_loss.py [--batch 16] [--size 320x240] [--iters 10]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor

from dvc_perception.train.losses import depth_l1_loss, silog_loss


def _silog_indexing(pred: Tensor, target: Tensor, valid: Tensor, lam: float) -> Tensor:
    b = int(pred.shape[0])
    n = valid.reshape(b, -1).sum(dim=-1).to(pred.dtype)
    has = n > 0
    d = torch.log(pred.clamp_min(1e-6)) - torch.log(target.clamp_min(1e-6))
    d = torch.where(valid, d, torch.zeros_like(d)).reshape(b, -1)[has]
    mean = d.sum(dim=-1) / n[has]
    var = d.square().sum(dim=-1) / n[has] - lam * mean.square()
    return torch.sqrt(var.clamp_min(1e-12)).mean()


def _l1_indexing(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    return (pred[valid] - target[valid]).abs().mean()


def _masked(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    return silog_loss(pred, target, valid, 0.85) + depth_l1_loss(pred, target, valid)


def _indexing(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    return _silog_indexing(pred, target, valid, 0.85) + _l1_indexing(pred, target, valid)


def time_ms(fn, pred: Tensor, target: Tensor, valid: Tensor, iters: int) -> float:
    """Median wall time [ms] of forward + backward."""
    times = []
    for _ in range(iters + 2):
        p = pred.detach().requires_grad_()
        t0 = time.perf_counter()
        fn(p, target, valid).backward()
        times.append(time.perf_counter() - t0)
    times = sorted(times[2:])
    return 1e3 * times[len(times) // 2]


def main() -> None:
    """Print a markdown table of the two formulations' times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    gen = torch.Generator().manual_seed(0)
    target = 0.3 + 2.0 * torch.rand(args.batch, 1, h, w, generator=gen)
    pred = target * torch.exp(0.1 * torch.randn(target.shape, generator=gen))
    valid = torch.rand(target.shape, generator=gen) > 0.2
    a, b = float(_masked(pred, target, valid)), float(_indexing(pred, target, valid))
    print(f"# batch {args.batch} x {w}x{h}, {args.threads} thread(s); loss masked {a:.6f}, "
          f"indexing {b:.6f}")
    print("| formulation | forward + backward ms per batch |")
    print("|---|---|")
    for name, fn in (("boolean indexing (before)", _indexing), ("masked sums (now)", _masked)):
        print(f"| {name} | {time_ms(fn, pred, target, valid, args.iters):.1f} |", flush=True)


if __name__ == "__main__":
    main()

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from dvc_perception.train.loop import _collate, build_optimizer

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("ddp_worker", HERE / "ddp_worker.py")
ddp_worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ddp_worker)


def _reference_parameters() -> dict[str, torch.Tensor]:
    """Single process: each step averages the gradients of the two ranks' sub-batches."""
    model, task, train_set, _ = ddp_worker.build()
    model.to(memory_format=torch.channels_last)  # the training loop's layout on a CPU
    cfg = ddp_worker.CONFIG
    torch.manual_seed(cfg.seed)
    samplers = [DistributedSampler(train_set, num_replicas=2, rank=r, shuffle=True,
                                   seed=cfg.seed, drop_last=True) for r in range(2)]
    steps = cfg.max_steps_per_epoch
    opt, sched = build_optimizer(model, cfg, steps)
    train_set.set_epoch(0)
    orders = []
    for s in samplers:
        s.set_epoch(0)
        orders.append(list(s))
    model.train()
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for r in range(2):
            idx = orders[r][step * cfg.batch_size:(step + 1) * cfg.batch_size]
            loss, _ = task.loss(model, _collate([train_set[i] for i in idx]), 0)
            total = total + loss / 2
        total.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
    return {k: v.detach() for k, v in model.named_parameters()}


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync_and_match_single_process(tmp_path):
    path = os.pathsep.join([str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    p0 = torch.load(tmp_path / "rank0.pt")
    p1 = torch.load(tmp_path / "rank1.pt")
    initial, _, _, _ = ddp_worker.build()
    moved = 0
    for key, value in p0.items():
        torch.testing.assert_close(p1[key], value, rtol=0, atol=0, msg=key)  # in sync
        moved += int(not torch.equal(value, dict(initial.named_parameters())[key].detach()))
    assert moved > 0.5 * len(p0)  # the steps did train
    ref = _reference_parameters()
    for key, value in p0.items():
        torch.testing.assert_close(value, ref[key], rtol=1e-4, atol=1e-5, msg=key)
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "metrics.csv").is_file()

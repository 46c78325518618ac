# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Training-step time of the two networks: float32 vs bfloat16 mixed precision on this CPU.

One step = forward + backward + AdamW update of a batch, as `train.loop.train` runs it with
`TrainConfig.precision` ("fp32": contiguous float32; "bf16": channels-last tensors and
convolutions in bfloat16 under autocast, heads and decode in float32). The batch is random
images; the loss is a plain mean of the outputs (the networks' cost, not the losses').

    .venv/bin/python benchmarks/bench_train_step.py [--batch 16] [--size 160x128 320x240]
        [--threads 1] [--iters 8] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from dvc_perception.models.depth_net import DepthNet, DepthNetConfig
from dvc_perception.models.keypoint_net import KeypointNet, KeypointNetConfig
from dvc_perception.train.device import cpu_bf16_supported


def _networks() -> dict[str, torch.nn.Module]:
    return {
        "keypoints (1 object, 17 kp)": KeypointNet(
            KeypointNetConfig(object_ids=("demo_object",), num_keypoints=17)),
        "depth": DepthNet(DepthNetConfig()),
    }


def step_ms(net: torch.nn.Module, batch: int, width: int, height: int, precision: str,
            iters: int, device: str = "cpu") -> float:
    """Median wall time [ms] of one training step."""
    mixed = precision == "bf16"
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    net.train().to(dev, memory_format=torch.channels_last if mixed else torch.contiguous_format)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, height, width, device=dev)
    if mixed:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(iters + 2):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mixed):
            out = net(x)
            y = out if isinstance(out, torch.Tensor) else out.heatmap_logits
            loss = y.float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    times = sorted(times[2:])  # the first two steps warm up oneDNN
    return 1e3 * times[len(times) // 2]


def main() -> None:
    """Print a markdown table of step times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", nargs="+", default=["160x128", "320x240"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.device.startswith("cuda"):
        bf16 = torch.cuda.is_bf16_supported()
        where = f"{torch.cuda.get_device_name(args.device)}, CUDA {torch.version.cuda}"
    else:
        bf16 = cpu_bf16_supported()
        where = f"{platform.processor() or platform.machine()}, {args.threads} thread(s)"
    print(f"# {where}, torch {torch.__version__}, batch {args.batch}, native bf16: {bf16}")
    print("| network | crop | fp32 step ms | bf16 step ms | speed-up |")
    print("|---|---|---|---|---|")
    for name, net in _networks().items():
        for size in args.size:
            w, h = (int(v) for v in size.split("x"))
            fp32 = step_ms(net, args.batch, w, h, "fp32", args.iters, args.device)
            mixed = (step_ms(net, args.batch, w, h, "bf16", args.iters, args.device) if bf16
                     else float("nan"))
            print(f"| {name} | {w}x{h} | {fp32:.0f} | {mixed:.0f} | {fp32 / mixed:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()

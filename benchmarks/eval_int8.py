# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""fp32 vs int8 accuracy of exported models on held-out synthetic shards.

For each model: torch eager (the training code's own evaluation), ONNX Runtime fp32, ONNX
Runtime int8 with the TensorRT-compatible QDQ model (s8s8) and with the CPU-target model (u8s8),
all evaluated by the training code's `PoseTask.evaluate` / `DepthTask.evaluate` on the same
validation frames: ADD(-S)@0.1d recall, median keypoint / rotation / translation errors for pose
models; AbsRel, RMSE, delta<1.25 for depth models. The int8 models are calibrated on frames of
``--calib`` (training shards or images; never the validation frames).

    .venv/bin/python benchmarks/eval_int8.py --model models/pose_demo_object.onnx \\
        models/depth.onnx --val-shards runs/val_shards --calib runs/train_shards
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from dvc_perception.engines import load_engine
from dvc_perception.engines.calibrate import load_calibration_frames, resize_mode_from_metadata
from dvc_perception.engines.export import read_model_metadata
from dvc_perception.engines.quantize import model_input_shape, quantize_onnx
from dvc_perception.engines.torch_backend import module_from_metadata


class EngineAsKeypointNet(torch.nn.Module):
    """An exported keypoint engine behind the training model's interface (x2d, weights, mask)."""

    def __init__(self, engine: Any) -> None:
        super().__init__()
        self.engine = engine
        self.input_name = engine.inputs[0].name

    def forward(self, image: torch.Tensor) -> SimpleNamespace:
        outs = [self.engine.run({self.input_name: image[i : i + 1].numpy()})
                for i in range(image.shape[0])]
        cat = {k: torch.from_numpy(np.concatenate([o[k] for o in outs])) for k in outs[0]}
        p = cat["mask"].clamp(1e-6, 1 - 1e-6)
        return SimpleNamespace(x2d=cat["x2d"], weights=cat["weights"],
                               mask_logits=torch.log(p / (1 - p)))


class TorchAsKeypointNet(torch.nn.Module):
    """The exported torch module (tuple outputs) behind the same interface."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, image: torch.Tensor) -> SimpleNamespace:
        x2d, weights, _, mask = self.module(image)
        p = mask.clamp(1e-6, 1 - 1e-6)
        return SimpleNamespace(x2d=x2d, weights=weights, mask_logits=torch.log(p / (1 - p)))


class EngineAsDepthNet(torch.nn.Module):
    """An exported depth engine as a module returning (B, 1, H, W) canonical depth."""

    def __init__(self, engine: Any) -> None:
        super().__init__()
        self.engine = engine
        self.input_name = engine.inputs[0].name
        self.output_name = engine.outputs[0].name

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        outs = [self.engine.run({self.input_name: image[i : i + 1].numpy()})[self.output_name]
                for i in range(image.shape[0])]
        return torch.from_numpy(np.concatenate(outs))


def evaluate_model(path: Path, val_shards: Path, calib: Path, calib_frames: int, tmp: Path,
                   max_val: int) -> list[tuple[str, dict[str, float]]]:
    """[(variant, metrics)] for one exported model."""
    from dvc_perception.train.config import DepthLossConfig, PoseLossConfig
    from dvc_perception.train.datasets import (
        DepthDataset,
        PoseDataset,
        SubsetFrameSource,
        load_object_infos,
    )
    from dvc_perception.train.runner import open_frame_source
    from dvc_perception.train.tasks import DepthTask, PoseTask

    meta = read_model_metadata(path)
    shape = model_input_shape(path)
    frames = load_calibration_frames(calib, input_shape=shape, max_frames=calib_frames,
                                     mean=meta.mean, std=meta.std,
                                     resize=resize_mode_from_metadata(meta.extra))
    s8, u8 = tmp / f"{path.stem}_s8.onnx", tmp / f"{path.stem}_u8.onnx"
    quantize_onnx(path, s8, frames)
    quantize_onnx(path, u8, frames, target="onnxruntime-cpu")
    width, height = meta.input_size
    mode = "pose" if meta.task == "keypoints" else "depth"
    source = open_frame_source(val_shards, mode)
    if max_val and len(source) > max_val:
        source = SubsetFrameSource(source, list(range(max_val)))
    variants: list[tuple[str, Any]] = [("torch eager fp32", module_from_metadata(path).eval())]
    variants.append(("onnxruntime fp32", load_engine(path, backend="onnxruntime")))
    variants.append(("onnxruntime int8 s8s8 (TensorRT QDQ)",
                     load_engine(s8, backend="onnxruntime", precision="int8")))
    variants.append(("onnxruntime int8 u8s8 (CPU target)",
                     load_engine(u8, backend="onnxruntime", precision="int8")))
    results = []
    if mode == "pose":
        objects = load_object_infos(list(meta.object_ids))
        task: Any = PoseTask(objects, PoseLossConfig())
        dataset: Any = PoseDataset(source, objects, width, height)
    else:
        focal = float(meta.extra["focal_normalization"]["reference_focal_px"])
        task = DepthTask(focal, DepthLossConfig())
        dataset = DepthDataset(source, width, height)
    for label, runner in variants:
        if mode == "pose":
            model = TorchAsKeypointNet(runner) if isinstance(runner, torch.nn.Module) else (
                EngineAsKeypointNet(runner))
        else:
            model = runner if isinstance(runner, torch.nn.Module) else EngineAsDepthNet(runner)
        loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False)
        results.append((label, task.evaluate(model, iter(loader))))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, nargs="+", required=True)
    parser.add_argument("--val-shards", type=Path, required=True)
    parser.add_argument("--calib", type=Path, required=True,
                        help="calibration frames (training shards or an image directory)")
    parser.add_argument("--calib-frames", type=int, default=64)
    parser.add_argument("--max-val", type=int, default=0, help="0 = every validation frame")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="eval_int8_"))
    print(f"# validation: {args.val_shards}; calibration: {args.calib_frames} frames of "
          f"{args.calib}")
    for path in args.model:
        print(f"\n{path.name}\n")
        rows = evaluate_model(path, args.val_shards, args.calib, args.calib_frames, tmp,
                              args.max_val)
        keys = list(rows[0][1])
        print("| variant | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        for label, metrics in rows:
            print(f"| {label} | " + " | ".join(f"{metrics[k]:.4g}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

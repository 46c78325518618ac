# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Latency of torch eager, ONNX Runtime fp32 and ONNX Runtime int8 (QDQ) on this CPU.

For each model: p50/p99 latency, frames/s, the model's GFLOPs (counted from the ONNX graph's
Conv/ConvTranspose/Gemm/MatMul shapes, 2 FLOPs per multiply-add) and the achieved GFLOP/s.
The int8 model is quantised here with `dvc_perception.engines.quantize` over real frames (the
LM-O test images in ../shared/data when present, else rendered-looking synthetic frames).

Default models: the shipped ``models/*.onnx`` when they exist (their torch module comes from the
metadata convention: ``architecture`` + ``<stem>.pt``), else the reference convnets of
`dvc_perception.engines.reference_nets` at 320x240.

    .venv/bin/python benchmarks/bench_engines.py [--model a.onnx ...] [--iters 50]
        [--torch-threads 1] [--ort-threads 2]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from dvc_perception.engines import load_engine
from dvc_perception.engines.calibrate import load_calibration_frames, resize_mode_from_metadata
from dvc_perception.engines.export import export_onnx, read_model_metadata
from dvc_perception.engines.quantize import model_input_shape, quantize_onnx
from dvc_perception.engines.reference_nets import build_reference_net
from dvc_perception.engines.torch_backend import module_from_metadata

REPO = Path(__file__).resolve().parent.parent
LMO_RGB = REPO.parent / "shared" / "data" / "lmo" / "test" / "000002" / "rgb"


def count_gflops(onnx_path: Path) -> float:
    """GFLOPs of one forward pass: Conv, ConvTranspose, Gemm, MatMul (2 x multiply-adds)."""
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    shapes: dict[str, list[int]] = {}
    for vi in [*proto.graph.value_info, *proto.graph.input, *proto.graph.output]:
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in proto.graph.initializer:
        shapes[init.name] = list(init.dims)
    # Weights of a QDQ model reach Conv through DequantizeLinear: follow it to the initializer.
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])
    macs = 0
    for node in proto.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            x = shapes.get(node.input[0])
            if not w or not out or not x:
                continue
            if node.op_type == "Conv":  # w (Cout, Cin/g, kh, kw); each output: Cin/g*kh*kw MACs
                macs += int(np.prod(out)) * int(np.prod(w[1:]))
            else:  # w (Cin, Cout/g, kh, kw); each input element scatters Cout/g*kh*kw MACs
                macs += int(np.prod(x)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out:
                macs += int(np.prod(out)) * int(a[-1])
    return 2.0 * macs / 1e9


def time_engine(engine, x: np.ndarray, warmup: int, iters: int) -> np.ndarray:
    """Per-call latencies in ms."""
    feeds = {engine.inputs[0].name: x}
    for _ in range(warmup):
        engine.run(feeds)
    out = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        engine.run(feeds)
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def gpu_engines(path: Path, int8_path: Path) -> list[tuple[str, object]]:
    """torch CUDA fp32/fp16 and TensorRT fp32/fp16/int8 rows where a GPU exists (else none).

    Not run in this repository's CI (no GPU); on a GPU machine each row that cannot be built is
    reported and skipped.
    """
    if not torch.cuda.is_available():
        return []
    out: list[tuple[str, object]] = []
    candidates = [
        ("torch cuda fp32", lambda: load_engine(path, backend="torch", device="cuda")),
        ("torch cuda fp16", lambda: load_engine(path, backend="torch", device="cuda",
                                                 precision="fp16")),
        ("tensorrt fp32", lambda: load_engine(path, backend="tensorrt")),
        ("tensorrt fp16", lambda: load_engine(path, backend="tensorrt", precision="fp16")),
        ("tensorrt int8 (QDQ)", lambda: load_engine(int8_path, backend="tensorrt",
                                                    precision="int8")),
    ]
    for label, make in candidates:
        try:
            out.append((label, make()))
        except Exception as err:  # noqa: BLE001 - report and go on
            print(f"# {label} skipped for {path.name}: {err}")
    return out


def reference_models(directory: Path) -> list[Path]:
    """The reference keypoint and depth nets exported at 320x240 (width 32)."""
    paths = []
    for name, task, outputs in (("keypoint", "keypoints", ["keypoints", "confidence"]),
                                ("depth", "depth", ["depth"])):
        module = build_reference_net(name, width=32).eval()
        path = directory / f"reference_{name}.onnx"
        meta = {
            "dvc_format": 1, "task": task, "input_size": [320, 240],
            "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "provenance": {"git_commit": "none", "command": "bench_engines.py",
                           "date": time.strftime("%Y-%m-%d"), "data_seed": 0},
            "architecture": {
                "factory": "dvc_perception.engines.reference_nets:build_reference_net",
                "kwargs": {"name": name, "width": 32},
            },
        }
        export_onnx(module, (torch.zeros(1, 3, 240, 320),), path, input_names=["image"],
                    output_names=outputs, metadata=meta)
        torch.save(module.state_dict(), path.with_suffix(".pt"))
        paths.append(path)
    return paths


def architecture_models(directory: Path) -> list[Path]:
    """The networks' architectures (`dvc_perception.models.factory` defaults), untrained."""
    from dvc_perception.models import factory

    paths = []
    for name, task, make, fac in (
        ("pose_arch_untrained", "keypoints", factory.keypoint_export_module,
         factory.KEYPOINT_FACTORY),
        ("depth_arch_untrained", "depth", factory.depth_export_module, factory.DEPTH_FACTORY),
    ):
        torch.manual_seed(0)
        module = make().eval()
        example = torch.zeros(1, 3, 240, 320)
        with torch.no_grad():
            out = module(example)
        n_out = len(out) if isinstance(out, tuple) else 1
        meta = {
            "dvc_format": 1, "task": task, "input_size": [320, 240],
            "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
            "provenance": {"git_commit": "untrained", "command": "bench_engines.py --arch",
                           "date": time.strftime("%Y-%m-%d"), "data_seed": 0},
            "architecture": {"factory": fac, "kwargs": {}},
        }
        path = directory / f"{name}.onnx"
        export_onnx(module, (example,), path, input_names=["image"],
                    output_names=[f"out{i}" for i in range(n_out)], metadata=meta)
        torch.save(module.state_dict(), path.with_suffix(".pt"))
        paths.append(path)
    return paths


def calibration_source(rng_seed: int = 0):
    """Real LM-O frames when present, else synthetic frames (never random noise)."""
    if LMO_RGB.is_dir() and any(LMO_RGB.iterdir()):
        return LMO_RGB, f"{LMO_RGB.relative_to(REPO.parent)} (real LM-O frames)"
    import cv2

    rng = np.random.default_rng(rng_seed)
    frames = []
    for _ in range(16):
        img = np.full((240, 320, 3), rng.integers(40, 200, 3), np.uint8)
        for _ in range(6):
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            center = (int(rng.integers(0, 320)), int(rng.integers(0, 240)))
            cv2.circle(img, center, int(rng.integers(8, 60)), color, -1)
        frames.append(img)
    return frames, "16 synthetic shape frames (no real frames found)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, nargs="*", default=None)
    parser.add_argument("--arch", action="store_true",
                        help="benchmark the networks' architectures (untrained) instead")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="set both --torch-threads and --ort-threads")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch.set_num_threads (default 1: on this shared 2-core machine "
                        "2 torch threads made the keypoint net 40x slower, see RESULTS.md)")
    parser.add_argument("--ort-threads", type=int, default=2,
                        help="ONNX Runtime intra_op_num_threads")
    parser.add_argument("--calib-frames", type=int, default=16)
    args = parser.parse_args()

    if args.threads is not None:
        args.torch_threads = args.ort_threads = args.threads
    torch.set_num_threads(args.torch_threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_engines_"))
    shipped = sorted((REPO / "models").glob("**/*.onnx"))
    note = ""
    if args.model:
        models = list(args.model)
    elif args.arch:
        models = architecture_models(tmp)
        note = ("Untrained networks' architectures (dvc_perception.models.factory defaults) at "
                "320x240.")
    elif shipped:
        models = shipped
    else:
        models = reference_models(tmp)
        note = ("The shipped models (models/*.onnx) did not exist yet: numbers are for the "
                "reference convnets of dvc_perception.engines.reference_nets (untrained, "
                "width 32) at 320x240.")
    source, source_text = calibration_source()
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
          f"threads, ORT intra_op_num_threads={args.ort_threads}, python "
          f"{sys.version.split()[0]}, "
          f"torch {torch.__version__}")
    print(f"# int8 calibration: {args.calib_frames} frames from {source_text}")
    if note:
        print(f"# {note}")
    print("| model | input | GFLOPs | backend | p50 ms | p99 ms | frames/s | GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for path in models:
        meta = read_model_metadata(path)
        shape = model_input_shape(path)
        frames = load_calibration_frames(source, input_shape=shape, max_frames=args.calib_frames,
                                         mean=meta.mean, std=meta.std,
                                         resize=resize_mode_from_metadata(meta.extra))
        int8_path = tmp / f"{path.stem}_int8.onnx"
        quantize_onnx(path, int8_path, frames)  # TensorRT-compatible (symmetric s8 activations)
        u8_path = tmp / f"{path.stem}_int8_u8.onnx"
        quantize_onnx(path, u8_path, frames, target="onnxruntime-cpu")
        gflops = count_gflops(path)
        x = frames[0]
        engines = []
        try:
            module = module_from_metadata(path)
            engines.append(("torch eager fp32", load_engine(
                path, backend="torch", device="cpu", options={"module": module})))
        except Exception as err:  # noqa: BLE001 - report and go on with the other backends
            print(f"# torch eager skipped for {path.name}: {err}")
        opts = {"intra_op_num_threads": args.ort_threads}
        engines.append(("onnxruntime fp32", load_engine(path, backend="onnxruntime",
                                                        device="cpu", options=opts)))
        engines.append(("onnxruntime int8 (s8s8, TensorRT QDQ)", load_engine(
            int8_path, backend="onnxruntime", precision="int8", device="cpu", options=opts)))
        engines.append(("onnxruntime int8 (u8s8, CPU target)", load_engine(
            u8_path, backend="onnxruntime", precision="int8", device="cpu", options=opts)))
        engines.extend(gpu_engines(path, int8_path))
        for label, engine in engines:
            lat = time_engine(engine, x, args.warmup, args.iters)
            p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
            fps = 1e3 / lat.mean()
            print(f"| {path.name} | {shape[3]}x{shape[2]} | {gflops:.3f} | {label} | {p50:.2f} | "
                  f"{p99:.2f} | {fps:.1f} | {gflops * fps:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

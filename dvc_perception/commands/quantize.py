# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception quantize MODEL.onnx --calib DIR_OR_BAG -o OUT.onnx`: static INT8 QDQ model.

Calibration frames come from a directory of PNG/JPG images, synthetic shards (when the renderer's
shard reader exists), or a rosbag2 (``.mcap`` / ``.db3`` file or bag directory; image topic
given with ``--topic`` or auto-detected as `dvc-perception replay` does: a colour or mono Image
or a CompressedImage topic, never depth). Frames are preprocessed with the model's own metadata
(input size, mean, std).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dvc_perception.errors import ConfigError, InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `dvc-perception quantize`."""
    parser.add_argument("model", type=Path, help="float ONNX model (with dvc_perception metadata)")
    parser.add_argument(
        "--calib", type=Path, required=True,
        help="calibration frames: image directory, synthetic shard directory, or rosbag2",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output QDQ .onnx")
    parser.add_argument("--max-frames", type=int, default=128, help="calibration frames used")
    parser.add_argument(
        "--method", choices=("minmax", "entropy", "percentile"), default="minmax",
        help="activation range calibration",
    )
    parser.add_argument(
        "--target", choices=("tensorrt", "onnxruntime-cpu"), default="tensorrt",
        help="tensorrt: symmetric int8 activations (TensorRT and ORT); onnxruntime-cpu: "
        "uint8 activations, ORT's fast x86 path, not parseable by TensorRT",
    )
    parser.add_argument(
        "--op-types", default=None,
        help="comma-separated ONNX op types to quantise (default: the conv backbone)",
    )
    parser.add_argument("--topic", default=None, help="image topic when --calib is a rosbag "
                        "(default: auto-detected like `replay`)")  # fmt: skip
    parser.add_argument(
        "--per-tensor", action="store_true", help="per-tensor instead of per-channel weights"
    )
    parser.add_argument(
        "--check-tensorrt", default=None,
        help="TensorRT versions whose ONNX parser support is checked ('' to skip; default "
        "'8.6,10' for --target tensorrt, none for onnxruntime-cpu)",
    )


def run(args: argparse.Namespace) -> int:
    """Quantise; print what was done and the TensorRT support check."""
    from dvc_perception.engines.calibrate import model_calibration_inputs
    from dvc_perception.engines.export import read_model_metadata
    from dvc_perception.engines.quantize import DEFAULT_OP_TYPES, model_input_shape, quantize_onnx
    from dvc_perception.engines.trt_support import check_tensorrt_support

    if args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    meta = read_model_metadata(args.model)
    shape = model_input_shape(args.model)
    source = _bag_frames(args.calib, args.topic) if _is_bag(args.calib) else args.calib
    frames = model_calibration_inputs(meta, source, input_shape=shape,
                                      max_frames=args.max_frames)
    op_types = (
        tuple(t.strip() for t in args.op_types.split(",") if t.strip())
        if args.op_types else DEFAULT_OP_TYPES
    )
    report = quantize_onnx(
        args.model, args.output, frames, method=args.method, per_channel=not args.per_tensor,
        op_types=op_types, target=args.target,
    )
    print(
        f"wrote {report.output}: {report.num_quantize_nodes} QuantizeLinear, "
        f"{report.num_dequantize_nodes} DequantizeLinear, {report.method} calibration over "
        f"{report.num_frames} frames from {args.calib} (target {report.target})"
    )
    status = 0
    check = args.check_tensorrt
    if check is None:
        check = "8.6,10" if args.target == "tensorrt" else ""
    for version in [v.strip() for v in check.split(",") if v.strip()]:
        support = check_tensorrt_support(report.output, version)
        verdict = "ok" if support.ok else f"{len(support.problems)} problem(s)"
        print(f"TensorRT {version} ONNX parser support (table {support.tensorrt_version}): "
              f"{verdict}")
        for p in support.problems:
            print(f"  {p.op_type} {p.node}: {p.reason}")
        status = status or (0 if support.ok else 1)
    return status


def _is_bag(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".mcap", ".db3")
    return (path / "metadata.yaml").is_file()


def _bag_frames(path: Path, topic: str | None) -> Iterator[np.ndarray]:
    """RGB frames decoded from the camera image topic of a rosbag2 (chosen as replay does).

    Raises:
        BagError: no camera image topic, or a message that does not deserialize.
        InputError: an image that does not decode (naming bag, topic, index, record time).
    """
    import sys

    from sensor_msgs.msg import CompressedImage, Image

    from dvc_perception.bag.io import BagReader, deserialize
    from dvc_perception.bag.replay import COMPRESSED_IMAGE_TYPE, choose_image_topic
    from dvc_perception.ros.convert import compressed_msg_to_rgb, image_msg_to_rgb

    with BagReader(path) as reader:
        topics = reader.topics()
        topic, why = choose_image_topic(topics, topic or "", option="--topic")
        print(f"quantize: calibration image topic {topic} ({why})", file=sys.stderr)
        compressed = topics[topic].msgtype == COMPRESSED_IMAGE_TYPE
        decode = compressed_msg_to_rgb if compressed else image_msg_to_rgb
        for k, message in enumerate(reader.messages([topic])):
            msg = deserialize(message, CompressedImage if compressed else Image, k, path)
            try:
                rgb = decode(msg)
            except InputError as err:
                raise InputError(f"bag {path}: message {k} on {topic} (record time "
                                 f"{message.timestamp_ns} ns): {err}") from err  # fmt: skip
            yield rgb

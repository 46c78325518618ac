# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception export CHECKPOINT`: a training checkpoint -> ONNX (opset 17) + metadata.

Writes ``<out>.onnx`` (static input shape, metadata in the model: input size, normalisation,
object ids, 3D keypoints, symmetries, provenance) and ``<out>.pt`` (the state dict the torch
backend loads). Default output: ``models/pose_<objects>.onnx``, ``models/depth.onnx`` or
``models/detector_<objects>.onnx`` (task "detector": centre probabilities, box sizes and offsets
per class, decoded by `pipeline.detection.decode_detections`). Several detector checkpoints
(``export A/best.pt B/best.pt ...``) are exported as one ensemble graph that outputs their mean
(`models.detector_net.DetectorEnsembleForExport`). A box verifier (``train verify``) becomes
``models/verifier_<objects>.onnx`` (task "verifier": crops (16, 3, S, S) -> ``class_prob``
(16, 1 + O), a static batch of 16 that the pipeline pads; ``input_kind: zoom_crop`` and its
``crop_scale``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `export`."""
    parser.add_argument("checkpoint", nargs="+",
                        help="best.pt / last.pt of a `dvc-perception train` run; several "
                             "detector checkpoints of one configuration: one ensemble model "
                             "(the mean of their outputs)")
    parser.add_argument("--out", help="output .onnx path (default: models/<name>.onnx)")
    parser.add_argument("--no-torch-weights", action="store_true",
                        help="skip <out>.pt (the torch backend's weights; ONNX backends and "
                             "TensorRT do not need it)")
    parser.add_argument("--opset", type=int, default=17,
                        help="ONNX opset (default 17, the highest TensorRT 8.6 parses)")


def run(args: argparse.Namespace) -> int:
    """Export and print what was written."""
    from dvc_perception.engines.export import read_model_metadata
    from dvc_perception.train.checkpoints import (
        export_checkpoint,
        export_detector_ensemble,
        load_checkpoint,
    )

    first = args.checkpoint[0]
    out = args.out
    if out is None:
        ckpt = load_checkpoint(first)
        if ckpt["model_kind"] == "keypoint":
            ids = [str(o["object_id"]) for o in ckpt.get("objects", [])]
            name = "pose_" + "_".join(ids) if len(ids) <= 3 else f"pose_{len(ids)}_objects"
        elif ckpt["model_kind"] in ("detector", "verifier"):
            ids = [str(i) for i in ckpt["model_config"].get("object_ids", [])]
            kind = str(ckpt["model_kind"])
            name = (f"{kind}_" + "_".join(ids) if len(ids) <= 3
                    else f"{kind}_{len(ids)}_objects")
        else:
            name = "depth"
        out = str(Path("models") / f"{name}.onnx")
    if len(args.checkpoint) > 1:
        path = export_detector_ensemble(args.checkpoint, out, command=list(sys.argv),
                                        opset=args.opset,
                                        torch_weights=not args.no_torch_weights)
    else:
        path = export_checkpoint(first, out, command=list(sys.argv), opset=args.opset,
                                 torch_weights=not args.no_torch_weights)
    meta = read_model_metadata(path)
    size_mb = path.stat().st_size / 1e6
    extra = "" if args.no_torch_weights else f" and {path.with_suffix('.pt')}"
    print(f"wrote {path} ({size_mb:.2f} MB, task {meta.task}, input {meta.input_size}, "
          f"objects {list(meta.object_ids)}){extra}")
    return 0

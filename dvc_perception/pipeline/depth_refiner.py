# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The learned depth refiner through the engines layer.

`export_refiner` writes the ONNX model with its metadata; `DepthRefiner` runs it (ONNX Runtime,
CPU) and is what `MultiviewDepth` hands to `MotionDepthEstimator`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.errors import ConfigError, EngineUnavailableError, ModelSpecError
from dvc_perception.motion_depth.learned_refiner import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    TASK,
    classical_inputs,
)

#: The node parameter that names the model file (in error messages).
PARAMETER = "pipeline.multiview.refiner_model"


class _ExportWrapper:
    """Builds the torch module whose forward is `export_forward` (for `torch.onnx.export`)."""

    @staticmethod
    def wrap(net: Any) -> Any:
        from torch import nn

        class Export(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: Any) -> Any:
                return self.net.export_forward(x)

        return Export()


def export_refiner(net: Any, path: str | os.PathLike[str], width: int, height: int,
                   provenance: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Export `net` to ONNX (opset 17) for (1, 4, height, width) inputs, with metadata."""
    import torch

    from dvc_perception.engines.export import export_onnx

    if width % 4 or height % 4:
        raise ConfigError(f"refiner input size must be multiples of 4, got {width}x{height}")
    meta = {
        "dvc_format": 1,
        "task": TASK,
        "input_size": [width, height],
        "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "provenance": provenance,
        "architecture": {"factory": "dvc_perception.models.depth_refiner:build_net",
                         "kwargs": {"hidden": net.hidden, "iterations": net.iterations}},
        "input_format": "float32 (1, 4, H, W): learned_refiner.classical_inputs (grey "
                        "normalised, log depth - median (0 unknown), known, confidence)",
        "outputs": {"log_depth": "(1, 1, H, W) log depth - the classical median",
                    "confidence": "(1, 1, H, W) in [0, 1]: P(|log error| < 0.1)"},
        "depth_unit": "m",
        **(extra or {}),
    }
    example = (torch.zeros(1, 4, height, width),)
    with warnings.catch_warnings():
        # the 3x3 neighbourhood slices of the convex upsampling cannot be constant-folded
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        return export_onnx(_ExportWrapper.wrap(net), example, path, input_names=INPUT_NAMES,
                           output_names=OUTPUT_NAMES, metadata=meta)


class DepthRefiner:
    """An exported refiner run through the engines layer (ONNX Runtime, CPU, one thread).

    Raises `ConfigError` naming the path when the file is missing, unreadable or not a refiner.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 1) -> None:
        from dvc_perception.engines.export import read_model_metadata
        from dvc_perception.engines.load import load_engine

        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ConfigError(f"{PARAMETER}: model file {str(self.path)!r} does not exist")
        try:
            meta = read_model_metadata(self.path)
            if meta.task != TASK:
                raise ModelSpecError(f"task is {meta.task!r}, expected {TASK!r}")
            self.engine = load_engine(self.path, backend="onnxruntime", device="cpu",
                                      options={"intra_op_num_threads": threads,
                                               "inter_op_num_threads": 1,
                                               "allow_spinning": False})
        except (ModelSpecError, EngineUnavailableError) as err:
            raise ConfigError(f"{PARAMETER}: cannot use {str(self.path)!r}: {err}") from err
        self.width, self.height = meta.input_size

    def refine(self, grey: np.ndarray, depth: np.ndarray, confidence: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Refined (depth (h, w) float32 m, confidence (h, w) float32 in [0, 1]).

        Inputs as `classical_inputs`, at any size (resized to the model's: area for grey,
        nearest for the rest; the outputs back by nearest). Without a known classical pixel the
        depth is all NaN and the confidence 0.
        """
        import cv2

        h, w = grey.shape
        size = (self.width, self.height)
        if (w, h) != size:
            grey_in = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
            depth_in = cv2.resize(depth.astype(np.float32), size,
                                  interpolation=cv2.INTER_NEAREST)
            conf_in = cv2.resize(confidence.astype(np.float32), size,
                                 interpolation=cv2.INTER_NEAREST)
        else:
            grey_in, depth_in, conf_in = grey, depth, confidence
        x, median = classical_inputs(grey_in, depth_in, conf_in)
        if not np.isfinite(median):
            return np.full((h, w), np.nan, np.float32), np.zeros((h, w), np.float32)
        out = self.engine.run({INPUT_NAMES[0]: x[None]})
        depth_out = np.exp(out[OUTPUT_NAMES[0]][0, 0] + median).astype(np.float32)
        conf_out = out[OUTPUT_NAMES[1]][0, 0].astype(np.float32)
        if (w, h) != size:
            depth_out = cv2.resize(depth_out, (w, h), interpolation=cv2.INTER_NEAREST)
            conf_out = cv2.resize(conf_out, (w, h), interpolation=cv2.INTER_NEAREST)
        return depth_out, conf_out

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""A small learned recurrent depth refiner for the classical depth (DRO's idea, depth only).

The classical estimator (`estimator`) gives a fused inverse depth that is accurate where the
image has texture and missing or noisy elsewhere. `DepthRefinerNet` densifies and cleans it:
from the grey image, the classical depth (as log depth relative to the frame's median, 0 where
unknown), its validity and its confidence, a shared ConvGRU at 1/4 resolution makes `iterations`
alternate updates, each predicting an increment of normalised log depth (DRO: learned updates in
place of explicit gradients, no large cost volume), convexly upsampled (RAFT) to the input
resolution, plus a per-pixel confidence (the probability that the depth is within about 10 %).
DRO also updates the relative poses; here the classical window bundle adjustment has already
adjusted them (`pose_refine`), so the refiner updates depth only.

It never invents scale: it only sees log depth minus the median of the frame's classical log
depth, and `refine_depth` adds that median back, so multiplying the classical depth by s
multiplies the refined depth by s exactly.

`DepthRefiner` runs an exported ONNX model through the engines layer (`engines.load_engine`,
ONNX Runtime on the CPU); `tools/train_depth_refiner.py` trains and exports it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.errors import ConfigError, EngineUnavailableError, ModelSpecError

#: ONNX metadata ``task`` of a refiner model.
TASK = "depth_refiner"
INPUT_NAMES = ("inputs",)
OUTPUT_NAMES = ("log_depth", "confidence")
#: The classical relative depth std at which the input confidence reaches 0 (`classical_inputs`).
INPUT_MAX_RELATIVE_STD = 0.5


def classical_inputs(grey: np.ndarray, depth: np.ndarray, confidence: np.ndarray
                     ) -> tuple[np.ndarray, float]:
    """The refiner's input (4, h, w) float32 and the median log depth it is relative to.

    Args:
        grey: (h, w) float32 in [0, 1].
        depth: (h, w) classical depth [m], NaN or <= 0 where unknown.
        confidence: (h, w) classical confidence in [0, 1] (0 where unknown).

    Channels: grey normalised to zero mean and unit std over the frame; log depth minus its
    median over the known pixels (0 where unknown); known (1/0); confidence (0 where unknown).
    Without a known pixel the median is NaN (nothing to refine).
    """
    g = np.asarray(grey, np.float32)
    g = (g - g.mean()) / max(float(g.std()), 1e-3)
    d = np.asarray(depth, np.float32)
    known = np.isfinite(d) & (d > 0) & (np.asarray(confidence) > 0)
    if not known.any():
        return np.zeros((4, *g.shape), np.float32), float("nan")
    log_d = np.log(np.where(known, d, 1.0))
    median = float(np.median(log_d[known]))
    rel = np.where(known, log_d - median, 0.0)
    conf = np.where(known, np.clip(confidence, 0.0, 1.0), 0.0)
    return np.stack([g, rel, known, conf]).astype(np.float32), median


def fused_confidence(inv_depth: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """(h, w) float32 input confidence of a fused inverse depth [1/m] and its variance.

    ``1 - relative std / INPUT_MAX_RELATIVE_STD``, clipped to [0, 1]; 0 where unknown.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_std = np.sqrt(variance) / inv_depth
        c = 1.0 - rel_std / INPUT_MAX_RELATIVE_STD
    return np.where(np.isfinite(c) & (inv_depth > 0), np.clip(c, 0.0, 1.0), 0.0).astype(
        np.float32)


def build_net(hidden: int = 16, context: int = 16, iterations: int = 4) -> Any:
    """A `DepthRefinerNet` (torch is imported only here and in `DepthRefinerNet`)."""
    return _net_class()(hidden=hidden, context=context, iterations=iterations)


def _net_class() -> Any:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ConvGRU(nn.Module):
        """3x3 convolutional GRU cell."""

        def __init__(self, hidden: int, inp: int) -> None:
            super().__init__()
            self.zr = nn.Conv2d(hidden + inp, 2 * hidden, 3, padding=1)
            self.q = nn.Conv2d(hidden + inp, hidden, 3, padding=1)

        def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            z, r = torch.sigmoid(self.zr(torch.cat([h, x], 1))).chunk(2, 1)
            q = torch.tanh(self.q(torch.cat([r * h, x], 1)))
            return (1 - z) * h + z * q

    class DepthRefinerNet(nn.Module):
        """(B, 4, H, W) inputs (`classical_inputs`) -> per-iteration normalised log depth.

        H and W multiples of 4. `forward` returns (log depth (B, iterations, H, W), confidence
        (B, 1, H, W) in [0, 1]); `export_forward` (the ONNX graph) only the last iteration's
        log depth (B, 1, H, W) and the confidence. A small full-resolution head corrects the
        last iteration's depth and gives the confidence. The increment heads start at zero, so an
        untrained net returns its input's depth where that is known (0, the median, elsewhere).
        """

        def __init__(self, hidden: int = 16, context: int = 16, iterations: int = 4) -> None:
            super().__init__()
            self.iterations = iterations
            self.hidden = hidden
            self.enc = nn.Sequential(
                nn.Conv2d(4, 16, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            )
            self.to_hidden = nn.Conv2d(32, hidden, 3, padding=1)
            self.to_context = nn.Conv2d(32, context, 3, padding=1)
            self.motion = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.gru = ConvGRU(hidden, context + 8)
            self.delta = nn.Sequential(nn.Conv2d(hidden, 16, 3, padding=1), nn.ReLU(),
                                       nn.Conv2d(16, 1, 3, padding=1))
            self.up_mask = nn.Sequential(nn.Conv2d(hidden, 32, 3, padding=1), nn.ReLU(),
                                         nn.Conv2d(32, 9 * 16, 1))
            self.fine = nn.Sequential(nn.Conv2d(5, 12, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(12, 2, 3, padding=1))
            for head in (self.delta[-1], self.fine[-1]):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

        @staticmethod
        def _upsample(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            """Convex 4x upsampling of (B, 1, h, w) with (B, 144, h, w) weight logits."""
            B, _, h, w = d.shape
            p = F.pad(d, (1, 1, 1, 1), mode="replicate")
            nb = torch.cat([p[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)], 1)
            m = torch.softmax(mask.view(B, 9, 16, h, w), dim=1)
            up = (m * nb.unsqueeze(2)).sum(1)  # (B, 16, h, w)
            up = up.view(B, 4, 4, h, w).permute(0, 3, 1, 4, 2)
            return up.reshape(B, 1, 4 * h, 4 * w)

        def forward(self, x: torch.Tensor, every_iteration: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor]:
            rel, known = x[:, 1:2], x[:, 2:3]
            f = self.enc(x)
            h = torch.tanh(self.to_hidden(f))
            ctx = torch.relu(self.to_context(f))
            k4 = F.avg_pool2d(known, 4)
            d0 = F.avg_pool2d(rel * known, 4) / k4.clamp(min=1e-3)  # mean of the known pixels
            d = d0
            outs = []
            for k in range(self.iterations):
                mf = self.motion(torch.cat([d, d0, k4], 1))
                h = self.gru(h, torch.cat([ctx, mf], 1))
                d = d + self.delta(h)
                if every_iteration or k == self.iterations - 1:
                    mask = self.up_mask(h)
                    # known pixels keep their own detail: the coarse update is added to them
                    up, d0_up = self._upsample(d, mask), self._upsample(d0, mask)
                    outs.append(known * (rel + up - d0_up) + (1 - known) * up)
            fine = self.fine(torch.cat([outs[-1], x], 1))
            outs[-1] = outs[-1] + fine[:, :1]
            confidence = torch.sigmoid(fine[:, 1:2] + 2.0 * known - 1.0)
            return torch.cat(outs, 1), confidence

        def export_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.forward(x, every_iteration=False)

    return DepthRefinerNet


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
        "architecture": {"factory": "dvc_perception.motion_depth.learned_refiner:build_net",
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
            raise ConfigError(f"refiner_model: model file {str(self.path)!r} does not exist")
        try:
            meta = read_model_metadata(self.path)
            if meta.task != TASK:
                raise ModelSpecError(f"task is {meta.task!r}, expected {TASK!r}")
            self.engine = load_engine(self.path, backend="onnxruntime", device="cpu",
                                      options={"intra_op_num_threads": threads,
                                               "inter_op_num_threads": 1,
                                               "allow_spinning": False})
        except (ModelSpecError, EngineUnavailableError) as err:
            raise ConfigError(f"refiner_model: cannot use {str(self.path)!r}: {err}") from err
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

"""The learned depth refiner's input contract (numpy only; DRO's idea, depth only).

The classical estimator (`estimator`) gives a fused inverse depth that is accurate where the
image has texture and missing or noisy elsewhere. A small learned recurrent refiner
(`models.depth_refiner`: a shared ConvGRU at 1/4 resolution, learned updates of normalised log
depth in place of explicit gradients, convex upsampling, a confidence head) densifies and cleans
it. DRO also updates the relative poses; here the classical window bundle adjustment has already
adjusted them (`pose_refine`), so the refiner updates depth only.

This module is what training and serving share: `classical_inputs` (the network's input and
the median its log depth is relative to: the refiner never sets the scale, multiplying the
classical depth by s multiplies the refined depth by s exactly), `fused_confidence`, and the
ONNX names. `pipeline.depth_refiner.DepthRefiner` runs an exported model through the engines
layer and is handed to `MotionDepthEstimator`; `tools/train_depth_refiner.py` trains it.
"""

from __future__ import annotations

import numpy as np

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

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Object detector: a small CenterNet-style FCN that finds every instance of every object class.

The first stage of the two-stage path: it sees the whole frame letterboxed to the network input
(default 320x240, W x H; `engines.preprocess.Letterbox`), and each detected box then becomes an
object-centred zoom crop of the full-resolution frame (`ZoomCrop.from_box`) for the keypoint
network. Input: (B, 3, H, W) RGB in [0, 1]; normalisation (ImageNet mean / std) is inside the
graph. Outputs at stride 4 (h, w = H/4, W/4; 60x80 cells for 320x240), as `DetectorNetOutput`:

- ``centre_logits`` (B, O, h, w): one centre heatmap per object class (sigmoid: the probability
  that an instance's centre falls in the cell),
- ``size`` (B, 2, h, w): box (width, height) [input px], ``exp`` of a predicted log-size whose
  exponent is clamped to `LOG_SIZE_RANGE` (never overflows, also in float16 engines),
- ``offset`` (B, 2, h, w): (x, y) sub-cell position of the centre [cells], in (0, 1) by a
  sigmoid.

Pixel convention (the keypoint net's): pixel centres at integer coordinates, heatmap cell j
covers input pixel centres ``4j .. 4j+3`` (its centre at ``4j + 1.5``). A centre at cell j with
offset f is at input px ``(j + f) * 4 - 0.5``; `pipeline.detection.decode_detections` turns the
maps into boxes and `train.detection.detection_targets` builds the matching targets.

Architecture: the shared conv/BN/ReLU `Encoder` to stride 16, a nearest-upsampling FPN decoder
back to stride 4 (as `KeypointNet`), 1x1 heads; about 0.9 GFLOP at 320x240
(`count_conv_flops`), no downloaded weights. The centre head's bias starts at -2.19 (a prior of
0.1, CenterNet), so the focal loss does not start swamped by the background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from dvc_perception.errors import ConfigError
from dvc_perception.models.blocks import build_fpn_backbone, encode_image, run_in_float32
from dvc_perception.models.keypoint_net import HEATMAP_STRIDE

#: Output stride of every head (the keypoint net's heatmap stride).
DETECTOR_STRIDE = HEATMAP_STRIDE
#: Clamp of the predicted log-size (box side [input px] = exp of it): exp(10) ~ 2.2e4 px fits
#: float16 (max 65504), exp(-2) ~ 0.14 px is below any real box.
LOG_SIZE_RANGE = (-2.0, 10.0)
#: Initial centre-head bias: sigmoid(-2.19) ~ 0.1 (CenterNet's prior).
CENTRE_PRIOR_BIAS = -2.19


@dataclass(frozen=True)
class DetectorNetConfig:
    """Architecture of `DetectorNet`.

    Attributes:
        object_ids: ids of the object classes the detector knows, in output order (O of them).
        input_width: network input width [px], a multiple of 16 (>= 32).
        input_height: network input height [px], a multiple of 16 (>= 32).
        widths: encoder channels at strides 2, 4, 8, 16.
        blocks: residual blocks per encoder stage (>= 0 each).
        decoder_channels: channels of the stride-8 and stride-4 decoder maps.
    """

    object_ids: tuple[str, ...] = ("demo",)
    input_width: int = 320
    input_height: int = 240
    widths: tuple[int, int, int, int] = (16, 32, 64, 96)
    blocks: tuple[int, int, int, int] = (0, 1, 1, 1)
    decoder_channels: tuple[int, int] = (64, 48)

    def __post_init__(self) -> None:
        ids = tuple(self.object_ids)
        if (
            not ids
            or len(set(ids)) != len(ids)
            or not all(isinstance(i, str) and i for i in ids)
        ):
            raise ConfigError(
                f"object_ids: expected unique non-empty string ids, got {self.object_ids!r}"
            )
        for name in ("input_width", "input_height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 32 or value % 16:
                raise ConfigError(f"{name}: expected a multiple of 16 >= 32, got {value!r}")
        if len(self.widths) != 4 or len(self.blocks) != 4 or len(self.decoder_channels) != 2:
            raise ConfigError(
                f"widths and blocks need 4 entries, decoder_channels 2; got widths "
                f"{self.widths}, blocks {self.blocks}, decoder_channels {self.decoder_channels}"
            )
        if any(int(c) < 1 for c in (*self.widths, *self.decoder_channels)):
            raise ConfigError(
                f"widths and decoder_channels: expected positive channel counts, got "
                f"{self.widths} and {self.decoder_channels}"
            )
        if any(int(n) < 0 for n in self.blocks):
            raise ConfigError(f"blocks: expected counts >= 0, got {self.blocks}")

    @property
    def num_objects(self) -> int:
        """O, the number of object classes."""
        return len(self.object_ids)

    @property
    def output_size(self) -> tuple[int, int]:
        """(w, h) cells of the stride-4 output maps at the configured input size."""
        return self.input_width // DETECTOR_STRIDE, self.input_height // DETECTOR_STRIDE


class DetectorNetOutput(NamedTuple):
    """Outputs of `DetectorNet` (see the module docstring for shapes and units)."""

    centre_logits: Tensor
    size: Tensor
    offset: Tensor


class DetectorNet(nn.Module):
    """CenterNet-style multi-class detector: centre heatmaps, box sizes, sub-cell offsets.

    Args:
        config: architecture; see `DetectorNetConfig`.
    """

    def __init__(self, config: DetectorNetConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        d8, d4 = config.decoder_channels
        build_fpn_backbone(self, w, config.blocks, (d8, d4))
        self.centre_head = nn.Conv2d(d4, config.num_objects, 1)
        self.size_head = nn.Conv2d(d4, 2, 1)
        self.offset_head = nn.Conv2d(d4, 2, 1)
        nn.init.normal_(self.centre_head.weight, std=0.01)
        nn.init.constant_(self.centre_head.bias, CENTRE_PRIOR_BIAS)
        # Start at a plausible box side: a quarter of the shorter input side.
        typical = 0.25 * min(config.input_width, config.input_height)
        nn.init.normal_(self.size_head.weight, std=0.01)
        nn.init.constant_(self.size_head.bias, math.log(typical))
        nn.init.normal_(self.offset_head.weight, std=0.01)
        nn.init.zeros_(self.offset_head.bias)

    def forward(self, image: Tensor) -> DetectorNetOutput:
        """Predict centre heatmaps, box sizes and centre offsets.

        Args:
            image: (B, 3, H, W) RGB in [0, 1]. H x W is the configured input size; training may
                feed other sizes that are multiples of 16 (the network is fully convolutional).

        Returns:
            `DetectorNetOutput`; shapes in the module docstring.

        Raises:
            ShapeError: not (B, 3, H, W) with H and W multiples of 16.
        """
        _, f4, f8, f16 = encode_image(self, image)
        x = self.up4(self.up8(f16, f8), f4)
        return run_in_float32(self._heads, x)

    def _heads(self, x: Tensor) -> DetectorNetOutput:
        """The 1x1 heads on the stride-4 features x (B, C, h, w)."""
        lo, hi = LOG_SIZE_RANGE
        return DetectorNetOutput(
            centre_logits=self.centre_head(x),
            size=torch.exp(torch.clamp(self.size_head(x), lo, hi)),
            offset=torch.sigmoid(self.offset_head(x)),
        )


class DetectorNetForExport(nn.Module):
    """What the exported ONNX graph computes: image -> (centre_prob, size, offset).

    Output names (in order): ``centre_prob`` (B, O, H/4, W/4) = sigmoid of the centre logits,
    ``size`` (B, 2, H/4, W/4) input px, ``offset`` (B, 2, H/4, W/4) cells; exactly what
    `pipeline.detection.decode_detections` takes (one batch element at a time).
    """

    output_names = ("centre_prob", "size", "offset")

    def __init__(self, net: DetectorNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Run: image (B, 3, H, W) RGB in [0, 1] -> (centre_prob, size, offset)."""
        out = self.net(image)
        return torch.sigmoid(out.centre_logits), out.size, out.offset


class DetectorEnsembleForExport(nn.Module):
    """Several trained detectors as one exported graph: the mean of their outputs.

    Same input and outputs as `DetectorNetForExport` (``centre_prob``, ``size``, ``offset``), so
    everything downstream (`pipeline.detection.decode_detections`, the engines, INT8
    calibration) is unchanged. Detectors trained on renders vary a lot from one training run to
    the next on real images; their mean varies less (benchmarks/RESULTS.md, issue 19). Costs
    one detector run per member.
    """

    output_names = DetectorNetForExport.output_names

    def __init__(self, members: list[DetectorNetForExport]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 detectors, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Run: image (B, 3, H, W) RGB in [0, 1] -> the members' mean of each output."""
        outs = [m(image) for m in self.members]
        n = float(len(outs))
        return tuple(torch.stack([o[i] for o in outs]).sum(0) / n  # type: ignore[return-value]
                     for i in range(3))

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Box verifier: a small CNN that says which object class (or background) a zoom crop shows.

The optional second look of the two-stage path (issue 19). The whole-frame detector at 320x240
ranks its own candidates poorly on real images: the true box is among an object's top 10 far
more often than it is first (benchmarks/RESULTS.md). Each candidate box becomes a zoom crop of
the **full-resolution** frame (`engines.preprocess.ZoomCrop.from_box`, side = ``crop_scale`` x
the box's longer side, at ``input_size`` x ``input_size``), and this network classifies it;
`pipeline.network.NetworkDetector` re-scores each box by the probability of its own class.

Input: (B, 3, S, S) RGB in [0, 1] (S = ``input_size``, default 64); normalisation (ImageNet mean
/ std) is inside the graph. Output: (B, 1 + O) logits; column 0 is background, column 1 + o is
``object_ids[o]``. The exported graph (`VerifierNetForExport`) outputs their softmax,
``class_prob``.

Architecture: a 3x3 stem, then 4 stages of two 3x3 ConvBNReLU (the first with stride 2), global
average pooling, dropout, one linear layer; about 56 MMAC per 64x64 crop at the default widths.
Plain conv / BN / ReLU / pooling / Gemm: every op builds in TensorRT, FP16 and INT8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dvc_perception.errors import ConfigError, ShapeError
from dvc_perception.models.blocks import ConvBNReLU

#: ImageNet statistics, applied inside the graph (the exported model takes RGB in [0, 1]).
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VerifierNetConfig:
    """Architecture of `VerifierNet`.

    Attributes:
        object_ids: ids of the object classes, in output order (O of them; output column
            1 + o).
        input_size: side S of the square crop [px], a multiple of 16 (>= 32).
        widths: channels of the stem and of the 4 stride-2 stages.
        dropout: dropout before the linear layer (training only).
    """

    object_ids: tuple[str, ...] = ("demo",)
    input_size: int = 64
    widths: tuple[int, int, int, int, int] = (24, 32, 64, 128, 192)
    dropout: float = 0.2

    def __post_init__(self) -> None:
        ids = tuple(self.object_ids)
        if not ids or len(set(ids)) != len(ids) or not all(isinstance(i, str) and i for i in ids):
            raise ConfigError(
                f"object_ids: expected unique non-empty string ids, got {self.object_ids!r}"
            )
        size = self.input_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % 16:
            raise ConfigError(f"input_size: expected a multiple of 16 >= 32, got {size!r}")
        if len(self.widths) != 5 or any(int(w) < 1 for w in self.widths):
            raise ConfigError(f"widths: expected 5 positive channel counts, got {self.widths}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"dropout: expected in [0, 1), got {self.dropout}")

    @property
    def num_classes(self) -> int:
        """1 + O: background and the object classes."""
        return 1 + len(self.object_ids)


class VerifierNet(nn.Module):
    """Crop classifier: (B, 3, S, S) RGB in [0, 1] -> (B, 1 + O) logits (0 = background).

    Args:
        config: architecture; see `VerifierNetConfig`.
    """

    def __init__(self, config: VerifierNetConfig) -> None:
        super().__init__()
        self.config = config
        w = [int(c) for c in config.widths]
        stages: list[nn.Module] = [ConvBNReLU(3, w[0])]
        for cin, cout in zip(w[:-1], w[1:]):
            stages += [ConvBNReLU(cin, cout, stride=2), ConvBNReLU(cout, cout)]
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Dropout(float(config.dropout)),
                                  nn.Linear(w[-1], config.num_classes))
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1))

    def forward(self, crops: Tensor) -> Tensor:
        """Class logits of `crops` (B, 3, S, S) RGB in [0, 1] -> (B, 1 + O).

        Raises:
            ShapeError: not (B, 3, S, S) with S the configured input size.
        """
        s = self.config.input_size
        if crops.ndim != 4 or tuple(crops.shape[1:]) != (3, s, s):
            raise ShapeError(f"crops: expected (B, 3, {s}, {s}), got {tuple(crops.shape)}")
        return self.head(self.features((crops - self.mean) / self.std))


class VerifierNetForExport(nn.Module):
    """What the exported ONNX graph computes: crops -> ``class_prob`` (B, 1 + O), softmax."""

    output_names = ("class_prob",)

    def __init__(self, net: VerifierNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, crops: Tensor) -> Tensor:
        """Run: crops (B, 3, S, S) RGB in [0, 1] -> class probabilities (B, 1 + O)."""
        return torch.softmax(self.net(crops).float(), dim=1)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Building blocks shared by the networks: plain conv + BN + ReLU, nothing TensorRT lacks.

Every op here maps to one TensorRT layer (Conv, BatchNorm folded into Conv, ReLU, Resize with
nearest neighbour, elementwise Add), so the exported graphs build for FP16 and INT8 unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 - the usual torch alias

from dvc_perception.errors import ShapeError, check_shape

T = TypeVar("T")


class ConvBNReLU(nn.Sequential):
    """3x3 (or k x k) convolution, batch norm, ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: 1 or 2.
        kernel_size: odd kernel size; padding keeps the size (divided by `stride`).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two 3x3 ConvBNReLU with an identity shortcut (same channels, stride 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(channels, channels)
        self.conv2 = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply: x (B, C, H, W) -> (B, C, H, W)."""
        return F.relu(x + self.conv2(self.conv1(x)))


class Encoder(nn.Module):
    """Strided encoder: stem at stride 2, then one stage per further factor of 2.

    Args:
        widths: channels per stage, stage i at stride 2**(i+1); e.g. (16, 32, 64, 128) ends at
            stride 16.
        blocks: residual blocks after the down-sampling conv of each stage (same length).

    Returns from forward: the list of stage outputs, finest first.
    """

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...]) -> None:
        super().__init__()
        stages = []
        c_in = 3
        for width, n_blocks in zip(widths, blocks):
            layers: list[nn.Module] = [ConvBNReLU(c_in, width, stride=2)]
            layers += [ResidualBlock(width) for _ in range(n_blocks)]
            stages.append(nn.Sequential(*layers))
            c_in = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Encode: x (B, 3, H, W) normalised -> stage i features (B, widths[i], H/2^(i+1), ...)."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class UpBlock(nn.Module):
    """Nearest-neighbour x2 up-sampling of a coarse map, 1x1 lateral skip, add, 3x3 conv."""

    def __init__(self, coarse_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(coarse_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.lateral = nn.Sequential(
            nn.Conv2d(skip_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.fuse = ConvBNReLU(out_channels, out_channels)

    def forward(self, coarse: Tensor, skip: Tensor) -> Tensor:
        """Fuse: coarse (B, Cc, h, w), skip (B, Cs, 2h, 2w) -> (B, Cout, 2h, 2w)."""
        up = F.interpolate(self.reduce(coarse), scale_factor=2.0, mode="nearest")
        return self.fuse(F.relu(up + self.lateral(skip)))


class InputNormalization(nn.Module):
    """(x - mean) / std per channel, baked into the graph so every backend sees RGB in [0, 1].

    Args:
        mean: per-channel mean of RGB in [0, 1].
        std: per-channel standard deviation.
    """

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: Tensor) -> Tensor:
        """Normalise: image (B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W)."""
        return (image - self.mean) / self.std


def _autocast_enabled(device_type: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch < 2.4 has no device argument
        return bool(torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled())


def run_in_float32(fn: Callable[[Tensor], T], x: Tensor) -> T:
    """``fn(x)`` in float32, also inside a bfloat16 autocast region (mixed-precision training).

    The output heads and decoders run here: bfloat16's 8-bit mantissa would quantise heatmap
    logits, the soft-argmax's coordinate sums (to 2 px at 320 px) and log-depths. Outside
    autocast (inference, export) this is just ``fn(x)``.

    Args:
        fn: the float32 part of a network.
        x: (B, C, h, w) features, any floating dtype.

    Returns:
        Whatever `fn` returns.
    """
    device_type = x.device.type
    if not _autocast_enabled(device_type):
        return fn(x)
    with torch.autocast(device_type, enabled=False):
        return fn(x.float())


#: ImageNet statistics: the networks normalise their [0, 1] RGB input inside the graph.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_fpn_backbone(module: nn.Module, widths: Sequence[int], blocks: Sequence[int],
                       decoder_channels: tuple[int, int]) -> None:
    """Give `module` the backbone every network here shares.

    Attributes set: ``normalize`` (ImageNet, in the graph), ``encoder`` (strides 2, 4, 8, 16 with
    `widths` channels and `blocks` residual blocks), ``up8`` and ``up4`` (FPN decoder back to
    stride 4 with `decoder_channels`). The names are part of the saved state dicts.
    """
    w = tuple(int(c) for c in widths)
    d8, d4 = decoder_channels
    module.normalize = InputNormalization(IMAGENET_MEAN, IMAGENET_STD)
    module.encoder = Encoder(w, tuple(int(n) for n in blocks))
    module.up8 = UpBlock(w[3], w[2], d8)
    module.up4 = UpBlock(d8, w[1], d4)


def encode_image(module: nn.Module, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Encoder features (f2, f4, f8, f16) of `image` (B, 3, H, W) RGB in [0, 1].

    Raises:
        ShapeError: not (B, 3, H, W) with H and W multiples of 16.
    """
    check_shape(image, "B,3,H,W", name="image")
    in_h, in_w = int(image.shape[2]), int(image.shape[3])
    if in_h % 16 or in_w % 16:
        raise ShapeError(f"image: expected H and W multiples of 16, got {in_h}x{in_w}")
    return module.encoder(module.normalize(image))

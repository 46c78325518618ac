# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Depth network: small encoder-decoder predicting metric depth with focal-length normalisation.

Focal normalisation (as in Metric3D's canonical camera, Yin et al. 2023): an image seen through a
lens of focal f shows objects at depth Z as a camera of focal f0 shows them at Z * f0 / f. The
network therefore predicts the *canonical* depth, the depth a camera of focal `focal0_px` at the
network input resolution would see, and metric depth is

    depth_m = depth_canonical * fx_input_px / focal0_px

where `fx_input_px` is the horizontal focal length of the (resized) network input image. Keeping
the scaling outside the network keeps one image input (simple for every backend and for INT8
calibration); `depth_from_canonical` applies it, and the exported model's metadata carries
`focal0_px`. Training targets are scaled the other way (`depth_to_canonical`), so a scale
augmentation of the image (which changes fx) is exact.

Input (B, 3, H, W) RGB in [0, 1] (default 320x240); output (B, 1, H, W) canonical depth in metres,
at input resolution (stride-2 decoder + bilinear x2). About 1.3 GFLOP at 320x240. An image-level
context path (global average and max pool of the stride-16 features, fed back to every position
and to a per-image log-depth offset) lets the apparent size of known objects set the scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 - the usual torch alias

from dvc_perception.errors import ConfigError, check_shape
from dvc_perception.models.blocks import (
    ConvBNReLU,
    UpBlock,
    build_fpn_backbone,
    encode_image,
    run_in_float32,
)


@dataclass(frozen=True)
class DepthNetConfig:
    """Architecture and output range of `DepthNet`.

    Attributes:
        input_width: network input width [px], a multiple of 16.
        input_height: network input height [px], a multiple of 16.
        focal0_px: canonical focal length at the input resolution [px].
        min_depth_m: smallest canonical depth the output can take [m].
        max_depth_m: largest canonical depth the output can take [m].
        widths: encoder channels at strides 2, 4, 8, 16.
        blocks: residual blocks per encoder stage.
        decoder_channels: channels of the stride-8, -4 and -2 decoder maps.
        global_context: add an image-level path (`ImageContext`: the stride-16 features
            pooled over the image by average and max) that feeds back into every position and
            predicts a per-image log-depth offset. Metric scale is a global property (the demo
            object's apparent size fixes the depth of the planes behind it), which a local
            receptive field cannot see.
    """

    input_width: int = 320
    input_height: int = 240
    focal0_px: float = 300.0
    min_depth_m: float = 0.05
    max_depth_m: float = 20.0
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    blocks: tuple[int, int, int, int] = (0, 1, 1, 2)
    decoder_channels: tuple[int, int, int] = (64, 32, 16)
    global_context: bool = True

    def __post_init__(self) -> None:
        for name in ("input_width", "input_height"):
            value = getattr(self, name)
            if value < 32 or value % 16:
                raise ConfigError(f"{name}: expected a multiple of 16 >= 32, got {value}")
        if not 0 < self.min_depth_m < self.max_depth_m:
            raise ConfigError(
                f"depth range: expected 0 < min < max, got {self.min_depth_m}, {self.max_depth_m}"
            )
        if self.focal0_px <= 0:
            raise ConfigError(f"focal0_px: expected > 0, got {self.focal0_px}")


class DepthNet(nn.Module):
    """Encoder-decoder for canonical metric depth (log-depth head, clamped to the range).

    Args:
        config: architecture; see `DepthNetConfig`.
    """

    def __init__(self, config: DepthNetConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        d8, d4, d2 = config.decoder_channels
        build_fpn_backbone(self, w, config.blocks, (d8, d4))
        self.up2 = UpBlock(d4, w[0], d2)
        self.trunk = ConvBNReLU(d2, d2)
        self.head = nn.Conv2d(d2, 1, 3, padding=1)
        self.context: nn.Module | None = None
        self.scale_head: nn.Module | None = None
        if config.global_context:
            self.context = ImageContext(w[3])
            self.scale_head = nn.Conv2d(w[3], 1, 1)
            nn.init.zeros_(self.scale_head.weight)
            nn.init.zeros_(self.scale_head.bias)
        self.log_min = math.log(config.min_depth_m)
        self.log_max = math.log(config.max_depth_m)
        nn.init.zeros_(self.head.weight)
        # start at the geometric middle of the range: every pixel gets a usable gradient
        nn.init.constant_(self.head.bias, 0.5 * (self.log_min + self.log_max))

    def forward(self, image: Tensor) -> Tensor:
        """Predict canonical depth.

        Args:
            image: (B, 3, H, W) RGB in [0, 1] at the configured input size (training may feed
                crops whose sides are multiples of 16).

        Returns:
            (B, 1, H, W) canonical depth [m] for focal `config.focal0_px`; multiply by
            fx_input_px / focal0_px (`depth_from_canonical`) for metric depth.
        """
        f2, f4, f8, f16 = encode_image(self, image)
        context = None
        if self.context is not None:
            context = self.context(f16)  # (B, C, 1, 1)
            f16 = f16 + context
        x = self.trunk(self.up2(self.up4(self.up8(f16, f8), f4), f2))
        return run_in_float32(lambda feats: self._decode(feats, context), x)

    def _decode(self, x: Tensor, context: Tensor | None) -> Tensor:
        """Stride-2 features x (B, C, h, w), image context (B, C16, 1, 1) or None -> depth."""
        log_depth = self.head(x)
        if context is not None and self.scale_head is not None:
            log_depth = log_depth + self.scale_head(context.to(x.dtype))
        log_depth = log_depth.clamp(self.log_min, self.log_max)
        log_depth = F.interpolate(
            log_depth, scale_factor=2.0, mode="bilinear", align_corners=False
        )
        return torch.exp(log_depth)


class ImageContext(nn.Module):
    """Image-level features: global average and max of (B, C, h, w), 1x1 conv, ReLU: (B, C, 1, 1).

    The max keeps the strongest evidence (e.g. of a known object's size) undiluted by its area.
    ONNX: GlobalAveragePool, GlobalMaxPool, Concat, Conv, Relu (all in TensorRT's parser).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mix = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Summarise x (B, C, h, w) -> (B, C, 1, 1)."""
        pooled = torch.cat([F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)], dim=1)
        return F.relu(self.mix(pooled))


def depth_from_canonical(depth_canonical: Tensor, fx_px: Tensor, focal0_px: float) -> Tensor:
    """Metric depth from the network's canonical depth.

    Args:
        depth_canonical: (B, 1, H, W) or (B, H, W) m, the `DepthNet` output.
        fx_px: (B,) horizontal focal length of the network input image [px].
        focal0_px: the network's canonical focal length [px].

    Returns:
        Metric depth [m], same shape as `depth_canonical`.
    """
    check_shape(fx_px, f"{int(depth_canonical.shape[0])}", name="fx_px")
    scale = (fx_px / focal0_px).reshape(-1, *([1] * (depth_canonical.dim() - 1)))
    return depth_canonical * scale.to(depth_canonical.dtype)


def depth_to_canonical(depth_m: Tensor, fx_px: Tensor, focal0_px: float) -> Tensor:
    """Training target: metric depth (B, [1,] H, W) m -> canonical depth, same shape."""
    check_shape(fx_px, f"{int(depth_m.shape[0])}", name="fx_px")
    scale = (focal0_px / fx_px).reshape(-1, *([1] * (depth_m.dim() - 1)))
    return depth_m * scale.to(depth_m.dtype)

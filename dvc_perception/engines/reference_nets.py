# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Tiny reference networks for testing and benchmarking the engine layer.

They use the same operator families as the real networks (conv, batch norm, ReLU, bilinear
upsampling, a soft-argmax head; an encoder-decoder for depth), so export, quantisation, operator
support and backend agreement are exercised on realistic graphs before the shipped models
exist. They are untrained: weights come from a seeded initialisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

#: ``architecture.factory`` of models exported from these networks (`torch_backend`).
REFERENCE_FACTORY = "dvc_perception.engines.reference_nets:build_reference_net"


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _init_params(module: nn.Module, generator: torch.Generator) -> None:
    """Seeded He-style init for conv weights, small biases, non-trivial batch-norm statistics."""
    for p in module.parameters():
        if p.dim() > 1:
            p.copy_(torch.randn(p.shape, generator=generator) * (2.0 / p[0].numel()) ** 0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    _randomize_bn(module, generator)


def _randomize_bn(module: nn.Module, generator: torch.Generator) -> None:
    """Give batch-norm layers non-trivial statistics so BN folding is really tested."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


class TinyKeypointNet(nn.Module):
    """Heatmap keypoint net with a soft-argmax head.

    Input ``image`` (B, 3, H, W) normalised RGB; outputs ``keypoints`` (B, K, 2) px in input
    pixels (u right, v down, pixel centres at integers) and ``confidence`` (B, K) in (0, 1).
    Heatmaps are predicted at stride 4 and upsampled x2 before the soft-argmax (stride 2).
    """

    def __init__(self, num_keypoints: int = 8, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_keypoints = num_keypoints
        self.encoder = nn.Sequential(
            _conv_bn_relu(3, width, 2),
            _conv_bn_relu(width, width),
            _conv_bn_relu(width, 2 * width, 2),
            _conv_bn_relu(2 * width, 2 * width),
        )
        self.head = nn.Conv2d(2 * width, num_keypoints, 1)
        self.stride = 2
        with torch.no_grad():
            _init_params(self, g)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> keypoints (B, K, 2) px, confidence (B, K)."""
        logits = self.head(self.encoder(image))
        logits = nn.functional.interpolate(
            logits, scale_factor=2.0, mode="bilinear", align_corners=False
        )
        b, k, h, w = logits.shape
        prob = torch.softmax(logits.reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
        xs = (torch.arange(w, dtype=image.dtype) + 0.5) * self.stride - 0.5
        ys = (torch.arange(h, dtype=image.dtype) + 0.5) * self.stride - 0.5
        u = (prob.sum(dim=2) * xs).sum(dim=-1)
        v = (prob.sum(dim=3) * ys).sum(dim=-1)
        confidence = torch.sigmoid(logits.amax(dim=(2, 3)))
        return torch.stack([u, v], dim=-1), confidence


class TinyDepthNet(nn.Module):
    """Encoder-decoder depth net: ``image`` (B, 3, H, W) -> ``depth`` (B, 1, H, W) metres > 0."""

    def __init__(self, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.enc1 = _conv_bn_relu(3, width, 2)
        self.enc2 = _conv_bn_relu(width, 2 * width, 2)
        self.enc3 = _conv_bn_relu(2 * width, 4 * width, 2)
        self.dec2 = _conv_bn_relu(4 * width + 2 * width, 2 * width)
        self.dec1 = _conv_bn_relu(2 * width + width, width)
        self.out = nn.Conv2d(width, 1, 3, padding=1)
        with torch.no_grad():
            _init_params(self, g)

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1, H, W) depth in metres."""
        up = nn.functional.interpolate
        e1 = self.enc1(image)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([up(e3, scale_factor=2.0, mode="bilinear"), e2], dim=1))
        d1 = self.dec1(torch.cat([up(d2, scale_factor=2.0, mode="bilinear"), e1], dim=1))
        logits = self.out(up(d1, scale_factor=2.0, mode="bilinear"))
        return nn.functional.softplus(logits) + 0.1


def build_reference_net(name: str, **kwargs: Any) -> nn.Module:
    """Factory used by `ModelMetadata.architecture` in tests: ``"keypoint"`` or ``"depth"``."""
    if name == "keypoint":
        return TinyKeypointNet(**kwargs)
    if name == "depth":
        return TinyDepthNet(**kwargs)
    from dvc_perception.errors import ConfigError

    raise ConfigError(f"unknown reference net {name!r}; known: ['depth', 'keypoint']")

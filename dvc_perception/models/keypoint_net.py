# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Keypoint network: one small FCN that predicts, for every object it knows, K keypoint heatmaps.

Input: (B, 3, H, W) RGB in [0, 1] at the network input size (default 320x240, W x H; the
pipeline resizes/letterboxes the camera image and scales K the same way). Normalisation is
inside the graph. Outputs at stride 4 (80x60 cells for 320x240):

- ``heatmap_logits`` (B, O, K, H/4, W/4): one heatmap per 3D keypoint per object,
- ``x2d`` (B, O, K, 2) px in input-image coordinates from a local soft-argmax (7x7 cells
  around each heatmap's peak; pixel centres at integer coordinates: cell j covers input pixel
  centre 4*j + 1.5),
- ``weights`` (B, O, K) in (0, 1): per-keypoint confidence (the PnP weights),
- ``mask_logits`` (B, O, H/4, W/4): object mask, and ``objectness`` (B, O) = max mask prob,
- ``coordinates`` (B, O, 3, H/4, W/4) m, only with ``dense_coordinates``: for each stride-4 cell,
  the object-frame point of object o seen at the cell's centre (dense 2D-3D correspondences in
  the manner of CDPN / GDR-Net; meaningful where the mask is on), else None.

`x2d[:, o]` and `weights[:, o]` go straight into `solve_pnp` with object o's 3D keypoints and
the intrinsics of the network input image. Architecture: plain conv/BN/ReLU encoder to stride 16,
a nearest-upsampling FPN decoder back to stride 4, 1x1 heads: about 1.4 GFLOP at 320x240
(`count_conv_flops`), no downloaded weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from dvc_perception.errors import ConfigError
from dvc_perception.models.blocks import (
    ConvBNReLU,
    build_fpn_backbone,
    encode_image,
    run_in_float32,
)
from dvc_perception.models.heads import pool_confidence, soft_argmax_2d

HEATMAP_STRIDE = 4


@dataclass(frozen=True)
class KeypointNetConfig:
    """Architecture of `KeypointNet`.

    Attributes:
        object_ids: ids of the objects the network knows, in output order (O of them).
        num_keypoints: keypoints per object (K, the same for every object).
        input_width: network input width [px], a multiple of 16.
        input_height: network input height [px], a multiple of 16.
        widths: encoder channels at strides 2, 4, 8, 16.
        blocks: residual blocks per encoder stage.
        decoder_channels: channels of the stride-8 and stride-4 decoder maps.
        softargmax_window: side [heatmap cells] of the local soft-argmax window around each
            heatmap's peak (odd), or 0 for a soft-argmax over the whole heatmap.
        dense_coordinates: add the dense object-coordinate head (``coordinates`` output).
        coordinate_scales_m: per object, the length [m] one unit of the coordinate head's raw
            output stands for (the object's radius: raw outputs stay near [-1, 1]); needed with
            `dense_coordinates`, one per object.
    """

    object_ids: tuple[str, ...] = ("demo",)
    num_keypoints: int = 9
    input_width: int = 320
    input_height: int = 240
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    blocks: tuple[int, int, int, int] = (0, 1, 1, 2)
    decoder_channels: tuple[int, int] = (64, 48)
    softargmax_window: int = 7
    dense_coordinates: bool = False
    coordinate_scales_m: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.object_ids or len(set(self.object_ids)) != len(self.object_ids):
            raise ConfigError(f"object_ids: expected unique non-empty ids, got {self.object_ids}")
        if self.num_keypoints < 4:
            raise ConfigError(f"num_keypoints: PnP needs >= 4, got {self.num_keypoints}")
        for name in ("input_width", "input_height"):
            value = getattr(self, name)
            if value < 32 or value % 16:
                raise ConfigError(f"{name}: expected a multiple of 16 >= 32, got {value}")
        if len(self.widths) != 4 or len(self.blocks) != 4 or len(self.decoder_channels) != 2:
            raise ConfigError("widths and blocks need 4 entries, decoder_channels 2")
        win = self.softargmax_window
        if win < 0 or (win and win % 2 == 0):
            raise ConfigError(f"softargmax_window: expected 0 or odd, got {win}")
        scales = self.coordinate_scales_m
        if self.dense_coordinates and (len(scales) != len(self.object_ids) or not all(
                s > 0 for s in scales)):
            raise ConfigError(f"coordinate_scales_m: expected {len(self.object_ids)} positive "
                              f"lengths [m] (one per object), got {scales}")

    @property
    def num_objects(self) -> int:
        """O, the number of objects."""
        return len(self.object_ids)


class KeypointNetOutput(NamedTuple):
    """Outputs of `KeypointNet` (see the module docstring for shapes and units)."""

    heatmap_logits: Tensor
    x2d: Tensor
    weights: Tensor
    mask_logits: Tensor
    objectness: Tensor
    coordinates: Tensor | None = None


class KeypointNet(nn.Module):
    """Multi-object keypoint heatmap FCN with soft-argmax decode.

    Args:
        config: architecture; see `KeypointNetConfig`.
    """

    def __init__(self, config: KeypointNetConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        d8, d4 = config.decoder_channels
        n_kp = config.num_objects * config.num_keypoints
        build_fpn_backbone(self, w, config.blocks, (d8, d4))
        self.trunk = ConvBNReLU(d4, d4)
        self.heatmap_head = nn.Conv2d(d4, n_kp, 1)
        self.confidence_head = nn.Conv2d(d4, n_kp, 1)
        self.mask_head = nn.Conv2d(d4, config.num_objects, 1)
        nn.init.zeros_(self.heatmap_head.weight)
        nn.init.zeros_(self.heatmap_head.bias)
        nn.init.constant_(self.mask_head.bias, -2.0)
        if config.dense_coordinates:
            self.coordinate_head = nn.Conv2d(d4, 3 * config.num_objects, 1)
            scales = torch.tensor(config.coordinate_scales_m, dtype=torch.float32)
            self.register_buffer("coordinate_scales", scales.repeat_interleave(3).view(
                1, -1, 1, 1), persistent=False)  # (1, 3 O, 1, 1): x, y, z of object 0, ...

    def forward(self, image: Tensor) -> KeypointNetOutput:
        """Predict heatmaps, keypoints, weights and masks.

        Args:
            image: (B, 3, H, W) RGB in [0, 1]. H x W is the configured input size; training may
                feed crops of any size that is a multiple of 16 (the network is fully
                convolutional; coordinates are then in the crop).

        Returns:
            `KeypointNetOutput`; shapes in the module docstring.

        Raises:
            ShapeError: not (B, 3, H, W) with H and W multiples of 16.
        """
        _, f4, f8, f16 = encode_image(self, image)
        x = self.trunk(self.up4(self.up8(f16, f8), f4))
        return run_in_float32(self._decode, x)

    def _decode(self, x: Tensor) -> KeypointNetOutput:
        """Heads and soft-argmax on the stride-4 features x (B, C, h, w)."""
        cfg = self.config
        b, _, h, w = (int(n) for n in x.shape)
        o, k = cfg.num_objects, cfg.num_keypoints
        heat = self.heatmap_head(x)
        xy, prob = soft_argmax_2d(heat, HEATMAP_STRIDE, cfg.softargmax_window)
        weights = pool_confidence(self.confidence_head(x), prob)
        mask_logits = self.mask_head(x)
        objectness = torch.sigmoid(mask_logits).reshape(b, o, h * w).amax(dim=-1)
        coordinates = None
        if cfg.dense_coordinates:
            coordinates = (self.coordinate_head(x) * self.coordinate_scales).reshape(b, o, 3, h, w)
        return KeypointNetOutput(
            heatmap_logits=heat.reshape(b, o, k, h, w),
            x2d=xy.reshape(b, o, k, 2),
            weights=weights.reshape(b, o, k),
            mask_logits=mask_logits,
            objectness=objectness,
            coordinates=coordinates,
        )


class KeypointNetForExport(nn.Module):
    """What the exported ONNX graph computes: image -> (x2d, weights, objectness, mask).

    Output names (in order): ``x2d`` (B, O, K, 2) px input image, ``weights`` (B, O, K),
    ``objectness`` (B, O), ``mask`` (B, O, H/4, W/4) probabilities, and with dense coordinates
    ``coordinates`` (B, O, 3, H/4, W/4) m. The soft-argmax is inside the graph, so a pipeline
    only runs the engine and calls `solve_pnp`.
    """

    #: the outputs of every keypoint graph; a dense-coordinate graph adds ``coordinates``
    output_names: tuple[str, ...] = ("x2d", "weights", "objectness", "mask")

    def __init__(self, net: KeypointNet) -> None:
        super().__init__()
        self.net = net
        if net.config.dense_coordinates:
            self.output_names = (*type(self).output_names, "coordinates")

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        """Run: image (B, 3, H, W) RGB in [0, 1] -> the outputs named in `output_names`."""
        out = self.net(image)
        found = (out.x2d, out.weights, out.objectness, torch.sigmoid(out.mask_logits))
        return found if out.coordinates is None else found + (out.coordinates,)

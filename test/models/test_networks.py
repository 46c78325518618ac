# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import pytest
import torch
from torch import nn

from dvc_perception.errors import ConfigError, ShapeError
from dvc_perception.models.depth_net import (
    DepthNet,
    DepthNetConfig,
    depth_from_canonical,
    depth_to_canonical,
)
from dvc_perception.models.flops import count_conv_flops
from dvc_perception.models.keypoint_net import KeypointNet, KeypointNetConfig
from dvc_perception.train.device import cpu_bf16_supported

GFLOP_BUDGET = 2.0e9


def test_flop_counter_matches_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 4, 1, groups=2))
    flops = count_conv_flops(net, torch.zeros(1, 3, 16, 20))
    # conv1: 8x10 outputs x 8 channels x (3*3*3) MACs; conv2: 8x10 x 4 x (4*1*1) MACs
    assert flops == 2 * (80 * 8 * 27 + 80 * 4 * 4)


@pytest.mark.parametrize("n_objects", [1, 3])
def test_keypoint_net_shapes_and_budget(n_objects):
    cfg = KeypointNetConfig(object_ids=tuple(f"o{i}" for i in range(n_objects)), num_keypoints=9)
    net = KeypointNet(cfg).eval()
    x = torch.rand(2, 3, 240, 320)
    out = net(x)
    assert out.heatmap_logits.shape == (2, n_objects, 9, 60, 80)
    assert out.x2d.shape == (2, n_objects, 9, 2)
    assert out.weights.shape == (2, n_objects, 9)
    assert out.mask_logits.shape == (2, n_objects, 60, 80)
    assert out.objectness.shape == (2, n_objects)
    assert ((out.weights > 0) & (out.weights < 1)).all()
    # keypoints lie inside the input image (expectation over cell centres)
    assert (out.x2d[..., 0] >= 1.5).all() and (out.x2d[..., 0] <= 320 - 2.5).all()
    assert count_conv_flops(net, x[:1]) < GFLOP_BUDGET


def test_depth_net_shapes_range_and_budget():
    cfg = DepthNetConfig()
    net = DepthNet(cfg).eval()
    x = torch.rand(2, 3, 240, 320)
    d = net(x)
    assert d.shape == (2, 1, 240, 320)
    assert (d >= cfg.min_depth_m * 0.999).all() and (d <= cfg.max_depth_m * 1.001).all()
    assert count_conv_flops(net, x[:1]) < GFLOP_BUDGET


def test_focal_normalisation_round_trip_and_scaling():
    depth = torch.rand(2, 1, 4, 5, dtype=torch.float64) + 0.5
    fx = torch.tensor([300.0, 600.0], dtype=torch.float64)
    canon = depth_to_canonical(depth, fx, 300.0)
    torch.testing.assert_close(canon[0], depth[0])
    torch.testing.assert_close(canon[1], depth[1] / 2)  # twice the focal: looks twice as near
    torch.testing.assert_close(depth_from_canonical(canon, fx, 300.0), depth)
    with pytest.raises(ShapeError):
        depth_from_canonical(depth, fx[:1], 300.0)


def test_configs_reject_bad_values():
    with pytest.raises(ConfigError, match="input_width"):
        KeypointNetConfig(input_width=100)
    with pytest.raises(ConfigError, match="num_keypoints"):
        KeypointNetConfig(num_keypoints=3)
    with pytest.raises(ConfigError, match="object_ids"):
        KeypointNetConfig(object_ids=("a", "a"))
    with pytest.raises(ConfigError, match="depth range"):
        DepthNetConfig(min_depth_m=2.0, max_depth_m=1.0)
    with pytest.raises(ShapeError, match="image"):
        KeypointNet(KeypointNetConfig())(torch.zeros(1, 3, 100, 128))


def _randomise_heads(net: nn.Module) -> None:
    torch.manual_seed(3)
    for name, module in net.named_modules():
        if "head" in name and isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.05)  # zero-initialised heads give flat maps


@pytest.mark.parametrize("global_context, far_effect", [(True, True), (False, False)])
def test_depth_context_path_carries_information_across_the_image(global_context, far_effect):
    # the metric scale of a scene is a global property; without the image-level path the
    # stride-16 encoder's receptive field (~260 px) cannot carry a change at one corner of a
    # 320x240 input to the opposite corner
    net = DepthNet(DepthNetConfig(global_context=global_context)).eval()
    _randomise_heads(net)
    x = torch.rand(1, 3, 240, 320, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[..., :48, :48] = 1.0 - y[..., :48, :48]
    with torch.no_grad():
        change = (net(x) - net(y))[0, 0, -32:, -32:].abs().max()
    assert (change > 1e-6) == far_effect, float(change)


bf16_cpu = pytest.mark.skipif(
    not cpu_bf16_supported(),
    reason="this CPU has no native bfloat16 (AVX512-BF16/AMX)")


@bf16_cpu
def test_heads_and_decode_stay_float32_under_bf16_autocast():
    # mixed-precision training: convolutions in bfloat16, but the soft-argmax (coordinates up to
    # 320 px, where bfloat16 resolves only ~2 px) and the log-depth run in float32
    kp_net = KeypointNet(KeypointNetConfig(object_ids=("a",), num_keypoints=5)).eval()
    depth_net = DepthNet(DepthNetConfig()).eval()
    _randomise_heads(kp_net)
    x = torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_kp, ref_depth = kp_net(x), depth_net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            kp, depth = kp_net(x), depth_net(x)
    for name in ("heatmap_logits", "x2d", "weights", "mask_logits"):
        assert getattr(kp, name).dtype == torch.float32, name
    assert depth.dtype == torch.float32
    # bfloat16 features move the keypoints a little, never by the ~1-2 px of a bfloat16 sum
    assert (kp.x2d - ref_kp.x2d).abs().median() < 0.3
    assert ((depth - ref_depth).abs() / ref_depth).median() < 0.02

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from dvc_perception.errors import ConfigError, ShapeError
from dvc_perception.models.detector_net import (
    LOG_SIZE_RANGE,
    DetectorNet,
    DetectorNetConfig,
    DetectorNetForExport,
)
from dvc_perception.models.flops import count_conv_flops

SMALL = dict(input_width=64, input_height=48, widths=(8, 16, 24, 32), blocks=(0, 1, 1, 1),
             decoder_channels=(24, 16))


@pytest.mark.parametrize("n_objects", [1, 3])
def test_shapes_ranges_prior_and_budget(n_objects):
    torch.manual_seed(0)
    cfg = DetectorNetConfig(object_ids=tuple(f"o{i}" for i in range(n_objects)))
    net = DetectorNet(cfg).eval()
    x = torch.rand(2, 3, 240, 320)
    with torch.no_grad():
        out = net(x)
    assert out.centre_logits.shape == (2, n_objects, 60, 80)
    assert out.size.shape == (2, 2, 60, 80) and out.offset.shape == (2, 2, 60, 80)
    assert cfg.output_size == (80, 60)
    # the CenterNet prior: every centre starts near probability 0.1
    prob = torch.sigmoid(out.centre_logits)
    assert prob.mean().item() == pytest.approx(0.1, abs=0.02)
    assert ((out.offset > 0) & (out.offset < 1)).all()
    assert (out.size > 0).all() and torch.isfinite(out.size).all()
    assert count_conv_flops(net, x[:1]) < 1.0e9


def test_size_exponent_is_clamped():
    net = DetectorNet(DetectorNetConfig(**SMALL)).eval()
    with torch.no_grad():
        net.size_head.bias.fill_(1e4)
        big = net(torch.rand(1, 3, 48, 64)).size
        net.size_head.bias.fill_(-1e4)
        small = net(torch.rand(1, 3, 48, 64)).size
    torch.testing.assert_close(big, torch.full_like(big, math.exp(LOG_SIZE_RANGE[1])))
    torch.testing.assert_close(small, torch.full_like(small, math.exp(LOG_SIZE_RANGE[0])))
    assert torch.isfinite(big.half()).all()  # a float16 engine does not overflow either


def test_heads_stay_float32_under_bf16_autocast():
    net = DetectorNet(DetectorNetConfig(**SMALL))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.rand(2, 3, 48, 64))
    assert all(t.dtype == torch.float32 for t in out)


def test_config_validation():
    with pytest.raises(ConfigError, match="input_width"):
        DetectorNetConfig(input_width=100)
    with pytest.raises(ConfigError, match="input_height"):
        DetectorNetConfig(input_height=16)
    with pytest.raises(ConfigError, match="object_ids"):
        DetectorNetConfig(object_ids=("a", "a"))
    with pytest.raises(ConfigError, match="object_ids"):
        DetectorNetConfig(object_ids=())
    with pytest.raises(ConfigError, match="widths"):
        DetectorNetConfig(widths=(16, 32, 64))
    with pytest.raises(ConfigError, match="decoder_channels"):
        DetectorNetConfig(decoder_channels=(64, 0))
    with pytest.raises(ConfigError, match="blocks"):
        DetectorNetConfig(blocks=(0, 1, -1, 1))
    with pytest.raises(ShapeError, match="image"):
        DetectorNet(DetectorNetConfig(**SMALL))(torch.zeros(1, 3, 40, 64))
    with pytest.raises(ShapeError, match="image"):
        DetectorNet(DetectorNetConfig(**SMALL))(torch.zeros(1, 1, 48, 64))


def test_onnx_export_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = DetectorNet(DetectorNetConfig(object_ids=("a", "b"), **SMALL))
    # non-trivial batch-norm statistics and heads, so the comparison means something
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 3, 48, 64))
        for head in (net.centre_head, net.size_head, net.offset_head):
            head.weight.normal_(std=0.3)
    model = DetectorNetForExport(net).eval()
    x = torch.rand(2, 3, 48, 64)
    path = tmp_path / "detector.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["image"],
                          output_names=list(DetectorNetForExport.output_names),
                          opset_version=17, dynamo=False,
                          dynamic_axes={"image": {0: "batch"}})
        expected = [t.numpy() for t in model(x)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["centre_prob", "size", "offset"]
    got = session.run(None, {"image": x.numpy()})
    shapes = [(2, 2, 12, 16), (2, 2, 12, 16), (2, 2, 12, 16)]
    for name, g, e, shape in zip(DetectorNetForExport.output_names, got, expected, shapes):
        assert g.shape == shape, name
        np.testing.assert_allclose(g, e, atol=1e-4, rtol=0, err_msg=name)
    assert 0.0 < expected[0].min() and expected[0].max() < 1.0
    assert np.ptp(expected[1]) > 1.0  # the size head varies: a real check of exp / clamp

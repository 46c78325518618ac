# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The learned depth refiner: shapes, scale, ONNX round trip, estimator wiring, bad files.

Untrained networks only (no test depends on training results).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvc_perception.errors import ConfigError
from dvc_perception.models.depth_refiner import build_net
from dvc_perception.motion_depth.estimator import (
    STATUS_OK,
    MotionDepthEstimator,
    MotionDepthSettings,
)
from dvc_perception.motion_depth.keyframes import KeyframeRule
from dvc_perception.motion_depth.learned_refiner import classical_inputs
from dvc_perception.motion_depth.pose_refine import PoseRefineSettings
from dvc_perception.motion_depth.sweep import SweepSettings
from dvc_perception.pipeline.depth_refiner import DepthRefiner, export_refiner

PROVENANCE = {"git_commit": "test", "command": "pytest", "date": "2026-12-06", "data_seed": 0}


def _randomised_net(seed: int = 0):
    """A net whose zero-initialised heads are given random weights (not the identity)."""
    torch.manual_seed(seed)
    net = build_net(hidden=8, context=8, iterations=2)
    with torch.no_grad():
        for head in (net.delta[-1], net.fine[-1]):
            head.weight.normal_(0.0, 0.05)
            head.bias.normal_(0.0, 0.05)
    return net.eval()


def _inputs(h: int, w: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    grey = rng.uniform(0, 1, (h, w)).astype(np.float32)
    depth = rng.uniform(1.0, 3.0, (h, w)).astype(np.float32)
    confidence = rng.uniform(0, 1, (h, w)).astype(np.float32)
    depth[: h // 3] = np.nan  # unknown rows
    confidence[: h // 3] = 0.0
    return grey, depth, confidence


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[str, object]:
    """(path, torch net) of an untrained randomised refiner exported for 160x120 inputs."""
    net = _randomised_net()
    path = tmp_path_factory.mktemp("refiner") / "refiner.onnx"
    export_refiner(net, path, 160, 120, PROVENANCE)
    return str(path), net


def test_shapes_and_a_constant_depth_keeps_its_scale():
    net = build_net(hidden=8, context=8, iterations=3).eval()
    grey, depth, confidence = _inputs(48, 64)
    x, median = classical_inputs(grey, depth, confidence)
    assert x.shape == (4, 48, 64) and np.isfinite(median)
    with torch.no_grad():
        log_depth, conf = net(torch.from_numpy(x[None]))
        last, conf_last = net.export_forward(torch.from_numpy(x[None]))
    assert log_depth.shape == (1, 3, 48, 64) and conf.shape == (1, 1, 48, 64)
    assert last.shape == (1, 1, 48, 64) and torch.allclose(last[:, 0], log_depth[:, -1])
    assert float(conf.min()) >= 0.0 and float(conf.max()) <= 1.0
    # A fresh net starts as the identity on known pixels: a constant 2.5 m stays 2.5 m.
    x, median = classical_inputs(grey, np.full((48, 64), 2.5, np.float32),
                                 np.ones((48, 64), np.float32))
    with torch.no_grad():
        out = net.export_forward(torch.from_numpy(x[None]))[0]
    assert np.allclose(np.exp(out.numpy() + median), 2.5, rtol=1e-5)


def test_the_refined_depth_scales_with_the_classical_depth(tiny_model):
    """Any weights: the net sees log depth minus its median, so it cannot change the scale."""
    refiner = DepthRefiner(tiny_model[0])
    grey, depth, confidence = _inputs(120, 160)
    d1, c1 = refiner.refine(grey, depth, confidence)
    d3, c3 = refiner.refine(grey, 3.0 * depth, confidence)
    assert np.allclose(d3, 3.0 * d1, rtol=1e-4) and np.allclose(c3, c1, atol=1e-6)
    assert not np.allclose(d1[:40], np.exp(np.median(np.log(depth[40:])))), "not identity"


def test_onnx_round_trip_equals_torch(tiny_model):
    path, net = tiny_model
    refiner = DepthRefiner(path)
    grey, depth, confidence = _inputs(120, 160, seed=3)
    x, median = classical_inputs(grey, depth, confidence)
    with torch.no_grad():
        log_depth, conf = net.export_forward(torch.from_numpy(x[None]))
    d, c = refiner.refine(grey, depth, confidence)
    assert np.allclose(np.log(d), log_depth[0, 0].numpy() + median, atol=1e-4)
    assert np.allclose(c, conf[0, 0].numpy(), atol=1e-4)


def test_the_estimator_runs_the_refiner(rendered_scene, tiny_model):
    scene = rendered_scene

    def settings() -> MotionDepthSettings:
        return MotionDepthSettings(
            internal_width=scene.W, refiner_min_confidence=0.5,
            keyframes=KeyframeRule(min_baseline_m=0.12, max_sources=3),
            sweep=SweepSettings(min_depth_m=0.8, max_depth_m=5.0, planes=32),
            pose_refine=PoseRefineSettings(enabled=False))

    classical = MotionDepthEstimator(settings())
    refined = MotionDepthEstimator(settings(), DepthRefiner(tiny_model[0]))
    assert classical.refiner is None and refined.refiner is not None
    for k in range(5):
        image = scene.rgb8(scene.render(scene.pose(k))[0], noise=2.0, seed=k)
        a = classical.estimate(image, scene.K, scene.pose(k), 1.0 + 0.1 * k)
        b = refined.estimate(image, scene.K, scene.pose(k), 1.0 + 0.1 * k)
        assert a.status == b.status and b.depth.shape == a.depth.shape == (scene.H, scene.W)
        assert np.array_equal(np.isfinite(b.depth), b.confidence >= 0.5)
        assert np.all(b.depth[np.isfinite(b.depth)] > 0)
        if b.status == STATUS_OK:
            assert "refiner" in b.timings
    assert b.status == STATUS_OK and np.isfinite(b.depth).any()


def test_a_missing_or_bad_model_is_a_config_error(tmp_path):
    missing = tmp_path / "nothing.onnx"
    with pytest.raises(ConfigError, match="nothing.onnx"):
        DepthRefiner(str(missing))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model")
    with pytest.raises(ConfigError, match="garbage.onnx"):
        DepthRefiner(str(garbage))

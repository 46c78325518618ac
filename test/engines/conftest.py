# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Fixtures: tiny ONNX models exported from the reference convnets, and calibration images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from dvc_perception.engines.export import export_onnx
from dvc_perception.engines.reference_nets import TinyDepthNet, TinyKeypointNet

INPUT_HW = (96, 128)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def make_metadata(task: str, net: str) -> dict[str, Any]:
    return {
        "dvc_format": 1,
        "task": task,
        "input_size": [INPUT_HW[1], INPUT_HW[0]],
        "normalization": {"mean": list(MEAN), "std": list(STD)},
        "object_ids": ["demo"],
        "keypoints_3d": {"demo": [[0.01 * i, -0.02 * i, 0.005] for i in range(8)]},
        "symmetries": {"demo": "none"},
        "provenance": {
            "git_commit": "0123abcd", "command": "pytest", "date": "2026-11-23", "data_seed": 7,
        },
        "architecture": {
            "factory": "dvc_perception.engines.reference_nets:build_reference_net",
            "kwargs": {"name": net},
        },
    }


@dataclass
class ExportedNet:
    module: torch.nn.Module
    onnx_path: Path
    output_names: tuple[str, ...]


def _write_state_dict(module: torch.nn.Module, onnx_path: Path) -> None:
    torch.save(module.state_dict(), onnx_path.with_suffix(".pt"))


@pytest.fixture(scope="session")
def keypoint_net(tmp_path_factory: pytest.TempPathFactory) -> ExportedNet:
    module = TinyKeypointNet().eval()
    path = tmp_path_factory.mktemp("models") / "keypoint.onnx"
    export_onnx(module, (torch.zeros(1, 3, *INPUT_HW),), path, input_names=["image"],
                output_names=["keypoints", "confidence"],
                metadata=make_metadata("keypoints", "keypoint"))
    _write_state_dict(module, path)
    return ExportedNet(module, path, ("keypoints", "confidence"))


@pytest.fixture(scope="session")
def depth_net(tmp_path_factory: pytest.TempPathFactory) -> ExportedNet:
    module = TinyDepthNet().eval()
    path = tmp_path_factory.mktemp("models") / "depth.onnx"
    export_onnx(module, (torch.zeros(1, 3, *INPUT_HW),), path, input_names=["image"],
                output_names=["depth"], metadata=make_metadata("depth", "depth"))
    _write_state_dict(module, path)
    return ExportedNet(module, path, ("depth",))


def draw_scene(rng: np.random.Generator, height: int = 240, width: int = 320) -> np.ndarray:
    """A camera-like RGB frame: smooth background gradient, filled shapes, sensor noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    grad = rng.uniform(-0.3, 0.3, (2, 3))
    img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 8))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            cv2.circle(img, center, int(rng.integers(8, 50)), color, -1)
        else:
            size = rng.integers(10, 80, 2)
            cv2.rectangle(img, center, (center[0] + int(size[0]), center[1] + int(size[1])),
                          color, -1)
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 calibration PNGs (RGB scenes written as BGR files, as cameras' image files are)."""
    root = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(1)
    for i in range(16):
        cv2.imwrite(str(root / f"frame_{i:03d}.png"), cv2.cvtColor(draw_scene(rng),
                                                                  cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture(scope="session")
def heldout_frames() -> list[np.ndarray]:
    """Held-out RGB frames from the same scene distribution, not used for calibration."""
    rng = np.random.default_rng(99)
    return [draw_scene(rng) for _ in range(6)]

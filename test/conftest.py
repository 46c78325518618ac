# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Shared fixtures. DDS isolation is set here too, before any test imports rclpy."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

# Every ROS process needs the same transport (processes with and without it do not see each
# other), and tests must not talk to other machines or other test runs.
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 199)))

REPO = Path(__file__).resolve().parent.parent


def _shared_data() -> Path | None:
    env = os.environ.get("DVC_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (real captures); tests using it skip where it is absent."""
    path = _shared_data()
    if path is None:
        pytest.skip("../shared/data is absent (it exists on dev and CI machines only)")
    return path


@pytest.fixture(scope="session")
def chessboard_dir(shared_data: Path) -> Path:
    path = shared_data / "chessboard"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def lmo_dir(shared_data: Path) -> Path:
    path = shared_data / "lmo"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def tracking_scene():
    """`render(R, t, seed, visible=True)` of the textured demo object for the tracking tests.

    The hard renderer with the object's texture over one smooth random background (fixed per
    session), 640x480 LM-O intrinsics, per-frame sensor noise (seeded by `seed`); `visible`
    False renders the background alone (the object replaced by background); it returns the
    image (H, W, 3) uint8 RGB. Also: ``mesh``, ``camera``, ``K``, ``keypoints_obj`` (the
    object's 3D keypoints, (N, 3) m), ``diameter_m``.
    """
    import types

    import cv2
    import numpy as np
    import torch

    from dvc_perception.geometry.camera import CameraModel
    from dvc_perception.render.objects import find_object_yaml, load_object
    from dvc_perception.render.raster import render as render_mesh

    K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])
    obj = load_object(find_object_yaml("demo_object"))
    mesh = obj.mesh.to(dtype=torch.float64)
    bg_rng = np.random.default_rng(1234)
    background = cv2.resize(bg_rng.uniform(0.1, 0.9, (7, 9, 3)), (640, 480),
                            interpolation=cv2.INTER_CUBIC)

    def render(R: np.ndarray, t: np.ndarray, seed: int, visible: bool = True) -> np.ndarray:
        img = background
        if visible:
            res = render_mesh(mesh, (torch.from_numpy(R), torch.from_numpy(t)),
                              torch.from_numpy(K), 640, 480)
            img = np.where(res.mask.numpy()[..., None], res.color.numpy(), background)
        noise = np.random.default_rng(seed).normal(0.0, 3.0, img.shape)
        return np.clip(img * 255.0 + noise, 0, 255).astype(np.uint8)

    return types.SimpleNamespace(
        render=render, mesh=obj.mesh, camera=CameraModel(K, [], 640, 480), K=K,
        keypoints_obj=np.asarray(obj.keypoints, np.float64), diameter_m=obj.diameter_m)

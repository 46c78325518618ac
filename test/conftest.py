# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Shared fixtures. DDS isolation is set here too, before any test imports rclpy."""

from __future__ import annotations

import faulthandler
import os
import random
import sys
from pathlib import Path

import pytest

# Every ROS process needs the same transport (processes with and without it do not see each
# other), and tests must not talk to other machines or other test runs.
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 199)))

REPO = Path(__file__).resolve().parent.parent

#: pytest-timeout's limit (pyproject.toml) interrupts a test through the interpreter; a test stuck
#: in native code that holds the GIL (a DDS participant torn down in the wrong place) never sees
#: it. This watchdog thread needs no GIL: it prints every thread's stack and ends the run.
HARD_TIMEOUT_S = 900


_watchdog_stream = None


def pytest_configure(config):
    global _watchdog_stream
    # The terminal's stderr as pytest found it (its output capture redirects fd 2 later).
    _watchdog_stream = os.fdopen(os.dup(sys.__stderr__.fileno()), "w")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    faulthandler.dump_traceback_later(HARD_TIMEOUT_S, exit=True, file=_watchdog_stream)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


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


def _shared_dir(shared_data: Path, name: str, what: str = "") -> Path:
    """`shared_data / name`; the test skips, naming it (and `what` it is), where it is absent."""
    path = shared_data / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent" + (f" ({what})" if what else ""))
    return path


@pytest.fixture(scope="session")
def chessboard_dir(shared_data: Path) -> Path:
    return _shared_dir(shared_data, "chessboard")


@pytest.fixture(scope="session")
def kitchen_dir(shared_data: Path) -> Path:
    return _shared_dir(shared_data, "rgbd_kitchen",
                       "../shared/data/rgbd_kitchen: 7-Scenes RedKitchen")


@pytest.fixture(scope="session")
def lmo_dir(shared_data: Path) -> Path:
    return _shared_dir(shared_data, "lmo")


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


@pytest.fixture(scope="session")
def planar_sequence():
    """A camera sliding sideways in front of a textured fronto-parallel plane (exact geometry).

    The plane is ``z = Z`` (1.5 m) in the world frame; a camera with identity rotation at
    ``(x, 0, 0)`` sees at pixel (u, v) the plane point ``((u - cx) Z / fx + x, (v - cy) Z / fy)``,
    whose colour is the texture sampled there (bilinear): each frame is an exact warp of one
    texture, every pixel's depth is Z. 160x120 px, fx = fy = 200 px. Attributes: ``render(x,
    size=(W, H))`` -> (H, W, 3) uint8 RGB; ``pose(x)`` -> (4, 4) camera-to-world; ``K``
    (for the default size; `K_for(size)` otherwise), ``W``, ``H``, ``Z``; ``write_7scenes(root,
    xs)`` writes a 7-Scenes folder (lossless PNG colour, depth Z in mm, poses) of frames at xs.
    """
    import types

    import cv2
    import numpy as np

    W, H, Z, f = 160, 120, 1.5, 200.0
    rng = np.random.default_rng(2026)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (1200, 1600)).astype(np.float32), (0, 0), 2.0)
    texture = cv2.normalize(texture, None, 10, 245, cv2.NORM_MINMAX)
    texels_per_m = 400.0

    def K_for(size: tuple[int, int]) -> np.ndarray:
        w, h = size
        return np.array([[f * w / W, 0.0, (w - 1) / 2], [0.0, f * w / W, (h - 1) / 2],
                         [0.0, 0.0, 1.0]])

    def render(x: float, size: tuple[int, int] = (W, H)) -> np.ndarray:
        K = K_for(size)
        u, v = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
        X = (u - K[0, 2]) * Z / K[0, 0] + x
        Y = (v - K[1, 2]) * Z / K[1, 1]
        grey = cv2.remap(texture, (X * texels_per_m + 800).astype(np.float32),
                         (Y * texels_per_m + 600).astype(np.float32), cv2.INTER_LINEAR)
        return np.repeat(np.clip(grey + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)

    def pose(x: float) -> np.ndarray:
        T = np.eye(4)
        T[0, 3] = x
        return T

    def write_7scenes(root: Path, xs: list[float]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        np.savetxt(root / "camera-intrinsics.txt", K_for((W, H)))
        for k, x in enumerate(xs):
            assert cv2.imwrite(str(root / f"frame-{k:06d}.color.png"), render(x)[:, :, ::-1])
            assert cv2.imwrite(str(root / f"frame-{k:06d}.depth.png"),
                               np.full((H, W), round(Z * 1000), np.uint16))
            np.savetxt(root / f"frame-{k:06d}.pose.txt", pose(x), fmt="%.8f")

    return types.SimpleNamespace(render=render, pose=pose, K=K_for((W, H)), K_for=K_for, W=W,
                                 H=H, Z=Z, write_7scenes=write_7scenes)

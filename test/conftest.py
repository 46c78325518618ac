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

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Find shipped files (config/, launch/, models/) the same way in every kind of install.

Order: the source checkout this module lives in (a git clone or `pip install -e .`), then each
prefix of `AMENT_PREFIX_PATH` (a colcon workspace), then `sys.prefix` (a plain `pip install`,
whose `data_files` land in `<prefix>/share/dvc_perception`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dvc_perception.errors import ConfigError

PACKAGE = "dvc_perception"


def share_dirs() -> list[Path]:
    """Candidate roots that hold config/, launch/ and models/, most specific first."""
    roots: list[Path] = []
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "package.xml").is_file() and (checkout / "config").is_dir():
        roots.append(checkout)
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            roots.append(Path(prefix) / "share" / PACKAGE)
    roots.append(Path(sys.prefix) / "share" / PACKAGE)
    return [r for r in roots if r.is_dir()]


def find_share_file(relative: str) -> Path:
    """Path of a shipped file, e.g. ``find_share_file("config/perception.yaml")``.

    Raises:
        ConfigError: the file is in none of the install locations (which are listed).
    """
    for root in share_dirs():
        candidate = root / relative
        if candidate.exists():
            return candidate
    searched = ", ".join(str(r) for r in share_dirs()) or "(no share directory found)"
    raise ConfigError(f"shipped file {relative!r} not found; searched {searched}")


def shared_data_dir() -> Path | None:
    """`../shared/data` beside the source checkout, if present (dev and CI machines only)."""
    env = os.environ.get("DVC_SHARED_DATA")
    if env:
        path = Path(env)
        return path if path.is_dir() else None
    checkout = Path(__file__).resolve().parent.parent
    path = checkout.parent / "shared" / "data"
    return path if path.is_dir() else None

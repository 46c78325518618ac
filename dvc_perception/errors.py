# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Typed errors. Every error says what was expected and what arrived."""

from __future__ import annotations

from typing import Any


class DvcError(Exception):
    """Base class of every error dvc_perception raises on purpose."""


class ShapeError(DvcError, ValueError):
    """A tensor or array does not have its documented shape."""


class ConfigError(DvcError, ValueError):
    """A configuration value or parameter is invalid."""


class ModelSpecError(DvcError, ValueError):
    """A model file lacks, or contradicts, the metadata the pipeline needs."""


class EngineUnavailableError(DvcError, RuntimeError):
    """An inference backend cannot be used here (library or device missing)."""


class InputError(DvcError, ValueError):
    """A frame, message or file is malformed (encoding, size, NaN, truncation)."""


class MeshError(DvcError, ValueError):
    """A mesh file is missing, empty, malformed or in an unknown unit."""


class BagError(DvcError, RuntimeError):
    """A rosbag cannot be read or written as asked (missing topics, corrupt file, ...)."""


def check_shape(x: Any, spec: str, *, name: str) -> None:
    """Check that `x.shape` matches `spec`, e.g. ``"B,N,3"``.

    Letters are free sizes that must repeat consistently; digits are fixed sizes; ``*`` matches
    anything; a leading ``...`` matches any number of leading dimensions (``"...,3,3"``: a
    batch of 3x3 matrices of any batch shape). Works for torch tensors and numpy arrays.

    Raises:
        ShapeError: naming `name`, the expected spec and the actual shape.
    """
    dims = [d.strip() for d in spec.split(",")] if spec else []
    shape = tuple(int(n) for n in getattr(x, "shape", ()))
    if dims and dims[0] == "...":
        dims = dims[1:]
        if len(shape) >= len(dims):
            shape_checked = shape[len(shape) - len(dims):]
        else:
            shape_checked = ()
            dims = dims + ["missing"]  # too few dimensions: fails below
    else:
        shape_checked = shape
    bound: dict[str, int] = {}
    ok = len(shape_checked) == len(dims)
    if ok:
        for d, n in zip(dims, shape_checked):
            if d == "*":
                continue
            if d.isdigit():
                ok = int(d) == n
            else:
                ok = bound.setdefault(d, n) == n
            if not ok:
                break
    if not ok:
        raise ShapeError(f"{name}: expected shape ({spec}), got {shape}")

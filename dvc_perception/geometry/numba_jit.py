# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The one numba decorator of the compiled kernels (PnP, refinement, depth from motion).

Imported only by the ``*_compiled`` modules, which are themselves imported lazily (importing
numba costs about a second).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba


def jit(fn: Callable[..., Any] | None = None, **extra: Any) -> Any:
    """Numba's njit, caching on disk where a location is writable (never failing without one).

    ``@jit`` or ``@jit(parallel=True)``. Always ``nogil`` and numpy's error model (x / 0 gives
    inf or NaN, never an exception).
    """
    if fn is None:
        return lambda f: jit(f, **extra)
    options = {"nogil": True, "error_model": "numpy", **extra}
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(cache=False, **options)(fn)

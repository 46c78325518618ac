# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Loading files a user passes without running code from them.

Every torch file (checkpoint, state dict) the package reads goes through `load_torch_file`:
``torch.load(..., weights_only=True)``, which only builds tensors and plain Python values and
refuses any other pickled object before creating it. Every ``.npz`` array archive (synthetic
shards) goes through `load_npz` with ``allow_pickle=False``. Failures become typed errors that
name the file and say what was expected; there is no fallback to an unrestricted load.

This module imports neither torch nor the training code at import time, so the engines layer may
use it.
"""

from __future__ import annotations

import os
import re
import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.errors import InputError, ModelSpecError

_REFUSED = re.compile(r"Unsupported (?:global|class):?\s*(?:GLOBAL\s+)?([\w.]+)")
_NPZ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error,
               struct.error, NotImplementedError, RuntimeError)


def load_torch_file(path: str | os.PathLike[str], *, what: str) -> Any:
    """Load a torch file with ``weights_only=True`` (tensors and plain Python values only).

    Args:
        path: the file (``torch.save`` output).
        what: what the file should be, for the messages, e.g. "training checkpoint".

    Returns:
        The loaded object, on the CPU.

    Raises:
        ModelSpecError: the file is missing, a directory, empty, unreadable, truncated, not a
            torch file, or holds objects other than tensors and plain Python types (refused
            without running them). Never retried with ``weights_only=False``.
    """
    import torch

    path = Path(path)
    _check_regular_file(path, what, ModelSpecError)
    try:
        with _allowed_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a corrupt file raises anything: KeyError, ...
        raise ModelSpecError(_torch_failure(path, what, err)) from err


def load_npz(
    path: str | os.PathLike[str], keys: Sequence[str] | None = None, *, what: str,
    hint: str = "",
) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` archive, read with ``allow_pickle=False`` (no object arrays).

    Args:
        path: the archive.
        keys: the arrays to read (all when None); a missing one is an error.
        what: what the file should be, for the messages, e.g. "synthetic shard".
        hint: appended to the error message (how to get a good file).

    Raises:
        InputError: missing, empty, truncated or corrupt file, not an ``.npz`` archive, an
            array that needs pickle, or a missing key (the file and `what` named).
    """
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    _check_regular_file(path, what, InputError, tail)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise InputError(f"{what} {path} is a single .npy array, not an .npz archive{tail}")
        with data:
            return _npz_arrays(data, path, keys, what, tail)
    except InputError:  # a ValueError too: already says what is wrong
        raise
    except _NPZ_ERRORS as err:
        raise InputError(f"{what} {path} is not readable ({_reason(err)}; truncated, corrupt "
                         f"or not an .npz archive){tail}") from err


def _npz_arrays(
    data: Any, path: Path, keys: Sequence[str] | None, what: str, tail: str
) -> dict[str, np.ndarray]:
    """The arrays `keys` (all when None) of an open archive, decompressed."""
    wanted = list(data.files) if keys is None else list(keys)
    missing = [k for k in wanted if k not in data.files]
    if missing:
        raise InputError(f"{what} {path} lacks the arrays {missing} (has {sorted(data.files)})"
                         f"{tail}")
    return {k: data[k] for k in wanted}


def _check_regular_file(
    path: Path, what: str, error: type[Exception], tail: str = ""
) -> None:
    """Raise `error` unless `path` is a non-empty regular file."""
    if path.is_dir():
        raise error(f"{what} {path} is a directory, expected a file{tail}")
    if not path.exists():
        raise error(f"{what} {path} does not exist{tail}")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise error(f"{what} {path} cannot be read: {err.strerror or err}{tail}") from err
    if size == 0:
        raise error(f"{what} {path} is empty (0 bytes){tail}")


def _torch_failure(path: Path, what: str, err: BaseException) -> str:
    """The one-line message of a failed `torch.load` of `path`."""
    text = str(err)
    refused = _REFUSED.search(text)
    if refused:
        return (f"{what} {path} contains objects other than tensors and plain Python types "
                f"(first refused: {refused.group(1)}); it was refused without running it "
                "(torch.load with "
                "weights_only=True). Only tensors, dicts, lists, numbers and strings are loaded")
    if isinstance(err, OSError):
        return f"{what} {path} cannot be read: {err.strerror or err}"
    if isinstance(err, (EOFError, zipfile.BadZipFile)) or "PytorchStreamReader" in text:
        return (f"{what} {path} is truncated or corrupt ({_reason(err)}); expected a complete "
                "file written by torch.save")
    return f"{what} {path} is not a torch file written by torch.save ({_reason(err)})"


def _reason(err: BaseException) -> str:
    """The first sentence of an exception's message, with its type."""
    text = " ".join(str(err).split())
    if text.startswith("Weights only load failed"):  # torch's advice to use weights_only=False
        text = text.rsplit("WeightsUnpickler error:", 1)[-1].strip()
        text = text.split(" Check the documentation", 1)[0]
    first = text.split(". ", 1)[0].rstrip(".")[:160]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _allowed_globals() -> Any:
    """Context allowing ``TorchVersion`` (a `str` subclass older checkpoints hold), if needed.

    Checkpoints written before the training loop stored ``torch.__version__`` as a plain string
    recorded it as ``torch.torch_version.TorchVersion``; building one runs no user code.
    """
    import contextlib

    import torch

    safe_globals = getattr(torch.serialization, "safe_globals", None)
    version_cls = getattr(getattr(torch, "torch_version", None), "TorchVersion", None)
    if safe_globals is None or version_cls is None:
        return contextlib.nullcontext()
    return safe_globals([version_cls])

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Helpers for frozen config dataclasses: `from_mapping` that rejects unknown keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from dvc_perception.errors import ConfigError

T = TypeVar("T")


def dataclass_from_mapping(cls: type[T], values: Mapping[str, Any], *, section: str) -> T:
    """Build the frozen dataclass `cls` from `values`, rejecting unknown keys.

    Nested dataclass fields accept a mapping. `section` prefixes key names in errors.

    Raises:
        ConfigError: on unknown keys or when the dataclass' own validation fails.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{section}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"{section}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        ftype = known[key].type
        target = _dataclass_type(cls, key, ftype)
        if target is not None and isinstance(value, Mapping):
            value = dataclass_from_mapping(target, value, section=f"{section}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{section}: {err}") from err


def _dataclass_type(cls: type, key: str, ftype: Any) -> type | None:
    """The dataclass type of field `key`, resolving string annotations; None if not one."""
    if isinstance(ftype, str):
        import typing

        try:
            ftype = typing.get_type_hints(cls)[key]
        except Exception:  # noqa: BLE001 - unresolvable annotation: treat as a plain value
            return None
    return ftype if dataclasses.is_dataclass(ftype) else None

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The one inference interface: `Engine` protocol, `TensorSpec`, `ModelMetadata`, input checks.

Every backend (ONNX Runtime, torch, TensorRT) exposes the same surface::

    engine.inputs   -> tuple[TensorSpec, ...]     # name, shape (None = dynamic), numpy dtype
    engine.outputs  -> tuple[TensorSpec, ...]
    engine.run({"input": array}) -> {"output_name": array}

so the pipeline never branches on the backend. Inputs are checked against the specs before they
reach the backend (`check_inputs`), and backend options are validated key by key
(`check_options`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dvc_perception.errors import ConfigError, ModelSpecError, ShapeError

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
"""Precisions `load_engine` accepts. ``int8`` means: the ONNX file is a QDQ model (explicit
quantisation, see `dvc_perception.engines.quantize`), or, for TensorRT only, an fp32 model plus
an entropy calibrator over real frames (option ``calibration_dir``)."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one engine input or output.

    Attributes:
        name: tensor name in the ONNX graph.
        shape: one entry per dimension; None where the dimension is dynamic (e.g. batch).
        dtype: numpy dtype name, e.g. ``"float32"``.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def matches(self, array: Any) -> bool:
        """Whether `array` (numpy or torch) has this spec's rank, static sizes and dtype."""
        shape = tuple(int(n) for n in array.shape)
        if len(shape) != len(self.shape):
            return False
        if any(s is not None and s != n for s, n in zip(self.shape, shape)):
            return False
        return _dtype_name(array) == self.dtype


class EngineSpecs:
    """Mixin of the backends: `inputs` / `outputs` over the specs a backend sets at load time."""

    _inputs: tuple[TensorSpec, ...] = ()
    _outputs: tuple[TensorSpec, ...] = ()

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Input specs, in graph order."""
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Output specs, in graph order."""
        return self._outputs


def _dtype_name(array: Any) -> str:
    """Numpy dtype name of a numpy array or torch tensor (``torch.float32`` -> ``float32``)."""
    dtype = array.dtype
    if isinstance(dtype, np.dtype):
        return dtype.name
    return str(dtype).replace("torch.", "")


def check_inputs(specs: Sequence[TensorSpec], feeds: Mapping[str, Any]) -> None:
    """Check a feed dict against the engine's input specs.

    Raises:
        ModelSpecError: an input is missing or an unknown name is given (both listed).
        ShapeError: an input has the wrong rank, size or dtype (expected vs actual).
    """
    if not isinstance(feeds, Mapping):
        raise ModelSpecError(
            f"engine.run expects a mapping of input name -> array, got {type(feeds).__name__}"
        )
    names = [s.name for s in specs]
    missing = [n for n in names if n not in feeds]
    unknown = sorted(set(feeds) - set(names))
    if missing or unknown:
        raise ModelSpecError(
            f"engine inputs: expected {names}, missing {missing}, unknown {unknown}"
        )
    for spec in specs:
        array = feeds[spec.name]
        if not hasattr(array, "shape") or not hasattr(array, "dtype"):
            raise ShapeError(f"input {spec.name!r}: expected an array, got {type(array).__name__}")
        if not spec.matches(array):
            dims = ",".join("?" if s is None else str(s) for s in spec.shape)
            raise ShapeError(
                f"input {spec.name!r}: expected ({dims}) {spec.dtype}, "
                f"got {tuple(int(n) for n in array.shape)} {_dtype_name(array)}"
            )


def check_options(
    backend: str, options: Mapping[str, Any] | None, known: Mapping[str, type | tuple[type, ...]]
) -> dict[str, Any]:
    """Validate backend `options` key by key against `known` (name -> accepted type(s)).

    Returns:
        A plain dict copy of the options (empty when `options` is None).

    Raises:
        ConfigError: an unknown key (the known ones are listed) or a value of the wrong type.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{backend} options: expected a mapping, got {type(options).__name__}")
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in known:
            raise ConfigError(
                f"{backend} options: unknown key {key!r}; known: {sorted(known)}"
            )
        accepted = known[key]
        if isinstance(value, bool) and bool not in _as_tuple(accepted):
            raise ConfigError(
                f"{backend} options: {key} must be {_type_names(accepted)}, got bool"
            )
        if not isinstance(value, accepted):
            raise ConfigError(
                f"{backend} options: {key} must be {_type_names(accepted)}, "
                f"got {type(value).__name__} {value!r}"
            )
        out[key] = value
    return out


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _type_names(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in _as_tuple(t))


@runtime_checkable
class Engine(Protocol):
    """What every backend provides. See the module docstring."""

    backend: str
    precision: str

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Input specs, in graph order."""
        ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Output specs, in graph order."""
        ...

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run one inference: input name -> array in, output name -> numpy array out."""
        ...


# Metadata keys every shipped model carries, and what each holds.
REQUIRED_METADATA_KEYS: tuple[str, ...] = (
    "dvc_format",  # int, metadata format version (METADATA_FORMAT)
    "task",  # "keypoints" | "depth" | free text for other networks
    "input_size",  # [width, height] px of the network input
    "normalization",  # {"mean": [r,g,b], "std": [r,g,b]} applied to RGB in [0, 1]
    "provenance",  # {"git_commit", "command", "date", "data_seed"}
)
OPTIONAL_METADATA_KEYS: tuple[str, ...] = (
    "object_ids",  # list of object id strings, one per object the network knows
    "keypoints_3d",  # {object_id: [[x, y, z], ...] metres, object frame}
    "symmetries",  # {object_id: list of 4x4 object-frame transforms or a named symmetry}
    "architecture",  # {"factory": "pkg.module:function", "kwargs": {...}} for the torch backend
    "output_stride",  # int, heatmap stride px
    "depth_unit",  # "m"
    "focal_normalization",  # {"reference_focal_px": f} for depth nets
    "extra",  # free-form mapping
)
METADATA_FORMAT = 1
METADATA_PROP_KEY = "dvc_perception"
"""ONNX `metadata_props` key holding the JSON document."""


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported model says about itself (stored as JSON in the ONNX `metadata_props`).

    Attributes:
        task: what the network predicts ("keypoints", "depth", ...).
        input_size: (width, height) px of the network input.
        mean: per-channel RGB mean subtracted from an image in [0, 1].
        std: per-channel RGB std the image is divided by.
        provenance: git_commit, command, date, data_seed of the training run.
        object_ids: objects the network knows, in output-channel order.
        keypoints_3d: object id -> (K, 3) keypoints, metres, object frame (nested lists).
        symmetries: object id -> symmetry description (see `OPTIONAL_METADATA_KEYS`).
        architecture: {"factory": "module:function", "kwargs": {...}} to rebuild the torch module.
        extra: every other key of the document, unchanged.
    """

    task: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    provenance: Mapping[str, Any]
    object_ids: tuple[str, ...] = ()
    keypoints_3d: Mapping[str, Any] = field(default_factory=dict)
    symmetries: Mapping[str, Any] = field(default_factory=dict)
    architecture: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], *, source: str = "metadata") -> ModelMetadata:
        """Build from the JSON document; validates required keys and their shapes.

        Raises:
            ModelSpecError: naming every missing key, or the malformed one.
        """
        missing = [k for k in REQUIRED_METADATA_KEYS if k not in doc]
        if missing:
            raise ModelSpecError(
                f"{source}: missing metadata keys {missing}; required: "
                f"{list(REQUIRED_METADATA_KEYS)}"
            )
        if doc["dvc_format"] != METADATA_FORMAT:
            raise ModelSpecError(
                f"{source}: dvc_format {doc['dvc_format']!r} unsupported (expected "
                f"{METADATA_FORMAT})"
            )
        size = doc["input_size"]
        if not (isinstance(size, Sequence) and len(size) == 2 and all(int(v) > 0 for v in size)):
            raise ModelSpecError(f"{source}: input_size must be [width, height] > 0, got {size!r}")
        norm = doc["normalization"]
        if not isinstance(norm, Mapping) or set(norm) != {"mean", "std"}:
            raise ModelSpecError(
                f"{source}: normalization must be {{'mean': [3], 'std': [3]}}, got {norm!r}"
            )
        mean, std = tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"])
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ModelSpecError(f"{source}: need 3 means and 3 positive stds, got {norm!r}")
        prov = doc["provenance"]
        prov_missing = [
            k for k in ("git_commit", "command", "date", "data_seed")
            if not isinstance(prov, Mapping) or k not in prov
        ]
        if prov_missing:
            raise ModelSpecError(f"{source}: provenance lacks {prov_missing}")
        known = set(REQUIRED_METADATA_KEYS) | {
            "object_ids", "keypoints_3d", "symmetries", "architecture"
        }
        return cls(
            task=str(doc["task"]),
            input_size=(int(size[0]), int(size[1])),
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
            provenance=dict(prov),
            object_ids=tuple(str(o) for o in doc.get("object_ids", ())),
            keypoints_3d=dict(doc.get("keypoints_3d", {})),
            symmetries=dict(doc.get("symmetries", {})),
            architecture=dict(doc.get("architecture", {})),
            extra={k: v for k, v in doc.items() if k not in known},
        )

    def to_json(self) -> str:
        """The JSON document (inverse of `from_mapping`)."""
        doc: dict[str, Any] = {
            "dvc_format": METADATA_FORMAT,
            "task": self.task,
            "input_size": list(self.input_size),
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "provenance": dict(self.provenance),
            "object_ids": list(self.object_ids),
            "keypoints_3d": dict(self.keypoints_3d),
            "symmetries": dict(self.symmetries),
            "architecture": dict(self.architecture),
        }
        doc.update(self.extra)
        return json.dumps(doc, sort_keys=True)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""ONNX export with a pinned exporter and opset, and self-describing metadata.

TensorRT 8.6 (JetPack 6) parses ONNX up to opset 17, while torch 2.13's default exporter
(``dynamo=True``) writes opset 20. `export_onnx` therefore uses the TorchScript exporter
(``dynamo=False``) at opset 17 and checks the opset that was actually written.

The model's facts (input size, normalisation, object ids, 3D keypoints, symmetries, training
provenance) go into ``ModelProto.metadata_props`` under the key ``dvc_perception`` as one JSON
document; `read_model_metadata` reads and validates it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dvc_perception.engines.base import METADATA_PROP_KEY, ModelMetadata
from dvc_perception.errors import ConfigError, ModelSpecError
from dvc_perception.files import atomic_path

DEFAULT_OPSET = 17
MAX_OPSET_TENSORRT_8_6 = 17


def export_onnx(
    model: Any,
    example_inputs: tuple[Any, ...],
    path: str | os.PathLike[str],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    metadata: Mapping[str, Any],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
) -> Path:
    """Export a torch module to ONNX with metadata; the file is written atomically.

    Args:
        model: a ``torch.nn.Module``; it is put in eval mode for the export.
        example_inputs: tensors fixing the static input shapes, e.g. ((1, 3, H, W) float32,).
        path: output ``.onnx`` path.
        input_names: graph input names, one per example input.
        output_names: graph output names, one per module output.
        metadata: the metadata document (see `ModelMetadata.from_mapping`); validated before
            anything is written.
        opset: ONNX opset; at most 17 so TensorRT 8.6 can parse it.
        dynamic_batch: make dimension 0 of every input and output dynamic ("batch").

    Returns:
        The path written.

    Raises:
        ConfigError: opset above 17, or names that do not match the inputs.
        ModelSpecError: the metadata is incomplete, or the written opset differs from `opset`.
    """
    import onnx
    import torch

    if opset > MAX_OPSET_TENSORRT_8_6:
        raise ConfigError(f"opset must be <= {MAX_OPSET_TENSORRT_8_6} (TensorRT 8.6), got {opset}")
    if len(input_names) != len(example_inputs):
        raise ConfigError(
            f"{len(input_names)} input_names for {len(example_inputs)} example inputs"
        )
    meta = ModelMetadata.from_mapping(metadata, source="export_onnx metadata")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
    was_training = model.training
    model.eval()
    try:
        with atomic_path(path) as tmp:
            with torch.no_grad(), warnings.catch_warnings():
                # The TorchScript exporter is deprecated in favour of dynamo; pinned on purpose.
                warnings.simplefilter("ignore", category=DeprecationWarning)
                warnings.simplefilter("ignore", category=FutureWarning)
                torch.onnx.export(
                    model,
                    tuple(example_inputs),
                    str(tmp),
                    input_names=list(input_names),
                    output_names=list(output_names),
                    opset_version=opset,
                    dynamic_axes=dynamic_axes,
                    do_constant_folding=True,
                    dynamo=False,
                )
            proto = onnx.load(str(tmp))
            written = onnx_opset(proto)
            if written != opset:
                raise ModelSpecError(f"exporter wrote opset {written}, asked for {opset}")
            set_model_metadata(proto, meta)
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
    finally:
        model.train(was_training)
    return path


def onnx_opset(proto: Any) -> int:
    """The default-domain ("" / "ai.onnx") opset of an ONNX ModelProto."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelSpecError("ONNX model imports no default-domain opset")


def set_model_metadata(proto: Any, metadata: ModelMetadata | Mapping[str, Any]) -> None:
    """Write `metadata` as JSON into ``proto.metadata_props`` (replacing an earlier copy)."""
    meta = (
        metadata if isinstance(metadata, ModelMetadata) else ModelMetadata.from_mapping(metadata)
    )
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key != METADATA_PROP_KEY]
    del proto.metadata_props[:]
    for key, value in keep:
        proto.metadata_props.add(key=key, value=value)
    proto.metadata_props.add(key=METADATA_PROP_KEY, value=meta.to_json())


def read_model_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """Read the metadata of an exported model (ONNX `metadata_props`, else a sidecar JSON).

    The sidecar is ``<model>.json`` next to ``<model>.onnx``; it is only consulted when the
    ONNX file carries no ``dvc_perception`` property.

    Raises:
        ModelSpecError: file missing or unreadable, no metadata, or metadata keys missing
            (all missing keys are named).
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelSpecError(f"model file {path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - onnx raises several unrelated types
        raise ModelSpecError(f"{path}: not a readable ONNX model ({err})") from err
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_PROP_KEY in props:
        text, source = props[METADATA_PROP_KEY], f"{path} metadata_props"
    else:
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise ModelSpecError(
                f"{path}: no '{METADATA_PROP_KEY}' entry in metadata_props and no sidecar "
                f"{sidecar.name}"
            )
        text, source = sidecar.read_text(), str(sidecar)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelSpecError(f"{source}: metadata is not valid JSON ({err})") from err
    if not isinstance(doc, Mapping):
        raise ModelSpecError(f"{source}: metadata must be a JSON object")
    return ModelMetadata.from_mapping(doc, source=source)

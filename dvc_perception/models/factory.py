# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Factories named in exported models' metadata (``architecture.factory``).

The torch backend rebuilds an exported network with ``factory(**kwargs)`` and loads the state
dict saved next to the ONNX file; the kwargs are the JSON form of the network's config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dvc_perception.config_utils import dataclass_from_mapping
from dvc_perception.models.depth_net import DepthNet, DepthNetConfig
from dvc_perception.models.detector_net import (
    DetectorEnsembleForExport,
    DetectorNet,
    DetectorNetConfig,
    DetectorNetForExport,
)
from dvc_perception.models.keypoint_net import KeypointNet, KeypointNetConfig, KeypointNetForExport
from dvc_perception.models.verifier_net import VerifierNet, VerifierNetConfig, VerifierNetForExport

KEYPOINT_FACTORY = "dvc_perception.models.factory:keypoint_export_module"
DEPTH_FACTORY = "dvc_perception.models.factory:depth_export_module"
DETECTOR_FACTORY = "dvc_perception.models.factory:detector_export_module"
DETECTOR_ENSEMBLE_FACTORY = "dvc_perception.models.factory:detector_ensemble_export_module"
VERIFIER_FACTORY = "dvc_perception.models.factory:verifier_export_module"


def _tuples(values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples the frozen configs use."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def keypoint_config_from_mapping(values: Mapping[str, Any]) -> KeypointNetConfig:
    """`KeypointNetConfig` from its JSON form (unknown keys raise `ConfigError`)."""
    return dataclass_from_mapping(KeypointNetConfig, _tuples(values), section="keypoint_net")


def depth_config_from_mapping(values: Mapping[str, Any]) -> DepthNetConfig:
    """`DepthNetConfig` from its JSON form (unknown keys raise `ConfigError`)."""
    return dataclass_from_mapping(DepthNetConfig, _tuples(values), section="depth_net")


def detector_config_from_mapping(values: Mapping[str, Any]) -> DetectorNetConfig:
    """`DetectorNetConfig` from its JSON form (unknown keys raise `ConfigError`)."""
    return dataclass_from_mapping(DetectorNetConfig, _tuples(values), section="detector_net")


def verifier_config_from_mapping(values: Mapping[str, Any]) -> VerifierNetConfig:
    """`VerifierNetConfig` from its JSON form (unknown keys raise `ConfigError`)."""
    return dataclass_from_mapping(VerifierNetConfig, _tuples(values), section="verifier_net")


def keypoint_export_module(**config: Any) -> KeypointNetForExport:
    """The exported keypoint graph (image -> x2d, weights, objectness, mask), untrained."""
    return KeypointNetForExport(KeypointNet(keypoint_config_from_mapping(config)))


def depth_export_module(**config: Any) -> DepthNet:
    """The exported depth graph (image -> canonical depth), untrained."""
    return DepthNet(depth_config_from_mapping(config))


def detector_export_module(**config: Any) -> DetectorNetForExport:
    """The exported detector graph (image -> centre_prob, size, offset), untrained."""
    return DetectorNetForExport(DetectorNet(detector_config_from_mapping(config)))


def detector_ensemble_export_module(members: int, **config: Any) -> DetectorEnsembleForExport:
    """The exported graph of `members` detectors of one configuration (their mean), untrained."""
    cfg = detector_config_from_mapping(config)
    return DetectorEnsembleForExport(
        [DetectorNetForExport(DetectorNet(cfg)) for _ in range(int(members))])


def verifier_export_module(**config: Any) -> VerifierNetForExport:
    """The exported box-verifier graph (crops -> class_prob), untrained."""
    return VerifierNetForExport(VerifierNet(verifier_config_from_mapping(config)))


#: every ``architecture.factory`` name the package's exports write -> the callable it names
#: (the torch backend rebuilds a model with a ``.pt`` twin from it)
EXPORT_FACTORIES: dict[str, Any] = {
    KEYPOINT_FACTORY: keypoint_export_module,
    DEPTH_FACTORY: depth_export_module,
    DETECTOR_FACTORY: detector_export_module,
    DETECTOR_ENSEMBLE_FACTORY: detector_ensemble_export_module,
    VERIFIER_FACTORY: verifier_export_module,
}

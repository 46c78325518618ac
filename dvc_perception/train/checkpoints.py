# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Training checkpoints -> networks -> self-describing ONNX models.

A checkpoint written by `train.loop.train` through the `dvc-perception train` command holds,
besides the weights, ``model_kind`` ("keypoint" | "depth" | "detector" | "verifier"),
``model_config`` (the network config as JSON), ``objects`` (for keypoint nets: ids, 3D
keypoints, diameters, symmetries; a detector's or verifier's classes are its config's
``object_ids``) and ``provenance`` (git commit, command, seeds, data). `export_checkpoint` turns
it into ``<name>.onnx`` (opset 17, static shape, metadata in the model) plus ``<name>.pt`` (the
state dict the torch backend loads with the metadata's ``architecture.factory``). A verifier
is exported with a static batch of `VERIFIER_BATCH` crops (the pipeline pads the last chunk).
"""

from __future__ import annotations

import datetime
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dvc_perception.errors import ModelSpecError
from dvc_perception.files import atomic_path
from dvc_perception.models.depth_net import DepthNet
from dvc_perception.models.detector_net import DETECTOR_STRIDE, DetectorNet, DetectorNetForExport
from dvc_perception.models.factory import (
    DEPTH_FACTORY,
    DETECTOR_FACTORY,
    KEYPOINT_FACTORY,
    VERIFIER_FACTORY,
    depth_config_from_mapping,
    detector_config_from_mapping,
    keypoint_config_from_mapping,
    verifier_config_from_mapping,
)
from dvc_perception.models.keypoint_net import HEATMAP_STRIDE, KeypointNet, KeypointNetForExport
from dvc_perception.models.verifier_net import VerifierNet, VerifierNetForExport
from dvc_perception.safe_load import load_torch_file

KEYPOINT_OUTPUTS = KeypointNetForExport.output_names
DEPTH_OUTPUTS = ("depth_canonical",)
DETECTOR_OUTPUTS = DetectorNetForExport.output_names
VERIFIER_OUTPUTS = VerifierNetForExport.output_names
#: static batch of an exported verifier (crops per run; the pipeline pads the last chunk)
VERIFIER_BATCH = 16
#: checkpoint ``model_kind`` -> ``architecture.factory`` of the exported model
FACTORIES = {"keypoint": KEYPOINT_FACTORY, "depth": DEPTH_FACTORY, "detector": DETECTOR_FACTORY,
             "verifier": VERIFIER_FACTORY}
INPUT_NAME = "image"
_REQUIRED = ("task", "model", "model_kind", "model_config", "provenance")


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint (tensors and plain values only) and check what export needs.

    The file is loaded by `load_torch_file` (``weights_only=True``): a pickle holding any other
    object is refused without running it.

    Raises:
        ModelSpecError: missing, unreadable, corrupt or refused file, or missing keys (named).
    """
    path = Path(path)
    ckpt = load_torch_file(path, what="training checkpoint")
    missing = [k for k in _REQUIRED if k not in ckpt] if isinstance(ckpt, Mapping) else _REQUIRED
    if missing:
        raise ModelSpecError(f"{path}: not a dvc_perception training checkpoint, lacks {missing}")
    weights, config = ckpt["model"], ckpt["model_config"]
    if not isinstance(weights, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in weights.values()
    ):
        raise ModelSpecError(f"{path}: checkpoint 'model' must map names to tensors")
    if not isinstance(config, Mapping):
        raise ModelSpecError(f"{path}: checkpoint 'model_config' must be a mapping, got "
                             f"{type(config).__name__}")
    return dict(ckpt)


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> nn.Module:
    """The trained network (eval mode): a Keypoint-, Depth-, Detector- or VerifierNet.

    Raises:
        ModelSpecError: unknown ``model_kind`` or weights that do not fit the config.
    """
    kind = ckpt["model_kind"]
    if kind == "keypoint":
        model: nn.Module = KeypointNet(keypoint_config_from_mapping(ckpt["model_config"]))
    elif kind == "depth":
        model = DepthNet(depth_config_from_mapping(ckpt["model_config"]))
    elif kind == "detector":
        model = DetectorNet(detector_config_from_mapping(ckpt["model_config"]))
    elif kind == "verifier":
        model = VerifierNet(verifier_config_from_mapping(ckpt["model_config"]))
    else:
        raise ModelSpecError(f"checkpoint model_kind must be one of {sorted(FACTORIES)}, got "
                             f"{kind!r}")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise ModelSpecError(f"checkpoint weights do not fit its model_config: {err}") from err
    return model.eval()


def export_metadata(ckpt: Mapping[str, Any], *, command: Sequence[str]) -> dict[str, Any]:
    """The metadata document of the exported model (see engines.base.ModelMetadata).

    Raises:
        ModelSpecError: unknown ``model_kind``.
    """
    kind = ckpt["model_kind"]
    if kind not in FACTORIES:
        raise ModelSpecError(f"checkpoint model_kind must be one of {sorted(FACTORIES)}, got "
                             f"{kind!r}")
    prov = dict(ckpt["provenance"])
    git = prov.get("git", {}) if isinstance(prov.get("git"), Mapping) else {}
    cfg = dict(ckpt["model_config"])
    provenance = {
        "git_commit": str(git.get("commit", "unknown")),
        "git_dirty": git.get("dirty"),
        "command": " ".join(str(c) for c in prov.get("command", [])),
        "date": str(prov.get("date", "")),
        "data_seed": prov.get("data", {}).get("seed") if isinstance(prov.get("data"), Mapping)
        else None,
        "train_seed": prov.get("seeds", {}).get("train"),
        "data": prov.get("data"),
        "epochs": int(ckpt.get("epoch", 0)),
        "final_metrics": {k: v for k, v in dict(ckpt.get("history", [{}])[-1]).items()
                          if k.startswith("val_")} if ckpt.get("history") else {},
        "export_command": " ".join(command),
        "export_date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
    }
    size = ([int(cfg["input_size"])] * 2 if kind == "verifier"
            else [int(cfg["input_width"]), int(cfg["input_height"])])
    doc: dict[str, Any] = {
        "dvc_format": 1,
        "input_size": size,
        # normalisation is inside the graph: feed RGB in [0, 1]
        "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "provenance": provenance,
        "input_format": "float32 NCHW RGB in [0, 1]; ImageNet mean/std applied in the graph",
        "resize": "letterbox: scale min(W/w, H/h), top-left, zero padding; "
                  "u_in = s * (u + 0.5) - 0.5, K_in = [[s,0,s/2-1/2],[0,s,s/2-1/2],[0,0,1]] @ K",
        "architecture": {"factory": FACTORIES[kind], "kwargs": cfg},
        # what the input is: "letterbox" (the whole frame, as `resize` says) or "zoom_crop" (an
        # object-centred engines.preprocess.ZoomCrop of the full-resolution frame, side
        # crop_scale x the detector box's longer side); checkpoints before it: letterbox
        "input_kind": str(ckpt.get("input_kind", "letterbox")),
    }
    if doc["input_kind"] == "zoom_crop":
        if "crop_scale" not in ckpt:
            raise ModelSpecError("checkpoint input_kind 'zoom_crop' lacks its crop_scale")
        doc["crop_scale"] = float(ckpt["crop_scale"])
    if kind == "keypoint":
        objects = list(ckpt.get("objects", []))
        doc.update({
            "task": "keypoints",
            "object_ids": [o["object_id"] for o in objects],
            "keypoints_3d": {o["object_id"]: o["keypoints_obj"] for o in objects},
            "symmetries": {o["object_id"]: o.get("symmetries") for o in objects},
            "diameters_m": {o["object_id"]: o["diameter_m"] for o in objects},
            "output_stride": HEATMAP_STRIDE,
            "outputs": {
                "x2d": "(B, O, K, 2) px in the network input image, pixel centres at integers",
                "weights": "(B, O, K) keypoint confidences in (0, 1), PnP weights",
                "objectness": "(B, O) max of the object mask probability",
                "mask": "(B, O, H/4, W/4) object mask probability",
            },
            # what the pose comes from: the K keypoints, or dense object coordinates at every
            # mask cell (`train pose --dense-coordinates`; checkpoints before it: keypoints)
            "correspondences": "dense_coordinates" if cfg.get("dense_coordinates") else
                               "keypoints",
        })
        if cfg.get("dense_coordinates"):
            doc["outputs"]["coordinates"] = (
                "(B, O, 3, H/4, W/4) m: the object-frame point of object o seen at each cell's "
                "centre (input px 4 j + 1.5); meaningful where mask >= 0.5")
    elif kind == "verifier":
        doc.update({
            "task": "verifier",
            "object_ids": [str(i) for i in cfg["object_ids"]],
            "batch": VERIFIER_BATCH,
            "resize": "zoom crop of the full-resolution frame around each detector box: "
                      "engines.preprocess.ZoomCrop.from_box(box_xywh, (W, H), input_size, "
                      "scale=crop_scale), bilinear, zero outside the frame",
            "outputs": {
                "class_prob": f"({VERIFIER_BATCH}, 1 + O) softmax class probabilities of each "
                              f"crop: column 0 background, column 1 + o object_ids[o]",
            },
        })
    elif kind == "detector":
        doc.update({
            "task": "detector",
            "object_ids": [str(i) for i in cfg["object_ids"]],
            "output_stride": DETECTOR_STRIDE,
            "outputs": {
                "centre_prob": "(B, O, H/4, W/4) probability that an instance centre of object "
                               "class o (object_ids order) falls in the cell",
                "size": "(B, 2, H/4, W/4) box (width, height) px in the network input",
                "offset": "(B, 2, H/4, W/4) (x, y) sub-cell centre position [cells] in [0, 1)",
            },
            "decode": "peaks (3x3 local maxima >= min score) of centre_prob at cell (jx, jy): "
                      "box x = (jx + offset_x) * stride - w / 2, y = (jy + offset_y) * stride - "
                      "h / 2, (w, h) = size; per-class NMS "
                      "(dvc_perception.pipeline.detection.decode_detections)",
            "box_format": "(x, y, w, h) px in the network input, BOP/COCO: x, y the index of "
                          "the top-left pixel",
        })
    else:
        doc.update({
            "task": "depth",
            "depth_unit": "m",
            "focal_normalization": {"reference_focal_px": float(cfg.get("focal0_px", 300.0))},
            "outputs": {
                "depth_canonical": "(B, 1, H, W) m for focal reference_focal_px; metric depth = "
                                   "depth_canonical * fx_input_px / reference_focal_px",
            },
        })
    return doc


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    *,
    command: Sequence[str] | None = None,
    opset: int = 17,
    torch_weights: bool = True,
) -> Path:
    """Export a training checkpoint to ONNX (+ the torch-backend state dict beside it).

    Args:
        checkpoint: ``best.pt`` / ``last.pt`` of a training run.
        onnx_path: output ``.onnx`` path; ``<stem>.pt`` is written next to it.
        command: the command line recorded in the metadata (default `sys.argv`).
        opset: ONNX opset (17: TensorRT 8.6).
        torch_weights: also write ``<stem>.pt`` for the torch backend (as large as the ONNX
            file; leave it out to halve what a shipped model costs).

    Returns:
        The ONNX path.
    """
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    cfg = ckpt["model_config"]
    if ckpt["model_kind"] == "verifier":  # static batch: the example decides it
        side = int(cfg["input_size"])
        example = torch.zeros(VERIFIER_BATCH, 3, side, side)
    else:
        example = torch.zeros(1, 3, int(cfg["input_height"]), int(cfg["input_width"]))
    if ckpt["model_kind"] == "keypoint":
        module: nn.Module = KeypointNetForExport(model)  # type: ignore[arg-type]
        outputs: Sequence[str] = module.output_names  # type: ignore[assignment]
    elif ckpt["model_kind"] == "detector":
        module, outputs = DetectorNetForExport(model), DETECTOR_OUTPUTS  # type: ignore[arg-type]
    elif ckpt["model_kind"] == "verifier":
        module, outputs = VerifierNetForExport(model), VERIFIER_OUTPUTS  # type: ignore[arg-type]
    else:
        module, outputs = model, DEPTH_OUTPUTS
    meta = export_metadata(ckpt, command=list(command if command is not None else sys.argv))
    return _write_export(module, example, onnx_path, outputs, meta, opset, torch_weights)


def _write_export(module: nn.Module, example: torch.Tensor, onnx_path: str | os.PathLike[str],
                  outputs: Sequence[str], meta: dict[str, Any], opset: int,
                  torch_weights: bool) -> Path:
    """Trace `module` (in eval mode) on `example` into `onnx_path`, with `meta`.

    Also its state dict into ``<stem>.pt`` when `torch_weights`. Returns the ONNX path.
    """
    from dvc_perception.engines.export import export_onnx

    module.eval()
    with warnings.catch_warnings():
        # shape checks turn sizes into Python ints while tracing: intended, the shape is static
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        path = export_onnx(module, (example,), onnx_path, input_names=[INPUT_NAME],
                           output_names=list(outputs), metadata=meta, opset=opset)
    if torch_weights:
        weights = Path(path).with_suffix(".pt")
        with atomic_path(weights) as tmp:
            torch.save(module.state_dict(), tmp)
    return Path(path)


def export_detector_ensemble(
    checkpoints: Sequence[str | os.PathLike[str]],
    onnx_path: str | os.PathLike[str],
    *,
    command: Sequence[str] | None = None,
    opset: int = 17,
    torch_weights: bool = True,
) -> Path:
    """Export several detector checkpoints as one ONNX graph that outputs their mean.

    The members must be detectors of one configuration (objects, input size, widths). The
    metadata is the first member's, with the ensemble's factory (``members``: how many) and
    ``provenance.members``: each member's provenance.

    Raises:
        ModelSpecError: fewer than 2 checkpoints, a member that is not a detector, or members
            whose configurations differ (naming the first difference).
    """
    from dvc_perception.models.detector_net import DetectorEnsembleForExport
    from dvc_perception.models.factory import DETECTOR_ENSEMBLE_FACTORY

    if len(checkpoints) < 2:
        raise ModelSpecError(f"a detector ensemble needs at least 2 checkpoints, got "
                             f"{len(checkpoints)}")
    ckpts = [load_checkpoint(c) for c in checkpoints]
    first = ckpts[0]
    for path, ckpt in zip(checkpoints, ckpts):
        if ckpt["model_kind"] != "detector":
            raise ModelSpecError(f"{path}: an ensemble is of detectors, this checkpoint is a "
                                 f"{ckpt['model_kind']!r} model")
        cfg, ref = dict(ckpt["model_config"]), dict(first["model_config"])
        if cfg != ref:
            key = sorted(k for k in set(cfg) | set(ref) if cfg.get(k) != ref.get(k))[0]
            raise ModelSpecError(f"{path}: model_config {key!r} is {cfg.get(key)!r}, the first "
                                 f"member's {ref.get(key)!r}: members must be alike")
    module = DetectorEnsembleForExport(
        [DetectorNetForExport(model_from_checkpoint(c)) for c in ckpts])  # type: ignore[arg-type]
    cmd = list(command if command is not None else sys.argv)
    meta = export_metadata(first, command=cmd)
    meta["architecture"] = {"factory": DETECTOR_ENSEMBLE_FACTORY,
                            "kwargs": {"members": len(ckpts), **dict(first["model_config"])}}
    meta["provenance"]["members"] = [export_metadata(c, command=cmd)["provenance"]
                                     for c in ckpts]
    cfg = first["model_config"]
    example = torch.zeros(1, 3, int(cfg["input_height"]), int(cfg["input_width"]))
    return _write_export(module, example, onnx_path, DETECTOR_OUTPUTS, meta, opset,
                         torch_weights)

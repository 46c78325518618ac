# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Assemble a training run (data, objects, network, task) and hand it to `loop.train`.

`dvc-perception train pose|depth|detect|verify` parses its arguments into a `RunSpec` and
calls `run_training`; tests call it directly.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvc_perception.errors import ConfigError, InputError, ModelSpecError
from dvc_perception.models.depth_net import DepthNet, DepthNetConfig
from dvc_perception.models.detector_net import DetectorNet, DetectorNetConfig
from dvc_perception.models.keypoint_net import KeypointNet, KeypointNetConfig
from dvc_perception.models.verifier_net import VerifierNet, VerifierNetConfig
from dvc_perception.train.bop_frames import BopFrameSource, is_bop_scene_dir
from dvc_perception.train.config import DepthLossConfig, PoseLossConfig, TrainConfig
from dvc_perception.train.datasets import (
    AugmentConfig,
    ConcatFrameSource,
    DepthDataset,
    FrameSource,
    ListFrameSource,
    ObjectInfo,
    PoseDataset,
    ZoomSampling,
    load_object_infos,
    object_info_to_mapping,
    split_train_val,
)
from dvc_perception.train.detection import DetectionDataset
from dvc_perception.train.loop import train
from dvc_perception.train.records import TrainResult, to_jsonable
from dvc_perception.train.tasks import DepthTask, DetectionTask, PoseTask, VerifierTask
from dvc_perception.train.verification import VerifierDataset, VerifySampling

#: training modes: the keypoint network, the depth network, the detector, the box verifier
MODES = ("pose", "depth", "detect", "verify")


@dataclass(frozen=True)
class RunSpec:
    """One training run.

    Attributes:
        mode: "pose" (keypoint network), "depth", "detect" (the CenterNet-style detector) or
            "verify" (the box verifier: a crop classifier, `models.verifier_net`).
        out_dir: run directory (checkpoints, logs, provenance).
        data_dir: synthetic shard directory (`render/synth.py`) or BOP scene folder (real
            labelled images, `open_frame_source`), or None with `toy_frames`.
        extra_data_dirs: more such directories appended to `data_dir` (e.g. shards generated
            in parallel with other seeds, or a BOP scene next to synthetic shards).
        val_data_dir: separate validation shards (generated with another seed), or None to split
            `val_fraction` of `data_dir` off with `split_seed`.
        val_fraction: validation share when `val_data_dir` is None.
        split_seed: seed of that split.
        toy_frames: > 0 trains on that many procedural toy frames (`train.toy`) instead of shards
            (smoke runs and tests).
        objects: object ids / YAML paths the keypoint network (pose mode), the detector
            (detect mode: its classes, every instance of each) or the verifier (verify mode:
            its classes) learns.
        input_width: network input width px (verify: the crop side; square).
        input_height: network input height px.
        augment: augmentation of the training split (None = off).
        crop: train on (width, height) crops of the input (pose and detect: mostly around
            objects; detect: boxes clipped to the crop); faster per sample; validation always
            uses the whole input. None: whole input.
        zoom: pose mode only, not with `crop`: train the keypoint network of the two-stage
            pipeline on object-centred zoom crops of the full-resolution frame (`ZoomSampling`:
            one jittered visible-mask box per item; input size = the crop's); validation
            crops the un-jittered box (a perfect detector). The checkpoint records
            ``input_kind`` "zoom_crop" and ``crop_scale`` for the export; "letterbox" without.
        train: optimisation settings.
        pose_loss: pose-loss weights (pose mode).
        depth_loss: depth-loss weights (depth mode).
        keypoint_net: keypoint architecture overrides (input size and objects are set here).
        depth_net: depth architecture overrides (input size is set here).
        detector_net: detector architecture overrides (input size and objects are set here).
        verifier_net: verifier architecture overrides (input size and objects are set here).
        verify: verify mode: how the crops of a frame are picked and labelled
            (`train.verification.VerifySampling`: crop scale, crops per frame, jitter, ...).
        hard_negatives: verify mode: an exported detector ONNX model whose candidate boxes on
            every training and validation frame (computed once before training, cached in
            ``out_dir/verify_candidates.npz``) become extra labelled crops: its wrong boxes are
            the hard background examples. None: true and random boxes only.
        resume: continue from ``out_dir/last.pt``.
        init_checkpoint: start from the network weights of this checkpoint (fine-tuning: a new
            optimiser and schedule; the architecture and objects must match), or None.
        init_encoder: copy only the image encoder (``encoder.*``) from this checkpoint, which
            may be of another network kind: all three networks share the `Encoder`
            architecture, so a trained pose network's encoder (which already finds the objects
            and their apparent size) starts the depth network or the detector. None: random
            initialisation.
    """

    mode: str
    out_dir: str
    data_dir: str | None = None
    extra_data_dirs: tuple[str, ...] = ()
    val_data_dir: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    toy_frames: int = 0
    objects: tuple[str, ...] = ("demo_object",)
    input_width: int = 320
    input_height: int = 240
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    crop: tuple[int, int] | None = None
    zoom: ZoomSampling | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    pose_loss: PoseLossConfig = field(default_factory=PoseLossConfig)
    depth_loss: DepthLossConfig = field(default_factory=DepthLossConfig)
    keypoint_net: Mapping[str, Any] = field(default_factory=dict)
    depth_net: Mapping[str, Any] = field(default_factory=dict)
    detector_net: Mapping[str, Any] = field(default_factory=dict)
    verifier_net: Mapping[str, Any] = field(default_factory=dict)
    verify: VerifySampling = field(default_factory=VerifySampling)
    hard_negatives: str | None = None
    resume: bool = False
    init_checkpoint: str | None = None
    init_encoder: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if (self.data_dir is None) == (self.toy_frames <= 0):
            raise ConfigError("give exactly one of data_dir and toy_frames > 0")
        if self.zoom is not None and self.mode != "pose":
            raise ConfigError(f"zoom crops apply to pose training only, not {self.mode!r}")
        if self.zoom is not None and self.crop is not None:
            raise ConfigError("zoom crops and crop exclude each other: give one")
        if self.hard_negatives is not None and self.mode != "verify":
            raise ConfigError(f"hard negatives apply to verify training only, not {self.mode!r}")
        if self.mode == "verify":
            if self.input_width != self.input_height:
                raise ConfigError(f"train verify: the crop is square, --input-size SxS (e.g. "
                                  f"64x64), got {self.input_width}x{self.input_height}")
            if self.crop is not None:
                raise ConfigError("train verify: --crop does not apply (the input is a zoom "
                                  "crop of each candidate box)")


def open_frame_source(path: str | os.PathLike[str], mode: str, *, with_depth: bool = False
                      ) -> FrameSource:
    """The frames of a training data directory: synthetic shards or a real BOP scene.

    Args:
        path: a shard directory written by ``dvc-perception synth`` (``index.json``), or a BOP
            scene folder (``scene_gt.json`` and ``rgb/``, e.g. ``lmo/test/000002``; see
            `train.bop_frames.BopFrameSource`).
        mode: "pose", "detect" and "verify" keep RGB and instance masks (shards: in memory),
            "depth" RGB and depth.
        with_depth: "pose" also keeps depth (the dense-coordinate targets need it; shards hold
            it as float16 in memory, 0.6 MB per 640x480 frame).

    Raises:
        ConfigError: the directory holds no frames, a BOP scene has no known object, or
            "depth" mode on a BOP scene without depth.
        InputError: it is neither layout, or a file of it is missing or bad.
    """
    from dvc_perception.train.shards import ShardFrameSource

    p = Path(path)
    if (p / "index.json").is_file():
        keep = ("rgb", "depth") if mode == "depth" else ("rgb", "instance_ids")
        if with_depth and mode == "pose":
            return ShardFrameSource(p, keep=(*keep, "depth"), depth_dtype=np.float16)
        return ShardFrameSource(p, keep=keep)
    if is_bop_scene_dir(p):
        return BopFrameSource(p, with_depth=mode == "depth" or with_depth,
                              with_masks=mode != "depth")
    raise InputError(f"training data {p}: expected a synthetic shard directory (index.json, "
                     f"from `dvc-perception synth --out`) or a BOP scene folder "
                     f"(scene_gt.json, scene_camera.json and rgb/, e.g. lmo/test/000002)")


def _frame_sources(spec: RunSpec) -> tuple[FrameSource, FrameSource, dict[str, Any]]:
    """(train, validation, data provenance)."""
    if spec.toy_frames > 0:
        from dvc_perception.train.toy import toy_frames

        n_val = max(2, spec.toy_frames // 8)
        # verify: the input is a crop, the frames have a camera's size
        w, h = (160, 120) if spec.mode == "verify" else (spec.input_width, spec.input_height)
        train_src = ListFrameSource(toy_frames(spec.toy_frames, width=w, height=h,
                                               seed=spec.split_seed))
        val_src = ListFrameSource(toy_frames(n_val, width=w, height=h,
                                             seed=spec.split_seed + 1))
        return train_src, val_src, {"kind": "toy", "frames": spec.toy_frames, "val_frames": n_val,
                                    "seed": spec.split_seed}
    depth = bool(spec.keypoint_net.get("dense_coordinates", False))
    first = open_frame_source(str(spec.data_dir), spec.mode, with_depth=depth)
    extra = [open_frame_source(d, spec.mode, with_depth=depth) for d in spec.extra_data_dirs]
    full: FrameSource = ConcatFrameSource([first, *extra]) if extra else first
    # the top-level keys describe `data_dir`, the extra_* lists the extra directories;
    # "objects" are those of every training directory (detect checks --objects against them)
    data: dict[str, Any] = {"kind": _data_kind(first), "dir": str(Path(str(spec.data_dir))),
                            "frames": len(full), "seed": _data_seed(first),
                            "synth_config": getattr(first, "index", {}).get("config"),
                            "objects": sorted(set().union(*(_data_objects(s)
                                                            for s in (first, *extra))))}
    if isinstance(first, BopFrameSource):
        data["bop"] = _bop_provenance(first)
    if extra:
        data["extra_dirs"] = list(spec.extra_data_dirs)
        data["extra_kinds"] = [_data_kind(e) for e in extra]
        data["extra_seeds"] = [_data_seed(e) for e in extra]
        data["extra_bop"] = [_bop_provenance(e) if isinstance(e, BopFrameSource) else None
                             for e in extra]
    if spec.val_data_dir is not None:
        val_src = open_frame_source(spec.val_data_dir, spec.mode, with_depth=depth)
        data.update({"val_dir": str(spec.val_data_dir), "val_kind": _data_kind(val_src),
                     "val_frames": len(val_src), "val_seed": _data_seed(val_src)})
        return full, val_src, data
    train_src, val_src = split_train_val(full, spec.val_fraction, spec.split_seed)
    data.update({"val_fraction": spec.val_fraction, "split_seed": spec.split_seed,
                 "val_frames": len(val_src)})
    return train_src, val_src, data


def _data_seed(source: Any) -> Any:
    return getattr(source, "seed", None)


def _data_kind(source: Any) -> str:
    """"bop scene" (real labelled images) or "synthetic shards"."""
    return "bop scene" if isinstance(source, BopFrameSource) else "synthetic shards"


def _data_objects(source: Any) -> set[str]:
    """Object ids a training source annotates (empty when it does not say)."""
    if isinstance(source, BopFrameSource):
        return set(source.object_ids)
    return set(getattr(source, "index", {}).get("objects", {}))


def _bop_provenance(source: BopFrameSource) -> dict[str, Any]:
    """Where a BOP scene's frames and masks came from."""
    return {"dataset_dir": str(source.dataset_dir), "scene": str(source.scene_dir),
            "frames": len(source), "objects": list(source.object_ids),
            "skipped_objects": list(source.skipped_objects), "masks": source.mask_source}


def build_keypoint_net(spec: RunSpec, objects: list[ObjectInfo]) -> KeypointNet:
    """The (seeded, untrained) keypoint network for `objects`."""
    n_kp = {int(o.keypoints_obj.shape[0]) for o in objects}
    if len(n_kp) != 1:
        raise ConfigError(f"all objects need the same keypoint count, got {sorted(n_kp)}")
    dense = bool(spec.keypoint_net.get("dense_coordinates", False))
    cfg = KeypointNetConfig(**{
        **{k: tuple(v) if isinstance(v, list) else v for k, v in spec.keypoint_net.items()},
        **({"coordinate_scales_m": tuple(0.5 * o.diameter_m for o in objects)} if dense else {}),
        "object_ids": tuple(o.object_id for o in objects),
        "num_keypoints": n_kp.pop(),
        "input_width": spec.input_width,
        "input_height": spec.input_height,
    })
    torch.manual_seed(spec.train.seed)
    return KeypointNet(cfg)


def build_depth_net(spec: RunSpec) -> DepthNet:
    """The (seeded, untrained) depth network."""
    cfg = DepthNetConfig(**{
        **{k: tuple(v) if isinstance(v, list) else v for k, v in spec.depth_net.items()},
        "input_width": spec.input_width,
        "input_height": spec.input_height,
    })
    torch.manual_seed(spec.train.seed)
    return DepthNet(cfg)


def build_detector_net(spec: RunSpec, object_ids: list[str]) -> DetectorNet:
    """The (seeded, untrained) detector for the classes `object_ids`."""
    cfg = DetectorNetConfig(**{
        **{k: tuple(v) if isinstance(v, list) else v for k, v in spec.detector_net.items()},
        "object_ids": tuple(object_ids),
        "input_width": spec.input_width,
        "input_height": spec.input_height,
    })
    torch.manual_seed(spec.train.seed)
    return DetectorNet(cfg)


def build_verifier_net(spec: RunSpec, object_ids: list[str]) -> VerifierNet:
    """The (seeded, untrained) box verifier for the classes `object_ids`."""
    cfg = VerifierNetConfig(**{
        **{k: tuple(v) if isinstance(v, list) else v for k, v in spec.verifier_net.items()},
        "object_ids": tuple(object_ids),
        "input_size": spec.input_width,
    })
    torch.manual_seed(spec.train.seed)
    return VerifierNet(cfg)


def detector_object_ids(spec: RunSpec, data: Mapping[str, Any]) -> list[str]:
    """The detector's (verifier's) classes: the toy cube with toy frames, else `spec.objects`.

    Names are resolved like pose training's (``config/objects/<id>.yaml`` or YAML paths, so a
    path gives the id written in it).

    Raises:
        ConfigError: an object the training shards do not hold (when their index lists them),
            or the same object twice.
    """
    if spec.toy_frames > 0:
        from dvc_perception.train.toy import toy_object

        return [toy_object().object_id]
    from dvc_perception.render.objects import find_object_yaml, load_object

    ids = [str(load_object(find_object_yaml(n)).object_id) for n in spec.objects]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--objects: each object once, got {ids}")
    present = data.get("objects") or []
    missing = [i for i in ids if present and i not in present]
    if missing:
        raise ConfigError(f"--objects {missing}: not in the training shards {data.get('dir')} "
                          f"(they hold {list(present)})")
    return ids


def input_kind(spec: RunSpec) -> dict[str, Any]:
    """What the network's input is, for the checkpoint and the exported metadata.

    ``{"input_kind": "zoom_crop", "crop_scale": s}`` for zoom-crop training and the box
    verifier (serving must cut `engines.preprocess.ZoomCrop` crops with that scale), else
    ``{"input_kind": "letterbox"}``.
    """
    if spec.mode == "verify":
        return {"input_kind": "zoom_crop", "crop_scale": float(spec.verify.crop_scale)}
    if spec.zoom is None:
        return {"input_kind": "letterbox"}
    return {"input_kind": "zoom_crop", "crop_scale": float(spec.zoom.crop_scale)}


def run_training(spec: RunSpec, *, provenance: Mapping[str, Any] | None = None) -> TrainResult:
    """Build data, network and task from `spec` and train (see `loop.train`)."""
    if spec.hard_negatives is not None:  # a wrong file fails before the data is read
        from dvc_perception.train.verification import open_candidate_detector

        open_candidate_detector(spec.hard_negatives)
    train_src, val_src, data = _frame_sources(spec)
    prov = {"data": data, "run_spec": _spec_json(spec), **dict(provenance or {})}
    if spec.mode == "pose":
        if spec.toy_frames > 0:
            from dvc_perception.train.toy import toy_object

            objects = [toy_object()]
        else:
            objects = load_object_infos(spec.objects)
        model: torch.nn.Module = build_keypoint_net(spec, objects)
        task: Any = PoseTask(objects, spec.pose_loss)
        dense = bool(spec.keypoint_net.get("dense_coordinates", False))
        train_set: Any = PoseDataset(train_src, objects, spec.input_width, spec.input_height,
                                     augment=spec.augment, seed=spec.train.seed, crop=spec.crop,
                                     zoom=spec.zoom, coordinates=dense)
        val_set: Any = PoseDataset(val_src, objects, spec.input_width, spec.input_height,
                                   zoom=spec.zoom.exact() if spec.zoom is not None else None,
                                   coordinates=dense)
        extra = {"model_kind": "keypoint",
                 "model_config": dataclasses.asdict(model.config),  # type: ignore[arg-type]
                 "objects": [object_info_to_mapping(o) for o in objects],
                 **input_kind(spec)}
    elif spec.mode == "detect":
        ids = detector_object_ids(spec, data)
        model = build_detector_net(spec, ids)
        task = DetectionTask(ids)
        train_set = DetectionDataset(train_src, ids, spec.input_width, spec.input_height,
                                     augment=spec.augment, seed=spec.train.seed, crop=spec.crop)
        val_set = DetectionDataset(val_src, ids, spec.input_width, spec.input_height)
        extra = {"model_kind": "detector",
                 "model_config": dataclasses.asdict(model.config),  # type: ignore[arg-type]
                 "object_ids": list(ids), **input_kind(spec)}
    elif spec.mode == "verify":
        ids = detector_object_ids(spec, data)
        model = build_verifier_net(spec, ids)
        task = VerifierTask(ids)
        cands: dict[str, Any] = {"train": None, "val": None}
        if spec.hard_negatives is not None:
            cands, prov["hard_negatives"] = _verify_candidates(spec, train_src, val_src, data)
        size = spec.input_width
        train_set = VerifierDataset(train_src, ids, size, sampling=spec.verify,
                                    candidates=cands["train"], augment=spec.augment,
                                    seed=spec.train.seed)
        val_set = VerifierDataset(val_src, ids, size, sampling=spec.verify,
                                  candidates=cands["val"], seed=spec.train.seed)
        extra = {"model_kind": "verifier",
                 "model_config": dataclasses.asdict(model.config),  # type: ignore[arg-type]
                 "object_ids": list(ids), **input_kind(spec)}
    else:
        model = build_depth_net(spec)
        task = DepthTask(model.config.focal0_px, spec.depth_loss)  # type: ignore[union-attr]
        train_set = DepthDataset(train_src, spec.input_width, spec.input_height,
                                 augment=spec.augment, seed=spec.train.seed, crop=spec.crop)
        val_set = DepthDataset(val_src, spec.input_width, spec.input_height)
        extra = {"model_kind": "depth",
                 "model_config": dataclasses.asdict(model.config),  # type: ignore[arg-type]
                 **input_kind(spec)}
    if spec.init_checkpoint and not spec.resume:
        _load_initial_weights(model, spec.init_checkpoint, extra["model_config"])
        prov["init_checkpoint"] = str(spec.init_checkpoint)
    if spec.init_encoder and not spec.resume:
        _load_encoder_weights(model, spec.init_encoder)
        prov["init_encoder"] = str(spec.init_encoder)
    result = train(task, model, train_set, val_set, spec.train, spec.out_dir, resume=spec.resume,
                   provenance=prov, checkpoint_extra=extra)
    return result


def _verify_candidates(spec: RunSpec, train_src: FrameSource, val_src: FrameSource,
                       data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hard-negative detector's candidate boxes on the train and validation frames.

    Computed once (`train.verification.cached_candidates`) and cached in the run directory,
    keyed by the data directories, the split and the detector file's sha256.
    """
    from dvc_perception.train.device import resolve_device
    from dvc_perception.train.verification import CACHE_NAME, cached_candidates

    assert spec.hard_negatives is not None
    key = {"data": [str(spec.data_dir), *spec.extra_data_dirs], "val_data": spec.val_data_dir,
           "val_fraction": spec.val_fraction, "split_seed": spec.split_seed,
           "toy_frames": spec.toy_frames, "frames": [len(train_src), len(val_src)],
           "data_seeds": [data.get("seed"), *data.get("extra_seeds", [])]}
    table, info = cached_candidates(
        {"train": train_src, "val": val_src}, spec.hard_negatives,
        Path(spec.out_dir) / CACHE_NAME, key, progress=spec.train.progress,
        device=resolve_device(spec.train.device))
    counts = [len(b) for b in table["train"]]
    info["train_boxes_per_frame"] = float(np.mean(counts)) if counts else 0.0
    return table, info


def _load_initial_weights(model: torch.nn.Module, path: str, config: Mapping[str, Any]) -> None:
    """Copy a checkpoint's network weights into `model` (same architecture and objects).

    The checkpoint is read by `load_checkpoint` (``weights_only=True``: no code runs from it).

    Raises:
        ModelSpecError: no such file, or not a training checkpoint.
        ConfigError: the checkpoint's network has another configuration.
    """
    from dvc_perception.train.checkpoints import load_checkpoint

    ckpt = load_checkpoint(path)
    theirs = to_jsonable(ckpt.get("model_config"))
    if theirs != to_jsonable(config):
        raise ConfigError(f"--init {path}: network configuration {theirs} differs from this "
                          f"run's {to_jsonable(config)}")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise ModelSpecError(f"--init {path}: its weights do not fit its model_config: "
                             f"{' '.join(str(err).split())[:300]}") from err


def _load_encoder_weights(model: torch.nn.Module, path: str) -> None:
    """Copy the ``encoder.*`` weights of a checkpoint into `model`.

    The checkpoint is read by `load_checkpoint` (``weights_only=True``: no code runs from it).

    Raises:
        ModelSpecError: no such file, or not a training checkpoint.
        ConfigError: the checkpoint has no encoder, or one of another shape.
    """
    from dvc_perception.train.checkpoints import load_checkpoint

    ckpt = load_checkpoint(path)
    theirs = {k: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    mine = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    if not theirs or set(theirs) != set(mine) or any(
        theirs[k].shape != mine[k].shape for k in mine
    ):
        raise ConfigError(f"--init-encoder {path}: its encoder does not match this network's "
                          f"({len(theirs)} vs {len(mine)} tensors, or other shapes)")
    model.load_state_dict(theirs, strict=False)


def _spec_json(spec: RunSpec) -> dict[str, Any]:
    return to_jsonable(spec)

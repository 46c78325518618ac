# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception train pose|depth|detect|verify`: train one of the networks.

``pose``: the keypoint network; ``depth``; ``detect``: the detector; ``verify``: the box
verifier.

Examples::

    dvc-perception train pose --data data/demo_train --val-data data/demo_val \
        --objects demo_object --out runs/pose_demo --epochs 12
    dvc-perception train depth --data data/demo_train --val-data data/demo_val --out runs/depth
    dvc-perception train detect --data data/demo_train --val-data data/demo_val \
        --objects demo_object --out runs/detector_demo
    dvc-perception train verify --data data/lmo8_det_s1/a data/lmo8_det_s1/b \
        --val-fraction 0.05 --objects lmo_obj_01 lmo_obj_05 --input-size 64x64 \
        --hard-negatives models/detector_lmo.onnx --out runs/verifier_lmo
    dvc-perception train pose ... --resume          # continue from runs/.../last.pt
    torchrun --nproc_per_node 2 -m dvc_perception.cli train pose ...   # data-parallel
    dvc-perception train pose --data data/synth_a ../shared/data/lmo/test/000002 \
        --objects lmo_obj_05 --out runs/pose_real     # synthetic + real labelled frames

``--data`` takes synthetic shard directories and BOP-format scene folders of real labelled
images (``rgb/``, ``scene_camera.json``, ``scene_gt.json``, optionally ``mask_visib/`` and
``depth/``; the objects are found by mesh sha256 in ``<dataset>/models/``), mixed in one run
(`train.bop_frames.BopFrameSource`; masks from ``mask_visib/`` or rendered from the poses).

Options left out keep the defaults of `TrainConfig`, `PoseLossConfig` and `AugmentConfig`.
Options of one mode only (the pose-loss options, ``--silog-lambda``) are refused in the others
with a one-line error. `detect` takes ``--objects`` (the detector's classes; every instance of
each in a frame is a box), ``--crop`` (crops mostly around objects, boxes clipped to the crop),
``--init`` (a detector checkpoint of the same classes and size) and ``--init-encoder`` (any of
the three networks' checkpoints). ``pose --zoom-crops [--crop-scale 1.5] --input-size 128x128``
trains the keypoint network of the two-stage pipeline on object-centred zoom crops
(`train.datasets.ZoomSampling`); the export records ``input_kind: zoom_crop`` and its
``crop_scale``. ``verify`` trains the box verifier (`models.verifier_net`): ``--input-size
SxS`` (square, default 64x64) zoom crops of the full-resolution frame around true (jittered),
random and, with ``--hard-negatives DETECTOR.onnx``, the detector's candidate boxes, labelled
background or the class of the instance they cover (`train.verification`); ``--crops-per-frame``
crops per sample (a step sees batch size x that many); ``--crop-scale`` as for zoom crops.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from dvc_perception.errors import ConfigError


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        msg = f"expected WIDTHxHEIGHT, e.g. 320x240, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from err
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `train`."""
    parser.add_argument("mode", choices=("pose", "depth", "detect", "verify"),
                        help="which network to train: keypoints, depth, the detector or the "
                             "box verifier (a crop classifier: background or which object)")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, logs)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", nargs="+",
                     help="synthetic shard directories (dvc-perception synth --out) and/or "
                          "BOP scene folders of real labelled images (rgb/, scene_gt.json, "
                          "scene_camera.json; e.g. lmo/test/000002)")
    src.add_argument("--toy", type=int, metavar="N",
                     help="train on N procedural toy frames instead (smoke test)")
    parser.add_argument("--val-data",
                        help="validation shards (generated with another seed) or BOP scene")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="validation share of --data when --val-data is absent (default 0.1)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of that split")
    parser.add_argument("--objects", nargs="+", default=None,
                        help="object ids (config/objects/<id>.yaml) or YAML paths (pose and "
                             "detect; default demo_object; not with --toy, which has its own "
                             "object)")
    parser.add_argument("--input-size", type=_size, default=None,
                        help="network input WIDTHxHEIGHT, multiples of 16 (default 320x240; "
                             "verify: the square crop, default 64x64)")
    parser.add_argument("--crop", type=_size,
                        help="train on WIDTHxHEIGHT crops (pose, detect: mostly around "
                             "objects); faster per sample; validation uses the whole input")
    parser.add_argument("--zoom-crops", action="store_true",
                        help="pose: train the two-stage pipeline's keypoint network on "
                             "object-centred crops of the full-resolution frame, one instance "
                             "per sample, its visible box jittered like a detector's (centre "
                             "+-0.1 of the box side, size x0.9-1.15); validation crops the "
                             "un-jittered box (a perfect detector); --input-size is the crop's "
                             "(e.g. 128x128); not with --crop")
    parser.add_argument("--crop-scale", type=float,
                        help="with --zoom-crops, and verify: crop side in units of the box's "
                             "longer side (default 1.5, as the two-stage source's crop_scale)")
    parser.add_argument("--crops-per-frame", type=int,
                        help="verify: labelled crops per frame and sample, about half of them "
                             "background (default 8)")
    parser.add_argument("--hard-negatives", metavar="DETECTOR_ONNX",
                        help="verify: an exported detector (e.g. models/detector_lmo.onnx); its "
                             "candidate boxes on every frame (computed once, cached in the run "
                             "directory) become extra crops, its wrong boxes the hard "
                             "background examples")
    parser.add_argument("--dense-coordinates", action="store_true",
                        help="pose: add the dense object-coordinate head (2D-3D correspondences "
                             "at every mask cell, CDPN / GDR-Net style); the pipeline then "
                             "solves PnP on them instead of the keypoints")
    parser.add_argument("--coordinate-weight", type=float,
                        help="weight of the dense-coordinate loss (with --dense-coordinates)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="samples per step per process")
    parser.add_argument("--lr", type=float, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--seed", type=int, help="initialisation/shuffle/augmentation seed")
    parser.add_argument("--workers", type=int, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int,
                        help="torch threads per process (default: torch's; 1 on shared CPUs)")
    parser.add_argument("--precision", choices=("fp32", "bf16"),
                        help="fp32 (default), or bf16 mixed precision (about 3x faster on CPUs "
                             "with AVX512-BF16/AMX; heads, losses and PnP stay float32/64)")
    parser.add_argument("--device",
                        help="auto (default: CUDA when each process gets its own GPU, else "
                             "CPU), cpu, cuda or cuda:N; under torchrun on CUDA each process "
                             "takes its LOCAL_RANK's GPU")
    parser.add_argument("--max-steps-per-epoch", type=int)
    parser.add_argument("--val-every", type=int, help="evaluate every N epochs")
    parser.add_argument("--no-augment", action="store_true", help="turn augmentation off")
    parser.add_argument("--no-pose-loss", action="store_true",
                        help="pose mode: drop the loss through solve_pnp (ablation)")
    parser.add_argument("--pose-weight", type=float, help="weight of the pose loss")
    parser.add_argument("--keypoint-weight", type=float,
                        help="weight of the soft-argmax keypoint L1 loss [per px]")
    parser.add_argument("--silog-lambda", type=float,
                        help="depth: variance weight of the SILog loss (1 = fully scale "
                             "invariant, 0 = log RMSE; default 0.85)")
    parser.add_argument("--pose-warmup-epochs", type=int,
                        help="epochs before the pose loss starts")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--init", metavar="CKPT",
                        help="start from this checkpoint's network weights (fine-tuning; new "
                             "optimiser and schedule)")
    parser.add_argument("--init-encoder", metavar="CKPT",
                        help="start the image encoder from this checkpoint's (e.g. the trained "
                             "pose network's encoder for the depth network)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _given(args: argparse.Namespace, mapping: dict[str, str]) -> dict[str, Any]:
    """{field: value} for the options the user gave (others keep the dataclass default)."""
    return {f: getattr(args, a) for a, f in mapping.items() if getattr(args, a) is not None}


#: options that only one mode uses: option -> (its mode, is it given?)
_MODE_ONLY: dict[str, tuple[str, Any]] = {
    "--silog-lambda": ("depth", lambda a: a.silog_lambda is not None),
    "--no-pose-loss": ("pose", lambda a: a.no_pose_loss),
    "--pose-weight": ("pose", lambda a: a.pose_weight is not None),
    "--keypoint-weight": ("pose", lambda a: a.keypoint_weight is not None),
    "--pose-warmup-epochs": ("pose", lambda a: a.pose_warmup_epochs is not None),
    "--zoom-crops": ("pose", lambda a: a.zoom_crops),
    "--crops-per-frame": ("verify", lambda a: a.crops_per_frame is not None),
    "--hard-negatives": ("verify", lambda a: a.hard_negatives is not None),
    "--dense-coordinates": ("pose", lambda a: a.dense_coordinates),
    "--coordinate-weight": ("pose", lambda a: a.coordinate_weight is not None),
}


def _refuse_other_modes_options(args: argparse.Namespace) -> None:
    """ConfigError for an option of another mode (it would be silently ignored)."""
    for option, (mode, given) in _MODE_ONLY.items():
        if args.mode != mode and given(args):
            raise ConfigError(f"{option} only applies to `train {mode}`")


def run(args: argparse.Namespace) -> int:
    """Train; prints the final row of the log."""
    from dvc_perception.train.config import DepthLossConfig, PoseLossConfig, TrainConfig
    from dvc_perception.train.datasets import AugmentConfig, ZoomSampling
    from dvc_perception.train.runner import RunSpec, run_training
    from dvc_perception.train.verification import VerifySampling

    train_cfg = TrainConfig(**_given(args, {
        "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
        "weight_decay": "weight_decay", "seed": "seed", "workers": "num_workers",
        "max_steps_per_epoch": "max_steps_per_epoch", "val_every": "val_every",
        "threads": "num_threads", "precision": "precision", "device": "device",
    }), progress=not args.no_progress)
    pose_cfg = PoseLossConfig(
        **_given(args, {"pose_weight": "pose", "pose_warmup_epochs": "pose_warmup_epochs",
                        "keypoint_weight": "keypoint", "coordinate_weight": "coordinates"}),
        use_pose_loss=not args.no_pose_loss,
    )
    depth_cfg = DepthLossConfig(**_given(args, {"silog_lambda": "silog_lambda"}))
    _refuse_other_modes_options(args)
    if args.toy and args.objects is not None:
        raise ConfigError("--objects does not apply with --toy (the toy frames have their own "
                          "procedural object); train on shards from `dvc-perception synth`")
    if args.zoom_crops and args.crop is not None:
        raise ConfigError("--zoom-crops and --crop exclude each other (zoom crops already cut "
                          "the input around one object)")
    if args.crop_scale is not None and not args.zoom_crops and args.mode != "verify":
        raise ConfigError("--crop-scale only applies with --zoom-crops or to `train verify`")
    size = args.input_size or ((64, 64) if args.mode == "verify" else (320, 240))
    verify = VerifySampling(**_given(args, {"crop_scale": "crop_scale",
                                            "crops_per_frame": "crops_per_frame"})
                            if args.mode == "verify" else {})
    zoom = None
    if args.zoom_crops:
        zoom = ZoomSampling(**_given(args, {"crop_scale": "crop_scale"}))
    spec = RunSpec(
        mode=args.mode, out_dir=args.out, data_dir=args.data[0] if args.data else None,
        extra_data_dirs=tuple(args.data[1:]) if args.data else (), val_data_dir=args.val_data,
        val_fraction=args.val_fraction, split_seed=args.split_seed, toy_frames=args.toy or 0,
        objects=tuple(args.objects or ["demo_object"]), input_width=size[0],
        input_height=size[1], augment=None if args.no_augment else AugmentConfig(),
        crop=args.crop, zoom=zoom,
        keypoint_net={"dense_coordinates": True} if args.dense_coordinates else {},
        train=train_cfg, pose_loss=pose_cfg, depth_loss=depth_cfg, resume=args.resume,
        init_checkpoint=args.init,
        init_encoder=args.init_encoder, verify=verify, hard_negatives=args.hard_negatives,
    )
    result = run_training(spec, provenance={"command": list(sys.argv)})
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return 0
    last = result.history[-1] if result.history else {}
    shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float))
    print(f"train {args.mode}: {result.out_dir} ({shown})")
    print(f"best checkpoint: {result.best_checkpoint}")
    return 0

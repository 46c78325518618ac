# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""``--init gt-perturbed`` of `replay` and `eval-bop`: the refiner alone, through the node's code.

The ground truth (a bag's ``/ground_truth/<object_id>/pose`` topics, `bag_truth`; or a BOP
scene's, `bop_truth`) is perturbed (`refine.evaluation.perturbed_starts`),
every frame is replayed with its perturbed poses as the node's initial poses
(`Pipeline.process`'s ``initial_poses``: refined, not detected), and the replayed poses are
compared with the truth before (the starts) and after (`refine.evaluation.compare_to_truth`).
A pose the node did not publish (refinement unusable, score below ``pipeline.min_score``)
counts as a failure after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.bag.evaluate import EvalResult
from dvc_perception.errors import ConfigError
from dvc_perception.pipeline.pose import InitialPose
from dvc_perception.refine.evaluation import Pose, TruthInstance, compare_to_truth


@dataclass(frozen=True)
class Perturbation:
    """``--perturb-deg D --perturb-frac F --seed S`` (see `refine.evaluation`).

    Raises:
        ConfigError: a negative or non-finite magnitude.
    """

    deg: float = 10.0
    frac: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("deg", "frac"):
            value = getattr(self, name)
            if not (value >= 0.0 and value < float("inf")):
                raise ConfigError(f"--perturb-{name}: expected a finite value >= 0, got {value}")

    def describe(self) -> str:
        """``10 deg / 0.1 d, seed 0``."""
        return f"{self.deg:g} deg / {self.frac:g} d, seed {self.seed}"


def bag_truth(bag: str | Path, data_root: str | Path | None = None) -> list[TruthInstance]:
    """The ground-truth instances of a bag, by stamp then object id.

    Diameter, ADD points and symmetry come from each object's description
    (``config/objects/<id>.yaml``), as `bag.evaluate.evaluate_bag` scores them.

    Raises:
        BagError: an unreadable bag, or one without ground-truth pose topics.
        ConfigError: an object has no description (its diameter is unknown).
    """
    from dvc_perception.bag.evaluate import _object_model, read_ground_truth_poses
    from dvc_perception.errors import BagError

    poses = read_ground_truth_poses(bag)
    if not poses:
        raise BagError(f"{bag} has no /ground_truth/<object_id>/pose topics: --init "
                       "gt-perturbed needs pose ground truth (synth --bag, bop2bag)")
    models = {}
    for object_id in poses:
        model = _object_model(object_id, data_root)
        if model is None:
            raise ConfigError(f"--init gt-perturbed: object {object_id!r} of {bag} has no "
                              "description config/objects/<id>.yaml: its diameter is unknown")
        models[object_id] = model
    return [TruthInstance(stamp, oid, R, t, models[oid][1], models[oid][0], models[oid][2])
            for stamp, oid, (R, t) in sorted(
                (stamp, oid, pose) for oid, by_stamp in poses.items()
                for stamp, pose in by_stamp.items())]  # fmt: skip


def starts_by_stamp(truth: Sequence[TruthInstance], starts: Sequence[Pose]
                    ) -> dict[int, list[InitialPose]]:
    """Each frame's (stamp [ns]) initial poses for `bag.replay.replay_bag`."""
    out: dict[int, list[InitialPose]] = {}
    for gt, (R, t) in zip(truth, starts, strict=True):
        out.setdefault(gt.frame, []).append(InitialPose(gt.object_id, R, t))
    return out


def before_after_rows(truth: Sequence[TruthInstance], starts: Sequence[Pose],
                      result: EvalResult) -> list[dict[str, Any]]:
    """`compare_to_truth` of every instance: after = the replayed pose at its stamp, or None."""
    rows = []
    for gt, start in zip(truth, starts, strict=True):
        ev = result.objects.get(gt.object_id)
        after = ev.all_estimates.get(gt.frame) if ev is not None else None
        rows.append(compare_to_truth(gt, start, after))
    return rows


def check_init(init: str, perturbation: Perturbation | None,
               overrides: Mapping[str, object]) -> None:
    """The rules of ``--init``: gt-perturbed needs ``--refine``; perturbation options need it.

    Raises:
        ConfigError: ``--init gt-perturbed`` without refinement enabled by ``--refine`` (or
            ``--param pipeline.refine.enabled:=true``); ``--perturb-*`` / ``--seed`` with
            ``--init network``.
    """
    if init == "gt-perturbed" and overrides.get("pipeline.refine.enabled") is not True:
        raise ConfigError("--init gt-perturbed measures the refiner from perturbed ground "
                          "truth: add --refine (pipeline.refine.enabled)")
    if init == "network" and perturbation is not None:
        raise ConfigError("--perturb-deg / --perturb-frac / --seed apply to --init "
                          "gt-perturbed only; --init is network")


def bop_truth(dataset_dir: str | Path, scene: str, object_ids: dict[int, str],
              frame_keys: Sequence[int] | None = None) -> list[TruthInstance]:
    """Every ground-truth instance of a BOP scene, in image-id then ``scene_gt.json`` order.

    Diameters and symmetries come from ``models_info.json``, ADD points from ``models_eval``
    (`datasets.bop.read_eval_points`), visible fractions from ``scene_gt_info.json``.

    Args:
        dataset_dir: the BOP dataset root.
        scene: the scene folder, e.g. ``test/000002``.
        object_ids: BOP obj_id -> object id (`datasets.bop.bop_object_ids`).
        frame_keys: the key of each frame in image-id order (e.g. the bag stamps [ns] of
            `bag.bop.bop_scene_to_bag`); None: the image ids.

    Raises:
        InputError: a file is missing or bad, or an object has no id in `object_ids`.
    """
    from dvc_perception.datasets.bop import (
        read_bop_scene,
        read_eval_points,
        read_models_info,
        read_scene_gt_info,
    )
    from dvc_perception.errors import InputError

    frames = read_bop_scene(dataset_dir, scene)
    info = read_models_info(dataset_dir)
    gt_info = read_scene_gt_info(dataset_dir, scene)
    points: dict[int, np.ndarray] = {}
    out = []
    for k, frame in enumerate(frames):
        key = frame.image_id if frame_keys is None else int(frame_keys[k])
        visib = gt_info.get(frame.image_id, [])
        for j, (oid, R, t) in enumerate(frame.poses):
            if oid not in object_ids or oid not in info:
                raise InputError(f"{dataset_dir}: object {oid} of {scene} has no object id or "
                                 "models_info entry")
            if oid not in points:
                points[oid] = read_eval_points(dataset_dir, oid)
            out.append(TruthInstance(
                key, object_ids[oid], R, t, info[oid].diameter_m, points[oid],
                len(info[oid].symmetries) > 1,
                float(visib[j]["visib_fract"]) if j < len(visib) else None))
    return out

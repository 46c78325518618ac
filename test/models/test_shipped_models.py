# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Shipped models (models/*.onnx): size budget, and the demo object's accuracy floors (issue 4)
on a small validation set regenerated with the training data's synth config and a new seed."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
BINARY_SUFFIXES = {".onnx", ".pt", ".npz", ".npy", ".mcap", ".db3", ".png", ".jpg", ".bin",
                   ".engine", ".obj", ".ply"}
VAL_FRAMES = 300  # as many as the recipe's validation split
VAL_SEED = 424242


def test_shipped_binaries_stay_under_25_mb():
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    files = {REPO / f for f in out if Path(f).suffix.lower() in BINARY_SUFFIXES}
    files |= {p for p in MODELS.rglob("*") if p.is_file()}  # shipped even before committed
    total = sum(p.stat().st_size for p in files if p.is_file())
    assert total < 25e6, f"{total / 1e6:.1f} MB of shipped binaries"


def _shipped(task: str, object_ids: tuple[str, ...] | None = None):
    from dvc_perception.engines.export import read_model_metadata

    found = []
    for path in sorted(MODELS.glob("*.onnx")):
        meta = read_model_metadata(path)
        if meta.task == task and (object_ids is None or meta.object_ids == object_ids):
            found.append((path, meta))
    return found


def _validation_frames(meta, object_ids):
    data = meta.provenance.get("data") or {}
    if not data.get("synth_config"):
        pytest.fail(f"{meta}: provenance.data.synth_config is missing; cannot regenerate data")
    return _regenerated_frames(json.dumps(data["synth_config"], sort_keys=True), tuple(object_ids))


@functools.cache  # the pose and depth models share their training data's synth config
def _regenerated_frames(synth_config_json: str, object_ids: tuple[str, ...]):
    from dvc_perception.render.objects import find_object_yaml, load_object
    from dvc_perception.synth import scenes as synth
    from dvc_perception.train.shards import frame_from_synth

    cfg = synth.SynthConfig.from_mapping(json.loads(synth_config_json))
    objects = [load_object(find_object_yaml(o)) for o in object_ids]
    sampler = synth.SceneSampler(objects, cfg, seed=VAL_SEED)
    return [frame_from_synth(sampler.sample(i)) for i in range(VAL_FRAMES)]


@functools.cache  # shared by the tests below (a skip is not cached)
def _demo_pose_results() -> tuple[list[bool], list[float]]:
    """(ADD@0.1d hit per present instance, keypoint errors px) of the shipped demo pose model."""
    ort = pytest.importorskip("onnxruntime")
    from dvc_perception.geometry.metrics import add_error, adds_error
    from dvc_perception.train.datasets import ListFrameSource, PoseDataset, load_object_infos
    from dvc_perception.train.tasks import solve_pose_like_pipeline

    models = _shipped("keypoints", ("demo_object",))
    if not models:
        pytest.skip("no shipped demo pose model in models/ yet")
    path, meta = models[0]
    objects = load_object_infos(list(meta.object_ids))
    w, h = meta.input_size
    ds = PoseDataset(ListFrameSource(_validation_frames(meta, meta.object_ids)), objects, w, h)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    hits, kp_err = [], []
    for i in range(len(ds)):
        s = ds[i]
        x2d, weights = sess.run(["x2d", "weights"], {"image": s["image"][None].numpy()})
        for o, info in enumerate(objects):
            if not s["present"][o]:
                continue
            inside = s["kp_in_image"][o].numpy()
            kp_err += list(np.linalg.norm(x2d[0, o] - s["keypoints"][o].numpy(), axis=-1)[inside])
            R, t, ok = solve_pose_like_pipeline(
                torch.from_numpy(x2d[0, o][None]).double(),
                torch.as_tensor(info.keypoints_obj)[None], s["K"][None],
                torch.from_numpy(weights[0, o][None]).double(), threshold_px=4.0)
            metric = adds_error if info.symmetric else add_error
            err = float(metric(R, t, s["R"][o][None], s["t"][o][None], info.points_obj)[0])
            hits.append(bool(ok[0]) and err < 0.1 * info.diameter_m)
    assert len(hits) >= 10, f"only {len(hits)} present instances in the validation frames"
    return hits, kp_err


@pytest.mark.slow
def test_demo_pose_model_reaches_the_keypoint_floor():
    _, kp_err = _demo_pose_results()
    assert np.median(kp_err) <= 3.0, f"median keypoint error {np.median(kp_err):.2f} px"


@pytest.mark.slow
def test_demo_pose_model_reaches_the_add_floor():
    # the shipped model: 82.9 % on these 300 frames (82.6 % on the recipe's validation split)
    hits, _ = _demo_pose_results()
    assert np.mean(hits) >= 0.80, f"ADD(-S)@0.1d recall {np.mean(hits):.3f}"


@functools.cache
def _depth_results() -> tuple[np.ndarray, np.ndarray]:
    """(predicted, ground-truth) metric depth (N, H, W) of the shipped depth model."""
    ort = pytest.importorskip("onnxruntime")
    from dvc_perception.train.datasets import DepthDataset, ListFrameSource

    models = _shipped("depth")
    if not models:
        pytest.skip("no shipped depth model in models/ yet")
    path, meta = models[0]
    object_ids = tuple((meta.provenance.get("data") or {}).get("objects") or ("demo_object",))
    w, h = meta.input_size
    ds = DepthDataset(ListFrameSource(_validation_frames(meta, object_ids)), w, h)
    f0 = float(meta.extra["focal_normalization"]["reference_focal_px"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    preds, gts = [], []
    for i in range(len(ds)):
        s = ds[i]
        (canonical,) = sess.run(None, {"image": s["image"][None].numpy()})
        preds.append(canonical[0, 0] * float(s["fx"]) / f0)
        gts.append(s["depth"][0].numpy())
    return np.stack(preds), np.stack(gts)


@pytest.mark.slow
def test_depth_model_follows_the_scene_structure():
    # regression guards below the floor: the depth maps follow the scene (objects in front of
    # the planes; per-frame correlation with the ground truth, which any constant or
    # image-independent output has at 0), and the metric scale is far better than one constant
    # depth for everything (AbsRel ~0.19 on these scenes); the shipped model: ~0.68 and ~0.09
    from dvc_perception.geometry.metrics import depth_metrics

    pred, gt = _depth_results()
    corr = []
    for p, g in zip(pred, gt):
        ok = np.isfinite(g)
        corr.append(np.corrcoef(p[ok], g[ok])[0, 1])
    assert np.median(corr) >= 0.5, f"median per-frame correlation {np.median(corr):.3f}"
    constant = np.full_like(gt, np.nanmedian(gt))
    assert depth_metrics(pred, gt)["abs_rel"] <= 0.75 * depth_metrics(constant, gt)["abs_rel"]


@pytest.mark.slow
def test_depth_model_reaches_the_floor():
    from dvc_perception.geometry.metrics import depth_metrics

    # the shipped model: 0.093 on these 300 frames (0.088 on the recipe's validation split)
    m = depth_metrics(*_depth_results())
    assert m["abs_rel"] <= 0.10, m

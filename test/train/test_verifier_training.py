# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Box-verifier training (`train verify`): crop labels against an independent IoU rule, crops
equal to serving's `ZoomCrop` input, a toy run that lowers the loss, the cached detector
candidates, `export` -> ONNX Runtime == torch (static batch 16, metadata), and typed errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from dvc_perception.cli import main
from dvc_perception.engines.preprocess import ZoomCrop, box_from_mask
from dvc_perception.errors import ConfigError, ModelSpecError
from dvc_perception.geometry.bop_metrics import box_iou
from dvc_perception.train.datasets import AugmentConfig, Frame, ListFrameSource, ObjectAnnotation
from dvc_perception.train.loop import _collate
from dvc_perception.train.tasks import VerifierTask
from dvc_perception.train.verification import (
    SKIP,
    SOURCE_DETECTOR,
    SOURCE_RANDOM,
    SOURCE_TRUE,
    VerifierDataset,
    VerifySampling,
    frame_instances,
    label_boxes,
)

IDS = ("ball", "block")  # the verifier's classes; "other" below is not one of them


def _rect(shape: tuple[int, int], x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y:y + h, x:x + w] = True
    return mask


def _ann(object_id: str, mask: np.ndarray) -> ObjectAnnotation:
    return ObjectAnnotation(object_id=object_id, R=np.eye(3), t=np.array([0.0, 0.0, 1.0]),
                            mask=mask)


def _frame(seed: int = 0) -> Frame:
    """160x120: two blocks, a ball, an "other" object and a barely visible (16 px) block."""
    rng = np.random.default_rng(seed)
    shape = (120, 160)
    image = rng.integers(40, 90, size=(*shape, 3)).astype(np.uint8)
    masks = {"block_a": _rect(shape, 10, 14, 36, 28), "block_b": _rect(shape, 90, 60, 40, 30),
             "ball": _rect(shape, 56, 70, 20, 24), "other": _rect(shape, 120, 8, 30, 30),
             "tiny": _rect(shape, 60, 10, 4, 4)}
    for mask, colour in zip(masks.values(), ((200, 40, 40), (40, 200, 40), (40, 40, 220),
                                             (220, 220, 40), (200, 40, 40))):
        image[mask] = colour
    K = np.array([[150.0, 0.0, 79.5], [0.0, 150.0, 59.5], [0.0, 0.0, 1.0]])
    objects = (_ann("block", masks["block_a"]), _ann("other", masks["other"]),
               _ann("ball", masks["ball"]), _ann("block", masks["block_b"]),
               _ann("block", masks["tiny"]))
    return Frame(image=image, K=K, objects=objects)


def _independent_label(box, frame: Frame, min_px: int = 50) -> int:
    """The labelling rule, written out with `bop_metrics.box_iou` one instance at a time."""
    best, best_label, any_near = 0.0, 0, False
    for ann in frame.objects:
        if ann.object_id not in IDS:
            continue
        iou = box_iou(box, box_from_mask(ann.mask))
        any_near |= iou >= 0.3
        if int(ann.mask.sum()) >= min_px and iou > best:
            best, best_label = iou, 1 + IDS.index(ann.object_id)
    if best >= 0.5:
        return best_label
    return SKIP if any_near else 0


def _candidates(frame: Frame, rng: np.random.Generator, n: int = 30) -> np.ndarray:
    """Detector-like boxes: jittered instance boxes (some far off) and random ones."""
    out = []
    for ann in frame.objects:
        x, y, w, h = box_from_mask(ann.mask)
        for _ in range(3):
            a = rng.uniform(0.5, 1.8)
            cu = x + w / 2 + rng.uniform(-0.6, 0.6) * w
            cv = y + h / 2 + rng.uniform(-0.6, 0.6) * h
            out.append((cu - a * w / 2, cv - a * h / 2, a * w, a * h))
    while len(out) < n:
        w, h = rng.uniform(8, 50, size=2)
        out.append((rng.uniform(0, 160 - w), rng.uniform(0, 120 - h), w, h))
    return np.asarray(out, np.float32)


def test_label_rule_cases():
    frame = _frame()
    inst = frame_instances(frame, {o: i for i, o in enumerate(IDS)}, 50)
    assert len(inst.boxes) == 4 and inst.usable.tolist() == [True, True, True, False]  # no other
    boxes = np.array([
        [10, 14, 36, 28],  # block_a itself -> block
        [56, 70, 20, 24],  # the ball -> ball
        [10 + 14, 14, 36, 28],  # block_a shifted by 14 px: IoU 22/50 = 0.44 -> skipped
        [120, 8, 30, 30],  # the "other" object: not a class -> background
        [60, 10, 4, 4],  # the barely visible block: not a positive, not background
        [0, 90, 20, 20],  # empty corner -> background
    ], np.float64)
    assert label_boxes(boxes, inst).tolist() == [2, 1, SKIP, 0, SKIP, 0]
    for box, lab in zip(boxes, label_boxes(boxes, inst)):
        assert lab == _independent_label(box, frame)


def test_dataset_labels_match_an_independent_iou_rule_and_are_half_background():
    frames = [_frame(s) for s in range(6)]
    rng = np.random.default_rng(3)
    cands = [_candidates(f, rng) for f in frames]
    ds = VerifierDataset(ListFrameSource(frames), IDS, 32, candidates=cands,
                         sampling=VerifySampling(crops_per_frame=10), augment=AugmentConfig())
    labels, sources = [], []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in range(len(frames)):
            item = ds[i]
            assert item["crops"].shape == (10, 3, 32, 32) and item["labels"].dtype == torch.int64
            assert bool(item["valid"].all())  # these frames always have enough boxes
            for box, lab, src in zip(item["boxes"].numpy(), item["labels"].tolist(),
                                     item["source"].tolist()):
                assert lab == _independent_label(box, frames[i]), (box, lab)
                if src == SOURCE_DETECTOR:  # a candidate itself, not a modified box
                    assert np.any(np.all(np.isclose(cands[i], box, atol=1e-4), axis=1))
                labels.append(lab)
                sources.append(src)
    labels, sources = np.array(labels), np.array(sources)
    assert np.mean(labels == 0) == pytest.approx(0.5, abs=0.05)
    assert set(labels) == {0, 1, 2} and set(sources) == {SOURCE_TRUE, SOURCE_DETECTOR,
                                                         SOURCE_RANDOM}
    # the same epoch draws the same crops; another epoch other ones
    ds.set_epoch(0)
    a, b = ds[2], ds[2]
    assert torch.equal(a["crops"], b["crops"]) and torch.equal(a["boxes"], b["boxes"])
    ds.set_epoch(5)
    assert not torch.equal(ds[2]["boxes"], a["boxes"])


def test_frame_without_instances_gives_background_only():
    frame = _frame()
    bare = Frame(image=frame.image, K=frame.K, objects=frame.objects[1:2])  # only "other"
    item = VerifierDataset(ListFrameSource([bare]), IDS, 32)[0]
    assert bool(item["valid"].all()) and item["labels"].tolist() == [0] * 8


def test_validation_crops_are_servings_zoom_crops_exactly():
    frame = _frame()
    cands = [_candidates(frame, np.random.default_rng(0))]
    for size, scale in ((32, 1.5), (64, 1.3)):
        ds = VerifierDataset(ListFrameSource([frame]), IDS, size, candidates=cands,
                             sampling=VerifySampling(crop_scale=scale, crops_per_frame=12))
        item = ds[0]
        for crop, box in zip(item["crops"].numpy(), item["boxes"].numpy()):
            served = ZoomCrop.from_box(box, (160, 120), (size, size), scale=scale)
            assert np.array_equal(crop, served.network_input(frame.image)[0])


def test_task_flattens_crops_and_scores_predictions():
    frames = [_frame(s) for s in range(4)]
    ds = VerifierDataset(ListFrameSource(frames), IDS, 32,
                         candidates=[_candidates(f, np.random.default_rng(1)) for f in frames])
    batch = _collate([ds[i] for i in range(4)])
    batch["valid"][0, 0] = False

    class Oracle(torch.nn.Module):
        """Logits that favour the label of each crop, in the order the task flattens them."""

        def __init__(self, labels: torch.Tensor) -> None:
            super().__init__()
            self.labels = labels
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, crops: torch.Tensor) -> torch.Tensor:
            return self.w * 10.0 * torch.nn.functional.one_hot(self.labels, 3).float()

    task = VerifierTask(IDS)
    flat = batch["labels"].flatten()
    loss, parts = task.loss(Oracle(flat), batch, 0)
    assert parts["accuracy"] == 1.0 and parts["total"] == pytest.approx(float(loss.detach()))
    # label smoothing 0.05 over 3 classes, margins of 10: 0.0333 * 10 + the softmax's log term
    assert float(loss.detach()) == pytest.approx(0.05 * 2 / 3 * 10, abs=0.01)
    _, wrong_parts = task.loss(Oracle((flat + 1) % 3), batch, 0)
    assert wrong_parts["accuracy"] == 0.0 and wrong_parts["total"] > 9.0
    metrics = task.evaluate(Oracle(flat[batch["valid"].flatten()]), iter([batch]))
    assert metrics["val_verify_accuracy"] == 1.0 == metrics["val_verify_balanced_accuracy"]
    assert metrics["val_verify_crops"] == 31
    wrong = (flat[batch["valid"].flatten()] + 1) % 3
    metrics = task.evaluate(Oracle(wrong), iter([batch]))
    assert metrics["val_verify_accuracy"] == 0.0 == metrics["val_verify_object_recall"]
    assert task.name == "verify" and task.maximize
    assert task.primary_metric == "val_verify_balanced_accuracy"


TOY = ["--toy", "16", "--batch-size", "4", "--crops-per-frame", "8", "--threads", "1",
       "--no-progress", "--seed", "1"]


@pytest.fixture(scope="module")
def detector_onnx(tmp_path_factory):
    """An exported (barely trained) toy detector: it proposes candidates anywhere."""
    root = tmp_path_factory.mktemp("det")
    assert main(["train", "detect", "--toy", "4", "--input-size", "64x48", "--batch-size", "2",
                 "--epochs", "1", "--max-steps-per-epoch", "1", "--threads", "1",
                 "--no-progress", "--out", str(root / "run")]) == 0
    assert main(["export", str(root / "run" / "last.pt"), "--out", str(root / "det.onnx"),
                 "--no-torch-weights"]) == 0
    return root / "det.onnx"


@pytest.fixture(scope="module")
def verify_run(tmp_path_factory, detector_onnx):
    run = tmp_path_factory.mktemp("verify") / "run"
    assert main(["train", "verify", *TOY, "--epochs", "4", "--lr", "3e-3",
                 "--hard-negatives", str(detector_onnx), "--out", str(run)]) == 0
    return run


def test_train_verify_lowers_the_loss_and_caches_the_candidates(verify_run, detector_onnx,
                                                                monkeypatch):
    from dvc_perception.train import verification
    from dvc_perception.train.checkpoints import load_checkpoint

    rows = list(csv.DictReader((verify_run / "metrics.csv").open()))
    assert len(rows) == 4
    first, last = float(rows[0]["train_total"]), float(rows[-1]["train_total"])
    assert last < 0.8 * first, (first, last)
    for key in ("val_verify_balanced_accuracy", "val_verify_det_bg_recall",
                "val_verify_bg_precision", "val_verify_object_recall"):
        assert 0.0 <= float(rows[-1][key]) <= 1.0, key
    ckpt = load_checkpoint(verify_run / "best.pt")
    assert ckpt["task"] == "verify" and ckpt["model_kind"] == "verifier"
    assert ckpt["input_kind"] == "zoom_crop" and ckpt["crop_scale"] == 1.5
    assert list(ckpt["model_config"]["object_ids"]) == ["toy_cube"]
    prov = json.loads((verify_run / "provenance.json").read_text())
    hard = prov["hard_negatives"]
    assert hard["from_cache"] is False and hard["train_boxes_per_frame"] > 0
    assert (verify_run / "verify_candidates.npz").is_file()

    # a resumed run reads the cache: the detector is not run again
    def refuse(*args, **kwargs):
        raise AssertionError("candidates computed again")

    monkeypatch.setattr(verification, "detector_candidates", refuse)
    assert main(["train", "verify", *TOY, "--epochs", "4", "--lr", "3e-3", "--resume",
                 "--hard-negatives", str(detector_onnx), "--out", str(verify_run)]) == 0


def test_export_verifier_onnxruntime_equals_torch_softmax(verify_run, tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    from dvc_perception.engines.export import read_model_metadata
    from dvc_perception.models.factory import VERIFIER_FACTORY, verifier_export_module
    from dvc_perception.models.verifier_net import VerifierNetForExport
    from dvc_perception.train.checkpoints import load_checkpoint, model_from_checkpoint
    from dvc_perception.train.toy import toy_frames

    monkeypatch.chdir(tmp_path)
    assert main(["export", str(verify_run / "best.pt")]) == 0  # default name from the classes
    out = tmp_path / "models" / "verifier_toy_cube.onnx"
    assert out.is_file() and out.with_suffix(".pt").is_file()
    meta = read_model_metadata(out)
    ckpt = load_checkpoint(verify_run / "best.pt")
    assert meta.task == "verifier" and meta.object_ids == ("toy_cube",)
    assert meta.input_size == (64, 64)
    assert meta.mean == (0.0, 0.0, 0.0) and meta.std == (1.0, 1.0, 1.0)
    assert meta.extra["input_kind"] == "zoom_crop" and meta.extra["crop_scale"] == 1.5
    assert meta.extra["batch"] == 16
    assert meta.architecture["factory"] == VERIFIER_FACTORY
    assert meta.architecture["kwargs"] == json.loads(json.dumps(ckpt["model_config"]))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "image" and inp.shape == [16, 3, 64, 64]
    assert outp.name == "class_prob" and outp.shape == [16, 2]
    frames = toy_frames(2, width=160, height=120, seed=9)
    ds = VerifierDataset(ListFrameSource(frames), ["toy_cube"], 64)
    crops = torch.cat([ds[0]["crops"], ds[1]["crops"]])  # 16 crops as serving cuts them
    onnx_prob = session.run(None, {"image": crops.numpy()})[0]
    with torch.no_grad():
        torch_prob = VerifierNetForExport(model_from_checkpoint(ckpt))(crops).numpy()
        rebuilt = verifier_export_module(**meta.architecture["kwargs"])
        rebuilt.load_state_dict(torch.load(out.with_suffix(".pt"), weights_only=True))
        rebuilt_prob = rebuilt.eval()(crops).numpy()
    np.testing.assert_allclose(onnx_prob, torch_prob, atol=1e-4)
    np.testing.assert_allclose(rebuilt_prob, torch_prob, atol=1e-6)
    np.testing.assert_allclose(onnx_prob.sum(1), 1.0, atol=1e-5)
    # the torch backend rebuilds it from its factory and the twin, like the other networks
    from dvc_perception.engines.load import load_engine

    engine = load_engine(out, backend="torch", device="cpu")
    assert engine.source == "factory + state dict"
    np.testing.assert_allclose(engine.run({"image": crops.numpy()})["class_prob"], torch_prob,
                               atol=1e-6)


def test_bad_verify_settings_are_typed_errors(detector_onnx, verify_run, tmp_path, capsys):
    from dvc_perception.train.runner import RunSpec, run_training

    with pytest.raises(ConfigError, match="square"):
        RunSpec(mode="verify", out_dir=str(tmp_path / "a"), toy_frames=4, input_width=64,
                input_height=48)
    with pytest.raises(ConfigError, match="verify training only"):
        RunSpec(mode="detect", out_dir=str(tmp_path / "a"), toy_frames=4,
                hard_negatives=str(detector_onnx))
    not_a_detector = tmp_path / "v.onnx"
    assert main(["export", str(verify_run / "best.pt"), "--out", str(not_a_detector)]) == 0
    spec = RunSpec(mode="verify", out_dir=str(tmp_path / "b"), toy_frames=4, input_width=64,
                   input_height=64, hard_negatives=str(not_a_detector))
    with pytest.raises(ModelSpecError, match="expected an exported detector"):
        run_training(spec)
    capsys.readouterr()
    for argv, message in (
        (["--input-size", "64x48"], "the crop is square"),
        (["--hard-negatives", str(tmp_path / "missing.onnx")], "no such file"),
        (["--hard-negatives", str(not_a_detector)], "expected an exported detector"),
        (["--crops-per-frame", "0"], "crops_per_frame"),
    ):
        run_dir = tmp_path / "run"
        assert main(["train", "verify", "--toy", "4", "--out", str(run_dir), "--no-progress",
                     *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
        assert not run_dir.exists() or not any(run_dir.glob("*.pt"))
    assert main(["train", "detect", "--toy", "4", "--out", str(tmp_path / "d"),
                 "--hard-negatives", str(detector_onnx)]) == 2
    assert "--hard-negatives only applies to `train verify`" in capsys.readouterr().err


def test_train_verify_in_bf16(tmp_path):
    from dvc_perception.train.device import cpu_bf16_supported

    if not cpu_bf16_supported():
        pytest.skip("no AVX512-BF16/AMX: bf16 training is refused on this CPU")
    run = tmp_path / "run"
    assert main(["train", "verify", "--toy", "4", "--batch-size", "2", "--epochs", "1",
                 "--threads", "1", "--precision", "bf16", "--no-progress",
                 "--out", str(run)]) == 0
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert np.isfinite(float(rows[-1]["train_total"]))

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Detector training: `DetectionDataset` (every instance its own box, boxes from the masks through
the sample's affine), `DetectionTask` validation, `train detect` -> `export` -> ONNX Runtime ==
torch == the torch backend rebuilt from the metadata, and the refused option combinations."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from dvc_perception.cli import main
from dvc_perception.engines.preprocess import box_from_mask, letterbox_affine
from dvc_perception.errors import ConfigError, ShapeError
from dvc_perception.models.detector_net import DetectorNetForExport, DetectorNetOutput
from dvc_perception.pipeline.detection import BoxDetection
from dvc_perception.train.datasets import (
    AugmentConfig,
    Frame,
    ListFrameSource,
    ObjectAnnotation,
    _augment_affine,
    _warp,
)
from dvc_perception.train.detection import (
    DetectionDataset,
    count_matches,
    visible_box_in_input,
)
from dvc_perception.train.loop import _collate
from dvc_perception.train.tasks import DetectionTask

IDS = ("ball", "block")  # the network's classes; "other" below is not one of them


def _ann(object_id: str, mask: np.ndarray) -> ObjectAnnotation:
    return ObjectAnnotation(object_id=object_id, R=np.eye(3), t=np.array([0.0, 0.0, 1.0]),
                            mask=mask)


def _rect_mask(shape: tuple[int, int], x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y:y + h, x:x + w] = True
    return mask


def _frame(seed: int = 0) -> tuple[Frame, list[np.ndarray]]:
    """160x120: two "block" instances (one L-shaped), a "ball", an "other" and a tiny block.

    Returns the frame and the masks of the instances the detector must learn (blocks, ball).
    """
    rng = np.random.default_rng(seed)
    shape = (120, 160)
    image = rng.integers(40, 90, size=(*shape, 3)).astype(np.uint8)
    block_a = _rect_mask(shape, 10, 14, 36, 28)
    block_b = _rect_mask(shape, 90, 60, 40, 30) | _rect_mask(shape, 90, 90, 12, 20)  # an L
    ball = _rect_mask(shape, 56, 70, 20, 24)
    other = _rect_mask(shape, 120, 8, 30, 30)
    tiny = _rect_mask(shape, 60, 10, 4, 4)  # 16 px -> 4 px at the 80x60 input: left out
    for mask, colour in ((block_a, (200, 40, 40)), (block_b, (40, 200, 40)),
                         (ball, (40, 40, 220)), (other, (220, 220, 40)), (tiny, (200, 40, 40))):
        image[mask] = colour
    K = np.array([[150.0, 0.0, 79.5], [0.0, 150.0, 59.5], [0.0, 0.0, 1.0]])
    objects = (_ann("block", block_a), _ann("other", other), _ann("ball", ball),
               _ann("block", block_b), _ann("block", tiny))
    return Frame(image=image, K=K, objects=objects), [block_a, ball, block_b]


def test_two_instances_of_one_object_get_two_peaks_and_exact_boxes():
    frame, (block_a, ball, block_b) = _frame()
    ds = DetectionDataset(ListFrameSource([frame]), IDS, 80, 60, min_mask_px=20)
    item = ds[0]
    assert item["image"].shape == (3, 60, 80) and item["image"].dtype == torch.float32
    assert item["centre"].shape == (2, 15, 20) and item["reg_mask"].shape == (15, 20)
    assert item["size"].shape == (2, 15, 20) and item["offset"].shape == (2, 15, 20)
    # the letterbox halves the frame: a mask's own box (x, y, w, h) becomes s * (x, y, w, h)
    s = 0.5
    expected = {"block": [s * np.array(box_from_mask(m)) for m in (block_a, block_b)],
                "ball": [s * np.array(box_from_mask(ball))]}
    for name, boxes in expected.items():
        c = IDS.index(name)
        heat = item["centre"][c].numpy()
        peaks = sorted(zip(*np.nonzero(heat == 1.0)))
        cells = []
        for x, y, w, h in boxes:
            qx, qy = (x + w / 2) / 4, (y + h / 2) / 4
            jx, jy = int(np.floor(qx)), int(np.floor(qy))
            cells.append((jy, jx))
            assert item["reg_mask"][jy, jx]
            np.testing.assert_allclose(item["size"][:, jy, jx].numpy(), [w, h], atol=1e-5)
            np.testing.assert_allclose(item["offset"][:, jy, jx].numpy(), [qx - jx, qy - jy],
                                       atol=1e-6)
        assert peaks == sorted(cells), name  # one peak per instance, none for the others
    assert int(item["reg_mask"].sum()) == 3  # "other" is not a class, the tiny block too small
    real = item["box_class"] >= 0
    got = sorted(zip(item["box_class"][real].tolist(), item["boxes"][real].tolist()))
    want = sorted([(1, b.tolist()) for b in expected["block"]]
                  + [(0, expected["ball"][0].tolist())])
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=1e-5)
    assert item["box_class"].shape == (ds.max_instances,) and int(real.sum()) == 3


def test_augmented_boxes_follow_the_samples_affine():
    frame, masks = _frame(1)
    aug = AugmentConfig(scale=(1.1, 1.4), shift_frac=0.1)
    ds = DetectionDataset(ListFrameSource([frame]), IDS, 80, 60, augment=aug, seed=3,
                          min_mask_px=20)
    ds.set_epoch(2)
    _, boxes, classes = ds.boxes(0)
    # the sample's affine, drawn as `_prepare` draws it (the first numbers of its stream)
    rng = np.random.default_rng([3, 2, 0])
    affine = _augment_affine(letterbox_affine(160, 120, 80, 60), rng, aug, 80, 60)
    assert np.array_equal(ds.boxes(0)[1], boxes)  # seeded: the same sample again
    for mask, cls in zip(masks, (1, 0, 1)):
        x0, y0, w, h = box_from_mask(mask)
        (sx, _, bx), (_, sy, by) = affine
        left, right = sx * (x0 - 0.5) + bx, sx * (x0 + w - 0.5) + bx
        top, bottom = sy * (y0 - 0.5) + by, sy * (y0 + h - 0.5) + by
        left, top = max(left, -0.5), max(top, -0.5)
        right, bottom = min(right, 79.5), min(bottom, 59.5)
        box = np.array([left + 0.5, top + 0.5, right - left, bottom - top])
        hits = [i for i in range(len(boxes)) if np.allclose(boxes[i], box, atol=1e-9)]
        assert len(hits) == 1 and classes[hits[0]] == cls
        # and within a pixel of the box of the mask warped like the image (nearest)
        warped = box_from_mask(_warp(mask.astype(np.uint8), affine, 80, 60, nearest=True,
                                     fill=0.0) > 0)
        np.testing.assert_allclose(box, warped, atol=1.0)
    assert len(boxes) == 3


def test_visible_box_is_the_part_inside_the_input():
    mask = _rect_mask((40, 60), 0, 0, 30, 6) | _rect_mask((40, 60), 0, 6, 6, 20)  # an L
    shift = np.array([[1.0, 0.0, -10.0], [0.0, 1.0, 0.0]])  # 10 px to the left
    # the bar's columns 10..29 stay in, the stem (columns 0..5) leaves: the box is the bar's
    assert visible_box_in_input(mask, shift, 60, 40) == (0.0, 0.0, 20.0, 6.0)
    assert visible_box_in_input(mask, np.array([[1.0, 0, -40.0], [0, 1.0, 0]]), 60, 40) is None
    lb = letterbox_affine(60, 40, 30, 20)
    assert visible_box_in_input(mask, lb, 30, 20) == pytest.approx((0.0, 0.0, 15.0, 13.0))
    with pytest.raises(ConfigError, match="scale and shift"):
        visible_box_in_input(mask, np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), 60, 40)


def test_instances_without_masks_and_bad_settings_are_refused():
    frame, _ = _frame()
    no_mask = Frame(image=frame.image, K=frame.K, objects=(
        ObjectAnnotation("block", np.eye(3), np.array([0.0, 0.0, 1.0])),))
    with pytest.raises(ShapeError, match="needs instance masks"):
        DetectionDataset(ListFrameSource([no_mask]), IDS, 80, 60)[0]
    ignored = Frame(image=frame.image, K=frame.K, objects=(
        ObjectAnnotation("other", np.eye(3), np.array([0.0, 0.0, 1.0])),))
    assert not DetectionDataset(ListFrameSource([ignored]), IDS, 80, 60)[0]["reg_mask"].any()
    with pytest.raises(ConfigError, match="unique"):
        DetectionDataset(ListFrameSource([frame]), ("a", "a"), 80, 60)
    with pytest.raises(ConfigError, match="crop"):
        DetectionDataset(ListFrameSource([frame]), IDS, 80, 60, crop=(40, 30))


def test_count_matches_same_class_each_detection_once():
    gt = np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 10.0, 10.0], [0.0, 20.0, 10.0, 10.0]])
    cls = np.array([0, 0, 1])
    dets = [BoxDetection(0, 0.9, (0.0, 0.0, 10.0, 10.0)),
            BoxDetection(0, 0.8, (1.0, 0.0, 10.0, 10.0)),  # a duplicate of the first box
            BoxDetection(1, 0.7, (20.0, 0.0, 10.0, 10.0)),  # right place, wrong class
            BoxDetection(1, 0.6, (0.0, 22.0, 10.0, 10.0))]  # IoU 8 / 12 = 0.67
    assert count_matches(dets, gt, cls) == 2
    assert count_matches(dets, gt, cls, iou_threshold=0.7) == 1
    assert count_matches([], gt, cls) == 0 and count_matches(dets, gt[:0], cls[:0]) == 0


class _Oracle(torch.nn.Module):
    """Returns given outputs batch after batch (a model that predicts its targets)."""

    def __init__(self, outputs: list[DetectorNetOutput]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self._outputs = list(outputs)

    def forward(self, image: torch.Tensor) -> DetectorNetOutput:
        return self._outputs.pop(0)


def test_detection_task_scores_perfect_and_empty_predictions():
    frames = [_frame(i)[0] for i in range(3)]
    ds = DetectionDataset(ListFrameSource(frames), IDS, 80, 60, min_mask_px=20)
    batches = [_collate([ds[0], ds[1]]), _collate([ds[2]])]

    def perfect(b):
        logits = torch.logit(b["centre"].clamp(1e-6, 1 - 1e-6))
        return DetectorNetOutput(logits, b["size"].clamp_min(1.0), b["offset"])

    task = DetectionTask(IDS)
    m = task.evaluate(_Oracle([perfect(b) for b in batches]), iter(batches))
    assert m["val_det_instances"] == 9 and m["val_det_detections"] == 9
    assert m["val_det_recall"] == m["val_det_precision"] == m["val_det_f1"] == 1.0
    assert np.isfinite(m["val_det_loss"])
    empty = [DetectorNetOutput(torch.full_like(b["centre"], -9.0), torch.ones_like(b["size"]),
                               torch.zeros_like(b["offset"])) for b in batches]
    m = task.evaluate(_Oracle(empty), iter(batches))
    assert m["val_det_f1"] == 0.0 and m["val_det_recall"] == 0.0
    assert np.isnan(m["val_det_precision"]) and m["val_det_detections"] == 0
    assert task.name == "detect" and task.primary_metric == "val_det_f1" and task.maximize


TOY_DATA = ["--toy", "8", "--input-size", "64x48", "--batch-size", "4", "--threads", "1",
            "--no-progress"]
TOY = [*TOY_DATA, "--epochs", "2", "--max-steps-per-epoch", "2"]


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect")
    assert main(["train", "detect", "--out", str(root / "run"), *TOY]) == 0
    return root / "run"


@pytest.mark.slow
def test_train_detect_writes_checkpoints_and_validation_metrics(detect_run, tmp_path, capsys):
    from dvc_perception.train.checkpoints import load_checkpoint

    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png", "provenance.json"):
        assert (detect_run / name).is_file(), name
    rows = list(csv.DictReader((detect_run / "metrics.csv").open()))
    assert len(rows) == 2
    for key in ("train_centre", "train_size", "train_offset", "val_det_loss"):
        assert np.isfinite(float(rows[-1][key])), key
    assert 0.0 <= float(rows[-1]["val_det_f1"]) <= 1.0
    assert float(rows[-1]["val_det_instances"]) > 0
    ckpt = load_checkpoint(detect_run / "best.pt")
    assert ckpt["task"] == "detect" and ckpt["model_kind"] == "detector"
    assert list(ckpt["model_config"]["object_ids"]) == ["toy_cube"]
    # fine-tuning from it works; a pose run cannot start from a detector (one-line error)
    assert main(["train", "detect", "--out", str(tmp_path / "ft"), "--init",
                 str(detect_run / "best.pt"), *TOY_DATA, "--epochs", "1",
                 "--max-steps-per-epoch", "1"]) == 0
    capsys.readouterr()
    assert main(["train", "pose", "--out", str(tmp_path / "bad"), "--init",
                 str(detect_run / "best.pt"), *TOY]) == 2
    err = capsys.readouterr().err.strip()
    assert "--init" in err and "differs" in err and "\n" not in err


@pytest.mark.slow
def test_export_detector_onnxruntime_torch_backend_agree(detect_run, tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from dvc_perception.engines.export import read_model_metadata
    from dvc_perception.engines.load import load_engine
    from dvc_perception.models.factory import DETECTOR_FACTORY
    from dvc_perception.train.checkpoints import load_checkpoint, model_from_checkpoint

    monkeypatch.chdir(tmp_path)
    assert main(["export", str(detect_run / "best.pt")]) == 0  # default name from the classes
    out = tmp_path / "models" / "detector_toy_cube.onnx"
    assert out.is_file() and out.with_suffix(".pt").is_file()
    proto = onnx.load(str(out))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [o.name for o in proto.graph.output] == list(DetectorNetForExport.output_names)
    meta = read_model_metadata(out)
    assert meta.task == "detector" and meta.input_size == (64, 48)
    assert meta.object_ids == ("toy_cube",)
    assert meta.mean == (0.0, 0.0, 0.0) and meta.std == (1.0, 1.0, 1.0)
    assert meta.architecture["factory"] == DETECTOR_FACTORY
    assert meta.architecture["kwargs"]["object_ids"] == ["toy_cube"]
    assert meta.extra["output_stride"] == 4
    assert set(meta.extra["outputs"]) == {"centre_prob", "size", "offset"}
    assert len(meta.provenance["git_commit"]) == 40 and meta.provenance["epochs"] in (1, 2)
    assert "val_det_f1" in meta.provenance["final_metrics"]

    image = np.random.default_rng(0).random((1, 3, 48, 64), dtype=np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": image})))
    net = DetectorNetForExport(model_from_checkpoint(load_checkpoint(detect_run / "best.pt")))
    with torch.no_grad():
        ref = [t.numpy() for t in net(torch.from_numpy(image))]
    for name, value in zip(DetectorNetForExport.output_names, ref):
        assert got[name].shape == value.shape
        np.testing.assert_allclose(got[name], value, atol=1e-4, rtol=1e-4, err_msg=name)
    # the torch backend rebuilds the detector from the metadata's factory and the .pt beside it
    by_torch = load_engine(out, backend="torch", device="cpu").run({"image": image})
    by_ort = load_engine(out, backend="onnxruntime", device="cpu").run({"image": image})
    for name in DetectorNetForExport.output_names:
        np.testing.assert_allclose(by_torch[name], by_ort[name], atol=1e-4, rtol=1e-4,
                                   err_msg=name)


@pytest.mark.slow
def test_export_detector_ensemble_outputs_the_members_mean(detect_run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    from dvc_perception.engines.export import read_model_metadata
    from dvc_perception.engines.load import load_engine
    from dvc_perception.models.factory import DETECTOR_ENSEMBLE_FACTORY

    other = tmp_path / "other"  # a second member: another initialisation seed
    assert main(["train", "detect", "--out", str(other), *TOY, "--seed", "7"]) == 0
    members = [detect_run / "best.pt", other / "best.pt"]
    singles = []
    for k, member in enumerate(members):
        assert main(["export", str(member), "--out", str(tmp_path / f"m{k}.onnx")]) == 0
        singles.append(ort.InferenceSession(str(tmp_path / f"m{k}.onnx"),
                                            providers=["CPUExecutionProvider"]))
    out = tmp_path / "ensemble.onnx"
    assert main(["export", *map(str, members), "--out", str(out)]) == 0
    assert "task detector" in capsys.readouterr().out
    meta = read_model_metadata(out)
    assert meta.task == "detector" and meta.object_ids == ("toy_cube",)
    assert meta.architecture["factory"] == DETECTOR_ENSEMBLE_FACTORY
    assert meta.architecture["kwargs"]["members"] == 2
    assert len(meta.provenance["members"]) == 2
    # the reference: each member exported alone, run by ONNX Runtime, averaged here
    image = np.random.default_rng(1).random((1, 3, 48, 64), dtype=np.float32)
    names = list(DetectorNetForExport.output_names)
    ref = [dict(zip(names, s.run(names, {"image": image}))) for s in singles]
    assert not np.allclose(ref[0]["centre_prob"], ref[1]["centre_prob"])  # members differ
    by_ort = load_engine(out, backend="onnxruntime", device="cpu").run({"image": image})
    by_torch = load_engine(out, backend="torch", device="cpu").run({"image": image})
    for name in names:
        mean = (ref[0][name] + ref[1][name]) / 2
        np.testing.assert_allclose(by_ort[name], mean, atol=1e-5, rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(by_torch[name], mean, atol=1e-4, rtol=1e-4, err_msg=name)


@pytest.mark.slow
def test_detector_ensemble_members_must_be_alike(detect_run, tmp_path, capsys):
    wide = tmp_path / "wide"  # another input size: not a member of the same ensemble
    assert main(["train", "detect", "--out", str(wide), *TOY_DATA, "--input-size", "96x64",
                 "--epochs", "1", "--max-steps-per-epoch", "1"]) == 0
    capsys.readouterr()
    out = str(tmp_path / "bad.onnx")
    assert main(["export", str(detect_run / "best.pt"), str(wide / "best.pt"), "--out",
                 out]) == 2
    err = capsys.readouterr().err
    assert "members must be alike" in err and "input_" in err
    pose = tmp_path / "pose"
    assert main(["train", "pose", "--out", str(pose), *TOY_DATA, "--epochs", "1",
                 "--max-steps-per-epoch", "1"]) == 0
    capsys.readouterr()
    assert main(["export", str(detect_run / "best.pt"), str(pose / "best.pt"), "--out",
                 out]) == 2
    assert "an ensemble is of detectors" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "detect", "--toy", "4", "--no-pose-loss"], "--no-pose-loss only applies to "
                                                          "`train pose`"),
    (["train", "detect", "--toy", "4", "--silog-lambda", "0.5"], "--silog-lambda only applies"),
    (["train", "detect", "--toy", "4", "--pose-weight", "2"], "--pose-weight only applies"),
    (["train", "depth", "--toy", "4", "--keypoint-weight", "2"], "--keypoint-weight only"),
    (["train", "detect", "--toy", "4", "--objects", "demo_object"], "--objects does not apply"),
    (["train", "detect", "--toy", "4", "--crop", "40x30"], "crop: expected multiples of 16"),
])
def test_bad_detect_combinations_are_one_line_config_errors(argv, message, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main([*argv, "--out", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not run_dir.exists() or not any(run_dir.glob("*.pt"))


@pytest.mark.slow
def test_train_detect_on_renderer_shards(tmp_path, capsys):
    from dvc_perception.train.runner import open_frame_source

    train_dir, val_dir = tmp_path / "train", tmp_path / "val"
    size = ["--width", "128", "--height", "96", "--no-progress"]
    assert main(["synth", "--frames", "4", "--out", str(train_dir), "--seed", "1", *size]) == 0
    assert main(["synth", "--frames", "2", "--out", str(val_dir), "--seed", "2", *size]) == 0
    frame = open_frame_source(train_dir, "detect")[0]  # RGB and instance masks kept
    assert frame.depth is None and all(a.mask is not None for a in frame.objects)
    common = ["--data", str(train_dir), "--val-data", str(val_dir), "--input-size", "128x96",
              "--epochs", "1", "--batch-size", "2", "--max-steps-per-epoch", "1",
              "--threads", "1", "--no-progress"]
    assert main(["train", "detect", "--objects", "demo_object", "--crop", "64x48",
                 "--out", str(tmp_path / "run"), *common]) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert float(rows[-1]["val_det_instances"]) >= 1
    # an object the shards do not hold: the demo object's YAML under another id
    from dvc_perception.render.objects import find_object_yaml

    demo = find_object_yaml("demo_object")
    twin = tmp_path / "twin.yaml"
    twin.write_text(demo.read_text().replace("id: demo_object", "id: twin").replace(
        "mesh: demo_object.obj", f"mesh: {demo.parent / 'demo_object.obj'}"))
    capsys.readouterr()
    assert main(["train", "detect", "--objects", "demo_object", str(twin),
                 "--out", str(tmp_path / "bad"), *common]) == 2
    err = capsys.readouterr().err
    assert "--objects ['twin']: not in the training shards" in err

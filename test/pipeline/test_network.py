# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Network keypoint/depth sources on exported *untrained* models, run by real ONNX Runtime.

The references are computed here independently of the sources: the letterbox input is built
with OpenCV from the documented affine, the engine is run directly, and keypoints/depth are
brought back with the documented formulas (``u = (u_in + 0.5) / s - 0.5``, metric depth
``depth_canonical * s * fx / f0``, nearest sampling, NaN in the padding).
"""

from __future__ import annotations

import dataclasses
import warnings

import cv2
import numpy as np
import pytest
import torch

from dvc_perception.config import PipelineConfig
from dvc_perception.engines.export import export_onnx, read_model_metadata
from dvc_perception.engines.preprocess import ZoomCrop
from dvc_perception.errors import ConfigError, ModelSpecError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.models.depth_net import DepthNet, DepthNetConfig
from dvc_perception.models.factory import VERIFIER_FACTORY
from dvc_perception.models.keypoint_net import KeypointNet, KeypointNetConfig, KeypointNetForExport
from dvc_perception.models.verifier_net import VerifierNet, VerifierNetConfig, VerifierNetForExport
from dvc_perception.pipeline.pipeline import Pipeline
from dvc_perception.train.checkpoints import (
    DEPTH_OUTPUTS,
    INPUT_NAME,
    KEYPOINT_OUTPUTS,
    export_metadata,
)

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from dvc_perception.pipeline.network import (  # noqa: E402
    BoxVerifier,
    NetworkDepthSource,
    NetworkDetector,
    NetworkKeypointSource,
    TwoStageKeypointSource,
)

OBJECT_IDS = ("mug_a", "box_b")
NUM_KEYPOINTS = 6
SMALL = {"widths": (8, 8, 16, 16), "blocks": (0, 0, 0, 1)}  # untrained and tiny: fast export


def _provenance() -> dict:
    return {"git": {"commit": "0" * 40}, "command": ["pytest"], "date": "2026-01-01",
            "data": {"seed": 0}, "seeds": {"train": 0}}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("net_models")
    rng = np.random.default_rng(0)
    kp_cfg = KeypointNetConfig(object_ids=OBJECT_IDS, num_keypoints=NUM_KEYPOINTS,
                               decoder_channels=(16, 16), **SMALL)
    objects = [{"object_id": o, "keypoints_obj": rng.uniform(-0.05, 0.05, (NUM_KEYPOINTS, 3))
                .tolist(), "diameter_m": 0.15, "symmetries": None} for o in OBJECT_IDS]
    kp_ckpt = {"model_kind": "keypoint", "model_config": dataclasses.asdict(kp_cfg),
               "objects": objects, "provenance": _provenance()}
    h, w = kp_cfg.input_height, kp_cfg.input_width
    d_cfg = DepthNetConfig(decoder_channels=(16, 8, 8), **SMALL)
    d_ckpt = {"model_kind": "depth", "model_config": dataclasses.asdict(d_cfg),
              "provenance": _provenance()}
    example = (torch.zeros(1, 3, h, w),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)  # static shapes
        kp_path = export_onnx(KeypointNetForExport(KeypointNet(kp_cfg)), example,
                              root / "kp.onnx", input_names=[INPUT_NAME],
                              output_names=list(KEYPOINT_OUTPUTS),
                              metadata=export_metadata(kp_ckpt, command=["pytest"]))
        d_path = export_onnx(DepthNet(d_cfg), example, root / "depth.onnx",
                             input_names=[INPUT_NAME], output_names=list(DEPTH_OUTPUTS),
                             metadata=export_metadata(d_ckpt, command=["pytest"]))
    return kp_path, d_path


def _image(width: int, height: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _reference_run(path, image: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """Letterbox with the documented affine and run ONNX Runtime directly: (s, outputs)."""
    import onnxruntime as ort

    meta = read_model_metadata(path)
    w_in, h_in = meta.input_size
    h, w = image.shape[:2]
    s = min(w_in / w, h_in / h)
    affine = np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]])
    # float in [0, 1] before the bilinear warp, as training warps its frames
    x = cv2.warpAffine(image.astype(np.float32) / 255.0, affine, (w_in, h_in),
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    x = x.transpose(2, 0, 1)[None]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return s, dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))


def test_keypoint_source_reads_the_metadata_and_maps_keypoints_back_exactly(models):
    kp_path, _ = models
    source = NetworkKeypointSource(kp_path, "onnxruntime", min_objectness=0.0)
    meta = read_model_metadata(kp_path)
    assert source.object_ids == OBJECT_IDS == meta.object_ids
    assert source.backend.startswith("network:onnxruntime")
    image = _image(640, 360)
    detections = source.detect(image)
    assert [d.object_id for d in detections] == list(OBJECT_IDS)  # threshold 0 keeps all
    s, ref = _reference_run(kp_path, image)
    assert s == pytest.approx(0.5)
    for o, det in enumerate(detections):
        assert det.keypoints_px.shape == (NUM_KEYPOINTS, 2)
        assert det.points_obj.shape == (NUM_KEYPOINTS, 3)
        np.testing.assert_array_equal(det.points_obj, np.asarray(meta.keypoints_3d[det.object_id]))
        expected = (ref["x2d"][0, o].astype(np.float64) + 0.5) / s - 0.5
        np.testing.assert_allclose(det.keypoints_px, expected, atol=1e-4, rtol=0)
        np.testing.assert_allclose(det.confidence, ref["weights"][0, o], atol=1e-6, rtol=0)
        # x2d lies in the 320x180 content of the input, so keypoints lie in the 640x360 image
        assert np.all(det.keypoints_px >= -0.5)
        assert np.all(det.keypoints_px[:, 0] <= 640 - 0.5)


def test_objectness_threshold_selects_objects(models):
    kp_path, _ = models
    image = _image(640, 480, seed=2)
    _, ref = _reference_run(kp_path, image)
    objectness = ref["objectness"][0]
    threshold = float(objectness.mean())
    source = NetworkKeypointSource(kp_path, min_objectness=threshold)
    got = [d.object_id for d in source.detect(image)]
    assert got == [o for o, v in zip(OBJECT_IDS, objectness) if v >= threshold]
    assert NetworkKeypointSource(kp_path, min_objectness=1.01).detect(image) == []


@pytest.mark.parametrize(
    "width, height, fx, scale",
    [(640, 360, 500.0, 0.5),  # 16:9 -> s = 1/2, content 320x180, padding below (rows 180..239)
     (640, 560, 450.0, 3.0 / 7.0)],  # taller than 4:3 -> s = 3/7, content 275x240, padding right
)
def test_depth_source_is_metric_nearest_and_never_shows_the_padding(
    models, width, height, fx, scale
):
    _, d_path = models
    source = NetworkDepthSource(d_path)
    f0 = read_model_metadata(d_path).extra["focal_normalization"]["reference_focal_px"]
    assert source.reference_focal_px == f0 == 300.0
    image = _image(width, height, seed=width + height)
    K = np.array([[fx, 0.0, (width - 1) / 2], [0.0, fx, (height - 1) / 2], [0.0, 0.0, 1.0]])
    depth = source.estimate(image, K)
    assert depth.shape == (height, width) and depth.dtype == np.float32
    s, ref = _reference_run(d_path, image)
    assert s == pytest.approx(scale)
    canonical = ref["depth_canonical"][0, 0]  # (240, 320) m at focal f0
    # the padding is the input outside ceil(s * size): the network predicts there too (on black),
    # and none of it may reach the output; every output pixel is its nearest content pixel
    content_w, content_h = int(np.ceil(s * width - 1e-9)), int(np.ceil(s * height - 1e-9))
    assert (content_w, content_h) != tuple(canonical.shape[::-1])  # this input is padded
    padded = np.full_like(canonical, np.nan)
    padded[:content_h, :content_w] = canonical[:content_h, :content_w]
    u_in = np.rint(s * (np.arange(width) + 0.5) - 0.5).astype(int)
    v_in = np.rint(s * (np.arange(height) + 0.5) - 0.5).astype(int)
    expected = padded[v_in][:, u_in] * (s * fx / f0)
    np.testing.assert_array_equal(np.isnan(depth), np.isnan(expected))
    assert np.all(np.isfinite(depth))  # nearest sampling of the source never lands in padding
    np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=0)
    # an independent spot check of the scaling on a few pixels, one-by-one
    for u, v in ((0, 0), (width - 1, height - 1), (width // 3, height // 2)):
        ui = int(round(s * (u + 0.5) - 0.5))
        vi = int(round(s * (v + 0.5) - 0.5))
        assert depth[v, u] == pytest.approx(canonical[vi, ui] * s * fx / 300.0, rel=1e-5)


def test_bad_model_paths_are_typed_errors_naming_the_path(models, tmp_path):
    kp_path, d_path = models
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelSpecError, match="nope.onnx"):
        NetworkKeypointSource(missing)
    with pytest.raises(ModelSpecError, match="nope.onnx"):
        Pipeline.from_config({"keypoint_source": "network",
                              "network": {"model_path": str(missing)}})
    with pytest.raises(ModelSpecError, match="nope.onnx"):
        Pipeline.from_config({"depth_source": "network",
                              "network": {"depth_model_path": str(missing)}})
    with pytest.raises(ConfigError, match="model_path"):
        Pipeline.from_config({"keypoint_source": "network"})
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    with pytest.raises(ModelSpecError, match="junk.onnx"):
        NetworkKeypointSource(junk)
    with pytest.raises(ModelSpecError, match="'depth' model"):
        NetworkDepthSource(kp_path)  # a keypoint model is not a depth model
    with pytest.raises(ModelSpecError, match="'keypoints' model"):
        NetworkKeypointSource(d_path)


def test_pipeline_from_config_runs_network_keypoints_and_depth_end_to_end(models):
    kp_path, d_path = models
    config = PipelineConfig.from_mapping({
        "keypoint_source": "network", "depth_source": "network", "min_score": 0.0,
        "network": {"model_path": str(kp_path), "depth_model_path": str(d_path),
                    "min_objectness": 0.0},
    })
    pipeline = Pipeline.from_config(config)
    assert pipeline.object_ids == OBJECT_IDS
    assert "keypoints=network:onnxruntime" in pipeline.backend
    assert "depth=network:onnxruntime" in pipeline.backend
    K = np.array([[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]])
    camera = CameraModel(K, np.zeros(0), 640, 480, "none")
    result = pipeline.process(_image(640, 480, seed=6), camera, stamp=1.5)
    assert result.stamp == 1.5
    assert result.depth is not None and result.depth.shape == (480, 640)
    assert {p.object_id for p in result.poses} <= set(OBJECT_IDS)  # untrained: maybe none
    for pose in result.poses:
        assert pose.R.shape == (3, 3) and pose.covariance.shape == (6, 6)
    assert set(result.timings) >= {"detect_ms", "pnp_ms", "depth_ms", "total_ms"}


@pytest.fixture(scope="module")
def zoom_kp_model(tmp_path_factory):
    """An untrained keypoint model exported as trained on zoom crops (crop scale 1.5)."""
    torch.manual_seed(1)
    rng = np.random.default_rng(0)
    cfg = KeypointNetConfig(object_ids=OBJECT_IDS, num_keypoints=NUM_KEYPOINTS, input_width=96,
                            input_height=96, decoder_channels=(16, 16), **SMALL)
    objects = [{"object_id": o, "keypoints_obj": rng.uniform(-0.05, 0.05, (NUM_KEYPOINTS, 3))
                .tolist(), "diameter_m": 0.15, "symmetries": None} for o in OBJECT_IDS]
    ckpt = {"model_kind": "keypoint", "model_config": dataclasses.asdict(cfg),
            "objects": objects, "provenance": _provenance(), "input_kind": "zoom_crop",
            "crop_scale": 1.5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        return export_onnx(KeypointNetForExport(KeypointNet(cfg)), (torch.zeros(1, 3, 96, 96),),
                           tmp_path_factory.mktemp("zoom") / "kp_zoom.onnx",
                           input_names=[INPUT_NAME], output_names=list(KEYPOINT_OUTPUTS),
                           metadata=export_metadata(ckpt, command=["pytest"]))


@pytest.fixture(scope="module")
def detector_model(tmp_path_factory):
    from dvc_perception.models.detector_net import (
        DetectorNet,
        DetectorNetConfig,
        DetectorNetForExport,
    )

    torch.manual_seed(3)
    cfg = DetectorNetConfig(object_ids=OBJECT_IDS, widths=(8, 8, 16, 16), blocks=(0, 0, 0, 1),
                            decoder_channels=(16, 16))
    net = DetectorNet(cfg)
    with torch.no_grad():  # an untrained detector: make it fire somewhere
        net.centre_head.bias.fill_(-0.5)
    meta = {"dvc_format": 1, "task": "detector",
            "input_size": [cfg.input_width, cfg.input_height],
            "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
            "provenance": {"git_commit": "0" * 40, "command": "pytest", "date": "2026-01-01",
                           "data_seed": 0},
            "object_ids": list(OBJECT_IDS)}
    path = tmp_path_factory.mktemp("det") / "det.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        return export_onnx(DetectorNetForExport(net),
                           (torch.zeros(1, 3, cfg.input_height, cfg.input_width),), path,
                           input_names=[INPUT_NAME],
                           output_names=list(DetectorNetForExport.output_names), metadata=meta)


def test_two_stage_source_crops_every_detection_and_maps_keypoints_back(zoom_kp_model,
                                                                        detector_model):
    import onnxruntime as ort

    from dvc_perception.engines.preprocess import Letterbox, ZoomCrop
    from dvc_perception.models.detector_net import DetectorNetForExport
    from dvc_perception.pipeline.detection import boxes_to_source, decode_detections
    from dvc_perception.pipeline.network import DETECTOR_OUTPUTS, TwoStageKeypointSource

    assert DETECTOR_OUTPUTS == DetectorNetForExport.output_names
    kp_path = zoom_kp_model
    source = TwoStageKeypointSource(detector_model, kp_path, min_detection_score=0.2,
                                    max_per_class=3)
    assert source.crop_scale == 1.5  # the scale the keypoint model was trained with
    assert source.object_ids == OBJECT_IDS and source.backend.startswith("network-two-stage")
    image = _image(640, 480, seed=4)
    # reference: the documented maps, run with onnxruntime directly
    det = ort.InferenceSession(str(detector_model), providers=["CPUExecutionProvider"])
    box = Letterbox(640, 480, *read_model_metadata(detector_model).input_size)
    out = det.run(None, {det.get_inputs()[0].name: box.network_input(image)})
    boxes = boxes_to_source(decode_detections(out[0][0], out[1][0], out[2][0], min_score=0.2,
                                              max_per_class=3), box)
    assert boxes, "the test detector must fire"
    kp = ort.InferenceSession(str(kp_path), providers=["CPUExecutionProvider"])
    size = read_model_metadata(kp_path).input_size
    expected = []
    for b in boxes:
        crop = ZoomCrop.from_box(b.box_xywh, (640, 480), size, scale=1.5)
        x2d, weights, _, _ = kp.run(None, {kp.get_inputs()[0].name: crop.network_input(image)})
        o = b.class_index  # the keypoint model lists the same objects in the same order
        expected.append((OBJECT_IDS[o], crop.points_to_source(x2d[0, o].astype(np.float64)),
                         np.clip(weights[0, o] * b.score, 0, 1)))
    found = source.detect(image)
    assert len(found) == len(expected)
    for d, (object_id, uv, conf) in zip(found, expected):
        assert d.object_id == object_id
        np.testing.assert_allclose(d.keypoints_px, uv, atol=1e-4)
        np.testing.assert_allclose(d.confidence, conf, atol=1e-6)
    # through the pipeline: one pose per instance at most, instances ranked per object id
    cfg = PipelineConfig.from_mapping({"keypoint_source": "network", "min_score": 0.0,
                                       "network": {"model_path": str(kp_path),
                                                   "detector_model_path": str(detector_model),
                                                   "min_detection_score": 0.2}})
    pipe = Pipeline.from_config(cfg)
    assert isinstance(pipe.keypoint_source, TwoStageKeypointSource)
    result = pipe.process(image, CameraModel(np.array([[500.0, 0, 320], [0, 500.0, 240],
                                                       [0, 0, 1]]), np.zeros(0), 640, 480), 0.0)
    for object_id in OBJECT_IDS:
        ranks = [p.instance for p in result.poses if p.object_id == object_id]
        assert ranks == list(range(len(ranks)))


@pytest.fixture(scope="module")
def dense_zoom_model(tmp_path_factory):
    """An untrained dense-coordinate model on zoom crops whose masks are on everywhere."""
    torch.manual_seed(2)
    cfg = KeypointNetConfig(object_ids=OBJECT_IDS, num_keypoints=NUM_KEYPOINTS, input_width=96,
                            input_height=96, decoder_channels=(16, 16), dense_coordinates=True,
                            coordinate_scales_m=(0.075, 0.1), **SMALL)
    net = KeypointNet(cfg)
    with torch.no_grad():
        net.mask_head.bias.fill_(3.0)
    rng = np.random.default_rng(0)
    objects = [{"object_id": o, "keypoints_obj": rng.uniform(-0.05, 0.05, (NUM_KEYPOINTS, 3))
                .tolist(), "diameter_m": 0.15, "symmetries": None} for o in OBJECT_IDS]
    ckpt = {"model_kind": "keypoint", "model_config": dataclasses.asdict(cfg),
            "objects": objects, "provenance": _provenance(), "input_kind": "zoom_crop",
            "crop_scale": 1.5}
    module = KeypointNetForExport(net)
    assert module.output_names == (*KEYPOINT_OUTPUTS, "coordinates")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        return export_onnx(module, (torch.zeros(1, 3, 96, 96),),
                           tmp_path_factory.mktemp("dense") / "dense_zoom.onnx",
                           input_names=[INPUT_NAME], output_names=list(module.output_names),
                           metadata=export_metadata(ckpt, command=["pytest"]))


def test_two_stage_source_reads_dense_coordinates(dense_zoom_model, detector_model):
    import onnxruntime as ort

    from dvc_perception.engines.preprocess import Letterbox, ZoomCrop
    from dvc_perception.pipeline.detection import boxes_to_source, decode_detections
    from dvc_perception.pipeline.network import TwoStageKeypointSource

    meta = read_model_metadata(dense_zoom_model)
    assert meta.extra["correspondences"] == "dense_coordinates"
    assert "coordinates" in meta.extra["outputs"]
    source = TwoStageKeypointSource(detector_model, dense_zoom_model, min_detection_score=0.2,
                                    max_per_class=2)
    assert source.dense
    image = _image(640, 480, seed=5)
    det = ort.InferenceSession(str(detector_model), providers=["CPUExecutionProvider"])
    box = Letterbox(640, 480, *read_model_metadata(detector_model).input_size)
    out = det.run(None, {det.get_inputs()[0].name: box.network_input(image)})
    boxes = boxes_to_source(decode_detections(out[0][0], out[1][0], out[2][0], min_score=0.2,
                                              max_per_class=2), box)
    assert boxes, "the test detector must fire"
    net = ort.InferenceSession(str(dense_zoom_model), providers=["CPUExecutionProvider"])
    names = [o.name for o in net.get_outputs()]
    found = source.detect(image)
    assert len(found) == len(boxes)
    for d, b in zip(found, boxes):
        crop = ZoomCrop.from_box(b.box_xywh, (640, 480), (96, 96), scale=1.5)
        res = dict(zip(names, net.run(None, {net.get_inputs()[0].name:
                                             crop.network_input(image)})))
        o = b.class_index
        # reference decode: every cell (all masks are on: 24 x 24 = 576 > 256), 256 taken
        # evenly in row-major order, its centre 4 j + 1.5 back to the image by the crop map
        idx = np.linspace(0, 575, 256).round().astype(int)
        uv_in = np.stack([4 * (idx % 24) + 1.5, 4 * (idx // 24) + 1.5], -1)
        assert d.object_id == OBJECT_IDS[o]
        np.testing.assert_allclose(d.keypoints_px, crop.points_to_source(uv_in), atol=1e-9)
        np.testing.assert_allclose(
            d.points_obj, res["coordinates"][0, o].reshape(3, -1).T[idx], atol=1e-6)
        np.testing.assert_allclose(
            d.confidence, np.clip(res["mask"][0, o].reshape(-1)[idx] * b.score, 0, 1),
            atol=1e-6)


def test_two_stage_source_checks_each_model(models, zoom_kp_model, detector_model):
    from dvc_perception.pipeline.network import TwoStageKeypointSource

    kp_path, depth_path = models
    with pytest.raises(ModelSpecError, match="detector"):
        TwoStageKeypointSource(zoom_kp_model, zoom_kp_model)  # a keypoint model is no detector
    with pytest.raises(ModelSpecError, match="keypoints"):
        TwoStageKeypointSource(detector_model, depth_path)
    with pytest.raises(ModelSpecError, match="zoom crops"):  # trained on whole frames
        TwoStageKeypointSource(detector_model, kp_path)


def test_two_stage_detection_threshold_changes_while_running(detector_model, zoom_kp_model):
    from dvc_perception.pipeline.network import TwoStageKeypointSource

    source = TwoStageKeypointSource(detector_model, zoom_kp_model, min_detection_score=0.0)
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    everything = source.detect_boxes(image)
    assert everything  # at threshold 0 the untrained detector fires somewhere
    source.min_detection_score = 1.01  # what a live parameter change does
    assert source.min_detection_score == pytest.approx(1.01)
    assert source.detect_boxes(image) == []


# --- the box verifier (`pipeline.network.BoxVerifier`) and the detector re-scored by it: the
# references are the torch module on crops cut by the documented map (`ZoomCrop.from_box`, the
# serving crop) and the detector's own boxes re-scored by hand, sqrt(score x class probability)

BATCH = 4


def _export_verifier(path, object_ids, *, seed=5, batch=BATCH, crop_scale=1.5, task="verifier"):
    """An untrained verifier (32x32 crops) exported as `train verify` does; (path, module)."""
    torch.manual_seed(seed)
    cfg = VerifierNetConfig(object_ids=tuple(object_ids), input_size=32,
                            widths=(8, 8, 16, 16, 16))
    module = VerifierNetForExport(VerifierNet(cfg)).eval()
    meta = {"dvc_format": 1, "task": task, "input_size": [32, 32],
            "object_ids": list(object_ids),
            "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3},
            "provenance": {"git_commit": "0" * 40, "command": "pytest", "date": "2026-01-01",
                           "data_seed": 0},
            "architecture": {"factory": VERIFIER_FACTORY,
                             "kwargs": {"object_ids": list(object_ids), "input_size": 32,
                                        "widths": [8, 8, 16, 16, 16]}},
            "input_kind": "zoom_crop", "crop_scale": crop_scale, "batch": batch}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)  # static shapes
        export_onnx(module, (torch.zeros(batch, 3, 32, 32),), path, input_names=["image"],
                    output_names=["class_prob"], metadata=meta)
    return path, module


@pytest.fixture(scope="module")
def verifier(tmp_path_factory):
    # the verifier lists the classes in another order than the detector, plus one more
    return _export_verifier(tmp_path_factory.mktemp("ver") / "verifier.onnx",
                            ("other", *reversed(OBJECT_IDS)))


def _reference_probs(module, image, boxes, scale=1.5):
    h, w = image.shape[:2]
    crops = np.concatenate([ZoomCrop.from_box(b, (w, h), (32, 32), scale=scale)
                            .network_input(image) for b in boxes])
    with torch.no_grad():
        return module(torch.from_numpy(crops)).numpy()


def test_class_probabilities_are_the_model_on_the_serving_crops_in_padded_chunks(verifier):
    path, module = verifier
    image = _image(640, 480, seed=7)
    rng = np.random.default_rng(0)
    # 9 boxes: two full chunks of 4 and one padded; some reach over the image border
    boxes = [(float(x), float(y), float(s), float(s * a)) for x, y, s, a in zip(
        rng.uniform(-30, 620, 9), rng.uniform(-30, 460, 9), rng.uniform(12, 200, 9),
        rng.uniform(0.5, 2.0, 9))]
    ver = BoxVerifier(path, OBJECT_IDS)
    assert ver.batch == BATCH and ver.crop_scale == 1.5
    probs = ver.class_probabilities(image, boxes)
    expected = _reference_probs(module, image, boxes)
    assert probs.shape == (9, 1 + 3)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # detector class o is verifier column 1 + its position in the verifier's list
    assert ver.columns.tolist() == [3, 2]
    assert ver.class_probabilities(image, []).shape == (0, 4)


def test_detector_boxes_are_rescored_by_the_geometric_mean_and_filtered(verifier,
                                                                       detector_model):
    path, module = verifier
    image = _image(640, 480, seed=4)
    plain = NetworkDetector(detector_model, min_detection_score=0.01, max_per_class=10)
    candidates = plain.detect_boxes(image)
    assert len(candidates) > 4, "the test detector must fire"
    probs = _reference_probs(module, image, [b.box_xywh for b in candidates])
    column = {0: 3, 1: 2}
    expected = sorted(((np.sqrt(b.score * probs[i, column[b.class_index]]), b.class_index,
                        b.box_xywh) for i, b in enumerate(candidates)), key=lambda e: -e[0])
    threshold = float(np.median([e[0] for e in expected]))
    verified = NetworkDetector(detector_model, min_detection_score=threshold, max_per_class=2,
                               verifier_path=path, verifier_candidates=10)
    got = verified.detect_boxes(image)
    want, count = [], {}
    for score, cls, box in expected:
        if score >= threshold and count.get(cls, 0) < 2:
            want.append((score, cls, box))
            count[cls] = count.get(cls, 0) + 1
    assert [(g.class_index, g.box_xywh) for g in got] == [(c, b) for _, c, b in want]
    np.testing.assert_allclose([g.score for g in got], [s for s, _, _ in want], atol=1e-5)
    assert "verifier" in verified.description


def test_verifier_models_that_do_not_fit_are_typed_errors(tmp_path, detector_model):
    missing, _ = _export_verifier(tmp_path / "missing.onnx", OBJECT_IDS[:1])
    with pytest.raises(ModelSpecError, match="missing .*" + OBJECT_IDS[1]):
        BoxVerifier(missing, OBJECT_IDS)
    wrong_task, _ = _export_verifier(tmp_path / "task.onnx", OBJECT_IDS, task="detector")
    with pytest.raises(ModelSpecError, match="expected a 'verifier' model"):
        BoxVerifier(wrong_task, OBJECT_IDS)
    with pytest.raises(ModelSpecError, match="verifier"):
        BoxVerifier(detector_model, OBJECT_IDS)
    with pytest.raises(ConfigError, match="verifier_candidates"):
        NetworkDetector(detector_model, verifier_path=missing.parent / "task.onnx",
                        verifier_candidates=0)


def test_two_stage_pipeline_reads_the_verifier_from_the_config(verifier, detector_model,
                                                               zoom_kp_model):
    from dvc_perception.pipeline.pipeline import make_keypoint_source

    path, _ = verifier
    network = {"model_path": str(zoom_kp_model), "detector_model_path": str(detector_model),
               "verifier_model_path": str(path), "verifier_candidates": 3}
    source = make_keypoint_source(PipelineConfig.from_mapping(
        {"keypoint_source": "network", "network": network}))
    assert isinstance(source, TwoStageKeypointSource)
    assert "verifier" in source.backend
    # a verifier without a detector is refused, not ignored
    with pytest.raises(ConfigError, match="needs pipeline.network.detector_model_path"):
        make_keypoint_source(PipelineConfig.from_mapping(
            {"keypoint_source": "network",
             "network": {"model_path": str(zoom_kp_model), "verifier_model_path": str(path)}}))
    with pytest.raises(ModelSpecError, match="verifier_model_path"):
        make_keypoint_source(PipelineConfig.from_mapping(
            {"keypoint_source": "network", "network": {**network, "verifier_model_path":
                                                       str(path.parent / "nothing.onnx")}}))

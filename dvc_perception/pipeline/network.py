# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Network keypoint and depth sources: an exported ONNX model behind `engines.load_engine`.

Everything model-specific comes from the ONNX metadata (`engines.export.read_model_metadata`):
the input size, the normalisation, the object ids and each object's 3D keypoints, and for depth
the reference focal length. A frame is letterboxed to the network input (`Letterbox`: scale
``s = min(W / w, H / h)``, top-left, zero padding), fed as float32 NCHW RGB in [0, 1]
(``(x - mean) / std`` of the metadata, identity for the shipped models whose normalisation is in
the graph), and the outputs go back to the input image exactly:

- keypoints: ``x2d`` (B, O, K, 2) px in the network input -> ``u = (u_in + 0.5) / s - 0.5``;
  ``weights`` (B, O, K) are the confidences (PnP weights; low-weight keypoints stay in, RANSAC
  handles outliers); an object is reported when its ``objectness`` (B, O) reaches a threshold.
- depth: ``depth_canonical`` (B, 1, H, W) m at the reference focal f0 -> metric depth
  ``depth_canonical * fx_in / f0`` with ``fx_in = s * fx`` the letterboxed input's focal length,
  then nearest-neighbour back to the input resolution, NaN in the letterbox padding.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.engines.base import Engine, ModelMetadata
from dvc_perception.engines.export import read_model_metadata
from dvc_perception.engines.load import load_engine
from dvc_perception.engines.preprocess import Letterbox, ZoomCrop, check_rgb_image
from dvc_perception.errors import ConfigError, InputError, ModelSpecError, ShapeError
from dvc_perception.pipeline.detection import BoxDetection, boxes_to_source, decode_detections
from dvc_perception.pipeline.sources import KeypointDetection

#: Outputs the keypoint source reads (see `train.checkpoints.export_metadata`).
KEYPOINT_OUTPUTS: tuple[str, ...] = ("x2d", "weights", "objectness")
#: Outputs the two-stage source reads from a dense-coordinate model (metadata
#: ``correspondences: dense_coordinates``) instead of the keypoints.
DENSE_OUTPUTS: tuple[str, ...] = ("mask", "coordinates")
#: Outputs the two-stage source reads from the detector (`models.detector_net`).
DETECTOR_OUTPUTS: tuple[str, ...] = ("centre_prob", "size", "offset")
#: Output the box verifier gives (`models.verifier_net.VerifierNetForExport`).
VERIFIER_OUTPUT = "class_prob"
#: Lowest centre score of a box the verifier is shown (`NetworkDetector`).
CANDIDATE_MIN_SCORE = 0.01
#: Output the depth source reads.
DEPTH_OUTPUT = "depth_canonical"


class _NetworkModel:
    """An exported model, its metadata and its engine; the letterbox of each frame size.

    Args:
        model_path: the ONNX file.
        task: the metadata ``task`` this model must have ("keypoints" or "depth").
        outputs: output names the caller reads.
        backend, precision, device, cache_dir: see `engines.load_engine`.

    Raises:
        ModelSpecError: missing or unreadable file, wrong task, input or outputs that do not
            match the metadata.
        EngineUnavailableError: the backend cannot run here.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        task: str,
        outputs: Sequence[str],
        backend: str,
        precision: str,
        device: str | None,
        cache_dir: str | os.PathLike[str] | None,
    ) -> None:
        self.path = Path(model_path)
        if not str(model_path) or not self.path.is_file():
            raise ModelSpecError(f"{task} model file {str(model_path)!r} does not exist")
        self.metadata: ModelMetadata = read_model_metadata(self.path)
        if self.metadata.task != task:
            raise ModelSpecError(
                f"{self.path}: expected a {task!r} model, its metadata says task "
                f"{self.metadata.task!r}"
            )
        self.engine: Engine = load_engine(
            self.path, backend=backend, precision=precision, device=device, cache_dir=cache_dir
        )
        width, height = self.metadata.input_size
        if len(self.engine.inputs) != 1:
            raise ModelSpecError(
                f"{self.path}: expected one input, got {[s.name for s in self.engine.inputs]}"
            )
        spec = self.engine.inputs[0]
        if len(spec.shape) != 4 or tuple(spec.shape[1:]) != (3, height, width):
            raise ModelSpecError(
                f"{self.path}: input {spec.name!r} is {spec.shape}, metadata input_size "
                f"{width}x{height} expects (B, 3, {height}, {width})"
            )
        self.input_name = spec.name
        self.input_dtype = np.dtype(spec.dtype)
        self.require_outputs(outputs)
        self.mean = tuple(float(m) for m in self.metadata.mean)
        self.std = tuple(float(v) for v in self.metadata.std)
        self._letterboxes: dict[tuple[int, int], Letterbox] = {}

    def require_outputs(self, outputs: Sequence[str]) -> None:
        """ModelSpecError naming the `outputs` the engine lacks."""
        names = [s.name for s in self.engine.outputs]
        missing = [n for n in outputs if n not in names]
        if missing:
            raise ModelSpecError(f"{self.path}: outputs {missing} missing; it has {names}")

    @property
    def description(self) -> str:
        """``<backend>/<precision> (<file name>)`` for diagnostics."""
        return f"{self.engine.backend}/{self.engine.precision} ({self.path.name})"

    def letterbox(self, width: int, height: int) -> Letterbox:
        """The letterbox from a `width` x `height` image to the network input."""
        key = (width, height)
        if key not in self._letterboxes:
            self._letterboxes[key] = Letterbox(width, height, *self.metadata.input_size)
        return self._letterboxes[key]

    def run(self, image_rgb: np.ndarray) -> tuple[Letterbox, dict[str, np.ndarray]]:
        """Letterbox `image_rgb` (H, W, 3) uint8, run the engine; (letterbox, outputs)."""
        width, height = check_rgb_image(image_rgb)
        letterbox = self.letterbox(width, height)
        return letterbox, self.run_on(letterbox, image_rgb)

    def run_on(self, input_map: Letterbox | ZoomCrop, image_rgb: np.ndarray
               ) -> dict[str, np.ndarray]:
        """Run the engine on `input_map`'s network input of `image_rgb` (H, W, 3) uint8."""
        x = input_map.network_input(image_rgb, self.mean, self.std)
        return self.engine.run({self.input_name: np.ascontiguousarray(x, dtype=self.input_dtype)})


class _ModelBackedSource:
    """What both network sources expose about their model (set `_model` in `__init__`)."""

    _model: _NetworkModel

    @property
    def metadata(self) -> ModelMetadata:
        """The model's metadata."""
        return self._model.metadata

    @property
    def engine(self) -> Engine:
        """The inference engine."""
        return self._model.engine

    def letterbox(self, width: int, height: int) -> Letterbox:
        """The letterbox used for `width` x `height` images."""
        return self._model.letterbox(width, height)


class NetworkKeypointSource(_ModelBackedSource):
    """Keypoints of the objects a keypoint network knows (`KeypointSource`).

    Args:
        model_path: exported keypoint ONNX model (``task: keypoints``; metadata ``object_ids``
            and ``keypoints_3d`` per object in metres, object frame).
        backend: "onnxruntime" | "tensorrt" | "torch" | "auto" (see `engines.load_engine`).
        min_objectness: objects whose ``objectness`` is below this are not reported.
        precision: "fp32" | "fp16" | "int8".
        device: None (best available), "cpu", "cuda" or "cuda:N".
        cache_dir: TensorRT engine cache directory.

    Raises:
        ModelSpecError: missing file, wrong task, or metadata without 3D keypoints for an
            object (named).
        EngineUnavailableError: the backend cannot run here.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        backend: str = "onnxruntime",
        *,
        min_objectness: float = 0.5,
        precision: str = "fp32",
        device: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._model = _NetworkModel(
            model_path, "keypoints", KEYPOINT_OUTPUTS, backend, precision, device, cache_dir
        )
        meta = self._model.metadata
        if not meta.object_ids:
            raise ModelSpecError(f"{self._model.path}: metadata lists no object_ids")
        self.object_ids: tuple[str, ...] = tuple(meta.object_ids)
        self.points_obj: dict[str, np.ndarray] = {}
        for object_id in self.object_ids:
            self.points_obj[object_id] = _keypoints_3d(meta.keypoints_3d, object_id, self._model)
        self.min_objectness = float(min_objectness)
        self.backend = f"network:{self._model.description}"

    def detect(self, image_rgb: np.ndarray) -> list[KeypointDetection]:
        """Keypoints of every object with objectness >= `min_objectness`.

        Args:
            image_rgb: (H, W, 3) uint8 RGB.

        Returns:
            One detection per reported object, in metadata order: keypoints (K', 2) px in the
            input image, their 3D points (K', 3) m, confidences (K',) = the network's weights,
            where K' counts the keypoints with finite coordinates (objects with fewer than 4
            are left out).

        Raises:
            ShapeError: `image_rgb` is not (H, W, 3) uint8.
            ModelSpecError: the outputs do not have the shapes the metadata implies.
        """
        letterbox, out = self._model.run(image_rgb)
        x2d, weights, objectness = _keypoint_outputs(out, self._model, len(self.object_ids))
        detections = []
        for o, object_id in enumerate(self.object_ids):
            if not objectness[0, o] >= self.min_objectness:  # also drops NaN
                continue
            det = _object_keypoints(x2d[0, o], weights[0, o], object_id, self.points_obj,
                                    letterbox, self._model)
            if det is not None:
                detections.append(det)
        return detections


class BoxVerifier:
    """A second look at detector boxes: a crop classifier on the full-resolution frame.

    Each box becomes a `ZoomCrop` of the full-resolution image (side = the model's
    ``crop_scale`` x the box's longer side, at its input size: the crops it was trained on,
    ``train verify``) and the model (``task: verifier``, output ``class_prob`` (B, 1 + O):
    background, then its ``object_ids``; `models.verifier_net`) gives the probability of each
    class. Crops run in chunks of the model input's static batch (16 as `train verify` exports
    it), the last one padded with zeros.

    Args:
        model_path: exported verifier ONNX model.
        object_ids: the detector's classes, in its order; the verifier must know each.
        backend, precision, device, cache_dir: see `engines.load_engine`.

    Raises:
        ModelSpecError: a missing file, a wrong task, metadata without ``crop_scale``, an
            output of the wrong shape, or a detector class the verifier does not know (both
            lists named).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        object_ids: Sequence[str],
        backend: str = "onnxruntime",
        *,
        precision: str = "fp32",
        device: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._model = _NetworkModel(model_path, "verifier", (VERIFIER_OUTPUT,), backend,
                                    precision, device, cache_dir)
        self.path = self._model.path
        meta = self._model.metadata
        known = tuple(meta.object_ids)
        unknown = [o for o in object_ids if o not in known]
        if unknown or not object_ids:
            raise ModelSpecError(f"the detector's classes {list(object_ids)}; the verifier "
                                 f"{self.path} knows {list(known)} (missing {unknown})")
        #: output column of each detector class (column 0 is background)
        self.columns = np.array([1 + known.index(o) for o in object_ids], dtype=np.int64)
        self.num_columns = 1 + len(known)
        extra = meta.extra
        if extra.get("input_kind") != "zoom_crop" or "crop_scale" not in extra:
            raise ModelSpecError(f"{self.path}: a verifier's metadata needs input_kind "
                                 f"zoom_crop and crop_scale, got {dict(extra)!r}")
        self.crop_scale = float(extra["crop_scale"])
        self.batch = int(self._model.engine.inputs[0].shape[0] or 1)
        self.description = self._model.description

    def class_probabilities(self, image_rgb: np.ndarray,
                            boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """(N, 1 + O) class probabilities of the crops around `boxes` (x, y, w, h) image px.

        Raises:
            ShapeError: `image_rgb` is not (H, W, 3) uint8.
            ModelSpecError: ``class_prob`` of the wrong shape.
        """
        width, height = check_rgb_image(image_rgb)
        size = self._model.metadata.input_size
        crops = [ZoomCrop.from_box(b, (width, height), size, scale=self.crop_scale)
                 .network_input(image_rgb, self._model.mean, self._model.std)[0] for b in boxes]
        probs = np.zeros((len(crops), self.num_columns), dtype=np.float64)
        for start in range(0, len(crops), self.batch):
            chunk = crops[start:start + self.batch]
            x = np.zeros((self.batch, 3, size[1], size[0]), dtype=self._model.input_dtype)
            x[:len(chunk)] = np.stack(chunk)
            out = np.asarray(self._model.engine.run({self._model.input_name: x})[VERIFIER_OUTPUT],
                             dtype=np.float64)
            if out.shape != (self.batch, self.num_columns):
                raise ModelSpecError(f"{self.path}: {VERIFIER_OUTPUT} is {out.shape}, expected "
                                     f"({self.batch}, {self.num_columns})")
            probs[start:start + len(chunk)] = out[:len(chunk)]
        return probs

    def rescore(self, image_rgb: np.ndarray, boxes: Sequence[BoxDetection]) -> list[BoxDetection]:
        """`boxes` with score = sqrt(detection score x the verifier's probability of their class).

        The geometric mean keeps the detector's scale: a box that both stages give 0.3 scores
        0.3, so a threshold set for the detector keeps its meaning.
        """
        if not boxes:
            return []
        probs = self.class_probabilities(image_rgb, [b.box_xywh for b in boxes])
        mine = probs[np.arange(len(boxes)), self.columns[[b.class_index for b in boxes]]]
        return [dataclasses.replace(b, score=float(np.sqrt(max(b.score * p, 0.0))))
                for b, p in zip(boxes, mine)]


class NetworkDetector:
    """The first stage alone: an exported detector on the letterboxed whole frame -> boxes.

    With a box verifier (`BoxVerifier`), the detector's `verifier_candidates` best boxes per
    class (centre score >= `CANDIDATE_MIN_SCORE` and >= ``min_detection_score ** 2``, below
    which no box can pass) are re-scored by the geometric mean of the
    detection score and the verifier's probability of the box's class, and
    `min_detection_score` applies to that: the verifier only re-ranks and filters what the
    detector proposed.

    Args:
        detector_path: exported detector ONNX model (metadata task ``detector``).
        backend, precision, device, cache_dir: see `engines.load_engine`.
        min_detection_score: detections with a lower score are dropped (the centre score; with
            a verifier the geometric mean above).
        max_per_class: detections kept per class and frame (after per-class NMS).
        verifier_path: exported box verifier (``task: verifier``), or None.
        verifier_candidates: boxes per class the verifier sees.

    Raises:
        ModelSpecError: a missing file, a wrong task, outputs that do not fit the metadata, a
            verifier that does not know the detector's classes.
    """

    def __init__(
        self,
        detector_path: str | os.PathLike[str],
        backend: str = "onnxruntime",
        *,
        min_detection_score: float = 0.3,
        max_per_class: int = 10,
        precision: str = "fp32",
        device: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        verifier_path: str | os.PathLike[str] | None = None,
        verifier_candidates: int = 10,
    ) -> None:
        self._model = _NetworkModel(detector_path, "detector", DETECTOR_OUTPUTS, backend,
                                    precision, device, cache_dir)
        self.path = self._model.path
        self.object_ids: tuple[str, ...] = tuple(self._model.metadata.object_ids)
        self.min_detection_score = float(min_detection_score)
        self.max_per_class = int(max_per_class)
        self.verifier_candidates = int(verifier_candidates)
        if self.verifier_candidates < 1:
            raise ConfigError(f"verifier_candidates: expected >= 1, got {verifier_candidates}")
        self.verifier = None if not verifier_path else BoxVerifier(
            verifier_path, self.object_ids, backend, precision=precision, device=device,
            cache_dir=cache_dir)

    @property
    def description(self) -> str:
        """``<backend>/<precision> (<file name>)`` (+ the verifier's)."""
        if self.verifier is None:
            return self._model.description
        return f"{self._model.description} + verifier {self.verifier.description}"

    def detect_boxes(self, image_rgb: np.ndarray) -> list[BoxDetection]:
        """Every detected instance of (H, W, 3) uint8 `image_rgb`, best score first.

        Each: class index (into `object_ids`), score, box ``(x, y, w, h)`` in image px.
        """
        letterbox, out = self._model.run(image_rgb)
        maps = [np.asarray(out[n], dtype=np.float32) for n in DETECTOR_OUTPUTS]
        if any(m.ndim != 4 or m.shape[0] != 1 for m in maps) or maps[0].shape[1] != len(
                self.object_ids):
            raise ModelSpecError(f"{self.path}: outputs {[m.shape for m in maps]} do "
                                 f"not fit {len(self.object_ids)} classes")
        if self.verifier is None:
            boxes = decode_detections(maps[0][0], maps[1][0], maps[2][0],
                                      min_score=self.min_detection_score,
                                      max_per_class=self.max_per_class)
            return boxes_to_source(boxes, letterbox)
        # sqrt(score x p) >= min_detection_score needs score >= min_detection_score^2 (p <= 1):
        # boxes under it cannot pass whatever the verifier says, so they are not cropped
        floor = max(CANDIDATE_MIN_SCORE, self.min_detection_score ** 2)
        boxes = decode_detections(maps[0][0], maps[1][0], maps[2][0],
                                  min_score=min(floor, self.min_detection_score),
                                  max_per_class=self.verifier_candidates)
        scored = self.verifier.rescore(image_rgb, boxes_to_source(boxes, letterbox))
        kept: list[BoxDetection] = []
        count: dict[int, int] = {}
        for box in sorted(scored, key=lambda b: -b.score):
            if box.score >= self.min_detection_score and count.get(box.class_index, 0) < (
                    self.max_per_class):
                kept.append(box)
                count[box.class_index] = count.get(box.class_index, 0) + 1
        return kept


class TwoStageKeypointSource(_ModelBackedSource):
    """Every instance: a detector on the letterboxed frame, keypoints on zoom-in crops.

    The detector (``task: detector``; outputs ``centre_prob``, ``size``, ``offset``; decoded by
    `pipeline.detection.decode_detections`) finds each instance of each class; each box becomes
    an object-centred `ZoomCrop` of the full-resolution image (side = the keypoint model's
    ``crop_scale`` x the box's longer side, at its input size, exact intrinsics: the crop it was
    trained on, ``train pose --zoom-crops``), and the keypoint model predicts that class's
    keypoints in the crop;
    they go back to image pixels by the crop's inverse map. Confidences are the keypoint
    weights times the detection score, so the pose score reflects both stages. A model whose
    metadata says ``correspondences: dense_coordinates`` (``train pose --dense-coordinates``)
    gives dense 2D-3D correspondences instead: every crop cell whose mask probability reaches
    0.5 (at most 256, evenly taken; `models.heads.dense_correspondences`), its centre paired
    with the predicted object-frame point, confidence = mask probability x detection score.

    Args:
        detector_path: exported detector ONNX model.
        keypoint_path: exported keypoint ONNX model trained on zoom crops (metadata
            ``input_kind: zoom_crop`` and ``crop_scale``) knowing every class of the detector.
        backend, precision, device, cache_dir: see `engines.load_engine`.
        min_detection_score: detections with a lower score are not cropped (see
            `NetworkDetector`).
        max_per_class: detections kept per class and frame.
        verifier_path, verifier_candidates: the optional box verifier (`NetworkDetector`).

    Raises:
        ModelSpecError: a missing file, a wrong task, a keypoint model not trained on zoom
            crops, or a detector class the keypoint model or the verifier does not know (both
            lists named).
    """

    def __init__(
        self,
        detector_path: str | os.PathLike[str],
        keypoint_path: str | os.PathLike[str],
        backend: str = "onnxruntime",
        *,
        min_detection_score: float = 0.3,
        max_per_class: int = 10,
        precision: str = "fp32",
        device: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        verifier_path: str | os.PathLike[str] | None = None,
        verifier_candidates: int = 10,
    ) -> None:
        self._detector = NetworkDetector(detector_path, backend,
                                         min_detection_score=min_detection_score,
                                         max_per_class=max_per_class, precision=precision,
                                         device=device, cache_dir=cache_dir,
                                         verifier_path=verifier_path,
                                         verifier_candidates=verifier_candidates)
        self._model = _NetworkModel(keypoint_path, "keypoints", (), backend, precision, device,
                                    cache_dir)
        #: dense object coordinates (True) or keypoints (False), as the metadata says
        self.dense = self._model.metadata.extra.get("correspondences") == "dense_coordinates"
        self._model.require_outputs(DENSE_OUTPUTS if self.dense else KEYPOINT_OUTPUTS)
        classes = self._detector.object_ids
        known = tuple(self._model.metadata.object_ids)
        unknown = [c for c in classes if c not in known]
        if not classes or unknown:
            raise ModelSpecError(
                f"{self._detector.path} detects {list(classes)}; the keypoint model "
                f"{self._model.path} knows {list(known)} (missing {unknown})"
            )
        self.object_ids: tuple[str, ...] = classes  # the detector's classes, in order
        self._slot = {object_id: known.index(object_id) for object_id in classes}
        self.points_obj = {o: _keypoints_3d(self._model.metadata.keypoints_3d, o, self._model)
                           for o in classes}
        extra = self._model.metadata.extra
        if extra.get("input_kind") != "zoom_crop" or "crop_scale" not in extra:
            raise ModelSpecError(
                f"{self._model.path} was trained on {extra.get('input_kind', 'letterbox')!r} "
                "inputs; the two-stage source needs a keypoint model trained on zoom crops "
                "(`dvc-perception train pose --zoom-crops`, metadata input_kind zoom_crop)"
            )
        self.crop_scale = float(extra["crop_scale"])
        self.backend = (f"network-two-stage:{self._detector.description} + "
                        f"{self._model.description}")

    @property
    def min_detection_score(self) -> float:
        """Detections with a lower centre score are not cropped (settable while running)."""
        return self._detector.min_detection_score

    @min_detection_score.setter
    def min_detection_score(self, value: float) -> None:
        self._detector.min_detection_score = float(value)

    def detect_boxes(self, image_rgb: np.ndarray) -> list[BoxDetection]:
        """Every detected instance: class index, score, box ``(x, y, w, h)`` in image px."""
        return self._detector.detect_boxes(image_rgb)

    def detect(self, image_rgb: np.ndarray) -> list[KeypointDetection]:
        """Keypoints of every detected instance (several per object id possible).

        Raises:
            ShapeError: `image_rgb` is not (H, W, 3) uint8.
            ModelSpecError: outputs that do not fit the metadata.
        """
        width, height = check_rgb_image(image_rgb)
        size = self._model.metadata.input_size
        detections = []
        for box in self.detect_boxes(image_rgb):
            object_id = self.object_ids[box.class_index]
            crop = ZoomCrop.from_box(box.box_xywh, (width, height), size, scale=self.crop_scale)
            out = self._model.run_on(crop, image_rgb)
            o = self._slot[object_id]
            if self.dense:
                det = _dense_detection(out, o, object_id, crop, self._model, box.score)
            else:
                x2d, weights, _ = _keypoint_outputs(out, self._model, len(self._model.metadata
                                                                          .object_ids))
                det = _object_keypoints(x2d[0, o], weights[0, o], object_id, self.points_obj,
                                        crop, self._model, score=box.score)
            if det is not None:
                detections.append(det)
        return detections


#: fewest dense correspondences a detection needs (PnP needs 4; a few more for RANSAC)
MIN_DENSE_POINTS = 6


def _dense_detection(out: Mapping[str, np.ndarray], slot: int, object_id: str, crop: ZoomCrop,
                     model: _NetworkModel, score: float) -> KeypointDetection | None:
    """Dense correspondences of object `slot` in one crop's outputs -> a detection in source px.

    Returns:
        The detection, or None with fewer than `MIN_DENSE_POINTS` mask cells.

    Raises:
        ModelSpecError: ``mask`` / ``coordinates`` outputs that do not fit each other.
    """
    from dvc_perception.models.heads import dense_correspondences

    mask = np.asarray(out["mask"], dtype=np.float64)
    coords = np.asarray(out["coordinates"], dtype=np.float64)
    if (mask.ndim != 4 or coords.ndim != 5 or coords.shape[2] != 3
            or coords.shape[:2] + coords.shape[3:] != mask.shape or not slot < mask.shape[1]):
        raise ModelSpecError(f"{model.path}: outputs mask {mask.shape} and coordinates "
                             f"{coords.shape} do not fit (B, O, h, w) and (B, O, 3, h, w)")
    stride = model.metadata.input_size[0] // mask.shape[3]
    x2d, x3d, prob = dense_correspondences(coords[0, slot], mask[0, slot], stride)
    if x2d.shape[0] < MIN_DENSE_POINTS:
        return None
    return KeypointDetection(object_id=object_id, keypoints_px=crop.points_to_source(x2d),
                             points_obj=x3d, confidence=np.clip(prob * score, 0.0, 1.0))


def _keypoint_outputs(out: Mapping[str, np.ndarray], model: _NetworkModel, n_obj: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x2d (1, O, K, 2), weights (1, O, K), objectness (1, O)) float64, shapes checked."""
    x2d, weights, objectness = (np.asarray(out[n], dtype=np.float64) for n in KEYPOINT_OUTPUTS)
    if x2d.shape[:2] != (1, n_obj) or x2d.shape[3:] != (2,) or objectness.shape != (1, n_obj):
        raise ModelSpecError(
            f"{model.path}: outputs x2d {x2d.shape}, objectness {objectness.shape} do not fit "
            f"{n_obj} objects"
        )
    if weights.shape != x2d.shape[:3]:
        raise ModelSpecError(f"{model.path}: weights {weights.shape} do not match x2d {x2d.shape}")
    return x2d, weights, objectness


def _object_keypoints(
    x2d: np.ndarray, weights: np.ndarray, object_id: str, points_table: Mapping[str, np.ndarray],
    input_map: Letterbox | ZoomCrop, model: _NetworkModel, score: float = 1.0,
) -> KeypointDetection | None:
    """One object's keypoints (K, 2) input px -> a detection in source px; None below 4.

    Confidences are the network's weights times `score` (a detection's score, two-stage).
    """
    points_obj = points_table[object_id]
    if x2d.shape[0] != points_obj.shape[0]:
        raise ModelSpecError(
            f"{model.path}: {x2d.shape[0]} keypoints per object in x2d, metadata "
            f"keypoints_3d[{object_id!r}] has {points_obj.shape[0]}"
        )
    keypoints = input_map.points_to_source(x2d)
    confidence = np.clip(weights * score, 0.0, 1.0)
    good = np.all(np.isfinite(keypoints), axis=1) & np.isfinite(confidence)
    if int(good.sum()) < 4:
        return None
    return KeypointDetection(object_id=object_id, keypoints_px=keypoints[good],
                             points_obj=points_obj[good], confidence=confidence[good])


def _keypoints_3d(table: Mapping[str, Any], object_id: str, model: _NetworkModel) -> np.ndarray:
    """(K, 3) float64 m of `object_id` from the metadata's ``keypoints_3d``; ModelSpecError."""
    if object_id not in table:
        raise ModelSpecError(f"{model.path}: metadata keypoints_3d has no entry for {object_id!r}")
    points = np.asarray(table[object_id], dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] < 4:
        raise ModelSpecError(
            f"{model.path}: keypoints_3d[{object_id!r}]: expected (K >= 4, 3) metres, got "
            f"shape {points.shape}"
        )
    if not np.all(np.isfinite(points)):
        raise ModelSpecError(f"{model.path}: keypoints_3d[{object_id!r}] is not finite")
    return points


class NetworkDepthSource(_ModelBackedSource):
    """Metric depth from a depth network (`DepthSource`).

    Args:
        model_path: exported depth ONNX model (``task: depth``; metadata
            ``focal_normalization.reference_focal_px``).
        backend: "onnxruntime" | "tensorrt" | "torch" | "auto".
        precision: "fp32" | "fp16" | "int8".
        device: None (best available), "cpu", "cuda" or "cuda:N".
        cache_dir: TensorRT engine cache directory.

    Raises:
        ModelSpecError: missing file, wrong task, or no reference focal length.
        EngineUnavailableError: the backend cannot run here.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        backend: str = "onnxruntime",
        *,
        precision: str = "fp32",
        device: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._model = _NetworkModel(
            model_path, "depth", (DEPTH_OUTPUT,), backend, precision, device, cache_dir
        )
        focal = self._model.metadata.extra.get("focal_normalization")
        f0 = focal.get("reference_focal_px") if isinstance(focal, Mapping) else None
        if isinstance(f0, bool) or not isinstance(f0, (int, float)) or not f0 > 0:
            raise ModelSpecError(
                f"{self._model.path}: metadata focal_normalization.reference_focal_px must be a "
                f"positive number, got {f0!r}"
            )
        self.reference_focal_px = float(f0)
        self.backend = f"network:{self._model.description}"

    def estimate(self, image_rgb: np.ndarray, K: np.ndarray) -> np.ndarray:
        """Depth of `image_rgb` at its own resolution.

        Args:
            image_rgb: (H, W, 3) uint8 RGB.
            K: (3, 3) undistorted pinhole intrinsics of the image [px].

        Returns:
            (H, W) float32 m, optical-axis depth; NaN where the letterbox padded the input.

        Raises:
            ShapeError: bad image or K shape.
            InputError: fx not a positive finite number.
        """
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ShapeError(f"K: expected shape (3, 3), got {K.shape}")
        fx = float(K[0, 0])
        if not (np.isfinite(fx) and fx > 0):
            raise InputError(f"K: fx must be positive and finite, got {fx}")
        letterbox, out = self._model.run(image_rgb)
        width, height = self._model.metadata.input_size
        canonical = np.asarray(out[DEPTH_OUTPUT], dtype=np.float32)
        if canonical.shape != (1, 1, height, width):
            raise ModelSpecError(
                f"{self._model.path}: {DEPTH_OUTPUT} is {canonical.shape}, expected "
                f"(1, 1, {height}, {width})"
            )
        fx_input = letterbox.scale * fx  # K_in = A K: the input's focal length
        metric = canonical[0, 0] * np.float32(fx_input / self.reference_focal_px)
        return letterbox.depth_to_source(metric).astype(np.float32, copy=False)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The pipeline with ``pipeline.refine``: PnP poses refined by render-and-compare.

Frames are hard renders of the textured demo object over random colours with noise; keypoints
come from a small `KeypointSource` that projects the object's 3D keypoints at a chosen start
pose, so PnP returns exactly that (perturbed or wrong) pose and the refiner must do the rest.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest
import torch

from dvc_perception.config import (
    REFINE_MIN_SIGMA_PX,
    REFINE_SCALES,
    PipelineConfig,
    RefineConfig,
)
from dvc_perception.errors import ConfigError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.geometry.metrics import add_error
from dvc_perception.geometry.so3 import rotvec_to_matrix
from dvc_perception.pipeline.pipeline import Pipeline, refine_settings
from dvc_perception.pipeline.pose import estimate_poses
from dvc_perception.pipeline.sources import KeypointDetection
from dvc_perception.refine import ContourModel, RefineSettings
from dvc_perception.render.objects import ObjectDescription, find_object_yaml, load_object
from dvc_perception.render.raster import render

pytest.importorskip("numba")

WIDTH, HEIGHT = 640, 480
K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])
R_TRUE = rotvec_to_matrix(torch.tensor([0.6, -1.1, 0.4], dtype=torch.float64)).numpy()
T_TRUE = np.array([0.02, -0.01, 0.45])


class ProjectedKeypoints:
    """A keypoint source: `object_id`'s 3D keypoints projected at a fixed pose (R, t)."""

    backend = "test:projected"

    def __init__(self, object_id: str, points_obj: np.ndarray, R: np.ndarray, t: np.ndarray
                 ) -> None:
        self.object_ids = (object_id,)
        self.points_obj = points_obj
        self.R, self.t = R, t

    def detect(self, image_rgb: np.ndarray) -> list[KeypointDetection]:
        cam = self.points_obj @ self.R.T + self.t
        uv = cam @ K.T
        uv = uv[:, :2] / uv[:, 2:]
        n = len(uv)
        return [KeypointDetection(self.object_ids[0], uv, self.points_obj.copy(), np.ones(n))]


@pytest.fixture(scope="module")
def demo_object() -> ObjectDescription:
    return load_object(find_object_yaml("demo_object"))


@pytest.fixture(scope="module")
def frame(demo_object) -> np.ndarray:
    """The textured demo object at (R_TRUE, T_TRUE) over smooth random colours, with noise."""
    rng = np.random.default_rng(0)
    mesh = demo_object.mesh.to(dtype=torch.float64)
    res = render(mesh, (torch.from_numpy(R_TRUE), torch.from_numpy(T_TRUE)),
                 torch.from_numpy(K), WIDTH, HEIGHT)
    bg = cv2.resize(rng.uniform(0.1, 0.9, (7, 9, 3)), (WIDTH, HEIGHT),
                    interpolation=cv2.INTER_CUBIC)
    img = np.where(res.mask.numpy()[..., None], res.color.numpy(), bg)
    return np.clip(img * 255.0 + rng.normal(0.0, 3.0, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def camera() -> CameraModel:
    return CameraModel(K, [], WIDTH, HEIGHT)


def _points(demo_object: ObjectDescription) -> np.ndarray:
    return demo_object.keypoints.double().numpy()


def _perturbed(deg: float, offset_m: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    a, u = rng.normal(size=3), rng.normal(size=3)
    dR = rotvec_to_matrix(torch.from_numpy(np.deg2rad(deg) * a / np.linalg.norm(a))).numpy()
    return dR @ R_TRUE, T_TRUE + offset_m * u / np.linalg.norm(u)


@pytest.fixture(scope="module")
def model_pipeline(demo_object) -> Pipeline:
    """Refinement on, contour model built at construction (the shipped default path)."""
    R0, t0 = _perturbed(6.0, 0.05 * demo_object.diameter_m)
    config = PipelineConfig(min_score=0.0, refine=RefineConfig(enabled=True))
    return Pipeline(config, ProjectedKeypoints("demo_object", _points(demo_object), R0, t0))


def _add(pose, demo_object) -> float:
    points = demo_object.mesh.vertices.double().numpy()
    return float(add_error(pose.R, pose.t, R_TRUE, T_TRUE, points)) / demo_object.diameter_m


def test_refined_pose_is_closer_to_ground_truth_than_pnp(model_pipeline, demo_object, frame,
                                                        camera):
    assert isinstance(model_pipeline.refine_models["demo_object"], ContourModel)
    result = model_pipeline.process(frame, camera, 1.0)
    (pose,) = result.poses
    source = model_pipeline.keypoint_source
    pnp_error = float(add_error(source.R, source.t, R_TRUE, T_TRUE,
                                demo_object.mesh.vertices.double().numpy())
                      ) / demo_object.diameter_m
    assert pnp_error > 0.03  # the start is visibly off
    assert _add(pose, demo_object) < 0.5 * pnp_error and _add(pose, demo_object) < 0.03
    assert result.timings["refine_ms"] > 0
    assert pose.refine_cost is not None and 0 < pose.refine_cost < 0.5
    assert pose.score == pytest.approx(math.exp(-pose.refine_cost))  # PnP score 1, weight 1
    cov = pose.covariance
    np.testing.assert_allclose(cov, cov.T, atol=0)
    assert np.sqrt(cov[0, 0]) < 1e-3  # the refiner's covariance, not PnP's (exact keypoints)


def test_a_wrong_pose_scores_lower(model_pipeline, demo_object, frame, camera):
    right = model_pipeline.process(frame, camera, 1.0).poses[0]
    flip = rotvec_to_matrix(torch.tensor([0.0, np.pi / 2, 0.0], dtype=torch.float64)).numpy()
    wrong_source = ProjectedKeypoints("demo_object", _points(demo_object), flip @ R_TRUE, T_TRUE)
    wrong_pipeline = Pipeline(model_pipeline.config, wrong_source,
                              refine_models=model_pipeline.refine_models)
    wrong = wrong_pipeline.process(frame, camera, 1.0).poses[0]
    assert wrong.refine_cost is not None and wrong.refine_cost > right.refine_cost + 0.1
    assert wrong.score < right.score - 0.1
    # a min_score between the two drops the wrong pose, although its PnP score is 1
    strict = dataclasses.replace(model_pipeline.config, min_score=0.7)
    wrong_pipeline.config = strict
    assert wrong_pipeline.process(frame, camera, 1.0).poses == []
    right_pipeline = Pipeline(strict, model_pipeline.keypoint_source,
                              refine_models=model_pipeline.refine_models)
    assert right_pipeline.process(frame, camera, 1.0).poses[0].score >= 0.7


def test_disabled_by_default_is_plain_pnp(demo_object, frame, camera):
    R0, t0 = _perturbed(6.0, 0.005)
    source = ProjectedKeypoints("demo_object", _points(demo_object), R0, t0)
    assert PipelineConfig().refine.enabled is False
    pipeline = Pipeline(PipelineConfig(), source)
    assert pipeline.refine_models == {}
    (pose,) = pipeline.process(frame, camera, 1.0).poses
    # bit-identical to the PnP solver on the same keypoints (what the pipeline did before)
    det = source.detect(frame)[0]
    ref = estimate_poses(torch.from_numpy(det.keypoints_px)[None],
                         torch.from_numpy(det.points_obj)[None], torch.from_numpy(K)[None],
                         torch.ones(1, len(det.confidence), dtype=torch.float64),
                         PipelineConfig().pnp)
    np.testing.assert_array_equal(pose.R, ref.R[0].numpy())
    np.testing.assert_array_equal(pose.t, ref.t[0].numpy())
    np.testing.assert_array_equal(pose.covariance, ref.covariance[0].numpy())
    assert pose.score == 1.0 and pose.refine_cost is None
    # non-default refine settings with enabled false change nothing
    other = PipelineConfig(refine=RefineConfig(iterations=7, contour_source="render"))
    (same,) = Pipeline(other, source).process(frame, camera, 1.0).poses
    np.testing.assert_array_equal(same.R, pose.R)
    np.testing.assert_array_equal(same.t, pose.t)
    assert same.score == pose.score


def test_render_source_uses_the_mesh_and_live_settings_apply(demo_object, frame, camera):
    R0, t0 = _perturbed(4.0, 0.003)
    source = ProjectedKeypoints("demo_object", _points(demo_object), R0, t0)
    config = PipelineConfig(min_score=0.0, refine=RefineConfig(
        enabled=True, contour_source="render", pyramid_levels=2, iterations=3))
    pipeline = Pipeline(config, source)
    assert not isinstance(pipeline.refine_models["demo_object"], ContourModel)
    (pose,) = pipeline.process(frame, camera, 1.0).poses
    assert pose.refine_cost is not None
    assert _add(pose, demo_object) < float(add_error(
        R0, t0, R_TRUE, T_TRUE, demo_object.mesh.vertices.double().numpy())
    ) / demo_object.diameter_m
    # a new config (what the node's live parameters do): cost_weight 0 keeps the PnP score
    pipeline.config = dataclasses.replace(
        config, refine=dataclasses.replace(config.refine, cost_weight=0.0))
    assert pipeline.process(frame, camera, 1.0).poses[0].score == 1.0


def test_unusable_instances_keep_the_pnp_pose_and_meshless_objects_are_not_refined(
        demo_object, frame, camera, tmp_path):
    # far outside the image: the refiner finds no lines, PnP's pose stays
    t_out = np.array([3.0, 0.0, 0.5])
    source = ProjectedKeypoints("demo_object", _points(demo_object), R_TRUE, t_out)
    config = PipelineConfig(min_score=0.0, refine=RefineConfig(enabled=True,
                                                               contour_source="render"))
    pipeline = Pipeline(config, source)
    (pose,) = pipeline.process(frame, camera, 1.0).poses
    plain = Pipeline(PipelineConfig(min_score=0.0), source).process(frame, camera, 1.0).poses[0]
    assert pose.refine_cost is None and pose.score == plain.score == 1.0
    np.testing.assert_array_equal(pose.R, plain.R)
    np.testing.assert_array_equal(pose.covariance, plain.covariance)
    # no object description: no model, a note saying why, the PnP pose
    meshless = ProjectedKeypoints("no_such_object", _points(demo_object), R_TRUE, T_TRUE)
    pipeline = Pipeline(config, meshless)
    assert pipeline.refine_models == {}
    assert len(pipeline.refine_notes) == 1 and "no_such_object" in pipeline.refine_notes[0]
    result = pipeline.process(frame, camera, 1.0)
    assert result.poses[0].refine_cost is None and result.timings["refine_ms"] >= 0


def test_refine_config_is_validated():
    with pytest.raises(ConfigError, match=r"pipeline\.refine\.pyramid_levels"):
        RefineConfig(pyramid_levels=0)
    with pytest.raises(ConfigError, match=r"pipeline\.refine\.contour_source.*'mesh'"):
        RefineConfig(contour_source="mesh")
    with pytest.raises(ConfigError, match=r"pipeline\.refine\.cost_weight"):
        RefineConfig(cost_weight=-1.0)
    with pytest.raises(ConfigError, match=r"pipeline\.refine\.iterations"):
        PipelineConfig.from_mapping({"refine": {"iterations": 0}})
    with pytest.raises(ConfigError, match="iteration"):
        PipelineConfig.from_mapping({"refine": {"iteration": 3}})
    with pytest.raises(ConfigError, match=r"pipeline\.refine\.enabled"):
        RefineConfig(enabled="yes")  # type: ignore[arg-type]


def test_refine_settings_follow_the_config():
    # the config's schedule is the refiner's default one
    assert REFINE_SCALES == RefineSettings().scales
    assert REFINE_MIN_SIGMA_PX == RefineSettings().min_sigma_px
    s = refine_settings(RefineConfig(pyramid_levels=2, iterations=5, passes=2, num_points=90,
                                     edge_weight=0.0))
    assert s.scales == (2, 1) and s.min_sigma_px == (3.5, 1.5)
    assert (s.iterations, s.passes, s.num_points, s.edge_weight) == (5, 2, 90, 0.0)
    assert refine_settings(RefineConfig()) == RefineSettings()


def test_eval_bop_refine_flag():
    from dvc_perception.commands.replay import with_refine

    assert with_refine({"a": 1}, False) == {"a": 1}
    assert with_refine({"a": 1}, True) == {"a": 1, "pipeline.refine.enabled": True}
    with pytest.raises(ConfigError, match="--refine contradicts"):
        with_refine({"pipeline.refine.enabled": False}, True)
    both = {"a": 1, "pipeline.refine.enabled": True, "pipeline.search.enabled": True}
    assert with_refine({"a": 1}, False, search=True) == both
    assert with_refine({"a": 1}, True, search=True) == both
    with pytest.raises(ConfigError, match="--search contradicts --param pipeline.search"):
        with_refine({"pipeline.search.enabled": False}, False, search=True)
    with pytest.raises(ConfigError, match="--search contradicts --param pipeline.refine"):
        with_refine({"pipeline.refine.enabled": False}, False, search=True)


def test_network_pipeline_with_refinement_improves_the_shipped_demo_model(demo_object, frame,
                                                                         camera):
    """``Pipeline.from_config`` in network mode (the shipped demo model), refinement off/on."""
    pytest.importorskip("onnxruntime")
    from dvc_perception.resources import find_share_file

    model = find_share_file("models/pose_demo_object.onnx")
    points = demo_object.mesh.vertices.double().numpy()
    errors = []
    for enabled in (False, True):
        pipeline = Pipeline.from_config({
            "keypoint_source": "network", "min_score": 0.0,
            "network": {"model_path": str(model)}, "refine": {"enabled": enabled},
        })  # fmt: skip
        result = pipeline.process(frame, camera, 1.0)
        (pose,) = result.poses
        assert (pose.refine_cost is not None) == enabled and "refine_ms" in result.timings
        errors.append(float(add_error(pose.R, pose.t, R_TRUE, T_TRUE, points))
                      / demo_object.diameter_m)
    assert errors[1] <= errors[0] and errors[1] < 0.03, errors


class BoxesOnly:
    """A detector-like source: fixed boxes of its one class; its keypoints must not be used."""

    backend = "test:boxes"

    def __init__(self, object_id: str, boxes: list) -> None:
        self.object_ids = (object_id,)
        self.boxes = boxes

    def detect_boxes(self, image_rgb: np.ndarray) -> list:
        return list(self.boxes)

    def detect(self, image_rgb: np.ndarray) -> list[KeypointDetection]:
        raise AssertionError("pipeline.search must not run the keypoint stage")


@pytest.mark.slow
def test_search_finds_the_pose_in_a_detector_box(model_pipeline, demo_object, frame, camera):
    from dvc_perception.config import SearchConfig
    from dvc_perception.pipeline.detection import BoxDetection

    mesh = demo_object.mesh.to(dtype=torch.float64)
    mask = render(mesh, (torch.from_numpy(R_TRUE), torch.from_numpy(T_TRUE)),
                  torch.from_numpy(K), WIDTH, HEIGHT, shade=False).mask.numpy()
    ys, xs = np.nonzero(mask)
    box = (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
           float(ys.max() - ys.min() + 1))
    config = dataclasses.replace(model_pipeline.config,
                                 search=SearchConfig(enabled=True, num_rotations=400))
    pipe = Pipeline(config, BoxesOnly("demo_object", [BoxDetection(0, 0.8, box)]),
                    refine_models=model_pipeline.refine_models)
    result = pipe.process(frame, camera, 0.0)
    assert len(result.poses) == 1
    pose = result.poses[0]
    assert _add(pose, demo_object) < 0.1
    assert pose.refine_cost is not None
    assert pose.score == pytest.approx(0.8 * math.exp(-pose.refine_cost))
    assert result.timings["pnp_ms"] == 0.0


def test_search_skips_boxes_that_cannot_reach_min_score(model_pipeline, frame, camera,
                                                        monkeypatch):
    """A searched pose scores box score x exp(-cost) <= box score: a box under min_score is not
    searched (the search costs ~0.8 s per box), one at or above it is."""
    from dvc_perception.config import SearchConfig
    from dvc_perception.pipeline.detection import BoxDetection
    from dvc_perception.refine import search

    searched = []

    def fake_search(image, camera, model, box_xywh, *args, **kwargs):
        searched.append(tuple(box_xywh))
        return search.SearchResult(R_TRUE.copy(), T_TRUE.copy(), 0.0, np.eye(6), 1)

    monkeypatch.setattr(search, "search_pose", fake_search)
    boxes = [BoxDetection(0, 0.49, (10.0, 10.0, 40.0, 40.0)),
             BoxDetection(0, 0.5, (100.0, 100.0, 40.0, 40.0))]
    config = dataclasses.replace(model_pipeline.config, min_score=0.5,
                                 search=SearchConfig(enabled=True, num_rotations=1))
    pipe = Pipeline(config, BoxesOnly("demo_object", boxes),
                    refine_models=model_pipeline.refine_models)
    result = pipe.process(frame, camera, 0.0)
    assert searched == [(100.0, 100.0, 40.0, 40.0)]
    assert [p.score for p in result.poses] == [pytest.approx(0.5)]


def test_search_needs_refinement_a_detector_and_meshes(model_pipeline, demo_object):
    from dvc_perception.config import SearchConfig

    with pytest.raises(ConfigError, match="needs pipeline.refine.enabled"):
        PipelineConfig(search=SearchConfig(enabled=True))
    config = dataclasses.replace(model_pipeline.config, search=SearchConfig(enabled=True))
    source = ProjectedKeypoints("demo_object", _points(demo_object), R_TRUE, T_TRUE)
    with pytest.raises(ConfigError, match="needs a detector"):
        Pipeline(config, source, refine_models=model_pipeline.refine_models)
    with pytest.raises(ConfigError, match="mesh of every detector class"):
        Pipeline(config, BoxesOnly("no_mesh_object", []), refine_models={})

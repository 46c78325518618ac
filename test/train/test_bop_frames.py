# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Training on real BOP scene folders: `train.bop_frames.BopFrameSource` and the CLI."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial import ConvexHull

from dvc_perception.errors import ConfigError, InputError
from dvc_perception.files import file_sha256
from dvc_perception.train.bop_frames import BopFrameSource
from dvc_perception.train.runner import RunSpec, _frame_sources, open_frame_source

# -- a tiny fake scene (no real data): two cubes, obj 2 in front of obj 1 in image 0 ----------

W, H = 80, 60
K = np.array([[200.0, 0.0, 39.5], [0.0, 200.0, 29.5], [0.0, 0.0, 1.0]])
SIDES_MM = {1: 100.0, 2: 60.0}
#: image id -> [(obj_id, t mm)], identity rotations
POSES = {0: [(1, (0.0, 0.0, 1000.0)), (2, (40.0, 0.0, 600.0))], 1: [(1, (-30.0, 20.0, 900.0))]}
#: (image id, gt index) -> (rows, cols) of the mask_visib rectangle (unlike any silhouette)
MASKS = {(0, 0): ((5, 10), (5, 20)), (0, 1): ((40, 50), (60, 70)), (1, 0): ((0, 3), (0, 3))}


def _cube_corners(side_mm: float) -> np.ndarray:
    """(8, 3) mm corners of an axis-aligned cube centred at the origin."""
    s = side_mm / 2
    return np.array([[x, y, z] for x in (-s, s) for y in (-s, s) for z in (-s, s)])


def _write_cube_ply(path: Path, side_mm: float) -> None:
    """A closed cube mesh (ASCII PLY, mm, faces wound counter-clockwise seen from outside)."""
    v = _cube_corners(side_mm)
    faces = []
    for f in ConvexHull(v).simplices:
        a, b, c = v[f]
        faces.append(f if np.cross(b - a, c - a) @ (a + b + c) > 0 else f[::-1])
    lines = ["ply", "format ascii 1.0", f"element vertex {len(v)}", "property float x",
             "property float y", "property float z", f"element face {len(faces)}",
             "property list uchar int vertex_indices", "end_header"]
    lines += [" ".join(f"{x:g}" for x in p) for p in v]
    lines += ["3 " + " ".join(str(int(i)) for i in f) for f in faces]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def fake_scene(tmp_path: Path) -> Path:
    """``tmp/ds/test/000001`` with rgb/, depth/, mask_visib/ and the cubes in ``ds/models/``."""
    scene = tmp_path / "ds" / "test" / "000001"
    for obj, side in SIDES_MM.items():
        _write_cube_ply(tmp_path / "ds" / "models" / f"obj_{obj:06d}.ply", side)
    rng = np.random.default_rng(0)
    cams, gts = {}, {}
    for image_id, poses in POSES.items():
        (scene / "rgb").mkdir(parents=True, exist_ok=True)
        (scene / "depth").mkdir(exist_ok=True)
        (scene / "mask_visib").mkdir(exist_ok=True)
        cv2.imwrite(str(scene / "rgb" / f"{image_id:06d}.png"),
                    rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        depth = rng.integers(0, 20000, (H, W)).astype(np.uint16)
        depth[:5, :5] = 0
        cv2.imwrite(str(scene / "depth" / f"{image_id:06d}.png"), depth)
        cams[str(image_id)] = {"cam_K": K.reshape(-1).tolist(), "depth_scale": 0.1}
        gts[str(image_id)] = [{"obj_id": obj, "cam_R_m2c": np.eye(3).reshape(-1).tolist(),
                               "cam_t_m2c": list(t)} for obj, t in poses]
        for g in range(len(poses)):
            (r0, r1), (c0, c1) = MASKS[(image_id, g)]
            mask = np.zeros((H, W), np.uint8)
            mask[r0:r1, c0:c1] = 255
            cv2.imwrite(str(scene / "mask_visib" / f"{image_id:06d}_{g:06d}.png"), mask)
    (scene / "scene_camera.json").write_text(json.dumps(cams))
    (scene / "scene_gt.json").write_text(json.dumps(gts))
    return scene


def _table(scene: Path, objs: tuple[int, ...] = (1, 2)) -> dict[str, str]:
    models = scene.parent.parent / "models"
    return {file_sha256(models / f"obj_{o:06d}.ply"): f"cube_{o}" for o in objs}


def _projected_box(obj: int, t_mm: tuple[float, float, float]) -> tuple[int, int, int, int]:
    """(col0, row0, col1, row1) inclusive: pixel centres inside the cube's projected corners."""
    X = (_cube_corners(SIDES_MM[obj]) + np.asarray(t_mm)) / 1000.0
    uv = (X @ K.T)[:, :2] / X[:, 2:]
    lo, hi = np.ceil(uv.min(axis=0)), np.floor(uv.max(axis=0))
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def test_fake_scene_uses_mask_visib_and_reads_images_depth_poses(fake_scene):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every object known: no warning
        src = BopFrameSource(fake_scene, with_depth=True, objects_by_mesh_sha256=_table(
            fake_scene))
    assert len(src) == 2 and src.mask_source == "mask_visib"
    assert src.object_ids == ["cube_1", "cube_2"] and src.skipped_objects == []
    for i, (image_id, poses) in enumerate(POSES.items()):
        frame = src[i]
        bgr = cv2.imread(str(fake_scene / "rgb" / f"{image_id:06d}.png"))
        np.testing.assert_array_equal(frame.image, bgr[:, :, ::-1])
        np.testing.assert_array_equal(frame.K, K)
        raw = cv2.imread(str(fake_scene / "depth" / f"{image_id:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert frame.depth is not None and frame.depth.dtype == np.float32
        np.testing.assert_allclose(frame.depth[raw > 0], raw[raw > 0] * 1e-4, rtol=1e-6)
        assert np.isnan(frame.depth[raw == 0]).all() and (raw == 0).any()
        assert [a.object_id for a in frame.objects] == [f"cube_{o}" for o, _ in poses]
        for g, (ann, (_, t)) in enumerate(zip(frame.objects, poses)):
            np.testing.assert_allclose(ann.t, np.asarray(t) / 1000.0)
            np.testing.assert_array_equal(ann.R, np.eye(3))
            (r0, r1), (c0, c1) = MASKS[(image_id, g)]
            expected = np.zeros((H, W), bool)
            expected[r0:r1, c0:c1] = True
            assert ann.mask is not None
            np.testing.assert_array_equal(ann.mask, expected)
            assert ann.keypoints_visible is None


def test_fake_scene_renders_masks_with_occlusion_without_mask_visib(fake_scene):
    shutil.rmtree(fake_scene / "mask_visib")
    src = BopFrameSource(fake_scene, objects_by_mesh_sha256=_table(fake_scene))
    assert src.mask_source == "rendered"
    alone = src[1].objects[0]  # cube 1 alone in image 1: its whole silhouette
    assert alone.mask is not None
    assert np.abs(np.subtract(_mask_box(alone.mask), _projected_box(1, POSES[1][0][1]))).max() <= 1
    back, front = src[0].objects
    assert back.mask is not None and front.mask is not None
    c0, r0, c1, r1 = _projected_box(2, POSES[0][1][1])
    assert np.abs(np.subtract(_mask_box(front.mask), (c0, r0, c1, r1))).max() <= 1
    assert not (back.mask & front.mask).any()
    assert not back.mask[r0 + 1 : r1, c0 + 1 : c1].any()  # hidden behind the front cube
    b0, q0, b1, q1 = _projected_box(1, POSES[0][0][1])
    assert back.mask[q0 + 1 : q1, b0 + 1 : c0 - 1].all()  # its unoccluded left part


def test_fake_scene_skips_unknown_objects_but_they_still_occlude(fake_scene):
    shutil.rmtree(fake_scene / "mask_visib")
    with pytest.warns(UserWarning, match="ds_obj_02"):
        src = BopFrameSource(fake_scene, objects_by_mesh_sha256=_table(fake_scene, (1,)))
    assert src.object_ids == ["cube_1"] and src.skipped_objects == ["ds_obj_02"]
    (back,) = src[0].objects
    c0, r0, c1, r1 = _projected_box(2, POSES[0][1][1])
    assert back.mask is not None and back.mask.any()
    assert not back.mask[r0 + 1 : r1, c0 + 1 : c1].any()


def test_fake_scene_refusals(fake_scene, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"ds_obj_01.*ds_obj_02.*known: \[.*lmo_obj_05"):
        BopFrameSource(fake_scene)  # the cubes match no shipped description
    shutil.rmtree(fake_scene / "depth")
    with pytest.raises(ConfigError, match="has no depth"):
        open_frame_source(fake_scene, "depth")
    (fake_scene / "mask_visib" / "000001_000000.png").unlink()
    with pytest.raises(InputError, match="000001_000000.png"):
        BopFrameSource(fake_scene, objects_by_mesh_sha256=_table(fake_scene))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not training data")
    with pytest.raises(InputError, match=r"index\.json.*scene_gt\.json"):
        open_frame_source(empty, "pose")
    from dvc_perception.cli import main

    assert main(["train", "pose", "--data", str(empty), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "index.json" in err and "scene_gt.json" in err and len(err.splitlines()) == 1


# -- the real LM-O scene (../shared/data/lmo; skipped where absent) ---------------------------


@pytest.fixture(scope="module")
def lmo_scene(lmo_dir: Path) -> Path:
    scene = lmo_dir / "test" / "000002"
    if not (scene / "scene_gt.json").is_file():
        pytest.skip(f"{scene} is absent")
    return scene


def test_lmo_frames_match_scene_gt(lmo_scene):
    cams = json.loads((lmo_scene / "scene_camera.json").read_text())
    gts = json.loads((lmo_scene / "scene_gt.json").read_text())
    src = open_frame_source(lmo_scene, "pose")
    assert isinstance(src, BopFrameSource) and src.mask_source == "rendered"
    keys = sorted(cams, key=int)
    assert len(src) == len(keys)
    for i in (0, len(keys) - 1):
        frame = src[i]
        bgr = cv2.imread(str(lmo_scene / "rgb" / f"{int(keys[i]):06d}.png"))
        np.testing.assert_array_equal(frame.image, bgr[:, :, ::-1])
        np.testing.assert_array_equal(frame.K, np.reshape(cams[keys[i]]["cam_K"], (3, 3)))
        assert frame.depth is None
        gt = gts[keys[i]]
        assert [a.object_id for a in frame.objects] == [f"lmo_obj_{g['obj_id']:02d}" for g in gt]
        for ann, g in zip(frame.objects, gt):
            np.testing.assert_array_equal(ann.R, np.reshape(g["cam_R_m2c"], (3, 3)))
            np.testing.assert_allclose(ann.t, np.asarray(g["cam_t_m2c"]) / 1000.0, rtol=1e-12)
            assert ann.mask is not None and ann.mask.shape == frame.image.shape[:2]


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_lmo_rendered_masks_cover_bbox_visib(lmo_scene):
    """Rendered visible masks against BOP's own ``bbox_visib`` (scene_gt_info.json).

    Only instances at least 90 % visible: the scene's benchvise (and anything else LM-O does
    not model) occludes the others without being rendered, which the docstring says.
    """
    infos = json.loads((lmo_scene / "scene_gt_info.json").read_text())
    src = BopFrameSource(lmo_scene)
    keys = sorted(infos, key=int)
    ious = []
    for i, key in enumerate(keys):
        for ann, info in zip(src[i].objects, infos[key]):
            if info["visib_fract"] >= 0.9:
                assert ann.mask is not None
                c0, r0, c1, r1 = _mask_box(ann.mask)
                ious.append(_iou([c0, r0, c1 - c0 + 1, r1 - r0 + 1], info["bbox_visib"]))
    assert len(ious) >= 20
    assert min(ious) >= 0.8, sorted(ious)[:5]


def test_lmo_and_shards_provenance(lmo_scene, tmp_path):
    from dvc_perception.cli import main
    from dvc_perception.train.runner import detector_object_ids

    shards = tmp_path / "shards"
    assert main(["synth", "--frames", "2", "--out", str(shards), "--width", "64", "--height",
                 "48", "--no-progress"]) == 0
    spec = RunSpec(mode="detect", out_dir=str(tmp_path / "run"), data_dir=str(shards),
                   extra_data_dirs=(str(lmo_scene),), objects=("lmo_obj_05",))
    train_src, val_src, data = _frame_sources(spec)
    assert len(train_src) + len(val_src) == 2 + 10 == data["frames"]
    assert data["kind"] == "synthetic shards" and data["extra_kinds"] == ["bop scene"]
    assert {"demo_object", "lmo_obj_05"} <= set(data["objects"])
    assert data["extra_bop"][0]["masks"] == "rendered"
    assert detector_object_ids(spec, data) == ["lmo_obj_05"]


@pytest.mark.slow
def test_cli_pose_training_on_lmo_scene(lmo_scene, tmp_path, capsys):
    from dvc_perception.cli import main

    run = tmp_path / "run"
    assert main(["train", "pose", "--data", str(lmo_scene), "--objects", "lmo_obj_05",
                 "--zoom-crops", "--input-size", "128x128", "--epochs", "1", "--batch-size",
                 "2", "--max-steps-per-epoch", "2", "--threads", "1", "--no-progress",
                 "--out", str(run)]) == 0
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    data = json.loads((run / "provenance.json").read_text())["data"]
    assert data["kind"] == "bop scene" and data["frames"] == 10
    assert data["bop"]["masks"] == "rendered" and "lmo_obj_05" in data["objects"]
    capsys.readouterr()

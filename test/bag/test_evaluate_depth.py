# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`eval` on bags with depth ground truth and no pose ground truth (a real RGB-D recording).

Bags are written with the project's bag writer: an input bag with image, camera_info and depth
ground truth only, and either an output bag with known predicted depth (metrics checked against
hand-computed values and a plain-numpy reference) or the output of a real replay with the
shipped depth network.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from dvc_perception.bag.evaluate import evaluate_bag
from dvc_perception.bag.io import AtomicBagWriter, BagReader
from dvc_perception.cli import main
from dvc_perception.errors import BagError
from dvc_perception.ros.convert import rgb_to_image_msg

REPO = Path(__file__).resolve().parents[2]
H, W = 8, 10
IMAGE, INFO, DEPTH = "/camera/image_raw", "/camera/camera_info", "/camera/depth/ground_truth"
NODE = "/perception_node"


def _header(k: int, frame_id: str = "cam") -> Header:
    return Header(stamp=Time(sec=1 + k, nanosec=500), frame_id=frame_id)


def _depth_msg(depth_m: np.ndarray, header: Header, encoding: str = "32FC1") -> Image:
    """32FC1 m (NaN invalid) or 16UC1 mm (0 invalid), built by REP 118's definition."""
    h, w = depth_m.shape
    if encoding == "16UC1":
        data = np.where(np.isfinite(depth_m), np.round(depth_m * 1000.0), 0).astype("<u2")
    else:
        data = depth_m.astype("<f4")
    return Image(header=header, height=h, width=w, encoding=encoding, step=data.strides[0],
                 data=data.tobytes())


def _info(header: Header, w: int = W, h: int = H) -> CameraInfo:
    K = [20.0, 0.0, (w - 1) / 2, 0.0, 20.0, (h - 1) / 2, 0.0, 0.0, 1.0]
    return CameraInfo(header=header, width=w, height=h, distortion_model="plumb_bob",
                      d=[0.0] * 5, k=K, p=K[:3] + [0.0] + K[3:6] + [0.0] + K[6:] + [0.0])


def _write_gt(path: Path, gts: list[np.ndarray], encoding: str = "32FC1",
              frame_id: str = "cam") -> Path:
    """Input bag: image, camera_info and depth ground truth per frame; no pose topics."""
    with AtomicBagWriter(path) as w:
        for k, gt in enumerate(gts):
            header = _header(k, frame_id)
            h, wd = gt.shape
            w.write_message(IMAGE, rgb_to_image_msg(np.zeros((h, wd, 3), np.uint8), header), k)
            w.write_message(INFO, _info(header, wd, h), k)
            w.write_message(DEPTH, _depth_msg(gt, header, encoding), k)
    return path


def _write_out(path: Path, preds: list[np.ndarray | None], depth_topic: str = "depth/image_raw"
               ) -> Path:
    """Output bag as a replay writes it: poses every frame, an error record where pred is None."""
    with AtomicBagWriter(path) as w:
        for k, pred in enumerate(preds):
            header = _header(k)
            if pred is None:
                w.write_message(f"{NODE}/frame_errors", DiagnosticArray(
                    header=header, status=[DiagnosticStatus(name="x", message="failed")]), k)
                continue
            w.write_message(f"{NODE}/poses", PoseArray(header=header), k)
            w.write_message(f"{NODE}/{depth_topic}", _depth_msg(pred, header), k)
    return path


def _hand_frames() -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Frame 0: gt 2 m (row 0 unknown), pred 3 m (row 1 not predicted); frame 1: gt 4 m
    (column 0 unknown), pred 3.6 m; frame 2: an error record, gt 1 m everywhere."""
    gt0 = np.full((H, W), 2.0)
    gt0[0] = np.nan
    pred0 = np.full((H, W), 3.0)
    pred0[1] = np.nan
    gt1 = np.full((H, W), 4.0)
    gt1[:, 0] = np.nan
    pred1 = np.full((H, W), 3.6)
    return [gt0, gt1, np.full((H, W), 1.0)], [pred0, pred1, None]


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
def test_depth_only_bag_is_scored_by_hand(tmp_path, capsys, encoding):
    gts, preds = _hand_frames()
    gt_bag = _write_gt(tmp_path / "gt", gts, encoding)
    out_bag = _write_out(tmp_path / "out", preds)
    report = tmp_path / "report"
    assert main(["eval", str(out_bag), "--gt", str(gt_bag), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    s = json.loads((report / "summary.json").read_text())
    assert s["objects"] == {} and s["frames"] == 3 and s["frames_with_errors"] == 1
    d = s["depth"]
    # frame 0: 60 scored pixels with |3 - 2| / 2 = 0.5, error 1 m; frame 1: 72 pixels with
    # |3.6 - 4| / 4 = 0.1, error 0.4 m, ratio 1.11 < 1.25; frame 2 (error) predicts none of 80
    assert (d["frames"], d["frames_without_depth"], d["pixels"], d["pixels_gt"]) == (
        2, 1, 60 + 72, 70 + 72 + 80)
    assert d["abs_rel"] == pytest.approx((60 * 0.5 + 72 * 0.1) / 132, rel=1e-6)
    assert d["rmse_m"] == pytest.approx(np.sqrt((60 * 1.0 + 72 * 0.16) / 132), rel=1e-6)
    assert d["delta_1_25"] == pytest.approx(72 / 132, rel=1e-12)
    assert d["density"] == pytest.approx(132 / 222, rel=1e-12)
    assert d["abs_rel_median_scaled"] < 1e-6  # each frame is off by one scale only
    assert f"density {100 * 132 / 222:.1f} %" in printed


def test_depth_metrics_match_a_numpy_reference(tmp_path):
    rng = np.random.default_rng(5)
    gts, preds = _hand_frames()
    gt2 = rng.uniform(0.5, 3.0, (H, W))
    gt2[rng.random((H, W)) < 0.2] = 0.0  # unknown (REP 118 16UC1 style zeros in a float image)
    pred2 = 1.3 * gt2 * rng.uniform(0.8, 1.2, (H, W))
    gts.insert(2, gt2)
    preds.insert(2, pred2)
    result = evaluate_bag(_write_out(tmp_path / "out", preds), _write_gt(tmp_path / "gt", gts))
    d = result.summary()["depth"]
    g_all, p_all, ratio_all, n_gt = [], [], [], 0
    for g, p in zip(gts, preds):
        g = g.astype(np.float32).astype(np.float64)  # as stored in the bags
        ok_gt = np.isfinite(g) & (g > 0)
        n_gt += int(ok_gt.sum())
        if p is None:
            continue
        p = p.astype(np.float32).astype(np.float64)
        ok = ok_gt & np.isfinite(p)
        g_all.append(g[ok])
        p_all.append(p[ok])
        ratio_all.append(p[ok] * np.median(g[ok]) / np.median(p[ok]))
    g, p, scaled = np.concatenate(g_all), np.concatenate(p_all), np.concatenate(ratio_all)
    np.testing.assert_allclose(d["abs_rel"], np.mean(np.abs(p - g) / g), rtol=1e-9)
    np.testing.assert_allclose(d["rmse_m"], np.sqrt(np.mean((p - g) ** 2)), rtol=1e-9)
    np.testing.assert_allclose(d["delta_1_25"], np.mean(np.maximum(p / g, g / p) < 1.25))
    np.testing.assert_allclose(d["abs_rel_median_scaled"], np.mean(np.abs(scaled - g) / g),
                               rtol=1e-9)
    assert d["density"] == g.size / n_gt and 0 < d["abs_rel_median_scaled"] < d["abs_rel"]


def test_depth_only_refusals_name_the_problem(tmp_path):
    gts, preds = _hand_frames()
    gt_bag = _write_gt(tmp_path / "gt", gts)
    old = _write_out(tmp_path / "old", preds, depth_topic="depth")  # before ~/depth/image_raw
    with pytest.raises(BagError, match=r"/perception_node/depth, the name before "
                                       r"/perception_node/depth/image_raw"):
        evaluate_bag(old, gt_bag)
    none = _write_out(tmp_path / "none", [np.zeros((H, W))] * 3, depth_topic="other")
    with pytest.raises(BagError, match=r"only depth ground truth .* replay with a depth source"):
        evaluate_bag(none, gt_bag)
    out = _write_out(tmp_path / "out", preds)
    other_frame = _write_gt(tmp_path / "gt_frame", gts, frame_id="depth_optical_frame")
    with pytest.raises(BagError, match=r"frame 'depth_optical_frame'.* frame 'cam'.*registered"):
        evaluate_bag(out, other_frame)
    other_size = _write_gt(tmp_path / "gt_size", [np.ones((H, W + 2))] * 3)
    with pytest.raises(BagError, match=rf"is {W + 2}x{H} .* {W}x{H} .*registered"):
        evaluate_bag(out, other_size)
    with pytest.raises(BagError, match=r"no /ground_truth/<object_id>/pose topics and no depth "
                                       r"ground truth /somewhere/depth"):
        evaluate_bag(out, gt_bag, gt_depth_topic="/somewhere/depth")


@pytest.mark.slow
def test_replay_with_the_shipped_depth_model_scores_depth_alone(tmp_path):
    """A rendered RGB-D sequence without pose ground truth -> replay (network depth) -> eval."""
    from dvc_perception.bag.replay import replay_bag
    from dvc_perception.demo.samples import DEMO_DEPTH_MODEL, write_demo_object_sample_bag

    if not (REPO / DEMO_DEPTH_MODEL).is_file():
        pytest.skip(f"{DEMO_DEPTH_MODEL} is not shipped here")
    n = write_demo_object_sample_bag(tmp_path / "rendered", n_frames=3, progress=False)
    with BagReader(tmp_path / "rendered") as reader, AtomicBagWriter(tmp_path / "in") as writer:
        topics = reader.topics()
        assert any(t.startswith("/ground_truth/") for t in topics)  # dropped below
        for m in reader.messages([IMAGE, INFO, DEPTH]):
            writer.write_raw(m.topic, m.msgtype, m.timestamp_ns, m.rawdata)
    summary = replay_bag(tmp_path / "in", tmp_path / "out", progress=False, parameters={
        "pipeline.depth_source": "network",
        "pipeline.network.depth_model_path": str(REPO / DEMO_DEPTH_MODEL)})
    assert summary.frames_ok == n
    report = tmp_path / "report"
    assert main(["eval", str(tmp_path / "out"), "--gt", str(tmp_path / "in"),
                 "--report", str(report)]) == 0
    s = json.loads((report / "summary.json").read_text())
    d = s["depth"]
    assert s["objects"] == {} and d["frames"] == n and d["frames_without_depth"] == 0
    # the shipped model scores AbsRel 0.088 on its validation renders (README)
    assert 0 < d["abs_rel"] < 0.3 and 0 < d["abs_rel_median_scaled"] < 0.3
    assert 0.9 < d["density"] <= 1.0 and d["delta_1_25"] > 0.5 and 0 < d["rmse_m"] < 0.5
    assert (report / "depth_00.png").is_file()

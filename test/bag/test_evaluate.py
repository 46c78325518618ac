# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Evaluation against hand-built bags whose errors are known."""

from __future__ import annotations

import json

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from dvc_perception.bag.evaluate import evaluate_bag
from dvc_perception.bag.io import AtomicBagWriter
from dvc_perception.bag.report import write_report
from dvc_perception.render.objects import find_object_yaml, load_object
from dvc_perception.ros.convert import pose_to_msg


def _depth_msg(depth: np.ndarray, header: Header) -> Image:
    h, w = depth.shape
    return Image(header=header, height=h, width=w, encoding="32FC1", step=4 * w,
                 data=depth.astype(np.float32).tobytes())


def test_add_recall_errors_depth_and_latency(tmp_path):
    obj = load_object(find_object_yaml("demo_object"))
    pts = obj.mesh.vertices.double().numpy()
    rng = np.random.default_rng(0)
    n = 6
    gt = [(Rotation.random(random_state=k).as_matrix(), np.array([0.0, 0.0, 0.5 + 0.05 * k]))
          for k in range(n)]
    # frame 0: exact; 1: 1 cm off; 2: 5 deg about z; 3: not detected; 4: 3 cm off; 5: 0.5 cm off
    offsets = [np.zeros(3), np.array([0.01, 0, 0]), None, None, np.array([0, 0.03, 0]),
               np.array([0, 0, 0.005])]
    est = []
    for k, (R, t) in enumerate(gt):
        if k == 2:
            est.append((Rotation.from_euler("z", 5, degrees=True).as_matrix() @ R, t))
        elif k == 3:
            est.append(None)
        else:
            est.append((R, t + offsets[k]))
    depth_gt = rng.uniform(0.5, 2.0, (12, 16)).astype(np.float32)
    depth_gt[0, 0] = np.nan
    depth_pred = depth_gt * 1.1
    headers = [Header(stamp=Time(sec=1 + k), frame_id="cam") for k in range(n)]
    with AtomicBagWriter(tmp_path / "gt") as w:
        for k, (R, t) in enumerate(gt):
            w.write_message("/ground_truth/demo_object/pose",
                            PoseStamped(header=headers[k], pose=pose_to_msg(R, t)), k)
            w.write_message("/camera/depth/ground_truth", _depth_msg(depth_gt, headers[k]), k)
    with AtomicBagWriter(tmp_path / "out") as w:
        for k, pose in enumerate(est):
            timing = DiagnosticStatus(values=[KeyValue(key="total_ms", value=str(10.0 + k))])
            w.write_message("/perception_node/frame_timings",
                            DiagnosticArray(header=headers[k], status=[timing]), k)
            w.write_message("/perception_node/depth/image_raw", _depth_msg(depth_pred, headers[k]),
                            k)
            from geometry_msgs.msg import PoseArray

            w.write_message("/perception_node/poses", PoseArray(header=headers[k]), k)
            if pose is not None:
                msg = PoseWithCovarianceStamped(header=headers[k])
                msg.pose.pose = pose_to_msg(*pose)
                w.write_message("/perception_node/demo_object/pose", msg, k)

    result = evaluate_bag(tmp_path / "out", tmp_path / "gt")
    s = result.summary()
    o = s["objects"]["demo_object"]
    # independent reference: ADD = mean distance of the transformed model points
    ref = []
    for (R, t), e in zip(gt, est):
        ref.append(np.inf if e is None else
                   np.linalg.norm((pts @ e[0].T + e[1]) - (pts @ R.T + t), axis=1).mean())
    ref = np.asarray(ref)
    got = np.asarray(result.objects["demo_object"].add_m)
    np.testing.assert_allclose(got[np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-6)
    assert np.isnan(got[3])
    expected_recall = np.mean(ref <= 0.1 * obj.diameter_m)  # the missed frame counts as failure
    assert o["recall_0.1d"] == expected_recall and o["detected"] == n - 1
    assert o["metric"] == "ADD"
    assert abs(o["rotation_error_deg"]["max"] - 5.0) < 1e-6
    assert abs(o["translation_error_m"]["max"] - 0.03) < 1e-9
    assert s["frames"] == n and s["frames_with_errors"] == 0
    assert abs(s["depth"]["abs_rel"] - 0.1) < 1e-5 and s["depth"]["delta_1_25"] == 1.0
    assert s["latency_ms"]["total_ms"]["p50"] == np.percentile(10.0 + np.arange(n), 50)

    index = write_report(result, tmp_path / "report", gt_bag=None)
    assert index.is_file() and (tmp_path / "report" / "errors.png").is_file()
    assert json.loads((tmp_path / "report" / "summary.json").read_text()) == json.loads(
        json.dumps(s))

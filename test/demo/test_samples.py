# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The generated sample bag, replayed and scored: every frame of a full orbit (every camera roll)
must give the board's pose, with no 180-degree label flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dvc_perception.bag.evaluate import evaluate_bag
from dvc_perception.bag.io import BagReader
from dvc_perception.bag.replay import replay_bag
from dvc_perception.bag.report import write_report
from dvc_perception.demo.samples import write_board_sample_bag

REPO = Path(__file__).resolve().parents[2]


def test_orbit_sample_bag_replays_to_ground_truth(tmp_path):
    n = write_board_sample_bag(tmp_path / "in", n_frames=16, seed=3)
    summary = replay_bag(tmp_path / "in", tmp_path / "out", progress=False)
    assert summary.frames_in == n == summary.frames_ok
    result = evaluate_bag(tmp_path / "out", tmp_path / "in")
    board = result.objects["board"]
    assert len(board.rot_deg) == n
    assert np.max(board.rot_deg) < 1.0, np.round(board.rot_deg, 2)
    assert np.max(board.trans_m) < 0.005
    index = write_report(result, tmp_path / "report", gt_bag=tmp_path / "in")
    assert len(list((tmp_path / "report").glob("overlay_*.png"))) >= 4 and index.is_file()
    with BagReader(tmp_path / "in") as reader:
        assert reader.topics()["/ground_truth/board/pose"].count == n


def test_demo_object_parameters_name_a_missing_model(tmp_path):
    from dvc_perception.demo.samples import demo_object_parameters
    from dvc_perception.errors import ModelSpecError

    with pytest.raises(ModelSpecError, match="nothing.onnx"):
        demo_object_parameters(tmp_path / "nothing.onnx", tmp_path / "depth.onnx")


@pytest.mark.slow
def test_demo_object_job_with_the_shipped_models(tmp_path):
    """The main job of `make demo` on a short bag: every frame processed, scored against truth."""
    from dvc_perception.demo.samples import (
        DEMO_DEPTH_MODEL,
        DEMO_POSE_MODEL,
        run_demo_object_sample_job,
    )

    if not all((REPO / m).is_file() for m in (DEMO_POSE_MODEL, DEMO_DEPTH_MODEL)):
        pytest.skip("shipped demo-object models are not in models/ yet")
    summary, index = run_demo_object_sample_job(tmp_path, n_frames=4, progress=False)
    assert summary["frames"] == 4 and summary["frames_with_errors"] == 0
    obj = summary["objects"]["demo_object"]
    assert obj["frames_with_gt"] == 4 and obj["metric"] == "ADD"
    assert summary["depth"]["frames"] == 4 and 0 < summary["depth"]["abs_rel"] < 1
    assert index.is_file()
    with BagReader(tmp_path / "input_bag") as reader:
        topics = reader.topics()
    assert topics["/camera/image_raw"].count == 4
    assert topics["/ground_truth/demo_object/pose"].count == 4

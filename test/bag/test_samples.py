# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The generated sample bag, replayed and scored: every frame of a full orbit (every camera roll)
must give the board's pose, with no 180-degree label flips."""

from __future__ import annotations

import numpy as np

from dvc_perception.bag.evaluate import evaluate_bag
from dvc_perception.bag.io import BagReader
from dvc_perception.bag.replay import replay_bag
from dvc_perception.bag.report import write_report
from dvc_perception.bag.samples import write_board_sample_bag


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

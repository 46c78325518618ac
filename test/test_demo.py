# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception demo` on the real chessboard images and on generated views."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from dvc_perception.cli import main

NUM = r"[-+]?\d+\.\d+(?:e[-+]?\d+)?"


def _rows(out: str, solver: str) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """{view: (rvec, t, rms)} parsed from the demo's table."""
    rows, view = {}, None
    for line in out.splitlines():
        m = re.match(rf"^(\S*)\s+{solver}\s+\(([^)]*)\)\s+\(([^)]*)\)\s+({NUM})", line)
        if m:
            view = m.group(1) or view
            rows[view] = (np.array(m.group(2).split(","), float),
                          np.array(m.group(3).split(","), float), float(m.group(4)))
        elif line and not line.startswith(" "):
            view = line.split()[0]
    return rows


@pytest.mark.slow  # ~2 s on a quiet 2-core machine, > 5 s while other jobs run
def test_demo_real_images_match_an_independent_opencv_run(
    chessboard_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["demo", "--images", str(chessboard_dir), "--repeats", "1", "--skip-pipeline"]
    assert main(args) == 0
    out = capsys.readouterr().out
    ours, cv = _rows(out, "solve_pnp"), _rows(out, "opencv")
    names = sorted(p.name for p in chessboard_dir.glob("left*.jpg"))
    assert sorted(ours) == names and sorted(cv) == names
    assert "OK: solve_pnp matches OpenCV" in out
    assert re.search(r"timing: solve_pnp batched B=13: first call " + NUM, out)

    # Independent reference for one view: OpenCV end to end, with OpenCV's own converged
    # undistortion (not CameraModel) and the distortion-free solve on the result.
    fs = cv2.FileStorage(str(chessboard_dir / "intrinsics.yml"), cv2.FILE_STORAGE_READ)
    K, D = fs.getNode("M1").mat(), fs.getNode("D1").mat()
    fs.release()
    grey = cv2.imread(str(chessboard_dir / "left01.jpg"), cv2.IMREAD_GRAYSCALE)
    found, c = cv2.findChessboardCorners(grey, (9, 6))
    assert found
    c = cv2.cornerSubPix(grey, c, (5, 5), (-1, -1),
                         (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4))
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)
    und = cv2.undistortPointsIter(c.astype(np.float64), K, D, None, K, crit).reshape(-1, 2)
    obj = np.zeros((54, 3))
    obj[:, :2] = np.mgrid[0:9, 0:6].T.reshape(-1, 2)
    _, rvec, tvec = cv2.solvePnP(obj, und, K, None, flags=cv2.SOLVEPNP_SQPNP)
    _, rvec, tvec = cv2.solvePnP(obj, und, K, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, K, None)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - und) ** 2, axis=1))))
    for rows in (ours, cv):
        rvec_printed, t_printed, rms_printed = rows["left01.jpg"]
        np.testing.assert_allclose(rvec_printed, rvec.ravel(), atol=2e-5)
        np.testing.assert_allclose(t_printed, tvec.ravel(), atol=2e-4)
        assert abs(rms_printed - rms) < 2e-4


def test_demo_generated_views_recover_the_known_poses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DVC_SHARED_DATA", str(tmp_path))  # a data folder without chessboard/
    assert main(["demo", "--repeats", "0", "--skip-pipeline"]) == 0
    out = capsys.readouterr().out
    assert "generated views of a board at known poses, lens distortion included (no " in out
    assert "camera: rational_polynomial 640x480" in out
    assert sorted(_rows(out, "solve_pnp")) == [f"generated{k:02d}" for k in range(1, 5)]
    m = re.search(rf"max rotation error ({NUM}) deg, max translation error ({NUM}) squares", out)
    assert m, out
    # The corner detector on rendered views is good to ~0.1 px: poses to a few tenths of a degree.
    assert float(m.group(1)) < 0.3 and float(m.group(2)) < 0.1


def test_demo_rejects_a_missing_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--images", "/nonexistent/chessboards"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_demo_reads_an_image_folder_with_its_calibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The image-folder path without ../shared: rendered views saved as files + an M1/D1 file."""
    from dvc_perception.demo.chessboard import (
        ChessboardSpec,
        demo_board_poses,
        render_chessboard_view,
    )
    from dvc_perception.geometry.camera import CameraModel

    K = np.array([[530.0, 0, 319.5], [0, 530.0, 239.5], [0, 0, 1]])
    camera = CameraModel(K, [], 640, 480, "none")
    spec = ChessboardSpec()
    R, t = demo_board_poses(spec, 2)
    for k in range(2):
        cv2.imwrite(str(tmp_path / f"left{k + 1:02d}.png"),
                    render_chessboard_view(camera, R[k], t[k], spec))
    (tmp_path / "left03.png").write_bytes(b"not an image")
    args = ["demo", "--images", str(tmp_path), "--glob", "left*.png", "--repeats", "0",
            "--skip-pipeline"]
    assert main(args) == 2
    assert "no calibration" in capsys.readouterr().err
    fs = cv2.FileStorage(str(tmp_path / "intrinsics.yml"), cv2.FILE_STORAGE_WRITE)
    fs.write("M1", K)
    fs.write("D1", np.zeros((1, 5)))
    fs.release()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "skipped: left03.png: not a readable image" in out
    rows = _rows(out, "solve_pnp")
    assert sorted(rows) == ["left01.png", "left02.png"]
    for k, name in enumerate(sorted(rows)):
        np.testing.assert_allclose(rows[name][1], t[k], atol=0.05)


def test_demo_pipeline_stage_writes_bags_summary_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    out = tmp_path / "demo"
    assert main(["demo", "--generated", "--views", "1", "--repeats", "0", "--frames", "6",
                 "--object-frames", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "board: detected 6/6" in text
    assert f"report: {out / 'board' / 'index.html'}" in text
    summary = json.loads((out / "board" / "summary.json").read_text())
    board = summary["objects"]["board"]
    assert summary["frames"] == 6 and board["detected"] == 6
    assert board["rotation_error_deg"]["max"] < 1.0  # against the generator's ground truth
    assert (out / "board" / "input_bag" / "metadata.yaml").is_file()
    assert (out / "board" / "output_bag" / "metadata.yaml").is_file()
    # the main job: the demo object through the shipped networks
    assert f"report: {out / 'demo_object' / 'index.html'}" in text
    obj_summary = json.loads((out / "demo_object" / "summary.json").read_text())
    assert obj_summary["frames"] == 3 and obj_summary["frames_with_errors"] == 0
    assert obj_summary["objects"]["demo_object"]["frames_with_gt"] == 3
    assert obj_summary["depth"]["frames"] == 3

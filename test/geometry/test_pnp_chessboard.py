# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""solve_pnp on real chessboard images against OpenCV's solvePnP (SQPNP, then ITERATIVE).

Corners come from OpenCV's detector (findChessboardCorners + cornerSubPix) and the calibration
from ``intrinsics.yml`` (M1/D1, rational_polynomial). Basis of the comparison: the corners are
undistorted once with `CameraModel.undistort_points` and BOTH solvers get the same undistorted
corners and K with zero distortion, so both minimise the same pinhole reprojection error (OpenCV
given the distortion coefficients would instead minimise the error in the distorted image). The
second test also reprojects both poses through the full distortion model (``cv2.projectPoints``
with all 14 coefficients) and compares RMS against the raw detections.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dvc_perception.geometry.camera import CameraModel
from dvc_perception.geometry.pnp import solve_pnp

PATTERN = (9, 6)


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=-1))))


@pytest.fixture(scope="module")
def views(chessboard_dir: Path) -> dict:
    fs = cv2.FileStorage(str(chessboard_dir / "intrinsics.yml"), cv2.FILE_STORAGE_READ)
    K, D = fs.getNode("M1").mat(), fs.getNode("D1").mat().ravel()
    fs.release()
    names, corners = [], []
    for path in sorted(chessboard_dir.glob("left*.jpg")):
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        found, c = cv2.findChessboardCorners(grey, PATTERN)
        assert found, path.name  # every left image of this set shows the whole board
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
        c = cv2.cornerSubPix(grey, c, (5, 5), (-1, -1), criteria)
        names.append(path.name)
        corners.append(c.reshape(-1, 2).astype(np.float64))
    obj = np.zeros((PATTERN[0] * PATTERN[1], 3))
    obj[:, :2] = np.mgrid[0 : PATTERN[0], 0 : PATTERN[1]].T.reshape(-1, 2)  # unit squares
    camera = CameraModel.from_opencv_yaml(chessboard_dir / "intrinsics.yml", "M1",
                                          width=grey.shape[1], height=grey.shape[0])
    raw = np.stack(corners)
    undistorted = camera.undistort_points(torch.from_numpy(raw)).numpy()
    R_cv, t_cv = [], []
    for uv in undistorted:
        ok, rvec, tvec = cv2.solvePnP(obj, uv, K, None, flags=cv2.SOLVEPNP_SQPNP)
        ok, rvec, tvec = cv2.solvePnP(obj, uv, K, None, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        assert ok
        R_cv.append(cv2.Rodrigues(rvec)[0])
        t_cv.append(tvec.ravel())
    result = solve_pnp(torch.from_numpy(undistorted), torch.from_numpy(obj), camera.K)
    return {"names": names, "K": K, "D": D, "obj": obj, "raw": raw, "und": undistorted,
            "R_cv": np.stack(R_cv), "t_cv": np.stack(t_cv), "result": result}


def _project(obj: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray,
             D: np.ndarray | None) -> np.ndarray:
    uv, _ = cv2.projectPoints(obj, cv2.Rodrigues(R)[0], t, K, D)
    return uv.reshape(-1, 2)


def test_reprojection_rms_matches_opencv_undistorted(views: dict) -> None:
    res = views["result"]
    assert len(views["names"]) == 13
    assert bool(res.valid.all())
    for b, name in enumerate(views["names"]):
        uv = views["und"][b]
        ours = _rms(_project(views["obj"], res.R[b].numpy(), res.t[b].numpy(), views["K"], None),
                    uv)
        ref = _rms(_project(views["obj"], views["R_cv"][b], views["t_cv"][b], views["K"], None),
                   uv)
        assert ours <= ref + 0.01, f"{name}: solve_pnp RMS {ours:.4f} px, OpenCV {ref:.4f} px"
        assert 0.01 < ref < 1.0, f"{name}: implausible OpenCV RMS {ref}"  # sanity of the data


def test_reprojection_rms_matches_opencv_distorted(views: dict) -> None:
    res = views["result"]
    for b, name in enumerate(views["names"]):
        raw = views["raw"][b]
        ours = _rms(_project(views["obj"], res.R[b].numpy(), res.t[b].numpy(), views["K"],
                             views["D"]), raw)
        ref = _rms(_project(views["obj"], views["R_cv"][b], views["t_cv"][b], views["K"],
                            views["D"]), raw)
        assert abs(ours - ref) < 0.01, f"{name}: {ours:.4f} vs OpenCV {ref:.4f} px"


def test_poses_match_opencv(views: dict) -> None:
    res = views["result"]
    R_rel = res.R.numpy() @ np.transpose(views["R_cv"], (0, 2, 1))
    angle = np.degrees(np.arccos(np.clip((np.trace(R_rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angle.max() < 0.01, angle
    dist = np.linalg.norm(res.t.numpy() - views["t_cv"], axis=1)
    assert (dist / np.linalg.norm(views["t_cv"], axis=1)).max() < 1e-3, dist


def test_solver_reports_convergence_on_real_views(views: dict) -> None:
    # The poses equal OpenCV's LM optimum (test above), so `converged` must say so.
    res = views["result"]
    not_converged = [n for n, c in zip(views["names"], res.converged.tolist()) if not c]
    assert not not_converged, f"converged=False at OpenCV's optimum: {not_converged}"

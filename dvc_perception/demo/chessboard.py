# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Chessboard targets: object points, OpenCV corner detection, synthetic views, and poses.

A chessboard is the simplest keypoint source with exact 3D keypoints: its inner corners. The
demo solves views of one with `solve_pnp` next to OpenCV; detection and the corner layout are the
pipeline's fiducial source's (`pipeline.fiducial`). The board frame has x along
the columns of inner corners, y along the rows, z into the board (right-handed), origin at the
first corner OpenCV reports, in units of `ChessboardSpec.square` (m, or 1 for unit squares).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from dvc_perception.errors import ConfigError, InputError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.geometry.metrics import reprojection_rms_px, rotation_error_deg
from dvc_perception.geometry.pnp import solve_pnp, warm_up
from dvc_perception.geometry.so3 import matrix_to_rotvec, rotvec_to_matrix
from dvc_perception.pipeline.fiducial import chessboard_points_obj, detect_chessboard_corners
from dvc_perception.render.planar import ideal_pixel_map, render_planar_texture


@dataclass(frozen=True)
class ChessboardSpec:
    """A planar chessboard.

    Attributes:
        cols: inner corners per row (OpenCV's pattern width), >= 2.
        rows: inner corners per column (pattern height), >= 2.
        square: side of one square, m (1.0 for a board of unknown size: poses up to scale).
    """

    cols: int = 9
    rows: int = 6
    square: float = 1.0

    def __post_init__(self) -> None:
        if self.cols < 2 or self.rows < 2:
            raise ConfigError(
                f"chessboard: expected >= 2x2 inner corners, got {self.cols}x{self.rows}"
            )
        if not (np.isfinite(self.square) and self.square > 0):
            raise ConfigError(f"chessboard.square: expected a length > 0, got {self.square!r}")

    @property
    def pattern_size(self) -> tuple[int, int]:
        """(cols, rows), as ``cv2.findChessboardCorners`` takes it."""
        return (self.cols, self.rows)

    def object_points(self) -> np.ndarray:
        """(rows * cols, 3) float64 inner corners, board frame, OpenCV's order (row-major)."""
        return chessboard_points_obj(self.cols, self.rows, self.square)


#: The demo's sub-pixel refinement, finer than the live fiducial source's (its poses are compared
#: with OpenCV's to 0.01 px RMS).
DEMO_SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)


def require_chessboard_corners(
    image: np.ndarray, spec: ChessboardSpec, *, refine_window: int = 5, name: str = "image"
) -> np.ndarray:
    """Inner corners by the pipeline's detector (`pipeline.fiducial.detect_chessboard_corners`).

    Args:
        image: (H, W) uint8 grey or (H, W, 3) uint8 BGR image.
        spec: the board.
        refine_window: half size of the sub-pixel search window, px.
        name: what to call the image in errors.

    Returns:
        (rows * cols, 2) float64 px in the (distorted) input image, u right, v down, in the
        order of `ChessboardSpec.object_points`.

    Raises:
        InputError: not an 8-bit image, or no complete board found.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise InputError(f"{name}: expected an (H, W) or (H, W, 3) uint8 image, got "
                         f"{image.dtype} {image.shape}")
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    corners = detect_chessboard_corners(grey, spec.cols, spec.rows, refine_window,
                                        criteria=DEMO_SUBPIX_CRITERIA)
    if len(corners) == 0:
        raise InputError(f"{name}: no complete {spec.cols}x{spec.rows} chessboard found")
    return corners


def render_chessboard_view(
    camera: CameraModel,
    R: np.ndarray,
    t: np.ndarray,
    spec: ChessboardSpec,
    *,
    supersample: int = 4,
    ideal_map: np.ndarray | None = None,
) -> np.ndarray:
    """A synthetic greyscale image of the board seen from a known pose, with lens distortion.

    The board, with one white square of margin, rendered by `render_planar_texture`
    (supersampled, distorted, area-averaged: corners accurate to a few hundredths of a pixel).

    Args:
        camera: intrinsics, distortion and image size.
        R: (3, 3) board-to-camera rotation.
        t: (3,) board origin in the camera frame, in the unit of `spec.square`.
        spec: the board.
        supersample: rendering scale factor, >= 1.
        ideal_map: ``ideal_pixel_map(camera, supersample)``, to reuse over views; computed
            here when None and the camera has distortion.

    Returns:
        (height, width) uint8 image: black squares 0, white 255, background grey 128.
    """
    tex_px = 32  # texture pixels per square
    # One black/white square beyond the inner corners on each side, plus a white margin square.
    n_u, n_v = spec.cols + 3, spec.rows + 3
    tile = (np.indices((n_v, n_u)).sum(axis=0) % 2 == 1).astype(np.uint8) * 255
    tile[[0, -1], :] = 255
    tile[:, [0, -1]] = 255
    texture = np.kron(tile, np.ones((tex_px, tex_px), np.uint8))
    # Texture pixel centre (i, j) sits at board ((i + 0.5) / tex_px - 2) squares.
    s = spec.square / tex_px
    off = spec.square * (0.5 / tex_px - 2.0)
    board_from_tex = np.array([[s, 0, off], [0, s, off], [0, 0, 1.0]])
    return render_planar_texture(texture, board_from_tex, camera, R, t,
                                 supersample=supersample, background=128, ideal_map=ideal_map)


def demo_camera() -> CameraModel:
    """A 640x480 camera with a strongly distorting lens (rational_polynomial).

    The intrinsics of OpenCV's stereo chessboard sample (``intrinsics.yml`` M1/D1, rounded), so
    generated views exercise the same undistortion as the real images.
    """
    K = [[533.92, 0.0, 328.82], [0.0, 528.58, 237.24], [0.0, 0.0, 1.0]]
    D = [-0.2585, -0.1297, 0.0, 0.0, 0.0, 0.0, 0.0, -0.4047]
    return CameraModel(K, D, 640, 480, "rational_polynomial")


def demo_board_poses(spec: ChessboardSpec, n_views: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Fixed, varied board poses that keep a 9x6 board inside a ~60 degree field of view.

    Returns:
        R (n_views, 3, 3) and t (n_views, 3), board-to-camera, unit of `spec.square`.
    """
    centre = np.array([(spec.cols - 1) / 2, (spec.rows - 1) / 2, 0.0]) * spec.square
    out_R, out_t = [], []
    for k in range(n_views):
        tilt = np.deg2rad([25.0 * np.cos(1.7 * k), 20.0 * np.sin(1.3 * k + 0.4), 8.0 * k - 10])
        R = rotvec_to_matrix(torch.from_numpy(tilt)).numpy()
        depth = (1.9 + 0.25 * k) * spec.cols  # squares
        t = np.array([0.4 * (k - 1.5), -0.3 * (k % 2), depth]) * spec.square - R @ centre
        out_R.append(R)
        out_t.append(t)
    return np.stack(out_R), np.stack(out_t)


def solve_pnp_opencv(
    x2d: np.ndarray, x3d: np.ndarray, K: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV reference: ``solvePnP`` SQPNP, then ITERATIVE from that, per sample, no distortion.

    Args:
        x2d: (B, N, 2) undistorted px.
        x3d: (N, 3) object points.
        K: (3, 3) camera matrix, px.

    Returns:
        R (B, 3, 3) and t (B, 3), object-to-camera.
    """
    Rs, ts = [], []
    obj = np.ascontiguousarray(x3d, np.float64)
    for uv in x2d:
        img = np.ascontiguousarray(uv, np.float64)
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_SQPNP)
        if ok:
            ok, rvec, tvec = cv2.solvePnP(
                obj, img, K, None, rvec, tvec, useExtrinsicGuess=True,
                flags=cv2.SOLVEPNP_ITERATIVE,
            )
        if not ok:
            raise InputError("cv2.solvePnP failed on a chessboard view")
        Rs.append(cv2.Rodrigues(rvec)[0])
        ts.append(tvec.reshape(3))
    return np.stack(Rs), np.stack(ts)


@dataclass(frozen=True)
class BoardPoseComparison:
    """Poses of B chessboard views by `solve_pnp` (one batched call) and by OpenCV.

    All arrays are float64 numpy; poses are board-to-camera in units of the board's square.

    Attributes:
        names: (B,) view names.
        rvec: (B, 3) rotation vectors from `solve_pnp`, rad.
        t: (B, 3) translations from `solve_pnp`.
        rvec_cv: (B, 3) OpenCV rotation vectors, rad.
        t_cv: (B, 3) OpenCV translations.
        rms_px: (B,) reprojection RMS of `solve_pnp` in the undistorted image, px.
        rms_cv_px: (B,) the same for OpenCV.
        rot_diff_deg: (B,) angle between the two rotations, degrees.
        t_diff: (B,) distance between the two translations.
        converged: (B,) bool, `solve_pnp`'s flag.
        valid: (B,) bool, `solve_pnp`'s flag.
        solve_ms: wall time of the batched `solve_pnp` call (first call), ms.
        solve_warm_ms: median of the further timed calls, ms (NaN if none).
        opencv_ms: wall time of the OpenCV loop (SQPNP + ITERATIVE per view), ms.
    """

    names: tuple[str, ...]
    rvec: np.ndarray
    t: np.ndarray
    rvec_cv: np.ndarray
    t_cv: np.ndarray
    rms_px: np.ndarray
    rms_cv_px: np.ndarray
    rot_diff_deg: np.ndarray
    t_diff: np.ndarray
    converged: np.ndarray
    valid: np.ndarray
    solve_ms: float
    solve_warm_ms: float
    opencv_ms: float


def compare_board_poses(
    names: Sequence[str],
    corners_px: np.ndarray,
    camera: CameraModel,
    spec: ChessboardSpec,
    *,
    repeats: int = 3,
) -> BoardPoseComparison:
    """Undistort detected corners, solve all views in one `solve_pnp` call, and run OpenCV.

    Both solvers see the same undistorted corners and K with zero distortion, so both RMS
    figures are measured in the ideal pinhole image (``CameraModel.undistort_points``).

    Args:
        names: (B,) view names.
        corners_px: (B, N, 2) detected corners in the distorted images, px.
        camera: the camera that took the views.
        spec: the board.
        repeats: further `solve_pnp` calls timed for the warm figure (0: report NaN).

    Returns:
        The comparison record.
    """
    uv = camera.undistort_points(torch.as_tensor(corners_px, dtype=torch.float64))
    x3d = torch.from_numpy(spec.object_points())
    K = camera.K
    warm_up()  # compiled kernels loaded before timing: "first call" is a frame, not a compile
    start = time.perf_counter()
    result = solve_pnp(uv, x3d, K)
    solve_ms = (time.perf_counter() - start) * 1e3
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        solve_pnp(uv, x3d, K)
        warm.append((time.perf_counter() - start) * 1e3)
    start = time.perf_counter()
    R_cv, t_cv = solve_pnp_opencv(uv.numpy(), x3d.numpy(), K.numpy())
    opencv_ms = (time.perf_counter() - start) * 1e3
    R_cv_t, t_cv_t = torch.from_numpy(R_cv), torch.from_numpy(t_cv)
    return BoardPoseComparison(
        names=tuple(names),
        rvec=result.rvec.numpy(),
        t=result.t.numpy(),
        rvec_cv=matrix_to_rotvec(R_cv_t).numpy(),
        t_cv=t_cv,
        rms_px=reprojection_rms_px(uv, x3d, K, result.R, result.t).numpy(),
        rms_cv_px=reprojection_rms_px(uv, x3d, K, R_cv_t, t_cv_t).numpy(),
        rot_diff_deg=rotation_error_deg(result.R, R_cv_t).numpy(),
        t_diff=torch.linalg.vector_norm(result.t - t_cv_t, dim=-1).numpy(),
        converged=result.converged.numpy(),
        valid=result.valid.numpy(),
        solve_ms=solve_ms,
        solve_warm_ms=float(np.median(warm)) if warm else float("nan"),
        opencv_ms=opencv_ms,
    )


def load_views(paths: Sequence[Path], spec: ChessboardSpec) -> tuple[list[str], list[np.ndarray],
                                                                      list[str]]:
    """Detect the board in each image file.

    Returns:
        (names of the views with a board, (N, 2) corners of each, messages for the views
        skipped: unreadable file or no complete board).
    """
    names, corners, skipped = [], [], []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            skipped.append(f"{path.name}: not a readable image")
            continue
        try:
            corners.append(require_chessboard_corners(image, spec, name=path.name))
        except InputError as err:
            skipped.append(str(err))
            continue
        names.append(path.name)
    return names, corners, skipped


def synthetic_views(
    camera: CameraModel, spec: ChessboardSpec, n_views: int = 4
) -> tuple[list[str], list[np.ndarray], Tensor, Tensor]:
    """Render `n_views` boards at `demo_board_poses` and detect their corners.

    Returns:
        (names, (N, 2) detected corners per view, R (B, 3, 3), t (B, 3) true poses).

    Raises:
        InputError: the detector misses a rendered board (a bug, not bad luck: poses are fixed).
    """
    R, t = demo_board_poses(spec, n_views)
    ideal_map = ideal_pixel_map(camera) if camera.has_distortion else None
    names, corners = [], []
    for k in range(n_views):
        name = f"generated{k + 1:02d}"
        image = render_chessboard_view(camera, R[k], t[k], spec, ideal_map=ideal_map)
        corners.append(require_chessboard_corners(image, spec, name=name))
        names.append(name)
    return names, corners, torch.from_numpy(R), torch.from_numpy(t)


@dataclass(frozen=True)
class BoardViews:
    """The demo's chessboard views: detected corners, their camera and, when generated, truth.

    Attributes:
        names: one name per view (file name or ``view_k``).
        corners: one (rows * cols, 2) float64 px corner array per view.
        camera: the views' camera model.
        truth: (R (B, 3, 3), t (B, 3)) of generated views; None for real images.
        skipped: one message per image without a complete board.
        source: one line describing where the views came from.
    """

    names: list[str]
    corners: list[np.ndarray]
    camera: CameraModel
    truth: tuple[Tensor, Tensor] | None
    skipped: list[str]
    source: str


def choose_board_views(spec: ChessboardSpec, *, images: Path | None, glob: str,
                       intrinsics: Path | None, generated: bool, n_generated: int) -> BoardViews:
    """Real views from `images` (default ``../shared/data/chessboard``), else generated ones.

    Real images need a calibration file with M1/D1 (`intrinsics`, default ``intrinsics.yml``
    in the folder). Without images, or with `generated`, `n_generated` views of the board are
    rendered at known poses through the strongly distorting `demo_camera`.

    Raises:
        ConfigError: `images` is not a folder, the calibration is absent, or n_generated < 1.
        InputError: an unreadable image, or no view with a complete board.
    """
    from dvc_perception.resources import shared_data_dir

    folder = images
    if folder is not None and not folder.is_dir():
        raise ConfigError(f"--images {folder}: not a folder")
    if folder is None:
        data = shared_data_dir()
        folder = data / "chessboard" if data is not None else None
    paths = sorted(folder.glob(glob)) if folder is not None and folder.is_dir() else []
    if paths and not generated:
        calibration = intrinsics or Path(str(folder)) / "intrinsics.yml"
        if not calibration.is_file():
            raise ConfigError(f"no calibration for {folder}: {calibration} is absent "
                              "(pass --intrinsics FILE with M1/D1)")
        first = cv2.imread(str(paths[0]), cv2.IMREAD_GRAYSCALE)
        if first is None:
            raise InputError(f"{paths[0]}: not a readable image")
        camera = CameraModel.from_opencv_yaml(calibration, "M1", width=first.shape[1],
                                              height=first.shape[0])
        names, corners, skipped = load_views(paths, spec)
        views = BoardViews(names, corners, camera, None, skipped,
                           f"{len(paths)} images {folder}/{glob}, calibration "
                           f"{calibration.name} M1/D1")
    else:
        if n_generated < 1:
            raise ConfigError(f"--views: expected >= 1, got {n_generated}")
        camera = demo_camera()
        names, corners, R_true, t_true = synthetic_views(camera, spec, n_generated)
        reason = "--generated" if generated else "no chessboard images found"
        views = BoardViews(names, corners, camera, (R_true, t_true), [],
                           f"{n_generated} generated views of a board at known poses, lens "
                           f"distortion included ({reason})")
    if not views.names:
        raise InputError(f"no view with a complete {spec.cols}x{spec.rows} board")
    return views

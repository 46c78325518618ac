# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Fiducial keypoint source: chessboards, ArUco grid boards and ChArUco boards via OpenCV.

Gives metric poses without any trained network. Board frame: origin at the top-left of the board
as printed, x right along a row, y down along a column, z into the board, metres:

- ``chessboard``: `cols` x `rows` *inner* corners; corner (i, j) is at (i, j) * square_size_m, so
  the origin is the top-left inner corner. The printed board has (cols + 1) x (rows + 1) squares
  with a *black* top-left square (OpenCV's pattern). When cols + rows is odd the board has no
  180-degree symmetry and the corner order is made canonical from the square colours; when it
  is even the labelling of a board seen upside down is ambiguous (use an odd sum). A chessboard
  must be fully visible (an OpenCV limitation); use ChArUco for partial views.
- ``aruco_grid``: `cv2.aruco.GridBoard` (cols x rows markers, marker_size_m, marker_separation_m,
  ids from 0), origin at the top-left corner of the top-left marker; any visible marker counts.
- ``charuco``: `cv2.aruco.CharucoBoard` (cols x rows squares, square_size_m, marker_size_m), origin
  at the top-left corner of the board; inner chessboard corners are the keypoints, so a partially
  visible board still gives a pose (4 or more non-collinear corners).

All keypoints get confidence 1 (OpenCV gives none); outliers are left to RANSAC.
"""

from __future__ import annotations

import cv2
import numpy as np

from dvc_perception.config import FiducialConfig
from dvc_perception.errors import ConfigError, InputError
from dvc_perception.pipeline.sources import KeypointDetection

#: cornerSubPix termination: 30 iterations or a 0.01 px step (OpenCV's calibration sample).
SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.01)
#: findChessboardCorners flags used by the chessboard source.
CHESSBOARD_FLAGS = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE


def detect_chessboard_corners(
    gray: np.ndarray, cols: int, rows: int, subpixel_window_px: int,
    criteria: tuple[int, int, float] = SUBPIX_CRITERIA,
) -> np.ndarray:
    """OpenCV chessboard corners as found (no canonical ordering); (0, 2) if not found.

    Args:
        gray: (H, W) uint8 image.
        cols: inner corners per row.
        rows: inner corners per column.
        subpixel_window_px: half window of `cv2.cornerSubPix`; 0 skips the refinement.
        criteria: `cv2.cornerSubPix` termination (type, iterations, step px).

    Returns:
        (rows * cols, 2) float64 px, row-major; (0, 2) when the board is not (fully) visible.
    """
    found, corners = cv2.findChessboardCorners(gray, (cols, rows), flags=CHESSBOARD_FLAGS)
    if not found:
        return np.zeros((0, 2))
    if subpixel_window_px > 0:
        w = subpixel_window_px
        corners = cv2.cornerSubPix(gray, corners, (w, w), (-1, -1), criteria)
    return corners.reshape(-1, 2).astype(np.float64)


def _sample(gray: np.ndarray, uv: np.ndarray) -> float:
    """Mean grey value of a 3x3 patch around px `uv` (clamped to the image)."""
    h, w = gray.shape
    u = int(np.clip(round(float(uv[0])), 1, w - 2))
    v = int(np.clip(round(float(uv[1])), 1, h - 2))
    return float(gray[v - 1 : v + 2, u - 1 : u + 2].mean())


def canonical_chessboard_order(
    corners_px: np.ndarray, gray: np.ndarray, cols: int, rows: int
) -> np.ndarray:
    """Reorder corners so that corner 0 touches the black outer corner square.

    OpenCV may return the grid starting from either end. For a board whose square count parity
    breaks the 180-degree symmetry (cols + rows odd) the colour of the outer square diagonal to
    corner 0 tells which end it is; for symmetric boards the order is returned unchanged.

    Args:
        corners_px: (rows * cols, 2) px, row-major as from `detect_chessboard_corners`.
        gray: (H, W) uint8 image.
        cols: inner corners per row.
        rows: inner corners per column.

    Returns:
        (rows * cols, 2) px, canonical order.
    """
    if (cols + rows) % 2 == 0:
        return corners_px
    grid = corners_px.reshape(rows, cols, 2)
    p0 = grid[0, 0]
    a, b = 0.5 * (grid[0, 1] - p0), 0.5 * (grid[1, 0] - p0)  # half a square along row, column
    # The outer corner square diagonal to corner 0 is black if the order is canonical (white if
    # it starts from the other end). The squares diagonal to each other around a corner share
    # their colour, so compare with the two squares beside it, which have the other colour.
    diagonal = _sample(gray, p0 - a - b)
    beside = 0.5 * (_sample(gray, p0 + a - b) + _sample(gray, p0 - a + b))
    if diagonal > beside:
        return corners_px[::-1].copy()
    return corners_px


def chessboard_points_obj(cols: int, rows: int, square_size_m: float) -> np.ndarray:
    """(rows * cols, 3) float64 m: inner corner (i, j) at (i, j, 0) * square_size_m, row-major."""
    i, j = np.meshgrid(np.arange(cols), np.arange(rows))
    pts = np.stack([i.ravel(), j.ravel(), np.zeros(i.size)], axis=1)
    return pts.astype(np.float64) * square_size_m


def aruco_dictionary(name: str) -> cv2.aruco.Dictionary:
    """The predefined OpenCV ArUco dictionary called `name` (e.g. ``"DICT_5X5_100"``)."""
    key = name if hasattr(cv2.aruco, name) else name.upper()
    if not key.startswith("DICT_") or not hasattr(cv2.aruco, key):
        raise ConfigError(f"pipeline.fiducial.dictionary: unknown ArUco dictionary {name!r}")
    return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, key))


def make_board(config: FiducialConfig) -> cv2.aruco.Board:
    """The OpenCV board object of an ``aruco_grid`` or ``charuco`` config."""
    if config.board_type not in ("aruco_grid", "charuco"):
        raise ConfigError(f"make_board: expected aruco_grid or charuco, got {config.board_type!r}")
    dictionary = aruco_dictionary(config.dictionary)
    if config.board_type == "aruco_grid":
        needed = config.cols * config.rows
        board: cv2.aruco.Board = cv2.aruco.GridBoard(
            (config.cols, config.rows),
            config.marker_size_m,
            config.marker_separation_m,
            dictionary,
        )
    else:
        needed = (config.cols * config.rows) // 2
        board = cv2.aruco.CharucoBoard(
            (config.cols, config.rows), config.square_size_m, config.marker_size_m, dictionary
        )
        board.setLegacyPattern(config.legacy_pattern)
    available = dictionary.bytesList.shape[0]
    if needed > available:
        raise ConfigError(
            f"pipeline.fiducial: a {config.cols}x{config.rows} {config.board_type} needs {needed} "
            f"markers, dictionary {config.dictionary} has {available}"
        )
    return board


class FiducialSource:
    """`KeypointSource` for one calibration board (chessboard, ArUco grid or ChArUco).

    Args:
        config: the board description.
    """

    def __init__(self, config: FiducialConfig) -> None:
        self.config = config
        self.object_ids: tuple[str, ...] = (config.object_id,)
        self.backend = f"fiducial:{config.board_type} (OpenCV {cv2.__version__})"
        if config.board_type == "chessboard":
            self._points_obj = chessboard_points_obj(
                config.cols, config.rows, config.square_size_m
            )
        elif config.board_type == "aruco_grid":
            self._board = make_board(config)
            params = cv2.aruco.DetectorParameters()
            # sub-pixel marker corners: half the corner error of no refinement on rendered views
            params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
            self._detector = cv2.aruco.ArucoDetector(self._board.getDictionary(), params)
        else:
            self._board = make_board(config)
            self._charuco = cv2.aruco.CharucoDetector(self._board)
            self._charuco_corners_obj = np.asarray(
                self._board.getChessboardCorners(), dtype=np.float64
            ).reshape(-1, 3)

    def detect(self, image_rgb: np.ndarray) -> list[KeypointDetection]:
        """Board keypoints in `image_rgb` (H, W, 3) uint8 RGB; [] when the board is not seen."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise InputError(
                f"fiducial source: expected an (H, W, 3) uint8 RGB image, got "
                f"{image_rgb.shape} {image_rgb.dtype}"
            )
        gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        kind = self.config.board_type
        if kind == "chessboard":
            uv, xyz = self._detect_chessboard(gray)
        elif kind == "aruco_grid":
            uv, xyz = self._detect_aruco_grid(gray)
        else:
            uv, xyz = self._detect_charuco(gray)
        if uv.shape[0] < self.config.min_keypoints:
            return []
        return [
            KeypointDetection(
                object_id=self.config.object_id,
                keypoints_px=uv,
                points_obj=xyz,
                confidence=np.ones(uv.shape[0]),
            )
        ]

    def _detect_chessboard(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        corners = detect_chessboard_corners(gray, c.cols, c.rows, c.subpixel_window_px)
        if corners.shape[0] == 0:
            return np.zeros((0, 2)), np.zeros((0, 3))
        return canonical_chessboard_order(corners, gray, c.cols, c.rows), self._points_obj

    def _detect_aruco_grid(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        corners, ids, _rejected = self._detector.detectMarkers(gray)
        if ids is None or len(ids) == 0:
            return np.zeros((0, 2)), np.zeros((0, 3))
        obj, img = self._board.matchImagePoints(corners, ids)
        if obj is None or img is None:
            return np.zeros((0, 2)), np.zeros((0, 3))
        return (
            np.asarray(img, dtype=np.float64).reshape(-1, 2),
            np.asarray(obj, dtype=np.float64).reshape(-1, 3),
        )

    def _detect_charuco(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        corners, ids, _marker_corners, _marker_ids = self._charuco.detectBoard(gray)
        if ids is None or len(ids) < 4:
            return np.zeros((0, 2)), np.zeros((0, 3))
        if self._board.checkCharucoCornersCollinear(ids):  # a line of corners: no pose
            return np.zeros((0, 2)), np.zeros((0, 3))
        idx = np.asarray(ids, dtype=np.int64).ravel()
        corners = np.asarray(corners, dtype=np.float32).reshape(-1, 1, 2)
        w = self.config.subpixel_window_px
        if w > 0:
            # OpenCV <= 4.12 returns ChArUco corners shifted by +0.5 px (opencv#25539, fixed by
            # opencv#28380): cornerSubPix on the image converges to the saddle point from either
            # start, so this is right with fixed and unfixed OpenCV alike.
            corners = cv2.cornerSubPix(gray, corners, (w, w), (-1, -1), SUBPIX_CRITERIA)
        return corners.reshape(-1, 2).astype(np.float64), self._charuco_corners_obj[idx]

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""RGB-D sequences with camera poses: the 7-Scenes layout and the TUM RGB-D layout.

7-Scenes (Shotton et al. 2013; also andyzeng's tsdf-fusion), N a digit:
``frame-NNNNNN.color.jpg`` (or ``.color.png``), ``frame-NNNNNN.depth.png`` (uint16 mm, 0 = no
measurement; the raw dataset also marks invalid pixels 65535), ``frame-NNNNNN.pose.txt`` (4x4
camera-to-world, metres) and ``camera-intrinsics.txt`` (3x3 K). It has no time stamps: frame
number ``n`` is stamped ``1 s + n / rate_hz`` (`bop_frame_stamp_ns`, as `bop2bag` stamps), so a
stride keeps the true time between the frames kept.

TUM RGB-D (Sturm et al. 2012): ``rgb.txt`` and ``depth.txt`` (``timestamp path`` lines),
``groundtruth.txt`` (``timestamp tx ty tz qx qy qz qw``, the colour camera's optical frame in
the motion-capture world), depth PNGs of uint16 at 5000 per metre (0 = no measurement). Each
colour image takes the nearest depth image and the nearest pose within `max_dt_s` and keeps its
own time stamp; colour images without both are left out and counted. The folder does not say
which camera took it (fr1, fr2 and fr3 differ), so the intrinsics must be given.

Poses are camera-to-world ``T_world_cam`` (4, 4): the camera optical frame (x right, y down, z
forward; REP 103) in the world frame, metres. Nothing here imports ROS; `bag.rgbd` writes a
sequence as a rosbag2.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import cv2
import numpy as np

from dvc_perception.datasets.bop import bop_frame_stamp_ns
from dvc_perception.errors import ConfigError, InputError
from dvc_perception.geometry.se3 import check_rigid_transform

#: Depth PNG units per metre of each layout.
DEPTH_UNITS_PER_M = {"7scenes": 1000.0, "tum": 5000.0}
#: Raw depth values meaning "no measurement" (0; 65535 in the original 7-Scenes release).
DEPTH_INVALID = (0, 65535)
#: Largest |R R^T - I| and |det R - 1| accepted in a pose file (the 7-Scenes files reach 2e-4).
ROTATION_TOL = 1e-3
#: Stamping rate of 7-Scenes frames [Hz] (the Kinect v1 rate).
DEFAULT_RATE_HZ = 30.0
#: Largest colour-to-depth and colour-to-pose time difference of a TUM frame [s] (as TUM's
#: associate.py).
DEFAULT_MAX_DT_S = 0.02
INTRINSICS_FILE = "camera-intrinsics.txt"
_FRAME_FILE = re.compile(r"^frame-(\d+)\.(color\.jpg|color\.png|depth\.png|pose\.txt)$")


@dataclass(frozen=True)
class RgbdFrame:
    """One frame of a sequence: where its images are, its stamp and the camera pose.

    Attributes:
        number: 7-Scenes frame number (``frame-NNNNNN``); TUM: index in rgb.txt (time order).
        stamp_ns: header stamp [ns] of every message of the frame.
        color_path: colour image (8-bit, any format OpenCV reads).
        depth_path: depth PNG (uint16, registered to the colour image).
        T_world_cam: (4, 4) camera optical frame -> world, metres.
        pose_source: the file (and line) the pose was read from, named in errors.
    """

    number: int
    stamp_ns: int
    color_path: Path
    depth_path: Path
    T_world_cam: np.ndarray
    pose_source: str


@dataclass(frozen=True)
class RgbdSequence:
    """A sequence folder, read: layout, intrinsics and the selected frames in time order.

    Attributes:
        root: the sequence folder.
        layout: ``7scenes`` or ``tum``.
        K: (3, 3) pinhole intrinsics of the colour camera [px].
        frames: the selected frames (``start``, ``stride``, ``max_frames`` applied).
        skipped: TUM colour images left out for want of a depth image or a pose within
            ``max_dt_s`` (before the selection); 0 for 7-Scenes.
    """

    root: Path
    layout: str
    K: np.ndarray
    frames: tuple[RgbdFrame, ...]
    skipped: int = 0

    @property
    def depth_units_per_m(self) -> float:
        """Depth PNG units per metre (1000 for 7-Scenes, 5000 for TUM)."""
        return DEPTH_UNITS_PER_M[self.layout]


def read_rgbd_sequence(
    seq_dir: str | Path,
    *,
    intrinsics: str | Path | None = None,
    start: int = 0,
    stride: int = 1,
    max_frames: int | None = None,
    rate_hz: float | None = None,
    max_dt_s: float | None = None,
) -> RgbdSequence:
    """Read a 7-Scenes or TUM RGB-D folder (detected by its files) and select frames.

    Poses and intrinsics are read and checked here; images are read by `iter_rgbd_images`.

    Args:
        seq_dir: the sequence folder.
        intrinsics: a text file holding the 3x3 K (as ``camera-intrinsics.txt``); required for
            TUM, replaces ``camera-intrinsics.txt`` for 7-Scenes.
        start: frames to skip at the beginning (positions in time order, not file numbers).
        stride: keep every `stride`-th frame from `start`.
        max_frames: keep at most this many frames (None: all).
        rate_hz: 7-Scenes stamping rate [Hz] (default `DEFAULT_RATE_HZ`); TUM has stamps.
        max_dt_s: TUM association tolerance [s] (default `DEFAULT_MAX_DT_S`).

    Raises:
        ConfigError: a bad selection, a rate for TUM or a tolerance for 7-Scenes.
        InputError: the folder is neither layout; intrinsics missing or not a camera matrix; a
            selected frame lacks its colour image, depth or pose; a pose that is not a rigid
            transform (non-finite, rotation not orthonormal); no frame left.
    """
    root = Path(seq_dir)
    if start < 0 or stride < 1 or (max_frames is not None and max_frames < 1):
        raise ConfigError(f"frame selection: expected start >= 0, stride >= 1 and max_frames "
                          f">= 1, got start {start}, stride {stride}, max_frames {max_frames}")
    if not root.is_dir():
        raise InputError(f"RGB-D sequence {root} is not a folder")
    if (root / "rgb.txt").exists() or (root / "depth.txt").exists():
        if rate_hz is not None:
            raise ConfigError(f"{root} is a TUM RGB-D sequence: it is stamped with its own "
                              f"time stamps, a rate ({rate_hz} Hz) does not apply")
        return _read_tum(root, intrinsics, (start, stride, max_frames),
                         DEFAULT_MAX_DT_S if max_dt_s is None else max_dt_s)
    if max_dt_s is not None:
        raise ConfigError(f"{root} is a 7-Scenes sequence (frame-NNNNNN files): it has no "
                          "time stamps to associate, a time tolerance does not apply")
    return _read_7scenes(root, intrinsics, (start, stride, max_frames),
                         DEFAULT_RATE_HZ if rate_hz is None else rate_hz)


def _select(items: list, selection: tuple[int, int, int | None]) -> list:
    start, stride, max_frames = selection
    return items[start::stride][:max_frames]


def _read_7scenes(root: Path, intrinsics: str | Path | None,
                  selection: tuple[int, int, int | None], rate_hz: float) -> RgbdSequence:
    if not rate_hz > 0 or not np.isfinite(rate_hz):
        raise ConfigError(f"rate_hz must be a finite number > 0, got {rate_hz}")
    files: dict[int, dict[str, Path]] = {}
    for path in root.iterdir():
        if m := _FRAME_FILE.match(path.name):
            kind = "color" if m.group(2).startswith("color") else m.group(2).split(".")[0]
            entry = files.setdefault(int(m.group(1)), {})
            if kind in entry:
                raise InputError(f"frame {m.group(1)} of {root} has two colour images, "
                                 f"{entry[kind].name} and {path.name}: expected one")
            entry[kind] = path
    if not files:
        raise InputError(
            f"{root} is not an RGB-D sequence: expected frame-NNNNNN.color.jpg|color.png, "
            ".depth.png and .pose.txt files with camera-intrinsics.txt (7-Scenes), or rgb.txt, "
            "depth.txt and groundtruth.txt (TUM RGB-D)"
        )
    K = read_intrinsics(Path(intrinsics) if intrinsics is not None else root / INTRINSICS_FILE)
    frames = []
    for number in _select(sorted(files), selection):
        entry = files[number]
        for kind, name in (("color", "color.jpg"), ("depth", "depth.png"), ("pose", "pose.txt")):
            if kind not in entry:
                raise InputError(
                    f"{root / f'frame-{number:06d}.{name}'} is missing: every frame needs "
                    "its colour image (.color.jpg or .color.png), .depth.png and .pose.txt"
                )
        frames.append(RgbdFrame(number, bop_frame_stamp_ns(number, rate_hz), entry["color"],
                                entry["depth"], read_pose_file(entry["pose"]),
                                str(entry["pose"])))  # fmt: skip
    if not frames:
        raise InputError(f"{root} has {len(files)} frames and the selection (start, stride, "
                         f"max_frames) = {selection} keeps none")
    return RgbdSequence(root, "7scenes", K, tuple(frames))


def read_intrinsics(path: Path) -> np.ndarray:
    """The 3x3 camera matrix K in a text file (three rows of three numbers) [px].

    Raises:
        InputError: the file is missing, not three rows of three numbers, or not a pinhole K
            (finite, fx and fy > 0, last row 0 0 1).
    """
    if not path.is_file():
        raise InputError(f"camera intrinsics {path} not found: expected a text file with the "
                         "3x3 camera matrix K (fx 0 cx / 0 fy cy / 0 0 1)")
    K = _read_matrix(path, (3, 3), "the 3x3 camera matrix K")
    if not (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0
            and np.allclose(K[2], [0.0, 0.0, 1.0])):  # fmt: skip
        raise InputError(f"camera intrinsics {path}: expected a pinhole K with finite fx, fy "
                         f"> 0 and rows (fx s cx / 0 fy cy / 0 0 1), got {K.tolist()}")
    return K


def read_pose_file(path: Path) -> np.ndarray:
    """The 4x4 camera-to-world transform in a 7-Scenes ``pose.txt`` (metres), checked.

    Raises:
        InputError: not four rows of four numbers, or not a rigid transform (`check_pose`).
    """
    T = _read_matrix(path, (4, 4), "a 4x4 camera-to-world matrix")
    check_pose(T, str(path))
    return T


def check_pose(T_world_cam: np.ndarray, source: str) -> None:
    """Raise `InputError` naming `source` unless `T_world_cam` (4, 4) is a rigid transform.

    `se3.check_rigid_transform` to within `ROTATION_TOL` (pose files print a rotation to a few
    digits: their matrices are rotations only to round-off; the quaternion written to the bag
    is exactly one).
    """
    check_rigid_transform(T_world_cam, f"pose {source}", ROTATION_TOL)


def _read_matrix(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    try:
        text = path.read_text()
        rows = [[float(v) for v in line.split()] for line in text.splitlines() if line.strip()]
    except (UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path}: expected {what} as rows of numbers: "
                         f"{' '.join(str(err).split())}") from err  # fmt: skip
    if len(rows) != shape[0] or any(len(row) != shape[1] for row in rows):
        raise InputError(f"{path}: expected {what} ({shape[0]} rows of {shape[1]} numbers), "
                         f"got {len(rows)} rows of {[len(row) for row in rows]} numbers")
    return np.array(rows, dtype=np.float64)


def _seconds_to_ns(text: str) -> int:
    """``"1305031102.175304"`` s -> ns, exactly (a float64 loses the last digits)."""
    return int(Decimal(text) * 1_000_000_000)


def _read_stamped_lines(path: Path, columns: int) -> list[tuple[int, list[str], int]]:
    """(stamp ns, the other columns, line number) of each non-comment line, in time order."""
    if not path.is_file():
        raise InputError(f"TUM RGB-D sequence {path.parent} has no {path.name}: expected "
                         "rgb.txt, depth.txt and groundtruth.txt")
    out = []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: expected text, got bytes that are not UTF-8") from err
    for k, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = line.split()
        try:
            if len(cells) != columns:
                raise ValueError(f"{len(cells)} columns")
            stamp = _seconds_to_ns(cells[0])
        except (ValueError, InvalidOperation) as err:
            raise InputError(f"{path}:{k}: expected {columns} columns starting with a time stamp "
                             f"in seconds, got {line.strip()!r} ({err})") from err
        out.append((stamp, cells[1:], k))
    if not out:
        raise InputError(f"{path} lists nothing")
    return sorted(out, key=lambda item: item[0])


def _nearest(stamps: np.ndarray, stamp: int, max_dt_ns: int) -> int | None:
    """Index of the stamp in sorted `stamps` nearest to `stamp` if within `max_dt_ns`."""
    i = int(np.searchsorted(stamps, stamp))
    best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)),
               key=lambda j: abs(int(stamps[j]) - stamp))  # fmt: skip
    return best if abs(int(stamps[best]) - stamp) <= max_dt_ns else None


def _tum_pose(cells: list[str], source: str) -> np.ndarray:
    """4x4 T_world_cam from ``tx ty tz qx qy qz qw`` (a unit quaternion to `ROTATION_TOL`)."""
    try:
        values = np.array([float(c) for c in cells], dtype=np.float64)
    except ValueError as err:
        raise InputError(f"pose {source}: expected tx ty tz qx qy qz qw, got {cells}") from err
    t, q = values[:3], values[3:]
    if not np.all(np.isfinite(values)) or abs(np.linalg.norm(q) - 1.0) > ROTATION_TOL:
        raise InputError(f"pose {source}: expected a finite position and a unit quaternion "
                         f"(qx qy qz qw), got {values.tolist()}")
    x, y, z, w = q / np.linalg.norm(q)
    T = np.eye(4)
    T[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    T[:3, 3] = t
    return T


def _read_tum(root: Path, intrinsics: str | Path | None,
              selection: tuple[int, int, int | None], max_dt_s: float) -> RgbdSequence:
    if not max_dt_s >= 0 or not np.isfinite(max_dt_s):
        raise ConfigError(f"max_dt_s must be a finite number >= 0, got {max_dt_s}")
    if intrinsics is None:
        raise InputError(
            f"{root} is a TUM RGB-D sequence, whose folder does not hold the camera "
            "intrinsics (fr1, fr2 and fr3 differ): pass them as a text file with the 3x3 K "
            "(--intrinsics FILE, e.g. fr1: 517.3 0 318.6 / 0 516.5 255.3 / 0 0 1)"
        )
    K = read_intrinsics(Path(intrinsics))
    rgb = _read_stamped_lines(root / "rgb.txt", 2)
    depth = _read_stamped_lines(root / "depth.txt", 2)
    gt_path = root / "groundtruth.txt"
    gt = _read_stamped_lines(gt_path, 8)
    depth_stamps = np.array([item[0] for item in depth], dtype=np.int64)
    gt_stamps = np.array([item[0] for item in gt], dtype=np.int64)
    max_dt_ns = round(max_dt_s * 1e9)
    matched: list[tuple[int, int, int]] = []  # (rgb, depth, groundtruth) indices
    for r, (stamp, _, _) in enumerate(rgb):
        d = _nearest(depth_stamps, stamp, max_dt_ns)
        g = _nearest(gt_stamps, stamp, max_dt_ns)
        if d is not None and g is not None:
            matched.append((r, d, g))
    chosen = _select(matched, selection)
    if not chosen:
        raise InputError(
            f"{root}: {len(matched)} of {len(rgb)} colour images have a depth image and a pose "
            f"within {max_dt_s:g} s, and the selection (start, stride, max_frames) = "
            f"{selection} keeps none of them"
        )
    frames = []
    for r, d, g in chosen:
        source = f"{gt_path}:{gt[g][2]}"
        T = _tum_pose(gt[g][1], source)
        check_pose(T, source)
        frames.append(RgbdFrame(r, rgb[r][0], root / rgb[r][1][0], root / depth[d][1][0],
                                T, source))  # fmt: skip
    return RgbdSequence(root, "tum", K, tuple(frames), skipped=len(rgb) - len(matched))


def iter_rgbd_images(
    sequence: RgbdSequence,
) -> Iterator[tuple[RgbdFrame, np.ndarray, np.ndarray]]:
    """Each frame with its images: (frame, rgb (H, W, 3) uint8, depth (H, W) float32 m).

    Depth is the PNG's value / `RgbdSequence.depth_units_per_m`, NaN where there is no
    measurement (`DEPTH_INVALID`; REP 118). It must have the colour image's size: the depth is
    taken as registered to the colour camera. (7-Scenes' colour and depth come from two sensors
    and are not perfectly registered: edges can be off by a few pixels; this is not corrected.)

    Raises:
        InputError: a file is missing or does not decode, depth is not single-channel uint16,
            depth and colour differ in size, or the size changes within the sequence.
    """
    size: tuple[int, int] | None = None
    first = ""
    for frame in sequence.frames:
        bgr = cv2.imread(str(frame.color_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"colour image {frame.color_path} is missing or does not decode")
        raw = cv2.imread(str(frame.depth_path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise InputError(f"depth image {frame.depth_path} is missing or does not decode")
        if raw.dtype != np.uint16 or raw.ndim != 2:
            channels = 1 if raw.ndim == 2 else raw.shape[2]
            raise InputError(f"depth image {frame.depth_path}: expected single-channel uint16 "
                             f"(depth units), got {channels}-channel {raw.dtype}")
        h, w = bgr.shape[:2]
        if raw.shape != (h, w):
            raise InputError(
                f"depth image {frame.depth_path} is {raw.shape[1]}x{raw.shape[0]}, its colour "
                f"image {frame.color_path.name} {w}x{h}: expected depth registered to the "
                "colour image (the same size)"
            )
        if size is None:
            size, first = (w, h), frame.color_path.name
        elif size != (w, h):
            raise InputError(f"colour image {frame.color_path} is {w}x{h}, the sequence's first "
                             f"({first}) {size[0]}x{size[1]}: expected one image size")
        depth = raw.astype(np.float32) / np.float32(sequence.depth_units_per_m)
        depth[np.isin(raw, DEPTH_INVALID)] = np.nan
        yield frame, np.ascontiguousarray(bgr[:, :, ::-1]), depth

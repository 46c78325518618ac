# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Convert an RGB-D sequence folder with camera poses (7-Scenes or TUM RGB-D) into a rosbag2.

Per frame, all with the frame's stamp (`datasets.rgbd`: 7-Scenes frame ``n`` at
``1 s + n / rate``, TUM at its colour image's time stamp):

- ``/camera/image_raw`` sensor_msgs/Image ``rgb8`` and ``/camera/camera_info`` (the folder's K,
  or with `focal_px` its K with fx = fy = `focal_px`; ``plumb_bob`` with zero distortion),
  header.frame_id `frame_id`;
- ``/camera/depth/ground_truth`` sensor_msgs/Image ``32FC1`` metres, NaN where the sensor has no
  measurement (REP 118), the colour image's size and frame_id, on the colour camera's pixel
  grid, as `eval` expects its depth ground truth: the sensor depth as it is (taken as registered
  to the colour camera) unless `focal_px` gives the colour camera another K than the intrinsics
  file's; then 7-Scenes' depth images keep the file's K and are moved onto the colour grid
  (`depth_on_colour_grid`), while TUM's, registered to the colour camera by the dataset, are
  written as they are (`depth_registered` decides for either layout);
- ``/camera/pose`` geometry_msgs/PoseStamped: the camera optical frame in the world frame
  (camera-to-world, as the pose file gives it), header.frame_id `world_frame`.

The depth is written as 32FC1 metres (not the files' 16-bit units) so that both layouts (mm and
1/5000 m) arrive in one unit, as the synthetic bags write it; float32 holds every 16-bit value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvc_perception.bag.io import AtomicBagWriter
from dvc_perception.datasets.rgbd import RgbdSequence, iter_rgbd_images, read_rgbd_sequence
from dvc_perception.errors import ConfigError
from dvc_perception.synth.synth_bag import (
    CAMERA_INFO_TOPIC,
    CAMERA_POSE_TOPIC,
    DEPTH_TOPIC,
    IMAGE_TOPIC,
)


def depth_on_colour_grid(depth_m: np.ndarray, K_depth: np.ndarray, K_colour: np.ndarray
                         ) -> np.ndarray:
    """A depth image (H, W) [m] of a camera with `K_depth`, seen by one with `K_colour`.

    The two cameras are taken to share their centre and orientation (only the intrinsics
    differ: a homography ``K_depth K_colour^-1`` maps a colour pixel to its depth pixel, the
    depth value is unchanged). Each colour pixel takes the nearest depth pixel (no blending
    across depth edges); NaN where that falls outside the depth image or has no measurement.
    The same array when the two K are equal.
    """
    if np.array_equal(K_depth, K_colour):
        return depth_m
    h, w = depth_m.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    H = np.asarray(K_depth, np.float64) @ np.linalg.inv(np.asarray(K_colour, np.float64))
    x = H[0, 0] * u + H[0, 1] * v + H[0, 2]
    y = H[1, 0] * u + H[1, 1] * v + H[1, 2]
    z = H[2, 0] * u + H[2, 1] * v + H[2, 2]
    xi, yi = np.floor(x / z + 0.5), np.floor(y / z + 0.5)
    inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
    out = np.full((h, w), np.nan, np.float32)
    out[inside] = depth_m[yi[inside].astype(np.int64), xi[inside].astype(np.int64)]
    return out


def depth_is_registered(layout: str, depth_registered: bool | None) -> bool:
    """Whether a sequence's depth images are on its colour camera's grid.

    `depth_registered` when given, else by layout: TUM's depth is registered to its colour
    images, 7-Scenes' is the depth camera's own.
    """
    return layout == "tum" if depth_registered is None else depth_registered


def rgbd_sequence_to_bag(
    seq_dir: str | Path,
    out: str | Path,
    *,
    storage: str = "mcap",
    frame_id: str = "camera_optical_frame",
    world_frame: str = "world",
    intrinsics: str | Path | None = None,
    start: int = 0,
    stride: int = 1,
    max_frames: int | None = None,
    rate_hz: float | None = None,
    max_dt_s: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    perturb_m: float = 0.0,
    perturb_deg: float = 0.0,
    seed: int = 0,
    focal_px: float | None = None,
    depth_registered: bool | None = None,
) -> RgbdSequence:
    """Write the bag; returns the sequence as read (`frames`: the frames written).

    The returned sequence's `K` is the intrinsics file's, also with `focal_px`.

    Args:
        seq_dir: the sequence folder (7-Scenes or TUM layout, detected by its files).
        out: output bag directory (written atomically: nothing is left on an error).
        storage: ``mcap`` or ``sqlite3``.
        frame_id: camera optical frame of the image, camera_info and depth headers.
        world_frame: header.frame_id of the camera poses.
        intrinsics: text file with the 3x3 K; required for TUM (`read_rgbd_sequence`).
        start: frames skipped at the beginning.
        stride: keep every `stride`-th frame.
        max_frames: at most this many frames (None: all).
        rate_hz: 7-Scenes stamping rate [Hz] (default 30); not for TUM.
        max_dt_s: TUM colour-depth-pose association tolerance [s] (default 0.02); not for
            7-Scenes.
        overwrite: replace an existing bag at `out` (only once the new one is complete).
        progress: show a progress bar (stderr).
        perturb_m: each written camera pose is moved by exactly this much [m] in a random
            direction (per frame; `refine.evaluation.perturb_pose`), to measure how depth from
            motion copes with noisy odometry; 0: exact.
        perturb_deg: likewise, rotated by exactly this much [deg] about its centre.
        seed: seed of the one generator drawing the perturbations' directions.
        focal_px: write fx = fy = `focal_px` [px] in camera_info instead of the intrinsics
            file's (principal point and skew unchanged): a focal length measured from the
            images (`dvc-perception estimate-focal`) when the file's is only nominal. None: the
            file's K, unchanged. The depth images keep the file's K (7-Scenes: the file's K is
            the depth camera's, which its trajectory was computed with) and are moved onto the
            colour grid (`depth_on_colour_grid`).
        depth_registered: True: the depth images are already on the colour camera's grid (e.g.
            a camera's aligned depth) and are written as they are, whatever `focal_px` says;
            False: they have the intrinsics file's K; None: by layout (TUM's depth is
            registered to its colour images, 7-Scenes' is not).

    Raises:
        ConfigError: an empty frame id, a bad selection, rate or tolerance, a `focal_px` that
            is not a finite number > 0.
        InputError: bad input files (`read_rgbd_sequence`, `iter_rgbd_images`), naming them.
        BagError: the bag exists or cannot be written.
    """
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import PoseStamped
    from std_msgs.msg import Header
    from tqdm import tqdm

    from dvc_perception.ros.convert import (
        depth_to_image_msg,
        intrinsics_to_camera_info_msg,
        pose_to_msg,
        rgb_to_image_msg,
    )

    for name, value in (("frame_id", frame_id), ("world_frame", world_frame)):
        if not value.strip():
            raise ConfigError(f"{name} must name a TF frame, got {value!r}")
    if focal_px is not None and not (np.isfinite(focal_px) and focal_px > 0):
        raise ConfigError(f"focal_px: expected a finite focal length > 0 px, got {focal_px}")
    sequence = read_rgbd_sequence(seq_dir, intrinsics=intrinsics, start=start, stride=stride,
                                  max_frames=max_frames, rate_hz=rate_hz,
                                  max_dt_s=max_dt_s)  # fmt: skip
    registered = depth_is_registered(sequence.layout, depth_registered)
    K = sequence.K
    if focal_px is not None:
        K = K.copy()
        K[0, 0] = K[1, 1] = focal_px
    with AtomicBagWriter(out, storage, overwrite=overwrite) as writer, tqdm(
        total=len(sequence.frames), desc="rgbd2bag", unit="frame", disable=not progress
    ) as bar:
        if perturb_m < 0 or perturb_deg < 0:
            raise ConfigError(f"perturbations: expected >= 0, got {perturb_m} m and "
                              f"{perturb_deg} deg")
        rng = np.random.default_rng(seed)
        for frame, rgb, depth_m in iter_rgbd_images(sequence):
            ns = frame.stamp_ns
            stamp = Time(sec=ns // 10**9, nanosec=ns % 10**9)
            header = Header(stamp=stamp, frame_id=frame_id)
            height, width = depth_m.shape
            writer.write_message(IMAGE_TOPIC, rgb_to_image_msg(rgb, header), ns)
            writer.write_message(CAMERA_INFO_TOPIC, intrinsics_to_camera_info_msg(
                K, width, height, header), ns)  # fmt: skip
            if not registered:
                depth_m = depth_on_colour_grid(depth_m, sequence.K, K)
            writer.write_message(DEPTH_TOPIC, depth_to_image_msg(depth_m, header), ns)
            T = frame.T_world_cam
            if perturb_m > 0 or perturb_deg > 0:
                from dvc_perception.refine.evaluation import perturb_pose

                R, t = perturb_pose(T[:3, :3], T[:3, 3], 1.0, perturb_deg, perturb_m, rng)
                T = np.eye(4)
                T[:3, :3], T[:3, 3] = R, t
            pose = PoseStamped(header=Header(stamp=stamp, frame_id=world_frame),
                               pose=pose_to_msg(T[:3, :3], T[:3, 3]))  # fmt: skip
            writer.write_message(CAMERA_POSE_TOPIC, pose, ns)
            bar.update(1)
    return sequence

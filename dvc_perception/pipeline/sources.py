# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The slots of the pipeline: where 2D keypoints (and, optionally, depth) come from.

A keypoint source finds, in one RGB image, 2D keypoints of known objects together with the
keypoints' 3D coordinates in the object frame and a confidence each. The pipeline turns them into
poses (undistortion, RANSAC + weighted LM PnP, score, covariance), whatever the source: the
fiducial source (`pipeline.fiducial`) and the keypoint network (`pipeline.network`) plug into the
same protocol. A source is an object passed to `Pipeline`; there is no registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from dvc_perception.errors import ShapeError, check_shape


@dataclass(frozen=True)
class KeypointDetection:
    """Keypoints of one object found in one image.

    Attributes:
        object_id: the object's id (a ROS name token).
        keypoints_px: (N, 2) float64 px in the *input* image as captured (distorted unless the
            input is rectified), u right, v down, (0, 0) the centre of the top-left pixel.
        points_obj: (N, 3) float64 m, the same keypoints in the object frame.
        confidence: (N,) float64 in [0, 1], used as PnP weights and in the score.
    """

    object_id: str
    keypoints_px: np.ndarray
    points_obj: np.ndarray
    confidence: np.ndarray

    def __post_init__(self) -> None:
        check_shape(self.keypoints_px, "N,2", name=f"{self.object_id}.keypoints_px")
        n = self.keypoints_px.shape[0]
        check_shape(self.points_obj, f"{n},3", name=f"{self.object_id}.points_obj")
        check_shape(self.confidence, f"{n}", name=f"{self.object_id}.confidence")
        if not (np.all(self.confidence >= 0.0) and np.all(self.confidence <= 1.0)):
            raise ShapeError(f"{self.object_id}.confidence: expected values in [0, 1]")


@runtime_checkable
class KeypointSource(Protocol):
    """Finds object keypoints in an image. Implementations: `FiducialSource`, the network.

    Attributes:
        backend: a short description for /diagnostics, e.g. ``"fiducial:charuco (OpenCV 4.12)"``.
        object_ids: every object id the source can report (checked as ROS names at configure).
    """

    backend: str
    object_ids: tuple[str, ...]

    def detect(self, image_rgb: np.ndarray) -> list[KeypointDetection]:
        """Keypoints of the objects visible in `image_rgb` (H, W, 3) uint8 RGB.

        Returns an empty list when nothing is found; raises `InputError` for an unusable image.
        """
        ...


@runtime_checkable
class DepthSource(Protocol):
    """Predicts metric depth for an image (the depth network, `pipeline.network`)."""

    backend: str

    def estimate(self, image_rgb: np.ndarray, K: np.ndarray) -> np.ndarray:
        """Depth (H, W) float32 m of `image_rgb` (H, W, 3) uint8, NaN where unknown.

        `K` (3, 3) are the undistorted pinhole intrinsics of the image [px].
        """
        ...

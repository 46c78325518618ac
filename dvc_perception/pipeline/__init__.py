# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The per-frame path, ROS-free: sources (network keypoints and depth, fiducials) -> PnP -> poses.

- `pipeline`: ``Pipeline.from_config(...).process(image_rgb, camera, stamp) -> FrameResult``.
- `sources`: the `KeypointSource` / `DepthSource` protocols and `KeypointDetection`.
- `network`: keypoint and depth sources backed by an exported model (through `engines`).
- `fiducial`: chessboard, ArUco grid and ChArUco detection (the one chessboard detector).
"""

from dvc_perception.pipeline.pipeline import FrameResult, ObjectPose, Pipeline

__all__ = ["FrameResult", "ObjectPose", "Pipeline"]

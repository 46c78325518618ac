# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Calibration targets (chessboards) as keypoint sources with exact 3D keypoints."""

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Pluggable keypoint sources of the pipeline (`KeypointSource` protocol) and depth sources."""

from dvc_perception.keypoint_sources.base import DepthSource, KeypointDetection, KeypointSource

__all__ = ["DepthSource", "KeypointDetection", "KeypointSource"]

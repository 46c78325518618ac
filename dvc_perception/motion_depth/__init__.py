# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Metric depth from the camera's own motion (ROS-free): keyframes, pose refinement, plane sweep.

A moving camera with known poses (odometry, TF) sees the scene from several places; the
displacement of each pixel between frames gives its depth, in metres because the poses are. The
path: `keyframes.KeyframeWindow` keeps recent frames and picks the source frames for a reference
frame (a documented baseline rule); `pose_refine.refine_window` corrects the odometry's relative
poses with matched image features (a small bundle adjustment whose scale comes from the
odometry); `sweep.plane_sweep_depth` builds a ZNCC cost over inverse-depth planes, regularises it
with semi-global matching and returns depth and a confidence; `estimator.MotionDepthEstimator`
strings them together for one frame at a time.
"""

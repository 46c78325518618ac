# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Launch `perception_node` with a calibration board as keypoint source (no network needed).

ros2 launch dvc_perception fiducial.launch.py image:=/camera/image_raw \
    camera_info:=/camera/camera_info params_file:=<board yaml>
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

PACKAGE = "dvc_perception"
DEFAULT_PARAMS = "fiducial.yaml"


def generate_launch_description() -> LaunchDescription:
    """perception.launch.py with config/fiducial.yaml as the default parameters file."""
    share = get_package_share_directory(PACKAGE)
    forwarded = ("namespace", "image", "camera_info", "use_sim_time", "log_level")
    args = [
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(share, "config", DEFAULT_PARAMS),
            description="ROS parameters YAML describing the board",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("image", default_value="image", description="image topic"),
        DeclareLaunchArgument(
            "camera_info", default_value="camera_info", description="camera_info topic"
        ),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="sim time"),
        DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
    ]
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "perception.launch.py")),
        launch_arguments={
            "params_file": LaunchConfiguration("params_file"),
            **{name: LaunchConfiguration(name) for name in forwarded},
        }.items(),
    )
    return LaunchDescription([*args, include])

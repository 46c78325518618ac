# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Launch `perception_node`: ros2 launch dvc_perception perception.launch.py [arg:=value ...].

Arguments: namespace, params_file, image, camera_info, backend (overrides
pipeline.network.backend), use_sim_time, log_level; everything else comes from params_file.
FASTDDS_BUILTIN_TRANSPORTS defaults to LARGE_DATA (640x480 images are mostly lost under
best-effort QoS without it); every process that talks to this node (camera driver, RViz, bag
player) must use the same setting, or they do not discover each other.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

PACKAGE = "dvc_perception"
DEFAULT_PARAMS = "perception.yaml"


def generate_launch_description() -> LaunchDescription:
    """The node with its parameters file, remaps and overrides."""
    share = get_package_share_directory(PACKAGE)
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(share, "config", DEFAULT_PARAMS),
            description="ROS parameters YAML of perception_node",
        ),
        DeclareLaunchArgument("image", default_value="image", description="image topic"),
        DeclareLaunchArgument(
            "camera_info", default_value="camera_info", description="camera_info topic"
        ),
        DeclareLaunchArgument(
            "backend",
            default_value="onnxruntime",
            description="network backend: auto, onnxruntime, tensorrt or torch",
        ),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="sim time"),
        DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
    ]
    image = LaunchConfiguration("image")
    node = Node(
        package=PACKAGE,
        executable="perception_node",
        name="perception_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "use_sim_time": ParameterValue(
                    LaunchConfiguration("use_sim_time"), value_type=bool
                ),
                "pipeline.network.backend": LaunchConfiguration("backend"),
            },
        ],
        remappings=[
            ("image", image),
            ("image/compressed", [image, "/compressed"]),
            ("camera_info", LaunchConfiguration("camera_info")),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    transport = SetEnvironmentVariable(
        "FASTDDS_BUILTIN_TRANSPORTS",
        EnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", default_value="LARGE_DATA"),
    )
    return LaunchDescription([*args, transport, node])

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""dvc_perception: object 6-DoF poses and metric depth for ROS 2.

The core (`geometry`, `render`, `models`, `engines`, `pipeline`) imports without rclpy; only
`ros` and `bag` touch ROS. See DESIGN.md for the module map.
"""

__version__ = "0.1.0"

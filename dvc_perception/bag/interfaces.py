# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Message types that rosbags' type stores lack, read from the vendored definitions.

rosbags ships the standard ROS 2 interfaces (tf2_msgs among them) but not vision_msgs. The
definitions dvc_perception publishes are vendored, byte for byte from upstream, in
``ros_interfaces/<package>/msg/*.msg`` (installed to ``share/dvc_perception/ros_interfaces``);
they are parsed here, so bags can hold those types without a ROS install.
"""

from __future__ import annotations

from typing import Any

from dvc_perception.resources import find_share_file

# tf2_msgs is in rosbags' stores already: registering it again checks that the vendored
# definition is the store's (rosbags raises on a different one).
VENDORED_PACKAGES = ("vision_msgs", "tf2_msgs")


def vendored_msg_types() -> dict[str, Any]:
    """Parse trees (for rosbags) of every vendored message, keyed ``pkg/msg/Name``.

    Raises:
        ConfigError: a vendored package's ``msg`` folder is in none of the install locations.
    """
    from rosbags.typesys import get_types_from_msg

    types: dict[str, Any] = {}
    for package in VENDORED_PACKAGES:
        folder = find_share_file(f"ros_interfaces/{package}/msg")
        for path in sorted(folder.glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    return types


def add_vendored_types(typestore: Any) -> Any:
    """Register the vendored messages in a rosbags `typestore`; returns it.

    Raises:
        rosbags.typesys.TypesysError: the store holds one of them with another definition.
    """
    typestore.register(vendored_msg_types())
    return typestore

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""ament_python / pip package definition.

`data_files` installs launch/, config/, models/ and ros_interfaces/ into `share/dvc_perception`,
which is where `dvc_perception.resources` looks for them in a colcon workspace and in a pip
install alike.
"""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "dvc_perception"
HERE = Path(__file__).resolve().parent


def _share_files(folder: str) -> list[tuple[str, list[str]]]:
    """(install dir, files) pairs that mirror `folder` under share/<package>/."""
    out: dict[str, list[str]] = {}
    for path in sorted((HERE / folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(HERE)
            out.setdefault(f"share/{PACKAGE}/{rel.parent.as_posix()}", []).append(rel.as_posix())
    return sorted(out.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "benchmarks"]),
    package_data={PACKAGE: ["py.typed", "engines/data/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *_share_files("launch"),
        *_share_files("config"),
        *_share_files("models"),
        # vendored vision_msgs / tf2_msgs definitions: dvc_perception.bag registers them in rosbags
        *_share_files("ros_interfaces"),
    ],
    python_requires=">=3.10",
    # Ranges a robot can satisfy (Humble: Python 3.10, numpy 1.x; Jetson torch from NVIDIA).
    # Exact pins for CI live in requirements/dev.txt only.
    install_requires=[
        "numpy>=1.21",
        "torch>=1.13",
        "opencv-python-headless>=4.7",
        "pyyaml>=5.4",
        "tqdm>=4.60",
        "numba>=0.57",  # the compiled PnP solver and hard rasterizer (torch fallback without)
    ],
    extras_require={
        "test": ["pytest"],
        "onnx": ["onnx>=1.14", "onnxruntime>=1.15"],
        "bag": ["rosbags>=0.10"],
    },
    zip_safe=True,
    maintainer="dvc_perception maintainers",
    maintainer_email="maintainers@dvc-perception.invalid",
    description="Object poses and metric depth for ROS 2 with a differentiable PnP layer.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "dvc-perception = dvc_perception.cli:main",
            "perception_node = dvc_perception.ros.perception_node:main",
        ],
    },
)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Readers of public datasets in their own layout (no ROS, no bags): `bop`, `rgbd`."""

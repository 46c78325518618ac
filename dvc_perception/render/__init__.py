# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Meshes, rasterization and synthetic training data (no ROS imports).

- `mesh`: ``load_mesh(path, unit) -> Mesh`` (PLY / OBJ + texture, metres, validated).
- `objects`: ``load_object(yaml) -> ObjectDescription`` (``config/objects/<id>.yaml``: mesh,
  symmetries, diameter, 3D keypoints); `demo_object` generates the shipped demo mesh.
- `raster`: ``render(meshes, poses, K, width, height, soft=False) -> RenderResult`` (hard
  z-buffer, or the DIB-R-style differentiable mode); `raster_numba`: the compiled hard path.
- `synth`: ``SceneSampler(objects, SynthConfig(), seed).sample(i) -> SynthFrame``,
  ``write_shards`` / ``load_shards``; `synth_bag`: ``write_bag`` (rosbag2 via `rosbags`).
"""

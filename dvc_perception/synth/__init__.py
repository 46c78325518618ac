# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Synthetic training data from meshes (no ROS imports).

- `scenes`: ``SceneSampler(objects, SynthConfig(), seed).sample(i) -> SynthFrame``.
- `procedural`: procedural textures and meshes (planes, distractors).
- `shards`: ``write_shards`` / ``load_shards`` (compressed npz shards + index).
- `synth_bag`: ``write_bag`` (rosbag2 via `rosbags`) of sampled frames with ground truth.
- `demo_object`: the shipped demo object's mesh and texture.
- `rooms`: synthetic camera sequences in textured rooms (the depth refiner's training data).
"""

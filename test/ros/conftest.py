# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Fixtures of the node tests: a rendered frame of the demo object for the shipped model."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_object_frame():
    """Frame 0 of the demo-object scene the shipped model was made for (`SynthFrame`).

    The scene of `demo.samples.write_demo_object_sample_bag` (seed 7: no training or validation
    seed), one object, unoccluded, 640x480 LM-O intrinsics.
    """
    import dataclasses

    import yaml

    from dvc_perception.render.objects import find_object_yaml, load_object
    from dvc_perception.resources import find_share_file
    from dvc_perception.synth.scenes import SceneSampler, SynthConfig

    values = yaml.safe_load(find_share_file("config/synth_demo_object.yaml").read_text())
    config = dataclasses.replace(SynthConfig.from_mapping(values), sequence=True)
    sampler = SceneSampler([load_object(find_object_yaml("demo_object"))], config, seed=7)
    return sampler.sample(0)

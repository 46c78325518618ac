# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Fixtures of the node tests: the node in its own process, a rendered demo-object frame."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context


def run_node_process(params_file: Path, log_path: Path) -> Iterator[subprocess.Popen]:
    """`dvc-perception run --params-file` in its own process, output to `log_path` (yielded
    once; on exit SIGINT, then kill after 10 s). The process gets ``log_path`` as an attribute.
    """
    log = open(log_path, "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc_perception.cli", "run", "--params-file", str(params_file)],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
    )
    proc.log_path = log_path  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


@pytest.fixture(scope="session")
def node_runner():
    """`run_node_process`, for module fixtures that start the node (``yield from``)."""
    return run_node_process


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


@pytest.fixture
def ctx() -> Iterator[Context]:
    """A private rclpy context for nodes created in the test's own process."""
    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)
    context.destroy()

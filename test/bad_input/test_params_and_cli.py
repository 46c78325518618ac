# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Bad parameters and params files at every entry point: the node's start-up (a real process),
`dvc-perception run`, `replay --params/--param`, runtime changes; and the CLI's error rule
(one line, exit 2; a bug exits 1; `--debug` shows the traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from rclpy.context import Context
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from dvc_perception.bag.io import AtomicBagWriter
from dvc_perception.cli import main
from dvc_perception.errors import ConfigError
from dvc_perception.ros.convert import rgb_to_image_msg
from dvc_perception.ros.perception_node import PerceptionNode, check_ros_arguments

pytestmark = pytest.mark.ros

GOOD = "perception_node:\n  ros__parameters:\n    pipeline: {min_score: 0.6}\n"
PARAMS_FILES = {
    # name: (content or None for "absent", a fragment the error must contain)
    "syntax": ("perception_node:\n  ros__parameters:\n    pipeline: {min_score: [\n",
               "is not valid YAML"),
    "absent": (None, "does not exist"),
    "wrong_node_key": ("other_node:\n  ros__parameters:\n    pipeline: {min_score: 0.9}\n",
                       "no 'perception_node: ros__parameters:'"),
    "misspelt_name": ("perception_node:\n  ros__parameters:\n    pipeline: {min_scor: 0.9}\n",
                      "did you mean 'pipeline.min_score'"),
    "not_a_mapping": ("perception_node:\n  ros__parameters: 5\n", "must be a mapping"),
    "empty": ("", "no 'perception_node: ros__parameters:'"),
}


def _params_file(tmp_path: Path, kind: str) -> Path:
    content, _ = PARAMS_FILES[kind]
    path = tmp_path / f"{kind}.yaml"
    if content is not None:
        path.write_text(content)
    return path


def _one_line_error(text: str, fragment: str) -> None:
    """One error line naming `fragment`; informational lines (replay's topic) may precede."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert "Traceback" not in text, text
    assert len(errors) == 1 and fragment in errors[0], text
    assert lines[-1] == errors[0], text


@pytest.mark.parametrize("kind", ["syntax", "absent", "wrong_node_key", "misspelt_name"])
def test_node_process_refuses_a_bad_params_file_in_one_line(tmp_path, kind):
    path = _params_file(tmp_path, kind)
    out = subprocess.run(
        [sys.executable, "-m", "dvc_perception.ros.perception_node", "--ros-args",
         "--params-file", str(path)],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )
    assert out.returncode == 2, out.stdout + out.stderr
    _one_line_error(out.stderr, PARAMS_FILES[kind][1])
    assert str(path) in out.stderr or kind == "misspelt_name"


@pytest.mark.parametrize("arg, fragment", [
    ("pipeline.min_scor:=0.9", "did you mean 'pipeline.min_score'"),
    ("pipeline.min_score:=high", "expected a float in [0.0, 1.0], got 'high'"),
    ("pipeline.min_score:=3.0", "expected a float in [0.0, 1.0], got 3.0"),
])
def test_node_process_refuses_a_bad_dash_p_override(arg, fragment):
    out = subprocess.run(
        [sys.executable, "-m", "dvc_perception.ros.perception_node", "--ros-args", "-p", arg],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )
    assert out.returncode == 2, out.stdout + out.stderr
    _one_line_error(out.stderr, fragment)


def test_node_process_with_a_bad_choice_fails_start_up_naming_it(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("perception_node:\n  ros__parameters:\n    sync: {mode: bogus}\n")
    out = subprocess.run(
        [sys.executable, "-m", "dvc_perception.ros.perception_node", "--ros-args",
         "--params-file", str(path)],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in text, text
    assert "start-up failed" in text and "sync.mode: expected one of" in text, text


@pytest.mark.parametrize("kind", sorted(PARAMS_FILES))
def test_check_ros_arguments_names_the_file_and_the_problem(tmp_path, kind):
    path = _params_file(tmp_path, kind)
    with pytest.raises(ConfigError) as info:
        check_ros_arguments(["prog", "--ros-args", "--params-file", str(path)])
    assert PARAMS_FILES[kind][1] in str(info.value)


def test_check_ros_arguments_follows_a_renamed_node(tmp_path):
    path = tmp_path / "renamed.yaml"
    path.write_text("front_perception:\n  ros__parameters:\n    pipeline: {min_score: 0.6}\n")
    check_ros_arguments(["prog", "--ros-args", "-r", "__node:=front_perception",
                         "--params-file", str(path)])
    with pytest.raises(ConfigError, match="no 'perception_node: ros__parameters:'"):
        check_ros_arguments(["prog", "--ros-args", "--params-file", str(path)])
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    check_ros_arguments(["prog", "--ros-args", "--params-file", str(good)])  # no error


@pytest.mark.parametrize("kind", ["syntax", "absent", "wrong_node_key", "misspelt_name"])
def test_cli_run_refuses_a_bad_params_file(tmp_path, kind, capsys):
    path = _params_file(tmp_path, kind)
    assert main(["run", "--params-file", str(path)]) == 2
    err = capsys.readouterr().err
    _one_line_error(err, PARAMS_FILES[kind][1])
    assert err.startswith("dvc-perception run: error:")


def test_cli_run_refuses_a_misspelt_param(capsys):
    assert main(["run", "--param", "pipeline.min_scor:=0.9"]) == 2
    _one_line_error(capsys.readouterr().err, "did you mean 'pipeline.min_score'")


# ---------------------------------------------------------------- replay --params / --param
def _tiny_bag(path: Path) -> Path:
    """Two 64x48 frames with camera_info (enough to reach the parameter checks)."""
    with AtomicBagWriter(path, "mcap") as writer:
        for k in range(2):
            ns = 10**9 + k * 10**8
            header = Header(stamp=Time(sec=1, nanosec=k * 10**8), frame_id="cam")
            img = rgb_to_image_msg(np.full((48, 64, 3), 100, np.uint8), header)
            info = CameraInfo(header=header, width=64, height=48, distortion_model="plumb_bob")
            info.k = [50.0, 0.0, 31.5, 0.0, 50.0, 23.5, 0.0, 0.0, 1.0]
            info.d = [0.0] * 5
            writer.write_message("/camera/image_raw", img, ns)
            writer.write_message("/camera/camera_info", info, ns)
    return path


@pytest.fixture(scope="module")
def tiny_bag(tmp_path_factory) -> Path:
    return _tiny_bag(tmp_path_factory.mktemp("bag") / "in")


@pytest.mark.parametrize("kind", ["syntax", "absent", "wrong_node_key", "misspelt_name"])
def test_replay_refuses_a_bad_params_file_and_writes_nothing(tmp_path, tiny_bag, kind, capsys):
    path = _params_file(tmp_path, kind)
    out = tmp_path / "out"
    assert main(["replay", str(tiny_bag), "-o", str(out), "--params", str(path)]) == 2
    _one_line_error(capsys.readouterr().err, PARAMS_FILES[kind][1])
    assert not out.exists()


@pytest.mark.parametrize("arg, fragment", [
    ("pipeline.min_scor:=0.9", "--param: unknown parameter 'pipeline.min_scor' (did you mean "
                               "'pipeline.min_score'?)"),
    ("pipeline.min_score:=high", "expected a float in [0.0, 1.0], got 'high'"),
    ("pipeline.min_score:=3.0", "expected a float in [0.0, 1.0], got 3.0"),
    ("sync.mode:=bogus", "sync.mode: expected one of ['exact', 'approximate', 'latest']"),
    ("pipeline.min_score:=[", "the value is not a YAML scalar"),
    ("pipeline.min_score", "expected NAME:=VALUE"),
])
def test_replay_refuses_a_bad_param_override(tmp_path, tiny_bag, arg, fragment, capsys):
    out = tmp_path / "out"
    assert main(["replay", str(tiny_bag), "-o", str(out), "--param", arg]) == 2
    _one_line_error(capsys.readouterr().err, fragment)
    assert not out.exists()


def test_replay_with_good_overrides_still_runs(tmp_path, tiny_bag, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    out = tmp_path / "out"
    rc = main(["replay", str(tiny_bag), "-o", str(out), "--params", str(good),
               "--param", "sync.mode:=exact"])
    assert rc == 0, capsys.readouterr().err
    assert (out / "metadata.yaml").is_file()


# ---------------------------------------------------------------- the node in this process
@pytest.fixture
def ctx():
    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def test_an_untyped_configure_error_keeps_its_cause(ctx):
    def broken_factory(config):
        raise KeyError("model_kind")

    node = PerceptionNode(context=ctx, pipeline_factory=broken_factory,
                          parameter_overrides=[Parameter("torch_threads", value=0)])
    try:
        assert node.startup_unexpected
        assert "unexpected KeyError" in node.startup_error and "model_kind" in node.startup_error
    finally:
        node.destroy_node()


def test_runtime_set_of_a_choice_outside_its_list_is_refused(ctx):
    node = PerceptionNode(context=ctx, parameter_overrides=[
        Parameter("autostart", value=False), Parameter("torch_threads", value=0)])
    try:
        for name, value in (("sync.mode", "bogus"), ("pipeline.keypoint_source", "nets"),
                            ("pipeline.network.backend", "bogus")):
            [result] = node.set_parameters([Parameter(name, value=value)])
            assert not result.successful and name in result.reason, (name, result.reason)
        assert node.get_parameter("sync.mode").value == "approximate"
    finally:
        node.destroy_node()


# ---------------------------------------------------------------- the CLI's error rule
def test_debug_shows_the_traceback_before_or_after_the_sub_command(tmp_path, tiny_bag):
    for argv in (["--debug", "replay", str(tiny_bag), "-o", str(tmp_path / "a"),
                  "--param", "pipeline.min_scor:=1"],
                 ["replay", str(tiny_bag), "-o", str(tmp_path / "b"), "--param",
                  "pipeline.min_scor:=1", "--debug"]):
        with pytest.raises(ConfigError, match="did you mean"):
            main(argv)


def test_an_os_error_on_a_user_path_is_one_line_naming_the_file(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    # the output directory would be inside a regular file: the OS refuses it
    rc = main(["synth", "--out", str(a_file / "shards"), "--frames", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    _one_line_error(err, str(a_file))


def test_an_unexpected_error_is_one_line_that_says_it_is_a_bug(monkeypatch, capsys):
    import dvc_perception.commands.export as export_cmd

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(export_cmd, "run", broken)
    assert main(["export", "x.pt"]) == 1
    err = capsys.readouterr().err
    _one_line_error(err, "unexpected ZeroDivisionError: division by zero")
    assert "--debug" in err and "bug" in err

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Launch files: checked statically (AST) everywhere, imported only where launch_ros exists."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml

from dvc_perception.config import ros_parameters_section

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) == name
    ]


def _kw(call: ast.Call, key: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == key), None)


def _const(node: ast.AST | None, tree: ast.AST) -> str:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):  # a module-level constant
        for n in ast.walk(tree):
            targets = getattr(n, "targets", [])
            if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == node.id for t in targets):
                return n.value.value
    raise AssertionError(f"not a constant: {ast.dump(node) if node else None}")


def _setup_console_scripts() -> set[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "console_scripts":
                    scripts = {e.value.split("=")[0].strip() for e in v.elts}
    return scripts


@pytest.mark.parametrize("name", ["perception.launch.py", "fiducial.launch.py"])
def test_launch_file_statically(name):
    tree = ast.parse((LAUNCH / name).read_text())
    declared = {_const(c.args[0], tree) for c in _calls(tree, "DeclareLaunchArgument")}
    used = {
        _const(c.args[0], tree)
        for c in _calls(tree, "LaunchConfiguration")
        if not (isinstance(c.args[0], ast.Name) and c.args[0].id == "name")  # loop variable
    }
    for comp in ast.walk(tree):  # LaunchConfiguration(name) inside comprehensions over a tuple
        if isinstance(comp, ast.Assign) and getattr(comp.targets[0], "id", "") == "forwarded":
            used |= {e.value for e in comp.value.elts}
    assert used <= declared, f"undeclared launch arguments {used - declared}"
    assert {"namespace", "params_file", "use_sim_time", "image", "camera_info"} <= declared
    for node in _calls(tree, "Node"):
        assert _const(_kw(node, "executable"), tree) in _setup_console_scripts()
        assert _const(_kw(node, "package"), tree) == "dvc_perception"
    params = _const(
        next(n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "DEFAULT_PARAMS"),
        tree,
    )
    params_path = REPO / "config" / params
    assert params_path.is_file()
    section = ros_parameters_section(yaml.safe_load(params_path.read_text()))
    assert section, params
    if name == "fiducial.launch.py":
        assert (LAUNCH / "perception.launch.py").is_file()
    # setup.py installs launch/ and config/ into share/ (data_files from _share_files)
    setup_src = (REPO / "setup.py").read_text()
    assert '_share_files("launch")' in setup_src and '_share_files("config")' in setup_src


def test_perception_launch_overrides_only_declared_parameters():
    from dvc_perception.ros.params import parameter_defaults

    tree = ast.parse((LAUNCH / "perception.launch.py").read_text())
    node = _calls(tree, "Node")[0]
    overrides = [d for d in ast.walk(_kw(node, "parameters")) if isinstance(d, ast.Dict)]
    keys = {k.value for d in overrides for k in d.keys}
    assert keys <= set(parameter_defaults()) | {"use_sim_time"}


@pytest.mark.parametrize("name", ["perception.launch.py", "fiducial.launch.py"])
def test_launch_file_imports_where_launch_ros_exists(name):
    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch_ros is not installed (it is not on PyPI; needs a ROS install)")
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.generate_launch_description)

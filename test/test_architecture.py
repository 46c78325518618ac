# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Imports point one way: the ROS-free core never imports the edge (ros, bag, commands, cli, demo)
or training.

Every module's AST is read (import statements at any depth, inside functions too, and string
literals handed to ``importlib.import_module`` / ``__import__``), so a lazy import cannot hide
an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dvc_perception"
#: The edge and training: only they (and each other, as listed below) may import these.
UPPER = ("ros", "bag", "commands", "cli", "train", "demo")
#: Which upper parts each upper part may import (the rest of the package is always allowed).
ALLOWED_UPWARD = {
    "ros": set(),
    "bag": {"ros"},  # replay runs the node's own per-frame code
    "train": set(),
    "demo": {"bag", "ros"},  # the sample jobs replay and evaluate bags
    "commands": {"ros", "bag", "train", "demo"},
    "cli": {"commands"},
}
#: Lower layers that must not import the per-frame pipeline either.
BELOW_PIPELINE = ("geometry", "render", "models", "engines", "synth", "datasets", "refine",
                  "motion_depth")
#: Parts that may import only the listed parts of the package (besides themselves).
ONLY_FROM = {
    "refine": {"geometry", "render", "errors", "config_utils"},
    "motion_depth": {"errors", "geometry"},
}


def _part(module: str) -> str | None:
    """The top-level part of the package a dotted module name is in ("geometry", "cli", ...)."""
    parts = module.split(".")
    if parts[0] != "dvc_perception" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    here = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this package
                base = here[: len(here) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append((node.lineno, arg.value))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_scanner_sees_lazy_and_importlib_imports(tmp_path):
    probe = PACKAGE / "geometry" / "_probe_for_test.py"
    probe.write_text("import importlib\n\ndef f():\n    from dvc_perception.bag import io\n"
                     "    return importlib.import_module('dvc_perception.ros.convert')\n")
    try:
        names = {m for _, m in _imports(probe)}
    finally:
        probe.unlink()
    assert "dvc_perception.bag.io" in names and "dvc_perception.ros.convert" in names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path):
    rel = path.relative_to(PACKAGE)
    own = rel.parts[0].removesuffix(".py") if rel.parts else ""
    bad = []
    for line, module in _imports(path):
        target = _part(module)
        if target is None or target == own:
            continue
        if target in UPPER and target not in ALLOWED_UPWARD.get(own, set()):
            bad.append(f"line {line}: {module}")
        if own in BELOW_PIPELINE and target == "pipeline":
            bad.append(f"line {line}: {module} (below the pipeline)")
        if own in ONLY_FROM and target not in ONLY_FROM[own]:
            bad.append(f"line {line}: {module} ({own} may import only {sorted(ONLY_FROM[own])})")
    assert not bad, f"{rel} imports upward: {bad}"

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Packaging: shipped files are found alike in a checkout, a pip install and a colcon install.

The wheel and colcon tests build from a copy of the source tree (so a stale ``build/`` in the
checkout cannot leak into what they check) and run the installed package in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from dvc_perception.resources import find_share_file

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SHIPPED_DIRS = ("launch", "config", "models")
# Top-level folders of a checkout that are not package sources (used only without git).
NOT_SOURCE = {".git", ".venv", ".venv-jazzy", "build", "install", "log", ".pytest_cache",
              ".ruff_cache", ".mypy_cache", "out", "runs", "data", ".whl", ".device"}
# Import every module the probe needs from the install under test, never from the checkout.
PROBE = """
import json, sys
import dvc_perception
from dvc_perception.resources import find_share_file
print(json.dumps({"module": dvc_perception.__file__,
                  "readme": str(find_share_file("config/README.md")),
                  "package_xml": str(find_share_file("package.xml"))}))
"""


def _shipped_files() -> list[str]:
    """Files under launch/, config/, models/ in the checkout, relative to the repo."""
    return sorted(
        p.relative_to(REPO).as_posix()
        for d in SHIPPED_DIRS if (REPO / d).is_dir()
        for p in (REPO / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )


def _source_files() -> list[str]:
    """Files a clone would hold: git's tracked and untracked-but-not-ignored files (so no venv,
    build output or cache, whatever it is called); without git, all but NOT_SOURCE."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, check=True, timeout=60,
        ).stdout.decode()
        return [f for f in out.split("\0") if f and (REPO / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        return [
            p.relative_to(REPO).as_posix() for p in REPO.rglob("*")
            if p.is_file() and p.relative_to(REPO).parts[0] not in NOT_SOURCE
            and "__pycache__" not in p.parts
        ]


def _source_copy(tmp: Path) -> Path:
    src = tmp / "src" / "dvc_perception"
    for rel in _source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    return src


def _probe(python: str | Path, env: dict[str, str], cwd: Path) -> dict[str, str]:
    import json

    out = subprocess.run([str(python), "-c", PROBE], env=env, cwd=cwd, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _clean_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "AMENT_PREFIX_PATH", "DVC_SHARED_DATA", "COLCON_PREFIX_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_source_checkout_finds_shipped_files() -> None:
    readme = find_share_file("config/README.md")
    assert readme == REPO / "config" / "README.md"
    assert find_share_file("package.xml") == REPO / "package.xml"
    for rel in _shipped_files():
        assert find_share_file(rel) == REPO / rel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_copy(tmp)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (whl,) = (tmp / "dist").glob("dvc_perception-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_holds_share_files_and_entry_points(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = zf.read(entry_points).decode()
    data = "dvc_perception-0.1.0.data/data/"
    expected = [
        "share/dvc_perception/package.xml",
        "share/ament_index/resource_index/packages/dvc_perception",
        *(f"share/dvc_perception/{rel}" for rel in _shipped_files()),
    ]
    missing = [e for e in expected if data + e not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert "dvc_perception/py.typed" in names
    assert "dvc_perception/geometry/camera.py" in names
    assert not any(n.startswith(("test/", "benchmarks/")) for n in names)
    assert "[console_scripts]" in scripts
    assert "dvc-perception = dvc_perception.cli:main" in scripts
    assert "perception_node = dvc_perception.ros.perception_node:main" in scripts


@pytest.mark.slow
def test_pip_install_finds_shipped_files(wheel: Path, tmp_path: Path) -> None:
    # A bare venv: the probe needs only the standard library and the package itself.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
         "-q", str(wheel)], capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    got = _probe(py, _clean_env(), cwd=tmp_path)
    share = (venv / "share" / "dvc_perception").resolve()
    assert Path(got["module"]).resolve().is_relative_to(venv.resolve())
    assert Path(got["readme"]).resolve() == share / "config" / "README.md"
    assert Path(got["package_xml"]).resolve() == share / "package.xml"
    assert (venv / "bin" / "dvc-perception").is_file()
    assert (venv / "bin" / "perception_node").is_file()


@pytest.mark.slow
def test_colcon_build_installs_share_and_scripts(tmp_path: Path) -> None:
    colcon = VENV_BIN / "colcon"
    if not colcon.is_file():
        pytest.skip("colcon is not installed in this environment (requirements/dev.txt has it)")
    src = _source_copy(tmp_path)
    env = _clean_env()
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # colcon builds with this python
    out = subprocess.run(
        [str(colcon), "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(src),
         "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
         "--merge-install", "--event-handlers", "console_direct-"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    install = tmp_path / "install"
    share = install / "share" / "dvc_perception"
    assert (share / "package.xml").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages"
            / "dvc_perception").is_file()
    for rel in _shipped_files():
        assert (share / rel).is_file(), rel
    # setup.cfg puts the console scripts where `ros2 run dvc_perception ...` looks.
    assert (install / "lib" / "dvc_perception" / "perception_node").is_file()
    assert (install / "lib" / "dvc_perception" / "dvc-perception").is_file()

    site = Path(sysconfig.get_path("purelib", vars={"base": str(install),
                                                    "platbase": str(install)}))
    assert (site / "dvc_perception" / "__init__.py").is_file(), sorted(install.rglob("*.py"))[:5]
    env["PYTHONPATH"] = str(site)
    env["AMENT_PREFIX_PATH"] = str(install)
    got = _probe(sys.executable, env, cwd=tmp_path)
    assert Path(got["module"]).resolve().is_relative_to(install.resolve())
    assert Path(got["readme"]).resolve() == (share / "config" / "README.md").resolve()
    assert Path(got["package_xml"]).resolve() == (share / "package.xml").resolve()


def test_core_imports_load_neither_rclpy_nor_tensorrt() -> None:
    code = """
import importlib, pkgutil, sys
import dvc_perception.geometry as geometry
for info in pkgutil.iter_modules(geometry.__path__):
    importlib.import_module("dvc_perception.geometry." + info.name)
import dvc_perception.demo.chessboard
import dvc_perception.cli
dvc_perception.cli.build_parser()
bad = sorted(m for m in sys.modules
             if m.split(".")[0] in ("rclpy", "tensorrt", "rosidl_runtime_py", "rmw"))
print("LOADED", bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=REPO, env=_clean_env())
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout

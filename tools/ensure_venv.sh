#!/usr/bin/env bash
# Create or reuse .venv and install what is missing. Reinstalls only when a requirements file
# (or setup.py) changed since the last successful install: their sha256 is kept in .venv/.reqs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# ROS_REQS picks the ROS distribution wheels (Kilted by default, Jazzy for `make test-jazzy`).
ROS_REQS=${ROS_REQS:-requirements/ros-kilted.txt}
files="requirements/dev.txt $ROS_REQS setup.py"
want=$(cat $files | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.reqs" ] && [ "$(cat "$VENV/.reqs")" = "$want" ]; then
  # The vendored interfaces have their own cache (a no-op unless ros_interfaces/ changed).
  VENV="$VENV" tools/build_interfaces.sh
  exit 0
fi
echo "[setup] installing into $VENV (first run, or a requirements file changed)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements/dev.txt -r "$ROS_REQS"
# --no-deps: the pinned requirements above are the environment; do not let an open range
# pull another torch build.
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
# vision_msgs and tf2_msgs have no wheel: build them from ros_interfaces/ (cached; about a
# minute on a 2-core machine the first time).
VENV="$VENV" tools/build_interfaces.sh
# Compile the PnP kernels now (numba, cached on disk next to the sources; about a minute on a
# 2-core machine), so the first `make demo` or node start does not pay for it.
echo "[setup] compiling the PnP solver kernels (numba, once)"
"$VENV/bin/python" -c "from dvc_perception.geometry.pnp import warm_up; warm_up()"
echo "$want" > "$VENV/.reqs"
echo "[setup] done"

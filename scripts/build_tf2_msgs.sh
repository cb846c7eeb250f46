#!/usr/bin/env bash
# Build the tf2_msgs interface package (interfaces/tf2_msgs) into a venv that holds the ROS 2
# Kilted wheels, which then acts as the install prefix. About 10 s. Usage: build_tf2_msgs.sh VENV
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "$1" && pwd)
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
export AMENT_PREFIX_PATH="$venv"          # else: "No 'rosidl_typesupport_c' found"
export PATH="$venv/bin:$PATH"
cmake -S "$root/interfaces/tf2_msgs" -B "$build" \
  -DPython3_EXECUTABLE="$venv/bin/python" \
  -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
  -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > "$build.log" 2>&1 \
  || { tail -30 "$build.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" >> "$build.log" 2>&1 || { tail -30 "$build.log"; exit 1; }
cmake --install "$build" >> "$build.log" 2>&1 || { tail -30 "$build.log"; exit 1; }
rm -f "$build.log"

#!/usr/bin/env bash
# Pip-only setup of dmn_localizer: creates .venv with pinned ROS 2 Kilted wheels, torch (CPU),
# the simulators and test tools, builds tf2_msgs, bond and nav2_msgs (Particle, ParticleCloud,
# SetInitialPose) from their interface definitions into the venv,
# and installs this package in editable mode. Idempotent: when nothing it depends on changed,
# a second run only verifies the environment.
#
# Usage: scripts/setup_venv.sh [--force]      (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="$root/.venv"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
stamp_file="$venv/.dmn_setup_stamp"
force=0
[ "${1:-}" = "--force" ] && force=1

say() { printf '[setup] %s\n' "$*"; }

inputs_hash() {
  cat requirements/*.txt interfaces/cmake/*.cmake interfaces/*/CMakeLists.txt \
      interfaces/*/package.xml interfaces/*/msg/*.msg interfaces/*/srv/*.srv \
      scripts/build_interfaces.sh setup.py setup.cfg | sha256sum | cut -d' ' -f1
}

interface_hash() {  # what an interface package's build depends on
  cat interfaces/cmake/*.cmake scripts/build_interfaces.sh \
      $(find "interfaces/$1" -type f | sort) | sha256sum | cut -d' ' -f1
}

verify() {
  # Import everything the package needs at run time and at test time, in one fresh process.
  AMENT_PREFIX_PATH="$venv" "$venv/bin/python" - <<'PY'
import importlib, sys
mods = ["rclpy", "rclpy.serialization", "sensor_msgs.msg", "geometry_msgs.msg", "nav_msgs.msg",
        "visualization_msgs.msg", "diagnostic_msgs.msg", "std_srvs.srv", "tf2_msgs.msg",
        "nav2_msgs.msg", "nav2_msgs.srv", "bond.msg",
        "torch", "numpy", "cv2", "safetensors", "yaml", "tqdm", "matplotlib", "rosbags",
        "vizdoom", "pybullet", "pytest", "xdist", "hypothesis", "dmn_localizer"]
missing = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as exc:  # report every failure, not only the first
        missing.append(f"{m}: {exc}")
if missing:
    print("[setup] verification FAILED:\n  " + "\n  ".join(missing))
    sys.exit(1)
import torch, rclpy  # noqa: E401
from tf2_msgs.msg import TFMessage
from nav2_msgs.msg import ParticleCloud
print(f"[setup] verified: python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"rclpy + {TFMessage.__name__}, {ParticleCloud.__name__} import, {len(mods)} modules OK")
PY
}

want=$(inputs_hash)
if [ $force -eq 0 ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want" ]; then
  say "nothing changed since the last setup of $venv; verifying only"
  verify
  exit 0
fi

t0=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv with $($py --version 2>&1)"
  "$py" -m venv "$venv"
else
  say "reusing $venv (inputs changed or --force): installing what is missing"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# This machine's pip config names local index folders that may not exist: drop that noise.
quiet_pip() {
  local rc=0
  "${pip[@]}" "$@" > "$venv/.pip.log" 2>&1 || rc=$?
  grep -v "is ignored: it is neither a file nor a directory" "$venv/.pip.log" || true
  rm -f "$venv/.pip.log"
  return $rc
}
# PyPI's plain torch is the multi-GB CUDA build: torch comes from the CPU index when that can be
# reached (TORCH_INDEX_URL=URL for another, e.g. a CUDA index; TORCH_INDEX_URL= for pip's
# configured indexes only, e.g. a local wheel mirror)
torch_index=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
torch_from=()
if [ -n "$torch_index" ]; then
  if "$venv/bin/python" - "$torch_index" <<'PY'
import sys
import urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip('/') + '/torch/', timeout=5).close()
except Exception:
    sys.exit(1)
PY
  then
    torch_from=(--extra-index-url "$torch_index")
    say "torch from $torch_index"
  else
    say "WARNING: $torch_index cannot be reached: torch comes from pip's configured indexes" \
        "(PyPI's is the multi-GB CUDA build; TORCH_INDEX_URL= silences this)"
  fi
fi
say "installing pinned requirements (ros, build, runtime, dev)"
quiet_pip install ${torch_from[@]+"${torch_from[@]}"} -r requirements/ros.txt \
  -r requirements/build.txt -r requirements/runtime.txt -r requirements/dev.txt

# interface packages no registry carries (interfaces/PKG), built once
for pkg in tf2_msgs nav2_msgs bond; do
  if AMENT_PREFIX_PATH="$venv" "$venv/bin/python" -c "import $pkg.msg" 2>/dev/null \
     && [ $force -eq 0 ] && [ -f "$venv/.dmn_built_$pkg" ] \
     && [ "$(cat "$venv/.dmn_built_$pkg")" = "$(interface_hash "$pkg")" ]; then
    say "$pkg already built into the venv"
  else
    say "building $pkg from interfaces/$pkg into the venv"
    t_pkg=$(date +%s)
    bash scripts/build_interfaces.sh "$venv" "$pkg"
    interface_hash "$pkg" > "$venv/.dmn_built_$pkg"
    say "$pkg built in $(( $(date +%s) - t_pkg )) s"
  fi
done

say "installing dmn_localizer in editable mode"
quiet_pip install --no-deps --no-build-isolation -e .

verify
echo "$want" > "$stamp_file"
t1=$(date +%s)
say "done in $((t1 - t0)) s; venv size $(du -sh "$venv" | cut -f1)"
say "activate with: source .venv/bin/activate   (or use make targets)"

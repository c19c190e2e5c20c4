"""Pyflakes-level checks (undefined names, unused imports, redefinitions) over the whole tree,
and the house rule that only sixd_pose_ros/ros/ imports ROS."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROS_IMPORT = re.compile(r"^\s*(import|from)\s+(rclpy|rosidl|sensor_msgs|geometry_msgs|std_msgs|"
                        r"tf2_ros|tf2_msgs|visualization_msgs|diagnostic_msgs|std_srvs|message_filters|"
                        r"cv_bridge|launch|launch_ros)\b", re.M)


def test_pyflakes_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff not installed (make setup installs it)")
    proc = subprocess.run([ruff, "check", "--select", "F", "--no-cache", "sixd_pose_ros", "test", "scripts"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_only_the_ros_package_imports_ros():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "sixd_pose_ros").rglob("*.py")
                 if "ros" not in p.relative_to(ROOT / "sixd_pose_ros").parts[:1]
                 and ROS_IMPORT.search(p.read_text())]
    assert not offenders, f"ROS imported outside sixd_pose_ros/ros/: {offenders}"


def test_training_does_not_import_evaluation():
    """Dependencies point down: evaluation reads the held-out evaluators of training, never the
    other way round."""
    upward = re.compile(r"^\s*(from|import)\s+sixd_pose_ros\.evaluation\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "sixd_pose_ros" / "training").rglob("*.py")
                 if upward.search(p.read_text())]
    assert not offenders, f"training imports evaluation: {offenders}"

"""The tree is an ament_python package that colcon can build and `ros2 run` can find."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What a robot needs at run time besides Python: declared so rosdep installs it.
REQUIRED_EXEC_DEPENDS = {
    "rclpy", "sensor_msgs", "geometry_msgs", "std_msgs", "std_srvs", "visualization_msgs",
    "diagnostic_msgs", "vision_msgs", "tf2_ros_py", "tf2_msgs", "message_filters", "cv_bridge",
    "python3-numpy", "python3-opencv", "python3-scipy",
}


def test_top_level_layout():
    for entry in ("package.xml", "setup.py", "setup.cfg", "launch", "config", "sixd_pose_ros",
                  "resource", "test", "README.md", ".ci/run"):
        assert (ROOT / entry).exists(), f"{entry} missing from the package root"
    assert (ROOT / "resource" / "sixd_pose_ros").is_file()


def test_package_xml_is_format_3_ament_python_with_runtime_deps():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "sixd_pose_ros"
    assert root.find("export/build_type").text == "ament_python"
    exec_deps = {e.text for e in root.findall("exec_depend")} | {e.text for e in root.findall("depend")}
    missing = REQUIRED_EXEC_DEPENDS - exec_deps
    assert not missing, f"package.xml lacks exec_depend on {sorted(missing)}"


def test_package_xml_parses_with_catkin_pkg():
    catkin_pkg = pytest.importorskip("catkin_pkg.package")
    pkg = catkin_pkg.parse_package(str(ROOT / "package.xml"))
    assert pkg.package_format == 3 and pkg.get_build_type() == "ament_python"


def test_setup_py_installs_what_colcon_and_ros2_run_need(tmp_path):
    """Run the same setuptools commands colcon's ament_python build runs, into a temp prefix."""
    build, prefix = tmp_path / "build", tmp_path / "install"
    build.mkdir()
    cmd = [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(build),
           "build", "--build-base", str(build), "install", "--prefix", str(prefix),
           "--record", str(tmp_path / "record.txt"), "--single-version-externally-managed"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    share = prefix / "share" / "sixd_pose_ros"
    assert (prefix / "share/ament_index/resource_index/packages/sixd_pose_ros").is_file()
    assert (share / "package.xml").is_file()
    for sub in ("launch", "config"):
        source = sorted(p.name for p in (ROOT / sub).iterdir() if p.suffix in (".py", ".yaml", ".rviz", ".xml"))
        installed = sorted(p.name for p in (share / sub).iterdir()) if (share / sub).exists() else []
        assert source == installed, f"{sub}/ files not installed into share/: {source} vs {installed}"
    # setup.cfg puts console scripts in lib/<package>, where `ros2 run` looks.
    for script in ("sixd_pose_node", "sixd-pose"):
        assert (prefix / "lib" / "sixd_pose_ros" / script).is_file(), f"{script} not in lib/sixd_pose_ros"
    site = next((prefix / "lib").glob("python3*/site-packages"))
    assert (site / "sixd_pose_ros" / "render" / "rasterizer.py").is_file()
    assert not (site / "test").exists(), "tests must not be installed as a package"
    # Shipped weights and model cards travel with the package (no download on the robot).
    shipped = sorted(p.name for p in (ROOT / "sixd_pose_ros" / "weights").glob("*") if p.is_file())
    installed = sorted(p.name for p in (site / "sixd_pose_ros" / "weights").glob("*")) if shipped else []
    assert shipped == installed, f"weights not installed: {shipped} vs {installed}"


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "sixd_pose_ros.cli", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    for sub in ("synth", "demo", "bench-render"):
        assert sub in proc.stdout

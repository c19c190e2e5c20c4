"""Launch files, checked statically (launch/launch_ros are not installable here): each defines
generate_launch_description, declares its arguments, starts sixd_pose_node of sixd_pose_ros
with a config file that exists; plus the plain-Python helpers they share."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from sixd_pose_ros.ros.launch_support import CONFIG_FILE, RVIZ_FILE, as_bool, node_parameters, parse_objects

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
COMMON_ARGS = {"config", "camera_namespace", "use_sim_time", "rviz"}


def _parse(name):
    tree = ast.parse((ROOT / "launch" / name).read_text(), filename=name)
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    declared = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, "id", None) == "DeclareLaunchArgument"
                and c.args and isinstance(c.args[0], ast.Constant)}
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    keywords = {(k.arg, k.value.value) for c in ast.walk(tree) if isinstance(c, ast.Call) for k in c.keywords
                if isinstance(k.value, ast.Constant)}
    imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    return functions, declared, strings, keywords, imports, tree


@pytest.mark.parametrize("name, extra_args", [
    ("known_model.launch.py", {"objects", "weights_dir"}),
    ("model_free.launch.py", {"objects", "weights_dir"}),
    ("replay.launch.py", {"bag", "rate", "loop"}),
])
def test_launch_file_shape(name, extra_args):
    functions, declared, strings, keywords, imports, _ = _parse(name)
    assert "generate_launch_description" in functions
    assert COMMON_ARGS | extra_args <= declared, sorted(COMMON_ARGS | extra_args - declared)
    assert ("package", "sixd_pose_ros") in keywords and ("executable", "sixd_pose_node") in keywords
    assert {"LaunchDescription", "DeclareLaunchArgument", "Node", "FindPackageShare"} <= imports
    assert CONFIG_FILE in strings and (ROOT / "config" / CONFIG_FILE).is_file()
    assert RVIZ_FILE in strings and (ROOT / "config" / RVIZ_FILE).is_file()
    # Every config file a launch file names must exist in config/ (setup.py installs them).
    for s in strings:
        if s.endswith((".yaml", ".rviz")) and " " not in s:
            assert (ROOT / "config" / s).is_file(), s


def test_modes_and_replay_specifics():
    assert ("MODE", "model_free") in _assignments("model_free.launch.py")
    assert ("MODE", "known_model") in _assignments("known_model.launch.py")
    _, _, strings, _, _, _ = _parse("replay.launch.py")
    assert {"ros2", "bag", "play", "--clock", "--loop"} <= strings
    assert "depth/image_raw" in strings  # the topic the package's own bags use


def _assignments(name):
    tree = _parse(name)[-1]
    return {(t.id, n.value.value) for n in tree.body if isinstance(n, ast.Assign)
            for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}


def test_rviz_config_shows_image_debug_image_markers_and_tf():
    data = yaml.safe_load((ROOT / "config" / RVIZ_FILE).read_text())
    displays = data["Visualization Manager"]["Displays"]
    classes = [d["Class"] for d in displays]
    assert {"rviz_default_plugins/TF", "rviz_default_plugins/MarkerArray", "rviz_default_plugins/Image"} <= set(classes)
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    assert {"/camera/color/image_raw", "/camera/sixd_pose_node/debug_image", "/camera/sixd_pose_node/markers"} <= topics


def test_objects_argument_forms():
    assert parse_objects("") == [] and parse_objects("  ") == []
    assert parse_objects("[/a/drill, /b/mug]") == ["/a/drill", "/b/mug"]
    assert parse_objects("/a/drill,/b/mug") == ["/a/drill", "/b/mug"]
    with pytest.raises(ValueError):
        parse_objects("[unclosed")
    assert as_bool("True") and not as_bool("false")
    with pytest.raises(ValueError, match="use true or false"):
        as_bool("perhaps")


def test_node_parameters_override_only_what_was_given(tmp_path):
    config = str(ROOT / "config" / CONFIG_FILE)
    assert node_parameters(config, mode="known_model", use_sim_time="false") == [
        config, {"mode": "known_model", "use_sim_time": False}]
    params = node_parameters(config, mode="known_model", use_sim_time="true", objects="[/o/drill]",
                             weights_dir="/w", extra={"topics.depth": "depth/image_raw"})
    assert params[1] == {"mode": "known_model", "use_sim_time": True, "objects": ["/o/drill"],
                         "weights_dir": "/w", "topics.depth": "depth/image_raw"}
    with pytest.raises(FileNotFoundError, match="pass config:="):
        node_parameters(str(tmp_path / "missing.yaml"), mode="known_model", use_sim_time="false")

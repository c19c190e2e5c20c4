"""Launch files without launch installed (launch/launch_ros are not installable here): the
files are thin, and the descriptions they return are built by launch_support, run here against
recording stand-ins of launch / launch_ros (every action keeps its arguments), for both
launch_ros APIs: LifecycleNode with ``autostart`` (Jazzy) and without (ChangeState events).
test/test_launch_run.py runs the files for real where launch_ros imports."""
from __future__ import annotations

import ast
import inspect
import sys
import types
from pathlib import Path

import pytest
import yaml

from sixd_pose_ros.ros.launch_support import CONFIG_FILE, RVIZ_FILE, as_bool, camera_remappings, node_parameters, \
    parse_objects, remap_arguments

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
REALSENSE = {"image": "/camera/camera/color/image_raw", "image/compressed": "/camera/camera/color/image_raw/compressed",
             "depth": "/camera/camera/aligned_depth_to_color/image_raw", "camera_info": "/camera/camera/color/camera_info"}


class Recorded:
    """An action / substitution / event stand-in: keeps what it was built with."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __getattr__(self, name):
        try:
            return self.__dict__["kwargs"][name]
        except KeyError:
            raise AttributeError(name) from None


class LaunchConfiguration(Recorded):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]


class FindPackageShare(Recorded):
    def perform(self, context):
        return str(ROOT)  # the source tree stands in for share/sixd_pose_ros


class PathJoinSubstitution(Recorded):
    def perform(self, context):
        return "/".join(p if isinstance(p, str) else p.perform(context) for p in self.args[0])


class LifecycleNodeWithAutostart(Recorded):
    def __init__(self, *, autostart=False, **kwargs):
        super().__init__(autostart=autostart, **kwargs)


def _fake_launch(monkeypatch, lifecycle_node):
    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)

    plain = {n: type(n, (Recorded,), {}) for n in (
        "LaunchDescription", "DeclareLaunchArgument", "OpaqueFunction", "ExecuteProcess", "RegisterEventHandler",
        "EmitEvent", "LogInfo", "IfCondition", "OnProcessStart", "Node", "OnStateTransition", "ChangeState")}
    module("launch", LaunchDescription=plain["LaunchDescription"])
    module("launch.actions", **{n: plain[n] for n in ("DeclareLaunchArgument", "OpaqueFunction", "ExecuteProcess",
                                                      "RegisterEventHandler", "EmitEvent", "LogInfo")})
    module("launch.conditions", IfCondition=plain["IfCondition"])
    module("launch.substitutions", LaunchConfiguration=LaunchConfiguration, PathJoinSubstitution=PathJoinSubstitution)
    module("launch.events", matches_action=lambda action: ("matches", action))
    module("launch.event_handlers", OnProcessStart=plain["OnProcessStart"])
    module("launch_ros")
    module("launch_ros.actions", Node=plain["Node"], LifecycleNode=lifecycle_node)
    module("launch_ros.substitutions", FindPackageShare=FindPackageShare)
    module("launch_ros.event_handlers", OnStateTransition=plain["OnStateTransition"])
    module("launch_ros.events")
    module("launch_ros.events.lifecycle", ChangeState=plain["ChangeState"])


def _run(file_name, monkeypatch, lifecycle_node=LifecycleNodeWithAutostart, **arguments):
    """The launch file's description, its declared defaults, and the actions its OpaqueFunctions
    return for ``arguments`` (rviz left out unless asked)."""
    _fake_launch(monkeypatch, lifecycle_node)
    namespace = {}
    path = ROOT / "launch" / file_name
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    description = namespace["generate_launch_description"]()
    entities = description.args[0]
    context = types.SimpleNamespace(launch_configurations={})
    declared = {}
    for e in entities:
        if type(e).__name__ == "DeclareLaunchArgument":
            default = e.kwargs.get("default_value")
            declared[e.args[0]] = default.perform(context) if hasattr(default, "perform") else default
    context.launch_configurations.update({k: v for k, v in declared.items() if v is not None}, **arguments)
    actions = []
    for e in entities:
        if type(e).__name__ == "OpaqueFunction" and ("condition" not in e.kwargs or as_bool(arguments.get("rviz", "0"))):
            actions += e.kwargs["function"](context)
    return declared, actions


def _node(actions):
    return next(a for a in actions if type(a).__name__.startswith("LifecycleNode"))


@pytest.mark.parametrize("name, mode", [("known_model.launch.py", "known_model"), ("model_free.launch.py", "model_free")])
def test_pose_launch_files_start_a_lifecycle_node_on_the_realsense_topics(name, mode, monkeypatch):
    declared, actions = _run(name, monkeypatch, objects="[/o/drill]")
    assert {"config", "camera_namespace", "use_sim_time", "rviz", "autostart", "objects", "weights_dir",
            "image_topic", "depth_topic", "camera_info_topic", "image_transport", "namespace"} <= set(declared)
    assert declared["camera_namespace"] == "/camera/camera" and declared["config"] == f"{ROOT}/config/{CONFIG_FILE}"
    assert len(actions) == 1  # LifecycleNode(autostart=...) drives configure + activate itself
    node = _node(actions)
    assert (node.package, node.executable, node.name, node.namespace) == ("sixd_pose_ros", "sixd_pose_node",
                                                                          "sixd_pose_node", "")
    assert node.autostart is True and dict(node.remappings) == REALSENSE
    config, overrides = node.parameters
    assert config == f"{ROOT}/config/{CONFIG_FILE}"
    assert overrides == {"mode": mode, "use_sim_time": False, "objects": ["/o/drill"], "autostart": False,
                         "image_transport": "raw"}
    # Another camera, a compressed stream, no autostart (a lifecycle manager's job), and rviz.
    _, actions = _run(name, monkeypatch, camera_namespace="/wrist", image_topic="rgb/image", depth_topic="/d/depth",
                      image_transport="compressed", autostart="false", rviz="true", use_sim_time="true")
    node = _node(actions)
    assert dict(node.remappings) == {"image": "/wrist/rgb/image", "image/compressed": "/wrist/rgb/image/compressed",
                                     "depth": "/d/depth", "camera_info": "/wrist/color/camera_info"}
    assert node.autostart is False and node.parameters[1]["image_transport"] == "compressed"
    rviz = next(a for a in actions if type(a).__name__ == "Node")
    assert rviz.package == "rviz2" and rviz.arguments == ["-d", f"{ROOT}/config/{RVIZ_FILE}"]
    assert rviz.parameters == [{"use_sim_time": True}]


def test_without_lifecycle_autostart_launch_sends_configure_then_activate(monkeypatch):
    from lifecycle_msgs.msg import Transition

    class OldLifecycleNode(Recorded):  # launch_ros before LifecycleNode(autostart=...)
        pass

    _, actions = _run("known_model.launch.py", monkeypatch, lifecycle_node=OldLifecycleNode)
    node, on_start, on_inactive = actions
    assert isinstance(node, OldLifecycleNode) and "autostart" not in node.kwargs
    handler = on_start.args[0]
    assert type(handler).__name__ == "OnProcessStart" and handler.target_action is node
    event = handler.on_start[0].event
    assert event.transition_id == Transition.TRANSITION_CONFIGURE and event.lifecycle_node_matcher == ("matches", node)
    handler = on_inactive.args[0]
    assert type(handler).__name__ == "OnStateTransition" and handler.target_lifecycle_node is node
    assert handler.goal_state == "inactive" and handler.entities[0].event.transition_id == Transition.TRANSITION_ACTIVATE
    _, actions = _run("known_model.launch.py", monkeypatch, lifecycle_node=OldLifecycleNode, autostart="false")
    assert len(actions) == 1  # nothing drives it: a lifecycle manager will


@pytest.mark.parametrize("lifecycle_node", [LifecycleNodeWithAutostart, Recorded], ids=["autostart", "events"])
def test_replay_plays_the_bag_only_once_the_node_is_active(lifecycle_node, monkeypatch):
    declared, actions = _run("replay.launch.py", monkeypatch, lifecycle_node=lifecycle_node, bag="/bags/b1",
                             objects="/o/drill")
    assert {"bag", "mode", "rate", "loop"} <= set(declared) and declared["camera_namespace"] == "/camera"
    assert not [a for a in actions if type(a).__name__ == "ExecuteProcess"]  # not started with the node
    node = _node(actions) if lifecycle_node is LifecycleNodeWithAutostart else actions[0]
    assert dict(node.remappings)["depth"] == "/camera/depth/image_raw"  # the package's own bags
    assert node.parameters[1]["mode"] == "known_model" and node.parameters[1]["use_sim_time"] is True
    handler = actions[-1].args[0]
    assert type(handler).__name__ == "OnStateTransition" and handler.target_lifecycle_node is node
    assert handler.goal_state == "active"
    play = next(e for e in handler.entities if type(e).__name__ == "ExecuteProcess").cmd
    assert play == ["ros2", "bag", "play", "/bags/b1", "--rate", "1.0", "--clock"]
    # mode and use_sim_time are honoured: wall time plays without --clock.
    _, actions = _run("replay.launch.py", monkeypatch, bag="/bags/b1", mode="model_free", use_sim_time="false",
                      loop="true")
    node = _node(actions)
    assert node.parameters[1]["mode"] == "model_free" and node.parameters[1]["use_sim_time"] is False
    play = next(e for e in actions[-1].args[0].entities if type(e).__name__ == "ExecuteProcess").cmd
    assert "--clock" not in play and "--loop" in play
    with pytest.raises(ValueError, match="not a mode"):
        _run("replay.launch.py", monkeypatch, bag="/b", mode="magic")


def test_launch_files_are_thin_and_name_their_mode():
    for name, call in (("known_model.launch.py", "pose_launch_description"),
                       ("model_free.launch.py", "pose_launch_description"),
                       ("replay.launch.py", "replay_launch_description")):
        tree = ast.parse((ROOT / "launch" / name).read_text())
        assert "generate_launch_description" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert call in {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "MODE = \"model_free\"" in (ROOT / "launch" / "model_free.launch.py").read_text()
    assert "MODE = \"known_model\"" in (ROOT / "launch" / "known_model.launch.py").read_text()


def test_camera_remappings_and_in_process_arguments():
    assert dict(camera_remappings()) == REALSENSE
    assert dict(camera_remappings("camera/"))["depth"] == "/camera/aligned_depth_to_color/image_raw"
    assert dict(camera_remappings("", image="rgb"))["image"] == "/rgb"
    assert remap_arguments([("image", "/a")]) == ["--ros-args", "-r", "image:=/a"]
    with pytest.raises(ValueError):
        camera_remappings("/c", image="two words")
    assert "image_topic" not in inspect.signature(node_parameters).parameters


def test_rviz_config_shows_image_debug_image_markers_and_tf():
    data = yaml.safe_load((ROOT / "config" / RVIZ_FILE).read_text())
    displays = data["Visualization Manager"]["Displays"]
    classes = [d["Class"] for d in displays]
    assert {"rviz_default_plugins/TF", "rviz_default_plugins/MarkerArray", "rviz_default_plugins/Image"} <= set(classes)
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    assert {"/camera/camera/color/image_raw", "/sixd_pose_node/debug_image", "/sixd_pose_node/markers"} <= topics


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
                             weights_dir="/w", extra={"image_transport": "compressed"})
    assert params[1] == {"mode": "known_model", "use_sim_time": True, "objects": ["/o/drill"],
                         "weights_dir": "/w", "image_transport": "compressed"}
    with pytest.raises(FileNotFoundError, match="pass config:="):
        node_parameters(str(tmp_path / "missing.yaml"), mode="known_model", use_sim_time="false")


def test_the_node_process_loads_the_shipped_dds_profile_unless_one_is_set(monkeypatch):
    from sixd_pose_ros.ros.launch_support import DDS_PROFILE_FILE, DDS_PROFILE_VARIABLES, dds_profile_env

    for var in DDS_PROFILE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    declared, actions = _run("known_model.launch.py", monkeypatch, objects="[/o/drill]")
    profile = f"{ROOT}/config/{DDS_PROFILE_FILE}"
    assert declared["dds_profile"] == profile and Path(profile).is_file()
    assert _node(actions).additional_env == {v: profile for v in DDS_PROFILE_VARIABLES}
    _, actions = _run("replay.launch.py", monkeypatch, bag="/b", dds_profile="")  # off
    assert "additional_env" not in _node(actions).kwargs
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", "/mine.xml")  # the user's own profile wins
    _, actions = _run("model_free.launch.py", monkeypatch, objects="[/o/drill]")
    assert "additional_env" not in _node(actions).kwargs
    assert dds_profile_env("/p.xml", {}) == {v: "/p.xml" for v in DDS_PROFILE_VARIABLES}
    assert dds_profile_env("/p.xml", {"FASTDDS_DEFAULT_PROFILES_FILE": "/x.xml"}) == {}

"""Plain-Python helpers the launch files share (no `launch` import here, so they are testable
where launch is not installed).
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import yaml

__all__ = ["parse_objects", "node_parameters", "as_bool", "camera_remappings", "remap_arguments", "dds_profile_env",
           "default_interrupts",
           "PACKAGE", "EXECUTABLE", "CONFIG_FILE", "RVIZ_FILE", "DDS_PROFILE_FILE", "DDS_PROFILE_VARIABLES",
           "REALSENSE_NAMESPACE", "REALSENSE_TOPICS"]

PACKAGE = "sixd_pose_ros"
EXECUTABLE = "sixd_pose_node"
CONFIG_FILE = "sixd_pose_node.yaml"
RVIZ_FILE = "sixd_pose.rviz"
# Fast DDS profile that carries 640x480 / 1280x720 RGB-D between processes without loss (shared
# memory segments that hold whole frames); Fast DDS 2 reads the first variable, Fast DDS 3 the second.
DDS_PROFILE_FILE = "fastdds_large_images.xml"
DDS_PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")

# realsense-ros 4.x (`ros2 launch realsense2_camera rs_launch.py align_depth.enable:=true`)
# publishes under /<camera_namespace>/<camera_name> = /camera/camera.
REALSENSE_NAMESPACE = "/camera/camera"
REALSENSE_TOPICS = {"image": "color/image_raw", "depth": "aligned_depth_to_color/image_raw",
                    "camera_info": "color/camera_info"}


def camera_remappings(namespace: str = REALSENSE_NAMESPACE, *, image: str = REALSENSE_TOPICS["image"],
                      depth: str = REALSENSE_TOPICS["depth"],
                      camera_info: str = REALSENSE_TOPICS["camera_info"]) -> list[tuple[str, str]]:
    """The node's input names -> the camera's topics (``namespace`` + each relative topic; an
    absolute topic is used as given). ``image/compressed`` goes to the colour topic's
    ``/compressed`` (image_transport's name), used with ``image_transport:=compressed``."""
    ns = "/" + namespace.strip().strip("/") if namespace.strip().strip("/") else ""

    def full(topic: str) -> str:
        topic = topic.strip()
        if not topic or any(c.isspace() for c in topic):
            raise ValueError(f"{topic!r} is not a topic name")
        return topic if topic.startswith("/") else f"{ns}/{topic}"

    return [("image", full(image)), ("image/compressed", full(image) + "/compressed"), ("depth", full(depth)),
            ("camera_info", full(camera_info))]


def remap_arguments(remappings) -> list[str]:
    """``cli_args`` of an in-process node (``SixdPoseNode(cli_args=...)``) applying ``remappings``."""
    args = ["--ros-args"]
    for src, dst in remappings:
        args += ["-r", f"{src}:={dst}"]
    return args


def dds_profile_env(profile: str, environ=None) -> dict[str, str]:
    """Environment for the node's process that loads the Fast DDS ``profile``: both variables,
    unless the user already set one (their profile wins) or ``profile`` is empty (off)."""
    environ = os.environ if environ is None else environ
    if not profile.strip() or any(environ.get(v) for v in DDS_PROFILE_VARIABLES):
        return {}
    return {v: profile.strip() for v in DDS_PROFILE_VARIABLES}


def as_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean launch argument: use true or false")


def parse_objects(text: str) -> list[str]:
    """Object folders from a launch argument: a YAML list (``[/a, /b]``) or comma-separated
    (``/a,/b``); empty -> [] (the parameter file's ``objects`` is kept)."""
    text = (text or "").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"objects:={text} is not a YAML list of folders ({exc.problem})") from exc
        if not isinstance(value, list):
            raise ValueError(f"objects:={text} is not a list of folders")
        return [str(v) for v in value if str(v).strip()]
    return [part.strip() for part in text.split(",") if part.strip()]


def node_parameters(config: str, *, mode: str, use_sim_time: str, objects: str = "", weights_dir: str = "",
                    extra: dict | None = None) -> list:
    """The ``parameters=`` list of the node: the YAML file, then overrides from launch arguments
    (only those that were given, so the file's values stay otherwise)."""
    if not Path(config).is_file():
        raise FileNotFoundError(f"config file {config} not found: pass config:=/path/to/{CONFIG_FILE}")
    overrides: dict = {"mode": mode, "use_sim_time": as_bool(use_sim_time)}
    folders = parse_objects(objects)
    if folders:
        overrides["objects"] = folders
    if weights_dir.strip():
        overrides["weights_dir"] = weights_dir.strip()
    overrides.update(extra or {})
    return [config, overrides]


# ---------------------------------------------------------------- launch descriptions
# Everything below imports launch / launch_ros when called (from the launch files), so this
# module stays importable without them; test/test_ros_launch_files.py runs it against recording
# stand-ins of those modules, test/test_launch_run.py against the real ones where they exist.


def supports_autostart(lifecycle_node_class) -> bool:
    """Whether launch_ros' LifecycleNode takes ``autostart`` (it drives configure + activate)."""
    import inspect

    try:
        return "autostart" in inspect.signature(lifecycle_node_class).parameters
    except (TypeError, ValueError):
        return False


def _common_arguments(camera_namespace: str, camera_help: str, *, depth_topic: str = REALSENSE_TOPICS["depth"],
                      use_sim_time: str = "false") -> list:
    from launch.actions import DeclareLaunchArgument
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare

    share = FindPackageShare(PACKAGE)
    return [
        DeclareLaunchArgument("config", default_value=PathJoinSubstitution([share, "config", CONFIG_FILE]),
                              description="parameter file of the node"),
        DeclareLaunchArgument("camera_namespace", default_value=camera_namespace, description=camera_help),
        DeclareLaunchArgument("image_topic", default_value=REALSENSE_TOPICS["image"],
                              description="colour image, relative to camera_namespace (or absolute)"),
        DeclareLaunchArgument("depth_topic", default_value=depth_topic,
                              description="depth registered to the colour image, relative to camera_namespace"),
        DeclareLaunchArgument("camera_info_topic", default_value=REALSENSE_TOPICS["camera_info"],
                              description="camera_info of the colour image, relative to camera_namespace"),
        DeclareLaunchArgument("image_transport", default_value="raw",
                              description="raw, or compressed (subscribes to <image_topic>/compressed)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node itself"),
        DeclareLaunchArgument("use_sim_time", default_value=use_sim_time,
                              description="use /clock (bags, simulators)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure + activate the node; false = leave it to a lifecycle manager"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/sixd_pose.rviz"),
        DeclareLaunchArgument("rviz_config", default_value=PathJoinSubstitution([share, "config", RVIZ_FILE]),
                              description="rviz2 configuration"),
        DeclareLaunchArgument("objects", default_value="",
                              description="object database folders, [/a,/b] or /a,/b (overrides the file)"),
        DeclareLaunchArgument("weights_dir", default_value="", description="weights folder (overrides the file)"),
        DeclareLaunchArgument("dds_profile", default_value=PathJoinSubstitution([share, "config", DDS_PROFILE_FILE]),
                              description="Fast DDS profile for the node's process (large images over shared "
                                          "memory; give the camera driver the same); ignored when "
                                          "FASTRTPS_DEFAULT_PROFILES_FILE is already set; empty = none"),
    ]


def pose_node_actions(context, mode: str) -> list:
    """The node as a launch_ros LifecycleNode (camera topics remapped, mode and use_sim_time set)
    and, with ``autostart:=true``, what takes it to active: LifecycleNode's own ``autostart``
    where launch_ros has it, else ChangeState events (configure once the process runs, activate
    once it is inactive). The node's own autostart is off, so launch sees every transition."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessStart
    from launch.events import matches_action
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    def arg(name):
        return LaunchConfiguration(name).perform(context)

    autostart = as_bool(arg("autostart"))
    remaps = camera_remappings(arg("camera_namespace"), image=arg("image_topic"), depth=arg("depth_topic"),
                               camera_info=arg("camera_info_topic"))
    parameters = node_parameters(arg("config"), mode=mode, use_sim_time=arg("use_sim_time"), objects=arg("objects"),
                                 weights_dir=arg("weights_dir"),
                                 extra={"autostart": False, "image_transport": arg("image_transport")})
    kwargs = dict(package=PACKAGE, executable=EXECUTABLE, name=EXECUTABLE, namespace=arg("namespace"),
                  output="screen", emulate_tty=True, parameters=parameters, remappings=remaps)
    env = dds_profile_env(arg("dds_profile"))
    if env:
        kwargs["additional_env"] = env
    if supports_autostart(LifecycleNode):
        return [LifecycleNode(autostart=autostart, **kwargs)]
    node = LifecycleNode(**kwargs)
    if not autostart:
        return [node]

    def change(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))

    return [node,
            RegisterEventHandler(OnProcessStart(target_action=node,
                                                on_start=[change(Transition.TRANSITION_CONFIGURE)])),
            RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, goal_state="inactive",
                                                   entities=[change(Transition.TRANSITION_ACTIVATE)]))]


def _rviz(context) -> list:
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    return [Node(package="rviz2", executable="rviz2", name="sixd_pose_rviz", output="screen",
                 arguments=["-d", LaunchConfiguration("rviz_config").perform(context)],
                 parameters=[{"use_sim_time": as_bool(LaunchConfiguration("use_sim_time").perform(context))}])]


def pose_launch_description(mode: str):
    """known_model.launch.py / model_free.launch.py: the node on a live camera (realsense-ros 4.x
    topics by default), optionally rviz2."""
    from launch import LaunchDescription
    from launch.actions import OpaqueFunction
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration

    return LaunchDescription([
        *_common_arguments(REALSENSE_NAMESPACE, "namespace of the camera's topics (realsense-ros 4.x: "
                                                "/camera/camera; e.g. /camera for realsense-ros 3.x)"),
        OpaqueFunction(function=lambda context: pose_node_actions(context, mode)),
        OpaqueFunction(function=_rviz, condition=IfCondition(LaunchConfiguration("rviz"))),
    ])


def _replay_actions(context) -> list:
    """The node, and `ros2 bag play` started only when the node reports it is active (so a short
    bag is not over before the node subscribes)."""
    from launch.actions import ExecuteProcess, LogInfo, RegisterEventHandler
    from launch.substitutions import LaunchConfiguration
    from launch_ros.event_handlers import OnStateTransition

    def arg(name):
        return LaunchConfiguration(name).perform(context)

    mode = arg("mode")
    if mode not in ("known_model", "model_free"):
        raise ValueError(f"mode:={mode} is not a mode: use known_model or model_free")
    actions = pose_node_actions(context, mode)
    play = ["ros2", "bag", "play", arg("bag"), "--rate", arg("rate")]
    if as_bool(arg("use_sim_time")):
        play.append("--clock")  # the bag's time drives /clock, and the node follows it
    if as_bool(arg("loop")):
        play.append("--loop")
    actions.append(RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=actions[0], goal_state="active",
        entities=[LogInfo(msg="sixd_pose_node is active: playing the bag"),
                  ExecuteProcess(cmd=play, output="screen")])))
    return actions


def replay_launch_description():
    """replay.launch.py: the node plus `ros2 bag play`, which starts once the node is active."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration

    # Defaults fit the bags `sixd-pose synth` / `demo` write, on the bag's time.
    common = _common_arguments("/camera", "namespace of the camera topics in the bag (/camera in the bags "
                                          "`sixd-pose synth` / `demo` write)", depth_topic="depth/image_raw",
                               use_sim_time="true")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 folder to play (required)"),
        DeclareLaunchArgument("mode", default_value="known_model", description="known_model or model_free"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("loop", default_value="false", description="play the bag in a loop"),
        *common,
        OpaqueFunction(function=_replay_actions),
        OpaqueFunction(function=_rviz, condition=IfCondition(LaunchConfiguration("rviz"))),
    ])


def default_interrupts() -> None:
    """``preexec_fn`` for a node (or other ROS program) started as a child process and stopped
    with SIGINT: the signal delivered and not ignored in the child, whatever the parent has. A
    blocked or ignored signal survives exec, and a program started in the background by a shell
    (``cmd &``) has SIGINT ignored: inside a test suite or soak run started that way the node
    never stopped."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

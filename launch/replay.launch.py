"""Replay a rosbag2 recording through the pose node on simulated time.

    ros2 launch sixd_pose_ros replay.launch.py bag:=/tmp/sixd_demo/bags/000000 \
        objects:=[/home/robot/objects/drill] rviz:=true

Plays the bag with `ros2 bag play --clock` (it publishes /clock) and runs the node with
use_sim_time:=true, so every output carries the bag's stamps. The topic defaults fit the bags
`sixd-pose synth` / `sixd-pose demo` write (/camera/color/image_raw, /camera/depth/image_raw,
/camera/color/camera_info); override them with image_topic, depth_topic, camera_info_topic
(relative to camera_namespace). Colour must be raw (rgb8/bgr8/mono8), not .../compressed.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from sixd_pose_ros.ros.launch_support import as_bool, node_parameters


def _bag_and_node(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    play = ["ros2", "bag", "play", arg("bag"), "--clock", "--rate", arg("rate")]
    if as_bool(arg("loop")):
        play.append("--loop")
    topics = {"topics.image": arg("image_topic"), "topics.depth": arg("depth_topic"),
              "topics.camera_info": arg("camera_info_topic")}
    node = Node(
        package="sixd_pose_ros",
        executable="sixd_pose_node",
        name="sixd_pose_node",
        namespace=arg("camera_namespace"),
        output="screen",
        emulate_tty=True,
        parameters=node_parameters(arg("config"), mode="known_model", use_sim_time="true",
                                   objects=arg("objects"), weights_dir=arg("weights_dir"), extra=topics),
    )
    return [node, ExecuteProcess(cmd=play, output="screen")]


def _rviz(context, *args, **kwargs):
    return [Node(
        package="rviz2", executable="rviz2", name="sixd_pose_rviz", output="screen",
        arguments=["-d", LaunchConfiguration("rviz_config").perform(context)],
        parameters=[{"use_sim_time": True}],
    )]


def generate_launch_description():
    share = FindPackageShare("sixd_pose_ros")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 folder to play (required)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("loop", default_value="false", description="play the bag in a loop"),
        DeclareLaunchArgument("config", default_value=PathJoinSubstitution([share, "config", "sixd_pose_node.yaml"]),
                              description="parameter file of the node"),
        DeclareLaunchArgument("camera_namespace", default_value="camera",
                              description="namespace of the camera topics in the bag; the node runs in it"),
        DeclareLaunchArgument("use_sim_time", default_value="true",
                              description="always true here (the bag publishes /clock); declared for symmetry"),
        DeclareLaunchArgument("image_topic", default_value="color/image_raw"),
        DeclareLaunchArgument("depth_topic", default_value="depth/image_raw"),
        DeclareLaunchArgument("camera_info_topic", default_value="color/camera_info"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/sixd_pose.rviz"),
        DeclareLaunchArgument("rviz_config", default_value=PathJoinSubstitution([share, "config", "sixd_pose.rviz"]),
                              description="rviz2 configuration"),
        DeclareLaunchArgument("objects", default_value="",
                              description="object database folders, [/a,/b] or /a,/b (overrides the file)"),
        DeclareLaunchArgument("weights_dir", default_value="", description="weights folder (overrides the file)"),
        OpaqueFunction(function=_bag_and_node),
        OpaqueFunction(function=_rviz, condition=IfCondition(LaunchConfiguration("rviz"))),
    ])

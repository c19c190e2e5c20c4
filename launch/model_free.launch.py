"""6D pose of objects known from posed reference images (model-free mode).

The node runs detector -> viewpoint selector -> refiner -> depth on object folders built from
photos (`sixd-pose build-object --images DIR`, or the `capture_references` tool on the robot).
Same arguments as known_model.launch.py.

Arguments: config (parameter file), camera_namespace (the node runs in it, so its relative
topics resolve there), use_sim_time, rviz, objects and weights_dir (override the file's).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from sixd_pose_ros.ros.launch_support import as_bool, node_parameters

MODE = "model_free"


def _pose_node(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    return [Node(
        package="sixd_pose_ros",
        executable="sixd_pose_node",
        name="sixd_pose_node",
        namespace=arg("camera_namespace"),
        output="screen",
        emulate_tty=True,
        parameters=node_parameters(arg("config"), mode=MODE, use_sim_time=arg("use_sim_time"),
                                   objects=arg("objects"), weights_dir=arg("weights_dir")),
    )]


def _rviz(context, *args, **kwargs):
    return [Node(
        package="rviz2", executable="rviz2", name="sixd_pose_rviz", output="screen",
        arguments=["-d", LaunchConfiguration("rviz_config").perform(context)],
        parameters=[{"use_sim_time": as_bool(LaunchConfiguration("use_sim_time").perform(context))}],
    )]


def generate_launch_description():
    share = FindPackageShare("sixd_pose_ros")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=PathJoinSubstitution([share, "config", "sixd_pose_node.yaml"]),
                              description="parameter file of the node"),
        DeclareLaunchArgument("camera_namespace", default_value="camera",
                              description="namespace of the camera topics; the node runs in it"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bags, simulators)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/sixd_pose.rviz"),
        DeclareLaunchArgument("rviz_config", default_value=PathJoinSubstitution([share, "config", "sixd_pose.rviz"]),
                              description="rviz2 configuration"),
        DeclareLaunchArgument("objects", default_value="",
                              description="object database folders, [/a,/b] or /a,/b (overrides the file)"),
        DeclareLaunchArgument("weights_dir", default_value="", description="weights folder (overrides the file)"),
        OpaqueFunction(function=_pose_node),
        OpaqueFunction(function=_rviz, condition=IfCondition(LaunchConfiguration("rviz"))),
    ])

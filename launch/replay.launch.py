"""Replay a rosbag2 recording through the pose node.

    ros2 launch sixd_pose_ros replay.launch.py bag:=/tmp/sixd_demo/bags/000000 \
        objects:=[/home/robot/objects/drill] rviz:=true

`ros2 bag play` starts only once the node reports the transition to active (an OnStateTransition
handler), so a short bag is not over before the node (about 10 s to configure) subscribes.
use_sim_time (default true) plays with --clock and runs the node on the bag's time; mode
(known_model | model_free) chooses the estimator. Topic defaults fit the bags `sixd-pose synth` /
`sixd-pose demo` write (camera_namespace /camera: color/image_raw, depth/image_raw,
color/camera_info); a RealSense recording: camera_namespace:=/camera/camera
depth_topic:=aligned_depth_to_color/image_raw.

Arguments: bag (required), mode, rate, loop, and those of known_model.launch.py. Built by
sixd_pose_ros.ros.launch_support.replay_launch_description.
"""
from sixd_pose_ros.ros.launch_support import replay_launch_description


def generate_launch_description():
    return replay_launch_description()

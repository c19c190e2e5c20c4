"""6D pose of objects known from posed reference images (model-free mode).

    ros2 launch sixd_pose_ros model_free.launch.py objects:=[/home/robot/objects/mug] rviz:=true

The node runs detector -> viewpoint selector -> refiner -> depth on object folders built from
photos (`sixd-pose build-object --images DIR`, or the `capture_references` tool on the robot).
Same arguments, remappings and lifecycle handling as known_model.launch.py (camera topics of
realsense-ros 4.x by default: camera_namespace:=/camera/camera).
"""
from sixd_pose_ros.ros.launch_support import pose_launch_description

MODE = "model_free"


def generate_launch_description():
    return pose_launch_description(MODE)

"""6D pose of known objects (CAD meshes turned into object databases by `sixd-pose build-object`).

    ros2 launch sixd_pose_ros known_model.launch.py objects:=[/home/robot/objects/drill] rviz:=true

The node is a lifecycle node that launch configures and activates (autostart:=false leaves that
to a lifecycle manager). Its inputs `image`, `depth`, `camera_info` are remapped to
<camera_namespace>/<image_topic|depth_topic|camera_info_topic>: by default realsense-ros 4.x
(/camera/camera/color/image_raw, /camera/camera/aligned_depth_to_color/image_raw,
/camera/camera/color/camera_info). Another camera: camera_namespace:=/my_cam and the topic
arguments. Outputs: /<namespace>/sixd_pose_node/... (namespace defaults to none).

Arguments: config, camera_namespace, image_topic, depth_topic, camera_info_topic,
image_transport (raw | compressed), namespace, use_sim_time, autostart, rviz, rviz_config, objects,
weights_dir (the last two override the file's). Built by
sixd_pose_ros.ros.launch_support.pose_launch_description.
"""
from sixd_pose_ros.ros.launch_support import pose_launch_description

MODE = "known_model"


def generate_launch_description():
    return pose_launch_description(MODE)

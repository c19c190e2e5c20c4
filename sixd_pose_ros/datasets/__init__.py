"""Datasets: BOP-format folders and rosbag2 recordings of annotated RGB-D frames.

The scene synthesizer writes through this package and evaluation reads through it; both see
only :class:`SceneFrame` / :class:`GTInstance` (meters, RGB, OpenCV camera axes), never a
file format's conventions. Pure Python: rosbag2 files go through the ``rosbags`` library, not
rclpy, so this works on machines without ROS.
"""

from sixd_pose_ros.datasets.bop import (
    BopSceneWriter,
    load_bop_model,
    read_bop_models_info,
    read_bop_scene,
    read_bop_single_frame,
    write_bop_models,
)
from sixd_pose_ros.datasets.rosbag import camera_topics, read_rosbag, write_rosbag
from sixd_pose_ros.datasets.types import GTInstance, SceneFrame
from sixd_pose_ros.errors import DatasetError, OutputError

__all__ = [
    "BopSceneWriter",
    "DatasetError",
    "GTInstance",
    "OutputError",
    "SceneFrame",
    "camera_topics",
    "load_bop_model",
    "read_bop_models_info",
    "read_bop_scene",
    "read_bop_single_frame",
    "read_rosbag",
    "write_bop_models",
    "write_rosbag",
]

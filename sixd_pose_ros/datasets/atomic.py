"""Moved to :mod:`sixd_pose_ros.io`; this name stays only until ``objects/templates.py`` imports
from there (importing it loads the datasets package, and with it cv2 and rosbags)."""

from sixd_pose_ros.io.atomic import atomic_output_path

__all__ = ["atomic_output_path"]

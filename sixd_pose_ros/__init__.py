"""sixd_pose_ros."""

"""A synchronized (image, camera_info, depth) triple -> pipeline Frame, or a FrameError naming the fix."""
from __future__ import annotations

import numpy as np

from sixd_pose_ros.pipeline.types import CameraInfoError, Frame
from sixd_pose_ros.ros.image_conversion import color_from_msg, depth_from_msg
from sixd_pose_ros.ros.sync import stamp_ns

__all__ = ["frame_from_msgs", "intrinsics_from_camera_info", "DEFAULT_CAMERA_FRAME"]

DEFAULT_CAMERA_FRAME = "camera_color_optical_frame"


def intrinsics_from_camera_info(info, width: int, height: int) -> np.ndarray:
    """K (3, 3) from camera_info.k, checked against the image size it should describe."""
    K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if not np.any(K):
        raise CameraInfoError("camera_info.k is all zeros: the camera is not calibrated or the driver publishes "
                              "an empty camera_info; calibrate it (camera_calibration) or publish its factory "
                              "intrinsics")
    iw, ih = int(info.width), int(info.height)
    if (iw or ih) and (iw, ih) != (width, height):
        raise CameraInfoError(f"camera_info is for {iw}x{ih} but the colour image is {width}x{height}: subscribe "
                              f"to the camera_info of this image stream (topics.camera_info)")
    return K


def frame_from_msgs(color, info, depth=None, *, frame_id: str = "") -> Frame:
    """Convert and validate. ``frame_id`` overrides the colour image's (frames.camera_frame).

    The Frame carries the colour image's stamp and frame_id (camera_info's when the image has
    none), which every output then carries.
    """
    rgb = color_from_msg(color)
    K = intrinsics_from_camera_info(info, rgb.shape[1], rgb.shape[0])
    depth_m = depth_from_msg(depth) if depth is not None else None
    fid = frame_id or color.header.frame_id or info.header.frame_id or DEFAULT_CAMERA_FRAME
    return Frame(rgb=rgb, K=K, depth=depth_m, stamp_ns=stamp_ns(color), frame_id=fid.lstrip("/"))

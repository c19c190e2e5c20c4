"""In-memory form of one annotated RGB-D frame, shared by every dataset reader and writer.

The scene synthesizer produces :class:`SceneFrame` objects, the BOP and rosbag2 writers store
them, and evaluation reads them back from either format. Keeping one plain-numpy type in the
middle means no format leaks its conventions into the others: everything here is in SI units
(meters), RGB channel order and the OpenCV camera convention (x right, y down, z forward),
whatever the file on disk uses (BOP: millimeters; cv2: BGR; ROS: quaternions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["GTInstance", "SceneFrame", "DEFAULT_CAMERA_FRAME"]

#: REP 105 / RealSense name of the color camera's optical frame; the default ``frame_id``.
DEFAULT_CAMERA_FRAME = "camera_color_optical_frame"


def _as_bool_mask(mask: np.ndarray | None, name: str) -> np.ndarray | None:
    """Accept 0/1 or 0/255 masks from image files, store them as bool (H, W)."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be (H, W), got shape {mask.shape}")
    return mask if mask.dtype == np.bool_ else mask != 0


@dataclass
class GTInstance:
    """Ground truth of one object instance in one frame.

    ``mask_visib`` is ``None`` when the source has no masks (a rosbag2 recording carries poses
    on ``/tf`` but no segmentation; a real BOP frame may ship without mask files). It is
    Optional on purpose: an all-zero mask would claim "fully occluded", which is a different
    and wrong statement. Consumers that need masks must check for ``None``.
    """

    obj_id: int
    R_m2c: np.ndarray  # (3, 3) float64, object-to-camera: X_cam = R @ X_obj + t
    t_m2c: np.ndarray  # (3,) float64, meters
    mask_visib: np.ndarray | None  # (H, W) bool, visible part; None = unknown
    mask: np.ndarray | None = None  # (H, W) bool, full silhouette ignoring occlusion

    def __post_init__(self) -> None:
        self.obj_id = int(self.obj_id)
        self.R_m2c = np.asarray(self.R_m2c, dtype=np.float64).reshape(3, 3)
        self.t_m2c = np.asarray(self.t_m2c, dtype=np.float64).reshape(3)
        self.mask_visib = _as_bool_mask(self.mask_visib, "mask_visib")
        self.mask = _as_bool_mask(self.mask, "mask")


@dataclass
class SceneFrame:
    """One RGB-D frame with intrinsics, ground truth and time.

    ``im_id`` is the frame's index in its BOP scene when it came from (or goes to) one; it is
    optional because a live or recorded stream has no such index.
    """

    rgb: np.ndarray  # (H, W, 3) uint8, RGB order
    depth: np.ndarray  # (H, W) float32 meters, 0 = no measurement
    K: np.ndarray  # (3, 3) float64
    instances: list[GTInstance] = field(default_factory=list)
    stamp_ns: int = 0
    frame_id: str = DEFAULT_CAMERA_FRAME
    im_id: int | None = None

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.stamp_ns = int(self.stamp_ns)
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.depth.shape != self.rgb.shape[:2]:
            raise ValueError(f"depth shape {self.depth.shape} != rgb shape {self.rgb.shape[:2]}")
        if self.depth.dtype != np.float32:
            self.depth = self.depth.astype(np.float32)

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

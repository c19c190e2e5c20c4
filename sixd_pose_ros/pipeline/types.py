"""The two types every estimator speaks: Frame in, ObjectPose out.

Data flows one way: Frame(rgb, depth, K, stamp, frame_id) -> Estimator -> [ObjectPose] -> the
node publishes. Frames are validated once, here, so that bad camera input (wrong encoding, zero
intrinsics, depth in millimetres, NaN) becomes one clear error naming the fix instead of a
crash deep in a network.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sixd_pose_ros.errors import ErrorKind, SixdPoseError
from sixd_pose_ros.pipeline.object_info import ObjectInfo
from sixd_pose_ros.pipeline.settings import EstimatorSettings
from sixd_pose_ros.pipeline.tracking import TrackerConfig

# A depth image whose valid median exceeds this is almost surely millimetres read as meters.
MAX_PLAUSIBLE_DEPTH_M = 20.0


class FrameError(SixdPoseError):
    """A camera frame that cannot be used; the message names the fix. ``kind`` says which part
    of the frame is at fault (the subclasses below and elsewhere set it); a plain FrameError is
    about the colour image itself."""

    kind: ErrorKind = ErrorKind.IMAGE


class CameraInfoError(FrameError):
    """The intrinsics are missing, zero, not finite, or describe another image size."""

    kind = ErrorKind.CAMERA_INFO


class DepthError(FrameError):
    """The depth image cannot be used with its colour image: another size, or another unit."""

    kind = ErrorKind.DEPTH


@dataclass
class Frame:
    """One synchronized camera frame.

    rgb: (H, W, 3) uint8, RGB order. depth: (H, W) float32 meters with 0 = no measurement, or
    None (RGB-only). K: (3, 3) intrinsics of the colour image (depth registered to it).
    """

    rgb: np.ndarray
    K: np.ndarray
    depth: np.ndarray | None = None
    stamp_ns: int = 0
    frame_id: str = "camera_color_optical_frame"

    def __post_init__(self) -> None:
        self.rgb = np.asarray(self.rgb)
        self.K = np.asarray(self.K, dtype=np.float64)
        if self.depth is not None:
            self.depth = np.asarray(self.depth)
        validate_frame(self)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def validate_frame(frame: Frame) -> None:
    """Raise a FrameError (CameraInfoError, DepthError: the kind says what to fix) for anything
    an estimator cannot use; fix what is unambiguous (NaN depth becomes 0 = no measurement, as
    depth drivers mean it)."""
    rgb = frame.rgb
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise FrameError(f"colour image must be (H, W, 3), got shape {rgb.shape}: publish rgb8 or "
                         f"bgr8 (mono8 is converted by the node)")
    if rgb.dtype != np.uint8:
        raise FrameError(f"colour image must be 8-bit, got {rgb.dtype}: publish rgb8/bgr8")
    if rgb.shape[0] < 16 or rgb.shape[1] < 16:
        raise FrameError(f"colour image {rgb.shape[1]}x{rgb.shape[0]} is too small (min 16x16)")
    K = frame.K
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise CameraInfoError(f"camera matrix must be a finite 3x3, got {K.tolist()}: check camera_info.k")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CameraInfoError(f"camera_info has focal lengths fx={K[0, 0]}, fy={K[1, 1]}: the camera is "
                              f"not calibrated; calibrate it or publish its factory intrinsics")
    if not (0 <= K[0, 2] <= rgb.shape[1] and 0 <= K[1, 2] <= rgb.shape[0]):
        raise CameraInfoError(f"principal point ({K[0, 2]}, {K[1, 2]}) lies outside the {rgb.shape[1]}x"
                              f"{rgb.shape[0]} image: camera_info belongs to another resolution")
    if frame.depth is None:
        return
    depth = frame.depth
    if depth.shape != rgb.shape[:2]:
        raise DepthError(f"depth {depth.shape[1]}x{depth.shape[0]} does not match colour "
                         f"{rgb.shape[1]}x{rgb.shape[0]}: use the depth aligned to colour "
                         f"(e.g. RealSense align_depth.enable:=true)")
    if depth.dtype == np.uint16:
        raise DepthError("depth is uint16: convert millimetres to float32 meters first (the node does "
                         "this for 16UC1)")
    depth = depth.astype(np.float32, copy=False)
    bad = ~np.isfinite(depth) | (depth < 0)
    if bad.any():
        depth = np.where(bad, 0.0, depth).astype(np.float32)
    valid = depth[depth > 0]
    if valid.size and float(np.median(valid)) > MAX_PLAUSIBLE_DEPTH_M:
        raise DepthError(f"depth median is {float(np.median(valid)):.0f} m: the depth is in millimetres "
                         f"but labelled as meters (32FC1); publish 16UC1 millimetres or meters in 32FC1")
    frame.depth = depth


@dataclass
class ObjectPose:
    """One object found in one frame: object-to-camera pose in the frame's optical frame."""

    name: str
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,) meters (arbitrary units when metric is False)
    score: float  # in [0, 1]
    box: np.ndarray  # (4,) x0, y0, x1, y1 pixels
    metric: bool = True  # False: model-free mode without depth, translation up to scale
    stage_ms: dict = field(default_factory=dict)
    # True: a tracking step from the previous frame's pose made it (then score is its health);
    # False: full detection did.
    tracked: bool = False
    # How well the model explains the observed depth at this pose (0..1), None without depth.
    health: float | None = None
    # Fraction of the visible model surface whose observed depth lies behind it at this pose
    # (DepthAlignment.seen_through); None without depth.
    seen_through: float | None = None


class Estimator(Protocol):
    """Everything the node and the evaluation call on an estimator (pipeline/estimator.py's
    PoseEstimator implements it for every mode). A class that subclasses it explicitly inherits
    the defaults below: an estimator without objects to describe, settings or tracks."""

    #: The settings the estimator runs with; the node replaces it for live parameter changes
    #: (None: an estimator without such settings).
    config: EstimatorSettings | None = None

    def estimate(self, frame: Frame) -> list[ObjectPose]:
        """The poses of the objects found in ``frame``."""
        raise NotImplementedError

    def object_infos(self) -> list[ObjectInfo]:
        """Name, mesh and box of each object the estimator looks for."""
        return []

    def configure_tracking(self, config: TrackerConfig) -> None:
        """Replace the tracking settings; every track ends."""

    def reset_tracking(self, name: str | None = None) -> None:
        """End the track of one object (or of all): its next frame runs full detection."""


def projected_box(points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) pixels bounding the model points at pose (R, t)."""
    cam = points @ R.T + t
    cam = cam[cam[:, 2] > 1e-6]
    if len(cam) == 0:
        return np.zeros(4)
    uv = cam[:, :2] / cam[:, 2:3] * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    return np.concatenate([uv.min(0), uv.max(0)])

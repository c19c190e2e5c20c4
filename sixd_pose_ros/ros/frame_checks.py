"""What the node checks and fixes on a converted frame before the estimator sees it: the size
bound (downscale with K scaled to match, or refuse), lens distortion (removed, K kept), and
whether the depth is usable at all (frame) or where an object was found (its box). No ROS
import; numpy and cv2 only.
"""
from __future__ import annotations

import math

import numpy as np

from sixd_pose_ros.errors import ErrorKind
from sixd_pose_ros.pipeline.types import Frame, FrameError

__all__ = ["valid_depth_fraction", "box_valid_fraction", "without_depth", "downscale_factor", "downscale_frame",
           "scale_intrinsics", "OversizeError", "Undistorter", "UNDISTORTED_MODELS"]


class OversizeError(FrameError):
    """An image above max_pixels with oversize:=refuse."""

    kind = ErrorKind.SIZE


def valid_depth_fraction(depth: np.ndarray) -> float:
    """Fraction of pixels with a measurement (finite and > 0)."""
    depth = np.asarray(depth)
    if depth.size == 0:
        return 0.0
    return float(np.count_nonzero(depth > 0)) / depth.size  # NaN > 0 is False


def box_valid_fraction(depth: np.ndarray, box) -> float:
    """Fraction of the pixels inside ``box`` (x0, y0, x1, y1, clipped to the image) with a
    measurement; 0.0 for a box entirely outside the image."""
    h, w = depth.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64)[:4])
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return 0.0
    c0, r0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    c1, r1 = min(w, int(math.ceil(x1))), min(h, int(math.ceil(y1)))
    if c1 <= c0 or r1 <= r0:
        return 0.0
    return valid_depth_fraction(depth[r0:r1, c0:c1])


def without_depth(frame: Frame) -> Frame:
    """The same frame for the estimator's RGB-only path."""
    return Frame(rgb=frame.rgb, K=frame.K, depth=None, stamp_ns=frame.stamp_ns, frame_id=frame.frame_id)


def downscale_factor(width: int, height: int, max_pixels: int) -> float:
    """The scale (< 1) that brings width x height within max_pixels, or 1.0 when it fits."""
    pixels = int(width) * int(height)
    if pixels <= max_pixels:
        return 1.0
    return math.sqrt(max_pixels / pixels)


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K of the image resized by (sx, sy) (pixel centres kept: c' = (c + 0.5) s - 0.5)."""
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, 0] *= sx
    K2[0, 1] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K2


def downscale_frame(frame: Frame, max_pixels: int) -> tuple[Frame, float]:
    """(frame within max_pixels, scale): colour with area interpolation, depth with nearest
    neighbour (never a depth blended across an edge), K scaled to the new size, so poses in
    meters are the same as on the full image."""
    w, h = frame.size
    s = downscale_factor(w, h, max_pixels)
    if s >= 1.0:
        return frame, 1.0
    import cv2

    nw, nh = max(16, int(w * s)), max(16, int(h * s))
    while nw * nh > max_pixels and nw > 16 and nh > 16:  # rounding never lets it exceed the bound
        nw, nh = nw - 1, max(16, int(round(nw * h / w)))
    rgb = cv2.resize(frame.rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    depth = None
    if frame.depth is not None:
        depth = cv2.resize(frame.depth, (nw, nh), interpolation=cv2.INTER_NEAREST)
    K = scale_intrinsics(frame.K, nw / w, nh / h)
    return Frame(rgb=rgb, K=K, depth=depth, stamp_ns=frame.stamp_ns, frame_id=frame.frame_id), nw / w


# camera_info distortion models the node removes (image_geometry's names); every other model is
# used as if undistorted, with a throttled warning naming it.
UNDISTORTED_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")


class Undistorter:
    """Removes lens distortion from a frame (colour bilinear, depth nearest: never a depth blended
    across an edge) with the new camera matrix = K, so K and everything downstream are
    unchanged. The remap tables are computed once per (size, K, model, D) and reused."""

    def __init__(self) -> None:
        self._key = None
        self._maps = None

    @staticmethod
    def needed(model: str, D) -> bool:
        """True when D holds a non-zero coefficient (an all-zero or empty D is a pinhole)."""
        return bool(np.any(np.asarray(D, dtype=np.float64) != 0.0))

    def __call__(self, frame: Frame, model: str, D) -> Frame:
        """The undistorted frame. Raises ValueError for a model outside UNDISTORTED_MODELS."""
        import cv2

        if model not in UNDISTORTED_MODELS:
            raise ValueError(f"distortion model {model!r} is not supported")
        D = np.asarray(D, dtype=np.float64).ravel()
        w, h = frame.size
        key = (w, h, frame.K.tobytes(), model, D.tobytes())
        if key != self._key:
            if model == "equidistant":
                maps = cv2.fisheye.initUndistortRectifyMap(frame.K, D[:4], np.eye(3), frame.K, (w, h), cv2.CV_32FC1)
            else:
                maps = cv2.initUndistortRectifyMap(frame.K, D, np.eye(3), frame.K, (w, h), cv2.CV_32FC1)
            self._key, self._maps = key, maps
        mx, my = self._maps
        rgb = cv2.remap(frame.rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        depth = None
        if frame.depth is not None:
            depth = cv2.remap(frame.depth, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return Frame(rgb=rgb, K=frame.K, depth=depth, stamp_ns=frame.stamp_ns, frame_id=frame.frame_id)

"""sensor_msgs/Image <-> numpy, for the encodings a pose node meets.

Colour: ``rgb8``, ``bgr8`` (also ``rgba8``/``bgra8``, alpha dropped) and ``mono8`` (grey
repeated to three channels) -> (H, W, 3) uint8 RGB. Depth: ``16UC1``/``mono16`` (millimetres,
0 = no measurement) and ``32FC1`` (meters, NaN = no measurement) -> (H, W) float32 meters.

Rows may be padded (``step`` > width x pixel size) and multi-byte data may be big-endian
(``is_bigendian``); both are honoured. cv_bridge is used to read the buffer when it is
importable (a ROS install from apt); otherwise numpy does the same job. An encoding that is not
supported raises :class:`ImageEncodingError` whose message names the encoding to publish.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from sixd_pose_ros.errors import ErrorKind
from sixd_pose_ros.pipeline.types import FrameError

try:  # A ROS install from apt has it; the pip environment does not.
    from cv_bridge import CvBridge

    _BRIDGE = CvBridge()
except Exception:  # noqa: BLE001 - ImportError, or a cv_bridge built against another numpy
    _BRIDGE = None

__all__ = ["ImageEncodingError", "COLOR_ENCODINGS", "DEPTH_ENCODINGS", "color_from_msg", "depth_from_msg",
           "image_to_array", "array_to_image", "image_from_compressed", "uses_cv_bridge"]

# encoding -> (numpy dtype, channels)
_LAYOUT = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "8UC3": (np.uint8, 3),
    "16UC1": (np.uint16, 1), "mono16": (np.uint16, 1), "32FC1": (np.float32, 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


class ImageEncodingError(FrameError):
    """An image the node cannot read; the message names what to publish instead."""

    kind = ErrorKind.ENCODING


def uses_cv_bridge() -> bool:
    """True when cv_bridge reads the image buffers (a ROS install), False for the numpy path."""
    return _BRIDGE is not None


def image_to_array(msg: Image) -> np.ndarray:
    """The image's pixels as (H, W) or (H, W, C) in its own encoding's dtype (native byte order).

    Raises ImageEncodingError for an encoding outside the supported set or a buffer whose size
    does not match width, height and step.
    """
    enc = msg.encoding
    if enc not in _LAYOUT:
        raise ImageEncodingError(f"image encoding {enc!r} is not supported: publish colour as rgb8 or "
                                 f"bgr8 (mono8 also works) and depth as 16UC1 (mm) or 32FC1 (m)")
    dtype, channels = _LAYOUT[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = w * channels * np.dtype(dtype).itemsize
    if h <= 0 or w <= 0:
        raise ImageEncodingError(f"{enc} image is {w}x{h}: the camera published an empty image")
    if step < row_bytes:
        raise ImageEncodingError(f"{enc} image of width {w} has step {step} < {row_bytes} bytes per row: "
                                 f"the publisher set a wrong step (width x {channels * np.dtype(dtype).itemsize})")
    data = msg.data
    size = len(data)
    if size < step * h:
        raise ImageEncodingError(f"{enc} image {w}x{h} with step {step} needs {step * h} bytes but carries "
                                 f"{size}: the publisher filled data wrongly")
    if _BRIDGE is not None:
        try:
            return np.asarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="passthrough")).reshape(
                (h, w) if channels == 1 else (h, w, channels))
        except Exception:  # noqa: BLE001 - fall back to our own reader
            pass
    if isinstance(data, (list, tuple)):
        data = bytes(data)
    buf = np.frombuffer(data, dtype=np.uint8, count=step * h)
    rows = buf.reshape(h, step)[:, :row_bytes]
    wire = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    pixels = np.ascontiguousarray(rows).view(wire).astype(dtype, copy=False)
    return pixels.reshape((h, w) if channels == 1 else (h, w, channels))


def color_from_msg(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an rgb8 / bgr8 / rgba8 / bgra8 / mono8 image."""
    if msg.encoding not in COLOR_ENCODINGS:
        hint = " (that is a depth encoding: check the colour topic remapping)" if msg.encoding in DEPTH_ENCODINGS \
            else ""
        raise ImageEncodingError(f"colour image encoding {msg.encoding!r} is not supported{hint}: publish rgb8 "
                                 f"or bgr8 (mono8 also works), e.g. set the camera driver's colour format to "
                                 f"RGB8 or convert with image_proc")
    px = image_to_array(msg)
    enc = msg.encoding
    if enc == "mono8":
        return np.repeat(px[:, :, None], 3, axis=2)
    if enc in ("bgr8", "bgra8"):
        return np.ascontiguousarray(px[:, :, 2::-1])
    return np.ascontiguousarray(px[:, :, :3])


def image_from_compressed(msg) -> Image:
    """An rgb8 sensor_msgs/Image (same header) from a sensor_msgs/CompressedImage (JPEG or PNG,
    what image_transport's compressed plugin publishes)."""
    import cv2

    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ImageEncodingError(f"compressed image (format {msg.format!r}, {data.size} bytes) could not be decoded: "
                                 f"publish JPEG or PNG (image_transport's compressed plugin), or set "
                                 f"image_transport:=raw and remap image to the raw topic")
    return array_to_image(np.ascontiguousarray(bgr[:, :, ::-1]), "rgb8", msg.header)


def depth_from_msg(msg: Image) -> np.ndarray:
    """(H, W) float32 meters from a 16UC1 / mono16 (millimetres) or 32FC1 (meters) image.

    Values are converted, not judged: NaN stays NaN and a 32FC1 image holding millimetres is
    passed on as is; Frame validation turns both into a clear verdict.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        hint = " (that is a colour encoding: check the depth topic remapping)" if msg.encoding in COLOR_ENCODINGS \
            else ""
        raise ImageEncodingError(f"depth image encoding {msg.encoding!r} is not supported{hint}: publish 16UC1 "
                                 f"(millimetres) or 32FC1 (meters), the depth aligned to the colour image")
    px = image_to_array(msg)
    if px.dtype == np.uint16:
        return px.astype(np.float32) * np.float32(0.001)
    return px.astype(np.float32, copy=False)


def array_to_image(array: np.ndarray, encoding: str, header=None, *, step: int | None = None,
                   is_bigendian: bool = False) -> Image:
    """A sensor_msgs/Image holding ``array`` in ``encoding`` (no colour conversion is done:
    pass RGB data for rgb8, BGR data for bgr8). ``step`` pads rows (for tests and drivers that
    align rows); ``is_bigendian`` writes multi-byte pixels big-endian."""
    if encoding not in _LAYOUT:
        raise ImageEncodingError(f"cannot write encoding {encoding!r}; use one of {sorted(_LAYOUT)}")
    dtype, channels = _LAYOUT[encoding]
    array = np.asarray(array)
    h, w = array.shape[:2]
    if (array.ndim == 2 and channels != 1) or (array.ndim == 3 and array.shape[2] != channels):
        raise ValueError(f"{encoding} needs {channels} channel(s), got an array of shape {array.shape}")
    wire = np.dtype(dtype).newbyteorder(">" if is_bigendian else "<")
    rows = np.ascontiguousarray(array.astype(wire, copy=False)).view(np.uint8).reshape(h, -1)
    row_bytes = rows.shape[1]
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ValueError(f"step {step} < {row_bytes} bytes per row")
    if step > row_bytes:
        rows = np.concatenate([rows, np.zeros((h, step - row_bytes), np.uint8)], axis=1)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.is_bigendian = int(bool(is_bigendian))
    msg.step = step
    msg.data = rows.tobytes()
    return msg

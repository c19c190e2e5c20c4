"""sensor_msgs/Image <-> numpy for every encoding the node reads, incl. padded rows and big-endian
data built by hand (not only by our own writer), and the errors that name what to publish."""
from __future__ import annotations

import struct

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
from sensor_msgs.msg import Image  # noqa: E402

from sixd_pose_ros.ros.image_conversion import (  # noqa: E402
    ImageEncodingError, array_to_image, color_from_msg, depth_from_msg, image_to_array,
)

pytestmark = pytest.mark.ros

RNG = np.random.default_rng(3)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _manual(width, height, encoding, rows: list[bytes], step, bigendian=False) -> Image:
    msg = Image(width=width, height=height, encoding=encoding, step=step, is_bigendian=int(bigendian))
    msg.data = b"".join(r.ljust(step, b"\xee") for r in rows)  # padding bytes are garbage on purpose
    return msg


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_colour_round_trip(encoding, pad):
    if encoding == "mono8":
        src, want = RGB[:, :, 0], np.repeat(RGB[:, :, :1], 3, axis=2)
    else:
        order = RGB[:, :, ::-1] if encoding.startswith("bgr") else RGB
        alpha = np.full(RGB.shape[:2] + (1,), 77, np.uint8)
        src = np.concatenate([order, alpha], axis=2) if encoding.endswith("a8") else order
        want = RGB
    row_bytes = src[0].nbytes
    msg = array_to_image(src, encoding, step=row_bytes + pad)
    assert msg.step == row_bytes + pad and len(msg.data) == (row_bytes + pad) * 5
    out = color_from_msg(msg)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, want)


def test_padded_bgr8_built_by_hand():
    rows = [bytes(RGB[y, :, ::-1].ravel()) for y in range(5)]
    msg = _manual(7, 5, "bgr8", rows, step=7 * 3 + 3)
    np.testing.assert_array_equal(color_from_msg(msg), RGB)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 6])
@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_depth_millimetres_to_meters(encoding, pad, bigendian):
    mm = RNG.integers(0, 5000, (4, 6)).astype(np.uint16)
    mm[0, 0] = 0  # no measurement stays 0
    msg = array_to_image(mm, encoding, step=12 + pad, is_bigendian=bigendian)
    out = depth_from_msg(msg)
    assert out.dtype == np.float32 and out.shape == (4, 6) and out[0, 0] == 0
    np.testing.assert_allclose(out, mm / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(image_to_array(msg), mm)


@pytest.mark.parametrize("bigendian", [False, True])
def test_depth_32fc1_big_endian_padded_by_hand(bigendian):
    values = np.array([[0.5, np.nan, 1.25], [2.0, 0.0, 3.5]], np.float32)
    fmt = (">" if bigendian else "<") + "3f"
    rows = [struct.pack(fmt, *row) for row in values]
    out = depth_from_msg(_manual(3, 2, "32FC1", rows, step=16, bigendian=bigendian))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), np.isnan(values))
    np.testing.assert_array_equal(np.nan_to_num(out), np.nan_to_num(values))


def test_32fc1_round_trip_keeps_nan_for_frame_validation():
    depth = RNG.uniform(0.3, 2.0, (4, 5)).astype(np.float32)
    depth[1, 1] = np.nan
    out = depth_from_msg(array_to_image(depth, "32FC1", step=4 * 5 + 4))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(depth))


@pytest.mark.parametrize("encoding, words", [
    ("yuv422", ["'yuv422'", "rgb8"]), ("bayer_rggb8", ["'bayer_rggb8'", "rgb8"]),
    ("16UC1", ["depth encoding", "remapping"]),
])
def test_unsupported_colour_encodings_name_the_fix(encoding, words):
    msg = Image(width=4, height=2, encoding=encoding, step=8)
    msg.data = bytes(16)
    with pytest.raises(ImageEncodingError) as err:
        color_from_msg(msg)
    for word in words:
        assert word in str(err.value)


def test_depth_errors_name_the_fix():
    with pytest.raises(ImageEncodingError, match="16UC1.*32FC1"):
        depth_from_msg(array_to_image(RGB, "rgb8"))
    short = array_to_image(np.zeros((4, 4), np.uint16), "16UC1")
    short.data = bytes(10)
    with pytest.raises(ImageEncodingError, match="needs 32 bytes but carries 10"):
        depth_from_msg(short)
    bad_step = array_to_image(np.zeros((4, 4), np.uint16), "16UC1")
    bad_step.step = 4
    with pytest.raises(ImageEncodingError, match="step 4 < 8"):
        depth_from_msg(bad_step)

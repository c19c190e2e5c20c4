"""Frame validation: bad camera input becomes one clear error that names the fix, and whose kind
says which input is at fault (the node files it under that kind without reading the message)."""
from __future__ import annotations

import numpy as np
import pytest

from sixd_pose_ros.errors import ErrorKind
from sixd_pose_ros.pipeline.types import Frame, FrameError

K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
RGB = np.zeros((480, 640, 3), np.uint8)


def test_good_frame_and_nan_depth_becomes_no_measurement():
    depth = np.full((480, 640), 0.8, np.float32)
    depth[0, 0], depth[1, 1] = np.nan, -1.0
    f = Frame(RGB, K, depth)
    assert f.size == (640, 480) and f.depth[0, 0] == 0 and f.depth[1, 1] == 0 and f.depth[2, 2] == np.float32(0.8)
    assert Frame(RGB, K).depth is None


@pytest.mark.parametrize("rgb, K_, depth, phrase, kind", [
    (np.zeros((480, 640), np.uint8), K, None, "rgb8", ErrorKind.IMAGE),
    (np.zeros((480, 640, 3), np.float32), K, None, "8-bit", ErrorKind.IMAGE),
    (np.zeros((8, 8, 3), np.uint8), K, None, "too small", ErrorKind.IMAGE),
    (RGB, np.zeros((3, 3)), None, "not calibrated", ErrorKind.CAMERA_INFO),
    (RGB, np.full((3, 3), np.nan), None, "camera_info.k", ErrorKind.CAMERA_INFO),
    (RGB, np.array([[600.0, 0, 1280], [0, 600, 720], [0, 0, 1]]), None, "another resolution", ErrorKind.CAMERA_INFO),
    (RGB, K, np.zeros((240, 320), np.float32), "aligned to colour", ErrorKind.DEPTH),
    (RGB, K, np.full((480, 640), 800.0, np.float32), "millimetres", ErrorKind.DEPTH),
    (RGB, K, np.zeros((480, 640), np.uint16), "16UC1", ErrorKind.DEPTH),
])
def test_bad_frames_name_the_fix(rgb, K_, depth, phrase, kind):
    with pytest.raises(FrameError, match=phrase) as err:
        Frame(rgb, K_, depth)
    assert err.value.kind is kind

"""Frame validation: bad camera input becomes one clear error that names the fix."""
from __future__ import annotations

import numpy as np
import pytest

from sixd_pose_ros.pipeline.types import Frame, FrameError

K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
RGB = np.zeros((480, 640, 3), np.uint8)


def test_good_frame_and_nan_depth_becomes_no_measurement():
    depth = np.full((480, 640), 0.8, np.float32)
    depth[0, 0], depth[1, 1] = np.nan, -1.0
    f = Frame(RGB, K, depth)
    assert f.size == (640, 480) and f.depth[0, 0] == 0 and f.depth[1, 1] == 0 and f.depth[2, 2] == np.float32(0.8)
    assert Frame(RGB, K).depth is None


@pytest.mark.parametrize("rgb, K_, depth, phrase", [
    (np.zeros((480, 640), np.uint8), K, None, "rgb8"),
    (np.zeros((480, 640, 3), np.float32), K, None, "8-bit"),
    (RGB, np.zeros((3, 3)), None, "not calibrated"),
    (RGB, np.full((3, 3), np.nan), None, "camera_info.k"),
    (RGB, np.array([[600.0, 0, 1280], [0, 600, 720], [0, 0, 1]]), None, "another resolution"),
    (RGB, K, np.zeros((240, 320), np.float32), "aligned to colour"),
    (RGB, K, np.full((480, 640), 800.0, np.float32), "millimetres"),
    (RGB, K, np.zeros((480, 640), np.uint16), "16UC1"),
])
def test_bad_frames_name_the_fix(rgb, K_, depth, phrase):
    with pytest.raises(FrameError, match=phrase):
        Frame(rgb, K_, depth)

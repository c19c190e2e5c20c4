"""Lens distortion (issue 18 item 4): camera_info's plumb_bob / rational_polynomial / equidistant
distortion is removed from colour and depth before the estimator (K kept as the new camera
matrix), and another model gets a throttled warning that names it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import wait_until

rclpy = pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from test_ros_output_frame import session_fixture  # noqa: E402,F401 - fixture

from sixd_pose_ros.pipeline.types import Frame  # noqa: E402
from sixd_pose_ros.ros.frame_checks import Undistorter  # noqa: E402
from sixd_pose_ros.ros.image_conversion import array_to_image  # noqa: E402

pytestmark = pytest.mark.ros
W, H = 320, 240
K = np.array([[250.0, 0, 159.5], [0, 250.0, 119.5], [0, 0, 1]])
D = {"plumb_bob": [-0.3, 0.1, 0.001, -0.001, 0.0], "rational_polynomial": [-0.3, 0.1, 0.001, -0.001, 0.0, 0.0, 0.0, 0.0],
     "equidistant": [0.1, -0.05, 0.01, 0.0]}
POINTS = np.array([[-0.12, -0.08, 0.5], [0.1, 0.07, 0.5], [0.0, 0.0, 0.5], [0.13, -0.09, 0.5]])


def _distorted_dots(model):
    """An image of white dots where the lens puts POINTS, and the ideal (pinhole) pixels."""
    if model == "equidistant":
        uv = cv2.fisheye.projectPoints(POINTS[None], np.zeros(3), np.zeros(3), K, np.array(D[model]))[0][0]
    else:
        uv = cv2.projectPoints(POINTS, np.zeros(3), np.zeros(3), K, np.array(D[model]))[0][:, 0]
    rgb = np.zeros((H, W, 3), np.uint8)
    for u, v in uv:
        cv2.circle(rgb, (int(round(u)), int(round(v))), 2, (255, 255, 255), -1)
    ideal = (K @ POINTS.T).T
    return rgb, ideal[:, :2] / ideal[:, 2:]


def _dots(rgb):
    n, _, _, centroids = cv2.connectedComponentsWithStats((rgb[:, :, 0] > 60).astype(np.uint8))
    return centroids[1:]


@pytest.mark.parametrize("model", sorted(D))
def test_undistortion_puts_points_where_the_pinhole_k_projects_them(model):
    rgb, ideal = _distorted_dots(model)
    depth = np.where(rgb[:, :, 0] > 0, 0.5, 0.0).astype(np.float32)
    out = Undistorter()(Frame(rgb=rgb, K=K, depth=depth), model, D[model])
    assert np.array_equal(out.K, K)
    found = _dots(out.rgb)
    assert len(found) == len(POINTS)
    for p in ideal:
        assert np.min(np.linalg.norm(found - p, axis=1)) < 1.0, (model, p, found)
    assert set(np.unique(out.depth)) <= {np.float32(0.0), np.float32(0.5)}  # nearest: no blended depth
    assert Undistorter.needed(model, D[model]) and not Undistorter.needed(model, [0.0] * 5)
    assert not Undistorter.needed("plumb_bob", [])


def _send(s, model, d):
    s.stamp += 100_000_000
    header = Header(stamp=Time(sec=s.stamp // 10**9, nanosec=s.stamp % 10**9), frame_id="cam")
    rgb, _ = _distorted_dots("plumb_bob")
    s.pub_info.publish(CameraInfo(header=header, width=W, height=H, k=[float(v) for v in K.ravel()],
                                  distortion_model=model, d=d))
    s.pub_raw.publish(array_to_image(rgb, "rgb8", header))
    wait_until(lambda: any(f.stamp_ns == s.stamp for f in s.est.frames), 10, f"the frame with {model}")
    return next(f for f in s.est.frames if f.stamp_ns == s.stamp), rgb


def test_the_node_undistorts_or_names_the_model_it_cannot(session):
    s = session
    frame, sent = _send(s, "plumb_bob", D["plumb_bob"])
    assert np.array_equal(frame.K, K) and not np.array_equal(frame.rgb, sent)
    assert len(_dots(frame.rgb)) == len(POINTS)
    frame, sent = _send(s, "plumb_bob", [0.0] * 5)  # a pinhole camera: untouched
    assert np.array_equal(frame.rgb, sent)
    frame, sent = _send(s, "double_sphere", [0.5, 0.6])
    assert np.array_equal(frame.rgb, sent)
    log = wait_until(lambda: next((m.msg for m in s.logs if "distortion model 'double_sphere'" in m.msg), None), 5,
                     "the unsupported-model warning")
    assert "not supported" in log and "image_proc" in log

"""Depth honesty (issue 18 item 1): a frame whose depth is unusable (a dropout: all 0 or NaN), or
an object whose box holds too few depth measurements, is estimated on the estimator's RGB-only
path and published marked so (score x depth.rgb_only_score_scale, a position covariance in
Detection3DArray, "RGB-only" in /diagnostics); never with the confidence of an RGB-D estimate.
Over real DDS with the stand-in estimator of test_ros_output_frame (finds the drill at score 0.8
in its box (0, 0, 10, 10), and keeps the frames it was given)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import wait_until

rclpy = pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from test_ros_diagnostics import diagnostics_and_depth  # noqa: E402
from test_ros_output_frame import H, K, W, _rgb, session_fixture  # noqa: E402,F401 - fixture

from sixd_pose_ros.ros.frame_checks import box_valid_fraction, valid_depth_fraction  # noqa: E402
from sixd_pose_ros.ros.image_conversion import array_to_image  # noqa: E402
from sixd_pose_ros.ros.publishers import HAS_VISION_MSGS  # noqa: E402
from sixd_pose_ros.ros.sync import stamp_ns  # noqa: E402

pytestmark = pytest.mark.ros


def test_valid_fractions():
    depth = np.full((10, 20), 0.5, np.float32)
    depth[:5] = 0.0
    depth[5:, :10] = np.nan
    assert valid_depth_fraction(depth) == pytest.approx(0.25)
    assert box_valid_fraction(depth, (10, 5, 20, 10)) == 1.0
    assert box_valid_fraction(depth, (0, 0, 10, 10)) == 0.0
    assert box_valid_fraction(depth, (-5, -5, 30, 30)) == pytest.approx(0.25)  # clipped to the image
    assert box_valid_fraction(depth, (40, 40, 50, 50)) == 0.0  # outside
    assert box_valid_fraction(depth, (np.nan, 0, 5, 5)) == 0.0


@pytest.mark.parametrize("session", [{"use_depth": True, "diagnostics_period": 0.2}], indirect=True)
def test_depth_dropout_between_good_frames_is_published_rgb_only(session):
    s = session
    diags, pub_depth = diagnostics_and_depth(s)

    def send(depth):
        s.stamp += 100_000_000
        header = Header(stamp=Time(sec=s.stamp // 10**9, nanosec=s.stamp % 10**9), frame_id="cam")
        s.pub_info.publish(CameraInfo(header=header, width=W, height=H, k=K))
        pub_depth.publish(array_to_image(depth.astype(np.float32), "32FC1", header))
        s.pub_raw.publish(array_to_image(_rgb(), "rgb8", header))
        return s.stamp

    def outputs(stamp):
        pose = wait_until(lambda: next((m for m in s.poses if stamp_ns(m) == stamp), None), 10, f"pose {stamp}")
        det = None
        if HAS_VISION_MSGS:
            det = wait_until(lambda: next((d for d in s.detections if stamp_ns(d) == stamp), None), 5, "detections")
        wait_until(lambda: not s.node._worker.busy, 10, "the worker")
        return pose, det

    good = np.full((H, W), 0.5, np.float32)
    frames_seen = []
    results = []
    sent = []
    for depth in (good, np.zeros((H, W)), np.full((H, W), np.nan), good):
        sent.append(send(depth))
        results.append(outputs(sent[-1]))
        frames_seen.append([f for f in s.est.frames if f.stamp_ns == sent[-1]])
    # The estimator saw depth on the good frames and none on the dropouts (its RGB-only path).
    assert [[f.depth is not None for f in fs] for fs in frames_seen] == [[True], [False], [False], [True]]
    if HAS_VISION_MSGS:
        scores = [det.detections[0].results[0].hypothesis.score for _, det in results]
        assert scores == pytest.approx([0.8, 0.4, 0.4, 0.8])  # score x depth.rgb_only_score_scale (0.5)
        covs = [np.asarray(det.detections[0].results[0].pose.covariance) for _, det in results]
        assert not covs[0].any() and not covs[3].any()  # RGB-D: not estimated (zero)
        var = (0.1 * np.linalg.norm([0.1, 0.0, 0.5])) ** 2  # 10 % of the distance, on x, y, z
        assert covs[1][[0, 7, 14]] == pytest.approx([var] * 3) and covs[1][21:].sum() == 0
    status = wait_until(lambda: next((d for d in reversed(diags) if "RGB-only: depth unusable" in d.message), None),
                        5, "the RGB-only diagnostic")
    assert status.level == DiagnosticStatus.WARN and "0.0% of the depth image valid" in status.message
    values = wait_until(lambda: next((v for v in ({kv.key: kv.value for kv in d.values} for d in reversed(diags))
                                      if v["frames_processed"] == "4"), None), 5, "diagnostics of the 4 frames")
    assert values["frames_rgb_only"] == "2" and values["depth/drill"] == "rgbd"  # the last frame had depth

    # A score that drops below min_score once scaled: absent (no pose), like any low score.
    assert s.node.set_parameters([rclpy.parameter.Parameter("min_score", value=0.5)])[0].successful
    stamp = send(np.zeros((H, W)))
    wait_until(lambda: any(f.stamp_ns == stamp for f in s.est.frames) and not s.node._worker.busy, 10, "the frame")
    assert not [m for m in s.poses if stamp_ns(m) == stamp]


@pytest.mark.parametrize("session", [{"use_depth": True}], indirect=True)
def test_an_object_box_without_depth_takes_the_rgb_only_estimate(session):
    s = session
    _, pub_depth = diagnostics_and_depth(s)
    depth = np.full((H, W), 0.5, np.float32)
    depth[:12, :12] = 0.0  # the drill's box (0, 0, 10, 10) has no depth; the rest of the image does
    s.stamp += 100_000_000
    header = Header(stamp=Time(sec=s.stamp // 10**9, nanosec=s.stamp % 10**9), frame_id="cam")
    s.pub_info.publish(CameraInfo(header=header, width=W, height=H, k=K))
    pub_depth.publish(array_to_image(depth, "32FC1", header))
    s.pub_raw.publish(array_to_image(_rgb(), "rgb8", header))
    wait_until(lambda: next((m for m in s.poses if stamp_ns(m) == s.stamp), None), 10, "the pose")
    seen = [f.depth is not None for f in s.est.frames if f.stamp_ns == s.stamp]
    assert seen == [True, False]  # the RGB-D pass, then the RGB-only pass for the drill
    if HAS_VISION_MSGS:
        det = wait_until(lambda: next((d for d in s.detections if stamp_ns(d) == s.stamp), None), 5, "detections")
        assert det.detections[0].results[0].hypothesis.score == pytest.approx(0.4)
    log = wait_until(lambda: next((m.msg for m in s.logs if "RGB-only: depth unusable in drill's box" in m.msg),
                                  None), 5, "the warning")
    assert "0% valid" in log

"""What the node publishes, built without DDS: pose/TF messages, markers (mesh, box fallback,
deletion of absent objects, alpha from score), the debug overlay, diagnostics levels, and the
newest-item-wins worker."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from sixd_pose_ros.geometry.rotations import matrix_from_axis_angle, matrix_from_quat_xyzw  # noqa: E402
from sixd_pose_ros.pipeline.types import ObjectPose  # noqa: E402
from sixd_pose_ros.ros.diagnostics import PipelineStats, diagnostic_array  # noqa: E402
from sixd_pose_ros.ros.estimator_loader import ObjectInfo  # noqa: E402
from sixd_pose_ros.ros.overlay import draw_overlay  # noqa: E402
from sixd_pose_ros.ros.publishers import marker_alpha, marker_array, pose_msg, transform_msg  # noqa: E402
from sixd_pose_ros.ros.worker import LatestWorker  # noqa: E402

pytestmark = pytest.mark.ros

K = np.array([[200.0, 0, 80.0], [0, 200.0, 60.0], [0, 0, 1.0]])
HEADER = Header(stamp=Time(sec=7, nanosec=5), frame_id="cam")
R = matrix_from_axis_angle(np.array([0.0, 0.0, 1.0]), 0.5)


def _pose(name="drill", score=0.8, t=(0.01, 0.02, 0.5)):
    return ObjectPose(name, R, np.array(t), score, np.array([50.0, 40.0, 110.0, 80.0]))


def _info(name="drill", mesh: Path | None = None):
    return ObjectInfo(name, mesh, np.array([-0.05, -0.02, 0.0]), np.array([0.05, 0.02, 0.1]))


def test_pose_and_transform_messages():
    msg = pose_msg(_pose(), HEADER)
    q = msg.pose.orientation
    np.testing.assert_allclose(matrix_from_quat_xyzw(np.array([q.x, q.y, q.z, q.w])), R, atol=1e-9)
    assert (msg.pose.position.x, msg.pose.position.z) == (0.01, 0.5) and msg.header.frame_id == "cam"
    tf = transform_msg(_pose(), HEADER, "sixd_drill")
    assert tf.child_frame_id == "sixd_drill" and tf.header.stamp.nanosec == 5
    assert (tf.transform.rotation.z, tf.transform.rotation.w) == (q.z, q.w)


def test_markers_mesh_box_and_deletion(tmp_path):
    mesh = tmp_path / "mesh.ply"
    mesh.write_text("ply")
    infos = [_info("drill", mesh), _info("mug"), _info("absent")]
    arr = marker_array([_pose("drill", 0.9), _pose("mug", 0.1)], infos, HEADER)
    by = {(m.ns, m.id): m for m in arr.markers}
    drill, mug, gone = by[("drill", 0)], by[("mug", 0)], by[("absent", 0)]
    assert drill.type == Marker.MESH_RESOURCE and drill.mesh_resource == f"file://{mesh}"
    assert mug.type == Marker.CUBE and (mug.scale.x, mug.scale.y, mug.scale.z) == pytest.approx((0.1, 0.04, 0.1))
    centre = R @ np.array([0.0, 0.0, 0.05]) + np.array([0.01, 0.02, 0.5])  # box centre, not object origin
    assert (mug.pose.position.x, mug.pose.position.y, mug.pose.position.z) == pytest.approx(tuple(centre))
    assert gone.action == Marker.DELETE and by[("absent", 1)].action == Marker.DELETE
    assert drill.color.a > mug.color.a  # fades with score
    assert by[("drill", 1)].text == "drill 0.90" and drill.header.frame_id == "cam"
    assert marker_alpha(0.0) == pytest.approx(0.15) and marker_alpha(1.0) == pytest.approx(1.0)


def test_overlay_draws_and_survives_poses_behind_the_camera():
    rgb = np.zeros((120, 160, 3), np.uint8)
    out = draw_overlay(rgb, K, [_pose(), _pose("mug", t=(0.0, 0.0, -0.5))], {"drill": 0.05})
    assert out.shape == rgb.shape and out.any() and not rgb.any()
    centre = np.round(K @ np.array([0.01, 0.02, 0.5]) / 0.5).astype(int)[:2]
    assert out[centre[1] - 2:centre[1] + 3, centre[0] - 2:centre[0] + 3].any()  # axes start at the origin


def test_diagnostic_levels():
    stats = PipelineStats()
    stamp = Time(sec=1)
    msg = diagnostic_array(stats.snapshot(), name="n", hardware_id="cam", stamp=stamp, active=False)
    assert msg.status[0].level == DiagnosticStatus.WARN and "inactive" in msg.status[0].message
    msg = diagnostic_array(stats.snapshot(), name="n", hardware_id="cam", stamp=stamp)
    assert "no input" in msg.status[0].message
    stats.input("image")
    stats.synced(replaced_pending=True)
    stats.done({"backbone": 10.0, "total": 30.0}, {"drill": 0.7})
    msg = diagnostic_array(stats.snapshot(), name="n", hardware_id="cam", stamp=stamp, extra={"state": "active"})
    values = {kv.key: kv.value for kv in msg.status[0].values}
    assert msg.status[0].level == DiagnosticStatus.OK and "drill" in msg.status[0].message
    assert values["frames_dropped"] == "1" and values["latency_ms/backbone"] == "10.0"
    assert values["score/drill"] == "0.700" and values["state"] == "active"
    stats.error("camera_info", "camera_info.k is all zeros: calibrate")
    msg = diagnostic_array(stats.snapshot(), name="n", hardware_id="cam", stamp=stamp)
    assert msg.status[0].level == DiagnosticStatus.WARN and msg.status[0].message.startswith("camera_info.k")
    assert {kv.key: kv.value for kv in msg.status[0].values}["bad_frames"] == "1"


def test_worker_processes_the_newest_item_and_counts_the_replaced():
    gate, seen = threading.Event(), []

    def process(item):
        if item == 0:
            gate.wait(5)
        seen.append(item)

    worker = LatestWorker(process).start()
    worker.submit(0)
    deadline = time.monotonic() + 5
    while not worker.busy and time.monotonic() < deadline:
        time.sleep(0.005)
    replaced = [worker.submit(i) for i in range(1, 6)]
    assert replaced == [False, True, True, True, True]
    gate.set()
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert worker.stop(2.0)
    assert seen == [0, 5] and worker.dropped == 4 and worker.submitted == 6


def test_worker_survives_errors_and_honours_max_rate():
    errors, times = [], []

    def process(item):
        times.append(time.monotonic())
        if item == "bad":
            raise ValueError("bad frame")

    worker = LatestWorker(process, max_rate_hz=20.0, on_error=errors.append).start()
    for item in ("bad", "good", "good2"):
        worker.submit(item)
        time.sleep(0.01)
    deadline = time.monotonic() + 5
    while len(times) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    worker.stop(2.0)
    assert [str(e) for e in errors] == ["bad frame"]
    assert len(times) >= 2 and times[1] - times[0] >= 0.045  # 20 Hz: >= 50 ms apart (small timer slack)

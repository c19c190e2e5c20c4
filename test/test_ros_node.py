"""The pose node end to end over real DDS, with the real known-model estimator (random-init
weights and an object database built into a temporary folder, as test_known_model does): so
these tests check plumbing, not accuracy.

One node runs in-process for the module (namespace /camera); a probe node publishes rendered
colour / depth / camera_info and listens to the outputs. A last test starts `sixd_pose_node`
as a process with config/sixd_pose_node.yaml and stops it with SIGINT.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import torch_single_thread, wait_until

rclpy = pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
torch = pytest.importorskip("torch")
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from sixd_pose_ros.ros.image_conversion import array_to_image, color_from_msg  # noqa: E402
from sixd_pose_ros.ros.launch_support import camera_remappings, default_interrupts, remap_arguments  # noqa: E402
from sixd_pose_ros.ros.node import HAS_LIFECYCLE, SUCCESS, SixdPoseNode  # noqa: E402
from sixd_pose_ros.ros.sync import stamp_ns  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
W, H = 320, 240
K = np.array([[300.0, 0, 160.0], [0, 300.0, 120.0], [0, 0, 1.0]])
OUT = "/camera/sixd_pose_node"
FRAME = "cam_color_optical"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Random-init weights, a small object database of the bundled demo object, a rendered frame."""
    from conftest import build_small_database, save_untrained_weights

    from sixd_pose_ros.geometry.rotations import matrix_from_axis_angle
    from sixd_pose_ros.render.renderer import RenderMesh, render

    with torch_single_thread():
        tmp = tmp_path_factory.mktemp("ros_node")
        weights = save_untrained_weights(tmp / "weights")
        db, obj = build_small_database(weights, tmp)
        R = matrix_from_axis_angle(np.array([1.0, 0.3, 0.2]) / np.linalg.norm([1.0, 0.3, 0.2]), 2.0)
        out = render([RenderMesh.from_trimesh(obj.mesh)], R[None], np.array([[0.02, -0.01, 0.6]]), K, W, H)
        # A wall 1 m away behind the object: a camera sees depth around an object, and an object box
        # without depth would be estimated RGB-only (test_ros_depth_honesty).
        depth = np.where(out.depth[0] > 0, out.depth[0], np.float32(1.0)).astype(np.float32)
        yield SimpleNamespace(weights=str(weights), db=str(db), rgb=out.rgb[0], depth=depth)


class Harness:
    """The node under test plus a probe node, spun by one executor in a background thread."""

    def __init__(self, world) -> None:
        self.world = world
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = SixdPoseNode(context=self.ctx, namespace="camera", cli_args=remap_arguments(
            camera_remappings("/camera")), parameter_overrides=[
            Parameter("objects", value=[world.db]), Parameter("weights_dir", value=world.weights),
            Parameter("min_score", value=0.0), Parameter("refine_iterations", value=1),
            Parameter("diagnostics_period", value=0.5), Parameter("warn_period", value=1.0)])
        assert self.node.start(), self.node.configure_error
        p = self.probe = rclpy.create_node("probe", context=self.ctx)
        self.pub_color = p.create_publisher(Image, "/camera/color/image_raw", 10)
        self.pub_depth = p.create_publisher(Image, "/camera/aligned_depth_to_color/image_raw", 10)
        self.pub_info = p.create_publisher(CameraInfo, "/camera/color/camera_info", 10)
        self.poses, self.tf, self.diags, self.logs, self.markers, self.debug = [], [], [], [], [], []
        self.diag_names: set[str] = set()
        p.create_subscription(PoseStamped, f"{OUT}/drill/pose", self.poses.append, 50)
        p.create_subscription(TFMessage, "/tf", self.tf.append, 100)
        p.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 100)
        p.create_subscription(MarkerArray, f"{OUT}/markers", self.markers.append, 50)
        p.create_subscription(Image, f"{OUT}/debug_image", self.debug.append, 5)
        p.create_subscription(Log, "/rosout", self.logs.append, QoSProfile(
            depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(p)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.stamp = 1000 * 10**9
        self.wait(lambda: min(pub.get_subscription_count() for pub in
                              (self.pub_color, self.pub_depth, self.pub_info)) > 0, 15, "discovery")

    def _on_diag(self, msg):
        for status in msg.status:
            self.diag_names.add(status.name)
            if status.name.startswith(f"{OUT}:"):
                self.diags.append((status, {kv.key: kv.value for kv in status.values}))

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(5)
        self.node.trigger_shutdown()
        self.node.destroy_node()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.ctx)

    wait = staticmethod(wait_until)

    def wait_idle(self, timeout=20.0):
        assert self.node.wait_until_idle(timeout), "the worker did not go idle"
        worker = self.node._worker
        assert worker is None or not (worker.busy or worker.has_pending)

    def send(self, *, stamp=None, rgb=None, depth=None, k=None, color_encoding="rgb8", depth_encoding="16UC1",
             frame_id=FRAME) -> int:
        if stamp is None:
            self.stamp += 100_000_000
            stamp = self.stamp
        header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id)
        rgb = self.world.rgb if rgb is None else rgb
        if color_encoding == "rgb8":
            color = array_to_image(rgb, "rgb8", header)
        else:  # an encoding the node does not read: right size, meaningless bytes
            color = Image(header=header, height=H, width=W, encoding=color_encoding, step=2 * W)
            color.data = bytes(2 * W * H)
        depth = self.world.depth if depth is None else depth
        if depth_encoding == "16UC1":
            depth_msg = array_to_image(np.round(depth * 1000).astype(np.uint16), "16UC1", header)
        else:
            depth_msg = array_to_image(depth.astype(np.float32), depth_encoding, header)
        info = CameraInfo(header=Header(stamp=header.stamp, frame_id="info_frame"), width=W, height=H)
        info.k = [float(v) for v in (K if k is None else k).ravel()]
        self.pub_depth.publish(depth_msg)
        self.pub_info.publish(info)
        self.pub_color.publish(color)
        return stamp

    def pose_for(self, stamp, timeout=20.0):
        return self.wait(lambda: next((m for m in self.poses if stamp_ns(m) == stamp), None), timeout,
                         f"a pose stamped {stamp}")

    def diag_where(self, predicate, timeout=10.0, what="a diagnostic"):
        return self.wait(lambda: next((d for d in reversed(self.diags) if predicate(*d)), None), timeout, what)

    def good_frame_is_processed(self):
        self.wait_idle()
        self.pose_for(self.send())


@pytest.fixture(scope="module")
def h(world):
    harness = Harness(world)
    yield harness
    harness.close()


def test_pose_tf_markers_debug_image_and_diagnostics_carry_the_colour_header(h, world):
    sent, pose = [], None
    deadline = time.monotonic() + 30
    while pose is None and time.monotonic() < deadline:  # first frames may beat DDS matching
        sent.append(h.send())
        try:
            pose = h.pose_for(sent[-1], timeout=8)
        except AssertionError:
            pass
    assert pose is not None, "no pose from the node"
    stamp = stamp_ns(pose)
    assert pose.header.frame_id == FRAME  # the colour image's, not camera_info's
    q = pose.pose.orientation
    assert abs(np.linalg.norm([q.x, q.y, q.z, q.w]) - 1) < 1e-6
    assert np.isfinite([pose.pose.position.x, pose.pose.position.y, pose.pose.position.z]).all()

    def tf_for_stamp():
        return next((t for m in h.tf for t in m.transforms if t.child_frame_id == "sixd_drill"
                     and stamp_ns(t) == stamp), None)

    tf = h.wait(tf_for_stamp, 5, "TF camera -> sixd_drill")
    assert tf.header.frame_id == FRAME
    assert (tf.transform.translation.x, tf.transform.translation.z) == (pose.pose.position.x, pose.pose.position.z)

    def marker_for_stamp():
        return next((mk for m in h.markers for mk in m.markers if mk.ns == "drill" and mk.id == 0
                     and stamp_ns(mk) == stamp), None)

    marker = h.wait(marker_for_stamp, 5, "the drill marker")
    assert marker.action == Marker.ADD and marker.type == Marker.MESH_RESOURCE
    assert marker.mesh_resource.startswith("file://") and Path(marker.mesh_resource[7:]).is_file()
    assert 0.15 <= marker.color.a <= 1.0 and marker.header.frame_id == FRAME

    debug = h.wait(lambda: next((m for m in h.debug if stamp_ns(m) == stamp), None), 5, "the debug image")
    overlay = color_from_msg(debug)
    assert overlay.shape == (H, W, 3) and debug.header.frame_id == FRAME
    assert np.any(overlay != world.rgb)  # boxes and axes were drawn

    status, values = h.diag_where(lambda s, v: int(v["frames_processed"]) >= 1 and "latency_ms/drill/detect" in v,
                                  what="diagnostics with a processed frame")
    for key in ("input_rate_hz", "output_rate_hz", "frames_dropped", "latency_ms/backbone", "latency_ms/drill/refine",
                "latency_ms/drill/depth", "latency_ms/total", "received/image", "received/depth"):
        assert key in values, key
    assert values["state"] == "active" and values["tf_backend"] in ("tf2_ros", "tf2_msgs")
    assert values["objects"] == "drill" and status.hardware_id == FRAME


def test_an_object_not_found_gets_no_pose_and_its_marker_is_deleted(h):
    h.wait_idle()
    est = h.node.estimator
    est.config = replace(est.config, min_detection_score=1.01)  # the real estimator now reports the object absent
    h.node.estimator.reset_tracking()  # a track on the wall's depth would go on without detection
    try:
        n_markers = len(h.markers)
        stamp = h.send()
        deleted = h.wait(lambda: next((mk for m in h.markers[n_markers:] for mk in m.markers
                                       if stamp_ns(mk) == stamp and mk.ns == "drill"), None), 20, "marker update")
        assert deleted.action == Marker.DELETE
        h.wait_idle()
        time.sleep(0.3)
        assert not any(stamp_ns(m) == stamp for m in h.poses)
        assert not any(stamp_ns(t) == stamp for m in h.tf for t in m.transforms)
    finally:
        est.config = replace(est.config, min_detection_score=0.0)


def test_a_flood_of_frames_keeps_only_the_newest(h):
    h.wait_idle()
    before = int(h.diags[-1][1]["frames_dropped"]) if h.diags else 0
    stamps = []
    for _ in range(20):  # back to back: far faster than the estimator
        stamps.append(h.send())
    last = h.pose_for(stamps[-1], timeout=30)  # the newest frame is always processed
    assert stamp_ns(last) == stamps[-1]
    h.wait_idle()
    processed = {stamp_ns(m) for m in h.poses} & set(stamps)
    assert len(processed) < len(stamps)
    h.diag_where(lambda s, v: int(v["frames_dropped"]) > before, what="frames_dropped to grow")


BAD_INPUTS = [
    ("camera_info K all zeros", dict(k=np.zeros((3, 3))), "camera_info.k is all zeros"),
    ("a yuv422 image", dict(color_encoding="yuv422"), "'yuv422' is not supported"),
    ("depth in millimetres labelled 32FC1", dict(depth_encoding="32FC1", mm=True), "depth is in millimetres"),
    ("a colour image of another size", dict(rgb=np.zeros((120, 160, 3), np.uint8)), "camera_info is for 320x240"),
]


@pytest.mark.parametrize("case, kwargs, expected", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_warns_names_the_fix_and_the_node_keeps_going(h, world, case, kwargs, expected):
    h.wait_idle()
    kwargs = dict(kwargs)
    if kwargs.pop("mm", False):
        kwargs["depth"] = world.depth * 1000.0
    n_logs = len(h.logs)
    h.send(**kwargs)
    status, values = h.diag_where(lambda s, v: expected in v["last_error"], what=f"a diagnostic for {case}")
    assert status.level == status.WARN
    h.wait(lambda: any(m.level == Log.WARN and expected in m.msg and m.name == "camera.sixd_pose_node"
                       for m in h.logs[n_logs:]), 5, f"a warning on /rosout for {case}")
    h.good_frame_is_processed()


def test_out_of_order_stamps_and_estimator_errors_are_survived(h):
    h.wait_idle()
    h.send(stamp=h.stamp - 50_000_000)  # older than the last synchronized set
    h.diag_where(lambda s, v: "out-of-order stamps on /camera/" in v["last_error"], what="out-of-order diagnostic")
    estimator = h.node.estimator

    def boom(frame):
        raise RuntimeError("boom")

    estimator.estimate = boom
    try:
        h.send()
        _, values = h.diag_where(lambda s, v: "the estimator failed" in v["last_error"] and "boom" in v["last_error"],
                                 what="estimator error diagnostic")
        assert int(values["estimator_errors"]) >= 1
    finally:
        del estimator.estimate
    h.good_frame_is_processed()


def _call(h, client, request, timeout=10.0):
    assert client.wait_for_service(timeout_sec=timeout)
    future = client.call_async(request)
    h.wait(future.done, timeout, f"a reply from {client.srv_name}")
    return future.result()


@pytest.mark.skipif(not HAS_LIFECYCLE, reason="rclpy without lifecycle support")
def test_lifecycle_transitions_and_reset_over_services(h):
    get_state = h.probe.create_client(GetState, f"{OUT}/get_state")
    change = h.probe.create_client(ChangeState, f"{OUT}/change_state")
    reset = h.probe.create_client(Trigger, f"{OUT}/reset")
    assert _call(h, get_state, GetState.Request()).current_state.label == "active"
    h.wait_idle()
    req = ChangeState.Request()
    req.transition.id = Transition.TRANSITION_DEACTIVATE
    assert _call(h, change, req).success
    assert _call(h, get_state, GetState.Request()).current_state.label == "inactive"
    assert h.node._subs == [] and h.node.estimator is not None  # subscriptions dropped, estimator kept
    h.diag_where(lambda s, v: v["state"] == "inactive", what="inactive diagnostics")
    req.transition.id = Transition.TRANSITION_ACTIVATE
    assert _call(h, change, req).success
    h.wait(lambda: h.pub_color.get_subscription_count() > 0, 10, "resubscription")
    reply = _call(h, reset, Trigger.Request())
    assert reply.success and "reset" in reply.message
    sent = [h.send()]
    while True:  # the fresh subscriptions may miss the first frame while DDS matches them
        try:
            h.pose_for(sent[-1], timeout=6)
            break
        except AssertionError:
            assert len(sent) < 4, "no pose after re-activation"
            sent.append(h.send())


def test_configure_refuses_model_free_without_selector_and_missing_files(h, world, tmp_path):
    cases = [
        ([Parameter("mode", value="model_free"), Parameter("objects", value=[world.db]),
          Parameter("weights_dir", value=str(world.weights))], "lacks ['selector.pt']"),
        ([Parameter("objects", value=[world.db]), Parameter("weights_dir", value=str(tmp_path / "none"))],
         "is not a folder"),
        ([Parameter("objects", value=[str(tmp_path)])], "has no object.json"),
    ]
    for i, (overrides, expected) in enumerate(cases):
        node = SixdPoseNode(f"refused_{i}", context=h.ctx, parameter_overrides=overrides)
        try:
            assert node.trigger_configure() != SUCCESS
            assert expected in node.configure_error
            assert node.estimator is None and node.outputs is None
        finally:
            node.destroy_node()


def test_the_executable_starts_with_the_yaml_and_stops_cleanly_on_sigint(h, world):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "sixd_pose_ros.ros.node_main", "--ros-args",
           "--params-file", str(ROOT / "config" / "sixd_pose_node.yaml"),
           "-p", f"objects:=[{world.db}]", "-p", f"weights_dir:={world.weights}", "-p", "num_threads:=1",
           "-p", "diagnostics_period:=0.5", "-r", "__ns:=/proc_test"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=default_interrupts)
    try:
        def up():
            names = {n for n, _ in h.probe.get_topic_names_and_types()}
            return "/proc_test/sixd_pose_node/drill/pose" in names and any(
                n.startswith("/proc_test/sixd_pose_node:") for n in list(h.diag_names))

        h.wait(lambda: proc.poll() is not None or up(), 45, "the node process to come up")
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=20)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output[-3000:]
    # Unremapped, the inputs are the node's relative names in its namespace.
    assert "active: listening to /proc_test/image, /proc_test/camera_info, /proc_test/depth" in output



def test_refused_parameters_keep_the_old_value_and_say_why(h):
    node = h.node
    d = node.describe_parameter("min_score")
    assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == (0.0, 1.0)
    assert not d.read_only and node.describe_parameter("objects").read_only
    assert node.describe_parameter("queue_size").integer_range[0].to_value == 1000
    result = node.set_parameters([Parameter("min_score", value=5.0)])[0]  # outside the descriptor's range
    assert not result.successful and "min_score out of range" in result.reason
    result = node.set_parameters([Parameter("min_score", value="high")])[0]  # our validation
    assert not result.successful and "min_score: 'high' is not a number" in result.reason
    assert node.get_parameter("min_score").value == 0.0 and node.params.min_score == 0.0
    for name, value in (("objects", ["/does/not/exist"]), ("queue_size", 10**12), ("backend", "cuda")):
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and f"read-only parameter: {name}" in result.reason


def test_thresholds_rates_and_tracking_apply_to_the_next_frame(h):
    node = h.node
    h.good_frame_is_processed()
    try:
        assert all(r.successful for r in node.set_parameters([
            Parameter("tracking.enabled", value=False), Parameter("min_score", value=1.0),
            Parameter("max_rate_hz", value=5.0)]))
        assert node.estimator.config.min_detection_score == 1.0 and node.estimator.config.tracking.enabled is False
        assert node._worker.min_interval == pytest.approx(0.2)
        h.wait_idle()
        done = node.stats.snapshot()["processed"]
        stamp = h.send()
        h.wait(lambda: node.stats.snapshot()["processed"] > done, 20, "the frame to be processed")
        time.sleep(0.2)
        assert not [m for m in h.poses if stamp_ns(m) == stamp]  # nothing scores 1.0 with random weights
    finally:
        assert all(r.successful for r in node.set_parameters([
            Parameter("min_score", value=0.0), Parameter("tracking.enabled", value=True),
            Parameter("max_rate_hz", value=0.0)]))
    assert node.estimator.config.min_detection_score == 0.0 and node._worker.min_interval == 0.0
    h.good_frame_is_processed()  # and back: a pose again

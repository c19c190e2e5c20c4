"""frames.output_frame (poses and detections moved through TF, none when TF lacks the transform)
and the compressed colour input, over real DDS with a stand-in estimator that always finds the
drill at a known pose (fast and exact; the real estimator is test_ros_node's business)."""
from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import wait_until

rclpy = pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import PoseStamped, TransformStamped  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from sixd_pose_ros.pipeline.types import Estimator, ObjectPose  # noqa: E402
from sixd_pose_ros.ros.estimator_loader import ObjectInfo  # noqa: E402
from sixd_pose_ros.ros.image_conversion import array_to_image, image_from_compressed  # noqa: E402
from sixd_pose_ros.ros.launch_support import camera_remappings, remap_arguments  # noqa: E402
from sixd_pose_ros.ros.node import TF_STATIC_QOS, SixdPoseNode  # noqa: E402
from sixd_pose_ros.ros.publishers import HAS_VISION_MSGS  # noqa: E402
from sixd_pose_ros.ros.sync import stamp_ns  # noqa: E402

pytestmark = pytest.mark.ros
W, H = 64, 48
K = [60.0, 0, 32.0, 0, 60.0, 24.0, 0, 0, 1.0]
T_CAM = np.array([0.1, 0.0, 0.5])
OUT = "/of/sixd_pose_node"


class _Drill(Estimator):
    """Finds the drill at T_CAM in every frame; keeps the frames it was given."""

    def __init__(self):
        self.frames = []

    def estimate(self, frame):
        self.frames.append(frame)
        return [ObjectPose("drill", np.eye(3), T_CAM.copy(), 0.8, np.array([0, 0, 10, 10.0]))]


def _rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (H, W, 3), dtype=np.uint8)


def stand_in_node(ctx, est, folder, *, namespace: str, parameters=(), **kwargs) -> SixdPoseNode:
    """A SixdPoseNode on ``ctx`` whose estimator is ``est``, holding one object, the drill, whose
    database is a bare object.json written to ``folder``; depth off and warnings unthrottled, so
    that a test sees every warning. ``kwargs`` go to the node (e.g. cli_args)."""
    folder.mkdir()
    (folder / "object.json").write_text(json.dumps({"name": "drill"}))
    return SixdPoseNode(context=ctx, namespace=namespace, estimator_factory=lambda p: (est, [
        ObjectInfo("drill", None, np.full(3, -0.05), np.full(3, 0.05))]),
        parameter_overrides=[Parameter("objects", value=[str(folder)]), Parameter("use_depth", value=False),
                             Parameter("warn_period", value=0.0), *parameters], **kwargs)


@pytest.fixture(name="session")
def session_fixture(tmp_path, request):
    """The node with the stand-in estimator and a probe; ``request.param``: parameter overrides."""
    overrides = getattr(request, "param", {})
    est = _Drill()
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = stand_in_node(ctx, est, tmp_path / "drill", namespace="of",
                         parameters=[Parameter(k, value=v) for k, v in overrides.items()],
                         cli_args=remap_arguments(camera_remappings("/of")))
    probe = rclpy.create_node("of_probe", context=ctx)
    s = SimpleNamespace(node=node, probe=probe, est=est, poses=[], tf=[], logs=[], detections=[], stamp=10**9)
    probe.create_subscription(PoseStamped, f"{OUT}/drill/pose", s.poses.append, 50)
    probe.create_subscription(TFMessage, "/tf", s.tf.append, 50)
    probe.create_subscription(Log, "/rosout", s.logs.append, QoSProfile(
        depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    if HAS_VISION_MSGS:
        from vision_msgs.msg import Detection3DArray

        probe.create_subscription(Detection3DArray, f"{OUT}/detections", s.detections.append, 50)
    s.static = probe.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
    s.pub_raw = probe.create_publisher(Image, "/of/color/image_raw", 10)
    s.pub_compressed = probe.create_publisher(CompressedImage, "/of/color/image_raw/compressed", 10)
    s.pub_info = probe.create_publisher(CameraInfo, "/of/color/camera_info", 10)
    executor = MultiThreadedExecutor(num_threads=3, context=ctx)
    thread = None
    try:
        assert node.start(), node.configure_error
        executor.add_node(node)
        executor.add_node(probe)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        image_pub = s.pub_compressed if overrides.get("image_transport") == "compressed" else s.pub_raw
        wait_until(lambda: image_pub.get_subscription_count() and s.pub_info.get_subscription_count(), 10,
                   "discovery")

        def send(compressed=False):
            s.stamp += 100_000_000
            header = Header(stamp=Time(sec=s.stamp // 10**9, nanosec=s.stamp % 10**9), frame_id="cam")
            info = CameraInfo(header=header, width=W, height=H, k=K)
            s.pub_info.publish(info)
            if compressed:
                import cv2

                ok, png = cv2.imencode(".png", _rgb()[:, :, ::-1])
                s.pub_compressed.publish(CompressedImage(header=header, format="rgb8; png compressed bgr8",
                                                         data=png.tobytes()))
            else:
                s.pub_raw.publish(array_to_image(_rgb(), "rgb8", header))
            return s.stamp

        s.send = send
        yield s
    finally:
        executor.shutdown(timeout_sec=2.0)
        if thread is not None:
            thread.join(5)
        node.trigger_shutdown()
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=ctx)


def _answered(s, stamp):
    return wait_until(lambda: len(s.est.frames) and s.est.frames[-1].stamp_ns >= stamp
                      and s.node._worker is not None and not s.node._worker.busy, 10, f"frame {stamp}")


def _tf_for(s, stamp):
    return next((t for m in s.tf for t in m.transforms if stamp_ns(t) == stamp and t.child_frame_id == "sixd_drill"),
                None)


@pytest.mark.parametrize("session", [{"frames.output_frame": "base_link"}], indirect=True)
def test_poses_and_detections_in_the_output_frame_through_tf(session):
    s = session
    # base_link -> cam: 90 degrees about z, then (1, 2, 3).
    tr = TransformStamped(header=Header(frame_id="base_link"), child_frame_id="cam")
    tr.transform.translation.x, tr.transform.translation.y, tr.transform.translation.z = 1.0, 2.0, 3.0
    tr.transform.rotation.z = tr.transform.rotation.w = float(np.sqrt(0.5))
    s.static.publish(TFMessage(transforms=[tr]))
    wait_until(lambda: s.node._tf_buffer is not None and "cam" in s.node._tf_buffer.frames, 10, "the static TF")
    stamp = s.send()
    pose = wait_until(lambda: next((m for m in s.poses if stamp_ns(m) == stamp), None), 10, "the pose")
    assert pose.header.frame_id == "base_link"
    p = pose.pose.position
    assert np.allclose([p.x, p.y, p.z], [1.0, 2.1, 3.5], atol=1e-9)  # Rz(90) (0.1, 0, 0.5) + (1, 2, 3)
    q = pose.pose.orientation
    assert np.allclose([q.x, q.y, q.z, q.w], [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-9)
    tf = wait_until(lambda: _tf_for(s, stamp), 5, "TF of the drill")
    assert tf.header.frame_id == "cam" and tf.transform.translation.z == pytest.approx(0.5)  # TF keeps the camera
    if HAS_VISION_MSGS:
        det = wait_until(lambda: next((d for d in s.detections if stamp_ns(d) == stamp), None), 5, "detections")
        assert det.header.frame_id == "base_link"
        c = det.detections[0].bbox.center.position
        assert np.allclose([c.x, c.y, c.z], [1.0, 2.1, 3.5], atol=1e-9)

    # A frame TF cannot reach: no pose and no detections (never camera numbers under base_link's
    # name), TF of the object still goes out, and a warning names the fix.
    assert s.node.set_parameters([Parameter("frames.output_frame", value="tool0")])[0].successful
    stamp = s.send()
    _answered(s, stamp)
    wait_until(lambda: _tf_for(s, stamp), 5, "TF of the drill without the output frame")
    warning = wait_until(lambda: next((m.msg for m in s.logs if "frames.output_frame tool0" in m.msg), None), 5,
                         "the output frame warning")
    assert "not published" in warning and "robot_state_publisher" in warning
    assert not [m for m in s.poses if stamp_ns(m) == stamp]
    assert not [d for d in s.detections if stamp_ns(d) == stamp]
    # Back to the camera frame, live.
    assert s.node.set_parameters([Parameter("frames.output_frame", value="")])[0].successful
    stamp = s.send()
    pose = wait_until(lambda: next((m for m in s.poses if stamp_ns(m) == stamp), None), 10, "the camera-frame pose")
    assert pose.header.frame_id == "cam" and pose.pose.position.z == pytest.approx(0.5)


@pytest.mark.parametrize("session", [{"image_transport": "compressed"}], indirect=True)
def test_compressed_colour_input(session):
    s = session
    # What the node subscribed to, from the node itself: the ROS graph can also hold stale nodes of
    # the same name from earlier tests of this process (CI saw an empty set there, twice).
    names = {sub.topic_name for sub in s.node.subscriptions}
    assert "/of/color/image_raw/compressed" in names and "/of/color/camera_info" in names
    assert "/of/color/image_raw" not in names
    stamp = s.send(compressed=True)
    wait_until(lambda: next((m for m in s.poses if stamp_ns(m) == stamp), None), 10, "the pose")
    frame = s.est.frames[-1]
    assert frame.stamp_ns == stamp and np.array_equal(frame.rgb, _rgb())  # PNG is lossless


def test_undecodable_compressed_image_names_the_fix():
    from sixd_pose_ros.ros.image_conversion import ImageEncodingError

    with pytest.raises(ImageEncodingError, match="could not be decoded: publish JPEG or PNG"):
        image_from_compressed(CompressedImage(format="jpeg", data=b"not a jpeg"))

"""~/detections: vision_msgs/Detection3DArray on every processed frame.

- The message definitions setup builds (tools/interfaces/vision_msgs) have vision_msgs 4.1.x's
  field names, types and order, and serialize to the CDR bytes written out here by hand, so they
  interoperate with ros-jazzy-vision-msgs from apt.
- The builder: one Detection3D per instance, class id = object name, score, pose, box from the
  object's extent placed by the pose; an empty array for a frame without objects.
- Over Fast DDS: the real node (its estimator stubbed to report two objects, then none) publishes
  both objects with the colour image's header, then an empty array.
"""
from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import wait_until

rclpy = pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built: run `make setup` (or apt install "
                                              "ros-jazzy-vision-msgs)")
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import (BoundingBox3D, Detection3D, Detection3DArray, ObjectHypothesis,  # noqa: E402
                             ObjectHypothesisWithPose)

from sixd_pose_ros.geometry.rotations import matrix_from_axis_angle  # noqa: E402
from sixd_pose_ros.pipeline.types import Estimator, ObjectPose  # noqa: E402
from sixd_pose_ros.ros.estimator_loader import ObjectInfo  # noqa: E402
from sixd_pose_ros.ros.image_conversion import array_to_image  # noqa: E402
from sixd_pose_ros.ros.publishers import detection_array  # noqa: E402
from sixd_pose_ros.ros.sync import stamp_ns  # noqa: E402

pytestmark = pytest.mark.ros

# vision_msgs 4.1.x (Jazzy), in declaration order.
VISION_MSGS_4 = {
    Detection3DArray: [("header", "std_msgs/Header"), ("detections", "sequence<vision_msgs/Detection3D>")],
    Detection3D: [("header", "std_msgs/Header"), ("results", "sequence<vision_msgs/ObjectHypothesisWithPose>"),
                  ("bbox", "vision_msgs/BoundingBox3D"), ("id", "string")],
    ObjectHypothesisWithPose: [("hypothesis", "vision_msgs/ObjectHypothesis"),
                               ("pose", "geometry_msgs/PoseWithCovariance")],
    ObjectHypothesis: [("class_id", "string"), ("score", "double")],
    BoundingBox3D: [("center", "geometry_msgs/Pose"), ("size", "geometry_msgs/Vector3")],
}


@pytest.mark.parametrize("msg_type", list(VISION_MSGS_4), ids=lambda t: t.__name__)
def test_fields_names_types_and_order_are_vision_msgs_4(msg_type):
    assert list(msg_type.get_fields_and_field_types().items()) == VISION_MSGS_4[msg_type]


# RIHS01 type hash of vision_msgs/msg/Detection3DArray as rosidl computes it for the upstream 4.x
# definitions (other ROS 2 client libraries list this value for Jazzy's vision_msgs). It covers
# every nested type's field names and types, so an equal hash means the same type on the wire and
# in the DDS type-hash check between our build and the apt package.
DETECTION3D_ARRAY_HASH = "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018"


def test_type_hash_equals_upstream_vision_msgs():
    import vision_msgs

    prefix = Path(vision_msgs.__file__).resolve().parents[4]  # <prefix>/lib/pythonX.Y/site-packages/vision_msgs
    description = prefix / "share" / "vision_msgs" / "msg" / "Detection3DArray.json"
    if not description.is_file():
        pytest.skip(f"no type description at {description}")
    hashes = {h["type_name"]: h["hash_string"] for h in json.loads(description.read_text())["type_hashes"]}
    assert hashes["vision_msgs/msg/Detection3DArray"] == DETECTION3D_ARRAY_HASH


class _Cdr:
    """Little-endian classic CDR (what rmw_fastrtps writes): each primitive aligned to its size,
    counted from the end of the 4-byte encapsulation header."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def _put(self, fmt: str, *values) -> None:
        size = struct.calcsize("<" + fmt[0])
        self.buf += bytes(-len(self.buf) % size)
        self.buf += struct.pack("<" + fmt, *values)

    def u32(self, v):
        self._put("I", v)

    def i32(self, v):
        self._put("i", v)

    def f64(self, *vs):
        for v in vs:
            self._put("d", v)

    def string(self, s: str):
        data = s.encode() + b"\0"
        self.u32(len(data))
        self.buf += data

    def header(self, sec, nanosec, frame_id):
        self.i32(sec)
        self.u32(nanosec)
        self.string(frame_id)

    def payload(self) -> bytes:
        return b"\x00\x01\x00\x00" + bytes(self.buf)  # CDR_LE, no options


def _small_array() -> Detection3DArray:
    header = Header(stamp=Time(sec=7, nanosec=9), frame_id="cam")
    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id, hyp.hypothesis.score = "mug", 0.5
    p = hyp.pose.pose
    p.position.x, p.position.y, p.position.z = 1.0, 2.0, 3.0
    p.orientation.w = 1.0
    hyp.pose.covariance[0] = 0.25
    det = Detection3D(header=header, results=[hyp], id="mug")
    det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.center.position.z = 1.0, 2.0, 3.5
    det.bbox.center.orientation.w = 1.0
    det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = 0.1, 0.2, 0.3
    return Detection3DArray(header=header, detections=[det])


def _small_array_cdr() -> bytes:
    w = _Cdr()
    w.header(7, 9, "cam")                   # Detection3DArray.header
    w.u32(1)                                # detections: length
    w.header(7, 9, "cam")                   #   Detection3D.header
    w.u32(1)                                #   results: length
    w.string("mug")                         #     hypothesis.class_id
    w.f64(0.5)                              #     hypothesis.score
    w.f64(1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0)  # pose.pose: position, orientation xyzw
    w.f64(0.25, *[0.0] * 35)                #     pose.covariance[36]
    w.f64(1.0, 2.0, 3.5, 0.0, 0.0, 0.0, 1.0)  # bbox.center
    w.f64(0.1, 0.2, 0.3)                    #   bbox.size
    w.string("mug")                         #   id
    return w.payload()


def test_wire_format_matches_hand_built_cdr():
    expected = _small_array_cdr()
    assert serialize_message(_small_array()) == expected
    back = deserialize_message(expected, Detection3DArray)
    assert back == _small_array()
    empty = _Cdr()
    empty.header(0, 0, "")
    empty.u32(0)
    assert serialize_message(Detection3DArray()) == empty.payload()


def _pose(name, R, t, score):
    return ObjectPose(name=name, R=R, t=np.asarray(t, float), score=score, box=np.zeros(4))


def test_builder_one_detection_per_instance_with_class_score_pose_and_box():
    header = Header(stamp=Time(sec=3, nanosec=4), frame_id="cam_optical")
    R = matrix_from_axis_angle(np.array([0.0, 0.0, 1.0]), np.pi / 2)
    infos = [ObjectInfo("drill", None, np.array([-0.02, -0.03, 0.0]), np.array([0.02, 0.03, 0.2])),
             ObjectInfo("mug", None, np.array([-0.04, -0.04, -0.05]), np.array([0.04, 0.04, 0.05]))]
    poses = [_pose("drill", R, [0.1, 0.0, 0.6], 0.9), _pose("mug", np.eye(3), [-0.1, 0.05, 0.7], 0.4),
             _pose("mug", np.eye(3), [0.2, 0.05, 0.8], 0.3), _pose("stranger", np.eye(3), [0, 0, 1], 0.2)]
    msg = detection_array(poses, infos, header)
    assert msg.header == header and len(msg.detections) == 4
    assert [d.id for d in msg.detections] == ["drill", "mug/0", "mug/1", "stranger"]
    drill = msg.detections[0]
    assert drill.header == header and len(drill.results) == 1
    hyp = drill.results[0]
    assert hyp.hypothesis.class_id == "drill" and hyp.hypothesis.score == pytest.approx(0.9)
    q = hyp.pose.pose.orientation
    assert np.allclose([q.x, q.y, q.z, q.w], [0, 0, np.sqrt(0.5), np.sqrt(0.5)])
    pos = hyp.pose.pose.position
    assert (pos.x, pos.y, pos.z) == pytest.approx((0.1, 0.0, 0.6))
    assert (drill.bbox.size.x, drill.bbox.size.y, drill.bbox.size.z) == pytest.approx((0.04, 0.06, 0.2))
    c = drill.bbox.center  # the box centre (0, 0, 0.1) in the object frame, placed by the pose
    assert (c.position.x, c.position.y, c.position.z) == pytest.approx((0.1, 0.0, 0.7))
    assert c.orientation == hyp.pose.pose.orientation
    mug = msg.detections[2]
    assert mug.results[0].pose.pose.position.x == pytest.approx(0.2)
    assert (mug.bbox.center.position.x, mug.bbox.size.z) == pytest.approx((0.2, 0.1))  # centred mesh: centre = pose
    assert msg.detections[3].bbox.size.x == pytest.approx(0.1)  # no ObjectInfo: a 10 cm cube
    assert detection_array([], infos, header) == Detection3DArray(header=header)


# ------------------------------------------------------------------ over DDS, the real node

W, H = 64, 48
K = np.array([[60.0, 0, 32.0], [0, 60.0, 24.0], [0, 0, 1.0]])


class _TwoObjects(Estimator):
    """Reports a drill and a mug on frames with an even stamp second, nothing otherwise."""

    def __init__(self) -> None:
        self.R = matrix_from_axis_angle(np.array([1.0, 0.0, 0.0]), 0.5)

    def estimate(self, frame):
        if (frame.stamp_ns // 10**9) % 2:
            return []
        return [_pose("drill", self.R, [0.05, 0.0, 0.5], 0.8), _pose("mug", np.eye(3), [-0.1, 0.02, 0.6], 0.6)]


def _object_folder(root: Path, name: str) -> str:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "object.json").write_text(json.dumps({"name": name}))
    return str(folder)


@pytest.fixture
def running_node(tmp_path):
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from sixd_pose_ros.ros.node import SixdPoseNode

    infos = [ObjectInfo("drill", None, np.array([-0.02, -0.03, -0.1]), np.array([0.02, 0.03, 0.1])),
             ObjectInfo("mug", None, np.array([-0.04, -0.04, -0.05]), np.array([0.04, 0.04, 0.05]))]
    ctx, probe_ctx = rclpy.Context(), rclpy.Context()  # two DDS participants, as two processes would have
    rclpy.init(context=ctx)
    rclpy.init(context=probe_ctx)
    node = SixdPoseNode(context=ctx, namespace="cam", estimator_factory=lambda params: (_TwoObjects(), infos),
                        parameter_overrides=[
                            Parameter("objects", value=[_object_folder(tmp_path, n) for n in ("drill", "mug")]),
                            Parameter("use_depth", value=False), Parameter("publish_debug_image", value=False)])
    probe = rclpy.create_node("detections_probe", context=probe_ctx)
    executors = [MultiThreadedExecutor(num_threads=2, context=ctx), SingleThreadedExecutor(context=probe_ctx)]
    threads = []
    try:
        assert node.start(), node.configure_error
        executors[0].add_node(node)
        executors[1].add_node(probe)
        threads = [threading.Thread(target=e.spin, daemon=True) for e in executors]
        for t in threads:
            t.start()
        yield SimpleNamespace(node=node, probe=probe)
    finally:
        for e in executors:
            e.shutdown(timeout_sec=2.0)
        for t in threads:
            t.join(5)
        node.trigger_shutdown()
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=ctx)
        rclpy.shutdown(context=probe_ctx)


def test_detections_over_dds_two_objects_then_an_empty_array(running_node):
    node, probe = running_node.node, running_node.probe
    # The node's inputs, found by type (their names are the launch files' business).
    subs = dict(wait_until(lambda: node.get_subscriber_names_and_types_by_node(node.get_name(), node.get_namespace()),
                      5, "the node's subscriptions"))
    image_topic = next(t for t, types in subs.items() if "sensor_msgs/msg/Image" in types)
    info_topic = next(t for t, types in subs.items() if "sensor_msgs/msg/CameraInfo" in types)
    got: list[Detection3DArray] = []
    probe.create_subscription(Detection3DArray, "/cam/sixd_pose_node/detections", got.append, 20)
    pub_image = probe.create_publisher(Image, image_topic, 10)
    pub_info = probe.create_publisher(CameraInfo, info_topic, 10)
    wait_until(lambda: pub_image.get_subscription_count() and pub_info.get_subscription_count(), 10, "discovery")

    def send(sec: int) -> None:
        header = Header(stamp=Time(sec=sec, nanosec=250), frame_id="cam_color_optical")
        info = CameraInfo(header=header, width=W, height=H)
        info.k = [float(v) for v in K.ravel()]
        pub_info.publish(info)
        pub_image.publish(array_to_image(np.full((H, W, 3), 90, np.uint8), "rgb8", header))

    def received(sec):
        return next((m for m in got if stamp_ns(m) == sec * 10**9 + 250), None)

    sec, found = 100, None
    deadline = time.monotonic() + 15
    while found is None and time.monotonic() < deadline:  # the first frames may beat DDS matching
        sec += 2
        send(sec)
        try:
            found = wait_until(lambda s=sec: received(s), 1.0, "detections")
        except AssertionError:
            pass
    assert found is not None, "no Detection3DArray from the node"
    assert found.header.frame_id == "cam_color_optical"
    assert [d.results[0].hypothesis.class_id for d in found.detections] == ["drill", "mug"]
    drill, mug = found.detections
    assert drill.results[0].hypothesis.score == pytest.approx(0.8) and drill.id == "drill"
    assert drill.header == found.header
    assert drill.results[0].pose.pose.position.z == pytest.approx(0.5)
    assert (drill.bbox.size.x, drill.bbox.size.y, drill.bbox.size.z) == pytest.approx((0.04, 0.06, 0.2))
    assert (mug.bbox.center.position.x, mug.bbox.center.position.z) == pytest.approx((-0.1, 0.6))

    send(sec + 1)  # an odd second: nothing found
    empty = wait_until(lambda: received(sec + 1), 10, "the empty array of a frame without objects")
    assert empty.detections == [] and empty.header.frame_id == "cam_color_optical"


def test_without_vision_msgs_the_outputs_say_so_and_still_publish(monkeypatch):
    from sixd_pose_ros.ros import publishers

    monkeypatch.setattr(publishers, "HAS_VISION_MSGS", False)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node("no_vision_msgs", context=ctx)
        outputs = publishers.OutputPublishers(node, [], tf_prefix="sixd_", publish_tf=False,
                                              publish_debug_image=False)
        assert outputs.detections is None and "apt-get install ros-jazzy-vision-msgs" in outputs.detections_backend
        outputs.publish([_pose("mug", np.eye(3), [0, 0, 0.5], 0.7)], Header(frame_id="cam"))
        outputs.destroy()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)

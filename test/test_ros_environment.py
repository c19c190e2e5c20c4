"""The environment itself: two rclpy nodes exchange PoseStamped and TFMessage over real DDS."""
from __future__ import annotations

import os
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
from geometry_msgs.msg import PoseStamped, TransformStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


def _exchange(context, msg_type, topic, make_msg, qos=10, timeout=15.0):
    """Publish from one node until the other receives; returns the received message."""
    talker = rclpy.create_node("env_talker", context=context)
    listener = rclpy.create_node("env_listener", context=context)
    received = []
    listener.create_subscription(msg_type, topic, received.append, qos)
    pub = talker.create_publisher(msg_type, topic, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(talker)
    executor.add_node(listener)
    deadline = time.monotonic() + timeout
    try:
        while not received and time.monotonic() < deadline:
            pub.publish(make_msg())
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    assert received, f"no {msg_type.__name__} arrived over DDS within {timeout} s"
    return received[0]


def test_dds_is_local_and_on_a_private_domain(context):
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert context.get_domain_id() == int(os.environ["ROS_DOMAIN_ID"])


def test_pose_stamped_round_trip(context):
    def make():
        msg = PoseStamped()
        msg.header.frame_id = "camera_color_optical_frame"
        msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
        msg.pose.position.x, msg.pose.position.z = 0.1, 0.75
        msg.pose.orientation.z, msg.pose.orientation.w = 0.6, 0.8
        return msg

    got = _exchange(context, PoseStamped, "env_test/pose", make, qos=qos_profile_sensor_data)
    assert got.header.frame_id == "camera_color_optical_frame"
    assert (got.header.stamp.sec, got.header.stamp.nanosec) == (12, 345)
    assert (got.pose.position.x, got.pose.position.z) == (0.1, 0.75)
    assert (got.pose.orientation.z, got.pose.orientation.w) == (0.6, 0.8)


def test_tf_message_round_trip(context):
    """tf2_msgs is built by setup from its .msg definition; this proves it works over DDS."""
    def make():
        tf = TransformStamped()
        tf.header.frame_id = "camera_color_optical_frame"
        tf.child_frame_id = "object_1"
        tf.transform.translation.z = 0.5
        tf.transform.rotation.w = 1.0
        return TFMessage(transforms=[tf, tf])

    got = _exchange(context, TFMessage, "/tf", make)
    assert len(got.transforms) == 2
    assert got.transforms[0].child_frame_id == "object_1"
    assert got.transforms[0].transform.translation.z == 0.5

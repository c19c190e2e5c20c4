"""Publish a rosbag2 recording as it was recorded: the stored CDR bytes, at the recorded pace,
with /clock. What `ros2 bag play --clock` does, for the pip environment, where the rosbag2 C++
player is not installed; rosbags reads the bag (sqlite3 or MCAP).

/tf_static is published transient-local (as tf2 publishers do), so a node that subscribes late
still gets the static transforms; everything else keeps depth 10, reliable, like `ros2 bag play`.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Collection
from importlib import import_module
from pathlib import Path

from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from sixd_pose_ros.errors import SixdPoseError

TF_STATIC = "/tf_static"


def message_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> the rclpy message class."""
    package, _, name = msgtype.split("/")
    return getattr(import_module(f"{package}.msg"), name)


def _qos(topic: str) -> QoSProfile:
    if topic == TF_STATIC:
        return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(depth=10)


def play_bag(node: Node, bag: str | Path, *, topics: Collection[str] | None = None, rate: float = 1.0,
             clock: bool = True, wait_for_subscribers_s: float = 20.0, settle_s: float = 0.5,
             on_message: Callable[[str, str, int, bytes], None] | None = None) -> float:
    """Publish the messages of ``bag`` (only ``topics`` when given) from ``node``; returns the
    recording's span in seconds.

    Waits up to ``wait_for_subscribers_s`` for every topic to have a subscriber (DDS discovery)
    and ``settle_s`` more (for the subscribers to match this node in turn), then publishes each message when its recorded time is due (``rate`` x speed), after a /clock
    message carrying that time. ``on_message(topic, msgtype, bag_time_ns, raw)`` runs after each.
    """
    from rosbags.rosbag2 import Reader

    if rate <= 0:
        raise SixdPoseError(f"rate {rate} must be positive")
    bag = Path(bag)
    if not bag.exists():
        raise SixdPoseError(f"bag {bag} not found: give the rosbag2 folder (with metadata.yaml)")
    clock_pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=10)) if clock else None
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        if not conns:
            have = sorted({c.topic for c in reader.connections})
            raise SixdPoseError(f"bag {bag} has none of the topics {sorted(topics or [])}; it has {have}")
        pubs = {}
        for c in conns:
            if c.topic not in pubs:
                pubs[c.topic] = node.create_publisher(message_class(c.msgtype), c.topic, _qos(c.topic))
        deadline = time.monotonic() + wait_for_subscribers_s
        while any(p.get_subscription_count() == 0 for p in pubs.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        # The publisher sees a subscriber before that subscriber has matched the publisher in
        # turn; on a loaded machine a best-effort subscriber then lost the first second of a bag
        # (9 of 20 capture frames, once, in the full test suite). A short settle covers that gap.
        time.sleep(settle_s)
        t0_bag = None
        t0_wall = time.monotonic()
        span = 0.0
        for conn, bag_time, raw in reader.messages(connections=conns):
            if t0_bag is None:
                t0_bag = bag_time
            due = t0_wall + (bag_time - t0_bag) / 1e9 / rate
            while (delay := due - time.monotonic()) > 0:
                time.sleep(min(delay, 0.05))
            if clock_pub is not None:
                clock_pub.publish(Clock(clock=Time(sec=bag_time // 10**9, nanosec=bag_time % 10**9)))
            pubs[conn.topic].publish(bytes(raw))  # the recorded CDR bytes, as ros2 bag play does
            if on_message is not None:
                on_message(conn.topic, conn.msgtype, bag_time, raw)
            span = (bag_time - t0_bag) / 1e9
    return span

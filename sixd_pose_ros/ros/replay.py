"""Live replay: a rosbag2 recording played into the real pose node over DDS, on simulated time.

The pip environment's stand-in for ``ros2 bag play --clock`` + ``replay.launch.py`` (ros2 bag is
not installable here): the bag's messages are published as the recorded bytes, at the recorded
rate (scaled by ``rate``), with ``/clock`` driven by the bag's time, while the node runs with
``use_sim_time`` and its real estimator. Nothing waits for the node: a slow estimator drops frames
exactly as it would on the robot, and those drops are what this measures next to accuracy.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry.rotations import matrix_from_quat_xyzw
from sixd_pose_ros.ros.bag_player import message_class, play_bag
from sixd_pose_ros.ros.demo_runner import shutdown_session
from sixd_pose_ros.ros.launch_support import remap_arguments
from sixd_pose_ros.ros.node import SixdPoseNode
from sixd_pose_ros.ros.sync import stamp_ns


@dataclass
class ReceivedPose:
    name: str
    stamp_ns: int
    R: np.ndarray
    t: np.ndarray
    received_wall: float


@dataclass
class ReplayResult:
    """What the node answered, and when the frames it answered were published."""

    poses: list[ReceivedPose]
    color_published_wall: dict[int, float]  # header stamp -> wall time the colour image left
    node_stats: dict
    wall_seconds: float
    bag_seconds: float
    topics: dict[str, str] = field(default_factory=dict)


def replay_bag(bag: str | Path, object_dirs: Sequence[str | Path], weights_dir: str | Path, *,
               topics: dict[str, str], namespace: str = "/camera", rate: float = 1.0,
               settle_s: float = 1.0, min_score: float = 0.0, tracking: bool = False) -> ReplayResult:
    """Play ``bag`` into a SixdPoseNode; return every pose it published.

    ``topics``: ``color``, ``depth`` (optional), ``info`` and ``tf`` (optional) topic names in
    the bag (absolute); the node's inputs are remapped to them.
    """
    if rate <= 0:
        raise SixdPoseError(f"--rate {rate} must be positive")
    names = [Path(p).name for p in object_dirs]
    overrides = [Parameter("objects", value=[str(p) for p in object_dirs]),
                 Parameter("weights_dir", value=str(weights_dir)),
                 Parameter("min_score", value=float(min_score)),
                 Parameter("use_sim_time", value=True),
                 Parameter("tracking.enabled", value=bool(tracking))]
    remaps = [("image", topics["color"]), ("camera_info", topics["info"])]
    if topics.get("depth"):
        remaps.append(("depth", topics["depth"]))
    else:
        overrides.append(Parameter("use_depth", value=False))
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = SixdPoseNode(context=ctx, namespace=namespace.strip("/"), parameter_overrides=overrides,
                        cli_args=remap_arguments(remaps))
    player = rclpy.create_node("sixd_replay_player", context=ctx)
    executor = MultiThreadedExecutor(num_threads=3, context=ctx)
    received: list[ReceivedPose] = []
    lock = threading.Lock()

    def on_pose(name: str):
        def callback(msg: PoseStamped) -> None:
            q, p = msg.pose.orientation, msg.pose.position
            with lock:
                received.append(ReceivedPose(name, stamp_ns(msg), matrix_from_quat_xyzw(
                    np.array([q.x, q.y, q.z, q.w])), np.array([p.x, p.y, p.z]), time.monotonic()))
        return callback

    published: dict[int, float] = {}
    t_start = time.monotonic()
    bag_span = 0.0
    try:
        if not node.start():
            raise SixdPoseError(f"the pose node did not start: {node.configure_error}")
        ns = namespace.rstrip("/")
        for name in names:
            player.create_subscription(PoseStamped, f"{ns}/sixd_pose_node/{name}/pose", on_pose(name), 100)
        executor.add_node(node)
        executor.add_node(player)
        threading.Thread(target=executor.spin, daemon=True).start()
        # Not /tf: the bag's transforms are the ground truth, scored offline; the node does not
        # read TF, and replaying them would put the answers next to the node's output.
        wanted = {t for k, t in topics.items() if t and k != "tf"}

        def on_message(topic: str, msgtype: str, bag_time: int, raw: bytes) -> None:
            if topic == topics["color"]:
                published[_header_stamp(raw, msgtype)] = time.monotonic()

        bag_span = play_bag(player, bag, topics=wanted, rate=rate, on_message=on_message)
        # Let the node finish what it holds: every colour frame it synchronized is processed,
        # dropped or rejected; then a short quiet period for the last answers to arrive.
        deadline = time.monotonic() + settle_s + 120.0
        while time.monotonic() < deadline:
            snap = node.stats.snapshot()
            finished = snap["processed"] + snap["dropped_busy"] + snap["bad_frames"] + snap["estimator_errors"]
            if finished >= snap["synchronized"] and snap["synchronized"] > 0:
                break
            time.sleep(0.1)
        time.sleep(settle_s)
        stats = dict(node.stats.snapshot())
    finally:
        shutdown_session(executor, node, player, ctx)
    return ReplayResult(received, published, stats, time.monotonic() - t_start, bag_span, dict(topics))


def _header_stamp(raw: bytes | memoryview, msgtype: str) -> int:
    """Header stamp of a serialized message (its first field for sensor images)."""
    from rclpy.serialization import deserialize_message

    msg = deserialize_message(bytes(raw), message_class(msgtype))
    return stamp_ns(msg)

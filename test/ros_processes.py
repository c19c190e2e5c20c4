"""Processes for the transport tests (test_ros_transport.py): the pose node with a stand-in
estimator, and a camera that publishes RGB-D at a fixed rate, each in its own process as on a
robot (the camera driver is never in the node's process).

    python test/ros_processes.py node NAMESPACE [--work SECONDS] [--param name:=value ...]
    python test/ros_processes.py camera NAMESPACE WIDTH HEIGHT SECONDS RATE_HZ

The camera waits until the node subscribes (to depth too when it does within 3 s), publishes colour (rgb8), depth
(16UC1) and camera_info with consecutive stamps at RATE_HZ with default (reliable) QoS, like a
camera driver, and prints one JSON line {"sent": N, "seconds": S}.
"""
from __future__ import annotations

import json
import signal
import sys
import time

from sixd_pose_ros.pipeline.types import Estimator


class StandIn(Estimator):
    """Finds the drill in every frame after 0.1 s (a fast estimator; the transport is under test)."""

    def __init__(self, work_s: float = 0.1) -> None:
        self.work_s = work_s

    def estimate(self, frame):
        import numpy as np

        from sixd_pose_ros.pipeline.types import ObjectPose

        time.sleep(self.work_s)
        return [ObjectPose("drill", np.eye(3), np.array([0.0, 0.0, 0.5]), 0.8, np.array([0, 0, 10, 10.0]))]


def run_node(namespace: str, params: list[str], work_s: float = 0.1) -> int:
    import json as _json
    import tempfile
    from pathlib import Path

    import numpy as np
    import rclpy
    from rclpy.parameter import Parameter

    from sixd_pose_ros.ros.estimator_loader import ObjectInfo
    from sixd_pose_ros.ros.launch_support import camera_remappings, remap_arguments
    from sixd_pose_ros.ros.node import SixdPoseNode
    from sixd_pose_ros.ros.node_main import create_executor, return_large_buffers_to_the_system

    return_large_buffers_to_the_system()  # as sixd_pose_node does

    folder = Path(tempfile.mkdtemp()) / "drill"
    folder.mkdir()
    (folder / "object.json").write_text(_json.dumps({"name": "drill"}))
    overrides = [Parameter("objects", value=[str(folder)])]
    for p in params:
        name, value = p.split(":=", 1)
        overrides.append(Parameter(name, value=_json.loads(value)))
    rclpy.init()
    node = SixdPoseNode(namespace=namespace, estimator_factory=lambda p: (StandIn(work_s), [
        ObjectInfo("drill", None, np.full(3, -0.05), np.full(3, 0.05))]),
        cli_args=remap_arguments(camera_remappings("/" + namespace)), parameter_overrides=overrides)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    if not node.start():
        print(node.configure_error, flush=True)
        return 1
    executor = create_executor()  # as sixd_pose_node spins it
    executor.add_node(node)
    print("node up", flush=True)
    while not stop:
        executor.spin_once(timeout_sec=0.1)
    node.trigger_shutdown()
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def run_camera(namespace: str, width: int, height: int, seconds: float, rate: float) -> int:
    import numpy as np
    import rclpy
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    rclpy.init()
    node = rclpy.create_node("camera", namespace=namespace)
    pubs = [node.create_publisher(t, n, 10) for t, n in
            ((Image, "color/image_raw"), (Image, "aligned_depth_to_color/image_raw"), (CameraInfo, "color/camera_info"))]
    deadline = time.monotonic() + 60
    while pubs[0].get_subscription_count() == 0 or pubs[2].get_subscription_count() == 0:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "the node never subscribed"}), flush=True)
            return 1
        time.sleep(0.05)
    deadline = time.monotonic() + 3.0  # depth, when the node uses it
    while pubs[1].get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # let every endpoint finish matching
    rng = np.random.default_rng(0)
    color = Image(height=height, width=width, encoding="rgb8", step=3 * width)
    color.data = rng.integers(0, 255, 3 * width * height, dtype=np.uint8).tobytes()
    depth = Image(height=height, width=width, encoding="16UC1", step=2 * width)
    depth.data = np.full(width * height, 500, "<u2").tobytes()
    f = 500.0 * width / 640
    info = CameraInfo(width=width, height=height, k=[f, 0.0, width / 2, 0.0, f, height / 2, 0.0, 0.0, 1.0])
    n = int(round(seconds * rate))
    period_ns = int(round(1e9 / rate))
    t0 = time.monotonic()
    for i in range(n):
        stamp = 100 * 10**9 + i * period_ns
        header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam")
        for msg in (color, depth, info):
            msg.header = header
        pubs[2].publish(info)
        pubs[1].publish(depth)
        pubs[0].publish(color)
        wait = t0 + (i + 1) / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    elapsed = time.monotonic() - t0
    time.sleep(1.0)  # let the last samples go out before the participant goes away
    print(json.dumps({"sent": n, "seconds": round(elapsed, 3)}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    role, namespace = sys.argv[1], sys.argv[2]
    if role == "node":
        args, work = sys.argv[3:], 0.1
        if "--work" in args:
            i = args.index("--work")
            work = float(args[i + 1])
            del args[i:i + 2]
        sys.exit(run_node(namespace, [a for a in args if a != "--param"], work))
    width, height, seconds, rate = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
    sys.exit(run_camera(namespace, width, height, seconds, rate))

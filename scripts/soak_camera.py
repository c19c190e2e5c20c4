"""The camera side of scripts/soak.py: an rclpy node in the soak's own process (never in the pose
node's, as on a robot) that publishes colour (rgb8), depth (16UC1, millimetres) and camera_info
with one stamp per frame under RealSense names, and listens to what the pose node sends back
(``~/markers`` for every processed frame, ``~/<object>/pose`` when the object was found,
``/diagnostics`` for the node's own counters), so that the soak can pace itself on the node's
answers instead of guessing a rate the CPU may not sustain.
"""
from __future__ import annotations

import threading
import time
from typing import Sequence

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from sixd_pose_ros.datasets.types import SceneFrame
from sixd_pose_ros.ros.image_conversion import array_to_image
from sixd_pose_ros.ros.launch_support import REALSENSE_TOPICS
from sixd_pose_ros.ros.sync import stamp_ns

__all__ = ["SoakCamera"]


class SoakCamera:
    """Publishes ``frames`` (by index, with the stamp given) into ``camera_ns`` and records the
    answers of the pose node ``node_name`` (fully qualified, e.g. ``/soak/sixd_pose_node``)."""

    def __init__(self, camera_ns: str, node_name: str, object_name: str, frames: Sequence[SceneFrame]) -> None:
        self._ctx = rclpy.Context()
        rclpy.init(context=self._ctx)
        self.node = rclpy.create_node("soak_camera", context=self._ctx)
        # Default (reliable, keep last 10) QoS, as camera drivers publish.
        self._pubs = [self.node.create_publisher(t, f"{camera_ns}/{REALSENSE_TOPICS[n]}", 10) for t, n in
                      ((CameraInfo, "camera_info"), (Image, "depth"), (Image, "image"))]
        self._cond = threading.Condition()
        self._answered: set[int] = set()
        self._newest_answer = -1
        self.answers = self.poses = 0
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(MarkerArray, f"{node_name}/markers", self._on_markers, 50)
        self.node.create_subscription(PoseStamped, f"{node_name}/{object_name}/pose", self._on_pose, 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self._on_diagnostics(m, node_name),
                                      10)
        self._messages = [self._frame_messages(f) for f in frames]
        self._executor = SingleThreadedExecutor(context=self._ctx)
        self._executor.add_node(self.node)
        self._spin = threading.Thread(target=self._executor.spin, daemon=True)
        self._spin.start()

    @staticmethod
    def _frame_messages(frame: SceneFrame) -> tuple[CameraInfo, Image, Image]:
        """Built once per frame: only the headers change per publish (a driver's cost, not ours)."""
        h, w = frame.rgb.shape[:2]
        info = CameraInfo(width=w, height=h, k=[float(v) for v in np.asarray(frame.K).ravel()])
        depth = array_to_image(np.round(np.nan_to_num(frame.depth) * 1000.0).astype(np.uint16), "16UC1", Header())
        return info, depth, array_to_image(frame.rgb, "rgb8", Header())

    def _on_markers(self, msg: MarkerArray) -> None:
        if not msg.markers:
            return
        with self._cond:
            self.answers += 1
            stamp = stamp_ns(msg.markers[0])
            self._answered.add(stamp)
            self._newest_answer = max(self._newest_answer, stamp)
            self._cond.notify_all()

    def _on_pose(self, msg: PoseStamped) -> None:
        with self._cond:
            self.poses += 1

    def _on_diagnostics(self, msg: DiagnosticArray, node_name: str) -> None:
        for status in msg.status:
            if status.name.startswith(f"{node_name}:"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def wait_for_node(self, timeout: float) -> bool:
        """True once the node subscribes to all three inputs (then 1 s for every endpoint to match)."""
        deadline = time.monotonic() + timeout
        while min(p.get_subscription_count() for p in self._pubs) == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        time.sleep(1.0)
        return True

    def publish(self, index: int, stamp: int) -> None:
        header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="soak_camera")
        for pub, msg in zip(self._pubs, self._messages[index]):
            msg.header = header
            pub.publish(msg)

    def wait_answer(self, stamp: int, timeout: float) -> str:
        """What became of the frame stamped ``stamp``: "answered"; "superseded" when a newer frame
        was answered first (the node's newest-frame policy dropped it: its answer never comes);
        "timeout" when neither happened within ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: stamp in self._answered or self._newest_answer > stamp, timeout)
            if stamp in self._answered:
                self._answered.discard(stamp)
                return "answered"
            return "superseded" if self._newest_answer > stamp else "timeout"

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self._spin.join(5)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self._ctx)

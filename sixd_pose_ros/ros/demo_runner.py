"""Play recorded frames into the real pose node over DDS and score what comes back.

This is the README demo's second half (and the pip-environment stand-in for `ros2 bag play` +
the node): an in-process SixdPoseNode with its real estimator, a player node publishing colour,
depth and camera_info exactly as a RealSense driver names them, and a listener collecting the
PoseStamped answers, matched to ground truth by stamp.
"""
from __future__ import annotations

import dataclasses

import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from sixd_pose_ros.datasets.types import SceneFrame
from sixd_pose_ros.geometry.pose_errors import add_error, rotation_error_deg, translation_error
from sixd_pose_ros.geometry.rotations import matrix_from_quat_xyzw
from sixd_pose_ros.ros.image_conversion import array_to_image, color_from_msg
from sixd_pose_ros.ros.launch_support import camera_remappings, remap_arguments
from sixd_pose_ros.ros.node import SixdPoseNode
from sixd_pose_ros.ros.sync import stamp_ns


def _pose_matrix(msg: PoseStamped) -> tuple[np.ndarray, np.ndarray]:
    q = msg.pose.orientation
    p = msg.pose.position
    return matrix_from_quat_xyzw(np.array([q.x, q.y, q.z, q.w])), np.array([p.x, p.y, p.z])


def play_and_score(frames: Sequence[SceneFrame], object_dir: str | Path, weights_dir: str | Path,
                   object_name: str, obj_id: int, model_points: np.ndarray, diameter: float,
                   overlay_path: Path | None = None, timeout_per_frame: float = 30.0,
                   min_score: float = 0.0) -> dict:
    """Publish each frame, wait for the node's answer, return accuracy and latency."""
    # BOP frame 0 is stamped 0, which the node rightly drops (a 0 stamp cannot be placed in
    # time): the recording starts one second after the epoch instead.
    frames = [dataclasses.replace(f, stamp_ns=f.stamp_ns + 10**9) for f in frames]
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = SixdPoseNode(context=ctx, namespace="camera", cli_args=remap_arguments(camera_remappings("/camera")),
                        parameter_overrides=[
        Parameter("objects", value=[str(object_dir)]), Parameter("weights_dir", value=str(weights_dir)),
        Parameter("min_score", value=float(min_score))])
    executor = MultiThreadedExecutor(num_threads=3, context=ctx)
    player = rclpy.create_node("demo_player", context=ctx)
    received: dict[int, tuple[PoseStamped, float]] = {}
    overlays: list[Image] = []
    try:
        if not node.start():
            raise RuntimeError(f"the pose node did not start: {node.configure_error}")
        pubs = {"color": player.create_publisher(Image, "/camera/color/image_raw", 10),
                "depth": player.create_publisher(Image, "/camera/aligned_depth_to_color/image_raw", 10),
                "info": player.create_publisher(CameraInfo, "/camera/color/camera_info", 10)}
        player.create_subscription(PoseStamped, f"/camera/sixd_pose_node/{object_name}/pose",
                                   lambda m: received.__setitem__(stamp_ns(m), (m, time.monotonic())), 50)
        player.create_subscription(Image, "/camera/sixd_pose_node/debug_image", overlays.append, 5)
        executor.add_node(node)
        executor.add_node(player)
        threading.Thread(target=executor.spin, daemon=True).start()
        deadline = time.monotonic() + 20
        while min(p.get_subscription_count() for p in pubs.values()) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        sent = {}
        for frame in frames:
            header = Header(stamp=Time(sec=frame.stamp_ns // 10**9, nanosec=frame.stamp_ns % 10**9),
                            frame_id=frame.frame_id)
            info = CameraInfo(header=header, width=frame.rgb.shape[1], height=frame.rgb.shape[0])
            info.k = [float(v) for v in frame.K.ravel()]
            depth_mm = np.round(frame.depth * 1000.0).astype(np.uint16)
            start = time.monotonic()
            for _ in range(3):  # the first frames may be published before DDS has matched
                done_before = _handled(node)
                pubs["depth"].publish(array_to_image(depth_mm, "16UC1", header))
                pubs["info"].publish(info)
                pubs["color"].publish(array_to_image(frame.rgb, "rgb8", header))
                until = time.monotonic() + timeout_per_frame / 3
                # Wait for the answer, or for the node to finish the frame without one (object
                # not found): the demo scores every frame, so it never outruns the node.
                while frame.stamp_ns not in received and _handled(node) == done_before \
                        and time.monotonic() < until:
                    time.sleep(0.01)
                if frame.stamp_ns in received or _handled(node) > done_before:
                    break
            sent[frame.stamp_ns] = start
        time.sleep(0.2)
    finally:
        shutdown_session(executor, node, player, ctx)
    return _score(frames, received, sent, obj_id, model_points, diameter, overlays, overlay_path)


def shutdown_session(executor, node, player, ctx, idle_wait_s: float = 30.0) -> None:
    """Stop an in-process node and its player: the frame still in the estimator (up to
    ``idle_wait_s``), executor, lifecycle shutdown, context. Any of the three may be None (a
    session that failed while it was being built)."""
    if isinstance(node, SixdPoseNode):
        node.wait_until_idle(idle_wait_s)
    if executor is not None:
        executor.shutdown(timeout_sec=2.0)
    if node is not None:
        if hasattr(node, "trigger_shutdown"):
            node.trigger_shutdown()
        node.destroy_node()
    if player is not None:
        player.destroy_node()
    rclpy.try_shutdown(context=ctx)


def _handled(node) -> int:
    """Frames the node has finished (with or without a pose, or rejected as bad input)."""
    snap = node.stats.snapshot()
    return int(snap["processed"]) + int(snap["bad_frames"]) + int(snap["estimator_errors"])


def _score(frames, received, sent, obj_id, points, diameter, overlays, overlay_path) -> dict:
    add, rot, trans, latency = [], [], [], []
    for frame in frames:
        gt = next((i for i in frame.instances if i.obj_id == obj_id), None)
        if gt is None or frame.stamp_ns not in received:
            continue
        msg, t_recv = received[frame.stamp_ns]
        R, t = _pose_matrix(msg)
        add.append(add_error(R, t, gt.R_m2c, gt.t_m2c, points))
        rot.append(float(rotation_error_deg(R, gt.R_m2c)))
        trans.append(float(translation_error(t, gt.t_m2c)))
        latency.append(1000 * (t_recv - sent[frame.stamp_ns]))
    if overlays and overlay_path is not None:
        import cv2

        cv2.imwrite(str(overlay_path), cv2.cvtColor(color_from_msg(overlays[-1]), cv2.COLOR_RGB2BGR))
    n = len(add)
    return {
        "frames_published": len(sent), "poses_received": n,
        "add_0.1d": float(np.mean(np.array(add) < 0.1 * diameter)) if n else 0.0,
        "rotation_error_deg_median": float(np.median(rot)) if n else None,
        "translation_error_cm_median": float(100 * np.median(trans)) if n else None,
        "latency_ms_median": float(np.median(latency)) if n else None,
        "overlay_png": str(overlay_path) if overlays and overlay_path else None,
    }

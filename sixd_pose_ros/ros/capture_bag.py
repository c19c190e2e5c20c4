"""Reference capture from a recorded bag: `sixd-pose capture-bag BAG --out DIR`.

The arm's sweep around the object can be recorded once (`ros2 bag record` of colour, depth,
camera_info, /tf and /tf_static) and turned into model-free references later, off the robot. This
plays the bag into the real capture node (CaptureReferencesNode, over DDS, on the bag's simulated
time) and finishes the capture when the bag ends; the folder it writes is the one the live tool
writes (format (a) of docs/model_free_inputs.md), ready for `build-object --images`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from sixd_pose_ros.objects.capture import CaptureError
from sixd_pose_ros.ros.bag_player import play_bag
from sixd_pose_ros.ros.capture_references import CaptureReferencesNode
from sixd_pose_ros.ros.demo_runner import shutdown_session


@dataclass
class BagCapture:
    output: Path
    counts: dict[str, int]  # kept, skipped_motion, no_tf, bad_frame
    received: dict[str, int]
    message: str
    bag_seconds: float
    wall_seconds: float


def capture_from_bag(bag: str | Path, output: str | Path, *, namespace: str = "/camera", rate: float = 1.0,
                     params: Mapping[str, Any] | None = None, params_file: str | Path | None = None,
                     settle_s: float = 30.0) -> BagCapture:
    """Play ``bag`` into a capture node and write ``output``.

    ``params``: capture parameters (as in config/capture_references.yaml, e.g. ``world_frame``,
    ``topics.depth``); ``params_file``: that YAML file (``params`` win over it). The node runs in
    ``namespace`` with ``use_sim_time``. Raises CaptureError (nothing written) when the capture
    cannot finish, e.g. fewer than 8 frames had a camera pose.
    """
    t_start = time.monotonic()
    args = ["--ros-args", "--params-file", str(params_file)] if params_file else None
    ctx = rclpy.Context()
    rclpy.init(args=args, context=ctx)
    node = player = executor = None
    try:
        overrides = [Parameter(k, value=v) for k, v in {**(params or {}), "output": str(output)}.items()]
        overrides.append(Parameter("use_sim_time", value=True))
        node = CaptureReferencesNode(context=ctx, namespace=namespace.strip("/"), parameter_overrides=overrides)
        player = rclpy.create_node("sixd_capture_bag_player", context=ctx)
        executor = MultiThreadedExecutor(num_threads=3, context=ctx)
        if not node.start():
            raise CaptureError(node.failed)
        executor.add_node(node)
        executor.add_node(player)
        threading.Thread(target=executor.spin, daemon=True).start()
        # Only what the node reads: a bag's other topics (a recorded /clock above all, which would
        # fight the one played here) stay in the bag.
        bag_seconds = play_bag(player, bag, topics=set(node.input_topics) | {"/tf", "/tf_static"}, rate=rate)
        # Every frame the node received is decided (kept, skipped, or without TF) before the
        # capture is written; a frame waiting for TF gives up after tf.wait.
        deadline = time.monotonic() + settle_s
        last, quiet_since = None, time.monotonic()
        while time.monotonic() < deadline:
            state = (tuple(node.counts.values()), tuple(node.received.values()), node.waiting_for_tf)
            if state != last:
                last, quiet_since = state, time.monotonic()
            elif state[2] == 0 and time.monotonic() - quiet_since > 1.0:
                break
            time.sleep(0.05)
        ok, message = node.finish_capture()
        if not ok:
            raise CaptureError(f"{message} (frames: {node.counts}; received: {node.received})")
        return BagCapture(node.result, dict(node.counts), dict(node.received), message, bag_seconds,
                          time.monotonic() - t_start)
    finally:
        shutdown_session(executor, node, player, ctx)

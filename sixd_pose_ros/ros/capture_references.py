"""``capture_references``: record posed reference photos on the robot, no COLMAP needed.

While the arm moves the camera around an object, this node records colour (+ depth) frames
with the camera's pose taken from TF, keeps a frame only when the camera has moved enough since
the last kept one, and writes format (a) of ``docs/model_free_inputs.md`` (``poses.json`` with
``camera_to_world``, ``rgb/``, ``depth/`` as 16-bit millimetre PNG, optional ``mask/``), ready
for ``sixd-pose build-object --images DIR --name NAME``::

    ros2 run sixd_pose_ros capture_references --ros-args \\
        --params-file config/capture_references.yaml -p output:=refs/mug -p world_frame:=base_link
    .venv/bin/capture_references --ros-args -p output:=refs/mug          # the pip environment

Inputs: ``topics.image``, ``topics.depth`` (when ``use_depth``), ``topics.camera_info`` with
sensor-data QoS and approximate-time sync (:mod:`sixd_pose_ros.ros.sync`, as the pose node).
The camera pose of a frame is TF ``world_frame -> <the image's frame_id>`` at the image stamp:
through tf2_ros (``Buffer`` + ``TransformListener``) when it is importable, else through our own
``/tf`` + ``/tf_static`` buffer (:mod:`sixd_pose_ros.ros.tf_buffer`: interpolation between the
samples around the stamp; the nearest sample within ``tf.tolerance`` only once ``tf.wait`` has
passed without newer TF). A frame whose TF has not arrived waits up to ``tf.wait`` seconds.

What the node keeps and writes (which frames, the object box of ``poses.json``, the atomic
output folder, ``capture.json``) is decided by :mod:`sixd_pose_ros.objects.capture`, which has no
ROS in it: the node validates its parameters there, hands every synchronized frame with its pose
to a :class:`~sixd_pose_ros.objects.capture.ReferenceRecorder`, and finishes it when
``max_frames`` are kept, on the ``~/finish`` service (std_srvs/Trigger), or on Ctrl-C / SIGTERM.
Destroying the node before that (a crash, a kill) writes nothing.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.objects.capture import (
    CAPTURE_PARAMETERS,
    CaptureError,
    CaptureParams,
    ReferenceRecorder,
    validate_capture_params,
)
from sixd_pose_ros.pipeline.types import DepthError, FrameError
from sixd_pose_ros.ros.frames import intrinsics_from_camera_info
from sixd_pose_ros.ros.image_conversion import color_from_msg, depth_from_msg
from sixd_pose_ros.ros.sync import FrameSynchronizer, stamp_ns
from sixd_pose_ros.ros.tf_buffer import (
    NS,
    TransformBuffer,
    TransformUnavailable,
    add_tf_message,
)

__all__ = ["CaptureReferencesNode", "main"]

TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
_PENDING_MAX = 60  # frames waiting for TF; beyond it the oldest is skipped


# ------------------------------------------------------------------------------------------------
# The node
# ------------------------------------------------------------------------------------------------


def _matrix_from_transform(tr) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    r, p = tr.rotation, tr.translation
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([r.x, r.y, r.z, r.w]).as_matrix()
    T[:3, 3] = [p.x, p.y, p.z]
    return T


class CaptureReferencesNode(Node):
    """The capture tool as a node: :meth:`start` validates the parameters and subscribes;
    :meth:`finish_capture` writes the folder; :meth:`destroy_node` before that writes nothing.

    Counters (``self.counts``): ``kept``, ``skipped_motion``, ``no_tf``, ``bad_frame``.
    """

    def __init__(self, node_name: str = "capture_references", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        from rcl_interfaces.msg import ParameterDescriptor

        for name, (default, text) in CAPTURE_PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(
                name=name, description=f"{text} (default {'[]' if default is None else repr(default)})",
                dynamic_typing=True))
        self.params: CaptureParams | None = None
        self.recorder: ReferenceRecorder | None = None
        self.counts = {"kept": 0, "skipped_motion": 0, "no_tf": 0, "bad_frame": 0}
        self.received = {"image": 0, "camera_info": 0, "depth": 0, "tf": 0}
        self.result: Path | None = None
        self.failed = ""
        self.tf_backend = ""
        self._pending: deque = deque()
        self._lock = threading.RLock()
        self._warned: dict[str, float] = {}
        self._subs: list = []
        self._sync: FrameSynchronizer | None = None
        self._tf2 = None
        self._own_tf: TransformBuffer | None = None
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._last_progress = (time.monotonic(), None)

    @property
    def input_topics(self) -> list[str]:
        """Resolved names of the topics the node subscribes to (after start)."""
        return [sub.topic_name for sub in self._subs]

    @property
    def waiting_for_tf(self) -> int:
        """Synchronized frames not yet decided because their camera pose is not in TF yet."""
        return len(self._pending)

    @property
    def done(self) -> bool:
        """Finished (the folder is written) or failed for good."""
        return self.result is not None or bool(self.failed)

    # ---------------------------------------------------------------- start

    def start(self) -> bool:
        """Validate parameters, open the output, subscribe. False (error logged) on bad input."""
        try:
            values = {n: self.get_parameter(n).value for n in CAPTURE_PARAMETERS}
            p = self.params = validate_capture_params(values)
            output = p.output or time.strftime("capture_%Y%m%d-%H%M%S")
            self.recorder = ReferenceRecorder(output, overwrite=p.overwrite, min_translation=p.min_translation,
                                              min_rotation_deg=p.min_rotation_deg, max_frames=p.max_frames,
                                              object_cfg=p.object, write_masks=p.write_masks)
            self._setup_tf(p)
        except SixdPoseError as exc:
            self.failed = str(exc)
            self.get_logger().error(str(exc))
            return False
        frames = MutuallyExclusiveCallbackGroup()  # frames, timer and service: one at a time
        names = ["image", "camera_info"] + (["depth"] if p.use_depth else [])
        topics = {"image": p.image_topic, "camera_info": p.camera_info_topic, "depth": p.depth_topic}
        types = {"image": Image, "camera_info": CameraInfo, "depth": Image}
        self._sync = FrameSynchronizer(names, p.queue_size, p.slop, self._on_synchronized)
        self._subs += [self.create_subscription(types[n], topics[n], partial(self._on_input, i, n),
                                                qos_profile_sensor_data, callback_group=frames)
                       for i, n in enumerate(names)]
        self._timer = self.create_timer(0.05, self._on_timer, callback_group=frames, clock=self._steady)
        self._finish_srv = self.create_service(Trigger, "~/finish", self._on_finish, callback_group=frames)
        topics_used = ", ".join(s.topic_name for s in self._subs)
        self.get_logger().info(
            f"capturing into {self.recorder.output} (written at the end): listening to {topics_used}; camera pose "
            f"= TF {p.world_frame} -> {p.camera_frame or '<image frame_id>'} via {self.tf_backend}; keeping a frame "
            f"every {100 * p.min_translation:.1f} cm or {p.min_rotation_deg:.1f} deg, up to {p.max_frames}. Move the "
            f"camera around the object, then call {self.get_fully_qualified_name()}/finish or press Ctrl-C")
        return True

    def _setup_tf(self, p: CaptureParams) -> None:
        if p.tf_backend in ("auto", "tf2_ros"):
            try:
                import tf2_ros
                from rclpy.duration import Duration

                self._tf2 = tf2_ros.Buffer(cache_time=Duration(seconds=p.tf_cache), node=self)
                self._tf2_listener = tf2_ros.TransformListener(self._tf2, self)
                self._tf2_errors = tf2_ros.TransformException
                self.tf_backend = "tf2_ros"
                return
            except ImportError as exc:
                if p.tf_backend == "tf2_ros":
                    raise CaptureError(f"tf.backend is tf2_ros but tf2_ros cannot be imported ({exc}): install "
                                       "ros-$ROS_DISTRO-tf2-ros, or use tf.backend:=auto") from exc
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError as exc:
            raise CaptureError(f"neither tf2_ros nor tf2_msgs can be imported ({exc}): install "
                               "ros-$ROS_DISTRO-tf2-ros on a robot, or run `make setup` (it builds tf2_msgs) in "
                               "the pip environment") from exc
        self._own_tf = TransformBuffer(cache_s=p.tf_cache)
        group = MutuallyExclusiveCallbackGroup()  # TF arrives while a frame is being written
        self._subs.append(self.create_subscription(TFMessage, "/tf", partial(self._on_tf, False), TF_QOS,
                                                   callback_group=group))
        self._subs.append(self.create_subscription(TFMessage, "/tf_static", partial(self._on_tf, True),
                                                   TF_STATIC_QOS, callback_group=group))
        self.tf_backend = "own /tf + /tf_static buffer"

    # ---------------------------------------------------------------- inputs

    def _on_tf(self, static: bool, msg) -> None:
        self.received["tf"] += add_tf_message(self._own_tf, msg, static=static)

    def _on_input(self, index: int, name: str, msg) -> None:
        self.received[name] += 1
        if self._sync is not None and not self.done:
            self._sync.add(index, msg)

    def _on_synchronized(self, *msgs) -> None:
        with self._lock:
            self._pending.append((msgs, time.monotonic()))
            while len(self._pending) > _PENDING_MAX:
                self._pending.popleft()
                self.counts["no_tf"] += 1
            self._drain()

    def _camera_frame(self, color) -> str:
        return (self.params.camera_frame or color.header.frame_id).lstrip("/")

    def _lookup(self, frame: str, stamp: int, final: bool) -> np.ndarray:
        p = self.params
        if self._tf2 is not None:
            from rclpy.time import Time

            try:
                tr = self._tf2.lookup_transform(p.world_frame, frame, Time(nanoseconds=stamp))
            except self._tf2_errors as exc:
                raise TransformUnavailable(str(exc), retry=True) from exc
            return _matrix_from_transform(tr.transform)
        return self._own_tf.lookup(p.world_frame, frame, stamp, tolerance_s=p.tf_tolerance if final else 0.0)

    def _drain(self) -> None:
        """Handle waiting frames in stamp order: a frame whose TF is not there yet waits (up to
        tf.wait); one that cannot get TF is skipped with the fix logged."""
        while self._pending and not self.done:
            msgs, arrived = self._pending[0]
            color = msgs[0]
            frame, stamp = self._camera_frame(color), stamp_ns(color)
            final = time.monotonic() - arrived >= self.params.tf_wait
            if not frame:
                self._pending.popleft()
                self._skip_no_tf(stamp, "the image has an empty header.frame_id",
                                 "set camera_frame:=<the camera's optical frame> or fix the driver's frame id")
                continue
            try:
                T_wc = self._lookup(frame, stamp, final)
            except TransformUnavailable as exc:
                if exc.retry and not final:
                    return  # wait for TF (the timer retries)
                self._pending.popleft()
                self._skip_no_tf(stamp, str(exc), self._tf_fix(frame))
                continue
            self._pending.popleft()
            self._consider(msgs, T_wc, frame)

    def _tf_fix(self, frame: str) -> str:
        w = self.params.world_frame
        return (f"check `ros2 run tf2_ros tf2_echo {w} {frame}`: the robot_state_publisher and the camera's "
                f"static TF must be running, world_frame ({w}) must be in the same TF tree as {frame}; when "
                f"playing a bag, play it with --clock and set use_sim_time:=true")

    def _skip_no_tf(self, stamp: int, reason: str, fix: str) -> None:
        self.counts["no_tf"] += 1
        self._warn("no_tf", f"frame stamped {stamp / NS:.3f} skipped: no camera pose ({reason}); fix: {fix}")

    def _consider(self, msgs, T_wc: np.ndarray, frame: str) -> None:
        color, info = msgs[0], msgs[1]
        depth_msg = msgs[2] if len(msgs) > 2 else None
        keep, why = self.recorder.decide(T_wc)
        if not keep:
            self.recorder.skipped_motion += 1
            self.counts["skipped_motion"] += 1
            self.get_logger().debug(f"frame skipped: {why}")
            return
        try:
            rgb = color_from_msg(color)
            K = intrinsics_from_camera_info(info, rgb.shape[1], rgb.shape[0])
            depth = depth_from_msg(depth_msg) if depth_msg is not None else None
            if depth is not None and depth.shape != rgb.shape[:2]:
                raise DepthError(f"depth is {depth.shape[1]}x{depth.shape[0]} but colour is {rgb.shape[1]}x"
                                 f"{rgb.shape[0]}: subscribe to depth aligned to the colour image (RealSense: "
                                 f"align_depth.enable:=true)")
            if depth is not None and not np.any(np.isfinite(depth) & (depth > 0)):
                raise DepthError("the depth image has no valid measurement (all 0 or NaN): check the depth "
                                 "stream, or set use_depth:=false")
        except FrameError as exc:
            self.counts["bad_frame"] += 1
            self._warn("bad_frame", f"frame skipped: {exc}")
            return
        try:
            index = self.recorder.add(rgb, depth, K, T_wc, stamp_ns(color), frame)
        except (CaptureError, OSError) as exc:
            self.counts["bad_frame"] += 1
            self._warn("write", f"frame not written ({exc}); check free disk space in {self.recorder.output.parent}")
            return
        self.counts["kept"] += 1
        p = self.params
        self.get_logger().info(f"kept frame {index + 1}/{p.max_frames} ({why})")
        if self.recorder.full:
            self.get_logger().info(f"max_frames ({p.max_frames}) reached: finishing")
            self.finish_capture()

    # ---------------------------------------------------------------- finish, progress, warnings

    def finish_capture(self) -> tuple[bool, str]:
        """Write the folder now. Returns ``(ok, message)``; too few frames leaves the capture open."""
        with self._lock:
            if self.result is not None:
                return True, f"already written to {self.result}"
            if self.recorder is None or self.failed:
                return False, self.failed or "the capture did not start"
            meta = {"world_frame": self.params.world_frame, "tf_backend": self.tf_backend,
                    "counts": dict(self.counts), "received": dict(self.received),
                    "parameters": {k: v for k, v in asdict(self.params).items() if k != "object"},
                    "object_parameters": asdict(self.params.object)}
            try:
                path, box = self.recorder.finish(meta)
            except (SixdPoseError, OSError) as exc:
                if self.recorder.aborted:  # the staging folder is gone: this capture is over
                    self.failed = f"not written: {exc}"
                self.get_logger().error(f"not written: {exc}")
                return False, str(exc)
            self.result = path
        what = "no object block (no depth)" if box is None else (
            f"object {box.source}: centre {np.round(box.center, 3).tolist()} m, extents "
            f"{np.round(box.extents, 3).tolist()} m")
        for note in self.recorder.notes:
            self.get_logger().warning(note)
        message = (f"wrote {len(self.recorder.kept)} frames to {path} ({what}); build the object with "
                   f"`sixd-pose build-object --images {path} --name NAME`")
        self.get_logger().info(message)
        return True, message

    def _on_finish(self, request, response):
        response.success, response.message = self.finish_capture()
        return response

    def _on_timer(self) -> None:
        with self._lock:
            self._drain()
        now = time.monotonic()
        last_t, last_counts = self._last_progress
        if now - last_t < self.params.progress_period or self.done:
            return
        state = (tuple(self.counts.values()), tuple(self.received.values()))
        self._last_progress = (now, state)
        if state == last_counts:
            return
        c, r = self.counts, self.received
        line = (f"progress: kept {c['kept']}/{self.params.max_frames}, skipped {c['skipped_motion']} (too little "
                f"motion), {c['no_tf']} (no TF), {c['bad_frame']} (bad image); waiting for TF {len(self._pending)}; "
                f"received image {r['image']}, camera_info {r['camera_info']}"
                + (f", depth {r['depth']}" if self.params.use_depth else ""))
        self.get_logger().info(line)
        if self.params.use_depth and r["image"] > 5 and r["depth"] == 0:
            self._warn("no_depth", f"no depth on {self.params.depth_topic}: remap topics.depth to the aligned depth "
                                   f"topic, or set use_depth:=false")

    def _warn(self, key: str, message: str) -> None:
        now = time.monotonic()
        period = self.params.warn_period if self.params is not None else 5.0
        if now - self._warned.get(key, -math.inf) >= period:
            self._warned[key] = now
            self.get_logger().warning(message)

    def destroy_node(self) -> None:
        """Destroying the node before :meth:`finish_capture` writes nothing (the staging folder
        is removed)."""
        if self.recorder is not None and not self.recorder.finished:
            self.recorder.abort()
            if self.recorder.kept:
                self.get_logger().warning(f"capture ended before finish: {len(self.recorder.kept)} kept frame(s) "
                                          f"discarded, {self.recorder.output} not written")
        super().destroy_node()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """``capture_references`` entry point: spin until finished; Ctrl-C / SIGTERM finish the
    capture (write the folder); exit 0 when the folder was written, 1 otherwise."""
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=sys.argv if argv is None else argv, signal_handler_options=SignalHandlerOptions.NO)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    node = CaptureReferencesNode()
    try:
        if node.start():
            executor = MultiThreadedExecutor(num_threads=3)
            executor.add_node(node)
            try:
                while rclpy.ok() and not node.done:
                    executor.spin_once(timeout_sec=0.2)
            except (KeyboardInterrupt, ExternalShutdownException):
                node.get_logger().info("interrupted: finishing the capture")
                node.finish_capture()
            finally:
                executor.shutdown(timeout_sec=1.0)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        code = 0 if node.result is not None else 1
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())

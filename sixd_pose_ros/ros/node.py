"""SixdPoseNode: the 6D pose node, a managed (lifecycle) node.

Transitions (``ros2 lifecycle set /sixd_pose_node configure`` etc., or ``main()`` doing
configure + activate itself when ``autostart`` is true):

- configure: read and validate the parameters (a name the node does not have, e.g. a typo in the
  params file, fails it naming the closest valid name), load the estimator (weights, object
  databases) and set its tracking (``tracking.*``), create the publishers, ``/diagnostics`` and
  the ``~/reset`` service (which also ends every object's track). A bad
  parameter or a missing file fails the transition with a message naming the fix.
- activate: subscribe to the relative names ``image`` (``image/compressed`` with
  ``image_transport:=compressed``), ``camera_info`` (and ``depth`` when ``use_depth``) with
  sensor-data QoS, start the approximate-time synchronizer and the worker thread. The launch
  files remap those names to the camera's topics (realsense-ros 4.x: ``/camera/camera/...``).
- deactivate: drop the subscriptions and stop the worker (publishers stay).
- cleanup / shutdown: also drop the publishers and release the estimator.

Frames: lens distortion in camera_info (plumb_bob, rational_polynomial, equidistant) is removed
with K kept (other models: a throttled warning naming them); colour above max_pixels is
downscaled (K scaled) or refused; a depth image, or an object's box, without enough valid
depth makes the estimate RGB-only, published so (frame_checks.py, README "The node on a robot").

Processing: each synchronized set goes to one worker thread through a single pending slot, so
the newest frame wins; a set that arrives while another is pending replaces it and counts as
dropped. Subscription callbacks only count and queue and never block, so one executor thread
takes every input (sixd_pose_node spins a SingleThreadedExecutor, node_main.create_executor).
Outputs carry the colour image's stamp and frame_id. Bad input (encoding, camera_info, sizes,
depth units, stamps, estimator exceptions) is logged as a throttled warning naming the fix,
counted in /diagnostics, and the node keeps going with the next frame.

Parameters: thresholds, rates, tracking and frame settings (params.LIVE) apply to the next frame
when set on a running node; a refused value keeps the old one and the reply says why; the others
are read-only. ``frames.output_frame`` publishes poses and detections in another frame (e.g.
base_link) through TF at the image stamp.
"""
from __future__ import annotations

import dataclasses
import gc
import re
import time
import traceback
from functools import partial

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.pipeline.settings import EstimatorSettings
from sixd_pose_ros.pipeline.types import Estimator, FrameError
from sixd_pose_ros.ros.diagnostics import PipelineStats, diagnostic_array
from sixd_pose_ros.ros.estimator_loader import SETTINGS_OF_PARAMS, load_estimator, tracker_config, \
    with_live_settings
from sixd_pose_ros.ros.frame_checks import UNDISTORTED_MODELS, OversizeError, Undistorter, box_valid_fraction, \
    downscale_frame, valid_depth_fraction, without_depth
from sixd_pose_ros.ros.frames import frame_from_msgs
from sixd_pose_ros.ros.image_conversion import image_from_compressed, uses_cv_bridge
from sixd_pose_ros.ros.params import PARAMETERS, ParameterError, declare_parameters, live_fields, \
    read_parameters, unknown_parameter_problems, validate_params
from sixd_pose_ros.ros.publishers import TF_QOS, OutputPublishers
from sixd_pose_ros.ros.sync import FrameSynchronizer, stamp_ns
from sixd_pose_ros.ros.tf_buffer import TransformBuffer, TransformUnavailable, add_tf_message
from sixd_pose_ros.ros.worker import LatestWorker

try:
    from rclpy.lifecycle import Node as _BaseNode
    from rclpy.lifecycle import TransitionCallbackReturn

    HAS_LIFECYCLE = True
except ImportError:  # an rclpy without lifecycle support: a plain node with the same callbacks
    import enum

    from rclpy.node import Node as _BaseNode

    class TransitionCallbackReturn(enum.Enum):  # type: ignore[no-redef]
        SUCCESS = "success"
        FAILURE = "failure"
        ERROR = "error"

    HAS_LIFECYCLE = False

__all__ = ["SixdPoseNode", "HAS_LIFECYCLE", "TransitionCallbackReturn"]

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE

# Overrides that are not ours but legitimately reach every node.
_FOREIGN_PARAMETERS = ("use_sim_time", "start_type_description_service", "qos_overrides.")
# How long a frame waits for the TF to frames.output_frame at its stamp (tf2's lookup timeout).
TF_WAIT_S = 0.2
# Messages a camera subscription keeps until the executor takes them: 1 s at 30 Hz. Sensor-data
# QoS keeps 5, which a loaded 2-core machine overruns at 30 Hz (frames lost at the reader).
INPUT_DEPTH = 30
# How long shutdown (Ctrl-C, SIGTERM) waits for a frame in the estimator.
SHUTDOWN_WAIT_S = 1.5
# RGB-only estimates carry this position standard deviation (a fraction of their distance) in
# Detection3DArray's covariance: a marker that their depth is a guess, not a calibrated figure.
RGB_ONLY_POSITION_STD = 0.1
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)


class SixdPoseNode(_BaseNode):
    """The pose node. ``estimator_factory(params) -> (estimator, [ObjectInfo])`` replaces the
    default loader (tests inject failures with it); other keyword arguments go to rclpy's Node."""

    def __init__(self, node_name: str = "sixd_pose_node", *, estimator_factory=None, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self._estimator_factory = estimator_factory or load_estimator
        self.params = None
        self.estimator: Estimator | None = None
        self.infos = []
        self.outputs: OutputPublishers | None = None
        self.stats = PipelineStats()
        self.state_label = "unconfigured"
        self.configure_error = ""
        self._subs: list = []
        self._sync: FrameSynchronizer | None = None
        self._worker: LatestWorker | None = None
        self._active = False
        self._warned: dict[str, float] = {}
        self._diag_pub = self._diag_timer = self._reset_srv = None
        self._last_diag = 0.0
        self._camera_frame = ""
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._tf_buffer: TransformBuffer | None = None
        self._tf_subs: list = []
        self._undistorter = Undistorter()
        self._distortion = ""

    # ---------------------------------------------------------------- lifecycle transitions

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            # rclpy's overrides of this node: its params files (their /** and /<node> sections),
            # -p arguments and parameter_overrides; rclpy has no public accessor for them.
            unknown = [n for n in self._parameter_overrides if n not in PARAMETERS
                       and not n.startswith(_FOREIGN_PARAMETERS)]
            if unknown:
                raise ParameterError("unknown parameters (check the params file and -p arguments):",
                                     unknown_parameter_problems(unknown))
            self.params = validate_params(read_parameters(self))
            if self.params.num_threads > 0:
                import torch

                torch.set_num_threads(self.params.num_threads)
            t0 = time.perf_counter()
            self.estimator, self.infos = self._estimator_factory(self.params)
            self._configure_tracking()
        except (ParameterError, SixdPoseError) as exc:
            return self._configure_failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug, but the node must say what happened
            return self._configure_failed(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        p = self.params
        self.outputs = OutputPublishers(self, self.infos, tf_prefix=p.tf_prefix, publish_tf=p.publish_tf,
                                        publish_markers=p.publish_markers,
                                        publish_debug_image=p.publish_debug_image)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(p.diagnostics_period, self._publish_diagnostics, clock=self._steady)
        self._reset_srv = self.create_service(Trigger, "~/reset", self._on_reset)
        self._ensure_tf_listener()
        self.configure_error = ""
        self.state_label = "inactive"
        names = ", ".join(i.name for i in self.infos) or "(none)"
        self.get_logger().info(f"configured in {time.perf_counter() - t0:.1f} s: mode {p.mode}, objects {names}, "
                               f"TF via {self.outputs.tf_backend}, images via "
                               f"{'cv_bridge' if uses_cv_bridge() else 'numpy'}")
        if self.outputs.detections is None:
            self.get_logger().warning(f"~/detections is {self.outputs.detections_backend}; poses and TF are "
                                      f"published as usual")
        return SUCCESS

    def _configure_tracking(self) -> None:
        """Hand the tracking.* parameters to an estimator that tracks (known-model, and model-free
        objects with a fused surface)."""
        self.estimator.configure_tracking(tracker_config(self.params))

    def _configure_failed(self, message: str) -> TransitionCallbackReturn:
        self.configure_error = message
        self.get_logger().error(f"configure failed: {message}")
        self._release_all()
        return FAILURE

    def on_activate(self, state) -> TransitionCallbackReturn:
        p = self.params
        names = ["image", "camera_info"] + (["depth"] if p.use_depth else [])
        compressed = p.image_transport == "compressed"
        topics = {"image": "image/compressed" if compressed else "image", "camera_info": "camera_info",
                  "depth": "depth"}
        types = {"image": CompressedImage if compressed else Image, "camera_info": CameraInfo, "depth": Image}
        self.stats.reset()
        self._sync = FrameSynchronizer(names, p.queue_size, p.slop, self._on_synchronized)
        self._worker = LatestWorker(self._process, max_rate_hz=p.max_rate_hz, on_error=self._on_worker_error).start()
        group = MutuallyExclusiveCallbackGroup()
        self._active = True
        self._subs = [self.create_subscription(types[n], topics[n], partial(self._on_input, i, n),
                                               self._input_qos(), callback_group=group)
                      for i, n in enumerate(names)]
        self.state_label = "active"
        resolved = ", ".join(s.topic_name for s in self._subs)
        self.get_logger().info(f"active: listening to {resolved} (sync: {self._sync.backend}, slop {p.slop} s)")
        return SUCCESS

    def _input_qos(self) -> QoSProfile:
        """Sensor-data QoS (best effort, volatile) keeping INPUT_DEPTH (or queue_size, if larger)
        messages per input: what arrives while the executor is busy (the estimator on the same
        CPU cores) waits in the reader instead of pushing frames out, which would also read as
        frames lost in transport; ``reliable_inputs`` asks for reliable delivery (the publisher
        must offer it, and a slow node then slows the camera)."""
        p = self.params
        return QoSProfile(depth=max(INPUT_DEPTH, p.queue_size), history=HistoryPolicy.KEEP_LAST,
                          reliability=ReliabilityPolicy.RELIABLE if p.reliable_inputs else ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.VOLATILE)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_processing()
        self.state_label = "inactive"
        return SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release_all()
        return SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        # Ctrl-C must end the process within seconds: a frame still in the estimator is left to
        # its daemon thread (its outputs are never published: the node is inactive by then).
        self._release_all(worker_timeout=SHUTDOWN_WAIT_S)
        self.state_label = "finalized"
        return SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self._release_all()
        return SUCCESS

    if not HAS_LIFECYCLE:  # the same transitions, called directly
        def trigger_configure(self):
            return self.on_configure(None)

        def trigger_activate(self):
            return self.on_activate(None)

        def trigger_deactivate(self):
            return self.on_deactivate(None)

        def trigger_cleanup(self):
            return self.on_cleanup(None)

        def trigger_shutdown(self):
            return self.on_shutdown(None)

    def start(self) -> bool:
        """configure + activate (what ``sixd_pose_node`` does unless autostart is false)."""
        return self.trigger_configure() == SUCCESS and self.trigger_activate() == SUCCESS

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait for the frame in the estimator, if any, and the one queued; True when idle in time.
        For in-process runs that end the process next: a frame left inside native inference code
        when the interpreter exits can abort the process (ONNX Runtime's threads did, in the demo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            worker = self._worker
            if worker is None or not (worker.busy or worker.has_pending):
                return True
            time.sleep(0.05)
        return False

    def _stop_processing(self, worker_timeout: float = 30.0) -> None:
        self._active = False
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._worker is not None:
            if not self._worker.stop(timeout=worker_timeout):
                self.get_logger().warning(f"the estimator did not finish its frame within {worker_timeout:g} s of "
                                          f"deactivation; not waiting for it")
            self._worker = None
        self._sync = None

    def _release_all(self, worker_timeout: float = 30.0) -> None:
        self._stop_processing(worker_timeout)
        if self.outputs is not None:
            self.outputs.destroy()
            self.outputs = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        if self._reset_srv is not None:
            self.destroy_service(self._reset_srv)
            self._reset_srv = None
        for sub in self._tf_subs:
            self.destroy_subscription(sub)
        self._tf_subs, self._tf_buffer = [], None
        self.estimator, self.infos = None, []
        self.state_label = "unconfigured"
        gc.collect()

    # ---------------------------------------------------------------- inputs

    def _on_input(self, index: int, name: str, msg) -> None:
        stamp = stamp_ns(msg)
        self.stats.input(name, stamp)
        sync = self._sync
        if sync is None:
            return
        if stamp == 0:
            topic = self._subs[index].topic_name if index < len(self._subs) else name
            message = (f"messages on {topic} are stamped 0 and are dropped (no pose, no TF: a 0 stamp cannot be "
                       f"placed in time or paired): make the driver stamp its messages; with use_sim_time, "
                       f"check that /clock is published")
            self.stats.zero_stamp(message)
            self._bad_input("stamps", message)
            return
        result = sync.add(index, msg)
        if result == "out_of_order":
            st = msg.header.stamp
            topic = self._subs[index].topic_name if index < len(self._subs) else name
            self._bad_input("stamps", f"out-of-order stamps on {topic}: "
                            f"a message stamped {st.sec}.{st.nanosec:09d} arrived after a newer one and was "
                            f"dropped; check the driver's clock, and do not play two bags at once")
        elif result == "time_jump":
            self.get_logger().info(f"time jumped back on {name} (bag restarted or sim time reset): "
                                   f"synchronizer reset")

    def _on_synchronized(self, *msgs) -> None:
        worker = self._worker
        if worker is None or not self._active:
            return
        self.stats.synced(worker.submit((msgs, time.perf_counter())))

    # ---------------------------------------------------------------- processing (worker thread)

    def _process(self, item) -> None:
        if not self._active or self.estimator is None:
            return
        msgs, t_arrival = item
        color, info = msgs[0], msgs[1]
        depth = msgs[2] if len(msgs) > 2 else None
        p = self.params
        t0 = time.perf_counter()
        try:
            if isinstance(color, Image):
                self._check_size(color.width, color.height)  # refuse before converting anything
            if isinstance(color, CompressedImage):
                color = image_from_compressed(color)
                self._check_size(color.width, color.height)
            frame = frame_from_msgs(color, info, depth, frame_id=p.camera_frame)
            frame = self._undistort(frame, info)
            full_size = frame.size
            frame, scale = downscale_frame(frame, p.max_pixels)
        except FrameError as exc:
            self._bad_frame(exc)
            return
        if scale < 1.0:
            self.stats.downscaled_frame()
            self._warn("downscaled", f"colour images of {full_size[0]}x{full_size[1]} are above max_pixels "
                                     f"({p.max_pixels}): downscaled to {frame.size[0]}x{frame.size[1]} with K "
                                     f"scaled to match (poses in meters are unaffected; the debug image and boxes "
                                     f"are at the smaller size); set the camera to a lower resolution to save "
                                     f"the conversion")
        if not (p.camera_frame or color.header.frame_id):
            self._warn("frame_id", f"the colour image has an empty header.frame_id: outputs use {frame.frame_id!r}; "
                                   f"set the camera driver's frame id or frames.camera_frame")
        # Depth honesty: a depth image without enough measurements never reaches the estimator as
        # RGB-D; it runs its RGB-only path and the outputs say so.
        frame_reason = ""
        if frame.depth is not None:
            valid = valid_depth_fraction(frame.depth)
            if valid < p.depth_min_valid_fraction:
                frame_reason = (f"depth unusable ({valid:.1%} of the depth image valid, below "
                                f"depth.min_valid_fraction {p.depth_min_valid_fraction:g})")
                frame = without_depth(frame)
        self._camera_frame = frame.frame_id
        t1 = time.perf_counter()
        poses = self._estimate(frame, color)
        if poses is None:
            return
        rgb_only: dict[str, str] = {pose.name: frame_reason for pose in poses} if frame_reason else {}
        if frame.depth is not None and poses:
            holes = {pose.name: box_valid_fraction(frame.depth, pose.box) for pose in poses}
            holes = {n: f for n, f in holes.items() if f < p.depth_min_valid_in_box}
            if holes:  # those objects take their RGB-only estimate, not one aligned to a few pixels
                rgb_poses = self._estimate(without_depth(frame), color)
                if rgb_poses is None:
                    return
                by_name: dict[str, list] = {}
                for pose in rgb_poses:
                    by_name.setdefault(pose.name, []).append(pose)
                kept = []
                for pose in poses:
                    if pose.name not in holes:
                        kept.append(pose)
                    elif by_name.get(pose.name):
                        kept.append(by_name[pose.name].pop(0))
                        rgb_only[pose.name] = (f"depth unusable in {pose.name}'s box ({holes[pose.name]:.0%} valid, "
                                               f"below depth.min_valid_in_box {p.depth_min_valid_in_box:g})")
                poses = kept
        if rgb_only:
            scaled = [dataclasses.replace(pose, score=float(pose.score) * p.rgb_only_score_scale)
                      if pose.name in rgb_only else pose for pose in poses]
            poses = [pose for pose in scaled if pose.name not in rgb_only or pose.score >= p.min_score]
        if frame_reason or rgb_only:
            reasons = sorted(set(rgb_only.values()) | ({frame_reason} if frame_reason else set()))
            self._bad_input("rgb_only", f"RGB-only: {'; '.join(reasons)}; estimates published with score x "
                                        f"{p.rgb_only_score_scale:g} and a position covariance (check the depth "
                                        f"stream, its alignment to colour, and the object's surface)")
        t2 = time.perf_counter()
        if not self._active or self.outputs is None:
            return
        header = Header(stamp=color.header.stamp, frame_id=frame.frame_id)
        marked = {pose.name: RGB_ONLY_POSITION_STD * float(np.linalg.norm(pose.t)) for pose in poses
                  if pose.name in rgb_only}
        self.outputs.publish(poses, header, frame.rgb, frame.K, rgb_only=marked,
                             **self._output_frame_args(header, frame.stamp_ns, bool(poses)))
        t3 = time.perf_counter()
        stage_ms: dict[str, float] = {}
        for pose in poses:
            stage_ms.update(pose.stage_ms or {})
        stage_ms.update({"convert": 1000 * (t1 - t0), "estimate": 1000 * (t2 - t1), "publish": 1000 * (t3 - t2),
                         "total": 1000 * (t3 - t_arrival)})
        self.stats.done(stage_ms, {p.name: p.score for p in poses}, rgb_only=bool(frame_reason or rgb_only),
                        rgb_only_objects=sorted(marked))

    def _undistort(self, frame, info):
        """The frame without lens distortion (camera_info's model and D; K kept as the new camera
        matrix), or as it is, with a throttled warning naming the model, for a model we do not
        remove. Before the size bound: the maps are for the camera's own resolution."""
        model = (info.distortion_model or "").strip()
        if not Undistorter.needed(model, info.d):
            self._distortion = "none"
            return frame
        if model not in UNDISTORTED_MODELS:
            self._distortion = f"unsupported: {model or '(empty)'}"
            self._warn("distortion", f"camera_info distortion model {model or '(empty)'!r} with D = "
                                     f"{[round(float(v), 4) for v in info.d]} is not supported (only "
                                     f"{', '.join(UNDISTORTED_MODELS)}): the images are used as if undistorted, so "
                                     f"poses near the image border are off; rectify them first (image_proc "
                                     f"rectify) and remap image to image_rect")
            return frame
        self._distortion = model
        return self._undistorter(frame, model, info.d)

    def _check_size(self, width: int, height: int) -> None:
        p = self.params
        if p.oversize == "refuse" and int(width) * int(height) > p.max_pixels:
            raise OversizeError(f"colour image {width}x{height} ({int(width) * int(height)} pixels) is above "
                                f"max_pixels ({p.max_pixels}) and oversize is refuse: the frame is dropped; set "
                                f"the camera to a lower resolution, raise max_pixels, or set oversize:=downscale")

    def _estimate(self, frame, color):
        """The estimator's poses for the frame, or None (the problem reported) when it failed."""
        try:
            return self.estimator.estimate(frame)
        except FrameError as exc:
            self._bad_frame(exc)
        except Exception as exc:  # noqa: BLE001 - the node keeps running whatever the estimator does
            self._bad_input("estimator", f"the estimator failed on the frame stamped {color.header.stamp.sec}."
                                         f"{color.header.stamp.nanosec:09d} ({type(exc).__name__}: {exc}); the node "
                                         f"goes on with the next frame")
            self.get_logger().debug(traceback.format_exc())
        return None

    # ---------------------------------------------------------------- output frame (TF)

    def _ensure_tf_listener(self) -> None:
        """/tf + /tf_static into our TransformBuffer, once frames.output_frame is set."""
        if self._tf_buffer is not None or self.params is None or not self.params.output_frame:
            return
        from tf2_msgs.msg import TFMessage

        self._tf_buffer = TransformBuffer(cache_s=10.0)
        self._tf_subs = [self.create_subscription(TFMessage, "/tf", partial(self._on_tf, False), TF_QOS),
                         self.create_subscription(TFMessage, "/tf_static", partial(self._on_tf, True),
                                                  TF_STATIC_QOS)]

    def _on_tf(self, static: bool, msg) -> None:
        buffer = self._tf_buffer
        if buffer is not None:
            add_tf_message(buffer, msg, static=static)

    def _output_frame_args(self, header: Header, stamp: int, has_poses: bool) -> dict:
        """publish() arguments for frames.output_frame: the camera -> output transform at the
        image stamp (waiting up to TF_WAIT_S for it, as tf2 lookups do), or, when TF does not
        have it, no poses or detections this frame and a throttled warning."""
        target = self.params.output_frame if self.params is not None else ""
        if not target or target == header.frame_id:
            return {}
        out_header = Header(stamp=header.stamp, frame_id=target)
        if not has_poses:
            return {"output_header": out_header}
        buffer = self._tf_buffer
        deadline = time.monotonic() + TF_WAIT_S
        while True:
            try:
                if buffer is None:
                    raise TransformUnavailable("no TF listener yet", retry=True)
                T = buffer.lookup(target, header.frame_id, stamp)
                return {"output_header": out_header, "output_transform": T}
            except TransformUnavailable as exc:
                if not exc.retry or time.monotonic() >= deadline:
                    self._bad_input("tf", f"frames.output_frame {target}: no transform from {header.frame_id} at "
                                          f"the image stamp ({exc}); this frame's poses and detections are not "
                                          f"published (TF of the objects is, from the camera): publish the robot's "
                                          f"TF (robot_state_publisher, the camera's static transform)")
                    return {"output_header": out_header, "output_transform": None}
            time.sleep(0.01)

    # ---------------------------------------------------------------- live parameters

    def _on_parameters_set(self, params) -> None:
        """After a successful set: live parameters reach the running pipeline at the next frame."""
        if self.params is None:
            return  # not configured: configure reads them
        try:
            new = validate_params(read_parameters(self), check_paths=False)
        except (ParameterError, ValueError):
            return  # refused before it was set; nothing to apply
        changes = live_fields(self.params, new)
        if not changes:
            return
        self.params = dataclasses.replace(self.params, **changes)
        self._apply_live(changes)
        shown = ", ".join(f"{k}={v!r}" for k, v in sorted(changes.items()))
        self.get_logger().info(f"applied from the next frame: {shown}")

    def _apply_live(self, changes: dict) -> None:
        p = self.params
        if changes.keys() & SETTINGS_OF_PARAMS.keys() and self.estimator is not None:
            config = self.estimator.config
            if isinstance(config, EstimatorSettings):
                self.estimator.config = with_live_settings(config, p, set(changes))
        if any(k.startswith("tracking_") for k in changes) and self.estimator is not None:
            self._configure_tracking()
        worker, sync = self._worker, self._sync
        if "max_rate_hz" in changes and worker is not None:
            worker.min_interval = 1.0 / p.max_rate_hz if p.max_rate_hz > 0 else 0.0
        if "slop" in changes and sync is not None:
            sync.set_slop(p.slop)
        if "tf_prefix" in changes and self.outputs is not None:
            self.outputs.tf_prefix = p.tf_prefix
        if "diagnostics_period" in changes and self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(p.diagnostics_period, self._publish_diagnostics, clock=self._steady)
        if "output_frame" in changes:
            self._ensure_tf_listener()

    def _on_worker_error(self, exc: BaseException) -> None:
        self._bad_input("internal", f"unexpected error while processing a frame ({type(exc).__name__}: {exc}); "
                                    f"please report it")

    # ---------------------------------------------------------------- warnings, diagnostics, services

    def _warn(self, key: str, message: str) -> None:
        now = time.monotonic()
        period = self.params.warn_period if self.params is not None else 5.0
        if now - self._warned.get(key, -float("inf")) >= period:
            self._warned[key] = now
            self.get_logger().warning(message)

    def _bad_frame(self, exc: FrameError) -> None:
        """A frame that could not be used, filed under its error's kind (colour image, encoding,
        camera_info, depth, size) so /diagnostics says which input to fix; the message is the
        error's own, which names the fix."""
        self._bad_input(exc.kind.value, str(exc))

    def _bad_input(self, kind: str, message: str) -> None:
        self.stats.error(kind, message)
        # Throttled per problem: the same message (numbers aside) at most once per warn_period.
        self._warn(kind + ":" + re.sub(r"[0-9.]+", "#", message)[:80], message)
        if time.monotonic() - self._last_diag > 0.2:  # show it now, not only at the next period
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        pub = self._diag_pub
        if pub is None:
            return
        self._last_diag = time.monotonic()
        snap = self.stats.snapshot()
        sync = self._sync
        extra = {
            "state": self.state_label,
            "objects": ",".join(i.name for i in self.infos),
            "sync_backend": sync.backend if sync else "",
            "sync_out_of_order": sync.stats.out_of_order if sync else 0,
            "sync_time_jumps": sync.stats.time_jumps if sync else 0,
            "sync_dropped": sync.dropped if sync else 0,
            "tf_backend": self.outputs.tf_backend if self.outputs else "",
            "detections_backend": self.outputs.detections_backend if self.outputs else "",
            "image_conversion": "cv_bridge" if uses_cv_bridge() else "numpy",
            "distortion": self._distortion,
        }
        period = self.params.diagnostics_period if self.params else 1.0
        subs = list(self._subs)
        names = list(sync.names) if sync else []
        msg = diagnostic_array(snap, name=f"{self.get_fully_qualified_name()}: 6D pose",
                               hardware_id=self._camera_frame or "camera", stamp=self.get_clock().now().to_msg(),
                               extra=extra, warn_window_s=max(5.0, 3 * period), active=self._active,
                               inputs=names, slop=self.params.slop if self.params else None,
                               topics={n: s.topic_name for n, s in zip(names, subs)})
        try:
            pub.publish(msg)
        except Exception:  # noqa: BLE001 - publisher destroyed during a transition
            pass

    def _on_reset(self, request, response):
        if self._sync is not None:
            self._sync.reset()
        if self._worker is not None:
            self._worker.clear()
        if self.estimator is not None:
            self.estimator.reset_tracking()  # every object's next frame runs full detection
        self.stats.reset()
        self._warned.clear()
        response.success = True
        response.message = "synchronizer, pending frame, object tracks, statistics and warnings reset"
        self.get_logger().info(response.message)
        return response

    def _on_set_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult

        changed = {p.name: p.value for p in params if p.name in PARAMETERS}
        if not changed:
            return SetParametersResult(successful=True)
        values = {name: self.get_parameter(name).value for name in PARAMETERS if self.has_parameter(name)}
        values.update(changed)
        try:
            validate_params(values, check_paths=False)
        except ParameterError as exc:
            lines = exc.lines_for(changed)
            if lines:
                return SetParametersResult(successful=False, reason="; ".join(lines))
        return SetParametersResult(successful=True)

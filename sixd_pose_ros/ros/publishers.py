"""Everything the node publishes per frame: Detection3DArray, PoseStamped per object, TF, markers,
debug image.

Message builders are plain functions (tested without DDS); :class:`OutputPublishers` owns the
publishers. Every output carries the header of the colour image it came from. ``~/detections``
goes out on every processed frame, empty when nothing was found; an object not found in a frame
gets no pose and no TF, and its marker is deleted: nothing stale is shown.
vision_msgs comes from apt on a robot (ros-jazzy-vision-msgs) and is built from its message
definitions by scripts/setup.sh elsewhere; where it is missing, ``~/detections`` is off and
``detections_backend`` says why.
With an output frame (frames.output_frame), poses and detections carry that frame, transformed
by the camera -> output transform the node looked up; a frame whose transform is missing gets
no poses or detections (never camera-frame numbers under another frame's name). TF of the
objects keeps the camera as parent, and markers and the debug image stay in the camera frame.
TF goes through tf2_ros.TransformBroadcaster when it is importable, else straight to /tf as a
TFMessage with the broadcaster's QoS (reliable, volatile, depth 100).
"""
from __future__ import annotations

import dataclasses
from typing import Collection, Mapping, Sequence

import numpy as np
from geometry_msgs.msg import PoseStamped, TransformStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from sixd_pose_ros.geometry.rotations import quat_xyzw_from_matrix
from sixd_pose_ros.pipeline.types import ObjectPose
from sixd_pose_ros.ros.estimator_loader import ObjectInfo
from sixd_pose_ros.ros.image_conversion import array_to_image
from sixd_pose_ros.ros.overlay import draw_overlay, object_color

try:
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    HAS_VISION_MSGS = True
except ImportError:  # not on any pip registry; scripts/setup.sh builds it, apt has it
    HAS_VISION_MSGS = False

__all__ = ["pose_msg", "transform_msg", "marker_array", "marker_alpha", "detection_array", "object_box",
           "transform_poses", "OutputPublishers", "TF_QOS", "HAS_VISION_MSGS"]

# The box of an object the estimator reports but did not announce at configure (no ObjectInfo).
_DEFAULT_HALF_SIZE = 0.05

TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                    history=HistoryPolicy.KEEP_LAST)


def _fill_pose(dst, R: np.ndarray, t: np.ndarray) -> None:
    q = quat_xyzw_from_matrix(np.asarray(R, dtype=np.float64))
    dst.orientation.x, dst.orientation.y, dst.orientation.z, dst.orientation.w = (float(v) for v in q)
    dst.position.x, dst.position.y, dst.position.z = (float(v) for v in np.asarray(t, dtype=np.float64))


def pose_msg(pose: ObjectPose, header: Header) -> PoseStamped:
    """The object's pose in the camera frame (object -> camera), with the colour image's header."""
    msg = PoseStamped(header=header)
    _fill_pose(msg.pose, pose.R, pose.t)
    return msg


def transform_msg(pose: ObjectPose, header: Header, child_frame_id: str) -> TransformStamped:
    """TF camera frame (header.frame_id) -> child_frame_id."""
    msg = TransformStamped(header=header, child_frame_id=child_frame_id)
    q = quat_xyzw_from_matrix(np.asarray(pose.R, dtype=np.float64))
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    tr = msg.transform.translation
    tr.x, tr.y, tr.z = (float(v) for v in np.asarray(pose.t, dtype=np.float64))
    return msg


def transform_poses(poses: Sequence[ObjectPose], T: np.ndarray) -> list[ObjectPose]:
    """The poses moved into another frame: ``T`` (4, 4) maps camera coordinates to it."""
    T = np.asarray(T, dtype=np.float64)
    return [dataclasses.replace(p, R=T[:3, :3] @ np.asarray(p.R, dtype=np.float64),
                                t=T[:3, :3] @ np.asarray(p.t, dtype=np.float64) + T[:3, 3]) for p in poses]


def object_box(info: ObjectInfo | None) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) corners of the object's axis-aligned box in its own frame (m): the mesh's extent
    (known model), the fused surface's or the reference sphere's box (model free); a 10 cm cube
    for an object without ObjectInfo."""
    if info is None:
        return np.full(3, -_DEFAULT_HALF_SIZE), np.full(3, _DEFAULT_HALF_SIZE)
    return np.asarray(info.bbox_min, dtype=np.float64), np.asarray(info.bbox_max, dtype=np.float64)


def _box_size(lo: np.ndarray, hi: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(max(v, 1e-3)) for v in (hi - lo))


def detection_array(poses: Sequence[ObjectPose], infos: Sequence[ObjectInfo], header: Header,
                    rgb_only: Mapping[str, float] = {}):
    """vision_msgs/Detection3DArray of one frame: one Detection3D per found instance, none when
    nothing was found.

    Per detection: ``results[0]`` has class_id = object name, the score and the object's pose
    (object -> camera; covariance zero, i.e. not estimated); ``bbox`` is the object's box from
    :func:`object_box` placed by the pose (its centre is the pose when the mesh is centred on its
    origin, as BOP meshes are); ``id`` is the object name (``name/k`` when the name is found more
    than once in the frame), stable across frames for one object. ``rgb_only`` (object name ->
    position standard deviation, m) marks estimates made without usable depth: their pose
    covariance has that variance on x, y and z (isotropic, so the same in any frame), where an
    RGB-D estimate's is zero (not estimated).
    """
    msg = Detection3DArray(header=header)
    by_name = {i.name: i for i in infos}
    counts: dict[str, int] = {}
    for pose in poses:
        counts[pose.name] = counts.get(pose.name, 0) + 1
    seen: dict[str, int] = {}
    for pose in poses:
        R, t = np.asarray(pose.R, dtype=np.float64), np.asarray(pose.t, dtype=np.float64)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = pose.name
        hyp.hypothesis.score = float(pose.score)
        _fill_pose(hyp.pose.pose, R, t)
        if pose.name in rgb_only:
            var = float(rgb_only[pose.name]) ** 2
            hyp.pose.covariance = [var if i in (0, 7, 14) else 0.0 for i in range(36)]
        det = Detection3D(header=header, results=[hyp])
        lo, hi = object_box(by_name.get(pose.name))
        _fill_pose(det.bbox.center, R, R @ ((lo + hi) / 2) + t)
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = _box_size(lo, hi)
        k = seen[pose.name] = seen.get(pose.name, -1) + 1
        det.id = pose.name if counts[pose.name] == 1 else f"{pose.name}/{k}"
        msg.detections.append(det)
    return msg


def marker_alpha(score: float) -> float:
    """Marker opacity from the score: fades towards 0.15 as the score drops."""
    return float(np.clip(0.15 + 0.85 * score, 0.15, 1.0))


def marker_array(poses: Sequence[ObjectPose], infos: Sequence[ObjectInfo], header: Header,
                 rgb_only: Collection[str] = ()) -> MarkerArray:
    """For each known object: a mesh (or a box the size of its bounding box) and a text label where
    it was found; DELETE actions for those not found in this frame."""
    found = {p.name: p for p in poses}
    out = MarkerArray()
    names = [i.name for i in infos] + [n for n in found if n not in {i.name for i in infos}]
    by_name = {i.name: i for i in infos}
    for name in names:
        body = Marker(header=header, ns=name, id=0)
        label = Marker(header=header, ns=name, id=1)
        pose = found.get(name)
        if pose is None:
            body.action = label.action = Marker.DELETE
            out.markers += [body, label]
            continue
        info = by_name.get(name)
        rgb = object_color(name)
        color = ColorRGBA(r=rgb[0] / 255.0, g=rgb[1] / 255.0, b=rgb[2] / 255.0, a=marker_alpha(pose.score))
        body.action = Marker.ADD
        body.color = color
        R, t = np.asarray(pose.R, dtype=np.float64), np.asarray(pose.t, dtype=np.float64)
        if info is not None and info.mesh_path is not None:
            body.type = Marker.MESH_RESOURCE
            body.mesh_resource = "file://" + str(info.mesh_path.absolute())
            body.mesh_use_embedded_materials = info.mesh_path.suffix.lower() in (".glb", ".gltf", ".dae")
            body.scale.x = body.scale.y = body.scale.z = 1.0
            _fill_pose(body.pose, R, t)
        else:
            lo, hi = object_box(info)
            body.type = Marker.CUBE
            body.scale.x, body.scale.y, body.scale.z = _box_size(lo, hi)
            _fill_pose(body.pose, R, R @ ((lo + hi) / 2) + t)
        size = info.diameter if info is not None else 0.1
        label.action = Marker.ADD
        label.type = Marker.TEXT_VIEW_FACING
        label.text = f"{name} {pose.score:.2f}" + (" RGB-only" if name in rgb_only else "")
        label.scale.z = float(max(0.2 * size, 0.01))
        label.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        _fill_pose(label.pose, np.eye(3), t - np.array([0.0, 0.6 * size, 0.0]))  # above it (camera y is down)
        out.markers += [body, label]
    return out


class OutputPublishers:
    """Creates and owns the output publishers of one node; ``publish`` sends one frame's results."""

    def __init__(self, node, infos: Sequence[ObjectInfo], *, tf_prefix: str, publish_tf: bool = True,
                 publish_markers: bool = True, publish_debug_image: bool = True, qos: int = 10) -> None:
        self.node, self.infos, self.tf_prefix = node, list(infos), tf_prefix
        self.poses = {i.name: node.create_publisher(PoseStamped, f"~/{i.name}/pose", qos) for i in self.infos}
        self._tf_broadcaster = self._tf_pub = None
        self.tf_backend = "off"
        if publish_tf:
            try:
                from tf2_ros import TransformBroadcaster

                self._tf_broadcaster = TransformBroadcaster(node)
                self.tf_backend = "tf2_ros"
            except Exception:  # noqa: BLE001 - tf2_ros is not installable from pip
                from tf2_msgs.msg import TFMessage

                self._tf_pub = node.create_publisher(TFMessage, "/tf", TF_QOS)
                self._tf_msg = TFMessage
                self.tf_backend = "tf2_msgs"
        self.detections = None
        self.detections_backend = "off: vision_msgs is not installed (sudo apt-get install ros-jazzy-vision-msgs)"
        if HAS_VISION_MSGS:
            self.detections = node.create_publisher(Detection3DArray, "~/detections", qos)
            self.detections_backend = "vision_msgs"
        self.markers = node.create_publisher(MarkerArray, "~/markers", qos) if publish_markers else None
        self.debug_image = node.create_publisher(Image, "~/debug_image", qos) if publish_debug_image else None
        self._axis = {i.name: 0.5 * i.diameter for i in self.infos}

    def child_frame(self, name: str) -> str:
        return f"{self.tf_prefix}{name}"

    def publish(self, poses: Sequence[ObjectPose], header: Header, rgb: np.ndarray | None = None,
                K: np.ndarray | None = None, *, output_header: Header | None = None,
                output_transform: np.ndarray | None | bool = False, publish_tf: bool = True,
                rgb_only: Mapping[str, float] = {}) -> None:
        """One frame's outputs. ``output_header`` (another frame) with ``output_transform`` (camera
        -> that frame, (4, 4)) moves poses and detections there; ``output_transform=None`` means
        TF had no transform: poses and detections are left out this frame. ``publish_tf=False``
        leaves out TF (e.g. a frame stamped 0, which TF cannot place in time). ``rgb_only``: see
        :func:`detection_array`; their marker labels say RGB-only."""
        out_poses, out_header = poses, header
        if output_header is not None:
            out_header = output_header
            if output_transform is None:
                out_poses = None
            elif output_transform is not False:
                out_poses = transform_poses(poses, output_transform)
        if self.detections is not None and out_poses is not None:  # every frame, empty when nothing was found
            self.detections.publish(detection_array(out_poses, self.infos, out_header, rgb_only))
        for pose in out_poses or ():
            pub = self.poses.get(pose.name)
            if pub is None:  # an object the estimator reports that was not announced at configure
                pub = self.poses[pose.name] = self.node.create_publisher(PoseStamped, f"~/{pose.name}/pose", 10)
            pub.publish(pose_msg(pose, out_header))
        if poses and publish_tf and (self._tf_broadcaster is not None or self._tf_pub is not None):
            transforms = [transform_msg(p, header, self.child_frame(p.name)) for p in poses]
            if self._tf_broadcaster is not None:
                self._tf_broadcaster.sendTransform(transforms)
            else:
                self._tf_pub.publish(self._tf_msg(transforms=transforms))
        if self.markers is not None:
            self.markers.publish(marker_array(poses, self.infos, header, rgb_only))
        if self.debug_image is not None and rgb is not None and K is not None \
                and self.debug_image.get_subscription_count() > 0:
            self.debug_image.publish(array_to_image(draw_overlay(rgb, K, poses, self._axis), "rgb8", header))

    def destroy(self) -> None:
        broadcaster_pub = getattr(self._tf_broadcaster, "pub_tf", None)
        pubs = list(self.poses.values()) + [p for p in (self.detections, self.markers, self.debug_image,
                                                        self._tf_pub, broadcaster_pub) if p]
        for pub in pubs:
            self.node.destroy_publisher(pub)
        self.poses.clear()
        self.detections = self.markers = self.debug_image = self._tf_pub = None
        self._tf_broadcaster = None

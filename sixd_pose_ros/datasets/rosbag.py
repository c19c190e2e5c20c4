"""rosbag2 recordings of annotated RGB-D frames, written and read with the pure-Python ``rosbags``.

Why ``rosbags`` and not rclpy/rosbag2_py: this module runs in evaluation and data generation,
on machines without a ROS install (the rosbag2 C++ stack is not pip-installable here), and
the rule of the house keeps ROS imports inside ``sixd_pose_ros/ros/``. ``rosbags`` ships the
standard message definitions (we use the ROS 2 Jazzy typestore; Image, CameraInfo and
TFMessage are identical in Humble) and writes both storages, MCAP and sqlite3, that
``ros2 bag play`` reads.

A frame becomes, all with the header stamp *and* bag timestamp ``frame.stamp_ns``:

* ``{ns}/color/image_raw``: ``sensor_msgs/Image`` ``rgb8`` (or, with ``compress_images``,
  ``{ns}/color/image_raw/compressed``: ``sensor_msgs/CompressedImage`` lossless PNG in
  image_transport's ``"rgb8; png compressed bgr8"`` format);
* ``{ns}/depth/image_raw``: ``sensor_msgs/Image``, registered to the color image, ``32FC1``
  meters or ``16UC1`` millimeters (what RealSense drivers publish). Depth is never
  compressed: compressedDepth's quantized inverse-depth PNG would not round-trip exactly;
* ``{ns}/color/camera_info``: ``sensor_msgs/CameraInfo``, ``plumb_bob`` with zero distortion,
  ``r`` identity, ``p = [K | 0]``;
* ``/tf``: ``tf2_msgs/TFMessage``, one transform per ground-truth instance,
  ``frame.frame_id -> {prefix}{obj_id}`` (a second instance of the same object gets
  ``{prefix}{obj_id}_1``, and so on, since TF frame names must be unique). A frame without
  instances still gets an empty TFMessage, so "no objects" differs from "no ground truth".

Reading pairs the streams by header stamp (exactly, or within ``max_skew_ns`` for real
recordings whose streams are not stamped together). Bags carry no masks: instances come back
with ``mask_visib=None``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from sixd_pose_ros.datasets.types import GTInstance, SceneFrame
from sixd_pose_ros.errors import DatasetError
from sixd_pose_ros.io import atomic_output_path

__all__ = ["write_rosbag", "read_rosbag", "camera_topics", "Storage", "DepthEncoding"]

log = logging.getLogger(__name__)

Storage = Literal["mcap", "sqlite3"]
DepthEncoding = Literal["32FC1", "16UC1"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TF_TOPIC = "/tf"
_PNG_COLOR_FORMAT = "rgb8; png compressed bgr8"
_UINT16_MAX = 65535
# A color frame whose partners never arrive is given up once the color stream is this far
# ahead; bounds the buffers when a stream stops early in a long recording.
_GIVE_UP_NS = 2_000_000_000


@functools.lru_cache(maxsize=1)
def _typestore() -> Any:
    """The Jazzy typestore, built once (building it parses all message definitions)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def camera_topics(namespace: str = "/camera") -> dict[str, str]:
    """Topic names this module uses under a camera namespace (``""`` or ``"/"`` = root)."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return {
        "color": f"{ns}/color/image_raw",
        "color_compressed": f"{ns}/color/image_raw/compressed",
        "depth": f"{ns}/depth/image_raw",
        "aligned_depth": f"{ns}/aligned_depth_to_color/image_raw",
        "info": f"{ns}/color/camera_info",
    }


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


class _MessageFactory:
    """Builds the rosbags message objects of one frame (no ROS install needed)."""

    def __init__(self) -> None:
        self.ts = _typestore()
        t = self.ts.types
        self.Time = t["builtin_interfaces/msg/Time"]
        self.Header = t["std_msgs/msg/Header"]
        self.Image = t[IMAGE]
        self.CompressedImage = t[COMPRESSED_IMAGE]
        self.CameraInfo = t[CAMERA_INFO]
        self.RegionOfInterest = t["sensor_msgs/msg/RegionOfInterest"]
        self.TFMessage = t[TF_MESSAGE]
        self.TransformStamped = t["geometry_msgs/msg/TransformStamped"]
        self.Transform = t["geometry_msgs/msg/Transform"]
        self.Vector3 = t["geometry_msgs/msg/Vector3"]
        self.Quaternion = t["geometry_msgs/msg/Quaternion"]

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        if stamp_ns < 0:
            raise ValueError(f"stamp_ns must be >= 0 for a ROS time, got {stamp_ns}")
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return self.Header(stamp=self.Time(sec=sec, nanosec=nanosec), frame_id=frame_id)

    def image(self, header: Any, array: np.ndarray, encoding: str) -> Any:
        array = np.ascontiguousarray(array)
        height, width = array.shape[:2]
        return self.Image(
            header=header,
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=int(sys.byteorder == "big"),
            step=array.strides[0],
            data=array.view(np.uint8).reshape(-1),
        )

    def compressed_png(self, header: Any, rgb: np.ndarray) -> Any:
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("cv2.imencode failed to encode a PNG")
        return self.CompressedImage(header=header, format=_PNG_COLOR_FORMAT, data=png.reshape(-1))

    def camera_info(self, header: Any, K: np.ndarray, width: int, height: int) -> Any:
        P = np.zeros((3, 4))
        P[:, :3] = K
        return self.CameraInfo(
            header=header,
            height=height,
            width=width,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=np.asarray(K, np.float64).reshape(-1).copy(),
            r=np.eye(3).reshape(-1),
            p=P.reshape(-1),
            binning_x=0,
            binning_y=0,
            roi=self.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
        )

    def tf(self, header: Any, instances: list[GTInstance], prefix: str) -> Any:
        transforms = []
        seen: dict[int, int] = {}
        for inst in instances:
            k = seen.get(inst.obj_id, 0)
            seen[inst.obj_id] = k + 1
            child = f"{prefix}{inst.obj_id}" + (f"_{k}" if k else "")
            x, y, z, w = Rotation.from_matrix(inst.R_m2c).as_quat()  # scalar-last
            tx, ty, tz = (float(v) for v in inst.t_m2c)
            transforms.append(
                self.TransformStamped(
                    header=header,
                    child_frame_id=child,
                    transform=self.Transform(
                        translation=self.Vector3(x=tx, y=ty, z=tz),
                        rotation=self.Quaternion(x=float(x), y=float(y), z=float(z), w=float(w)),
                    ),
                )
            )
        return self.TFMessage(transforms=transforms)


def _depth_mm_uint16(depth_m: np.ndarray) -> tuple[np.ndarray, int]:
    """Meters -> uint16 millimeters; invalid or out-of-range -> 0. Returns (image, n_clipped)."""
    mm = np.rint(depth_m.astype(np.float64) * 1000.0)
    valid = np.isfinite(mm) & (mm > 0)
    too_far = valid & (mm > _UINT16_MAX)
    out = np.zeros(depth_m.shape, np.uint16)
    keep = valid & ~too_far
    out[keep] = mm[keep].astype(np.uint16)
    return out, int(too_far.sum())


def _open_writer(path: Path, storage: Storage) -> Any:
    """A rosbags Writer for ``path``; keyword arguments differ between rosbags releases."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    kwargs: dict[str, Any] = {"storage_plugin": plugin}
    if "version" in inspect.signature(Writer.__init__).parameters:
        kwargs["version"] = getattr(Writer, "VERSION_LATEST", 8)  # required since 0.11
    return Writer(path, **kwargs)


def write_rosbag(
    path: Path | str,
    frames: Iterable[SceneFrame],
    *,
    storage: Storage = "mcap",
    namespace: str = "/camera",
    object_frame_prefix: str = "object_",
    compress_images: bool = False,
    depth_encoding: DepthEncoding = "32FC1",
    overwrite: bool = False,
) -> int:
    """Record ``frames`` as a rosbag2 bag (a folder) at ``path``; returns the frame count.

    The bag appears atomically: it is written under a hidden staging folder next to ``path``
    and renamed when complete (an existing ``path`` needs ``overwrite=True``). See the module
    docstring for topics and conventions.
    """
    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    if depth_encoding not in ("32FC1", "16UC1"):
        raise ValueError(f"depth_encoding must be '32FC1' or '16UC1', got {depth_encoding!r}")
    topics = camera_topics(namespace)
    make = _MessageFactory()
    ts = make.ts
    n_frames = n_clipped = 0
    with atomic_output_path(path, overwrite=overwrite) as bag_path:
        with _open_writer(bag_path, storage) as writer:
            if compress_images:
                color = writer.add_connection(
                    topics["color_compressed"], COMPRESSED_IMAGE, typestore=ts
                )
            else:
                color = writer.add_connection(topics["color"], IMAGE, typestore=ts)
            depth = writer.add_connection(topics["depth"], IMAGE, typestore=ts)
            info = writer.add_connection(topics["info"], CAMERA_INFO, typestore=ts)
            tf = writer.add_connection(TF_TOPIC, TF_MESSAGE, typestore=ts)
            for frame in frames:
                stamp = frame.stamp_ns
                header = make.header(stamp, frame.frame_id)
                if compress_images:
                    color_msg, color_type = make.compressed_png(header, frame.rgb), COMPRESSED_IMAGE
                else:
                    color_msg, color_type = make.image(header, frame.rgb, "rgb8"), IMAGE
                if depth_encoding == "32FC1":
                    depth_msg = make.image(header, frame.depth.astype(np.float32), "32FC1")
                else:
                    depth_mm, clipped = _depth_mm_uint16(frame.depth)
                    n_clipped += clipped
                    depth_msg = make.image(header, depth_mm, "16UC1")
                info_msg = make.camera_info(header, frame.K, frame.width, frame.height)
                tf_msg = make.tf(header, frame.instances, object_frame_prefix)
                writer.write(color, stamp, ts.serialize_cdr(color_msg, color_type))
                writer.write(depth, stamp, ts.serialize_cdr(depth_msg, IMAGE))
                writer.write(info, stamp, ts.serialize_cdr(info_msg, CAMERA_INFO))
                writer.write(tf, stamp, ts.serialize_cdr(tf_msg, TF_MESSAGE))
                n_frames += 1
    if n_clipped:
        log.warning(
            "%s: %d depth pixels beyond 65.535 m were stored as 0 in 16UC1", path, n_clipped
        )
    return n_frames


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _rows(msg: Any, bytes_per_pixel: int) -> np.ndarray:
    """(H, W * bpp) uint8 view of an Image's data, dropping any row padding (``step``)."""
    h, w = int(msg.height), int(msg.width)
    data = np.asarray(msg.data, dtype=np.uint8)
    if int(msg.step) < w * bytes_per_pixel or data.size < h * int(msg.step):
        raise DatasetError(
            f"image message of {w}x{h} {msg.encoding} has step {msg.step} and {data.size} bytes; "
            "the recording is corrupt"
        )
    return data[: h * int(msg.step)].reshape(h, int(msg.step))[:, : w * bytes_per_pixel]


_COLOR_CODES = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}


def _decode_color(msg: Any, compressed: bool) -> np.ndarray:
    if compressed:
        bgr = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"cannot decode a compressed color image (format {msg.format!r})")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    encoding = msg.encoding.lower()
    if encoding not in _COLOR_CODES:
        raise DatasetError(
            f"unsupported color encoding {msg.encoding!r}; record rgb8, bgr8, rgba8, bgra8 or mono8"
        )
    channels, code = _COLOR_CODES[encoding]
    image = _rows(msg, channels).reshape(int(msg.height), int(msg.width), channels)
    return image.copy() if code is None else cv2.cvtColor(image, code)


def _decode_depth(msg: Any) -> np.ndarray:
    """Depth Image -> float32 meters (0 = no measurement); accepts 32FC1 (m) and 16UC1 (mm)."""
    encoding = msg.encoding.upper()
    order = ">" if msg.is_bigendian else "<"
    h, w = int(msg.height), int(msg.width)
    if encoding == "32FC1":
        depth = _rows(msg, 4).copy().view(f"{order}f4").reshape(h, w).astype(np.float32)
        depth[~np.isfinite(depth)] = 0.0
        return depth
    if encoding in ("16UC1", "MONO16"):
        mm = _rows(msg, 2).copy().view(f"{order}u2").reshape(h, w)
        return (mm.astype(np.float64) / 1000.0).astype(np.float32)
    raise DatasetError(
        f"unsupported depth encoding {msg.encoding!r}; record 32FC1 (meters) or 16UC1 (millimeters)"
    )


@dataclass
class _PendingColor:
    stamp: int
    frame_id: str
    rgb: np.ndarray


def _nearest(stamps: Iterable[int], target: int, max_skew: int | None) -> int | None:
    best = min(stamps, key=lambda s: abs(s - target), default=None)
    if best is None or (max_skew is not None and abs(best - target) > max_skew):
        return None
    return best


@dataclass
class _FramePairer:
    """Matches color images with depth, camera_info and /tf by header stamp, streaming.

    Messages arrive in bag-time order, which is close to, but not exactly, stamp order. A
    color image is emitted once its partners can no longer improve: the depth stream has
    reached its stamp (+ skew), the tf stream has moved *past* it (several TF messages may
    share a stamp), camera_info has reached it or is already known and the color stream has
    moved on. A color image whose partners never come is given up after ``_GIVE_UP_NS`` of
    color stream time, which bounds memory when a stream stops early.
    """

    max_skew_ns: int
    child_re: re.Pattern[str]
    has_depth: bool
    has_tf: bool
    source: str  # for messages
    pending: deque[_PendingColor] = field(default_factory=deque)
    depth: dict[int, np.ndarray] = field(default_factory=dict)
    info: dict[int, np.ndarray] = field(default_factory=dict)  # stamp -> K
    tf: dict[int, list[tuple[str, str, np.ndarray, np.ndarray]]] = field(default_factory=dict)
    newest: dict[str, int] = field(default_factory=dict)  # stream -> newest stamp seen
    n_without_depth: int = 0

    def saw(self, stream: str, stamp: int) -> None:
        self.newest[stream] = max(stamp, self.newest.get(stream, stamp))

    def _ready(self, c: _PendingColor, at_end: bool) -> bool:
        skew = self.max_skew_ns
        if at_end or self.newest.get("color", c.stamp) > c.stamp + skew + _GIVE_UP_NS:
            return True
        if self.has_depth and self.newest.get("depth", -1) < c.stamp + skew:
            return False
        if self.has_tf and self.newest.get("tf", -1) <= c.stamp + skew:
            return False
        return self.newest.get("info", -1) >= c.stamp + skew or (
            bool(self.info) and self.newest["color"] > c.stamp + skew
        )

    def _camera_matrix(self, c: _PendingColor) -> np.ndarray:
        stamp = _nearest(self.info, c.stamp, self.max_skew_ns)
        if stamp is None:  # camera_info published once or rarely: the latest before, or any
            older = [s for s in self.info if s <= c.stamp]
            stamp = max(older) if older else _nearest(self.info, c.stamp, None)
        if stamp is None:
            raise DatasetError(
                f"no camera_info in {self.source} for the image at {c.stamp} ns; record the "
                "camera_info topic together with the images"
            )
        return self.info[stamp]

    def _instances(self, c: _PendingColor) -> list[GTInstance]:
        best: dict[str, tuple[int, int, GTInstance]] = {}  # child -> (|dt|, order, instance)
        order = 0
        for stamp, items in self.tf.items():
            dt = abs(stamp - c.stamp)
            if dt > self.max_skew_ns:
                continue
            for parent, child, R, t in items:
                m = self.child_re.match(child)
                if m is None or parent.lstrip("/") != c.frame_id.lstrip("/"):
                    continue
                order += 1
                if child not in best or dt < best[child][0]:
                    inst = GTInstance(obj_id=int(m[1]), R_m2c=R, t_m2c=t, mask_visib=None)
                    best[child] = (dt, order, inst)
        return [inst for _, _, inst in sorted(best.values(), key=lambda v: v[1])]

    def _build(self, c: _PendingColor) -> SceneFrame:
        stamp = _nearest(self.depth, c.stamp, self.max_skew_ns)
        if stamp is None:
            self.n_without_depth += 1
            depth = np.zeros(c.rgb.shape[:2], np.float32)
        else:
            depth = self.depth[stamp]
            if depth.shape != c.rgb.shape[:2]:
                raise DatasetError(
                    f"depth {depth.shape[::-1]} and color {c.rgb.shape[1::-1]} sizes differ in "
                    f"{self.source}; depth must be registered to color (RealSense: "
                    "align_depth.enable:=true and depth_topic=.../aligned_depth_to_color/image_raw)"
                )
        return SceneFrame(
            rgb=c.rgb,
            depth=depth,
            K=self._camera_matrix(c),
            instances=self._instances(c),
            stamp_ns=c.stamp,
            frame_id=c.frame_id,
        )

    def _prune(self) -> None:
        """Forget partners too old for any pending color image (but keep the newest info)."""
        if self.pending:
            low = min(p.stamp for p in self.pending) - self.max_skew_ns
        else:
            low = self.newest.get("color", 0) - self.max_skew_ns + 1
        for buf in (self.depth, self.tf):
            for s in [s for s in buf if s < low]:
                del buf[s]
        if self.info:
            keep = max(self.info)
            for s in [s for s in self.info if s < low and s != keep]:
                del self.info[s]

    def drain(self, at_end: bool = False) -> Iterator[SceneFrame]:
        """Yield every pending frame that is complete (all of them ``at_end``)."""
        emitted = False
        while self.pending and self._ready(self.pending[0], at_end):
            yield self._build(self.pending.popleft())
            emitted = True
        if emitted:
            self._prune()


def read_rosbag(
    path: Path | str,
    namespace: str = "/camera",
    object_frame_prefix: str = "object_",
    *,
    color_topic: str | None = None,
    depth_topic: str | None = None,
    info_topic: str | None = None,
    tf_topic: str = TF_TOPIC,
    max_skew_ns: int = 0,
) -> Iterator[SceneFrame]:
    """Yield one :class:`SceneFrame` per color image of a bag, in recording order.

    Pairing: depth and ``/tf`` transforms are matched to a color image by header stamp
    (nearest within ``max_skew_ns``; 0 = exact, as :func:`write_rosbag` writes them); camera
    info by nearest stamp, falling back to the most recent one (it rarely changes). A color
    image without matching depth gets an all-zero depth (no measurement; counted in a
    warning). Ground truth comes from transforms ``frame_id -> {prefix}{obj_id}[_k]``;
    ``mask_visib`` is ``None`` since bags carry no masks.

    Topics default to :func:`camera_topics` of ``namespace``; the color topic may be raw or
    ``.../compressed``; the depth topic falls back to ``aligned_depth_to_color`` (RealSense).
    The bag is streamed, not loaded: memory stays at a few frames.
    """
    from rosbags.rosbag2 import Reader, ReaderError

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"bag {path} does not exist; check the path")
    defaults = camera_topics(namespace)
    ts = _typestore()
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError) as exc:
        raise DatasetError(
            f"cannot open bag {path} ({exc}); give a rosbag2 folder (or its .mcap/.db3 file)"
        ) from exc
    try:
        by_topic = {c.topic: c for c in reader.connections}

        def pick(*candidates: str | None) -> str | None:
            return next((t for t in candidates if t and t in by_topic), None)

        if color_topic:
            color_t = pick(color_topic, color_topic.rstrip("/") + "/compressed")
        else:
            color_t = pick(defaults["color"], defaults["color_compressed"])
        info_t = pick(info_topic or defaults["info"])
        if color_t is None or info_t is None:
            raise DatasetError(
                f"bag {path} lacks the color image or camera_info topic (looked for "
                f"{color_topic or defaults['color']} and {info_topic or defaults['info']}); "
                f"it has: {sorted(by_topic)}; pass the right namespace= or topic names"
            )
        compressed = by_topic[color_t].msgtype == COMPRESSED_IMAGE
        if depth_topic:
            depth_t = pick(depth_topic)
        else:
            depth_t = pick(defaults["depth"], defaults["aligned_depth"])
        tf_t = pick(tf_topic)
        wanted = {color_t: "color", info_t: "info"}
        if depth_t:
            wanted[depth_t] = "depth"
        if tf_t:
            wanted[tf_t] = "tf"

        pairer = _FramePairer(
            max_skew_ns=int(max_skew_ns),
            child_re=re.compile(rf"^{re.escape(object_frame_prefix)}(\d+)(?:_(\d+))?$"),
            has_depth=depth_t is not None,
            has_tf=tf_t is not None,
            source=str(path),
        )
        conns = [by_topic[t] for t in wanted]
        for conn, bag_time, raw in reader.messages(connections=conns):
            kind = wanted[conn.topic]
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            if kind == "tf":
                _add_tf(pairer, msg, bag_time)
            else:
                stamp = _stamp_ns(msg.header)
                if kind == "color":
                    rgb = _decode_color(msg, compressed)
                    pairer.pending.append(_PendingColor(stamp, msg.header.frame_id, rgb))
                elif kind == "depth":
                    pairer.depth[stamp] = _decode_depth(msg)
                else:
                    pairer.info[stamp] = _camera_info_K(msg, info_t)
                pairer.saw(kind, stamp)
            yield from pairer.drain()
        yield from pairer.drain(at_end=True)
        if pairer.n_without_depth and depth_t:
            log.warning(
                "%s: %d color images had no depth at their stamp and got zero depth; "
                "pass max_skew_ns if the depth stream is stamped apart from color",
                path,
                pairer.n_without_depth,
            )
    finally:
        reader.close()


def _add_tf(pairer: _FramePairer, msg: Any, bag_time: int) -> None:
    if not msg.transforms:
        # write_rosbag's "no objects in this frame": its bag time is the frame's stamp.
        pairer.saw("tf", bag_time)
    for tr in msg.transforms:
        stamp = _stamp_ns(tr.header)
        q, v = tr.transform.rotation, tr.transform.translation
        R = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
        t = np.array([v.x, v.y, v.z], np.float64)
        pairer.tf.setdefault(stamp, []).append((tr.header.frame_id, tr.child_frame_id, R, t))
        pairer.saw("tf", stamp)


def _camera_info_K(msg: Any, topic: str) -> np.ndarray:
    K = np.asarray(msg.k, np.float64).reshape(3, 3)
    if not np.any(K):
        raise DatasetError(
            f"camera_info on {topic} has an all-zero K (camera not calibrated); calibrate the "
            "camera or record its driver's calibrated camera_info"
        )
    return K

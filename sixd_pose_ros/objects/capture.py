"""Recording posed reference photos for model-free mode, without ROS: the parameters of a
capture, the object box, and the recorder that writes the folder.

The ``capture_references`` node (:mod:`sixd_pose_ros.ros.capture_references`) feeds this module
colour (+ depth) frames with camera poses from TF; everything it decides and writes is here, so it
can be tested and reused without rclpy.

Keeping: the first frame with a pose is kept; after that a frame is kept when the camera moved at
least ``min_translation`` meters **or** turned at least ``min_rotation_deg`` degrees since the last
kept frame, until ``max_frames`` are kept (then the capture finishes by itself).

The object block of ``poses.json`` (see :func:`estimate_object_box`): a user box
(``object.center`` + ``object.extents``, axis-aligned in ``world_frame``) wins; otherwise, with
depth, the table plane is fitted by RANSAC to the back-projected depth of **all** kept frames, and
the object is the cluster of points above it that was seen most often near the image centres.
``up`` is the plane normal (toward the cameras), ``forward`` is ``world_frame`` +x laid flat on
the table (+y when +x is within 10 degrees of up), ``center`` / ``extents`` the object's box in
those axes from the table to its top, padded by ``object.margin``.

Writing is atomic: frames go to a hidden staging folder next to ``output`` and the folder is
renamed to ``output`` only at :meth:`ReferenceRecorder.finish` (the node calls it when the capture
finishes). A recorder aborted or dropped before that (a crash, a kill) removes the staging
folder: ``output`` is then absent, never half-written. A capture with
fewer than 8 kept frames (what ``build-object`` needs) is refused at finish with the fix.
``capture.json`` next to ``poses.json`` records stamps, frames, TF backend, the parameters and
the object estimate (``poses.json`` itself holds only the keys its reader accepts).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry.pinhole import backproject_depth
from sixd_pose_ros.geometry.plane import fit_plane_ransac
from sixd_pose_ros.io import AtomicOutputDir, atomic_write_text
from sixd_pose_ros.objects.posed_images import MIN_REFERENCES

__all__ = [
    "CAPTURE_PARAMETERS", "CaptureError", "CaptureParams", "ObjectBox", "ObjectConfig", "ReferenceRecorder",
    "camera_motion", "estimate_object_box", "forward_axis", "user_box", "validate_capture_params",
]

# name -> (default, description); config/capture_references.yaml documents the same defaults.
CAPTURE_PARAMETERS: dict[str, tuple[Any, str]] = {
    "output": ("", "folder to write (format (a) of docs/model_free_inputs.md); empty = ./capture_<date>-<time>"),
    "overwrite": (False, "replace an existing output folder (at finish, atomically)"),
    "world_frame": ("base_link", "fixed TF frame the camera poses are given in (the robot base)"),
    "camera_frame": ("", "TF frame of the colour camera's optical frame; empty = the image's frame_id"),
    "topics.image": ("color/image_raw", "colour image topic (rgb8/bgr8/mono8)"),
    "topics.depth": ("aligned_depth_to_color/image_raw", "depth registered to colour (16UC1 mm or 32FC1 m)"),
    "topics.camera_info": ("color/camera_info", "camera_info of the colour image"),
    "use_depth": (True, "record depth (needed for the object frame from the table plane)"),
    "min_translation": (0.03, "keep a frame when the camera moved at least this (m) since the last kept one"),
    "min_rotation_deg": (10.0, "... or turned at least this (degrees)"),
    "max_frames": (128, "finish by itself after keeping this many frames"),
    "slop": (0.05, "approximate-time sync: max stamp difference (s) between image, depth and camera_info"),
    "queue_size": (10, "approximate-time sync: messages kept per input"),
    "tf.backend": ("auto", "auto (tf2_ros when importable, else our /tf + /tf_static buffer), tf2_ros or own"),
    "tf.wait": (0.5, "seconds (wall) a frame waits for its TF to arrive before it is skipped"),
    "tf.tolerance": (0.02, "own buffer: once tf.wait has passed, use the nearest TF sample within this (s)"),
    "tf.cache": (10.0, "seconds of TF history kept"),
    "object.center": (None, "user box centre [x, y, z] in world_frame (m); with object.extents, replaces depth"),
    "object.extents": (None, "user box side lengths [x, y, z] (m), axis-aligned in world_frame"),
    "object.margin": (0.01, "padding (m) added on every side of the box estimated from depth"),
    "object.min_height": (0.01, "points at least this far (m) above the table plane are object candidates"),
    "object.max_height": (0.5, "... and at most this far"),
    "object.plane_threshold": (0.006, "RANSAC inlier distance (m) of the table plane"),
    "object.cluster_distance": (0.015, "points closer than this (m) belong to one cluster"),
    "object.central_fraction": (0.5, "the object is the cluster seen most in this central part of the images"),
    "write_masks": (False, "also write mask/ (pixels whose depth lies in the object box)"),
    "progress_period": (2.0, "seconds between progress lines"),
    "warn_period": (5.0, "the same warning is logged at most once per this many seconds"),
}
_PLANE_POINTS_PER_FRAME = 3000  # depth points kept in memory per frame for the table plane
_MAX_PLANE_POINTS = 60000
_OBJECT_PIXELS_PER_FRAME = 80000  # depth pixels per frame (re-read at finish) for the object box
_MIN_OBJECT_POINTS = 50


class CaptureError(SixdPoseError):
    """The capture cannot start or finish; the message names the fix."""


# ------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectConfig:
    """How the object block is found (see :func:`estimate_object_box`); lengths in meters."""

    center: tuple[float, float, float] | None = None
    extents: tuple[float, float, float] | None = None
    margin: float = 0.01
    min_height: float = 0.01
    max_height: float = 0.5
    plane_threshold: float = 0.006
    cluster_distance: float = 0.015
    central_fraction: float = 0.5


@dataclass(frozen=True)
class CaptureParams:
    output: str
    overwrite: bool
    world_frame: str
    camera_frame: str
    image_topic: str
    depth_topic: str
    camera_info_topic: str
    use_depth: bool
    min_translation: float
    min_rotation_deg: float
    max_frames: int
    slop: float
    queue_size: int
    tf_backend: str
    tf_wait: float
    tf_tolerance: float
    tf_cache: float
    object: ObjectConfig
    write_masks: bool
    progress_period: float
    warn_period: float


def _num(name: str, v: Any, problems: list[str], lo: float | None = None, lo_open: bool = False,
         hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        problems.append(f"{name}: {v!r} is not a number; e.g. {name}:={CAPTURE_PARAMETERS[name][0]}")
        return 0.0
    v = float(v)
    if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
        problems.append(f"{name}: {v} is out of range ({'>' if lo_open else '>='} {lo}"
                        f"{'' if hi is None else f', <= {hi}'}); the default is {CAPTURE_PARAMETERS[name][0]}")
    return v


def _int(name: str, v: Any, problems: list[str], lo: int) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        problems.append(f"{name}: {v!r} must be an integer >= {lo}; e.g. {name}:={CAPTURE_PARAMETERS[name][0]}")
        return lo
    return v


def _bool(name: str, v: Any, problems: list[str]) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    problems.append(f"{name}: {v!r} is not a boolean; use {name}:=true or {name}:=false")
    return False


def _name(name: str, v: Any, problems: list[str], allow_empty: bool = False) -> str:
    if not isinstance(v, str) or (not v.strip() and not allow_empty) or any(c.isspace() for c in v):
        problems.append(f"{name}: {v!r} is not a valid name (non-empty, no spaces); e.g. "
                        f"{name}:={CAPTURE_PARAMETERS[name][0] or 'camera_color_optical_frame'}")
        return ""
    return v


def _vec3(name: str, v: Any, problems: list[str], positive: bool = False) -> tuple[float, float, float] | None:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        return None
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        a = np.empty(0)
    if a.size != 3 or not np.all(np.isfinite(a)) or (positive and np.any(a <= 0)):
        what = "3 positive numbers" if positive else "3 numbers"
        problems.append(f"{name}: {v!r} must be {what} in meters, e.g. {name}:=[0.6, 0.0, 0.05]")
        return None
    return tuple(float(x) for x in a)


def validate_capture_params(values: Mapping[str, Any]) -> CaptureParams:
    """Check every parameter (missing ones take their defaults) and return them typed.

    Raises:
        CaptureError: one line per bad value, each naming the fix.
    """
    v = {k: (values[k] if values.get(k) is not None else d) for k, (d, _) in CAPTURE_PARAMETERS.items()}
    p: list[str] = []
    output = v["output"]
    if not isinstance(output, str):
        p.append(f"output: {output!r} is not a path; e.g. output:=refs/mug")
        output = ""
    backend = v["tf.backend"]
    if backend not in ("auto", "tf2_ros", "own"):
        p.append(f"tf.backend: {backend!r} must be auto, tf2_ros or own")
    center = _vec3("object.center", v["object.center"], p)
    extents = _vec3("object.extents", v["object.extents"], p, positive=True)
    if (center is None) != (extents is None) and not any(ln.startswith("object.") for ln in p):
        p.append("object.center and object.extents: give both (a box in world_frame) or neither (the object "
                 "is then found above the table in the depth)")
    obj = ObjectConfig(
        center=center, extents=extents,
        margin=_num("object.margin", v["object.margin"], p, 0.0),
        min_height=_num("object.min_height", v["object.min_height"], p, 0.0, lo_open=True),
        max_height=_num("object.max_height", v["object.max_height"], p, 0.0, lo_open=True),
        plane_threshold=_num("object.plane_threshold", v["object.plane_threshold"], p, 0.0, lo_open=True),
        cluster_distance=_num("object.cluster_distance", v["object.cluster_distance"], p, 0.0, lo_open=True),
        central_fraction=_num("object.central_fraction", v["object.central_fraction"], p, 0.0, True, 1.0))
    if obj.max_height <= obj.min_height and obj.max_height > 0:
        p.append(f"object.max_height ({obj.max_height}) must exceed object.min_height ({obj.min_height})")
    params = CaptureParams(
        output=output, overwrite=_bool("overwrite", v["overwrite"], p),
        world_frame=_name("world_frame", v["world_frame"], p).lstrip("/"),
        camera_frame=_name("camera_frame", v["camera_frame"], p, allow_empty=True).lstrip("/"),
        image_topic=_name("topics.image", v["topics.image"], p),
        depth_topic=_name("topics.depth", v["topics.depth"], p),
        camera_info_topic=_name("topics.camera_info", v["topics.camera_info"], p),
        use_depth=_bool("use_depth", v["use_depth"], p),
        min_translation=_num("min_translation", v["min_translation"], p, 0.0),
        min_rotation_deg=_num("min_rotation_deg", v["min_rotation_deg"], p, 0.0, hi=180.0),
        max_frames=_int("max_frames", v["max_frames"], p, MIN_REFERENCES),
        slop=_num("slop", v["slop"], p, 0.0, lo_open=True, hi=10.0),
        queue_size=_int("queue_size", v["queue_size"], p, 1),
        tf_backend=str(backend), tf_wait=_num("tf.wait", v["tf.wait"], p, 0.0),
        tf_tolerance=_num("tf.tolerance", v["tf.tolerance"], p, 0.0),
        tf_cache=_num("tf.cache", v["tf.cache"], p, 0.0, lo_open=True),
        object=obj, write_masks=_bool("write_masks", v["write_masks"], p),
        progress_period=_num("progress_period", v["progress_period"], p, 0.0, lo_open=True),
        warn_period=_num("warn_period", v["warn_period"], p, 0.0))
    if params.min_translation == 0 and params.min_rotation_deg == 0:
        p.append("min_translation and min_rotation_deg are both 0: every frame would be kept; set "
                 "min_translation:=0.03 or min_rotation_deg:=10.0")
    if p:
        raise CaptureError("invalid capture_references parameters:\n  " + "\n  ".join(p))
    return params


# ------------------------------------------------------------------------------------------------
# Geometry: motion between frames, table plane, object box (pure numpy)
# ------------------------------------------------------------------------------------------------


def camera_motion(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """Translation (m) and rotation (degrees) between two ``(4, 4)`` camera-to-world poses."""
    dt = float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]))
    R = T_a[:3, :3].T @ T_b[:3, :3]
    angle = math.degrees(math.acos(float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))
    return dt, angle


def forward_axis(up: np.ndarray) -> np.ndarray:
    """The object's forward (+x) for an up axis: world +x laid flat (projected onto the plane
    normal to ``up``), or world +y when +x is within 10 degrees of ``up``. A fixed rule, so the
    frame does not depend on where the capture started."""
    up = np.asarray(up, dtype=np.float64)
    for axis in (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])):
        f = axis - (axis @ up) * up
        if np.linalg.norm(f) > math.sin(math.radians(10.0)):
            return f / np.linalg.norm(f)
    raise AssertionError("unreachable: x and y cannot both be parallel to a unit vector")


@dataclass
class ObjectBox:
    """The object block of ``poses.json``: axes, centre and box in the world (meters).

    ``source`` is ``"user_box"`` or ``"depth"``; ``details`` what ``capture.json`` records.
    """

    up: np.ndarray
    forward: np.ndarray
    center: np.ndarray
    extents: np.ndarray
    source: str
    details: dict = field(default_factory=dict)

    @property
    def axes(self) -> np.ndarray:
        """``(3, 3)`` object axes as columns: forward, left, up."""
        return np.stack([self.forward, np.cross(self.up, self.forward), self.up], axis=1)

    def to_json(self) -> dict:
        r = lambda a: [round(float(x), 6) for x in a]
        return {"up": r(self.up), "forward": r(self.forward), "center": r(self.center),
                "extents": r(self.extents)}

    def contains(self, points: np.ndarray) -> np.ndarray:
        """``(N,)`` whether world points ``(N, 3)`` lie inside the box."""
        local = (points - self.center) @ self.axes
        return np.all(np.abs(local) <= 0.5 * self.extents, axis=1)


def estimate_object_box(plane_points: np.ndarray, cameras: np.ndarray,
                        frames: Iterable[tuple[np.ndarray, np.ndarray]], cfg: ObjectConfig) -> ObjectBox:
    """The object's box from the depth of all kept frames (world frame, meters).

    1. **Table**: RANSAC plane over ``plane_points`` (:func:`fit_plane_ransac`); the normal
       points to the side of the cameras.
    2. **Candidates**: the points of every frame between ``min_height`` and ``max_height``
       above it.
    3. **Support**: candidates are binned in voxels of ``cluster_distance / 2``; a voxel counts
       only when at least two frames have points in it. A real surface is seen from several
       views; flying pixels at depth edges and sensor speckle are not, so they drop out here
       without trimming thin real parts (a handle, a drill bit) as percentiles would.
    4. **Clusters**: supported voxels within ``cluster_distance`` of each other are joined
       (connected components).
    5. **The object**: the cluster with the most points seen in the central part of their
       image (``central``): what the camera was pointed at, not the clutter around it.
    6. **Box**: axes up = normal, forward = :func:`forward_axis`, left = up x forward; in them,
       the cluster's extent across, from the table (height 0) to its top, padded by ``margin``
       on every side. The box bottom then lies ``margin`` below the table, so ``build-object``
       also sees a thin ring of table there: its size estimate becomes a slight upper bound,
       its centre is unchanged.

    Args:
        plane_points: ``(N, 3)`` depth points (a subsample of every frame) for the plane.
        cameras: ``(M, 3)`` camera centres (orient the normal).
        frames: per frame ``(points (P, 3), central (P,) bool)``: its depth points and whether
            each one's pixel lies in the central window of its image; read once.

    Raises:
        CaptureError: no plane, or nothing above it near the image centres.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    plane_points = np.asarray(plane_points, dtype=np.float64)
    rng = np.random.default_rng(0)
    if len(plane_points) > _MAX_PLANE_POINTS:
        plane_points = plane_points[rng.choice(len(plane_points), _MAX_PLANE_POINTS, replace=False)]
    if len(plane_points) < 3:
        raise CaptureError("too few depth points to find the table plane; check the depth stream")
    plane = fit_plane_ransac(plane_points, cfg.plane_threshold, rng=rng)
    if plane is None:
        raise CaptureError("no plane found in the depth; check the depth stream and depth units")
    n, d, inliers = plane
    if float(np.mean(np.asarray(cameras) @ n + d)) < 0:
        n, d = -n, -d
    cand, cand_central, cand_frame = [], [], []
    for f, (pts, central) in enumerate(frames):
        height = np.asarray(pts, dtype=np.float64) @ n + d
        sel = (height > cfg.min_height) & (height < cfg.max_height)
        cand.append(np.asarray(pts[sel], dtype=np.float64))
        cand_central.append(np.asarray(central)[sel])
        cand_frame.append(np.full(int(sel.sum()), f, np.int64))
    cp = np.concatenate(cand) if cand else np.empty((0, 3))
    n_frames = len(cand)
    what = (f"{cfg.min_height * 100:.0f}..{cfg.max_height * 100:.0f} cm above the table plane")
    fix = ("point the camera at the object while capturing, check the depth, or give the box (object.center, "
           "object.extents)")
    if len(cp) < _MIN_OBJECT_POINTS:
        raise CaptureError(f"only {len(cp)} depth points lie {what}: no object found; {fix}")
    cc, cf = np.concatenate(cand_central), np.concatenate(cand_frame)
    voxel = 0.5 * cfg.cluster_distance
    keys, inverse = np.unique(np.floor(cp / voxel).astype(np.int64), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    seen = np.unique(inverse * n_frames + cf)  # distinct (voxel, frame) pairs
    support = np.bincount(seen // n_frames, minlength=len(keys))
    good = support >= min(2, n_frames)
    index = np.full(len(keys), -1)
    index[good] = np.arange(int(good.sum()))
    centres = (keys[good] + 0.5) * voxel
    pairs = cKDTree(centres).query_pairs(cfg.cluster_distance, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(centres), len(centres)))
    n_clusters, label_of_voxel = connected_components(graph, directed=False)
    keep = good[inverse]
    label = label_of_voxel[index[inverse[keep]]]
    score = np.bincount(label[cc[keep]], minlength=n_clusters)
    best = int(np.argmax(score)) if n_clusters else 0
    if not n_clusters or score[best] < _MIN_OBJECT_POINTS:
        raise CaptureError(f"nothing {what} was seen near the image centres (in two or more frames); "
                           f"{fix}, or raise object.central_fraction")
    obj = cp[keep][label == best]
    forward = forward_axis(n)
    box = ObjectBox(up=n, forward=forward, center=np.zeros(3), extents=np.zeros(3), source="depth")
    R = box.axes
    local = obj @ R  # (forward, left, up) coordinates
    lo, hi = local[:, :2].min(axis=0), local[:, :2].max(axis=0)
    top = float((obj @ n + d).max())
    # Plane: x . n = -d, so height h sits at up-coordinate h - d.
    box.center = R @ np.array([0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1]), 0.5 * top - d])
    box.extents = np.array([hi[0] - lo[0], hi[1] - lo[1], top]) + 2.0 * cfg.margin
    box.details = {
        "plane": {"normal": n.round(6).tolist(), "offset": round(d, 6), "inliers": int(inliers.sum()),
                  "points": len(plane_points)},
        "candidate_points": len(cp), "supported_voxels": int(good.sum()), "clusters": int(n_clusters),
        "object_points": len(obj), "central_points": int(score[best]), "height": round(top, 5),
        "runner_up_central_points": int(np.sort(score)[-2]) if n_clusters > 1 else 0,
    }
    return box


def user_box(cfg: ObjectConfig) -> ObjectBox:
    """The user's box, axis-aligned in the world frame (up = world +z, forward = world +x)."""
    return ObjectBox(up=np.array([0.0, 0.0, 1.0]), forward=np.array([1.0, 0.0, 0.0]),
                     center=np.asarray(cfg.center, float), extents=np.asarray(cfg.extents, float),
                     source="user_box")


# ------------------------------------------------------------------------------------------------
# Recorder: keep frames that moved enough, write format (a) atomically (no ROS here)
# ------------------------------------------------------------------------------------------------


@dataclass
class _Kept:
    stamp_ns: int
    frame_id: str
    T_wc: np.ndarray  # (4, 4) camera_to_world
    K: np.ndarray
    rgb: str
    depth: str | None
    points: np.ndarray | None  # (P, 3) float32 world depth points (subsampled, for the plane)


class ReferenceRecorder:
    """Frames kept by camera motion, written to a staging folder that becomes ``output`` at
    :meth:`finish` (and vanishes at :meth:`abort` or when the recorder is dropped).

    Raises (at construction):
        OutputError: ``output`` exists (without ``overwrite``) or cannot be written.
    """

    def __init__(self, output: str | Path, *, overwrite: bool = False, min_translation: float = 0.03,
                 min_rotation_deg: float = 10.0, max_frames: int = 128,
                 object_cfg: ObjectConfig = ObjectConfig(), write_masks: bool = False) -> None:
        self._out = AtomicOutputDir(output, overwrite=overwrite)
        self.output = self._out.final
        self.min_translation, self.min_rotation_deg = float(min_translation), float(min_rotation_deg)
        self.max_frames = int(max_frames)
        self.object_cfg = object_cfg
        self.write_masks = write_masks
        self.kept: list[_Kept] = []
        self.skipped_motion = 0
        self.finished = False
        self.notes: list[str] = []
        (self._out.path / "rgb").mkdir()

    @property
    def aborted(self) -> bool:
        """The staging folder was removed without a commit (abort, or a failed commit)."""
        return self._out.finished and not self.finished

    @property
    def full(self) -> bool:
        return len(self.kept) >= self.max_frames

    def decide(self, T_wc: np.ndarray) -> tuple[bool, str]:
        """Whether a frame at camera pose ``T_wc`` would be kept, and why (for the log)."""
        if self.finished or self.full:
            return False, "capture finished"
        if not self.kept:
            return True, "first frame"
        dt, dr = camera_motion(self.kept[-1].T_wc, T_wc)
        moved = f"moved {100 * dt:.1f} cm, turned {dr:.1f} deg since the last kept frame"
        if dt >= self.min_translation or dr >= self.min_rotation_deg:
            return True, moved
        return False, (f"{moved} (need {100 * self.min_translation:.1f} cm or {self.min_rotation_deg:.1f} deg)")

    def add(self, rgb: np.ndarray, depth: np.ndarray | None, K: np.ndarray, T_wc: np.ndarray, stamp: int,
            frame_id: str) -> int:
        """Write one kept frame (rgb ``(H, W, 3)`` uint8; depth ``(H, W)`` meters or None);
        returns its index."""
        i = len(self.kept)
        root = self._out.path
        rgb_name = f"rgb/{i:06d}.png"
        if not cv2.imwrite(str(root / rgb_name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise CaptureError(f"cannot write {root / rgb_name}: check free disk space")
        depth_name = points = None
        if depth is not None:
            depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)
            (root / "depth").mkdir(exist_ok=True)
            depth_name = f"depth/{i:06d}.png"
            mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
            if not cv2.imwrite(str(root / depth_name), mm):
                raise CaptureError(f"cannot write {root / depth_name}: check free disk space")
            points, _ = self._depth_points(mm.astype(np.float32) * 0.001, K, T_wc, _PLANE_POINTS_PER_FRAME)
        self.kept.append(_Kept(int(stamp), frame_id, np.array(T_wc, float), np.array(K, float), rgb_name,
                               depth_name, points))
        return i

    def _depth_points(self, depth: np.ndarray, K: np.ndarray, T_wc: np.ndarray,
                      max_points: int) -> tuple[np.ndarray, np.ndarray]:
        """World points ``(P, 3)`` float32 of a depth image on a regular pixel grid of at most
        ``max_points`` pixels, and whether each pixel is in the central window ``(P,)``."""
        h, w = depth.shape
        stride = max(1, math.ceil(math.sqrt(h * w / max_points)))
        sub = np.zeros_like(depth)
        sub[::stride, ::stride] = depth[::stride, ::stride]
        pts, rc = backproject_depth(sub, K, return_pixels=True)
        f = self.object_cfg.central_fraction
        central = (np.abs(rc[:, 1] - 0.5 * (w - 1)) <= 0.5 * f * w) & (np.abs(rc[:, 0] - 0.5 * (h - 1)) <= 0.5 * f * h)
        world = pts @ T_wc[:3, :3].T + T_wc[:3, 3]
        return world.astype(np.float32), central

    def _read_depth(self, kept: _Kept) -> np.ndarray:
        return cv2.imread(str(self._out.path / kept.depth), cv2.IMREAD_ANYDEPTH).astype(np.float32) * 0.001

    def object_box(self) -> ObjectBox | None:
        """The user's box, else the estimate from depth, else None (no depth)."""
        cfg = self.object_cfg
        if cfg.center is not None and cfg.extents is not None:
            return user_box(cfg)
        with_depth = [k for k in self.kept if k.points is not None]
        if not with_depth:
            return None
        # Dense points for the object, re-read from the written depth one frame at a time.
        frames = (self._depth_points(self._read_depth(k), k.K, k.T_wc, _OBJECT_PIXELS_PER_FRAME)
                  for k in with_depth)
        return estimate_object_box(np.concatenate([k.points for k in with_depth]),
                                   np.array([k.T_wc[:3, 3] for k in self.kept]), frames, cfg)

    def _masks(self, box: ObjectBox) -> list[str] | None:
        """mask/NNNNNN.png per frame: pixels whose depth lies in the box and above the table's
        ``min_height`` (closed by 5 px); None (with a note) if one frame's mask is nearly empty."""
        root = self._out.path
        (root / "mask").mkdir(exist_ok=True)
        names, empty = [], []
        kernel = np.ones((5, 5), np.uint8)
        bottom = box.center @ box.up - 0.5 * box.extents[2] + self.object_cfg.margin + self.object_cfg.min_height
        for i, k in enumerate(self.kept):
            depth = self._read_depth(k)
            pts, rc = backproject_depth(depth, k.K, return_pixels=True)
            world = pts @ k.T_wc[:3, :3].T + k.T_wc[:3, 3]
            inside = box.contains(world) & (world @ box.up >= bottom)
            mask = np.zeros(depth.shape, np.uint8)
            mask[rc[inside, 0], rc[inside, 1]] = 255
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
            if int((mask > 0).sum()) < 20:
                empty.append(k.rgb)
            name = f"mask/{i:06d}.png"
            cv2.imwrite(str(root / name), mask)
            names.append(name)
        if empty:
            self.notes.append(f"masks not written: the object box is (nearly) empty in {len(empty)} frame(s) "
                              f"({', '.join(empty[:4])}); build-object needs a mask for every image or none")
            for name in names:
                (root / name).unlink(missing_ok=True)
            (root / "mask").rmdir()
            return None
        return names

    def finish(self, meta: Mapping[str, Any] | None = None) -> tuple[Path, ObjectBox | None]:
        """Write ``poses.json`` and ``capture.json`` and rename the staging folder to ``output``.

        Raises:
            CaptureError: fewer than 8 kept frames (the capture stays open: keep moving).
            OutputError: the output appeared meanwhile (without ``overwrite``).
        """
        if self.finished:
            return self.output, None
        if len(self.kept) < MIN_REFERENCES:
            raise CaptureError(
                f"only {len(self.kept)} frame(s) kept; build-object needs at least {MIN_REFERENCES} (better 32-128) "
                f"from around the object: keep moving the camera around it (or lower min_translation / "
                f"min_rotation_deg)")
        box, box_error = None, None
        try:
            box = self.object_box()
        except CaptureError as exc:
            box_error = str(exc)
            self.notes.append(f"no object block: {exc}")
        masks = self._masks(box) if box is not None and self.write_masks and self.kept[0].depth else None
        K0 = self.kept[0].K
        images = []
        for i, k in enumerate(self.kept):
            entry: dict[str, Any] = {"file": k.rgb, "camera_to_world": np.round(k.T_wc, 9).tolist()}
            if not np.allclose(k.K, K0):
                entry["K"] = k.K.tolist()
            if k.depth:
                entry["depth"] = k.depth
            if masks:
                entry["mask"] = masks[i]
            images.append(entry)
        poses: dict[str, Any] = {"units": "m", "camera_axes": "opencv", "intrinsics": {"K": K0.tolist()}}
        if any(k.depth for k in self.kept):
            poses["depth_scale"] = 0.001
        if box is not None:
            poses["object"] = box.to_json()
        poses["images"] = images
        root = self._out.path
        atomic_write_text(root / "poses.json", json.dumps(poses, indent=1) + "\n")
        capture = {
            "tool": "sixd_pose_ros capture_references",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "frames": [{"file": k.rgb, "stamp_ns": k.stamp_ns, "frame_id": k.frame_id} for k in self.kept],
            "kept": len(self.kept), "skipped_too_little_motion": self.skipped_motion,
            "object": None if box is None else {**box.to_json(), "source": box.source, **box.details},
            "object_error": box_error, "notes": self.notes, **(dict(meta) if meta else {}),
        }
        atomic_write_text(root / "capture.json", json.dumps(capture, indent=1, default=str) + "\n")
        path = self._out.commit()
        self.finished = True
        return path, box

    def abort(self) -> None:
        """Drop the staging folder: nothing is written."""
        if not self._out.finished:
            self._out.abort()

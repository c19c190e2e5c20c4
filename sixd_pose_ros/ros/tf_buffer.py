"""A small TF buffer: what the capture tool needs from tf2_ros when tf2_ros is not installed.

On a robot, tf2_ros (apt) gives ``Buffer`` + ``TransformListener``. In the pip environment
tf2_ros cannot be installed (``../shared/DESIGN.md``), but ``tf2_msgs/TFMessage`` can, so the
capture tool subscribes to ``/tf`` and ``/tf_static`` itself and keeps the transforms here.
Hand-written because it is only a lookup along a tree of timestamped edges; tf2's own
Python buffer is the C++ library behind rclpy-less bindings that are not on PyPI.

Semantics (a subset of tf2's, stated so users know what they get):

* Frames form a tree: each child frame has one parent (the last ``parent -> child`` seen
  wins, as in tf2). Leading slashes in frame names are ignored.
* Static transforms (``/tf_static``) hold at every time. Dynamic ones (``/tf``) are kept per
  edge for ``cache_s`` seconds of stamps (the newest stamp of that edge minus ``cache_s``).
* ``lookup(target, source, t)`` returns the ``(4, 4)`` transform ``T_target_source`` that maps
  points in ``source`` coordinates into ``target`` coordinates at time ``t``: tf2's
  ``lookup_transform(target, source, t)``. With ``target`` = the world and ``source`` = the
  camera that is the camera's pose in the world (``camera_to_world``).
* A dynamic edge is **interpolated** between the two samples around ``t`` (translation
  linearly, rotation by slerp). When ``t`` is not bracketed (the newest sample is older than
  ``t``, typically because TF has not arrived yet, or ``t`` is older than the cache), the
  **nearest** sample is used only if it lies within ``tolerance_s`` of ``t``; otherwise the
  lookup fails with :class:`TransformUnavailable`, whose ``retry`` flag says whether waiting
  for newer TF can help. tf2 never extrapolates; ``tolerance_s = 0`` gives that behaviour.
* A stamp more than ``jump_back_s`` older than an edge's newest sample means the bag was
  restarted or sim time reset: that edge's samples are dropped and it starts over.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from sixd_pose_ros.errors import SixdPoseError

__all__ = ["NS", "TransformBuffer", "TransformUnavailable", "add_tf_message"]

NS = 1_000_000_000


class TransformUnavailable(SixdPoseError):
    """No transform between two frames at a time; ``retry`` is True when newer TF may fix it."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass
class _Edge:
    parent: str
    stamps: list  # sorted int ns (dynamic edges)
    quats: list  # (4,) xyzw, in stamp order
    trans: list  # (3,) meters, in stamp order
    static: bool = False


def _clean(frame: str) -> str:
    return str(frame).lstrip("/")


def _matrix(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q).as_matrix()
    T[:3, 3] = t
    return T


class TransformBuffer:
    """Timestamped transforms of a TF tree (see the module docstring); thread-safe.

    Args:
        cache_s: seconds of dynamic samples kept per edge.
        jump_back_s: a stamp this much older than an edge's newest sample clears that edge.
    """

    def __init__(self, cache_s: float = 10.0, jump_back_s: float = 1.0) -> None:
        if cache_s <= 0 or jump_back_s <= 0:
            raise ValueError("cache_s and jump_back_s must be > 0")
        self.cache_ns = int(cache_s * NS)
        self.jump_back_ns = int(jump_back_s * NS)
        self._edges: dict[str, _Edge] = {}  # child -> edge to its parent
        self._lock = threading.Lock()
        self.time_jumps = 0

    # ------------------------------------------------------------------ filling

    def set_transform(self, parent: str, child: str, stamp_ns: int, translation, quat_xyzw,
                      static: bool = False) -> None:
        """Add ``T_parent_child`` at ``stamp_ns``: translation ``(3,)`` meters, rotation as a
        unit quaternion ``(x, y, z, w)`` (normalized here; a zero quaternion is ignored)."""
        parent, child = _clean(parent), _clean(child)
        q = np.asarray(quat_xyzw, dtype=np.float64).reshape(4)
        t = np.asarray(translation, dtype=np.float64).reshape(3)
        norm = float(np.linalg.norm(q))
        if not parent or not child or parent == child or norm < 1e-9 \
                or not np.all(np.isfinite(q)) or not np.all(np.isfinite(t)):
            return  # tf2 rejects these too (with an error on its side); nothing to store
        q = q / norm
        stamp = int(stamp_ns)
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                edge = self._edges[child] = _Edge(parent, [], [], [], static)
            if static:
                edge.stamps[:], edge.quats[:], edge.trans[:] = [stamp], [q], [t]
                return
            if edge.stamps and stamp < edge.stamps[-1] - self.jump_back_ns:
                self.time_jumps += 1
                edge.stamps.clear(), edge.quats.clear(), edge.trans.clear()
            i = bisect.bisect_left(edge.stamps, stamp)
            if i < len(edge.stamps) and edge.stamps[i] == stamp:
                edge.quats[i], edge.trans[i] = q, t  # republished: the newer value wins
            else:
                edge.stamps.insert(i, stamp)
                edge.quats.insert(i, q)
                edge.trans.insert(i, t)
            old = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
            if old:
                del edge.stamps[:old], edge.quats[:old], edge.trans[:old]

    def clear(self) -> None:
        with self._lock:
            self._edges.clear()

    @property
    def frames(self) -> list[str]:
        """Every frame seen, sorted."""
        with self._lock:
            names = set(self._edges) | {e.parent for e in self._edges.values()}
        return sorted(names)

    # ------------------------------------------------------------------ lookup

    def lookup(self, target: str, source: str, stamp_ns: int, tolerance_s: float = 0.0) -> np.ndarray:
        """``(4, 4)`` ``T_target_source`` at ``stamp_ns`` (see the module docstring).

        Raises:
            TransformUnavailable: a frame never seen, frames in two unconnected trees, or an
                edge without a sample at (or within ``tolerance_s`` of) that time.
        """
        target, source = _clean(target), _clean(source)
        tol_ns = int(max(tolerance_s, 0.0) * NS)
        with self._lock:
            for frame in (target, source):
                if frame not in self._edges and not any(e.parent == frame for e in self._edges.values()):
                    known = sorted(set(self._edges) | {e.parent for e in self._edges.values()})
                    shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "") or "none yet"
                    raise TransformUnavailable(
                        f"frame '{frame}' has not appeared on /tf or /tf_static (frames seen: {shown})",
                        retry=True)
            up_source = self._chain(source)
            up_target = self._chain(target)
            common = next((f for f in up_target if f in up_source), None)
            if common is None:
                raise TransformUnavailable(
                    f"'{target}' and '{source}' are in two unconnected TF trees (roots '{up_target[-1]}' "
                    f"and '{up_source[-1]}'): a transform between the two trees is not being published",
                    retry=True)
            T_common_source = self._compose(up_source[:up_source.index(common)], stamp_ns, tol_ns)
            T_common_target = self._compose(up_target[:up_target.index(common)], stamp_ns, tol_ns)
        return np.linalg.inv(T_common_target) @ T_common_source

    def _chain(self, frame: str) -> list[str]:
        """``[frame, parent, grandparent, ..., root]`` (a loop in the tree ends the walk)."""
        chain = [frame]
        while chain[-1] in self._edges and len(chain) <= len(self._edges):
            parent = self._edges[chain[-1]].parent
            if parent in chain:
                break
            chain.append(parent)
        return chain

    def _compose(self, children: list[str], stamp_ns: int, tol_ns: int) -> np.ndarray:
        """``T_ancestor_child`` for the chain ``children`` (child first, up to the ancestor)."""
        T = np.eye(4)
        for child in children:
            T = self._edge_at(child, stamp_ns, tol_ns) @ T
        return T

    def _edge_at(self, child: str, stamp_ns: int, tol_ns: int) -> np.ndarray:
        e = self._edges[child]
        if e.static:
            return _matrix(e.quats[0], e.trans[0])
        stamps = e.stamps
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return _matrix(e.quats[i], e.trans[i])
        if 0 < i < len(stamps):
            t0, t1 = stamps[i - 1], stamps[i]
            a = (stamp_ns - t0) / (t1 - t0)
            rot = Slerp([0.0, 1.0], Rotation.from_quat([e.quats[i - 1], e.quats[i]]))([a])[0]
            T = np.eye(4)
            T[:3, :3] = rot.as_matrix()
            T[:3, 3] = (1.0 - a) * e.trans[i - 1] + a * e.trans[i]
            return T
        nearest = 0 if i == 0 else len(stamps) - 1
        gap = abs(stamps[nearest] - stamp_ns)
        if gap <= tol_ns:
            return _matrix(e.quats[nearest], e.trans[nearest])
        newer = stamp_ns > stamps[-1]
        when = (f"its newest sample is {gap / NS:.3f} s older" if newer
                else f"its oldest kept sample is {gap / NS:.3f} s newer (cache {self.cache_ns / NS:.0f} s)")
        raise TransformUnavailable(f"no transform {e.parent} -> {child} at the image stamp {stamp_ns / NS:.3f}: "
                                   f"{when}", retry=newer)


def add_tf_message(buffer: TransformBuffer, msg, static: bool = False) -> int:
    """Add every ``geometry_msgs/TransformStamped`` of a ``tf2_msgs/TFMessage`` (duck-typed:
    no ROS import here); returns how many were added."""
    n = 0
    for tr in msg.transforms:
        st = tr.header.stamp
        r, p = tr.transform.rotation, tr.transform.translation
        buffer.set_transform(tr.header.frame_id, tr.child_frame_id, int(st.sec) * NS + int(st.nanosec),
                             (p.x, p.y, p.z), (r.x, r.y, r.z, r.w), static=static)
        n += 1
    return n

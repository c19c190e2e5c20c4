"""Mesh bodies of the procedural objects: closed shells built from rings, profiles and tubes.

Most shapes are one construction, a "sweep": a closed 2D ring (circle, polygon, superellipse)
scaled along a (scale, z) profile, which gives lathes, prisms, superquadrics and most primitives
with shared vertices. Every builder returns a watertight :class:`_Body` with outward normals;
unions are concatenations of overlapping closed shells (no boolean engine is installed here).
Also the small rotation helpers the builders and the symmetry analysis share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------
# Mesh bodies and builders
# ----------------------------------------------------------------------------------------------

@dataclass
class _Body:
    """Vertices, faces and a part id per vertex (for per-part colours)."""

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray     # (F, 3) int64
    part: np.ndarray      # (V,) int32

    def transformed(self, rotation: np.ndarray | None = None, translation: Sequence[float] | None = None,
                    part: int | None = None) -> "_Body":
        v = self.vertices if rotation is None else _rotate(self.vertices, rotation)
        if translation is not None:
            v = v + np.asarray(translation, dtype=np.float64)
        p = self.part if part is None else np.full(len(v), part, np.int32)
        return _Body(v, self.faces, p)


def _signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _oriented(v: np.ndarray, f: np.ndarray, part: int = 0) -> _Body:
    """A closed shell with outward normals (flip the winding when the signed volume is negative)."""
    if _signed_volume(v, f) < 0:
        f = f[:, ::-1]
    return _Body(np.ascontiguousarray(v, np.float64), np.ascontiguousarray(f, np.int64),
                 np.full(len(v), part, np.int32))


def _grid(rings: np.ndarray, start: np.ndarray | None = None, end: np.ndarray | None = None,
          wrap: bool = False) -> _Body:
    """Triangulate a stack of closed rings (n, s, 3) into one shell.

    Consecutive rings are joined by quads; ``start``/``end`` poles close the ends with fans, or
    ``wrap`` joins the last ring to the first (a torus). Every edge is shared by exactly two faces,
    so the result is watertight whenever it is closed.
    """
    n, s, _ = rings.shape
    idx = np.arange(n * s).reshape(n, s)
    nxt = np.roll(np.arange(s), -1)
    rows = n if wrap else n - 1
    up = np.roll(idx, -1, axis=0)
    a, b = idx[:rows], idx[:rows][:, nxt]
    c, d = up[:rows][:, nxt], up[:rows]
    faces = [np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)]
    verts = [rings.reshape(-1, 3)]
    count = n * s
    if start is not None:
        faces.append(np.stack([np.full(s, count), idx[0, nxt], idx[0]], -1))
        verts.append(np.asarray(start, np.float64)[None])
        count += 1
    if end is not None:
        faces.append(np.stack([np.full(s, count), idx[-1], idx[-1, nxt]], -1))
        verts.append(np.asarray(end, np.float64)[None])
    return _oriented(np.concatenate(verts), np.concatenate(faces))


# A profile is a chain of pieces: a line (2, 2) between two points, or a smooth curve
# t in [0, 1] -> (m, 2) points. Piece ends are kept exactly at every resolution, so corners
# stay sharp, and curves are evaluated (not interpolated) at the resolution asked for.


def _line(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    return np.array([a, b], np.float64)


def _eval_piece(piece, t: np.ndarray) -> np.ndarray:
    if callable(piece):
        return np.asarray(piece(t), np.float64)
    return piece[0] + t[:, None] * (piece[1] - piece[0])


def _sample_pieces(pieces: Sequence, n_total: int) -> np.ndarray:
    """Sample a chain of pieces with about ``n_total`` points, shared by the pieces in proportion
    to their lengths, at least one segment each."""
    probe_t = np.linspace(0.0, 1.0, 17)
    lengths = np.array([np.linalg.norm(np.diff(_eval_piece(pc, probe_t), axis=0), axis=1).sum()
                        for pc in pieces])
    segments = max(n_total - 1, len(pieces))
    share = lengths / max(lengths.sum(), 1e-12) * segments
    count = np.maximum(1, np.floor(share).astype(int))
    rest = segments - count.sum()
    if rest > 0:
        count[np.argsort(-(share - count), kind="stable")[:rest]] += 1
    out = [_eval_piece(pieces[0], np.zeros(1))]
    for pc, k in zip(pieces, count):
        out.append(_eval_piece(pc, np.arange(1, k + 1) / k))
    return np.concatenate(out)


def _densify(polyline: np.ndarray, n_total: int) -> np.ndarray:
    """Points on a polyline, about ``n_total`` of them, keeping every original point (so corners
    stay sharp and symmetric profiles stay symmetric)."""
    polyline = np.asarray(polyline, np.float64)
    return _sample_pieces([polyline[i:i + 2] for i in range(len(polyline) - 1)], n_total)


def _sweep(ring: np.ndarray, profile: np.ndarray) -> _Body:
    """Scale a closed 2D ring (s, 2) by profile points (scale, z) stacked along z.

    With a circle this is a lathe (surface of revolution), with a polygon an extrusion or a
    generalized prism, with a superellipse a superquadric. The profile must start and end with
    scale 0: those points become the poles that close the shell.
    """
    profile = np.asarray(profile, np.float64)
    if profile[0, 0] != 0.0 or profile[-1, 0] != 0.0:
        raise ValueError("profile must start and end on the axis (scale 0)")
    inner = profile[1:-1]
    rings = np.empty((len(inner), len(ring), 3))
    rings[..., :2] = inner[:, 0, None, None] * ring[None]
    rings[..., 2] = inner[:, 1, None]
    return _grid(rings, start=np.array([0.0, 0.0, profile[0, 1]]), end=np.array([0.0, 0.0, profile[-1, 1]]))


def _resolution(budget: int, profile_points: int, order: int = 1, min_sections: int = 24) -> tuple[int, int]:
    """Ring size s (a multiple of the symmetry order) and profile count n with 2 s (n - 2) ~ budget.

    ``min_sections`` (enough for curved sections to pass the symmetry checks) is honoured when
    the budget allows it; a small ``max_faces`` gets coarser rings rather than an error.
    """
    floor = min(min_sections, max(8, budget // (2 * max(profile_points - 2, 1))))
    s = int(np.clip(math.sqrt(budget / 2.0) * 1.3, floor, 160))
    s = max(order, int(round(s / order)) * order)
    n = max(profile_points, budget // (2 * s) + 2)
    return s, n


def _circle(s: int) -> np.ndarray:
    t = 2 * np.pi * np.arange(s) / s
    return np.stack([np.cos(t), np.sin(t)], -1)


def _spow(x: np.ndarray, e: float) -> np.ndarray:
    return np.sign(x) * np.abs(x) ** e


def _superellipse(s: int, a: float, b: float, e: float) -> np.ndarray:
    t = 2 * np.pi * np.arange(s) / s
    return np.stack([a * _spow(np.cos(t), e), b * _spow(np.sin(t), e)], -1)


def _polygon_ring(corners: np.ndarray, s: int) -> np.ndarray:
    """Closed polygon through ``corners`` (K, 2) with each edge split into s // K parts, so a
    regular polygon keeps its K-fold symmetry after subdivision."""
    k = len(corners)
    m = max(1, s // k)
    t = np.arange(m)[:, None] / m
    nxt = np.roll(corners, -1, axis=0)
    return (corners[:, None] + t[None] * (nxt - corners)[:, None]).reshape(-1, 2)


def _straight_profile(h: float, bevel: float = 0.0) -> np.ndarray:
    """(scale, z) profile of a prism from -h to h, optionally with a chamfer of relative size bevel."""
    if bevel <= 0:
        return np.array([[0, -h], [1, -h], [1, h], [0, h]], np.float64)
    b = bevel
    return np.array([[0, -h], [1 - b, -h], [1, -h + b * h], [1, h - b * h], [1 - b, h], [0, h]], np.float64)


def _arc(rx: float, rz: float, z0: float = 0.0, lo: float = -np.pi / 2, hi: float = np.pi / 2):
    """Elliptic arc piece (scale, z) = (rx cos e, z0 + rz sin e), e from lo to hi; exact zeros
    of the scale at the poles."""
    def arc(t: np.ndarray) -> np.ndarray:
        e = lo + (hi - lo) * t
        out = np.stack([rx * np.cos(e), z0 + rz * np.sin(e)], -1)
        out[np.isclose(np.abs(e), np.pi / 2), 0] = 0.0
        return out
    return arc


def _torus(R: float, r: float, budget: int) -> _Body:
    s = int(np.clip(math.sqrt(budget / 2.0) * 1.6, min(32, max(12, budget // 24)), 160))
    m = max(6, budget // (2 * s))
    u = 2 * np.pi * np.arange(s) / s
    v = 2 * np.pi * np.arange(m) / m
    rad = R + r * np.cos(v)
    rings = np.stack([rad[:, None] * np.cos(u)[None], rad[:, None] * np.sin(u)[None],
                      np.broadcast_to((r * np.sin(v))[:, None], (m, s))], -1)
    return _grid(rings, wrap=True)


def _tube(path: Callable[[np.ndarray], np.ndarray], radius: Callable[[np.ndarray], np.ndarray],
          budget: int) -> _Body:
    """A closed tube of varying radius along a 3D curve, flat caps at both ends.

    Frames are propagated by parallel transport so the tube does not twist.
    """
    s = int(np.clip(math.sqrt(budget / 2.0), 8, 64))
    n = max(4, budget // (2 * s))
    t = np.linspace(0.0, 1.0, n)
    p = path(t)
    tang = np.gradient(p, axis=0)
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    ref = np.array([0.0, 0.0, 1.0]) if abs(tang[0, 2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    normal = np.empty_like(p)
    nrm = ref - tang[0] * (ref @ tang[0])
    for i in range(n):
        nrm = nrm - tang[i] * (nrm @ tang[i])
        nrm = nrm / np.linalg.norm(nrm)
        normal[i] = nrm
    binormal = np.cross(tang, normal)
    ang = 2 * np.pi * np.arange(s) / s
    r = radius(t)[:, None, None]
    across = np.cos(ang)[None, :, None] * normal[:, None] + np.sin(ang)[None, :, None] * binormal[:, None]
    rings = p[:, None] + r * across
    return _grid(rings, start=p[0], end=p[-1])


def _concat(bodies: Sequence[_Body]) -> _Body:
    offsets = np.cumsum([0] + [len(b.vertices) for b in bodies[:-1]])
    return _Body(np.concatenate([b.vertices for b in bodies]),
                 np.concatenate([b.faces + o for b, o in zip(bodies, offsets)]),
                 np.concatenate([b.part for b in bodies]))


def _rect(a: float, b: float) -> np.ndarray:
    """Corners (4, 2) of the rectangle [-a, a] x [-b, b], counter-clockwise."""
    return np.array([[a, b], [-a, b], [-a, -b], [a, -b]], np.float64)


# ----------------------------------------------------------------------------------------------
# Rotations
# ----------------------------------------------------------------------------------------------

def rotation_about(axis: Sequence[float], angle: float) -> np.ndarray:
    """Rotation matrix (3, 3) of ``angle`` radians about ``axis`` (Rodrigues)."""
    k = np.asarray(axis, np.float64)
    k = k / np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def _rotate(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """``points @ rotation.T`` without BLAS: a 3-wide product gains nothing from it, and a
    multi-threaded BLAS spins on busy 2-core machines (measured 3x slower per object)."""
    return np.einsum("nc,rc->nr", points, np.asarray(rotation, np.float64))


def _rz(a: float) -> np.ndarray:
    return rotation_about((0, 0, 1), a)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])

"""Procedural objects: the only objects the networks of this package ever see in training.

No pretrained weights and no scanned object sets are available here, so every detector, selector,
refiner and autoencoder is trained from scratch on objects made by this module, and evaluated on
*held-out* objects made by it as well. Three properties follow from that use, and the code is built
around them:

* **Determinism.** ``make_object(split, index)`` always returns the identical mesh (same vertex
  bytes), so a dataset is reproducible from its list of ``(split, index)`` keys alone and nothing
  but those keys has to be stored or shipped.
* **A clean split.** Every object draws all its randomness from ``object_seed(split, index)``, a
  ``numpy.random.SeedSequence`` whose entropy is ``(SPLIT_CODE[split], index)``. Two different keys
  are two different entropy tuples, so a held-out object can never be the same draw as a training
  object; the shape parameters are continuous, so two draws never give the same shape.
* **Variety with honest labels.** Families (primitives, superquadrics, lathes, extrusions, unions,
  swept tubes, and tapered / twisted / bent variants of all of them) are mixed by weighted choice,
  and each object records its rotational symmetry. Labels that claim *no* symmetry are checked
  numerically when the object is made (``_has_hidden_symmetry``), because an asymmetric label on a
  symmetric object would teach a pose network that two identical views have different poses.

Conventions: meters; symmetry axes are the object's z axis through the origin; symmetric objects are
centred on that axis, the others on their bounding box centre. Symmetry labels describe the shape
(what ADD-S needs); ``visual_symmetry`` says whether the appearance keeps it (a textured cylinder
whose texture varies around the axis is geometrically ``continuous_z`` but visually ``none``).
Some shapes have more symmetry than their z label names (a box also has 180 degree flips about x
and y); ``symmetry_rotations`` finds those extra flips numerically when a caller needs the group.

Only numpy, scipy, trimesh and Pillow are used: no boolean engine (manifold3d) or polygon library
(shapely) is installed here, so unions are concatenations of overlapping closed shells (each one
watertight, hence the whole mesh too by trimesh's edge test) and extrusions are of star-shaped
polygons, which triangulate as fans from their centre. Most shapes are one construction, a
"sweep": a closed 2D ring (circle, polygon, superellipse) scaled along a (scale, z) profile,
which gives lathes, prisms, superquadrics and most primitives with shared vertices.

Appearance: half the objects carry a 256x256 procedural texture (stripes, checkers, blobs,
gradients, glyph-like text, labels) with seamless per-vertex uv (mirrored cylindrical,
spherical or planar projections: no seams, so vertices stay shared); the others vertex colours
(uniform = textureless, per part, bands along z, or smooth 3D noise).

Speed: about 12-15 ms of CPU per object on the 2-core development machines (the symmetry check
of asymmetric objects is a few of those), so datasets can be generated on the fly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import trimesh
from PIL import Image
from scipy.interpolate import PchipInterpolator
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist

__all__ = [
    "SPLITS",
    "SPLIT_CODE",
    "FAMILIES",
    "SYMMETRIES",
    "ProceduralObject",
    "object_seed",
    "make_object",
    "heldout_benchmark_ids",
    "make_bundled_demo_object",
    "symmetry_far_fraction",
    "symmetry_rotations",
    "rotation_about",
]

SPLITS: tuple[str, ...] = ("train", "heldout")
# Arbitrary distinct 32-bit constants; the split is the first entropy word of every seed, so the
# seed keys of two splits differ in that word for every index.
SPLIT_CODE: dict[str, int] = {"train": 0x51D7_0001, "heldout": 0x51D7_0002}

#: Every value ``ProceduralObject.family`` can take. Deformed objects are named after their
#: deformation (``base_family`` keeps what was deformed).
FAMILIES: tuple[str, ...] = (
    "box", "cylinder", "cone", "sphere", "capsule", "torus",
    "superquadric", "lathe", "extrusion", "union", "tube",
    "tapered", "twisted", "bent",
)
#: Symmetry labels. ``discrete_N`` means N-fold about z (N = 2..8 are produced).
SYMMETRIES: tuple[str, ...] = ("none", "near", "continuous_z") + tuple(f"discrete_{k}" for k in range(2, 9))

# Base generators and their weights. Tuned so that roughly a third of the objects are
# asymmetric, a sixth near-symmetric, and the rest split between continuous and discrete
# symmetries, with no family below ~3 %.
_BASE_WEIGHTS: dict[str, float] = {
    "box": 0.10, "cylinder": 0.06, "cone": 0.04, "sphere": 0.03, "capsule": 0.04, "torus": 0.04,
    "superquadric": 0.12, "lathe": 0.16, "extrusion": 0.16, "union": 0.18, "tube": 0.06,
}
_P_NEAR = 0.3       # a symmetric (non-union) body gets a small asymmetric feature
_P_TAPER = 0.15
_P_TWIST = 0.15     # only where it is visible (not continuous_z)
_P_BEND = 0.12
_P_TEXTURED = 0.5

_MIN_FACES = 500
_MAX_ATTEMPTS = 6
_TEX_SIZE = 256


# ----------------------------------------------------------------------------------------------
# Public data type and entry points
# ----------------------------------------------------------------------------------------------

@dataclass
class ProceduralObject:
    """One generated object.

    The first six fields are the contract used by the rest of the package; the others explain
    how the object was made (for stratified sampling, reports and debugging).
    """

    mesh: trimesh.Trimesh            # meters, centred near the origin, watertight
    seed_key: tuple[str, int]        # (split, index); ("demo", 0) for the bundled demo object
    family: str                      # one of FAMILIES
    symmetry: str                    # one of SYMMETRIES, about the object z axis, of the shape
    textured: bool                   # TextureVisuals (uv + PIL image) vs ColorVisuals
    diameter: float                  # meters, max distance between two vertices
    base_family: str = ""            # family before deformation (== family when not deformed)
    deformations: tuple[str, ...] = ()
    appearance: str = ""             # e.g. "texture:stripes/cylindrical", "vertex:uniform"
    visual_symmetry: str = ""        # symmetry of shape *and* appearance ("none" if texture breaks it)
    body_symmetry: str = ""          # for "near": the symmetry of the body without its feature
    extra: dict = field(default_factory=dict)

    def watertight_mesh(self) -> trimesh.Trimesh:
        """The geometry alone (no visuals), e.g. for volume, inside tests or point sampling."""
        return trimesh.Trimesh(self.mesh.vertices.copy(), self.mesh.faces.copy(), process=False)


def object_seed(split: str, index: int) -> np.random.SeedSequence:
    """The seed of object ``(split, index)``.

    Entropy is the tuple ``(SPLIT_CODE[split], index)``: keys of different splits differ in the
    first word, keys of the same split in the second, so no two keys share their entropy and a
    held-out object is never a re-draw of a training object.
    """
    if split not in SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    return np.random.SeedSequence(entropy=(SPLIT_CODE[split], int(index)))


def heldout_benchmark_ids(n: int = 20) -> list[int]:
    """Indices of the held-out objects of the fixed benchmark preset: ``range(n)`` of "heldout".

    Fixed, so that every evaluation report speaks about the same objects; they are never used in
    training because training only draws from the "train" split.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    return list(range(n))


def make_object(split: str, index: int, *, max_faces: int = 10_000,
                size_range: tuple[float, float] = (0.05, 0.30)) -> ProceduralObject:
    """Make object ``index`` of ``split`` deterministically.

    Args:
        split: "train" or "heldout".
        index: any non-negative integer.
        max_faces: hard upper bound on the face count (>= 500). Only the tessellation depends on
            it; the shape parameters, size and appearance do not.
        size_range: (min, max) diameter in meters; the diameter is drawn uniformly in it.
    """
    if max_faces < _MIN_FACES:
        raise ValueError(f"max_faces must be >= {_MIN_FACES}")
    lo, hi = float(size_range[0]), float(size_range[1])
    if not (0.0 < lo <= hi):
        raise ValueError(f"size_range must satisfy 0 < min <= max, got {size_range}")
    seq = object_seed(split, index)
    shape_seq, look_seq, size_seq = seq.spawn(3)
    shape_rng = np.random.default_rng(shape_seq)
    look_rng = np.random.default_rng(look_seq)
    size_rng = np.random.default_rng(size_seq)
    target_diameter = float(size_rng.uniform(lo, hi))
    # Moderate tessellation: fine enough for smooth shading and deformations, coarse enough for
    # a CPU rasterizer. Drawn from its own stream so the shape does not depend on it.
    natural = int(size_rng.integers(1500, 5000))
    budget = min(max_faces, natural)

    # An object labelled asymmetric ("none") or near-symmetric must not have an exact symmetry
    # (a bend or a random blob can come out symmetric by chance): draw again from the same
    # stream, which keeps the result deterministic. Almost every object passes the first time.
    # The check looks at the natural tessellation, not the max_faces one, so that the outcome
    # (and with it the object) does not depend on max_faces. After _MAX_ATTEMPTS, fall back to
    # random unions, which are never symmetric.
    for attempt in range(_MAX_ATTEMPTS + 20):
        recipe = _draw_recipe(shape_rng) if attempt < _MAX_ATTEMPTS else _recipe_union(shape_rng, "random")
        body = _build_within(recipe, budget, max_faces)
        if recipe.symmetry not in ("none", "near"):
            break
        check = body if budget == natural else recipe.build(natural)
        if not _has_hidden_symmetry(check.vertices, check.faces, body_axis=recipe.symmetry == "near"):
            break
    else:  # pragma: no cover - unreachable in practice
        raise RuntimeError(f"could not draw an honestly labelled object for {(split, index)}")
    obj = _finish(body, recipe, look_rng, target_diameter, seed_key=(split, int(index)))
    obj.extra["attempts"] = attempt + 1
    return obj


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


# ----------------------------------------------------------------------------------------------
# Recipes: all random draws happen when a recipe is made; build(budget) only tessellates.
# That keeps the shape independent of max_faces and lets a too-fine build be redone coarser.
# ----------------------------------------------------------------------------------------------

@dataclass
class _Recipe:
    family: str
    symmetry: str
    build: Callable[[int], _Body]
    body_symmetry: str = ""
    deformations: tuple[str, ...] = ()
    base_family: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class _Part:
    """A primitive in its own frame: builder, symmetry, a radius that lies inside it around the
    origin (to make overlapping unions) and its half-height along z."""

    name: str
    symmetry: str
    build: Callable[[int], _Body]
    inner: float
    half_height: float


def _z_symmetry_of_ring(order: int | None) -> str:
    return "continuous_z" if order is None else ("none" if order == 1 else f"discrete_{order}")


def _part_box(rng: np.random.Generator, size: float, square: bool | None = None) -> _Part:
    if square is None:
        square = bool(rng.random() < 0.35)
    a = size * rng.uniform(0.35, 1.0)
    b = a if square else size * rng.uniform(0.25, 1.0)
    if not square and abs(a - b) < 0.08 * size:
        b = a * 0.7
    h = size * rng.uniform(0.25, 1.0)
    bevel = float(rng.uniform(0.05, 0.2)) if rng.random() < 0.3 else 0.0
    corners = _rect(a, b)
    order = 4 if square else 2

    def build(budget: int) -> _Body:
        s, n = _resolution(budget, 6, order=4, min_sections=16)
        ring = _polygon_ring(corners, s)  # s is a multiple of 4: every edge split alike
        return _sweep(ring, _densify(_straight_profile(h, bevel), n))
    return _Part("box", f"discrete_{order}", build, 0.8 * min(a, b, h), h)


def _part_cylinder(rng: np.random.Generator, size: float) -> _Part:
    r = size * rng.uniform(0.25, 1.0)
    h = size * rng.uniform(0.2, 1.0)
    bevel = float(rng.uniform(0.03, 0.15)) if rng.random() < 0.3 else 0.0

    def build(budget: int) -> _Body:
        s, n = _resolution(budget, 6, min_sections=32)
        return _sweep(r * _circle(s), _densify(_straight_profile(h, bevel), n))
    return _Part("cylinder", "continuous_z", build, 0.8 * min(r, h), h)


def _part_cone(rng: np.random.Generator, size: float) -> _Part:
    r = size * rng.uniform(0.3, 1.0)
    h = size * rng.uniform(0.4, 1.0)
    top = float(rng.uniform(0.2, 0.7)) if rng.random() < 0.4 else 0.0  # frustum
    prof = np.array([[0, -h], [1, -h], [top, h], [0, h]]) if top > 0 else np.array([[0, -h], [1, -h], [0, h]])

    def build(budget: int) -> _Body:
        s, n = _resolution(budget, len(prof), min_sections=32)
        return _sweep(r * _circle(s), _densify(prof, n))
    return _Part("cone", "continuous_z", build, 0.4 * min(r, h), h)


def _part_sphere(rng: np.random.Generator, size: float) -> _Part:
    r = size * rng.uniform(0.5, 1.0)
    c = r * rng.uniform(0.5, 1.6)  # spheroid: a perfect sphere carries no pose at all

    def build(budget: int) -> _Body:
        s, n = _resolution(budget, 5, min_sections=32)
        return _sweep(r * _circle(s), _sample_pieces([_arc(1.0, c)], n))
    return _Part("sphere", "continuous_z", build, 0.8 * min(r, c), c)


def _part_capsule(rng: np.random.Generator, size: float) -> _Part:
    r = size * rng.uniform(0.2, 0.6)
    h = size * rng.uniform(0.2, 1.0)

    pieces = [_arc(1.0, r, z0=-h, lo=-np.pi / 2, hi=0.0), _line((1.0, -h), (1.0, h)),
              _arc(1.0, r, z0=h, lo=0.0, hi=np.pi / 2)]

    def build(budget: int) -> _Body:
        s, n = _resolution(budget, 6, min_sections=32)
        return _sweep(r * _circle(s), _sample_pieces(pieces, n))
    return _Part("capsule", "continuous_z", build, 0.8 * r, h + r)


def _part_torus(rng: np.random.Generator, size: float) -> _Part:
    R = size * rng.uniform(0.55, 0.85)
    r = R * rng.uniform(0.2, 0.6)
    return _Part("torus", "continuous_z", lambda budget: _torus(R, r, budget), 0.0, r)


def _part_superquadric(rng: np.random.Generator, size: float) -> _Part:
    kind = rng.choice(["round", "square", "free"], p=[0.25, 0.35, 0.4])
    a = size * rng.uniform(0.4, 1.0)
    b = a if kind != "free" else size * rng.uniform(0.3, 1.0)
    if kind == "free" and abs(a - b) < 0.1 * size:
        b = 0.75 * a
    c = size * rng.uniform(0.3, 1.0)
    e1 = float(rng.uniform(0.3, 1.8))
    if kind == "round":
        e2 = 1.0
    else:  # clearly not round, otherwise the label would be a lie within the tolerance
        e2 = float(rng.choice([rng.uniform(0.3, 0.7), rng.uniform(1.35, 1.9)]))
    symmetry = {"round": "continuous_z", "square": "discrete_4", "free": "discrete_2"}[str(kind)]

    def meridian(t: np.ndarray) -> np.ndarray:
        eta = -np.pi / 2 + np.pi * t
        out = np.stack([_spow(np.cos(eta), e1), c * _spow(np.sin(eta), e1)], -1)
        out[(t <= 0) | (t >= 1), 0] = 0.0
        return out

    def build(budget: int) -> _Body:
        s, n = _resolution(budget, 5, order=4, min_sections=32)
        return _sweep(_superellipse(s, a, b, e2), _sample_pieces([meridian], n))
    return _Part("superquadric", symmetry, build, 0.5 * min(a, b, c), c)


_PRIMITIVES: dict[str, Callable[[np.random.Generator, float], _Part]] = {
    "box": _part_box, "cylinder": _part_cylinder, "cone": _part_cone, "sphere": _part_sphere,
    "capsule": _part_capsule, "torus": _part_torus, "superquadric": _part_superquadric,
}


def _lathe_profile(rng: np.random.Generator) -> tuple[list, str]:
    """A random (radius, z) profile, as pieces, from the axis back to the axis; and its style."""
    style = str(rng.choice(["bottle", "cup", "stepped", "spindle"], p=[0.35, 0.25, 0.2, 0.2]))
    H = rng.uniform(0.5, 2.0)
    lo, hi = -H / 2, H / 2
    if style in ("bottle", "cup"):
        if style == "bottle":
            knots = np.linspace(0, H, int(rng.integers(3, 7)))
            radii = rng.uniform(0.25, 1.0, len(knots))
        else:
            knots = np.linspace(0, H, int(rng.integers(2, 5)))
            radii = np.sort(rng.uniform(0.45, 1.0, len(knots)))  # widening or straight cups
        f = PchipInterpolator(knots, radii)  # monotone between knots: no overshoot below 0
        outer = lambda t: np.stack([f(t * H), lo + t * H], -1)  # noqa: E731
        pieces = [_line((0, lo), (f(0.0), lo)), outer]
        if style == "bottle":
            pieces.append(_line((f(H), hi), (0, hi)))
        else:  # an open cup: rim, inner wall down to a raised bottom
            wall = rng.uniform(0.05, 0.3) * radii[0]
            bottom = rng.uniform(0.05, 0.25) * H
            depth = H - bottom
            inner = lambda t: np.stack([f(H - t * depth) - wall, hi - t * depth], -1)  # noqa: E731
            pieces += [_line((f(H), hi), (f(H) - wall, hi)), inner,
                       _line((f(bottom) - wall, lo + bottom), (0, lo + bottom))]
    elif style == "stepped":
        k = int(rng.integers(2, 5))
        radii = rng.uniform(0.3, 1.0, k)
        heights = np.cumsum(rng.uniform(0.2, 1.0, k))
        heights = lo + heights / heights[-1] * H
        pts = [(0.0, lo)]
        z0 = lo
        for r, z1 in zip(radii, heights):
            pts += [(r, z0), (r, z1)]
            z0 = z1
        pts.append((0.0, hi))
        pieces = [_line(pts[i], pts[i + 1]) for i in range(len(pts) - 1)]
    else:  # spindle: pointed or rounded at both ends, with a wave
        p = rng.uniform(0.3, 1.0)
        freq, ph, amp = rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.8)

        def spindle(t: np.ndarray) -> np.ndarray:
            wave = 1 + 0.25 * np.sin(2 * np.pi * freq * t + ph)
            r = amp * np.clip(np.sin(np.pi * t), 0.0, None) ** p * wave
            r[(t <= 0) | (t >= 1)] = 0.0
            return np.stack([r, lo + t * H], -1)
        pieces = [spindle]
    return pieces, style


def _recipe_primitive(rng: np.random.Generator, name: str) -> _Recipe:
    part = _PRIMITIVES[name](rng, 1.0)
    return _Recipe(name, part.symmetry, part.build)


def _recipe_lathe(rng: np.random.Generator) -> _Recipe:
    pieces, style = _lathe_profile(rng)
    # Sometimes a polygonal cross-section: a faceted vase with a discrete symmetry.
    order = int(rng.choice([0, 3, 4, 5, 6, 8])) if rng.random() < 0.25 else 0
    phase = rng.uniform(0, 2 * np.pi)

    def build(budget: int) -> _Body:
        s, n = _resolution(budget, len(pieces) + 1, order=max(order, 1), min_sections=32)
        if order:
            ring = _polygon_ring(_circle(order) @ np.array([[math.cos(phase), math.sin(phase)],
                                                             [-math.sin(phase), math.cos(phase)]]), s)
        else:
            ring = _circle(s)
        return _sweep(ring, _sample_pieces(pieces, n))
    return _Recipe("lathe", _z_symmetry_of_ring(order or None), build, extra={"style": style})


def _recipe_extrusion(rng: np.random.Generator) -> _Recipe:
    """Prism of a star-shaped polygon (fan-triangulated caps), optionally chamfered."""
    kind = str(rng.choice(["regular", "flower", "blob", "jagged"], p=[0.25, 0.2, 0.3, 0.25]))
    h = rng.uniform(0.15, 1.2)
    bevel = float(rng.uniform(0.05, 0.25)) if rng.random() < 0.3 else 0.0
    if kind == "regular":
        order = int(rng.integers(3, 9))
        corners = _circle(order) * rng.uniform(0.6, 1.0)
        ring_fn = lambda s: _polygon_ring(corners, s)  # noqa: E731
    elif kind == "flower":
        order = int(rng.integers(2, 9))
        a1, a2, ph = rng.uniform(0.1, 0.35), rng.uniform(0.0, 0.12), rng.uniform(0, 2 * np.pi)

        def ring_fn(s: int) -> np.ndarray:
            t = 2 * np.pi * np.arange(s) / s
            r = 1 + a1 * np.cos(order * t) + a2 * np.cos(2 * order * t + ph)
            return r[:, None] * np.stack([np.cos(t), np.sin(t)], -1)
    elif kind == "blob":
        order = 1
        amps = rng.uniform(0.05, 0.3, 5) / np.arange(1, 6) ** 0.7
        phs = rng.uniform(0, 2 * np.pi, 5)

        def ring_fn(s: int) -> np.ndarray:
            t = 2 * np.pi * np.arange(s) / s
            r = 1 + sum(amps[m] * np.cos((m + 1) * t + phs[m]) for m in range(5))
            return np.maximum(r, 0.3)[:, None] * np.stack([np.cos(t), np.sin(t)], -1)
    else:  # jagged random star polygon: random corner angles and radii
        order = 1
        k = int(rng.integers(5, 13))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        ang = np.sort(np.unique(np.round(ang, 6)))
        rad = rng.uniform(0.35, 1.0, len(ang))
        corners = rad[:, None] * np.stack([np.cos(ang), np.sin(ang)], -1)
        ring_fn = lambda s: _polygon_ring(corners, s)  # noqa: E731

    def build(budget: int) -> _Body:
        s, n = _resolution(budget, 6, order=order if kind != "jagged" else len(corners), min_sections=24)
        return _sweep(ring_fn(s), _densify(_straight_profile(h, bevel), n))
    return _Recipe("extrusion", _z_symmetry_of_ring(order), build, extra={"kind": kind})


def _recipe_tube(rng: np.random.Generator) -> _Recipe:
    """A bent pipe, hook or handle: a tube along a random smooth curve (a cubic Bezier)."""
    ctrl = np.cumsum(rng.normal(size=(4, 3)), axis=0)  # a random walk: bends, hooks, S-shapes
    ctrl -= ctrl.mean(0)
    length = float(np.linalg.norm(np.diff(ctrl, axis=0), axis=1).sum())
    r0 = length * rng.uniform(0.05, 0.14)
    taper = rng.uniform(-0.5, 0.5)

    def path(t: np.ndarray) -> np.ndarray:
        t = t[:, None]
        return ((1 - t) ** 3 * ctrl[0] + 3 * (1 - t) ** 2 * t * ctrl[1]
                + 3 * (1 - t) * t ** 2 * ctrl[2] + t ** 3 * ctrl[3])

    return _Recipe("tube", "none", lambda budget: _tube(path, lambda t: r0 * (1 + taper * (t - 0.5)), budget))


def _recipe_union(rng: np.random.Generator, kind: str | None = None) -> _Recipe:
    """2-4 overlapping primitives: "random" (asymmetric), a coaxial "stack" (continuous_z) or a
    hub with k identical "radial" arms (discrete_k)."""
    if kind is None:
        kind = str(rng.choice(["random", "stack", "radial"], p=[0.55, 0.2, 0.25]))
    if kind == "random":
        names = ["box", "cylinder", "cone", "sphere", "capsule", "superquadric"]
        k = int(rng.integers(2, 5))
        parts: list[tuple[_Part, np.ndarray, np.ndarray]] = []
        for i in range(k):
            last = i == k - 1 and rng.random() < 0.15
            name = "torus" if last else str(rng.choice(names))
            size = 1.0 if i == 0 else rng.uniform(0.4, 0.9)
            part = _PRIMITIVES[name](rng, size)
            R = _random_rotation(rng)
            if i == 0:
                t = np.zeros(3)
            else:  # centre inside a previous part, so the parts overlap and read as one object
                host_part, host_R, host_t = parts[int(rng.integers(0, i))]
                d = rng.normal(size=3)
                d /= np.linalg.norm(d)
                t = host_t + host_R @ (d * host_part.inner * rng.uniform(0.4, 1.0))
                if name == "torus":  # a ring around the host: its centre may be the host's
                    t = host_t + host_R @ (d * host_part.inner * rng.uniform(0.0, 0.5))
            parts.append((part, R, t))

        def build(budget: int) -> _Body:
            share = budget // len(parts)
            return _concat([p.build(share).transformed(R, t, part=i) for i, (p, R, t) in enumerate(parts)])
        return _Recipe("union", "none", build, extra={"kind": kind, "parts": [p.name for p, _, _ in parts]})

    if kind == "stack":  # coaxial parts stacked along z: continuous_z
        names = ["cylinder", "cone", "sphere", "capsule", "torus"]
        k = int(rng.integers(2, 5))
        stack: list[tuple[_Part, float]] = []
        z = 0.0
        for i in range(k):
            part = _PRIMITIVES[str(rng.choice(names))](rng, rng.uniform(0.4, 1.0))
            if i > 0:
                z += part.half_height * rng.uniform(0.5, 0.9)
            stack.append((part, z))
            z += part.half_height * rng.uniform(0.5, 0.9)

        def build(budget: int) -> _Body:
            share = budget // len(stack)
            return _concat([p.build(share).transformed(None, (0, 0, zz), part=i)
                            for i, (p, zz) in enumerate(stack)])
        return _Recipe("union", "continuous_z", build,
                       extra={"kind": kind, "parts": [p.name for p, _ in stack]})

    # radial: a hub with k identical arms: discrete_k
    order = int(rng.integers(2, 7))
    hub = _PRIMITIVES[str(rng.choice(["cylinder", "sphere", "capsule"]))](rng, 1.0)
    arm_kind = str(rng.choice(["box", "cylinder", "capsule", "cone", "superquadric"]))
    arm = _PRIMITIVES[arm_kind](rng, rng.uniform(0.25, 0.45))
    arm_len = arm.half_height
    tilt = rng.uniform(-0.6, 0.6) if rng.random() < 0.5 else 0.0
    height = rng.uniform(-0.6, 0.6) * hub.half_height
    reach = hub.inner + arm_len * rng.uniform(0.6, 1.1)
    arm_R = rotation_about((0, 1, 0), np.pi / 2 + tilt)  # arm's z axis -> radial, tilted up/down
    arm_center = np.array([reach * math.cos(tilt), 0.0, height - reach * math.sin(tilt)])

    def build(budget: int) -> _Body:
        share = budget // (order + 1)
        arm_body = arm.build(share).transformed(arm_R, arm_center, part=1)
        bodies = [hub.build(share).transformed(part=0)]
        bodies += [arm_body.transformed(_rz(2 * np.pi * j / order)) for j in range(order)]
        return _concat(bodies)
    return _Recipe("union", f"discrete_{order}", build,
                   extra={"kind": kind, "parts": [hub.name] + [arm.name] * order})


def _support_radius(v: np.ndarray, z: float, direction: np.ndarray) -> float:
    """Extent of a z-symmetric body along a horizontal direction near height z (its surface)."""
    band = np.abs(v[:, 2] - z)
    near = v[band <= np.quantile(band, 0.05) + 1e-9]
    return float(np.max(near[:, 0] * direction[0] + near[:, 1] * direction[1]))


def _with_feature(rng: np.random.Generator, recipe: _Recipe) -> _Recipe:
    """Make a symmetric body near-symmetric: add a small knob, fin or handle off its axis.

    The feature sits at a random height away from the middle, so that no flip about a horizontal
    axis maps the object onto itself either.
    """
    kind = str(rng.choice(["knob", "fin", "handle"], p=[0.5, 0.25, 0.25]))
    phi = rng.uniform(0, 2 * np.pi)
    frac = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.35)  # height, fraction of the body height
    size = rng.uniform(0.2, 0.3)  # fraction of the body height/diameter: small but visible
    knob = _PRIMITIVES[str(rng.choice(["sphere", "box", "cylinder"]))](rng, 1.0)
    plate = _part_box(rng, 1.0, square=True)
    direction = np.array([math.cos(phi), math.sin(phi)])
    span = rng.uniform(0.25, 0.4)
    bulge = rng.uniform(0.25, 0.5)

    def build(budget: int) -> _Body:
        body = recipe.build(int(budget * 0.85))
        v = body.vertices
        zmin, zmax = v[:, 2].min(), v[:, 2].max()
        height = zmax - zmin
        scale = max(height, 2 * np.abs(v[:, :2]).max())
        zc = 0.5 * (zmin + zmax) + frac * height
        fb = int(budget * 0.15)
        if kind == "handle":
            z1, z2 = zc - span * height / 2, zc + span * height / 2
            r1 = _support_radius(v, z1, direction)
            r2 = _support_radius(v, z2, direction)
            rad = 0.05 * scale
            out = bulge * scale

            def path(t: np.ndarray) -> np.ndarray:
                r = (1 - t) * (r1 - 1.5 * rad) + t * (r2 - 1.5 * rad) + (out + 1.5 * rad) * np.sin(np.pi * t)
                zz = z1 + t * (z2 - z1)
                return np.stack([r * direction[0], r * direction[1], zz], -1)
            feat = _tube(path, lambda t: np.full_like(t, rad), fb)
        else:
            r = _support_radius(v, zc, direction)
            s = size * scale
            if kind == "fin":
                dims = np.array([1.4, 0.3, 1.2]) * s
            else:
                dims = np.full(3, s)
            local = knob.build(fb) if kind == "knob" else plate.build(fb)
            mid = 0.5 * (local.vertices.min(0) + local.vertices.max(0))
            lv = (local.vertices - mid) / np.abs(local.vertices - mid).max(0) * dims / 2  # fit in dims
            rot = _rz(phi)
            center = np.array([(r + 0.3 * dims[0]) * direction[0], (r + 0.3 * dims[0]) * direction[1], zc])
            feat = _Body(_rotate(lv, rot) + center, local.faces, local.part)
        return _concat([body.transformed(part=0), feat.transformed(part=1)])

    return _Recipe(recipe.family, "near", build, body_symmetry=recipe.symmetry,
                   extra={**recipe.extra, "feature": kind})


# ------------------------------------------------------------------ deformations

def _taper(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """Scale x and y linearly with z (same factor for both: keeps every symmetry about z)."""
    k = rng.uniform(0.3, 0.75) * rng.choice([-1.0, 1.0])

    def f(v: np.ndarray) -> np.ndarray:
        z0, z1 = v[:, 2].min(), v[:, 2].max()
        t = (v[:, 2] - 0.5 * (z0 + z1)) / max(z1 - z0, 1e-9)
        out = v.copy()
        out[:, :2] *= (1 + k * t)[:, None]
        return out
    return f


def _twist(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """Rotate horizontal slices by an angle growing with z (keeps every symmetry about z)."""
    total = rng.uniform(0.5, 2.5) * rng.choice([-1.0, 1.0])

    def f(v: np.ndarray) -> np.ndarray:
        z0, z1 = v[:, 2].min(), v[:, 2].max()
        a = total * (v[:, 2] - z0) / max(z1 - z0, 1e-9)
        c, s = np.cos(a), np.sin(a)
        out = v.copy()
        out[:, 0] = c * v[:, 0] - s * v[:, 1]
        out[:, 1] = s * v[:, 0] + c * v[:, 1]
        return out
    return f


def _bend(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """Bend the part of the object above a random height around a horizontal axis.

    Only above ``z_start`` (a hook rather than a banana): a bend centred on a z-symmetric body
    would keep a hidden 180-degree flip symmetry.
    """
    phi = rng.uniform(0, 2 * np.pi)
    start = rng.uniform(-0.3, 0.2)
    angle = rng.uniform(0.5, 1.6)

    def f(v: np.ndarray) -> np.ndarray:
        rot = _rz(phi)
        w = _rotate(v, rot.T)  # into the bend frame (bend toward +x)
        z0, z1 = w[:, 2].min(), w[:, 2].max()
        zs = 0.5 * (z0 + z1) + start * (z1 - z0)
        xmax = np.abs(w[:, 0]).max()
        R = max((z1 - zs) / angle, 1.5 * xmax, 1e-9)
        above = w[:, 2] > zs
        th = (w[above, 2] - zs) / R
        d = R - w[above, 0]
        w = w.copy()
        w[above, 0] = R - d * np.cos(th)
        w[above, 2] = zs + d * np.sin(th)
        return _rotate(w, rot)
    return f


def _draw_recipe(rng: np.random.Generator) -> _Recipe:
    """Draw family, parameters, optional feature and deformations of one object."""
    names = list(_BASE_WEIGHTS)
    weights = np.array([_BASE_WEIGHTS[n] for n in names])
    base = str(rng.choice(names, p=weights / weights.sum()))
    if base in ("box", "cylinder", "cone", "sphere", "capsule", "torus", "superquadric"):
        recipe = _recipe_primitive(rng, base)
    else:
        recipe = {"lathe": _recipe_lathe, "extrusion": _recipe_extrusion,
                  "union": _recipe_union, "tube": _recipe_tube}[base](rng)
    recipe.base_family = recipe.family
    recipe.body_symmetry = recipe.symmetry
    if recipe.symmetry not in ("none",) and base not in ("union", "torus") and rng.random() < _P_NEAR:
        recipe = _with_feature(rng, recipe)
        recipe.base_family = base

    deform: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = []
    if rng.random() < _P_TAPER:
        deform.append(("tapered", _taper(rng)))
    if recipe.body_symmetry != "continuous_z" and rng.random() < _P_TWIST:
        deform.append(("twisted", _twist(rng)))
    if rng.random() < _P_BEND:
        deform.append(("bent", _bend(rng)))
    if deform:
        names_d = tuple(n for n, _ in deform)
        fns = [f for _, f in deform]
        inner_build = recipe.build

        def build(budget: int) -> _Body:
            body = inner_build(budget)
            v = body.vertices
            for fn in fns:
                v = fn(v)
            return _Body(v, body.faces, body.part)
        family = "bent" if "bent" in names_d else ("twisted" if "twisted" in names_d else "tapered")
        symmetry = "none" if "bent" in names_d else recipe.symmetry
        recipe = _Recipe(family, symmetry, build, body_symmetry=recipe.body_symmetry, deformations=names_d,
                         base_family=recipe.base_family, extra=recipe.extra)
    return recipe


def _build_within(recipe: _Recipe, budget: int, max_faces: int) -> _Body:
    """Build at ``budget`` faces, and coarser until the hard ``max_faces`` bound holds."""
    body = recipe.build(budget)
    while len(body.faces) > max_faces:
        budget = max(64, int(budget * 0.8 * max_faces / len(body.faces)))
        body = recipe.build(budget)
        if budget == 64 and len(body.faces) > max_faces:
            raise ValueError(f"cannot build this object within {max_faces} faces")
    return body


# ----------------------------------------------------------------------------------------------
# Symmetry measurement
# ----------------------------------------------------------------------------------------------

def _sample_points(v: np.ndarray, f: np.ndarray, n: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """Area-uniform surface samples, their (face) unit normals and the total area."""
    tri = v[f]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    cross = np.cross(e1, e2)
    dbl = np.linalg.norm(cross, axis=1)
    cdf = np.cumsum(dbl)
    idx = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1]), len(f) - 1)
    a, b = rng.random(n), rng.random(n)
    flip = a + b > 1
    a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
    pts = tri[idx, 0] + a[:, None] * e1[idx] + b[:, None] * e2[idx]
    normals = cross[idx] / np.maximum(dbl[idx], 1e-300)[:, None]
    return pts, normals, float(0.5 * cdf[-1])


class _SymmetryProbe:
    """Dense surface samples + KD-tree, to ask "does rotation R map the surface onto itself?".

    A rotated query point is *off* the surface when it is farther than a few sample spacings
    from every reference sample, or when its distance to the tangent planes of its nearest
    reference samples exceeds ``tol`` (0.6 % of the size by default). The point-to-plane test is
    what makes the probe sharp: it ignores the spacing of the samples along the surface and the
    faceting of curved surfaces, but sees a feature that sticks out by a percent of the size.
    The fraction of off-surface points is ~0 for a symmetry and clearly positive otherwise.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, n_ref: int = 4096, n_query: int = 600,
                 seed: int = 0, center: np.ndarray | None = None, tol: float = 0.006) -> None:
        rng = np.random.default_rng(seed)
        self.ref, self.normals, area = _sample_points(vertices, faces, n_ref, rng)
        self.query, _, _ = _sample_points(vertices, faces, n_query, rng)
        self.center = self.ref.mean(0) if center is None else np.asarray(center, np.float64)
        self.tree = cKDTree(self.ref)
        self.size = float(np.linalg.norm(vertices.max(0) - vertices.min(0)))
        self.reach = max(3.0 * math.sqrt(area / n_ref), 0.02 * self.size)
        self.tol = tol * self.size

    def far_count(self, rotation: np.ndarray, stop_after: int | None = None,
                  chunk: int = 100) -> tuple[int, int]:
        """(off-surface count, points tested); stops early once ``stop_after`` is exceeded."""
        far = tested = 0
        R = np.asarray(rotation)
        for i in range(0, len(self.query), chunk):
            q = _rotate(self.query[i:i + chunk] - self.center, R) + self.center
            d, j = self.tree.query(q, k=4, distance_upper_bound=self.reach)
            ok = np.isfinite(d)
            jj = np.where(ok, j, 0)
            plane = np.abs(np.einsum("nkc,nkc->nk", q[:, None] - self.ref[jj], self.normals[jj]))
            plane[~ok] = np.inf
            far += int(np.sum(plane.min(1) > self.tol))
            tested += len(q)
            if stop_after is not None and far > stop_after:
                break
        return far, tested

    def far_fraction(self, rotation: np.ndarray) -> float:
        far, tested = self.far_count(rotation)
        return far / tested


def symmetry_far_fraction(mesh: trimesh.Trimesh, rotations: np.ndarray, *, center: np.ndarray | None = None,
                          n_ref: int = 4096, n_query: int = 600, seed: int = 0) -> float | np.ndarray:
    """Fraction of surface samples that a rotation about ``center`` moves off the surface.

    ~0 (below 0.02) when the rotation is a symmetry of the shape; a few percent or more when it
    is not. ``rotations`` is one (3, 3) matrix (returns a float) or a stack (K, 3, 3) (returns
    K values; the surface is sampled once). ``center`` defaults to the surface centroid, which
    every symmetry fixes; pass the origin to test rotations about the object's own z axis.
    """
    probe = _SymmetryProbe(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces), n_ref, n_query,
                           seed, center)
    R = np.asarray(rotations, np.float64)
    if R.ndim == 2:
        return probe.far_fraction(R)
    return np.array([probe.far_fraction(r) for r in R])


_SYM_ANGLES = tuple(2 * np.pi / k for k in range(2, 9))
# Calibrated on a few hundred objects: true symmetries measure <= 0.015 (the misses are samples
# on thin rims and sharp edges), asymmetric objects are kept only when every candidate rotation
# measures >= 0.05, so a label check with another sampling seed has a wide margin either way.
_FAR_SYMMETRIC = 0.02    # below: treated as a symmetry
_FAR_ASYMMETRIC = 0.05   # an object labelled "none"/"near" measures at least this for every candidate
_FAR_NEAR = 0.04         # ... and a "near" one at least this under its body's own symmetry


def _candidate_rotations(probe: _SymmetryProbe) -> list[np.ndarray]:
    """Rotations that could be hidden symmetries: 2..8-fold about the coordinate axes and about
    the principal axes of the surface (every symmetry axis of a body is a principal axis of its
    inertia), and 2-fold about the diagonals of the coordinate planes (the flips of a square)."""
    p = probe.ref - probe.center
    _, vecs = np.linalg.eigh(np.einsum("ni,nj->ij", p, p))
    axes = [np.eye(3)[i] for i in range(3)] + [vecs[:, i] for i in range(3)]
    rots = [rotation_about(a, ang) for a in axes for ang in _SYM_ANGLES]
    diagonals = [(1, 1, 0), (1, -1, 0), (1, 0, 1), (1, 0, -1), (0, 1, 1), (0, 1, -1)]
    rots += [rotation_about(a, np.pi) for a in diagonals]
    return rots


def _has_hidden_symmetry(vertices: np.ndarray, faces: np.ndarray, body_axis: bool = False) -> bool:
    """True when some candidate rotation maps the shape onto itself or nearly (below
    ``_FAR_ASYMMETRIC``), i.e. when an asymmetric label would not be honest.

    Candidates turn about the surface centroid, which every exact symmetry fixes. With
    ``body_axis`` (near-symmetric objects, whose feature shifts the centroid off the body's
    axis) the rotations about the body's z axis (x = y = 0) are tried too: the feature must
    stand out under the body's own symmetry, or "near" would be "symmetric" in all but name.
    Most candidates are rejected after the first chunk of query points (early exit), which keeps
    this at a few milliseconds."""
    probe = _SymmetryProbe(vertices, faces, n_ref=4096, n_query=600, seed=1)
    limit = int(_FAR_ASYMMETRIC * len(probe.query))
    for R in _candidate_rotations(probe):
        far, _ = probe.far_count(R, stop_after=limit, chunk=60)
        if far <= limit:
            return True
    if body_axis:
        probe.center = np.array([0.0, 0.0, probe.center[2]])
        limit = int(_FAR_NEAR * len(probe.query))
        for R in [_rz(a) for a in _SYM_ANGLES + (1.234,)]:
            far, _ = probe.far_count(R, stop_after=limit, chunk=60)
            if far <= limit:
                return True
    return False


def symmetry_rotations(obj: ProceduralObject, n_continuous: int = 36) -> np.ndarray:
    """The proper rotations (K, 3, 3) that map ``obj``'s shape onto itself (about the origin).

    The z-axis group comes from the label (``continuous_z`` is discretized into ``n_continuous``
    steps). The label does not say whether the shape is also symmetric under a 180-degree flip
    about a horizontal axis (a box, a plain cylinder, a superquadric are; a cone or a cup are
    not), so that is measured: such an axis must be horizontal (the flip has to map the z axis
    onto itself), and with a k-fold z group it is enough to scan directions in [0, pi / k). When
    one is found the group doubles. "none" and "near" give the identity only.
    """
    sym = obj.symmetry
    if sym in ("none", "near"):
        return np.eye(3)[None]
    k = n_continuous if sym == "continuous_z" else int(sym.split("_")[1])
    zs = [_rz(2 * np.pi * j / k) for j in range(k)]
    probe = _SymmetryProbe(np.asarray(obj.mesh.vertices, np.float64), np.asarray(obj.mesh.faces), seed=2,
                           center=np.zeros(3))

    def flip(theta: float) -> np.ndarray:
        return rotation_about((math.cos(theta), math.sin(theta), 0.0), np.pi)

    def score(theta: float, limit: float) -> float:
        far, tested = probe.far_count(flip(theta), stop_after=int(limit * len(probe.query)), chunk=60)
        return far / tested

    if sym == "continuous_z":  # one horizontal flip axis implies all of them
        found = 0.0 if score(0.0, _FAR_SYMMETRIC) < _FAR_SYMMETRIC else None
    else:
        coarse = np.arange(0.0, np.pi / k, math.radians(0.5))
        scores = np.array([score(t, 0.2) for t in coarse])
        best = float(coarse[int(np.argmin(scores))])
        fine = best + np.radians(np.arange(-0.5, 0.5001, 0.05))
        fine_scores = np.array([score(t, _FAR_SYMMETRIC) for t in fine])
        i = int(np.argmin(fine_scores))
        found = float(fine[i]) if fine_scores[i] < _FAR_SYMMETRIC else None
    group = zs + ([z @ flip(found) for z in zs] if found is not None else [])
    return np.stack(group)


# ----------------------------------------------------------------------------------------------
# Appearance
# ----------------------------------------------------------------------------------------------

def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.round(np.array(rgb) * 255).astype(np.uint8)


def _random_color(rng: np.random.Generator) -> np.ndarray:
    """A uint8 RGB colour; about a quarter near-grey, as many real objects are."""
    h = rng.random()
    s = rng.uniform(0.0, 0.15) if rng.random() < 0.25 else rng.uniform(0.35, 1.0)
    v = rng.uniform(0.18, 1.0)
    return _hsv_to_rgb(h, s, v)


def _palette(rng: np.random.Generator, k: int) -> np.ndarray:
    return np.stack([_random_color(rng) for _ in range(k)]).astype(np.float64)


def _smooth_noise_2d(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in [0, 1] (bicubic upsampling of a coarse random grid)."""
    coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32))
    out = np.asarray(coarse.resize((size, size), Image.BICUBIC), np.float64)
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-9)


def _tex_stripes(rng: np.random.Generator, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    ang = rng.uniform(0, np.pi)
    t = (xx * math.cos(ang) + yy * math.sin(ang)) / rng.uniform(6, 64)
    k = int(rng.integers(2, 5))
    pal = _palette(rng, k)
    return pal[np.floor(t).astype(int) % k]


def _tex_checker(rng: np.random.Generator, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n]
    cx, cy = rng.integers(8, 64, 2)
    pal = _palette(rng, 2)
    return pal[((xx // cx) + (yy // cy)) % 2]


def _tex_blobs(rng: np.random.Generator, n: int) -> np.ndarray:
    field_ = _smooth_noise_2d(rng, n, int(rng.integers(3, 12)))
    pal = _palette(rng, 3)
    if rng.random() < 0.5:  # hard-edged spots
        levels = np.digitize(field_, np.sort(rng.uniform(0.3, 0.7, 2)))
        return pal[levels]
    return pal[0] * (1 - field_[..., None]) + pal[1] * field_[..., None]


def _tex_gradient(rng: np.random.Generator, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) / (n - 1)
    pal = _palette(rng, 2)
    if rng.random() < 0.5:
        ang = rng.uniform(0, 2 * np.pi)
        t = xx * math.cos(ang) + yy * math.sin(ang)
    else:
        cx, cy = rng.uniform(0, 1, 2)
        t = np.hypot(xx - cx, yy - cy)
    t = (t - t.min()) / max(np.ptp(t), 1e-9)
    return pal[0] * (1 - t[..., None]) + pal[1] * t[..., None]


def _tex_text(rng: np.random.Generator, n: int, base: np.ndarray | None = None) -> np.ndarray:
    """Lines of glyph-like blocks on a background: the printed labels of packaged goods."""
    img = np.empty((n, n, 3)) if base is None else base.copy()
    if base is None:
        img[:] = _random_color(rng)
    ink = _random_color(rng).astype(np.float64)
    line_h = int(rng.integers(6, 22))
    y = int(rng.integers(2, line_h + 2))
    while y + line_h < n:
        x = int(rng.integers(2, 24))
        end = n - int(rng.integers(2, 40))
        while x < end:
            for _ in range(int(rng.integers(2, 8))):  # one word
                w = int(rng.integers(max(2, line_h // 4), max(3, line_h // 2) + 1))
                h = int(line_h * rng.uniform(0.55, 1.0))
                if x + w >= end:
                    break
                img[y + line_h - h:y + line_h, x:x + w] = ink
                x += w + max(1, line_h // 8)
            x += int(rng.integers(line_h // 2 + 1, line_h + 2))
        y += int(line_h * rng.uniform(1.3, 2.0))
    return img


def _tex_label(rng: np.random.Generator, n: int) -> np.ndarray:
    """A background pattern with a text panel on it (a composite, like real packaging)."""
    base = [_tex_stripes, _tex_gradient, _tex_blobs][int(rng.integers(0, 3))](rng, n)
    y0, y1 = sorted(rng.integers(0, n, 2))
    if y1 - y0 < n // 4:
        y0, y1 = n // 4, 3 * n // 4
    panel = _tex_text(rng, y1 - y0 + 0, None)
    w = panel.shape[1]
    base[y0:y1, :min(n, w)] = panel[:, :min(n, w)]
    return base


_TEXTURES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "stripes": _tex_stripes, "checker": _tex_checker, "blobs": _tex_blobs,
    "gradient": _tex_gradient, "text": _tex_text, "label": _tex_label,
}


def _tex_z_only(rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
    """A texture whose colour depends on the row only: with cylindrical uv it varies with height
    only, so it keeps every rotational symmetry of the shape about z."""
    kind = str(rng.choice(["bands", "vgradient", "vnoise"]))
    rows = np.arange(n, dtype=np.float64) / (n - 1)
    if kind == "bands":
        k = int(rng.integers(2, 6))
        edges = np.sort(rng.random(k - 1))
        pal = _palette(rng, k)
        col = pal[np.searchsorted(edges, rows)]
    elif kind == "vgradient":
        pal = _palette(rng, 2)
        col = pal[0] * (1 - rows[:, None]) + pal[1] * rows[:, None]
    else:
        t = np.interp(rows, np.linspace(0, 1, 8), rng.random(8))
        pal = _palette(rng, 2)
        col = pal[0] * (1 - t[:, None]) + pal[1] * t[:, None]
    return np.broadcast_to(col[:, None, :], (n, n, 3)).copy(), kind


def _uv(v: np.ndarray, mapping: str, rng: np.random.Generator) -> np.ndarray:
    """Per-vertex uv in [0, 1] without seams, so the mesh keeps shared vertices (watertight).

    cylindrical: u = |azimuth| / pi (mirrored, hence continuous all around), v = height;
    spherical: the same u, v = polar angle; planar: projection on two random orthogonal axes.
    """
    c = 0.5 * (v.min(0) + v.max(0))
    p = v - c
    if mapping in ("cylindrical", "spherical"):
        u = np.abs(np.arctan2(p[:, 1], p[:, 0])) / np.pi
        if mapping == "cylindrical":
            w = (p[:, 2] - p[:, 2].min()) / max(np.ptp(p[:, 2]), 1e-12)
        else:
            cos_polar = np.clip(p[:, 2] / np.maximum(np.linalg.norm(p, axis=1), 1e-12), -1, 1)
            w = 1.0 - np.arccos(cos_polar) / np.pi
    else:
        a = rng.normal(size=3)
        a /= np.linalg.norm(a)
        b = np.cross(a, rng.normal(size=3))
        b /= np.linalg.norm(b)
        e1, e2 = np.cross(a, b), b
        u, w = np.einsum("nc,c->n", p, e1), np.einsum("nc,c->n", p, e2)
        span = max(np.ptp(u), np.ptp(w), 1e-12)
        u = (u - u.min()) / span
        w = (w - w.min()) / span
    return _uv_margin(np.stack([u, w], -1))


def _uv_margin(uv: np.ndarray) -> np.ndarray:
    """Keep uv a hair inside [0, 1]: renderers that wrap (ours does) would otherwise read the
    opposite border at exactly 1.0, and speckle where interpolation lands on either side of it."""
    return 0.002 + 0.996 * np.clip(uv, 0.0, 1.0)


def _apply_appearance(v: np.ndarray, f: np.ndarray, part: np.ndarray, symmetry: str, radial_union: bool,
                      rng: np.random.Generator) -> tuple[trimesh.Trimesh, bool, str, bool]:
    """Attach visuals. Returns (mesh, textured, appearance name, appearance keeps symmetry)."""
    mesh = trimesh.Trimesh(v, f, process=False)
    symmetric_shape = symmetry not in ("none",)
    if rng.random() < _P_TEXTURED:
        if symmetric_shape and rng.random() < 0.35:
            img, kind = _tex_z_only(rng, _TEX_SIZE)
            mapping, keeps = "cylindrical", True
        else:
            kind = str(rng.choice(list(_TEXTURES)))
            img = _TEXTURES[kind](rng, _TEX_SIZE)
            mapping = str(rng.choice(["cylindrical", "planar", "spherical"], p=[0.5, 0.3, 0.2]))
            keeps = False
        grain = rng.normal(0.0, rng.uniform(0, 6), (img.shape[0], 1 if keeps else img.shape[1], 3))
        img = np.clip(img + grain, 0, 255)  # sensor-like grain; per row only where it must keep symmetry
        image = Image.fromarray(img.astype(np.uint8))
        mesh.visual = trimesh.visual.TextureVisuals(uv=_uv(v, mapping, rng), image=image)
        return mesh, True, f"texture:{kind}/{mapping}", keeps

    kind = str(rng.choice(["uniform", "parts", "noise"], p=[0.45, 0.25, 0.3]))
    if kind == "uniform":  # textureless, like T-LESS
        rgb = np.broadcast_to(_random_color(rng), (len(v), 3))
        keeps = True
    elif kind == "parts" and part.max() > 0:
        pal = _palette(rng, int(part.max()) + 1)
        rgb = pal[part]
        keeps = radial_union or symmetry == "continuous_z"  # arms share one colour; coaxial parts
    elif kind == "parts":  # one part: colour bands along z (keeps z symmetry)
        k = int(rng.integers(2, 5))
        t = (v[:, 2] - v[:, 2].min()) / max(np.ptp(v[:, 2]), 1e-12)
        pal = _palette(rng, k)
        rgb = pal[np.searchsorted(np.sort(rng.random(k - 1)), t)]
        kind, keeps = "bands", True
    else:  # smooth 3D noise
        scale = max(np.ptp(v, axis=0).max(), 1e-12)
        freq = rng.normal(size=(4, 3)) * rng.uniform(1.0, 4.0) * 2 * np.pi / scale
        t = np.sin(np.einsum("nc,kc->nk", v, freq) + rng.uniform(0, 2 * np.pi, 4)).sum(1)
        t = (t - t.min()) / max(np.ptp(t), 1e-12)
        pal = _palette(rng, 2)
        rgb = pal[0] * (1 - t[:, None]) + pal[1] * t[:, None]
        keeps = False
    rgba = np.empty((len(v), 4), np.uint8)
    rgba[:, :3] = np.clip(np.round(rgb), 0, 255)
    rgba[:, 3] = 255
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=rgba)
    return mesh, False, f"vertex:{kind}", keeps


# ----------------------------------------------------------------------------------------------
# Finishing: honesty check, centring, scaling, visuals
# ----------------------------------------------------------------------------------------------

def _fibonacci_directions(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z * z)
    a = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([r * np.cos(a), r * np.sin(a), z], -1)


_DIRECTIONS = _fibonacci_directions(300)


def _diameter(v: np.ndarray) -> float:
    """Largest vertex-to-vertex distance (exact).

    Small meshes are searched exhaustively. For larger ones an all-pairs search (or even a
    convex hull of a round shape) costs tens of milliseconds, so they are pruned first: a good
    pair (p, q) of length L is found by ascent from the widest of 300 directions (replace the
    pair by the extreme vertices along its own direction until it stops growing); with c its
    midpoint and R the largest distance of a vertex from c, any longer pair has both ends
    farther than L - R from c (triangle inequality), so only those vertices are searched
    exhaustively. For all but near-perfect spheres that leaves a handful.
    """
    hull = np.asarray(v, np.float64)
    if len(hull) <= 600:
        return float(pdist(hull).max())
    proj = np.einsum("kc,nc->kn", _DIRECTIONS, hull)
    width = proj.max(1) - proj.min(1)
    best, pair = 0.0, (hull[0], hull[0])
    for k in np.argsort(-width)[:4]:
        p, q = hull[int(np.argmax(proj[k]))], hull[int(np.argmin(proj[k]))]
        dist = float(np.linalg.norm(p - q))
        for _ in range(30):  # ascent: the extreme vertices along the pair's own direction
            t = np.einsum("nc,c->n", hull, (p - q) / max(dist, 1e-300))
            p2, q2 = hull[int(np.argmax(t))], hull[int(np.argmin(t))]
            d2 = float(np.linalg.norm(p2 - q2))
            if d2 <= dist:
                break
            p, q, dist = p2, q2, d2
        if dist > best:
            best, pair = dist, (p, q)
    c = 0.5 * (pair[0] + pair[1])
    r = np.linalg.norm(hull - c, axis=1)
    keep = hull[r >= best - r.max() - 1e-9 * best]
    if len(keep) < 2:
        return best
    if len(keep) <= 3000:
        return max(best, float(pdist(keep).max()))
    for i in range(0, len(keep), 500):  # near-perfect sphere: exhaustive in blocks
        blk = keep[i:i + 500]
        best = max(best, float(np.sqrt(((blk[:, None] - keep[None]) ** 2).sum(-1).max())))
    return best


def _finish(body: _Body, recipe: _Recipe, look_rng: np.random.Generator, target_diameter: float,
            seed_key: tuple[str, int]) -> ProceduralObject:
    v, f = body.vertices, body.faces
    symmetry = recipe.symmetry
    if symmetry == "none":
        center = 0.5 * (v.min(0) + v.max(0))
    else:  # keep the symmetry axis on z
        center = np.array([0.0, 0.0, 0.5 * (v[:, 2].min() + v[:, 2].max())])
    v = v - center
    scale = target_diameter / _diameter(v)
    v = v * scale
    mesh, textured, appearance, keeps = _apply_appearance(
        v, f, body.part, symmetry, recipe.extra.get("kind") == "radial", look_rng)
    if symmetry == "none":
        visual = "none"
    else:
        visual = symmetry if keeps else "none"
    return ProceduralObject(
        mesh=mesh, seed_key=seed_key, family=recipe.family, symmetry=symmetry, textured=textured,
        diameter=float(target_diameter), base_family=recipe.base_family or recipe.family,
        deformations=recipe.deformations, appearance=appearance, visual_symmetry=visual,
        body_symmetry=recipe.body_symmetry or symmetry, extra=dict(recipe.extra))


# ----------------------------------------------------------------------------------------------
# The README demo object
# ----------------------------------------------------------------------------------------------

def _rect(a: float, b: float) -> np.ndarray:
    """Corners (4, 2) of the rectangle [-a, a] x [-b, b], counter-clockwise."""
    return np.array([[a, b], [-a, b], [-a, -b], [a, -b]], np.float64)


def make_bundled_demo_object() -> ProceduralObject:
    """A fixed, recognizable, asymmetric, textured object: a cordless-drill-like union.

    Used by the README demo so a newcomer sees a pose that is unambiguous from every side (the
    handle and battery below, the chuck and bit in front) and a printed label on the body.
    Deterministic: no draw depends on anything but fixed constants.
    """
    rng = np.random.default_rng(20240601)
    parts: list[_Body] = []
    # body: a cylinder along x, closed by a rounded rear
    body = _sweep(0.032 * _circle(64), _densify(_straight_profile(0.075, 0.12), 40))
    parts.append(body.transformed(rotation_about((0, 1, 0), np.pi / 2), (0.0, 0.0, 0.06), part=0))
    rear = _sweep(0.03 * _circle(48), _sample_pieces([_arc(1.0, 0.03)], 18))
    parts.append(rear.transformed(None, (-0.075, 0.0, 0.06), part=0))
    # chuck (frustum) and bit
    chuck = _sweep(0.02 * _circle(48),
                   _densify(np.array([[0, -0.022], [1, -0.022], [0.6, 0.022], [0, 0.022]]), 16))
    parts.append(chuck.transformed(rotation_about((0, 1, 0), np.pi / 2), (0.095, 0.0, 0.06), part=1))
    bit = _sweep(0.004 * _circle(24), _densify(np.array([[0, -0.03], [1, -0.03], [1, 0.03], [0, 0.03]]), 12))
    parts.append(bit.transformed(rotation_about((0, 1, 0), np.pi / 2), (0.14, 0.0, 0.06), part=2))
    # handle tilted back, battery block, trigger
    handle = _sweep(_polygon_ring(_rect(0.018, 0.015), 64),
                    _densify(_straight_profile(0.055, 0.1), 24))
    parts.append(handle.transformed(rotation_about((0, 1, 0), -0.25), (-0.02, 0.0, -0.005), part=3))
    battery = _sweep(_polygon_ring(_rect(0.04, 0.032), 64),
                     _densify(_straight_profile(0.018, 0.15), 12))
    parts.append(battery.transformed(None, (-0.005, 0.0, -0.07), part=4))
    trigger = _sweep(_polygon_ring(_rect(0.006, 0.007), 32),
                     _densify(_straight_profile(0.012), 8))
    parts.append(trigger.transformed(rotation_about((0, 1, 0), -0.25), (0.008, 0.0, 0.03), part=1))
    merged = _concat(parts)
    v = merged.vertices - 0.5 * (merged.vertices.min(0) + merged.vertices.max(0))

    # A yellow/black power-tool look: stripes and a text panel, projected from the side (x-z plane).
    img = np.empty((_TEX_SIZE, _TEX_SIZE, 3))
    img[:] = (235, 180, 20)
    img[:, :40] = (30, 30, 30)
    img[-60:] = (30, 30, 30)
    panel = _tex_text(np.random.default_rng(7), 96, None)
    panel[:] = np.where(panel.sum(-1, keepdims=True) == panel[0, 0].sum(), (245, 245, 240), (20, 20, 20))
    img[70:166, 120:216] = panel
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    p = v - v.min(0)
    span = np.ptp(v[:, [0, 2]], axis=0).max()
    uv = _uv_margin(np.stack([p[:, 0] / span, p[:, 2] / span], -1))
    mesh = trimesh.Trimesh(v, merged.faces, process=False)
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(img))
    return ProceduralObject(mesh=mesh, seed_key=("demo", 0), family="union", symmetry="none", textured=True,
                            diameter=_diameter(v), base_family="union", appearance="texture:label/planar",
                            visual_symmetry="none", body_symmetry="none", extra={"kind": "drill"})

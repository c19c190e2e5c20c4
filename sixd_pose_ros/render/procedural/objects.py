"""Procedural objects: what an object is (:class:`ProceduralObject`), how one is made from its
``(split, index)`` key (:func:`make_object`), and the bundled demo object.

An object is drawn as a recipe (:mod:`.shapes`), built into a mesh within the face budget,
checked for hidden symmetries when its label claims none (:mod:`.symmetry`), then centred,
scaled to its drawn diameter and given its appearance (:mod:`.textures`). See the package
docstring for the properties this keeps (determinism, a clean split, honest labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh
from PIL import Image
from scipy.spatial.distance import pdist

from sixd_pose_ros.render.procedural.bodies import (
    _arc,
    _Body,
    _circle,
    _concat,
    _densify,
    _polygon_ring,
    _rect,
    _sample_pieces,
    _straight_profile,
    _sweep,
    rotation_about,
)
from sixd_pose_ros.render.procedural.shapes import _build_within, _draw_recipe, _Recipe, _recipe_union
from sixd_pose_ros.render.procedural.symmetry import _has_hidden_symmetry
from sixd_pose_ros.render.procedural.textures import _TEX_SIZE, _apply_appearance, _tex_text, _uv_margin

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

_MIN_FACES = 500
_MAX_ATTEMPTS = 6


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

"""Shapes of the procedural objects: primitives, lathes, extrusions, tubes, unions, features
and deformations, drawn as recipes.

All random draws happen when a recipe is made (:func:`_draw_recipe`); ``recipe.build(budget)``
only tessellates, so the shape does not depend on the face budget. Each recipe carries the
symmetry label of the shape it builds (checked numerically in :mod:`.symmetry`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.interpolate import PchipInterpolator

from sixd_pose_ros.render.procedural.bodies import (
    _arc,
    _Body,
    _circle,
    _concat,
    _densify,
    _line,
    _polygon_ring,
    _random_rotation,
    _rect,
    _resolution,
    _rotate,
    _rz,
    _sample_pieces,
    _spow,
    _straight_profile,
    _superellipse,
    _sweep,
    _torus,
    _tube,
    rotation_about,
)

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

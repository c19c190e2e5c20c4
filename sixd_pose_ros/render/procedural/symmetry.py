"""Symmetry analysis of meshes: which rotations map a surface onto itself.

Used when an object is made, to keep symmetry labels honest (an object labelled asymmetric
must not have a hidden symmetry, or a pose network would learn that two identical views have
different poses), and by training and evaluation to get an object's symmetry group
(:func:`symmetry_rotations`, what ADD-S and symmetric losses need).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from sixd_pose_ros.render.procedural.bodies import _rotate, _rz, rotation_about

if TYPE_CHECKING:
    from sixd_pose_ros.render.procedural.objects import ProceduralObject

__all__ = ["symmetry_far_fraction", "symmetry_rotations"]

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

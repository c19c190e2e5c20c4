"""Object normalization (center + size) and object diameter.

Networks work on objects scaled to the unit sphere (the model-free mode learns nothing about
absolute size); poses and points go back to meters at the output. Diameters are the reference
length of the ADD(-S) thresholds (e.g. 0.1 * diameter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

try:  # scipy >= 1.8 exports it here; older versions keep it in scipy.spatial.qhull
    from scipy.spatial import QhullError
except ImportError:  # pragma: no cover
    from scipy.spatial.qhull import QhullError  # type: ignore

__all__ = ["ObjectNormalization", "normalization_from_points", "object_diameter"]


@dataclass(frozen=True)
class ObjectNormalization:
    """Similarity that maps an object into the unit sphere: ``x_n = (x - center) / scale``.

    Normalized poses live in a camera frame scaled by ``1 / scale`` too, so they stay rigid:
    ``R_n = R`` and ``t_n = (R @ center + t) / scale`` (both sides of
    ``X_cam = R @ X_obj + t`` divided by ``scale``). Depths in that frame are divided by
    ``scale`` as well.

    Attributes:
        center: object center in object coordinates (meters), shape ``(3,)``.
        scale: radius of the bounding sphere around ``center`` (meters), > 0.
    """

    center: np.ndarray
    scale: float

    def __post_init__(self) -> None:
        c = np.asarray(self.center, dtype=np.float64).reshape(3)
        object.__setattr__(self, "center", c)
        s = float(self.scale)
        if not np.isfinite(s) or s <= 0:
            raise ValueError(f"scale must be finite and > 0, got {self.scale}")
        object.__setattr__(self, "scale", s)

    def to_normalized(self, points: np.ndarray) -> np.ndarray:
        """Object points (meters) ``(..., 3)`` -> normalized coordinates ``(..., 3)``."""
        return (np.asarray(points, dtype=np.float64) - self.center) / self.scale

    def to_metric(self, points: np.ndarray) -> np.ndarray:
        """Normalized coordinates ``(..., 3)`` -> object points in meters ``(..., 3)``."""
        return np.asarray(points, dtype=np.float64) * self.scale + self.center

    def pose_to_normalized(self, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Metric object-to-camera pose -> pose of the normalized object in the scaled frame.

        Args:
            R: ``R_m2c``, shape ``(..., 3, 3)``.
            t: ``t_m2c`` in meters, shape ``(..., 3)``.

        Returns:
            ``(R_n, t_n)`` with shapes ``(..., 3, 3)`` and ``(..., 3)`` (``t_n`` unitless).
        """
        R = np.asarray(R, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        t_n = ((R @ self.center) + t) / self.scale
        return R.copy(), t_n

    def pose_to_metric(self, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`pose_to_normalized`: returns ``(R, t)`` with ``t`` in meters."""
        R = np.asarray(R, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        return R.copy(), t * self.scale - R @ self.center


def normalization_from_points(points: np.ndarray) -> ObjectNormalization:
    """Normalization from model points: bounding-box center, radius = farthest point from it.

    Args:
        points: object points (meters), shape ``(N, 3)``, ``N >= 1``, not all identical.

    Returns:
        :class:`ObjectNormalization` whose unit sphere contains every point.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if pts.shape[0] == 0:
        raise ValueError("need at least one point")
    center = 0.5 * (pts.min(axis=0) + pts.max(axis=0))
    radius = float(np.sqrt(((pts - center) ** 2).sum(axis=1).max()))
    if radius <= 0:
        raise ValueError("all points coincide: object has zero size")
    return ObjectNormalization(center=center, scale=radius)


def _max_pdist_bruteforce(pts: np.ndarray, chunk: int = 2048) -> float:
    """Max pairwise distance by blocks (bounded memory); O(N^2), last-resort fallback."""
    best = 0.0
    for i in range(0, len(pts), chunk):
        block = pts[i:i + chunk]
        d2 = ((block[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
        best = max(best, float(d2.max()))
    return float(np.sqrt(best))


def object_diameter(points: np.ndarray) -> float:
    """Largest distance between two points of the object (meters).

    Exact: the two farthest points are always vertices of the convex hull, so we take the max
    of ``pdist`` over the hull vertices (``scipy.spatial.ConvexHull``). Flat or straight point
    sets make Qhull fail; then (hand-written) we find the affine dimension with an SVD and take
    the 2D hull in the plane or the two extremes on the line, and fall back to brute force.

    Args:
        points: shape ``(N, 3)``.

    Returns:
        Diameter, float (0.0 for fewer than two distinct points).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) < 2:
        return 0.0
    try:
        idx = ConvexHull(pts).vertices
        return float(pdist(pts[idx]).max())
    except (QhullError, ValueError):
        pass
    centered = pts - pts.mean(axis=0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    if s[0] <= 1e-15 * max(1.0, np.abs(pts).max()):
        # All points (numerically) coincide: any estimate of a negligible size will do.
        return _max_pdist_bruteforce(pts) if len(pts) <= 4096 else float(
            np.linalg.norm(pts - pts[0], axis=1).max())
    rank = int((s > 1e-9 * s[0]).sum())
    if rank == 1:
        proj = centered @ vt[0]
        return float(np.linalg.norm(pts[np.argmax(proj)] - pts[np.argmin(proj)]))
    if rank == 2:
        try:
            idx = ConvexHull(centered @ vt[:2].T).vertices
            return float(pdist(pts[idx]).max())
        except (QhullError, ValueError):
            pass
    return _max_pdist_bruteforce(pts)

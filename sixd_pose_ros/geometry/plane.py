"""The dominant plane of a point cloud (a table under the objects).

Hand-written (3-point RANSAC, hypotheses scored in vectorized chunks, then a least-squares refit)
rather than Open3D's ``segment_plane``: it was written when Open3D was optional here (the
capture tool still runs without it); now that the pipeline imports Open3D for ICP and fusion,
moving to ``segment_plane`` is open, but would change which plane RANSAC draws, so every depth
proposal number would need measuring again. Used by the reference capture (table under the object), the depth proposals of the estimators
(what stands off the table) and the fusion of unmasked reference depth (the table is cut away).
"""
from __future__ import annotations

import numpy as np


def fit_plane_ransac(points: np.ndarray, threshold: float, iterations: int = 300,
                     rng: np.random.Generator | None = None) -> tuple[np.ndarray, float, np.ndarray] | None:
    """The plane with the most points within ``threshold`` of it, refined by least squares.

    Args:
        points: ``(N, 3)`` meters.
        threshold: inlier distance (m).
        iterations: random 3-point hypotheses.

    Returns:
        ``(n, d, inliers)``: unit normal ``(3,)`` and offset with ``n . x + d = 0``, and the
        ``(N,)`` inlier mask; None with fewer than 3 points or no plane holding 3 of them.
    """
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < 3:
        return None
    rng = np.random.default_rng(0) if rng is None else rng
    idx = rng.integers(0, len(pts), (iterations, 3))
    a, b, c = pts[idx[:, 0]], pts[idx[:, 1]], pts[idx[:, 2]]
    normals = np.cross(b - a, c - a)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-12
    normals, a = normals[ok] / norms[ok, None], a[ok]
    offsets = -np.einsum("ij,ij->i", normals, a)
    best, best_count = 0, -1
    for s in range(0, len(normals), 64):  # score hypotheses in chunks: (chunk, N) distances
        counts = (np.abs(pts @ normals[s:s + 64].T + offsets[s:s + 64]) < threshold).sum(axis=0)
        k = int(np.argmax(counts))
        if counts[k] > best_count:
            best, best_count = s + k, int(counts[k])
    if best_count < 3:
        return None
    n, d = normals[best], float(offsets[best])
    for _ in range(3):  # refit on the inliers (least squares: smallest singular vector)
        inl = np.abs(pts @ n + d) < threshold
        sel = pts[inl]
        centroid = sel.mean(axis=0)
        n_new = np.linalg.svd(sel - centroid, full_matrices=False)[2][2]
        n = n_new if n_new @ n >= 0 else -n_new
        d = -float(n @ centroid)
    return n, d, np.abs(pts @ n + d) < threshold


def fit_support_plane(points: np.ndarray, *, tol: float = 0.008, iterations: int = 150,
                      min_inlier_fraction: float = 0.2, seed: int = 0) -> np.ndarray | None:
    """The plane most points lie on (fit_plane_ransac), as ``(4,)`` ``n . x + d = 0``
    oriented so the camera is on its positive side; None when it holds under
    ``min_inlier_fraction`` of the points (no table in view)."""
    if len(points) < 50:
        return None
    found = fit_plane_ransac(points, tol, iterations, rng=np.random.default_rng(seed))
    if found is None or found[2].sum() < min_inlier_fraction * len(points):
        return None
    plane = np.append(found[0], found[1])
    return -plane if plane[3] < 0 else plane  # camera (origin) side positive: d > 0

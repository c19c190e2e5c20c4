"""Sampling of viewing directions and rotations: icospheres, pose codebook grids, FPS.

The known-model codebook uses :func:`viewpoint_rotation_grid` (2562 views x 36 in-plane angles
= 92232 rotations); model-free reference subsets use :func:`farthest_point_sampling` and the
refiner picks references with :func:`nearest_viewpoints`.

All directions are unit vectors in object coordinates pointing from the object center toward
the camera (the same ``view_dir`` as :func:`~sixd_pose_ros.geometry.rotations.look_at_rotation`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence, Union

import numpy as np

from .rotations import inplane_rotation, look_at_rotation

__all__ = [
    "icosphere_vertices",
    "inplane_angles",
    "viewpoint_rotation_grid",
    "grid_index",
    "split_grid_index",
    "farthest_point_sampling",
    "nearest_viewpoints",
]


@lru_cache(maxsize=8)
def _icosphere_vertices_cached(subdivisions: int) -> np.ndarray:
    import trimesh  # imported lazily: only this function needs it

    v = np.asarray(trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0).vertices,
                   dtype=np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    v.setflags(write=False)
    return v


def icosphere_vertices(subdivisions: int) -> np.ndarray:
    """Vertices of a subdivided icosahedron: near-uniform directions on the unit sphere.

    Level ``k`` has ``10 * 4**k + 2`` vertices (12, 42, 162, 642, 2562 for k = 0..4). Uses
    ``trimesh.creation.icosphere``; the order is deterministic (trimesh's construction).

    Args:
        subdivisions: subdivision level ``k >= 0``.

    Returns:
        Unit vectors, shape ``(10 * 4**k + 2, 3)``, float64 (a fresh, writable copy).
    """
    if int(subdivisions) != subdivisions or subdivisions < 0:
        raise ValueError(f"subdivisions must be a non-negative integer, got {subdivisions}")
    return _icosphere_vertices_cached(int(subdivisions)).copy()


def inplane_angles(n: int) -> np.ndarray:
    """``n`` evenly spaced in-plane angles ``2 pi k / n``, ``k = 0..n-1`` (2 pi excluded).

    Args:
        n: number of angles, ``n >= 1``.

    Returns:
        Angles in radians, shape ``(n,)``, float64.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return 2.0 * np.pi * np.arange(n, dtype=np.float64) / n


def viewpoint_rotation_grid(
    subdivisions: int = 4,
    n_inplane: int = 36,
    up: Sequence[float] = (0.0, 0.0, 1.0),
    return_layout: bool = False,
) -> Union[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Grid of object-to-camera rotations: icosphere viewpoints x in-plane angles.

    For each view direction ``v`` (icosphere vertex) and in-plane angle ``a``:
    ``R_m2c = inplane_rotation(a) @ look_at_rotation(v, up)``, i.e. the in-plane rotation is
    applied in the camera frame (it spins the image about the principal point).

    Index layout: ``index = view_idx * n_inplane + inplane_idx`` (views outer, angles inner);
    see :func:`grid_index` / :func:`split_grid_index`. The default is the codebook grid,
    2562 x 36 = 92232 rotations, all distinct.

    Args:
        subdivisions: icosphere level (see :func:`icosphere_vertices`).
        n_inplane: number of in-plane angles (see :func:`inplane_angles`).
        up: object "up" direction for :func:`look_at_rotation`.
        return_layout: also return the view directions and the angles.

    Returns:
        ``R`` of shape ``(N * n_inplane, 3, 3)``, float32; with ``return_layout`` the tuple
        ``(R, views (N, 3) float64, angles (n_inplane,) float64)``.
    """
    views = icosphere_vertices(subdivisions)
    angles = inplane_angles(n_inplane)
    R_view = look_at_rotation(views, up)  # (N, 3, 3)
    R_inp = inplane_rotation(angles)  # (A, 3, 3)
    R = (R_inp[None, :, :, :] @ R_view[:, None, :, :]).reshape(-1, 3, 3).astype(np.float32)
    if return_layout:
        return R, views, angles
    return R


def grid_index(view_idx: Union[int, np.ndarray], inplane_idx: Union[int, np.ndarray],
               n_inplane: int = 36) -> Union[int, np.ndarray]:
    """Flat index in :func:`viewpoint_rotation_grid` of ``(view_idx, inplane_idx)``."""
    return view_idx * n_inplane + inplane_idx


def split_grid_index(index: Union[int, np.ndarray],
                     n_inplane: int = 36) -> tuple[Union[int, np.ndarray], Union[int, np.ndarray]]:
    """Inverse of :func:`grid_index`: returns ``(view_idx, inplane_idx)``."""
    return np.divmod(index, n_inplane)


def _unit(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    n = np.linalg.norm(d, axis=-1, keepdims=True)
    if np.any(n == 0.0):
        raise ValueError("directions must be non-zero")
    return d / n


def farthest_point_sampling(directions: np.ndarray, k: int, start: int = 0) -> np.ndarray:
    """Greedy farthest-point sampling of unit vectors by angular distance.

    Starts from ``directions[start]``; each step adds the direction whose angle to the nearest
    already-selected direction is largest (first index on ties), so the result is deterministic.
    Written by hand (a few lines); the angle is monotone in the dot product, so we work with
    ``max dot`` instead of ``min angle`` and skip the arccos.

    Args:
        directions: shape ``(N, 3)``; normalized here.
        k: number of samples, ``1 <= k <= N``.
        start: index of the first sample.

    Returns:
        Indices into ``directions``, shape ``(k,)``, int64, all distinct.
    """
    d = _unit(directions)
    n = d.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if not 0 <= start < n:
        raise ValueError(f"start must be in [0, {n}), got {start}")
    selected = np.empty(k, dtype=np.int64)
    selected[0] = start
    max_dot = d @ d[start]  # cos of the angle to the nearest selected direction
    max_dot[start] = np.inf
    for i in range(1, k):
        nxt = int(np.argmin(max_dot))
        selected[i] = nxt
        max_dot = np.maximum(max_dot, d @ d[nxt])
        max_dot[nxt] = np.inf  # never pick twice, even with duplicated directions
    return selected


def nearest_viewpoints(directions: np.ndarray, query_dir: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` directions closest in angle to each query direction.

    Args:
        directions: reference directions, shape ``(N, 3)``; normalized here.
        query_dir: shape ``(3,)`` or ``(M, 3)``; normalized here.
        k: number of neighbours, ``1 <= k <= N``.

    Returns:
        Indices sorted by increasing angle (stable: lower index first on ties), shape ``(k,)``
        for a single query or ``(M, k)``, int64.
    """
    d = _unit(directions)
    q = _unit(query_dir)
    if not 1 <= k <= d.shape[0]:
        raise ValueError(f"k must be in [1, {d.shape[0]}], got {k}")
    dots = q @ d.T  # (M, N) or (N,)
    return np.argsort(-dots, axis=-1, kind="stable")[..., :k].astype(np.int64)

"""Pose-error functions (ADD, ADD-S, 2D projection, rotation, translation).

Small pure functions in the spirit of the BOP toolkit's ``pose_error`` module (own code). Poses
are object-to-camera ``(R_m2c (3, 3), t_m2c (3,) or (3, 1), meters)``; model points are in the
object frame, meters, shape ``(N, 3)``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .pinhole import project_model_points
from .rotations import geodesic_angle

__all__ = [
    "transform_points",
    "add_error",
    "adds_error",
    "projection_error_2d",
    "rotation_error_deg",
    "translation_error",
]


def _t(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    return t.reshape(3) if t.size == 3 else t


def transform_points(R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``X' = R @ X + t`` to points ``(N, 3)``; ``t`` is ``(3,)`` or ``(3, 1)``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return pts @ np.asarray(R, dtype=np.float64).T + _t(t)


def add_error(R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray,
              points: np.ndarray) -> float:
    """ADD: mean distance between model points under the estimated and the true pose.

    Args:
        R_est, t_est: estimated pose, ``(3, 3)`` and ``(3,)`` (meters).
        R_gt, t_gt: ground-truth pose, same shapes.
        points: model points (object frame, meters), shape ``(N, 3)``.

    Returns:
        Mean distance in meters.
    """
    d = transform_points(R_est, t_est, points) - transform_points(R_gt, t_gt, points)
    return float(np.linalg.norm(d, axis=1).mean())


def adds_error(R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray,
               points: np.ndarray) -> float:
    """ADD-S: mean distance from each true-pose point to the closest estimated-pose point.

    For symmetric objects, where poses that look the same should not be penalized. The nearest
    neighbours come from a ``scipy.spatial.cKDTree`` over the estimated-pose points.

    Args:
        R_est, t_est: estimated pose, ``(3, 3)`` and ``(3,)`` (meters).
        R_gt, t_gt: ground-truth pose, same shapes.
        points: model points (object frame, meters), shape ``(N, 3)``.

    Returns:
        Mean closest-point distance in meters (<= :func:`add_error`).
    """
    p_est = transform_points(R_est, t_est, points)
    p_gt = transform_points(R_gt, t_gt, points)
    dist, _ = cKDTree(p_est).query(p_gt, k=1)
    return float(np.mean(dist))


def projection_error_2d(R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray,
                        t_gt: np.ndarray, points: np.ndarray, K: np.ndarray) -> float:
    """Mean image distance between model points projected with the two poses (pixels).

    Args:
        R_est, t_est: estimated pose, ``(3, 3)`` and ``(3,)`` (meters).
        R_gt, t_gt: ground-truth pose, same shapes.
        points: model points (object frame, meters), shape ``(N, 3)``.
        K: intrinsics, shape ``(3, 3)``.

    Returns:
        Mean distance in pixels.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    uv_est = project_model_points(pts, R_est, _t(t_est), K)
    uv_gt = project_model_points(pts, R_gt, _t(t_gt), K)
    return float(np.linalg.norm(uv_est - uv_gt, axis=-1).mean())


def rotation_error_deg(R_est: np.ndarray, R_gt: np.ndarray) -> np.ndarray | float:
    """Angle of the rotation taking ``R_gt`` to ``R_est``, in degrees, ``[0, 180]``.

    Args:
        R_est: shape ``(..., 3, 3)``.
        R_gt: shape ``(..., 3, 3)`` (broadcast).

    Returns:
        Degrees: a float for single matrices, else an array of shape ``(...)``.
    """
    e = np.degrees(geodesic_angle(R_est, R_gt))
    return float(e) if np.ndim(e) == 0 else e


def translation_error(t_est: np.ndarray, t_gt: np.ndarray) -> np.ndarray | float:
    """Euclidean distance between translations (meters).

    Args:
        t_est: shape ``(..., 3)`` (or ``(3, 1)``).
        t_gt: same shape (broadcast).

    Returns:
        Meters: a float for single translations, else an array of shape ``(...)``.
    """
    a = np.asarray(t_est, dtype=np.float64)
    b = np.asarray(t_gt, dtype=np.float64)
    if a.shape == (3, 1):
        a = a[:, 0]
    if b.shape == (3, 1):
        b = b[:, 0]
    e = np.linalg.norm(a - b, axis=-1)
    return float(e) if np.ndim(e) == 0 else e

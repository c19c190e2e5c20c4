"""Rotations: conversions, distances, look-at and random sampling on SO(3).

Conventions used by the whole package:

- Rotation matrices act on column vectors: ``X_cam = R_m2c @ X_obj + t_m2c``.
- Quaternions are in ROS order ``(x, y, z, w)`` (scalar last), canonical sign ``w >= 0``.
- The camera frame is the OpenCV/ROS optical frame: x right, y down, z forward.
- Every function accepts a single item or a batch with leading dimensions, e.g. ``(..., 3, 3)``.

The numpy functions use :class:`scipy.spatial.transform.Rotation` where it fits (it is
scalar-last, i.e. the same ``xyzw`` order). scipy only takes flat batches, so we reshape around
it. The ``*_torch`` functions are written by hand on tensors so that they run on any device and
carry gradients; torch is imported only when they are called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
from scipy.spatial.transform import Rotation

if TYPE_CHECKING:  # torch is imported lazily: the numpy functions must not pay for it
    import torch

ArrayLike = Union[np.ndarray, Sequence[float], float]

__all__ = [
    "quat_xyzw_from_matrix",
    "matrix_from_quat_xyzw",
    "matrix_from_axis_angle",
    "axis_angle_from_matrix",
    "geodesic_angle",
    "inplane_rotation",
    "look_at_rotation",
    "random_rotations",
    "quat_xyzw_from_matrix_torch",
    "matrix_from_quat_xyzw_torch",
    "geodesic_angle_torch",
]


def _canonical_quat_sign(q: np.ndarray) -> np.ndarray:
    """Flip quaternions with ``w < 0`` so that ``q`` and ``-q`` (same rotation) map to one value."""
    return np.where(q[..., 3:4] < 0.0, -q, q)


def quat_xyzw_from_matrix(R: np.ndarray) -> np.ndarray:
    """Convert rotation matrices to unit quaternions in ROS order.

    Uses scipy's ``Rotation.from_matrix`` (scalar-last, which is ROS order); slightly
    non-orthonormal input is projected to the nearest rotation by scipy.

    Args:
        R: rotation matrices, shape ``(..., 3, 3)``.

    Returns:
        Quaternions ``(x, y, z, w)`` with ``w >= 0``, shape ``(..., 4)``, float64.
    """
    R = np.asarray(R, dtype=np.float64)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"expected (..., 3, 3) rotation matrices, got shape {R.shape}")
    batch = R.shape[:-2]
    q = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat()
    return _canonical_quat_sign(q).reshape(*batch, 4)


def matrix_from_quat_xyzw(q: np.ndarray) -> np.ndarray:
    """Convert quaternions in ROS order ``(x, y, z, w)`` to rotation matrices.

    The quaternions are normalized first (scipy does it), so any non-zero 4-vector is accepted.

    Args:
        q: quaternions, shape ``(..., 4)``.

    Returns:
        Rotation matrices, shape ``(..., 3, 3)``, float64.
    """
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"expected (..., 4) quaternions, got shape {q.shape}")
    batch = q.shape[:-1]
    R = Rotation.from_quat(q.reshape(-1, 4)).as_matrix()
    return R.reshape(*batch, 3, 3)


def matrix_from_axis_angle(axis: ArrayLike, angle: ArrayLike) -> np.ndarray:
    """Rotation by ``angle`` radians about ``axis`` (right-hand rule).

    Args:
        axis: rotation axes, shape ``(..., 3)``; normalized here (need not be unit length).
        angle: angles in radians, shape ``(...)``; broadcast against ``axis[..., 0]``.

    Returns:
        Rotation matrices, shape ``broadcast(...) + (3, 3)``, float64.
    """
    axis = np.asarray(axis, dtype=np.float64)
    angle = np.asarray(angle, dtype=np.float64)
    norm = np.linalg.norm(axis, axis=-1, keepdims=True)
    if np.any(norm == 0.0):
        raise ValueError("rotation axis must be non-zero")
    rotvec = axis / norm * angle[..., None]
    batch = rotvec.shape[:-1]
    R = Rotation.from_rotvec(rotvec.reshape(-1, 3)).as_matrix()
    return R.reshape(*batch, 3, 3)


def axis_angle_from_matrix(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis and angle of rotation matrices.

    Args:
        R: rotation matrices, shape ``(..., 3, 3)``.

    Returns:
        ``(axis, angle)``: unit axes ``(..., 3)`` and angles in radians ``(...)`` in ``[0, pi]``.
        For the identity (angle 0) the axis is undefined; ``(0, 0, 1)`` is returned.
    """
    R = np.asarray(R, dtype=np.float64)
    batch = R.shape[:-2]
    rotvec = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_rotvec().reshape(*batch, 3)
    angle = np.linalg.norm(rotvec, axis=-1)
    safe = angle > 1e-12
    axis = np.where(safe[..., None], rotvec / np.where(safe, angle, 1.0)[..., None], 0.0)
    axis = np.where(safe[..., None], axis, np.array([0.0, 0.0, 1.0]))
    return axis, angle


def geodesic_angle(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Angle of the relative rotation ``R1^T R2`` (geodesic distance on SO(3)), in radians.

    Written by hand rather than ``arccos((trace - 1) / 2)``: arccos loses precision near 0 and pi
    and needs clipping. We use ``atan2(|vee(skew part)|, (trace - 1) / 2)``, which is accurate over
    the whole range ``[0, pi]`` and never leaves the domain (no clipping needed).

    Args:
        R1: rotation matrices, shape ``(..., 3, 3)``.
        R2: rotation matrices, shape ``(..., 3, 3)``; broadcast against ``R1``.

    Returns:
        Angles in radians, shape ``broadcast(...)``, in ``[0, pi]``; symmetric in its arguments.
    """
    R1 = np.asarray(R1, dtype=np.float64)
    R2 = np.asarray(R2, dtype=np.float64)
    M = np.swapaxes(R1, -1, -2) @ R2
    cos2 = M[..., 0, 0] + M[..., 1, 1] + M[..., 2, 2] - 1.0  # 2 cos(theta)
    sin_vec = np.stack(
        [M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]],
        axis=-1,
    )  # 2 sin(theta) * axis
    return np.arctan2(np.linalg.norm(sin_vec, axis=-1), cos2)


def inplane_rotation(angle: ArrayLike) -> np.ndarray:
    """Rotation about the camera optical axis (z) by ``angle`` radians.

    Left-multiplying an object-to-camera rotation by it spins the image of the object about the
    principal point (clockwise on screen for positive angles since y points down).

    Args:
        angle: angles in radians, shape ``(...)``.

    Returns:
        Rotation matrices, shape ``(..., 3, 3)``, float64.
    """
    angle = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    zero, one = np.zeros_like(angle), np.ones_like(angle)
    rows = [
        np.stack([c, -s, zero], axis=-1),
        np.stack([s, c, zero], axis=-1),
        np.stack([zero, zero, one], axis=-1),
    ]
    return np.stack(rows, axis=-2)


def look_at_rotation(view_dir: ArrayLike, up: ArrayLike = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Object-to-camera rotation of a camera on the ray ``view_dir`` that looks at the object.

    The camera sits at ``d * view_dir`` (object coordinates) and looks at the object origin, so
    its optical axis ``z_cam`` is ``-view_dir``. Its image "up" (``-y_cam``) is the projection of
    ``up`` on the image plane, i.e. as close to ``up`` as possible. With ``t_m2c = (0, 0, d)`` the
    object origin is on the optical axis and projects to the principal point.

    Built by hand (camera axes as rows of ``R_m2c``) because the "up" handling is specific: when
    ``view_dir`` is (anti-)parallel to ``up`` the image-up direction is undefined, and we use the
    object coordinate axis least aligned with ``view_dir`` instead (first of x, y, z on ties), so
    the result is always a valid rotation without NaNs.

    Args:
        view_dir: directions from the object center toward the camera, in object coordinates,
            shape ``(..., 3)``; normalized here.
        up: object "up" direction, shape ``(3,)`` or ``(..., 3)`` (broadcast).

    Returns:
        ``R_m2c``, shape ``(..., 3, 3)``, float64; rows are the camera x, y, z axes expressed in
        object coordinates.
    """
    v = np.asarray(view_dir, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    v, up = np.broadcast_arrays(v, up)
    vnorm = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(vnorm == 0.0):
        raise ValueError("view_dir must be non-zero")
    z = -v / vnorm
    # Image up (-y) = component of `up` orthogonal to the optical axis.
    up_perp = up - np.sum(up * z, axis=-1, keepdims=True) * z
    n = np.linalg.norm(up_perp, axis=-1, keepdims=True)
    degenerate = n[..., 0] < 1e-6 * np.maximum(np.linalg.norm(up, axis=-1), 1e-300)
    if np.any(degenerate):
        # Fallback up: the object axis least aligned with the optical axis.
        alt_idx = np.argmin(np.abs(z), axis=-1)
        alt = np.eye(3)[alt_idx]
        alt_perp = alt - np.sum(alt * z, axis=-1, keepdims=True) * z
        up_perp = np.where(degenerate[..., None], alt_perp, up_perp)
        n = np.linalg.norm(up_perp, axis=-1, keepdims=True)
    y = -up_perp / n
    x = np.cross(y, z)  # right-handed: x = y cross z
    return np.stack([x, y, z], axis=-2)


def random_rotations(n: int, rng: Optional[Union[np.random.Generator, int]] = None) -> np.ndarray:
    """Rotations drawn uniformly (Haar measure) on SO(3).

    Hand-written instead of ``Rotation.random`` because scipy renamed its seeding argument across
    versions: a normalized 4D standard Gaussian is uniform on S^3, hence uniform on SO(3).

    Args:
        n: number of rotations.
        rng: a ``numpy.random.Generator``, a seed, or ``None`` (fresh entropy).

    Returns:
        Rotation matrices, shape ``(n, 3, 3)``, float64.
    """
    rng = np.random.default_rng(rng)
    q = rng.standard_normal((n, 4))
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    # A zero vector has probability 0, but guard anyway.
    q = np.where(norm > 1e-12, q / np.maximum(norm, 1e-12), np.array([0.0, 0.0, 0.0, 1.0]))
    return matrix_from_quat_xyzw(q)


# --------------------------------------------------------------------------------------------
# torch versions (hand-written: any device, autograd)
# --------------------------------------------------------------------------------------------


def matrix_from_quat_xyzw_torch(q: torch.Tensor) -> torch.Tensor:
    """Convert quaternions ``(x, y, z, w)`` to rotation matrices (differentiable).

    Args:
        q: quaternions, shape ``(..., 4)``; normalized here.

    Returns:
        Rotation matrices, shape ``(..., 3, 3)``, same dtype/device as ``q``.
    """
    import torch

    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    R = torch.stack(
        [
            1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
            2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
            2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
        ],
        dim=-1,
    )
    return R.reshape(*q.shape[:-1], 3, 3)


def quat_xyzw_from_matrix_torch(R: torch.Tensor) -> torch.Tensor:
    """Convert rotation matrices to quaternions ``(x, y, z, w)`` with ``w >= 0``.

    Hand-written Shepperd-style conversion: four candidate quaternions are computed, each
    accurate when its largest component is large, and per item the candidate with the largest
    denominator is kept. This avoids the division by ~0 of the plain ``w = sqrt(1 + trace) / 2``
    formula near 180 degree rotations, and is differentiable almost everywhere.

    Args:
        R: rotation matrices, shape ``(..., 3, 3)``.

    Returns:
        Unit quaternions, shape ``(..., 4)``, same dtype/device as ``R``.
    """
    import torch

    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 * (component)^2 for w, x, y, z.
    sq = torch.stack(
        [
            1 + m00 + m11 + m22,
            1 + m00 - m11 - m22,
            1 - m00 + m11 - m22,
            1 - m00 - m11 + m22,
        ],
        dim=-1,
    )
    # Candidate quaternions (x, y, z, w), each scaled by 4 * (its pivot component).
    cand = torch.stack(
        [
            torch.stack([m21 - m12, m02 - m20, m10 - m01, sq[..., 0]], dim=-1),
            torch.stack([sq[..., 1], m01 + m10, m02 + m20, m21 - m12], dim=-1),
            torch.stack([m01 + m10, sq[..., 2], m12 + m21, m02 - m20], dim=-1),
            torch.stack([m02 + m20, m12 + m21, sq[..., 3], m10 - m01], dim=-1),
        ],
        dim=-2,
    )  # (..., 4 candidates, 4)
    # 4 * |pivot| = 2 * sqrt(sq); dividing turns each candidate into the unit quaternion.
    denom = 2.0 * torch.sqrt(sq.clamp_min(1e-12))
    cand = cand / denom[..., None]
    best = sq.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return torch.where(q[..., 3:4] < 0, -q, q)


def geodesic_angle_torch(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Angle of ``R1^T R2`` in radians, on tensors (see :func:`geodesic_angle`).

    Uses ``atan2(|vee(skew)|, (trace - 1) / 2)`` like the numpy version; the norm is computed as
    ``sqrt(s.clamp_min(eps))`` so that the gradient stays finite at zero angle (the bias is
    below 1e-15 rad in float64 and 1e-7 rad in float32, and only affects near-identical inputs).

    Args:
        R1: rotation matrices, shape ``(..., 3, 3)``.
        R2: rotation matrices, shape ``(..., 3, 3)``; broadcast against ``R1``.

    Returns:
        Angles in radians, shape ``broadcast(...)``.
    """
    import torch

    M = R1.transpose(-1, -2) @ R2
    cos2 = M[..., 0, 0] + M[..., 1, 1] + M[..., 2, 2] - 1.0
    sin_vec = torch.stack(
        [M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]],
        dim=-1,
    )
    eps = 1e-30 if M.dtype == torch.float64 else 1e-14
    sin2 = torch.sqrt((sin_vec * sin_vec).sum(-1).clamp_min(eps))
    return torch.atan2(sin2, cos2)

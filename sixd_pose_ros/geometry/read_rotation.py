"""Rotations read from files: accept the rounding real datasets store, repair it, refuse the rest.

Why this exists: real BOP ground truth is not exactly orthonormal. The Linemod-derived sets
(LM, LM-O) store ``cam_R_m2c`` matrices that deviate from orthonormal by up to about 1e-2, and
hand-written pose files round to a few digits. A strict check (1e-3) made ``sixd-pose eval``
stop on such a set after building every object; no check at all would feed sheared matrices
into ADD, the rotation error and the renderer. So every reader of ground truth or posed images
goes through :func:`checked_rotation`: within :data:`READ_ROTATION_TOLERANCE` the matrix is
replaced by the nearest rotation (SVD), beyond it (a scale, a shear, a mirror, a typo) it is
refused with :class:`NotARotationError`, whose message the caller prefixes with where the
matrix came from.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "READ_ROTATION_TOLERANCE",
    "NotARotationError",
    "checked_rotation",
    "nearest_rotation",
    "orthonormality_error",
]

#: Largest ``max |R R^T - I|`` accepted from a file (twice what real BOP sets store).
READ_ROTATION_TOLERANCE = 2e-2


class NotARotationError(ValueError):
    """A matrix read from a file is not a rotation, not even up to rounding.

    The message is a phrase (``"is not orthonormal (...)"``) for the caller to prefix with
    the file and entry, and to follow with how to fix it.
    """


def orthonormality_error(R: np.ndarray) -> float:
    """``max |R R^T - I|``: how far a ``(3, 3)`` matrix is from orthonormal."""
    R = np.asarray(R, dtype=np.float64)
    return float(np.abs(R @ R.T - np.eye(3)).max())


def nearest_rotation(R: np.ndarray) -> np.ndarray:
    """The rotation nearest to ``R`` in the Frobenius norm (``U V^T`` of its SVD).

    For a matrix with ``det > 0`` this is a proper rotation; callers check the sign first.
    """
    u, _, vt = np.linalg.svd(np.asarray(R, dtype=np.float64))
    return u @ vt


def checked_rotation(value: Any, tolerance: float = READ_ROTATION_TOLERANCE) -> np.ndarray:
    """A ``(3, 3)`` rotation from 9 numbers (nested or row-major), re-orthonormalized.

    Raises:
        NotARotationError: not 9 finite numbers, a reflection (det < 0), or further than
            ``tolerance`` from orthonormal.
    """
    try:
        R = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise NotARotationError(f"is not numeric ({exc})") from exc
    if R.size != 9:
        raise NotARotationError(f"must be 9 numbers (3x3, row-major), got {R.size}")
    R = R.reshape(3, 3)
    if not np.all(np.isfinite(R)):
        raise NotARotationError("has non-finite entries")
    err = orthonormality_error(R)
    if err > tolerance:
        raise NotARotationError(f"is not orthonormal (max |R R^T - I| = {err:.3g} > {tolerance:g})")
    if np.linalg.det(R) < 0:
        raise NotARotationError("is a reflection (det -1)")
    return nearest_rotation(R)

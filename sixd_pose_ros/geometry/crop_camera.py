"""The object-centred crop camera shared by reference views, query crops and the refiner.

A crop of an object is taken by a *virtual camera* at the real camera's optical centre, turned
to look at the object centre, with a focal length at which the object's bounding sphere exactly
fills the S x S crop. Reference views (objects/references.py), the detector's and refiner's query
crops (models/refiner.py) and the training samples all use this one definition, so a pose
expressed in one crop means the same thing in every other.

Rotation: a look-at that keeps the image upright (rows ``x' = normalize(e_y x z')``,
``y' = z' x x'``, ``z' = p / |p|``: a yaw then a pitch, no roll). Focal length:
``f' = (S/2) / tan(asin(r/d)) = (S/2) sqrt(d^2 - r^2) / r``; principal point at the crop centre
``((S-1)/2, (S-1)/2)``. Pixels map by the homography ``H = K' R_v K^-1``.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import numpy as np

from sixd_pose_ros.errors import SixdPoseError

__all__ = ["DegenerateReferenceError", "VirtualCamera", "crop_focal", "object_centred_camera"]


class DegenerateReferenceError(SixdPoseError, ValueError):
    """An object-centred crop cannot be built: the object centre is behind the camera, or the
    camera is inside the object's bounding sphere. A ``ValueError`` too, for numeric callers."""


class VirtualCamera(NamedTuple):
    """The object-centred camera of one view (see the module docstring).

    Attributes:
        R_v: ``(3, 3)`` rotation from the original camera frame to the virtual one.
        K: ``(3, 3)`` intrinsics of the ``S x S`` crop: ``f' = (S/2) sqrt(d^2 - r^2) / r`` on
            both axes, principal point ``((S-1)/2, (S-1)/2)``.
        H: ``(3, 3)`` homography original pixel -> crop pixel, ``K' R_v K^-1``.
        distance: ``d``, distance from the optical centre to the object centre (input units).
    """

    R_v: np.ndarray
    K: np.ndarray
    H: np.ndarray
    distance: float


def crop_focal(distance: Union[float, np.ndarray], radius: float, size: int) -> np.ndarray:
    """Focal length (pixels) at which a sphere of ``radius`` at ``distance`` fills a crop of
    ``size`` pixels: ``(size / 2) / tan(asin(radius / distance))``. Same units for both lengths;
    requires ``distance > radius``."""
    d = np.asarray(distance, dtype=np.float64)
    return 0.5 * size * np.sqrt(d * d - radius * radius) / radius


def _keep_up_look_at(direction: np.ndarray) -> np.ndarray:
    """Rotation (camera -> virtual camera) whose optical axis is ``direction`` (camera frame,
    ``z > 0``) and whose x axis stays in the camera's x-z plane (no roll)."""
    z = direction / np.linalg.norm(direction)
    x = np.array([z[2], 0.0, -z[0]])  # e_y x z
    x /= np.linalg.norm(x)  # z[2] > 0 is checked by the caller, so |x| > 0
    y = np.cross(z, x)
    return np.stack([x, y, z])


def object_centred_camera(K: np.ndarray, center_cam: np.ndarray, radius: float,
                          size: int = 128) -> VirtualCamera:
    """Virtual camera that looks at ``center_cam`` and whose crop is filled by the sphere.

    Also what a later stage uses to crop a *query* image around a hypothesized object centre, so
    that query and reference crops share one geometry.

    Args:
        K: ``(3, 3)`` intrinsics of the original image (``fx != fy``, any principal point).
        center_cam: ``(3,)`` object centre in the original camera frame (e.g. meters).
        radius: bounding-sphere radius, same unit as ``center_cam``, > 0.
        size: crop side ``S`` in pixels.

    Returns:
        :class:`VirtualCamera`.

    Raises:
        DegenerateReferenceError: the camera is inside the sphere (``d <= radius``) or the centre
            is not in front of the camera (``z <= 0``).
    """
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    p = np.asarray(center_cam, dtype=np.float64).reshape(3)
    radius = float(radius)
    if not np.all(np.isfinite(p)) or not np.isfinite(radius) or radius <= 0:
        raise DegenerateReferenceError(
            f"degenerate reference: object centre {p.tolist()} and radius {radius} must be "
            "finite, with radius > 0")
    if int(size) != size or size < 2:
        raise ValueError(f"crop size must be an integer >= 2, got {size}")
    d = float(np.linalg.norm(p))
    if d <= radius:
        raise DegenerateReferenceError(
            f"degenerate reference: the camera is inside the object's bounding sphere "
            f"(centre distance {d:.4g} <= radius {radius:.4g}); drop this view or check its pose "
            "(units: meters) and the object's normalization")
    if p[2] <= 0:
        raise DegenerateReferenceError(
            f"degenerate reference: the object centre is behind the camera (z = {p[2]:.4g}); "
            "drop this view or check that its pose is object-to-camera (not camera-to-object)")
    R_v = _keep_up_look_at(p)
    f = float(crop_focal(d, radius, int(size)))
    c = 0.5 * (int(size) - 1)
    K_new = np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
    H = K_new @ R_v @ np.linalg.inv(K)
    return VirtualCamera(R_v=R_v, K=K_new, H=H / H[2, 2], distance=d)

"""One BOP ``scene_gt.json`` entry -> a metric ground-truth pose, or the reason it is unusable.

Why one function: the BOP scene reader, a bag's ``scene_gt.json`` and evaluation's up-front
check (which looks at the ground truth before any object is built, so that a bad dataset
fails in seconds, not after an hour of building) must agree on what a usable entry is.
Rotations within :data:`~sixd_pose_ros.geometry.read_rotation.READ_ROTATION_TOLERANCE` of
orthonormal are accepted and re-orthonormalized, as real BOP sets need.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sixd_pose_ros.errors import DatasetError
from sixd_pose_ros.geometry.read_rotation import NotARotationError, checked_rotation

__all__ = ["BadGroundTruthError", "parse_gt_entry"]

_FIX = "fix or drop this entry of scene_gt.json (cam_R_m2c row-major, cam_t_m2c in mm, obj_id)"


class BadGroundTruthError(DatasetError):
    """One ground-truth entry is unusable; readers in tolerant mode skip it and list it."""


def parse_gt_entry(entry: Any, where: str) -> tuple[int, np.ndarray, np.ndarray]:
    """``(obj_id, R_m2c (3, 3), t_m2c (3,) meters)`` of one BOP ground-truth entry.

    Args:
        entry: ``{"obj_id", "cam_R_m2c", "cam_t_m2c"}`` as in ``scene_gt.json`` (t in mm).
        where: which file and entry, for the message ("scene_gt.json, image 3, instance 1").

    Raises:
        BadGroundTruthError: a key is missing, the translation is not 3 finite numbers, or the
            rotation is not one (see :func:`checked_rotation`).
    """
    if not isinstance(entry, Mapping):
        raise BadGroundTruthError(f"{where}: expected an object with obj_id, cam_R_m2c and cam_t_m2c, "
                                  f"got {type(entry).__name__}; {_FIX}")
    missing = [k for k in ("obj_id", "cam_R_m2c", "cam_t_m2c") if k not in entry]
    if missing:
        raise BadGroundTruthError(f"{where}: missing {', '.join(missing)}; {_FIX}")
    try:
        obj_id = int(entry["obj_id"])
        t = np.asarray(entry["cam_t_m2c"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise BadGroundTruthError(f"{where}: obj_id or cam_t_m2c is not numeric ({exc}); {_FIX}") from exc
    if t.size != 3 or not np.all(np.isfinite(t)):
        raise BadGroundTruthError(f"{where}: cam_t_m2c must be 3 finite numbers (mm), got {t.tolist()}; {_FIX}")
    try:
        R = checked_rotation(entry["cam_R_m2c"])
    except NotARotationError as exc:
        raise BadGroundTruthError(f"{where}: cam_R_m2c {exc}; {_FIX}") from exc
    return obj_id, R, t / 1000.0

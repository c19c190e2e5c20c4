"""Translation from depth without a mesh: the object's centre slid along its viewing ray to sit
behind the observed surface.

Why: a model-free object without a fused surface has nothing to align to the depth; the median
depth around its detection is the evidence. For references in an arbitrary unit the depth also
gives the scale (how big the object looks at the observed depth); the rotation does not depend
on it.
"""
from __future__ import annotations

import logging

import numpy as np

from sixd_pose_ros.pipeline.types import Frame

__all__ = ["slide_to_depth", "ScaleWarning"]

log = logging.getLogger(__name__)


def slide_to_depth(frame: Frame, det, center: np.ndarray, scale: float, metric: bool,
                   surface_to_center_radii: float) -> tuple[np.ndarray, float] | None:
    """``(centre in metres, metres per database unit)``, or None without enough depth in the
    central half of the detection box. ``surface_to_center_radii``: the centre's depth behind
    the median visible surface, in bounding radii (``scale``)."""
    depth = frame.depth
    cx, cy = det.center_xy
    half = det.box_size / 4
    x0, x1 = int(max(0, cx - half)), int(min(depth.shape[1], cx + half + 1))
    y0, y1 = int(max(0, cy - half)), int(min(depth.shape[0], cy + half + 1))
    patch = depth[y0:y1, x0:x1]
    valid = patch[patch > 0]
    if valid.size < 10 or center[2] <= 0:
        return None
    surface = float(np.median(valid))
    units_to_m = 1.0 if metric else surface / float(center[2])  # first guess: centre ~ surface
    center_z = surface + surface_to_center_radii * scale * units_to_m
    if not metric:
        units_to_m = center_z / float(center[2])
    return center * (center_z / float(center[2])), units_to_m


class ScaleWarning:
    """Once per object: a pose without metric scale says so."""

    def __init__(self) -> None:
        self._warned: set[str] = set()

    def __call__(self, name: str, metric: bool) -> None:
        if not metric and name not in self._warned:
            self._warned.add(name)
            log.warning("%s: the references have no metric scale and the frame has no usable depth: "
                        "translation is up to scale (ObjectPose.metric=False); give depth, or rebuild "
                        "the object with depth images or poses in metres", name)

"""The debug image: detection boxes, names, scores and object axes drawn over the colour image."""
from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np

from sixd_pose_ros.pipeline.types import ObjectPose

__all__ = ["draw_overlay", "object_color"]

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def object_color(name: str) -> tuple[int, int, int]:
    """A stable RGB colour per object name (same in the debug image and the markers)."""
    return _PALETTE[sum(name.encode()) % len(_PALETTE)]


def _project(K: np.ndarray, pts: np.ndarray) -> np.ndarray | None:
    if np.any(pts[:, 2] <= 1e-6):
        return None
    uv = (K @ (pts / pts[:, 2:3]).T).T[:, :2]
    return uv if np.isfinite(uv).all() else None


def draw_overlay(rgb: np.ndarray, K: np.ndarray, poses: Sequence[ObjectPose],
                 axis_lengths: Mapping[str, float] | None = None) -> np.ndarray:
    """A copy of ``rgb`` (H, W, 3 uint8 RGB) with each pose's box, label and axes (x red, y green,
    z blue; length from ``axis_lengths[name]`` in meters, 0.05 by default)."""
    out = np.ascontiguousarray(rgb.copy())
    h, w = out.shape[:2]
    lim = 4 * max(h, w)
    thick = max(1, round(max(h, w) / 320))
    for pose in poses:
        color = object_color(pose.name)
        box = np.clip(np.nan_to_num(np.asarray(pose.box, dtype=np.float64)), -lim, lim)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), color, thick)
        label = f"{pose.name} {pose.score:.2f}"
        cv2.putText(out, label, (max(x0, 0), max(y0 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, color,
                    thick, cv2.LINE_AA)
        length = (axis_lengths or {}).get(pose.name, 0.05)
        pts = np.asarray(pose.R) @ (np.vstack([np.zeros(3), np.eye(3) * length]).T) + np.asarray(pose.t)[:, None]
        uv = _project(np.asarray(K, dtype=np.float64), pts.T)
        if uv is None:
            continue
        uv = np.clip(uv, -lim, lim)
        o = tuple(int(round(v)) for v in uv[0])
        for i, axis_color in enumerate(((255, 0, 0), (0, 255, 0), (0, 0, 255))):
            cv2.line(out, o, tuple(int(round(v)) for v in uv[i + 1]), axis_color, thick + 1, cv2.LINE_AA)
    return out

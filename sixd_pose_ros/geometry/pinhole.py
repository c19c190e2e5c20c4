"""Pinhole camera: projection, back-projection and intrinsics of crops and resizes.

Pixel convention (OpenCV, ``sensor_msgs/CameraInfo``): pixel centers are at integer
coordinates, so pixel ``(u, v)`` covers ``[u - 0.5, u + 0.5] x [v - 0.5, v + 0.5]`` and an image
of width ``W`` spans ``[-0.5, W - 0.5]``. ``u`` is the column (x, right), ``v`` the row (y, down).

Intrinsics ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in pixels; ``fx != fy`` and any
principal point are supported; the skew ``s`` is expected to be 0 but is honoured if not.
Points are in the camera optical frame, meters.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

__all__ = [
    "project",
    "project_model_points",
    "backproject_pixels",
    "backproject_depth",
    "depth_at_projections",
    "crop_intrinsics",
    "crop_affine",
    "scale_intrinsics",
]


def _as_K(K: np.ndarray) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"expected (..., 3, 3) intrinsics, got shape {K.shape}")
    return K


def project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Project camera-frame points to pixel coordinates.

    Args:
        points_cam: points in the camera frame (meters), shape ``(..., 3)``; ``z`` must be > 0
            (points with ``z == 0`` give ``inf``, points behind the camera are mirrored).
        K: intrinsics, shape ``(3, 3)`` (or ``(..., 3, 3)`` broadcast against the points' batch).

    Returns:
        Pixel coordinates ``(u, v)``, shape ``(..., 2)``, float64.
    """
    p = np.asarray(points_cam, dtype=np.float64)
    K = _as_K(K)
    h = (K @ p[..., None])[..., 0]  # homogeneous pixel coordinates (..., 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        return h[..., :2] / h[..., 2:3]


def project_model_points(points_obj: np.ndarray, R: np.ndarray, t: np.ndarray,
                         K: np.ndarray) -> np.ndarray:
    """Project object-frame points with an object-to-camera pose.

    Args:
        points_obj: model points (meters, object frame), shape ``(N, 3)``.
        R: ``R_m2c``, shape ``(3, 3)`` or ``(B, 3, 3)``.
        t: ``t_m2c`` (meters), shape ``(3,)``, ``(3, 1)`` or ``(B, 3)``.
        K: intrinsics, shape ``(3, 3)``.

    Returns:
        Pixel coordinates, shape ``(N, 2)`` or ``(B, N, 2)``.
    """
    pts = np.asarray(points_obj, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if t.shape == (3, 1):
        t = t[:, 0]
    p_cam = pts @ np.swapaxes(R, -1, -2) + t[..., None, :]
    return project(p_cam, K)


def backproject_pixels(uv: np.ndarray, z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Lift pixels with known depth to camera-frame points (inverse of :func:`project`).

    Args:
        uv: pixel coordinates, shape ``(..., 2)``.
        z: depth along the optical axis (meters, not ray length), shape ``(...)``.
        K: intrinsics, shape ``(3, 3)``.

    Returns:
        Points in the camera frame (meters), shape ``(..., 3)``.
    """
    uv = np.asarray(uv, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    K = _as_K(K)
    fx, s, cx = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2]
    fy, cy = K[..., 1, 1], K[..., 1, 2]
    # Closed-form inverse of the upper-triangular K (instead of np.linalg.inv per point).
    y_n = (uv[..., 1] - cy) / fy
    x_n = (uv[..., 0] - cx - s * y_n) / fx
    return np.stack([x_n * z, y_n * z, np.broadcast_to(z, x_n.shape)], axis=-1)


def backproject_depth(
    depth: np.ndarray,
    K: np.ndarray,
    mask: Optional[np.ndarray] = None,
    return_pixels: bool = False,
) -> Union[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Point cloud of a depth image (only pixels with finite depth > 0, and inside ``mask``).

    Args:
        depth: depth along the optical axis in meters, shape ``(H, W)``; 0, negative and
            non-finite values mean "no measurement" and are skipped.
        K: intrinsics, shape ``(3, 3)``.
        mask: optional boolean mask, shape ``(H, W)``; only ``True`` pixels are kept.
        return_pixels: also return the ``(row, col)`` indices of the kept pixels.

    Returns:
        Points in the camera frame (meters), shape ``(M, 3)``, in row-major pixel order; with
        ``return_pixels`` the tuple ``(points, rc)`` where ``rc`` is ``(M, 2)`` int64.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != depth.shape:
            raise ValueError(f"mask shape {mask.shape} != depth shape {depth.shape}")
        valid &= mask
    rows, cols = np.nonzero(valid)
    uv = np.stack([cols, rows], axis=-1).astype(np.float64)
    pts = backproject_pixels(uv, depth[rows, cols], K)
    if return_pixels:
        return pts, np.stack([rows, cols], axis=-1).astype(np.int64)
    return pts


def _box_to_xyxy(box: np.ndarray) -> np.ndarray:
    box = np.asarray(box, dtype=np.float64)
    if box.shape[-1] == 4:
        return box
    if box.shape[-1] == 3:
        cx, cy, size = box[..., 0], box[..., 1], box[..., 2]
        half = 0.5 * size
        return np.stack([cx - half, cy - half, cx + half, cy + half], axis=-1)
    raise ValueError(f"box must be (..., 4) xyxy or (..., 3) (cx, cy, size), got {box.shape}")


def _out_wh(out_size: Union[int, Sequence[int]]) -> tuple[float, float]:
    if np.ndim(out_size) == 0:
        return float(out_size), float(out_size)
    w, h = out_size
    return float(w), float(h)


def crop_affine(box: np.ndarray, out_size: Union[int, Sequence[int]]) -> np.ndarray:
    """Affine map from full-image pixels to crop pixels (e.g. for ``cv2.warpAffine``).

    The box is given in continuous pixel coordinates (the same as :func:`project`: pixel
    centers at integers): its edges ``x0..x1``, ``y0..y1`` become the outer edges of the output
    image, i.e. ``x0 -> -0.5`` and ``x1 -> out_w - 0.5``. So
    ``u' = sx * (u - x0) - 0.5`` with ``sx = out_w / (x1 - x0)``, same for ``v``.

    Args:
        box: ``(x0, y0, x1, y1)`` shape ``(..., 4)``, or a square ``(cx, cy, size)`` shape
            ``(..., 3)``, in pixels.
        out_size: output side ``S`` (square) or ``(out_w, out_h)``.

    Returns:
        ``A``, shape ``(..., 2, 3)``: ``[u', v'] = A @ [u, v, 1]``.
    """
    x0, y0, x1, y1 = np.moveaxis(_box_to_xyxy(box), -1, 0)
    out_w, out_h = _out_wh(out_size)
    if np.any(x1 <= x0) or np.any(y1 <= y0):
        raise ValueError("box must have positive width and height")
    sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
    zero = np.zeros_like(sx)
    return np.stack(
        [np.stack([sx, zero, -sx * x0 - 0.5], -1), np.stack([zero, sy, -sy * y0 - 0.5], -1)],
        axis=-2,
    )


def crop_intrinsics(K: np.ndarray, box: np.ndarray,
                    out_size: Union[int, Sequence[int]]) -> np.ndarray:
    """Intrinsics of the image obtained by cropping ``box`` and resizing it to ``out_size``.

    Consistent with :func:`crop_affine` (box edges map to the output image edges). Points
    project into the crop with ``project(p, K')`` exactly where the crop shows them.

    Args:
        K: intrinsics of the full image, shape ``(3, 3)`` or ``(..., 3, 3)``.
        box: ``(x0, y0, x1, y1)`` ``(..., 4)`` or square ``(cx, cy, size)`` ``(..., 3)``, pixels.
        out_size: output side ``S`` (square) or ``(out_w, out_h)``.

    Returns:
        ``K'``, shape ``broadcast(...) + (3, 3)``.
    """
    K = _as_K(K)
    A = crop_affine(box, out_size)
    A3 = np.concatenate([A, np.broadcast_to(np.array([0.0, 0.0, 1.0]), A.shape[:-2] + (1, 3))],
                        axis=-2)
    return A3 @ K


def scale_intrinsics(K: np.ndarray, sx: float, sy: Optional[float] = None) -> np.ndarray:
    """Intrinsics after resizing the whole image by factors ``sx`` (width) and ``sy`` (height).

    With pixel centers at integers the image edges ``-0.5`` and ``W - 0.5`` must map to
    ``-0.5`` and ``sx * W - 0.5`` (the ``cv2.resize`` convention), so
    ``cx' = sx * (cx + 0.5) - 0.5`` rather than ``sx * cx``; ``fx' = sx * fx``, likewise for y.

    Args:
        K: intrinsics, shape ``(..., 3, 3)``.
        sx: horizontal scale factor (new width / old width).
        sy: vertical scale factor; defaults to ``sx``.

    Returns:
        ``K'``, shape ``(..., 3, 3)``.
    """
    K = _as_K(K)
    sy = sx if sy is None else sy
    S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return S @ K


def depth_at_projections(points_cam: np.ndarray, visible: np.ndarray, depth: np.ndarray,
                         K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The observed depth where camera-frame points project (nearest pixel, skew ignored).

    Args:
        points_cam: ``(..., 3)`` meters. visible: ``(...)`` bool, the points to look up.
        depth: ``(H, W)`` observed meters (0 = none). K: ``(3, 3)``.

    Returns:
        ``(z, inside, observed)``: the points' depth ``(...)``; which visible ones are in front of
        the camera and project inside the image; the observed depth there (0 elsewhere).
    """
    z = points_cam[..., 2]
    height, width = depth.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(K[0, 0] * points_cam[..., 0] / z + K[0, 2])
        v = np.round(K[1, 1] * points_cam[..., 1] / z + K[1, 2])
    inside = visible & (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    observed = np.zeros(z.shape)
    observed[inside] = depth[v[inside].astype(np.int64), u[inside].astype(np.int64)]
    return z, inside, observed

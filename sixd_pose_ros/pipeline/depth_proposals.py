"""Where objects can be, from the depth image alone: segments standing off the support plane.

Why: the detector trained on 2 CPU cores finds the right place among its top 3 peaks for only
about a third of the instances in cluttered held-out scenes (bench-v1), and no later stage can
recover from a wrong place. A depth camera sees every object that stands off the table. Each
segment of the depth image that is not the table and whose size fits the object becomes one more
place the estimator tries; the learned stages still decide which segment looks like the object
(codebook similarity) and which rotation fits, and the depth check decides among the results.

The segmentation is computed once per frame and shared by all objects:

1. the dominant plane (the table) by RANSAC on a subsample of the back-projected points;
2. pixels on or behind that plane, and pixels without depth, are dropped;
3. depth discontinuities (neighbours further apart than ``edge_tol``) split touching objects;
4. 8-connected components with enough pixels are the segments.

The edge test and the components are image-space numpy and OpenCV: Open3D's DBSCAN does the
same on a point cloud, but needs the cloud built first and costs more on a full frame (and the
segments come out as pixel masks, which is what the crops and the depth check want).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sixd_pose_ros.geometry.pinhole import project
from sixd_pose_ros.geometry.plane import fit_support_plane
from sixd_pose_ros.models.detector import Detection, project_sphere


@dataclass
class DepthSegment:
    """One connected region of the depth image off the support plane."""

    label: int  # its value in DepthSegmentation.labels
    centroid: np.ndarray  # (3,) camera frame, meters: mean of the segment's points (its visible surface)
    extent: float  # meters: the diagonal of the points' 2..98 % box (robust visible size)
    pixels: int
    points: np.ndarray  # (M, 3) a subsample (at most 1500) of its points, camera frame


@dataclass
class DepthSegmentation:
    labels: np.ndarray  # (H, W) int32, 0 = table, background or no depth
    segments: list[DepthSegment]
    plane: np.ndarray | None  # (4,) n . x + d = 0 with n pointing to the camera; None if none found


def segment_depth(depth: np.ndarray, K: np.ndarray, *, plane_tol: float = 0.008,
                  edge_tol: tuple[float, float] = (0.01, 0.03), min_pixels: int = 60,
                  step: int = 4, seed: int = 0) -> DepthSegmentation:
    """Segments of ``depth`` (meters, 0 = none) that stand off the dominant plane.

    edge_tol: (meters, fraction of the depth): neighbours further apart than the larger of the
    two are on different objects. ``step``: pixel stride of the subsample RANSAC sees.
    """
    depth = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    height, width = depth.shape
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    u, v = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    xyz = np.stack([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], axis=-1)
    valid = depth > 0
    sub = xyz[::step, ::step][valid[::step, ::step]]
    # Sensor noise grows with distance (~1 % of the depth at 2 m for structured light / stereo).
    plane_tol = max(plane_tol, 0.006 * float(np.median(sub[:, 2]))) if len(sub) else plane_tol
    plane = fit_support_plane(sub.astype(np.float64), tol=plane_tol, seed=seed)
    keep = valid.copy()
    if plane is not None:
        height_above = xyz @ plane[:3].astype(np.float32) + np.float32(plane[3])
        keep &= height_above > 2 * plane_tol  # on or behind the table is not an object
    tol = np.maximum(edge_tol[0], edge_tol[1] * depth)
    edges = np.zeros_like(valid)
    dz_x = np.abs(np.diff(depth, axis=1)) > tol[:, 1:]
    dz_y = np.abs(np.diff(depth, axis=0)) > tol[1:, :]
    edges[:, 1:] |= dz_x
    edges[:, :-1] |= dz_x
    edges[1:, :] |= dz_y
    edges[:-1, :] |= dz_y
    count, labels = cv2.connectedComponents((keep & ~edges).astype(np.uint8), connectivity=8)
    labels = labels.astype(np.int32)
    sizes = np.bincount(labels.ravel(), minlength=count)
    big = sizes >= min_pixels
    big[0] = False
    labels[~big[labels]] = 0
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")  # one pass groups every segment's pixels
    bounds = np.searchsorted(flat[order], np.arange(count + 1))
    points = xyz.reshape(-1, 3)
    segments = []
    rng = np.random.default_rng(seed)
    for label in np.flatnonzero(big):
        pts = points[order[bounds[label]:bounds[label + 1]]]
        lo, hi = np.percentile(pts, [2, 98], axis=0)
        sample = pts if len(pts) <= 1500 else pts[rng.choice(len(pts), 1500, replace=False)]
        segments.append(DepthSegment(int(label), pts.mean(0).astype(np.float64), float(np.linalg.norm(hi - lo)),
                                     int(len(pts)), sample.astype(np.float64)))
    return DepthSegmentation(labels, segments, plane)


@dataclass
class SegmentProposal:
    detection: Detection  # the box the object's bounding sphere would fill; score 0
    centre: np.ndarray  # (3,) meters, camera frame: where the object's sphere centre would be
    segment: DepthSegment


def segment_proposals(segmentation: DepthSegmentation, diameter: float, radius: float, K: np.ndarray, *,
                      size_range: tuple[float, float] = (0.15, 1.3), split_up_to: float = 0.0,
                      max_parts: int = 3) -> list[SegmentProposal]:
    """Proposals for the segments whose visible size fits an object of ``diameter`` meters
    (``radius``: of its normalization sphere, for the box).

    The object's centre is behind its visible surface: the segment centroid is pushed back
    along its viewing ray by a quarter of the diameter (the depth alignment slides it to the
    measured depth afterwards). ``score`` is 0: a segment says where, not what.

    ``split_up_to`` (diameters; 0 = off): a segment larger than the object, up to this size,
    also gives the centroids of its points split in 2, 3, ... k-means parts as places, up to one
    more part than the diameters it spans (ceil(extent / diameter) + 1) and at most
    ``max_parts`` (at least 3). Why: objects that touch merge into one segment whose centroid
    lies between them, away from either (measured on the real YCB-Video validation frames: a mug
    and a brick side by side left no place within 5 cm of the brick; four objects, 2.4 pudding
    box diameters across, left none within 5 cm of the pudding box in 2 or 3 parts, and one 2 cm
    from it in 4).
    """
    out = []
    for seg in segmentation.segments:
        if seg.extent < size_range[0] * diameter:
            continue
        parts = [seg] if seg.extent <= size_range[1] * diameter else []
        if split_up_to > 0 and diameter < seg.extent <= split_up_to * diameter and len(seg.points) >= 30:
            most = max(3, min(max_parts, int(np.ceil(seg.extent / diameter)) + 1))
            parts += _split_segment(seg, tuple(range(2, most + 1)))
        for part in parts:
            ray = part.centroid / np.linalg.norm(part.centroid)
            centre = part.centroid + 0.25 * diameter * ray
            if np.linalg.norm(centre) <= radius * 1.01 or centre[2] <= 0:
                continue  # the sphere would hold the camera: no box to speak of
            center_xy, box = project_sphere(centre / radius, K)
            det = Detection(np.asarray(center_xy, dtype=np.float64), float(box), 0.0, 0.0, (-1, -1))
            out.append(SegmentProposal(det, centre, part))
    return out


def _split_segment(seg: DepthSegment, ks: tuple[int, ...]) -> list[DepthSegment]:
    """The segment's point sample cut into ``k`` spatial clusters for each ``k`` (OpenCV
    k-means, fixed seed): each cluster a segment of its own with the parent's label."""
    cv2.setRNGSeed(0)
    pts = seg.points.astype(np.float32)
    parts = []
    for k in ks:
        _, labels, _ = cv2.kmeans(pts, k, None, (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1e-4),
                                  2, cv2.KMEANS_PP_CENTERS)
        for c in range(k):
            sub = seg.points[labels.ravel() == c]
            if len(sub) < 10:
                continue
            lo, hi = np.percentile(sub, [2, 98], axis=0)
            parts.append(DepthSegment(seg.label, sub.mean(0), float(np.linalg.norm(hi - lo)),
                                      int(seg.pixels * len(sub) / len(seg.points)), sub))
    return parts


def _labels_under_model(segmentation: DepthSegmentation, model_tree, R: np.ndarray, t: np.ndarray,
                        K: np.ndarray, depth: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The segmentation's labels under the posed model's projected surface samples that fall in
    the image (and, given ``depth``, where the depth camera measured something), and how many
    samples fall outside the image."""
    cam = model_tree.data @ R.T + t
    cam = cam[cam[:, 2] > 1e-6]
    if len(cam) == 0:
        return np.zeros(0, np.int32), 0
    height, width = segmentation.labels.shape
    uv = np.round(project(cam, K)).astype(np.int64)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    uv = uv[inside]
    if depth is not None:
        uv = uv[depth[uv[:, 1], uv[:, 0]] > 0]
    return segmentation.labels[uv[:, 1], uv[:, 0]], int((~inside).sum())


def segment_explained(segmentation: DepthSegmentation, model_tree, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                      diameter: float, reach: float = 0.6) -> float:
    """Fraction of the segment under the posed object, within ``reach`` diameters of the posed
    model's centre, that lies on the posed model (within max(1 cm, 5 % of the diameter) of its
    surface samples); 0 when the object covers no segment. Agreement alone (how much of the
    model the depth confirms) prefers a small object lying on a large one; this is the other
    half: how much of what is there the model accounts for.

    Only the segment near the object counts: objects that touch merge into one segment, and the
    whole of it would hold every one of them to the share it covers (real YCB-V frames, a mug
    and a brick side by side: the mug's true pose explained 0.4 of their segment and lost to
    poses on smaller segments; every 4th frame, RGB-D ADD-S-0.1d 66.7 -> 75.6 % with the reach).
    A small object on a big one still explains little: the big one's surface around it is near.

    The segment is the one most of the model's projected surface samples fall on. Not the one
    under the projected centre: the centre of a concave object (a drill, a mug from the side)
    often falls beside it, on the table, and the right pose then explained nothing (the bundled
    demo's drill: its true poses ranked 16x below a flipped one that covered its segment).

    model_tree: a scipy cKDTree of the model's surface samples in the model frame (built once per
    object; the segment's points are moved into the model frame instead).
    """
    under = _labels_under_model(segmentation, model_tree, R, t, K)[0]
    under = under[under > 0]
    if len(under) == 0:
        return 0.0
    label = int(np.bincount(under).argmax())
    seg = next((s for s in segmentation.segments if s.label == label), None)
    if seg is None:
        return 0.0
    centre = model_tree.data.mean(axis=0) @ R.T + t
    near = seg.points[np.linalg.norm(seg.points - centre, axis=1) <= reach * diameter]
    if len(near) == 0:
        return 0.0
    dist, _ = model_tree.query((near - t) @ R, distance_upper_bound=max(0.01, 0.05 * diameter))
    return float(np.mean(np.isfinite(dist)))


def silhouette_support(segmentation: DepthSegmentation, model_tree, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                       depth: np.ndarray) -> float:
    """Fraction of the posed model's projection (where the camera measured depth) that falls on
    segments, i.e. on something standing off the table; what falls outside the image counts as
    unsupported (nothing there confirms it); 1 when nothing falls on a measured pixel.

    The other side of :func:`segment_explained`: an object in view stands off the table, so
    where it projects the depth image must show it or something in front of it, never the bare
    table or what lies behind. Depth agreement cannot see this when the object's face fits a
    flat background (real YCB-V frames: the pudding box fitted onto a sliver of carpet beyond
    the table's edge, agreement 0.9 and the sliver fully explained, with 2 % of the box's
    projection on it).
    """
    under, outside = _labels_under_model(segmentation, model_tree, R, t, K, depth)
    return float(np.sum(under > 0) / (len(under) + outside)) if len(under) else 1.0


def surface_depth(depth: np.ndarray, center_xy: np.ndarray, radius_px: float, fallback: float) -> float:
    """Median valid depth (meters) within ``radius_px`` of a pixel; ``fallback`` without any."""
    h, w = depth.shape
    r = max(2, int(radius_px))
    u, v = int(round(center_xy[0])), int(round(center_xy[1]))
    window = depth[max(0, v - r):min(h, v + r + 1), max(0, u - r):min(w, u + r + 1)]
    valid = window[np.isfinite(window) & (window > 0)]
    return float(np.median(valid)) if valid.size else float(fallback)

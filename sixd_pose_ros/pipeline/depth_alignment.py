"""Use the depth image to fix what RGB cannot: distance along the viewing ray, then ICP.

An RGB estimate's largest error is depth (a 5 % scale error of the detector box is 5 % of the
distance, centimetres at arm's length); the depth camera measures exactly that. First the
object is slid along its viewing ray until its rendered depth matches the observed depth in
its silhouette (robust median ratio), then point-to-point ICP on the observed points near the
model aligns the rest. An update that moves the object too far is rejected: a wrong ICP
basin is worse than a slightly-off RGB pose.

ICP is our own (scipy cKDTree, trimmed correspondences) because Open3D is a ~400 MB wheel
for a 20-line loop here; the trimmed variant matters since the observed points in the box
include table and occluders.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from sixd_pose_ros.geometry.pinhole import backproject_depth
from sixd_pose_ros.render.renderer import RenderMesh, render


@dataclass
class DepthAlignment:
    R: np.ndarray
    t: np.ndarray
    depth_ratio: float  # observed / rendered median depth that was applied (1.0 = none)
    icp_rmse: float | None  # meters, of the kept correspondences; None when ICP was skipped
    accepted: bool  # False: the update was rejected and the input pose returned


def _kabsch(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cs, cd = src.mean(0), dst.mean(0)
    U, _, Vt = np.linalg.svd((src - cs).T @ (dst - cd))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    return R, cd - R @ cs


def align_to_depth(mesh: RenderMesh, model_points: np.ndarray, R: np.ndarray, t: np.ndarray,
                   depth: np.ndarray, K: np.ndarray, diameter: float, *, icp_iters: int = 15,
                   max_move_fraction: float = 0.25, trim: float = 0.7) -> DepthAlignment:
    """Refine a metric pose (R, t) with a registered depth image (meters, 0 = none)."""
    height, width = depth.shape
    rendered = render([mesh], R, t, K, width, height)
    sil = rendered.mask[0] > 0
    both = sil & (depth > 0)
    if both.sum() < 30:
        return DepthAlignment(R, t, 1.0, None, False)
    ratio = float(np.median(depth[both] / rendered.depth[0][both]))
    if not 0.6 < ratio < 1.6:
        return DepthAlignment(R, t, 1.0, None, False)
    t1 = t * ratio  # slide along the ray through the camera centre: the projection stays put
    # Observed points where the object should be (silhouette grown a little for the RGB error).
    import cv2

    grown = cv2.dilate(sil.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    observed = backproject_depth(np.where(grown, depth, 0.0).astype(np.float32), K)
    near = np.abs(observed[:, 2] - float(np.median(depth[both]))) < diameter
    observed = observed[near]
    if len(observed) < 30:
        return DepthAlignment(R, t1, ratio, None, True)
    if len(observed) > 4000:
        observed = observed[np.random.default_rng(0).choice(len(observed), 4000, replace=False)]
    tree = cKDTree(observed)
    R_i, t_i = R.copy(), t1.copy()
    rmse = None
    # Only the model side that faces the camera can match observed points.
    for _ in range(icp_iters):
        pts = model_points @ R_i.T + t_i
        dist, idx = tree.query(pts, distance_upper_bound=0.2 * diameter)
        ok = np.isfinite(dist)
        if ok.sum() < 20:
            break
        keep = np.flatnonzero(ok)
        keep = keep[np.argsort(dist[keep])[: max(20, int(trim * len(keep)))]]
        dR, dt = _kabsch(pts[keep], observed[idx[keep]])
        R_i, t_i = dR @ R_i, dR @ t_i + dt
        rmse = float(np.sqrt(np.mean(dist[keep] ** 2)))
        if np.linalg.norm(dt) < 1e-5 and np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1)) < 1e-4:
            break
    moved = np.linalg.norm((R_i - R) @ model_points.T, axis=0).mean() + np.linalg.norm(t_i - t1)
    if moved > max_move_fraction * diameter:
        return DepthAlignment(R, t1, ratio, rmse, True)  # keep the depth fix, reject ICP
    return DepthAlignment(R_i, t_i, ratio, rmse, True)

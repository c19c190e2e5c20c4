"""Use the depth image to fix what RGB cannot: distance along the viewing ray, then ICP.

An RGB estimate's largest error is depth (a 5 % scale error of the detector box is 5 % of the
distance, centimetres at arm's length); the depth camera measures exactly that. First the
object is slid along its viewing ray until its rendered depth matches the observed depth in
its silhouette (robust median ratio), then ICP on the observed points near the model aligns the
rest: point-to-plane with a Tukey kernel (Open3D; lands closer: as the final alignment it raised
Prj-5 on 20 frames of bench-v1 from 15 to 26 %), or our own trimmed point-to-point (scipy
cKDTree), which ranks hypotheses better in clutter (see pipeline/depth_ranking.py, which uses
both, and docs/reports/README.md for the numbers). An update that moves the object too far is rejected: a wrong ICP
basin is worse than a slightly-off RGB pose.

It also says how well the model explains the observation at the pose it returns (``agreement``,
the health measure tracking uses): the visible surface rendered at the input pose, carried to
the output pose by the update just computed (no second render: the update is small), projected,
and compared with the observed depth at those pixels. Agreement is the fraction of points whose
observed depth lies within max(2 cm, 2 % of the distance) of the model's; points where the
sensor has no measurement do not count either way, but when fewer than a quarter of the points
have one there is too little evidence and the agreement is 0. The tolerance is tight on
purpose: at 5 % of the distance (3.5 cm at 0.7 m), a drill pose lying flat in the table after
ICP, or 60 degrees off, scored 0.5-0.6 (the table explains much of a wrong pose), against
0.2-0.35 at 2 cm; the right pose scores 0.94-1.0 on rendered depth.

Both kinds must cope with the table and occluders among the observed points: trimming the
worst 30 % of correspondences (point-to-point), or the robust kernel (point-to-plane).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d  # imported with the pipeline: a first import inside the first frame costs ~0.8 s
from scipy.spatial import cKDTree

from sixd_pose_ros.geometry.pinhole import backproject_depth, depth_at_projections
from sixd_pose_ros.render.renderer import RenderMesh, render


@dataclass
class DepthAlignment:
    R: np.ndarray
    t: np.ndarray
    depth_ratio: float  # observed / rendered median depth that was applied (1.0 = none)
    icp_rmse: float | None  # meters, of the kept correspondences; None when ICP was skipped
    accepted: bool  # False: the update was rejected and the input pose returned
    # Fraction (0..1) of the visible model surface at the returned pose that the observed depth
    # confirms (see the module docstring); 0 when rejected or without enough measurements.
    agreement: float = 0.0
    # Fraction where the observed depth lies in front of the model (something occludes it); the
    # rest, 1 - agreement - occluded, has depth behind the model: space the object would fill is
    # seen through, which no occluder explains.
    occluded: float = 0.0

    @property
    def seen_through(self) -> float:
        """Fraction of the visible model surface with the observed depth behind it: space the
        object would fill, seen through (1 when rejected or without enough measurements: nothing
        confirms the pose)."""
        return max(0.0, 1.0 - self.agreement - self.occluded)

    def visible_agreement(self, occlusion_weight: float) -> float:
        """The agreement with occluded points counted ``occlusion_weight`` (1: as disagreement,
        as ``agreement`` does; 0: not at all, so only seen-through space counts against).

        Why: on real YCB-V the wood block at its true pose, a banana in front and a box on
        top, agrees 0.60 with 0.36 occluded and 0.04 seen through; its chosen wrong pose agrees
        0.64 with 0.04 occluded and 0.32 seen through. Right poses were seen through at most 0.08
        (a mug turned 0.25), fitted absent objects 0.08-0.34."""
        seen = 1.0 - (1.0 - occlusion_weight) * self.occluded
        return self.agreement / seen if seen > 0 else 0.0


def _kabsch(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cs, cd = src.mean(0), dst.mean(0)
    U, _, Vt = np.linalg.svd((src - cs).T @ (dst - cd))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    return R, cd - R @ cs


def depth_agreement(rendered_depth: np.ndarray, R_from: np.ndarray, t_from: np.ndarray, R_to: np.ndarray,
                    t_to: np.ndarray, depth: np.ndarray, K: np.ndarray, *, tol_m: float = 0.02,
                    tol_fraction: float = 0.02, min_measured: float = 0.25, max_points: int = 3000) -> float:
    """Fraction of the visible model surface at pose (R_to, t_to) that the observed depth confirms
    (the first of :func:`depth_consistency`)."""
    return depth_consistency(rendered_depth, R_from, t_from, R_to, t_to, depth, K, tol_m=tol_m,
                             tol_fraction=tol_fraction, min_measured=min_measured, max_points=max_points)[0]


def depth_consistency(rendered_depth: np.ndarray, R_from: np.ndarray, t_from: np.ndarray, R_to: np.ndarray,
                      t_to: np.ndarray, depth: np.ndarray, K: np.ndarray, *, tol_m: float = 0.02,
                      tol_fraction: float = 0.02, min_measured: float = 0.25,
                      max_points: int = 3000) -> tuple[float, float]:
    """(agreement, occluded): fractions of the visible model surface at pose (R_to, t_to) whose
    observed depth confirms it, and whose observed depth lies in front of it.

    Args:
        rendered_depth: (H, W) meters, the model rendered at (R_from, t_from) (0 = background).
        R_from, t_from, R_to, t_to: object-to-camera poses (meters); the rendered surface points
            are carried from the first to the second (fine for the small updates of alignment
            and tracking: self-occlusion is not re-evaluated).
        depth: (H, W) observed meters, 0 = no measurement. K: (3, 3).
        tol_m, tol_fraction: a point agrees when |observed - model| <= max(tol_m, tol_fraction * z).
        min_measured: below this fraction of points with a measurement the answer is 0.
    Returns:
        (agreement, occluded), each in [0, 1]; (0, 0) with too few measurements.
    """
    v, u = np.nonzero(rendered_depth > 0)
    if len(v) < 30:
        return 0.0, 0.0
    if len(v) > max_points:
        keep = np.linspace(0, len(v) - 1, max_points).astype(np.int64)
        v, u = v[keep], u[keep]
    z = rendered_depth[v, u].astype(np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    pts = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=1)
    moved = (pts - t_from) @ R_from @ R_to.T + t_to  # camera(from) -> object -> camera(to)
    zm, inside, observed = depth_at_projections(moved, np.ones(len(moved), bool), depth, K)
    measured = inside & (observed > 0)
    if measured.sum() < max(30, min_measured * len(z)):
        return 0.0, 0.0
    tol = np.maximum(tol_m, tol_fraction * zm[measured])
    residual = observed[measured] - zm[measured]
    return float(np.mean(np.abs(residual) <= tol)), float(np.mean(residual < -tol))


def align_to_depth(mesh: RenderMesh, model_points: np.ndarray, R: np.ndarray, t: np.ndarray,
                   depth: np.ndarray, K: np.ndarray, diameter: float, *, icp_iters: int = 15,
                   max_move_fraction: float = 0.25, trim: float = 0.7,
                   agreement_tol: tuple[float, float] = (0.02, 0.02), icp: str = "point_to_plane",
                   robust_fraction: float = 0.05) -> DepthAlignment:
    """Refine a metric pose (R, t) with a registered depth image (meters, 0 = none).

    agreement_tol: (meters, fraction of the distance) for ``DepthAlignment.agreement``.
    icp: ``"point_to_plane"`` (Open3D, Tukey kernel of ``robust_fraction`` diameters) or
        ``"point_to_point"`` (our own, keeping the ``trim`` closest correspondences).
    """
    if icp not in ("point_to_plane", "point_to_point"):
        raise ValueError(f"icp must be 'point_to_plane' or 'point_to_point', not {icp!r}")
    window = _object_window(model_points, R, t, K, depth.shape)
    if window is None:
        return DepthAlignment(R, t, 1.0, None, False)
    # Everything below works in the window around the object (intrinsics shifted to it): a full
    # 640x480 render per hypothesis cost ~10x more and showed nothing but background.
    (x0, y0, x1, y1) = window
    K_w = K.copy()
    K_w[0, 2] -= x0
    K_w[1, 2] -= y0
    depth_w = np.ascontiguousarray(depth[y0:y1, x0:x1])
    alignment, rendered_depth = _align(mesh, model_points, R, t, depth_w, K_w, diameter, icp_iters,
                                       max_move_fraction, trim, icp, robust_fraction)
    if rendered_depth is not None and alignment.accepted:
        alignment.agreement, alignment.occluded = depth_consistency(
            rendered_depth, R, t, alignment.R, alignment.t, depth_w, K_w, tol_m=agreement_tol[0],
            tol_fraction=agreement_tol[1])
    return alignment


def _object_window(points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                   shape: tuple[int, int], grow: float = 0.3, margin: int = 8) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) pixels around the projected model, grown for the pose error; None when
    the object is behind the camera or outside the image."""
    cam = points @ R.T + t
    cam = cam[cam[:, 2] > 1e-6]
    if len(cam) < 3:
        return None
    uv = cam[:, :2] / cam[:, 2:3] * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    lo, hi = uv.min(0), uv.max(0)
    pad = grow * (hi - lo) + margin
    height, width = shape
    x0, y0 = int(max(0, np.floor(lo[0] - pad[0]))), int(max(0, np.floor(lo[1] - pad[1])))
    x1, y1 = int(min(width, np.ceil(hi[0] + pad[0]) + 1)), int(min(height, np.ceil(hi[1] + pad[1]) + 1))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    return x0, y0, x1, y1


def _align(mesh, model_points, R, t, depth, K, diameter, icp_iters, max_move_fraction, trim, icp, robust_fraction):
    height, width = depth.shape
    rendered = render([mesh], R, t, K, width, height)
    sil = rendered.mask[0] > 0
    both = sil & (depth > 0)
    if both.sum() < 30:
        return DepthAlignment(R, t, 1.0, None, False), None
    ratio = float(np.median(depth[both] / rendered.depth[0][both]))
    if not 0.6 < ratio < 1.6:
        return DepthAlignment(R, t, 1.0, None, False), None
    rendered_depth = rendered.depth[0]
    t1 = t * ratio  # slide along the ray through the camera centre: the projection stays put
    # Observed points where the object should be (silhouette grown a little for the RGB error).
    import cv2

    grown = cv2.dilate(sil.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    observed = backproject_depth(np.where(grown, depth, 0.0).astype(np.float32), K)
    near = np.abs(observed[:, 2] - float(np.median(depth[both]))) < diameter
    observed = observed[near]
    if len(observed) < 30:
        return DepthAlignment(R, t1, ratio, None, True), rendered_depth
    if len(observed) > 4000:
        observed = observed[np.random.default_rng(0).choice(len(observed), 4000, replace=False)]
    if icp == "point_to_plane":
        R_i, t_i, rmse = _icp_point_to_plane(model_points, observed, R, t1, diameter, icp_iters, robust_fraction)
    else:
        R_i, t_i, rmse = _icp_point_to_point(model_points, observed, R, t1, diameter, icp_iters, trim)
    moved = np.linalg.norm((R_i - R) @ model_points.T, axis=0).mean() + np.linalg.norm(t_i - t1)
    if moved > max_move_fraction * diameter:
        return DepthAlignment(R, t1, ratio, rmse, True), rendered_depth  # keep the depth fix, reject ICP
    return DepthAlignment(R_i, t_i, ratio, rmse, True), rendered_depth


def _icp_point_to_plane(model_points, observed, R, t, diameter, iters, robust_fraction):
    """Open3D's point-to-plane ICP with a Tukey kernel (robust to the table and occluders among
    the observed points); observed normals from their 16 neighbours, turned to the camera."""
    target = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(observed))
    target.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(16))
    target.orient_normals_towards_camera_location(np.zeros(3))
    source = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(model_points, np.float64)))
    init = np.eye(4)
    init[:3, :3], init[:3, 3] = R, t
    reg = o3d.pipelines.registration
    # One thread: Open3D's parallel sums make the pose differ in the 13th digit from run to run,
    # and the same command must give the same numbers (a few thousand points gain nothing from two).
    threads = o3d.utility.get_max_threads()
    o3d.utility.set_max_threads(1)
    try:
        result = reg.registration_icp(
            source, target, 0.2 * diameter, init,
            reg.TransformationEstimationPointToPlane(reg.TukeyLoss(k=robust_fraction * diameter)),
            reg.ICPConvergenceCriteria(max_iteration=iters))
    finally:
        o3d.utility.set_max_threads(threads)
    T = np.asarray(result.transformation)
    rmse = float(result.inlier_rmse) if len(result.correspondence_set) else None
    return T[:3, :3].copy(), T[:3, 3].copy(), rmse


def _icp_point_to_point(model_points, observed, R, t, diameter, iters, trim):
    """Trimmed point-to-point ICP, by hand: one cKDTree and a Kabsch step per iteration. Kept for
    the ranking because its trimming (the worst 30 % of correspondences dropped) is what the
    ranking defaults were chosen with; Open3D's point-to-point has a distance cutoff instead."""
    tree = cKDTree(observed)
    R_i, t_i = R.copy(), t.copy()
    rmse = None
    for _ in range(iters):
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
    return R_i, t_i, rmse

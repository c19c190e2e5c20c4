"""Open3D global registration (FPFH + RANSAC) then point-to-plane ICP, as a known-model peer.

The classical depth-only baseline: match FPFH descriptors of the model's surface points to
those of the scene's points, let RANSAC find the rigid transform most points agree on, and
polish it with ICP. Everything geometric is Open3D's; ours is only how the scene is cut:

- No detector (a peer must not borrow ours), so the region of interest is the whole frame
  minus its dominant plane (the table: ``segment_plane``), split into DBSCAN clusters. The
  plane is removed only when it is much larger than the object (its inliers span more than
  ``2 x`` the object's diameter), so that a close-up of a box does not lose its biggest face.
- Clusters whose extent fits the object (``cluster_size_range`` x its diameter) are
  registered one by one, the most populous first (``max_clusters`` of them); when none fits
  (the object touches a distractor or is cut by the plane), the whole plane-free cloud is.
- The winner explains the most observed points: ICP inliers of the scene side, i.e. the
  cluster's points within the ICP distance of the posed model. Its score is the fraction of
  the cluster so explained.

Depth is required: without it ``estimate`` returns no pose and logs why.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import trimesh

from sixd_pose_ros.geometry.normalization import object_diameter
from sixd_pose_ros.geometry.pinhole import backproject_depth, project
from sixd_pose_ros.pipeline.types import Frame, ObjectPose

LOG = logging.getLogger(__name__)


def require_open3d():
    """The ``open3d`` module, or a PeerUnavailableError naming the package (or system library)."""
    from sixd_pose_ros.evaluation.peers.linemod import PeerUnavailableError

    try:
        import open3d
    except ModuleNotFoundError as exc:
        raise PeerUnavailableError("open3d is not installed: pip install 'open3d-cpu>=0.19' "
                                   "(or 'open3d' on machines with CUDA)") from exc
    except (ImportError, OSError) as exc:  # the wheel is there but a shared library is not
        hint = " (Debian/Ubuntu: apt-get install libusb-1.0-0)" if "libusb" in str(exc) else \
            " (Debian/Ubuntu: apt-get install libgomp1)" if "libgomp" in str(exc) else ""
        raise PeerUnavailableError(f"open3d is installed but cannot load: {exc}: install the "
                                   f"missing system library{hint}") from exc
    return open3d


@dataclass(frozen=True)
class Open3DRegistrationConfig:
    """Sizes are in voxels, the voxel being ``voxel_fraction`` of the object's diameter, so one
    setting serves a 5 cm part and a 30 cm box."""

    voxel_fraction: float = 0.05
    min_voxel_m: float = 0.002  # below the noise of depth sensors a finer voxel buys nothing
    n_model_points: int = 20000  # surface samples before voxel down-sampling
    normal_radius_voxels: float = 2.0
    fpfh_radius_voxels: float = 5.0
    max_depth_m: float = 3.0  # farther depth is ignored (the table's far edge, walls)
    remove_plane: bool = True
    plane_distance_m: float = 0.006
    cluster_eps_voxels: float = 2.5
    cluster_min_points: int = 10
    cluster_size_range: tuple[float, float] = (0.25, 1.6)  # cluster extent / object diameter
    max_clusters: int = 4
    ransac_distance_voxels: float = 1.5
    ransac_max_iterations: int = 100_000
    ransac_confidence: float = 0.999
    icp_distance_voxels: float = 1.0
    icp_max_iterations: int = 50
    min_score: float = 0.3  # below it the object is reported absent
    seed: int = 0  # Open3D's RANSAC sampling seed, set before every registration


class Open3DRegistrationPeer:
    """Estimator (pipeline.types) for one object: FPFH + RANSAC + point-to-plane ICP on depth.

    Args:
        mesh: the object, meters (see render.mesh_io.load_mesh).
        name: the object's name in the output.
        config: voxel, clustering and registration settings.
    """

    def __init__(self, mesh: trimesh.Trimesh, name: str,
                 config: Open3DRegistrationConfig = Open3DRegistrationConfig()) -> None:
        self.o3d = require_open3d()
        self.name = name
        self.config = config
        self._warned_no_depth = False
        points, face_idx = trimesh.sample.sample_surface(mesh, config.n_model_points, seed=config.seed)
        self.diameter = object_diameter(np.asarray(mesh.vertices))
        self.voxel = max(config.min_voxel_m, config.voxel_fraction * self.diameter)
        cloud = self.o3d.geometry.PointCloud(self.o3d.utility.Vector3dVector(points))
        cloud.normals = self.o3d.utility.Vector3dVector(np.asarray(mesh.face_normals)[face_idx])
        self.model = cloud.voxel_down_sample(self.voxel)
        self.model.normalize_normals()
        self.model_fpfh = self._fpfh(self.model)
        self.model_points = np.asarray(self.model.points)  # (M, 3) meters, object frame

    def _fpfh(self, cloud):
        reg = self.o3d.pipelines.registration
        radius = self.config.fpfh_radius_voxels * self.voxel
        return reg.compute_fpfh_feature(cloud, self.o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=100))

    # -- the scene ----------------------------------------------------------------------------

    def scene_clusters(self, frame: Frame) -> tuple[object, list]:
        """The plane-free scene cloud (with normals) and the candidate clusters, largest first.

        Returns ``(cloud, clusters)``; ``clusters`` are Open3D clouds; both may be empty.
        """
        cfg, o3d = self.config, self.o3d
        depth = np.where(frame.depth < cfg.max_depth_m, frame.depth, 0.0)
        points = backproject_depth(depth, frame.K)
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points)).voxel_down_sample(self.voxel)
        if cfg.remove_plane and len(cloud.points) >= 3 * 50:
            _plane, inliers = cloud.segment_plane(cfg.plane_distance_m, 3, 200)
            if len(inliers) > 0:
                plane_pts = np.asarray(cloud.points)[inliers]
                extent = float(np.linalg.norm(plane_pts.max(0) - plane_pts.min(0)))
                if extent > 2.0 * self.diameter:
                    cloud = cloud.select_by_index(inliers, invert=True)
        if len(cloud.points) < 10:
            return cloud, []
        radius = cfg.normal_radius_voxels * self.voxel
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=30))
        cloud.orient_normals_towards_camera_location(np.zeros(3))
        labels = np.asarray(cloud.cluster_dbscan(cfg.cluster_eps_voxels * self.voxel, cfg.cluster_min_points))
        lo, hi = cfg.cluster_size_range
        pts = np.asarray(cloud.points)
        clusters = []
        for label in np.unique(labels[labels >= 0]):
            idx = np.flatnonzero(labels == label)
            extent = float(np.linalg.norm(pts[idx].max(0) - pts[idx].min(0)))
            if lo * self.diameter <= extent <= hi * self.diameter:
                clusters.append(idx)
        clusters.sort(key=len, reverse=True)
        if not clusters:
            clusters = [np.arange(len(pts))]
        return cloud, [cloud.select_by_index(idx) for idx in clusters[:cfg.max_clusters]]

    # -- registration -------------------------------------------------------------------------

    def register(self, target) -> tuple[np.ndarray, float, int, dict]:
        """Model-to-target 4x4 transform, scene-side fitness, inlier count and stage timings."""
        cfg, reg = self.config, self.o3d.pipelines.registration
        timings = {}
        t0 = time.perf_counter()
        target_fpfh = self._fpfh(target)
        dist = cfg.ransac_distance_voxels * self.voxel
        self.o3d.utility.random.seed(cfg.seed)
        coarse = reg.registration_ransac_based_on_feature_matching(
            self.model, target, self.model_fpfh, target_fpfh, True, dist,
            reg.TransformationEstimationPointToPoint(False), 3,
            [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9), reg.CorrespondenceCheckerBasedOnDistance(dist)],
            reg.RANSACConvergenceCriteria(cfg.ransac_max_iterations, cfg.ransac_confidence))
        t1 = time.perf_counter()
        timings["ransac"] = 1000.0 * (t1 - t0)
        icp_dist = cfg.icp_distance_voxels * self.voxel
        fine = reg.registration_icp(
            self.model, target, 2.0 * icp_dist, coarse.transformation,
            reg.TransformationEstimationPointToPlane(),
            reg.ICPConvergenceCriteria(max_iteration=cfg.icp_max_iterations))
        fine = reg.registration_icp(
            self.model, target, icp_dist, fine.transformation,
            reg.TransformationEstimationPointToPlane(),
            reg.ICPConvergenceCriteria(max_iteration=cfg.icp_max_iterations))
        T = np.asarray(fine.transformation)
        # Scene side: how much of what the camera saw does the posed model explain.
        explained = reg.evaluate_registration(target, self.model, icp_dist, np.linalg.inv(T))
        timings["icp"] = 1000.0 * (time.perf_counter() - t1)
        n_inliers = round(explained.fitness * len(target.points))
        return T, float(explained.fitness), n_inliers, timings

    def estimate(self, frame: Frame) -> list[ObjectPose]:
        """At most one pose (the cluster whose registration explains most points); [] when none."""
        if frame.depth is None or not (frame.depth > 0).any():
            if not self._warned_no_depth:
                LOG.warning("open3d_fpfh_icp peer %s: the frame has no depth; this peer registers "
                            "point clouds and needs a depth image, so it returns no pose", self.name)
                self._warned_no_depth = True
            return []
        t0 = time.perf_counter()
        # Open3D prints a warning for every RANSAC run whose mutual filter keeps few
        # correspondences (it then falls back to all of them, as intended here).
        with self.o3d.utility.VerbosityContextManager(self.o3d.utility.VerbosityLevel.Error):
            _, clusters = self.scene_clusters(frame)
            stage_ms = {"segment": 1000.0 * (time.perf_counter() - t0), "ransac": 0.0, "icp": 0.0}
            best = None
            for target in clusters:
                if len(target.points) < 10:
                    continue
                T, fitness, n_inliers, timings = self.register(target)
                stage_ms["ransac"] += timings["ransac"]
                stage_ms["icp"] += timings["icp"]
                if best is None or n_inliers > best[2]:
                    best = (T, fitness, n_inliers)
        stage_ms["total"] = 1000.0 * (time.perf_counter() - t0)
        if best is None or best[1] < self.config.min_score:
            return []
        T, fitness, _ = best
        R, t = T[:3, :3].copy(), T[:3, 3].copy()
        cam = self.model_points @ R.T + t
        uv = project(cam[cam[:, 2] > 1e-6], frame.K)
        if len(uv) == 0:
            return []
        box = np.array([*uv.min(0), *uv.max(0)], np.float64)
        return [ObjectPose(name=self.name, R=R, t=t, score=fitness, box=box, stage_ms=stage_ms)]

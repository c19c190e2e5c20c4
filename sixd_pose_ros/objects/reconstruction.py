"""A surface mesh of a model-free object, fused from its reference depth maps.

Why: with depth in the query, known-model mode finds and aligns objects through their surface
(depth segments, a rotation grid fitted to them, ICP, the depth agreement; see
pipeline/depth_ranking.py). A model-free object photographed with a depth camera has that
surface too, spread over its reference depth maps. Fusing them into one mesh in the object
frame lets model-free mode use the same machinery instead of trusting the selector's single
viewpoint.

The fusion is Open3D's truncated signed distance volume (the KinectFusion method): each view's
depth, cut to the object (its mask when given, and the object's bounding sphere), is integrated
with its object-to-camera pose, and marching cubes extracts the surface. Only the largest
connected piece is kept (stray depth at mask edges makes small floaters), and the mesh is
decimated to a size the CPU rasterizer renders per hypothesis in a few milliseconds.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import trimesh

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry.pinhole import backproject_depth
from sixd_pose_ros.geometry.plane import fit_support_plane

#: Voxels across the object's bounding cube: ~1 % of the diameter, well below the sensor's noise
#: at arm's length for the objects we target (5-30 cm).
DEFAULT_VOXELS_ACROSS = 96
#: Faces kept after decimation: the depth alignment renders the mesh once per hypothesis.
DEFAULT_MAX_FACES = 6000


class ReconstructionError(SixdPoseError):
    """The reference depth does not give a usable surface."""


def fuse_depth_views(
    views: Iterable[tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]],
    center: np.ndarray,
    radius: float,
    *,
    voxels_across: int = DEFAULT_VOXELS_ACROSS,
    max_faces: int = DEFAULT_MAX_FACES,
    on_view: Callable[[], None] | None = None,
) -> trimesh.Trimesh:
    """Fuse posed depth maps into one surface mesh in the object frame (meters).

    Args:
        views: per view ``(depth (H, W) meters with 0 = none, rgb (H, W, 3) uint8 or None,
            K (3, 3), R (3, 3), t (3,))`` with ``(R, t)`` the object-to-camera pose; depth
            outside the object should already be 0 (mask applied, or :func:`cut_support_plane`).
        center: ``(3,)`` object centre in the object frame; radius: its bounding radius (m).
            Depth farther than 1.1 radii from the centre is ignored (table, background).
        voxels_across: TSDF resolution over the bounding sphere's diameter.
        max_faces: the mesh is decimated to at most this many faces.
        on_view: called after each view (a progress bar's update).

    Raises:
        ReconstructionError: no view contributes depth, or the fused surface is empty.
    """
    import open3d as o3d  # a runtime dependency, imported here: the database loader does not need it

    center = np.asarray(center, np.float64)
    side = 2.2 * radius  # the cube around the 1.1-radius sphere that depth is cut to
    # A uniform volume: the object's cube is known. (Open3D 0.20's ScalableTSDFVolume returned an
    # empty surface from the same input here.)
    volume = o3d.pipelines.integration.UniformTSDFVolume(
        length=side, resolution=voxels_across, sdf_trunc=4.0 * side / voxels_across,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8,
        origin=(center - side / 2).reshape(3, 1))
    used = 0
    for depth, rgb, K, R, t in views:
        depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
        depth = _inside_sphere(depth, K, R, t, center, 1.1 * radius)
        if np.count_nonzero(depth) >= 50:
            height, width = depth.shape
            color = rgb if rgb is not None else np.full((height, width, 3), 160, np.uint8)
            rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
                o3d.geometry.Image(np.ascontiguousarray(color, dtype=np.uint8)), o3d.geometry.Image(depth),
                depth_scale=1.0, depth_trunc=1e6, convert_rgb_to_intensity=False)
            intrinsic = o3d.camera.PinholeCameraIntrinsic(width, height, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
            extrinsic = np.eye(4)
            extrinsic[:3, :3], extrinsic[:3, 3] = R, t
            volume.integrate(rgbd, intrinsic, extrinsic)
            used += 1
        if on_view is not None:
            on_view()
    if used == 0:
        raise ReconstructionError("no reference view has depth on the object (fewer than 50 pixels inside its "
                                  "bounding sphere): check depth_scale and that depth is registered to colour")
    fused = volume.extract_triangle_mesh()
    if len(fused.triangles) == 0:
        raise ReconstructionError(f"fusing the depth of {used} views gave no surface: the depth maps do not agree "
                                  "with the poses (check the pose convention and depth_scale)")
    clusters, counts, _ = (np.asarray(a) for a in fused.cluster_connected_triangles())
    fused.remove_triangles_by_mask(clusters != int(np.argmax(counts)))
    fused.remove_unreferenced_vertices()
    if len(fused.triangles) > max_faces:
        fused = fused.simplify_quadric_decimation(target_number_of_triangles=max_faces)
    colors = (np.clip(np.asarray(fused.vertex_colors), 0.0, 1.0) * 255).astype(np.uint8)
    mesh = trimesh.Trimesh(np.asarray(fused.vertices), np.asarray(fused.triangles), vertex_colors=colors,
                           process=True)
    mesh.fix_normals()  # marching cubes' winding is consistent; this only orients it outward
    return mesh


def cut_support_plane(depth: np.ndarray, K: np.ndarray, tol: float = 0.008) -> np.ndarray:
    """``depth`` without the dominant plane (the table the object stands on) and what lies behind
    it: for views without a mask, whose depth around the object is mostly table. Unchanged when
    no plane holds a fifth of the points (no table in view)."""
    cam, rc = backproject_depth(depth, K, return_pixels=True)
    plane = fit_support_plane(cam[::max(1, len(cam) // 5000)], tol=tol)
    if plane is None:
        return depth
    on_or_behind = cam @ plane[:3] + plane[3] < max(tol, 0.01 * float(np.median(cam[:, 2])))
    out = depth.copy()
    out[rc[on_or_behind, 0], rc[on_or_behind, 1]] = 0.0
    return out


def _inside_sphere(depth: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray, center: np.ndarray,
                   radius: float) -> np.ndarray:
    """``depth`` with pixels whose point lies outside the sphere (object frame) set to 0."""
    cam, rc = backproject_depth(depth, K, return_pixels=True)
    obj = (cam - t) @ R  # camera -> object frame, row-wise R^T (p - t)
    outside = np.linalg.norm(obj - center, axis=1) > radius
    out = depth.copy()
    out[rc[outside, 0], rc[outside, 1]] = 0.0
    return out

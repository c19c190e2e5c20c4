"""Object databases of the model-free mode: posed photos -> object frame, size, references.

``sixd-pose build-object --images DIR --name NAME`` writes ``objects/NAME/``, the same folder
layout and ``object.json`` conventions as the known-model databases
(:mod:`sixd_pose_ros.objects.database`), with ``"mode": "model_free"`` and no codebook::

    object.json      what the folder holds and how it was built (below)
    references.npz   ReferenceSet: every photo warped to its object-centred crop
    mesh.ply         with metric depth only: the surface fused from the reference depth maps

The steps, each a function here:

1. **Read** the posed photos (:func:`~sixd_pose_ros.objects.posed_images.read_posed_images`).
2. **Object frame** (:func:`estimate_object_geometry`): the axes are the input's (BOP ground
   truth, a given object pose), the axis hints (``up`` = +z, ``forward`` = +x), or else the
   world's; the origin is the given one or else the object centre.
3. **Centre and size**, from the best evidence present:

   - *depth* (metric inputs): every view's depth inside its mask (or inside the given box, or
     else inside the sphere of step 4's estimate) is back-projected into the world; the centre
     is the middle of the points' box in the object axes and the size the farthest point from
     it, after dropping stray points outside the 0.5..99.5 percentile box (widened by 5 %);
     when the input locates the object, only the connected piece of points (1 cm voxels)
     nearest to the given location is kept, and BOP masks are first eroded by 2 pixels;
   - a *point cloud* or *box* from the user: its box centre; the farthest point or box corner;
   - *object-centred poses* (BOP ground truth, a given object pose), no depth: the centre is
     the object frame's origin, the size from the masks as below;
   - *masks* (no depth): the centre is the least-squares point nearest to the rays through
     every mask's centroid, the size ``max_i d_i sin(a_i)`` with ``a_i`` the silhouette's
     largest angle from that centre's direction (a lower bound, tight with many views);
   - *cameras only*: the least-squares point nearest to every optical axis, and the largest
     sphere around it inside every view frustum (an upper bound: the object may be smaller).

4. **Consistency** (:func:`check_views`): the centre must be in front of and inside every
   view, and every camera outside the bounding sphere; otherwise the build stops naming the
   views (a pose in the wrong convention, a wrong unit, a photo of something else). When the
   input locates the object (BOP ground truth, a given object pose, centre, box or point
   cloud), frames that do not show it are instead left out before this step
   (:mod:`~sixd_pose_ros.objects.view_visibility`: low ``visib_fract``, centre outside the
   image, empty mask, no depth on it) and after it (the estimated centre outside the image),
   each listed with its reason in ``object.json`` ``coverage.left_out`` and the build notes.
5. **References**: every photo is warped with
   :func:`~sixd_pose_ros.objects.references.warp_to_object`; the viewpoint selector and the
   detector use farthest-point subsets of them (64 and 32 by default), whose indices
   ``object.json`` records.
6. **Coverage** (:func:`coverage_report`): which directions of an icosphere (162 by default)
   have no reference within 30 degrees, with the largest gap in words ("from below").
7. **Surface** (metric depth only, :mod:`~sixd_pose_ros.objects.reconstruction`): the masked
   reference depth maps fused into one mesh in the object frame, which the estimator aligns
   to the query's depth as known-model mode aligns a CAD mesh. When the depth gives no
   surface, the build notes why and the object works through the selector alone.

``object.json`` (model-free) records: ``mode``; ``name``; ``metric`` (``true`` when lengths
are meters: depth, BOP, a folder in m/mm, COLMAP with ``meters_per_unit``; ``false`` for an
arbitrary scale, e.g. COLMAP alone, so that the estimator can warn); ``unit`` (``"m"`` or
``"arbitrary"``); ``object_frame`` (how it was fixed, and ``to_input``: the 4x4
object-to-input-world transform, so poses can be mapped back to the input's frame);
``normalization`` (``center`` in the object frame, ``scale`` = bounding radius); ``diameter``
and its ``diameter_source``; ``geometry`` (the sources of centre and size); ``references``
(file, count, crop size, image names, ``selector`` / ``detector`` subset indices, sha256);
``coverage`` (with ``left_out``: the frames not used and why); ``source`` (input format,
folder, pose file hash, ``n_images`` read and ``n_used``, notes); ``weights`` (identities
of the shipped networks at build time, for the record: references do not depend on them);
``mesh`` (``null``, or with metric depth the fused surface: file, sha256, method, size; see
step 7); ``codebook`` (``null``); ``build`` (timings). The folder is written atomically.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    import trimesh

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry.crop_camera import DegenerateReferenceError
from sixd_pose_ros.geometry.normalization import ObjectNormalization, object_diameter
from sixd_pose_ros.geometry.pinhole import backproject_depth
from sixd_pose_ros.geometry.sampling import farthest_point_sampling, icosphere_vertices
from sixd_pose_ros.io import atomic_output_dir, atomic_write_text, file_sha256
from sixd_pose_ros.objects.database import (
    _FORMAT_TAG,  # one tag for both modes: a folder is an object database either way
    _NAME_RE,
    OBJECT_DB_FORMAT_VERSION,
    _package_version,
    shipped_weight_ids,
)
from sixd_pose_ros.objects.posed_images import (
    MIN_REFERENCES,
    PosedImageSet,
    PosedView,
    read_posed_images,
)
from sixd_pose_ros.objects.reconstruction import ReconstructionError, cut_support_plane, fuse_depth_views
from sixd_pose_ros.objects.references import (
    ReferenceFormatError,
    ReferenceSet,
    references_from_frames,
)
from sixd_pose_ros.objects.view_visibility import (
    MIN_VISIB_FRACT,
    LeftOutView,
    leave_out_unseen,
    summarize_left_out,
)

__all__ = [
    "COVERAGE_MAX_ANGLE_DEG",
    "COVERAGE_SUBDIVISIONS",
    "DEFAULT_DETECTOR_REFERENCES",
    "DEFAULT_SELECTOR_REFERENCES",
    "CoverageReport",
    "ModelFreeDatabase",
    "ModelFreeDatabaseError",
    "ObjectGeometry",
    "UnseenViewsError",
    "build_model_free_database",
    "build_summary",
    "check_views",
    "coverage_report",
    "direction_in_words",
    "estimate_object_geometry",
    "load_model_free_database",
    "metric_scale_from_depth",
]

DEFAULT_SELECTOR_REFERENCES = 64
DEFAULT_DETECTOR_REFERENCES = 32
#: Icosphere level of the coverage directions: 162 directions, about 17 degrees apart.
COVERAGE_SUBDIVISIONS = 2
#: A direction is covered when a reference views the object from within this angle of it;
#: about what the selector + refiner recover from (Gen6D's refiner starts within ~30 degrees).
COVERAGE_MAX_ANGLE_DEG = 30.0
_MIN_DEPTH_POINTS = 100
#: Largest median relative depth disagreement at which a scale found from depth is trusted.
_MAX_DEPTH_RESIDUAL = 0.05
_POINTS_PER_VIEW = 4000
#: Voxel side (m) of the connectivity test that drops depth strays of located objects.
_VOXEL_M = 0.01
_MODE = "model_free"


class ModelFreeDatabaseError(SixdPoseError):
    """A model-free object database cannot be built or loaded; the message names the fix."""


class UnseenViewsError(ModelFreeDatabaseError):
    """Some views do not see the estimated object centre; ``names`` are those views and
    ``reasons`` why each (behind the camera, outside the image). For object-centred inputs the
    build leaves them out; otherwise the user must drop or fix them."""

    def __init__(self, message: str, names: list[str], reasons: list[str]) -> None:
        super().__init__(message)
        self.names = names
        self.reasons = reasons


# ------------------------------------------------------------------------------------------------
# Object frame, centre and size
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectGeometry:
    """The object frame in the input world, and the object's centre and size.

    Attributes:
        R_o2w: ``(3, 3)`` object axes in the world (columns).
        t_o2w: ``(3,)`` object origin in the world (input units).
        normalization: centre in the object frame and bounding radius (input units).
        diameter: object diameter (input units); an upper bound unless from depth/points.
        frame_source, center_source, size_source, diameter_source: where each came from.
        axis_spread: smallest eigenvalue of ``mean(I - d d^T)`` over the optical axes ``d``
            (0 = all parallel, 2/3 = spread over the whole sphere).
    """

    R_o2w: np.ndarray
    t_o2w: np.ndarray
    normalization: ObjectNormalization
    diameter: float
    frame_source: str
    center_source: str
    size_source: str
    diameter_source: str
    axis_spread: float

    @property
    def center_world(self) -> np.ndarray:
        """``(3,)`` object centre in the world."""
        return self.R_o2w @ self.normalization.center + self.t_o2w

    def pose(self, view: PosedView) -> tuple[np.ndarray, np.ndarray]:
        """Object-to-camera pose of a view: ``R = R_w2c R_o2w``, ``t = R_w2c t_o2w + t_w2c``."""
        return view.R_w2c @ self.R_o2w, view.R_w2c @ self.t_o2w + view.t_w2c

    def to_input(self) -> np.ndarray:
        """``(4, 4)`` object-to-input-world transform."""
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.R_o2w, self.t_o2w
        return T


def _nearest_point_to_lines(origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares point nearest to lines ``origins + s dirs`` ``(N, 3)``: solves
    ``sum (I - d d^T) x = sum (I - d d^T) o``. Returns the point and the smallest eigenvalue of
    the mean normal matrix (how well the lines' directions pin the point down)."""
    d = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A = P.sum(axis=0)
    b = np.einsum("nij,nj->i", P, origins)
    spread = float(np.linalg.eigvalsh(A / len(d))[0])
    return np.linalg.lstsq(A, b, rcond=None)[0], spread


def _frustum_radius(view: PosedView, center_w: np.ndarray) -> float:
    """Radius of the largest sphere around ``center_w`` inside the view's frustum: the smallest
    distance from the centre to the four side planes (through the optical centre and two image
    corners at the pixel edges ``-0.5`` and ``W - 0.5``). Negative when the centre is outside."""
    p = view.R_w2c @ center_w + view.t_w2c
    w, h = view.width - 0.5, view.height - 0.5
    corners = np.array([[-0.5, -0.5, 1.0], [w, -0.5, 1.0], [w, h, 1.0], [-0.5, h, 1.0]])
    rays = corners @ np.linalg.inv(view.K).T
    inside = np.linalg.inv(view.K) @ np.array([0.5 * (w - 0.5), 0.5 * (h - 0.5), 1.0])
    dist = []
    for k in range(4):
        n = np.cross(rays[k], rays[(k + 1) % 4])
        n /= np.linalg.norm(n)
        if n @ inside < 0:
            n = -n
        dist.append(float(n @ p))
    return min(dist)


def _sphere_of_points(points: np.ndarray, robust: bool) -> tuple[np.ndarray, float, np.ndarray]:
    """Box centre and farthest-point radius of ``(N, 3)`` points (object axes). ``robust``
    first drops stray points (depth at mask edges, sensor noise) outside the 0.5..99.5 percentile
    box widened by 5 % of its size on each side. Returns ``(centre, radius, kept points)``."""
    if robust:
        lo, hi = np.percentile(points, [0.5, 99.5], axis=0)
        pad = 0.05 * (hi - lo)
        keep = np.all((points >= lo - pad) & (points <= hi + pad), axis=1)
        points = points[keep]
    center = 0.5 * (points.min(axis=0) + points.max(axis=0))
    radius = float(np.linalg.norm(points - center, axis=1).max())
    return center, radius, points


def _component_near(points: np.ndarray, anchor: np.ndarray, voxel: float = _VOXEL_M) -> np.ndarray:
    """The points of the 26-connected voxel component nearest to ``anchor`` (world).

    Real masks (e.g. YCB-V's label images) bleed onto the background and onto neighbours, so a
    few percent of the masked depth lies 10-30 cm away: enough to double the size from the
    farthest point, and too many for the percentile cut. When the input locates the object, the
    object's own points are the piece of surface around that location; strays are separate.
    """
    from scipy import ndimage

    idx = np.floor((points - points.min(axis=0)) / voxel).astype(np.int64)
    grid = np.zeros(tuple(idx.max(axis=0) + 1), dtype=bool)
    grid[tuple(idx.T)] = True
    labels, n = ndimage.label(grid, structure=np.ones((3, 3, 3)))
    if n <= 1:
        return points
    of_point = labels[tuple(idx.T)]
    dist = np.linalg.norm(points - anchor, axis=1)
    nearest = np.full(n + 1, np.inf)
    np.minimum.at(nearest, of_point, dist)
    return points[of_point == int(np.argmin(nearest))]


@dataclass
class _ViewEvidence:
    """What one pass over the masks and depth maps gives (loaded once per view)."""

    centroid: np.ndarray | None  # (2,) mask centroid, pixels
    contour: np.ndarray | None  # (M, 2) silhouette outline, pixels
    points_w: np.ndarray | None  # (P, 3) depth points in the world (masked when a mask exists)


def _gather_evidence(images: PosedImageSet, use_depth: bool) -> list[_ViewEvidence]:
    out = []
    empty = []
    # BOP masks are drawn from labels or the model, not from this depth: at their edges the depth
    # is often the background's, so only the mask's inside gives depth points. (A capture's
    # masks are cut from its own depth and keep thin parts, so they are used whole.)
    erode = np.ones((5, 5), np.uint8) if images.format == "bop" else None
    for v in images.views:
        mask = v.load_mask()
        centroid = contour = None
        if mask is not None:
            m8 = mask.astype(np.uint8)
            moments = cv2.moments(m8, binaryImage=True)
            if moments["m00"] <= 0:
                empty.append(v.name)
                continue
            centroid = np.array([moments["m10"], moments["m01"]]) / moments["m00"]
            cs, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            contour = np.concatenate([c.reshape(-1, 2) for c in cs]).astype(np.float64)
        points_w = None
        depth = v.load_depth() if use_depth else None
        if depth is not None:
            inner = mask
            if mask is not None and erode is not None:
                inner = cv2.erode(mask.astype(np.uint8), erode) > 0
                inner = inner if inner.any() else mask
            pts = backproject_depth(depth, v.K, inner)
            if len(pts) > _POINTS_PER_VIEW:  # strided, deterministic subsample
                pts = pts[:: math.ceil(len(pts) / _POINTS_PER_VIEW)]
            points_w = (pts - v.t_w2c) @ v.R_w2c  # R^T (p - t), row-wise
        out.append(_ViewEvidence(centroid, contour, points_w))
    if empty:
        listed = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise ModelFreeDatabaseError(
            f"the masks of {len(empty)} image(s) are empty ({listed}): the object is not in "
            "them; fix those masks or remove the images")
    return out


def _silhouette_radius(views: list[PosedView], evidence: list[_ViewEvidence],
                       center_w: np.ndarray) -> float:
    best = 0.0
    for v, e in zip(views, evidence):
        if e.contour is None:
            continue
        to_c = center_w - v.camera_center
        dist = float(np.linalg.norm(to_c))
        cosines = v.pixel_ray(e.contour) @ (to_c / dist)
        angle = float(np.arccos(np.clip(cosines.min(), -1.0, 1.0)))
        angle += 0.5 / float(np.sqrt(v.K[0, 0] * v.K[1, 1]))  # the pixels' half width
        best = max(best, dist * math.sin(min(angle, 0.5 * math.pi)))
    return best


def check_views(views: list[PosedView], center_w: np.ndarray, radius: float | None,
                center_source: str, fmt: str) -> None:
    """Every view must see the object centre (in front of it, inside the image) and every
    camera must be outside the bounding sphere; otherwise raise, naming the views and the fix.

    Raises:
        UnseenViewsError: some (not all) views miss the centre; it lists them all.
        ModelFreeDatabaseError: every view (or, for the user's own geometry, most views) misses
            it, or a camera is inside the sphere.
    """
    behind, outside, inside_sphere = [], [], []
    for v in views:
        p = v.R_w2c @ center_w + v.t_w2c
        if p[2] <= 0:
            behind.append(v.name)
            continue
        u = v.K @ (p / p[2])
        if not (-0.5 <= u[0] <= v.width - 0.5 and -0.5 <= u[1] <= v.height - 0.5):
            outside.append(v.name)
        elif radius is not None and np.linalg.norm(p) <= radius:
            inside_sphere.append(v.name)
    bad = len(behind) + len(outside)
    user_geometry = center_source in ("point_cloud", "box", "given_center")
    # The user's object geometry missed by most views is misplaced, not the poses wrong.
    if bad == len(views) or (user_geometry and 2 * bad > len(views)):
        if fmt == "colmap" and user_geometry:
            fix = ("check that object_point_cloud.ply (or the box) was cropped from this same "
                   "COLMAP reconstruction, in its coordinates")
        elif center_source == "depth":
            fix = ("the depth does not agree with the poses: check depth_scale (meters per "
                   "stored depth unit, e.g. 0.001 for millimeters) and the pose units")
        elif center_source in ("optical_axes", "mask_rays"):
            fix = ("the cameras do not look at a common point: check the pose convention "
                   "(camera_to_world vs world_to_camera, camera_axes opencv vs opengl)")
        else:
            fix = ("check the object centre/box (world frame, same units as the poses) and the "
                   "pose convention (camera_to_world vs world_to_camera)")
        where = "every view" if bad == len(views) else f"{bad} of {len(views)} views"
        raise ModelFreeDatabaseError(
            f"the object (centre from {center_source.replace('_', ' ')}) lies outside {where} "
            f"({len(behind)} behind the camera, {len(outside)} outside the image); {fix}")
    if bad:
        parts = []
        for what, names in (("behind the camera", behind), ("outside the image", outside)):
            if names:
                parts.append(f"{what}: {', '.join(names)}")
        why = ("their optical axes do not meet the others near a common point"
               if center_source == "optical_axes" else "their poses disagree with the others")
        drop = behind + outside
        raise UnseenViewsError(
            f"inconsistent poses: {bad} of {len(views)} views do not see the object centre "
            f"({'; '.join(parts)}); {why}. Remove these {bad} image(s) from the input (or fix "
            f"their poses): {' '.join(drop)}. If the photos locate the object (BOP ground truth, "
            "or an object pose/box in poses.json), frames that do not show it are left out by "
            "themselves", drop,
            ["object centre behind the camera"] * len(behind)
            + ["object centre outside the image"] * len(outside))
    if inside_sphere:
        raise ModelFreeDatabaseError(
            f"{len(inside_sphere)} camera(s) are inside the object's bounding sphere (radius "
            f"{radius:.4g}): {', '.join(inside_sphere[:6])}; the size estimate or these poses are "
            "wrong (check the units and depth_scale, or give the object's box/radius)")


def estimate_object_geometry(images: PosedImageSet) -> ObjectGeometry:
    """Object frame, centre and size of a posed image set (see the module docstring).

    Raises:
        ModelFreeDatabaseError: nearly parallel optical axes, inconsistent poses, the object
            outside the views, empty masks.
    """
    views, hint = images.views, images.hint
    R_o2w = np.eye(3) if hint.R_o2w is None else np.asarray(hint.R_o2w, np.float64)
    use_depth = images.metric and images.has_depth
    evidence = _gather_evidence(images, use_depth)
    centers = np.array([v.camera_center for v in views])
    _, spread = _nearest_point_to_lines(centers, np.array([v.optical_axis for v in views]))

    # Prior centre and radius (world), from the user's geometry or the cameras.
    radius = None
    points_o = None
    if hint.points is not None:
        c_o, radius, _ = _sphere_of_points(np.asarray(hint.points) @ R_o2w, robust=False)
        center_w, center_src, size_src = R_o2w @ c_o, "point_cloud", "point_cloud"
        points_o = np.asarray(hint.points) @ R_o2w
    elif hint.center is not None:
        center_w, center_src = np.asarray(hint.center, np.float64), "given_center"
        if hint.extents is not None:
            radius, size_src = 0.5 * float(np.linalg.norm(hint.extents)), "box"
            center_src = "box"
        elif hint.radius is not None:
            radius, size_src = float(hint.radius), "given_radius"
    elif hint.origin is not None:
        # Object-centred poses (BOP ground truth, a given object pose): the frame's origin is
        # on the object, and the views need not surround it (a real scene's frames may all
        # come from one side), so it is the prior centre; depth refines it below.
        center_w, center_src = np.asarray(hint.origin, np.float64), "object_origin"
    elif images.has_masks:
        rays = np.array([v.pixel_ray(e.centroid) for v, e in zip(views, evidence)])
        center_w, spread = _nearest_point_to_lines(centers, rays)
        center_src = "mask_rays"
    else:
        center_w, center_src = _nearest_point_to_lines(
            centers, np.array([v.optical_axis for v in views]))[0], "optical_axes"
    if center_src in ("mask_rays", "optical_axes") and spread < 1e-2:
        raise ModelFreeDatabaseError(
            f"the {len(views)} photos were all taken from about one direction (their viewing "
            "rays are nearly parallel), so the object's position cannot be found; photograph "
            "the object from around it (or give its centre in the object block)")
    check_views(views, center_w, None, center_src, images.format)

    if radius is None and images.has_masks:
        radius, size_src = _silhouette_radius(views, evidence, center_w), "mask_silhouettes"
    if radius is None:
        radius = min(_frustum_radius(v, center_w) for v in views)
        size_src = "frustum_bound"
    diameter, diameter_src = 2.0 * radius, f"{size_src} (2 x radius)"
    if hint.extents is not None and size_src == "box":
        diameter, diameter_src = float(np.linalg.norm(hint.extents)), "box diagonal"
    if points_o is not None:
        diameter, diameter_src = object_diameter(points_o), "point_cloud"

    # Depth: the measured surface replaces the priors.
    if use_depth:
        pts = [e.points_w for e in evidence if e.points_w is not None and len(e.points_w)]
        pts_w = np.concatenate(pts) if pts else np.empty((0, 3))
        if hint.extents is not None:  # boxed depth
            local = (pts_w - center_w) @ R_o2w
            pts_w = pts_w[np.all(np.abs(local) <= 0.5 * hint.extents, axis=1)]
        elif not images.has_masks:  # no mask and no box: the prior sphere (may catch a table)
            pts_w = pts_w[np.linalg.norm(pts_w - center_w, axis=1) <= radius]
        if hint.located and len(pts_w) >= _MIN_DEPTH_POINTS:
            pts_w = _component_near(pts_w, hint.location)
        if len(pts_w) >= _MIN_DEPTH_POINTS:
            c_o, radius, kept = _sphere_of_points(pts_w @ R_o2w, robust=True)
            center_w, center_src, size_src = R_o2w @ c_o, "depth", "depth"
            rng = np.random.default_rng(0)
            sample = kept if len(kept) <= 20000 else kept[rng.choice(len(kept), 20000, False)]
            diameter, diameter_src = object_diameter(sample), "depth"
        else:
            images.notes.append(f"depth gave only {len(pts_w)} object points (need "
                                f"{_MIN_DEPTH_POINTS}); centre and size come from "
                                f"{center_src.replace('_', ' ')} and {size_src.replace('_', ' ')}")
    if not radius > 0 or not np.isfinite(radius):
        raise ModelFreeDatabaseError(
            f"the object's size from {size_src.replace('_', ' ')} is {radius}; give masks, "
            "depth or the object's box")
    check_views(views, center_w, radius, center_src, images.format)

    origin = center_w if hint.origin is None else np.asarray(hint.origin, np.float64)
    norm = ObjectNormalization(center=R_o2w.T @ (center_w - origin), scale=radius)
    return ObjectGeometry(R_o2w=R_o2w, t_o2w=origin, normalization=norm, diameter=float(diameter),
                          frame_source=hint.frame_source, center_source=center_src,
                          size_source=size_src, diameter_source=diameter_src,
                          axis_spread=float(spread))


# ------------------------------------------------------------------------------------------------
# Metric scale from reference depth (poses in an arbitrary unit)
# ------------------------------------------------------------------------------------------------

_DEPTH_STRIDE = 4  # depth maps are compared at 1/4 resolution: plenty for one scalar


def _depth_residual(sigma: float, views: list[PosedView], points: list[np.ndarray],
                    depths: list[np.ndarray], neighbours: np.ndarray) -> tuple[float, int]:
    """Median relative disagreement between the depth of view ``i``'s points moved into view
    ``j`` (with ``sigma`` meters per pose unit) and view ``j``'s measured depth there."""
    res = []
    for i, js in enumerate(neighbours):
        if not len(points[i]):
            continue
        X_w = (points[i] / sigma - views[i].t_w2c) @ views[i].R_w2c  # pose units, world
        for j in js:
            X = X_w @ views[j].R_w2c.T + views[j].t_w2c
            X = X[X[:, 2] > 0]
            uv = X @ views[j].K.T
            u = np.rint(uv[:, 0] / uv[:, 2] / _DEPTH_STRIDE).astype(np.int64)
            v = np.rint(uv[:, 1] / uv[:, 2] / _DEPTH_STRIDE).astype(np.int64)
            d = depths[j]
            ok = (u >= 0) & (v >= 0) & (u < d.shape[1]) & (v < d.shape[0])
            measured = d[v[ok], u[ok]]
            z = sigma * X[ok, 2]
            has = measured > 0
            res.append(np.abs(z[has] - measured[has]) / measured[has])
    r = np.concatenate(res) if res else np.empty(0)
    return (float(np.median(r)) if len(r) else np.inf), len(r)


def metric_scale_from_depth(images: PosedImageSet) -> tuple[float, float]:
    """Meters per pose unit of a posed set whose poses have an arbitrary unit but whose views
    have depth (COLMAP-like poses from RGB-D photos).

    Depth is metric and the poses are right up to one scale ``sigma``: only at the true
    ``sigma`` do one view's depth points, moved into a neighbouring view (the two views closest
    in viewing direction), land on that view's measured depth. A 1D search (log grid over
    1/4..4 times a first guess, then a finer one) minimizes the median relative depth
    disagreement; the first guess is median depth (m) over distance to the optical axes'
    meeting point (units). A 1D search rather than a correspondence solve, because it needs no
    matching and the median ignores occlusions and mask bleed.

    Returns:
        ``(sigma, residual)``: meters per unit and the median relative depth disagreement.
    """
    views = [v for v in images.views if v.depth_path is not None]
    if len(views) < 2:
        raise ModelFreeDatabaseError("finding the metric scale from depth needs depth in at "
                                     "least two views; add depth or give metric poses")
    points, depths, first = [], [], []
    center, _ = _nearest_point_to_lines(np.array([v.camera_center for v in views]),
                                        np.array([v.optical_axis for v in views]))
    for v in views:
        depth, mask = v.load_depth(), v.load_mask()
        depths.append(depth[::_DEPTH_STRIDE, ::_DEPTH_STRIDE])  # pixel u -> index u / stride
        pts = backproject_depth(depth, v.K, mask)
        pts = pts[:: max(1, len(pts) // 300)]
        points.append(pts)
        if len(pts):
            first.append(np.median(pts[:, 2]) / max(np.linalg.norm(center - v.camera_center),
                                                     1e-12))
    if not first:
        raise ModelFreeDatabaseError("the depth images hold no measurement; fix depth_scale or "
                                     "the depth files")
    dirs = np.array([v.optical_axis for v in views])
    neighbours = np.argsort(-(dirs @ dirs.T), axis=1)[:, 1:3]
    guess = float(np.median(first))
    best = (np.inf, guess)
    for span, n in ((4.0, 57), (1.1, 41)):
        grid = (best[1] if np.isfinite(best[0]) else guess) * np.geomspace(1 / span, span, n)
        for sigma in grid:
            r, count = _depth_residual(float(sigma), views, points, depths, neighbours)
            if count >= 50 and r < best[0]:
                best = (r, float(sigma))
    return best[1], best[0]


def _scaled(images: PosedImageSet, sigma: float) -> PosedImageSet:
    """The set with every length times ``sigma`` (poses, object block), marked metric."""
    h = images.hint
    hint = replace(h, origin=None if h.origin is None else h.origin * sigma,
                   center=None if h.center is None else h.center * sigma,
                   extents=None if h.extents is None else h.extents * sigma,
                   radius=None if h.radius is None else h.radius * sigma,
                   points=None if h.points is None else h.points * sigma)
    views = [replace(v, t_w2c=v.t_w2c * sigma) for v in images.views]
    return replace(images, views=views, hint=hint, metric=True, notes=list(images.notes))


# ------------------------------------------------------------------------------------------------
# Coverage
# ------------------------------------------------------------------------------------------------

_SIDES = ("front", "front-left", "left", "back-left", "back", "back-right", "right",
          "front-right")


def direction_in_words(direction: np.ndarray) -> str:
    """A viewing direction (object frame, from the centre toward the camera) in words.

    The object frame reads as REP 103 body axes: +x front, +y left, +z up. Above 60 degrees of
    elevation it is "from above", below -60 "from below"; otherwise the side (8 sectors of 45
    degrees), with "above"/"below" past 20 degrees, e.g. "from the back-left, below".
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    elevation = math.degrees(math.asin(float(np.clip(d[2], -1.0, 1.0))))
    if elevation > 60.0:
        return "from above"
    if elevation < -60.0:
        return "from below"
    azimuth = math.degrees(math.atan2(d[1], d[0])) % 360.0
    side = _SIDES[int(((azimuth + 22.5) % 360.0) // 45.0)]
    tilt = ", above" if elevation > 20.0 else ", below" if elevation < -20.0 else ""
    return f"from the {side}{tilt}"


@dataclass(frozen=True)
class CoverageReport:
    """Which viewing directions have a reference nearby.

    Attributes:
        n_directions: icosphere directions tested (162 for level 2).
        max_angle_deg: a direction is covered when a reference is within this angle.
        covered_fraction: covered directions / all.
        upper_fraction, lower_fraction: the same over directions with ``z > 0`` / ``z < 0``.
        largest_gap_deg: angle from the worst direction to its nearest reference.
        largest_gap_direction: ``(3,)`` that direction (object frame).
        uncovered: ``(M, 3)`` the uncovered directions.
    """

    n_directions: int
    max_angle_deg: float
    covered_fraction: float
    upper_fraction: float
    lower_fraction: float
    largest_gap_deg: float
    largest_gap_direction: np.ndarray
    uncovered: np.ndarray

    @property
    def largest_gap_words(self) -> str:
        return direction_in_words(self.largest_gap_direction)

    def summary(self) -> str:
        """A two-line summary for people."""
        line = (f"coverage: {100 * self.covered_fraction:.0f}% of {self.n_directions} viewing "
                f"directions have a reference within {self.max_angle_deg:.0f} deg (upper "
                f"hemisphere {100 * self.upper_fraction:.0f}%, lower "
                f"{100 * self.lower_fraction:.0f}%)")
        if self.covered_fraction >= 1.0:
            return line + f"; largest gap {self.largest_gap_deg:.0f} deg"
        return (line + f"\n  largest gap: {self.largest_gap_deg:.0f} deg "
                f"{self.largest_gap_words}; add photos from there")

    def to_json(self) -> dict:
        return {
            "n_directions": self.n_directions, "max_angle_deg": self.max_angle_deg,
            "covered_fraction": self.covered_fraction, "upper_fraction": self.upper_fraction,
            "lower_fraction": self.lower_fraction, "largest_gap_deg": self.largest_gap_deg,
            "largest_gap_direction": np.round(self.largest_gap_direction, 4).tolist(),
            "largest_gap_words": self.largest_gap_words,
            "uncovered": np.round(self.uncovered, 4).tolist(),
        }


def coverage_report(directions: np.ndarray, subdivisions: int = COVERAGE_SUBDIVISIONS,
                    max_angle_deg: float = COVERAGE_MAX_ANGLE_DEG) -> CoverageReport:
    """Coverage of the viewing sphere by reference directions.

    Args:
        directions: ``(N, 3)`` reference viewing directions (object frame, centre -> camera),
            e.g. :meth:`ReferenceSet.view_directions`.
        subdivisions: icosphere level of the tested directions (1: 42, 2: 162, 3: 642).
        max_angle_deg: covered when a reference is within this angle.
    """
    refs = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    refs = refs / np.linalg.norm(refs, axis=1, keepdims=True)
    grid = icosphere_vertices(subdivisions)
    nearest = np.degrees(np.arccos(np.clip((grid @ refs.T).max(axis=1), -1.0, 1.0)))
    covered = nearest <= max_angle_deg
    worst = int(np.argmax(nearest))
    upper, lower = grid[:, 2] > 1e-9, grid[:, 2] < -1e-9
    return CoverageReport(
        n_directions=len(grid), max_angle_deg=float(max_angle_deg),
        covered_fraction=float(covered.mean()), upper_fraction=float(covered[upper].mean()),
        lower_fraction=float(covered[lower].mean()), largest_gap_deg=float(nearest[worst]),
        largest_gap_direction=grid[worst].copy(), uncovered=grid[~covered].copy())


# ------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------


def _concat(sets: list[ReferenceSet]) -> ReferenceSet:
    size = sets[0].size
    depth = None
    if any(s.depth is not None for s in sets):
        zeros = np.zeros((1, size, size), np.float32)
        depth = np.concatenate([zeros if s.depth is None else s.depth for s in sets])
    masks = None if sets[0].masks is None else np.concatenate([s.masks for s in sets])
    return ReferenceSet(
        images=np.concatenate([s.images for s in sets]), masks=masks,
        K=np.concatenate([s.K for s in sets]), R=np.concatenate([s.R for s in sets]),
        t=np.concatenate([s.t for s in sets]), normalization=sets[0].normalization, depth=depth)


def _warp_references(images: PosedImageSet, geometry: ObjectGeometry, size: int,
                     progress: bool) -> ReferenceSet:
    """Warp the photos one at a time (a few hundred full images never sit in memory)."""
    from tqdm import tqdm

    use_depth = images.metric and images.has_depth
    sets = []
    for v in tqdm(images.views, desc="warp references", unit="img", disable=not progress,
                  leave=False):
        rgb, depth, mask = v.load()
        R, t = geometry.pose(v)
        try:
            sets.append(references_from_frames(
                [(rgb, v.K, R, t, mask, depth if use_depth else None)],
                geometry.normalization, size))
        except DegenerateReferenceError as exc:
            raise ModelFreeDatabaseError(f"image {v.name}: {exc}") from exc
    return _concat(sets)


def _reconstruct(images: PosedImageSet, geometry: ObjectGeometry, path: Path, progress: bool) -> dict:
    """Fuse the reference depth into ``path`` (a PLY mesh in the object frame, meters); what
    ``object.json`` records under ``mesh`` (``None`` when the depth gives no surface: the
    object still works, through the selector alone, and the build notes why)."""
    from tqdm import tqdm

    def views():
        for v in images.views:
            depth, mask = v.load_depth(), v.load_mask()
            depth = np.where(mask, depth, 0.0) if mask is not None else cut_support_plane(depth, v.K)
            yield (depth, v.load_rgb(), v.K, *geometry.pose(v))

    norm = geometry.normalization
    with tqdm(total=len(images), desc="fuse reference depth", unit="img", disable=not progress,
              leave=False) as bar:
        mesh = fuse_depth_views(views(), norm.center, norm.scale, on_view=lambda: bar.update(1))
    mesh.export(path)
    return {"file": path.name, "sha256": file_sha256(path), "source": "reference_depth",
            "method": f"TSDF fusion of {len(images)} depth maps (Open3D), largest piece, decimated",
            "vertices": len(mesh.vertices), "faces": len(mesh.faces),
            "watertight": bool(mesh.is_watertight), "unit": "m"}


def _selector_weight_id() -> str | None:
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR

    path = Path(WEIGHTS_DIR) / "selector.pt"
    return file_sha256(path) if path.is_file() else None


def _require_enough(images: PosedImageSet, left_out: list[LeftOutView]) -> None:
    """At least :data:`MIN_REFERENCES` usable views, else an error that says what was left out."""
    if len(images) >= MIN_REFERENCES:
        return
    why = ""
    if left_out:
        why = (f" ({summarize_left_out(left_out, len(images) + len(left_out))}; lower "
               "min_visib_fract only if those frames really show it)")
    raise ModelFreeDatabaseError(
        f"{images.source} has {len(images)} posed image(s) of the object{why}; model-free mode "
        f"needs at least {MIN_REFERENCES} (better 32-128) from around it: add photos")


def build_model_free_database(
    images: str | os.PathLike | PosedImageSet,
    name: str,
    out_dir: str | os.PathLike = "objects",
    *,
    fmt: str = "auto",
    obj_id: int | None = None,
    overwrite: bool = False,
    size: int = 128,
    n_selector: int = DEFAULT_SELECTOR_REFERENCES,
    n_detector: int = DEFAULT_DETECTOR_REFERENCES,
    coverage_subdivisions: int = COVERAGE_SUBDIVISIONS,
    coverage_angle_deg: float = COVERAGE_MAX_ANGLE_DEG,
    progress: bool = True,
    reconstruct: bool = True,
    min_visib_fract: float = MIN_VISIB_FRACT,
) -> Path:
    """Build ``out_dir/name/`` from posed photos (atomic: all or nothing).

    Args:
        images: the input folder (read with ``fmt`` / ``obj_id``), or an already read set.
        name: object name: letters, digits and ``_``, starting with a letter.
        out_dir: parent folder of the object folders.
        fmt: ``"auto"``, ``"folder"``, ``"bop"`` or ``"colmap"``.
        obj_id: BOP object id (scenes with several objects).
        overwrite: replace an existing folder (atomically).
        size: reference crop side ``S`` in pixels.
        n_selector, n_detector: sizes of the farthest-point subsets (capped at the count).
        coverage_subdivisions, coverage_angle_deg: see :func:`coverage_report`.
        progress: tqdm bars while warping and fusing.
        reconstruct: with metric depth, fuse it into ``mesh.ply``
            (:mod:`~sixd_pose_ros.objects.reconstruction`), which the estimator aligns to the
            query's depth.
        min_visib_fract: when the poses locate the object, frames whose ``visib_fract`` (BOP
            ``scene_gt_info.json``) is below this are left out
            (:func:`~sixd_pose_ros.objects.view_visibility.leave_out_unseen`).

    Returns:
        The object folder.

    Raises:
        ModelFreeDatabaseError / PosedImagesError: bad name, fewer than 8 references, masks for
            some images only, inconsistent poses, object outside the views; OutputError: the
            folder exists (without ``overwrite``) or cannot be written.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ModelFreeDatabaseError(
            f"object name {name!r} is not usable: use letters, digits and '_' starting with a "
            "letter (it becomes a ROS topic namespace and TF frame), e.g. --name mug_red")
    if min(n_selector, n_detector) < 1:
        raise ValueError("n_selector and n_detector must be >= 1")
    final = Path(out_dir) / name
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    with atomic_output_dir(final, overwrite=overwrite) as tmp:
        if not isinstance(images, PosedImageSet):
            images = read_posed_images(images, fmt, obj_id)
        n_read = len(images)
        images, left_out = leave_out_unseen(images, min_visib_fract)
        _require_enough(images, left_out)
        with_mask = [v.mask_path is not None for v in images.views]
        if any(with_mask) and not all(with_mask):
            missing = [v.name for v, m in zip(images.views, with_mask) if not m]
            raise ModelFreeDatabaseError(
                f"masks are given for {sum(with_mask)} of {len(with_mask)} images (none for "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); give a mask for "
                "every image or for none")
        seconds["read"] = time.perf_counter() - t0
        t = time.perf_counter()
        metric_source = ("poses" if images.metric else None)
        depth_scale = None
        if not images.metric and images.has_depth:
            sigma, residual = metric_scale_from_depth(images)
            if residual <= _MAX_DEPTH_RESIDUAL:
                images = _scaled(images, sigma)
                metric_source = "reference_depth"
                depth_scale = {"meters_per_unit": sigma, "median_depth_residual": residual}
                images.notes.append(f"metric scale from the reference depth: {sigma:.6g} m per "
                                    f"pose unit (depth agrees to {100 * residual:.1f}%)")
            else:
                images.notes.append(
                    f"depth and poses disagree at every scale (best median disagreement "
                    f"{100 * residual:.0f}%): depth ignored, the scale stays arbitrary; check "
                    "depth_scale and that depth is registered to the colour images")
                images = replace(images, views=[replace(v, depth_path=None)
                                                for v in images.views])
        try:
            geometry = estimate_object_geometry(images)
        except UnseenViewsError as exc:
            if not images.hint.located:
                raise
            # Object-centred poses: the frames that miss the estimated centre just do not show it.
            unseen = [LeftOutView(n, f"{r} (estimated from {len(images)} views)")
                      for n, r in zip(exc.names, exc.reasons)]
            left_out += unseen
            gone = set(exc.names)
            images = replace(images, views=[v for v in images.views if v.name not in gone],
                             notes=list(images.notes) + [summarize_left_out(unseen, len(images))])
            _require_enough(images, left_out)
            geometry = estimate_object_geometry(images)
        seconds["geometry"] = time.perf_counter() - t
        t = time.perf_counter()
        refs = _warp_references(images, geometry, size, progress)
        seconds["warp"] = time.perf_counter() - t
        mesh_info = None
        if reconstruct and images.metric and images.has_depth:
            t = time.perf_counter()
            try:
                mesh_info = _reconstruct(images, geometry, tmp / "mesh.ply", progress)
            except ReconstructionError as exc:
                images.notes.append(f"no surface mesh: {exc}")
            seconds["reconstruct"] = time.perf_counter() - t
        t = time.perf_counter()
        dirs = refs.view_directions()
        selector = farthest_point_sampling(dirs, min(n_selector, len(refs)), 0)
        detector = farthest_point_sampling(dirs, min(n_detector, len(refs)), 0)
        coverage = coverage_report(dirs, coverage_subdivisions, coverage_angle_deg)
        coverage_json = {**coverage.to_json(), "left_out": [v.to_json() for v in left_out]}
        refs.save(tmp / "references.npz")
        seconds["write"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - t0
        ids = shipped_weight_ids()
        weights = {"detector": ids.get("detector"), "refiner": ids.get("refiner"),
                   "selector": _selector_weight_id()}
        pose_file = images.pose_file
        info: dict[str, Any] = {
            "format": _FORMAT_TAG,
            "format_version": OBJECT_DB_FORMAT_VERSION,
            "mode": _MODE,
            "package_version": _package_version(),
            "name": name,
            "unit": "m" if images.metric else "arbitrary",
            "metric": bool(images.metric),
            "metric_source": metric_source,
            "scale_from_depth": depth_scale,
            "mesh": mesh_info,
            "source": {
                "format": images.format, "path": str(Path(images.source).absolute()),
                "pose_file": pose_file.name if pose_file else None,
                "pose_sha256": file_sha256(pose_file) if pose_file and pose_file.is_file()
                else None,
                "n_images": n_read, "n_used": len(images), "notes": list(images.notes),
            },
            "object_frame": {"source": geometry.frame_source,
                             "to_input": np.round(geometry.to_input(), 10).tolist()},
            "normalization": {"center": geometry.normalization.center.tolist(),
                              "scale": geometry.normalization.scale},
            "diameter": geometry.diameter,
            "diameter_source": geometry.diameter_source,
            "geometry": {"center_source": geometry.center_source,
                         "size_source": geometry.size_source,
                         "axis_spread": geometry.axis_spread},
            "symmetry": None,
            "weights": weights,
            "references": {
                "file": "references.npz", "sha256": file_sha256(tmp / "references.npz"),
                "n_views": len(refs), "size": refs.size,
                "distance": float(np.median(refs.t[:, 2])),
                "distance_range": [float(refs.t[:, 2].min()), float(refs.t[:, 2].max())],
                "has_masks": refs.masks is not None, "has_depth": refs.depth is not None,
                "images": [v.name for v in images.views],
                "selector": {"n": len(selector), "indices": selector.tolist()},
                "detector": {"n": len(detector), "indices": detector.tolist()},
            },
            "codebook": None,
            "coverage": coverage_json,
            "build": {"seconds": seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        }
        atomic_write_text(tmp / "object.json", json.dumps(info, indent=1) + "\n")
    return final.absolute()


def build_summary(path: str | os.PathLike) -> str:
    """What ``sixd-pose build-object --images`` prints: counts, sources, scale, coverage."""
    info = json.loads((Path(path) / "object.json").read_text(encoding="utf-8"))
    refs, geo, cov = info["references"], info["geometry"], info["coverage"]
    unit = "m" if info["metric"] else "units"
    lines = [
        (f"built model-free object '{info['name']}' in {path}: {refs['n_views']} references "
        f"from {info['source']['n_images']} {info['source']['format']} images "
        f"(selector {refs['selector']['n']}, detector {refs['detector']['n']})"),
        (f"  object: radius {info['normalization']['scale']:.4g} {unit} "
        f"({geo['size_source'].replace('_', ' ')}), centre from "
        f"{geo['center_source'].replace('_', ' ')}, frame from "
        f"{info['object_frame']['source'].replace('_', ' ')}"),
        "  scale: metric (meters)" if info["metric"] else
        "  scale: ARBITRARY (no depth, no metric poses): poses will be up to scale unless the "
        "query has depth",
        "  " + _coverage_from_json(cov).summary().replace("\n", "\n  "),
    ]
    mesh = info.get("mesh")
    if mesh:
        lines.append(f"  surface: {mesh['faces']} faces fused from the reference depth ({mesh['file']}): "
                     "with depth in the query, poses are chosen and aligned against it")
    lines += [f"  note: {n}" for n in info["source"]["notes"]]
    sec = info["build"]["seconds"]
    fuse = f", fuse {sec['reconstruct']:.1f} s" if "reconstruct" in sec else ""
    lines.append(f"  timings: read {sec['read']:.1f} s, geometry {sec['geometry']:.1f} s, warp "
                 f"{sec['warp']:.1f} s{fuse}, write {sec['write']:.1f} s, total {sec['total']:.1f} s")
    return "\n".join(lines)


def _coverage_from_json(c: dict) -> CoverageReport:
    return CoverageReport(
        n_directions=int(c["n_directions"]), max_angle_deg=float(c["max_angle_deg"]),
        covered_fraction=float(c["covered_fraction"]), upper_fraction=float(c["upper_fraction"]),
        lower_fraction=float(c["lower_fraction"]), largest_gap_deg=float(c["largest_gap_deg"]),
        largest_gap_direction=np.asarray(c["largest_gap_direction"], np.float64),
        uncovered=np.asarray(c["uncovered"], np.float64).reshape(-1, 3))


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class ModelFreeDatabase:
    """A loaded model-free object folder.

    Attributes:
        name: object name.
        references: every reference (normalized units; see ReferenceSet).
        info: the parsed ``object.json``.
        path: the folder.
    """

    name: str
    references: ReferenceSet
    info: dict
    path: Path

    @property
    def metric(self) -> bool:
        """Lengths are meters (else an arbitrary unit: the estimator must warn or use depth)."""
        return bool(self.info["metric"])

    @property
    def normalization(self) -> ObjectNormalization:
        return self.references.normalization

    @property
    def diameter(self) -> float:
        """Object diameter (meters when :attr:`metric`); see ``diameter_source``."""
        return float(self.info["diameter"])

    @property
    def selector_indices(self) -> np.ndarray:
        return np.asarray(self.info["references"]["selector"]["indices"], np.int64)

    @property
    def detector_indices(self) -> np.ndarray:
        return np.asarray(self.info["references"]["detector"]["indices"], np.int64)

    def selector_references(self) -> ReferenceSet:
        """The farthest-point subset for the viewpoint selector (64 by default)."""
        return self.references.subset(self.selector_indices)

    def detector_references(self) -> ReferenceSet:
        """The farthest-point subset for the detector (32 by default)."""
        return self.references.subset(self.detector_indices)

    @property
    def coverage(self) -> CoverageReport:
        return _coverage_from_json(self.info["coverage"])

    def surface_mesh(self) -> "trimesh.Trimesh | None":
        """The surface fused from the reference depth (object frame, meters), or None when the
        database has none (no metric depth, or built before reconstruction existed)."""
        mesh = self.info.get("mesh")
        if not mesh:
            return None
        import trimesh

        return trimesh.load(self.path / mesh["file"], force="mesh", process=False)


def _rebuild(info: dict | None, path: Path) -> str:
    src = ((info or {}).get("source") or {}).get("path") or "YOUR_IMAGES"
    name = (info or {}).get("name") or path.name
    return (f"rebuild it with `sixd-pose build-object --images {src} --name {name} "
            f"--out {path.parent} --overwrite`")


def load_model_free_database(path: str | os.PathLike) -> ModelFreeDatabase:
    """Load and check a model-free object folder.

    Raises:
        ModelFreeDatabaseError: missing folder or file, unreadable or foreign ``object.json``,
            another format version, a known-model folder, a changed or corrupt
            ``references.npz``, subset indices out of range; the message names the fix.
    """
    path = Path(path)
    json_path = path / "object.json"
    if not json_path.is_file():
        raise ModelFreeDatabaseError(
            f"{json_path} does not exist, so {path} is not a (complete) object database; "
            f"{_rebuild(None, path)}, or fix the path")
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFreeDatabaseError(f"{json_path} cannot be read ({exc}); "
                                     f"{_rebuild(None, path)}") from exc
    if not isinstance(info, dict) or info.get("format") != _FORMAT_TAG:
        raise ModelFreeDatabaseError(f"{json_path} is not a sixd_pose_ros object description; "
                                     f"{_rebuild(None, path)}")
    if info.get("format_version") != OBJECT_DB_FORMAT_VERSION:
        raise ModelFreeDatabaseError(
            f"{path} is in object-database format version {info.get('format_version')}, this "
            f"sixd_pose_ros reads {OBJECT_DB_FORMAT_VERSION}; {_rebuild(info, path)}")
    if info.get("mode", "known_model") != _MODE:
        raise ModelFreeDatabaseError(
            f"{path} is a {info.get('mode', 'known_model')} object database (built from a mesh); "
            "use it with the known_model mode, or build a model-free one with `sixd-pose "
            "build-object --images DIR`")
    for key in ("name", "metric", "references", "normalization", "diameter", "coverage"):
        if key not in info:
            raise ModelFreeDatabaseError(f"{json_path} lacks '{key}': it is incomplete; "
                                         f"{_rebuild(info, path)}")
    rinfo = info["references"]
    ref_path = path / rinfo.get("file", "references.npz")
    if not ref_path.is_file():
        raise ModelFreeDatabaseError(f"{ref_path} is missing; {_rebuild(info, path)}")
    if rinfo.get("sha256") and file_sha256(ref_path) != rinfo["sha256"]:
        raise ModelFreeDatabaseError(f"{ref_path} differs from the one the database was built "
                                     f"with (sha256 mismatch); {_rebuild(info, path)}")
    try:
        refs = ReferenceSet.load(ref_path)
    except ReferenceFormatError as exc:
        raise ModelFreeDatabaseError(f"{exc} ({_rebuild(info, path)})") from exc
    mesh = info.get("mesh")
    if mesh:
        mesh_path = path / mesh.get("file", "mesh.ply")
        if not mesh_path.is_file() or (mesh.get("sha256") and file_sha256(mesh_path) != mesh["sha256"]):
            raise ModelFreeDatabaseError(f"{mesh_path} is missing or differs from the one the database was "
                                         f"built with (sha256 mismatch); {_rebuild(info, path)}")
    for role in ("selector", "detector"):
        idx = np.asarray(rinfo[role]["indices"], np.int64)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= len(refs):
            raise ModelFreeDatabaseError(f"{json_path}: the {role} subset indexes outside the "
                                         f"{len(refs)} references; {_rebuild(info, path)}")
    return ModelFreeDatabase(name=info["name"], references=refs, info=info, path=path.absolute())

"""Reference views: object-centred crops with poses, the input of every Gen6D-style stage.

The detector correlates a query image with reference crops, the viewpoint selector picks the
reference whose viewpoint matches the query, and the volume refiner back-projects features of the
nearest references into a feature volume. All of them need the same thing: a set of images of the
object, each with intrinsics and an object-to-camera pose, and all at the *same scale*. This module
builds that set, :class:`ReferenceSet`, in both modes:

- ``known_model``: :func:`render_references` renders the mesh from viewpoints spread over the
  sphere (farthest-point sampling of an icosphere).
- ``model_free``: :func:`references_from_frames` warps the user's posed photos with
  :func:`warp_to_object`.

**Object-centred crop** (what every reference is). Given a camera ``K`` and the object centre
``p`` in that camera's frame (meters), a *virtual camera* is built at the same optical centre:

1. rotate the optical axis onto ``p``: ``R_v`` (camera -> virtual camera) has rows
   ``x' = normalize(e_y x z')``, ``y' = z' x x'``, ``z' = p / |p|``. This is a look-at that
   keeps the image upright: ``x'`` stays in the original camera's horizontal ``x-z`` plane (a
   yaw then a pitch, no roll), so a gravity-aligned scene stays gravity-aligned in the crop.
2. choose the focal length so that the object's bounding sphere (radius ``r`` = the
   normalization scale, at distance ``d = |p|``) exactly fills the ``S x S`` crop. The sphere
   seen from distance ``d`` is a cone of half-angle ``asin(r / d)``, which projects to a circle of
   radius ``f' tan(asin(r / d))``; setting that to ``S / 2`` gives
   ``f' = (S / 2) / tan(asin(r / d)) = (S / 2) sqrt(d^2 - r^2) / r``. The principal point is the
   crop centre ``((S - 1) / 2, (S - 1) / 2)`` (pixel centres at integers, the crop spans
   ``[-0.5, S - 0.5]``), so the circle touches the four crop edges.
3. pixels map by the rotation homography ``H = K' R_v K^-1`` (original pixel -> crop pixel),
   applied with ``cv2.warpPerspective`` (bilinear for colour, nearest for mask and depth).

Since the virtual camera only rotates, the new pose is ``R' = R_v R``, ``t' = R_v (R c + t)``
(metric, with ``c`` the object centre); in the normalized frame (everything divided by the scale)
``t' = (0, 0, d / r)``. Depth is *not* invariant under the rotation (``z`` is measured along a
different axis), so it is converted per pixel: a crop pixel ``u'`` looks along
``ray = R_v^T K'^-1 u'`` in the original camera (its virtual ``z`` component is 1), the surface
point is ``X = z_old * ray / ray_z``, hence ``z_new = z_old / ray_z``.

**Units and frames.** Everything stored in a :class:`ReferenceSet` is in the *normalized* object
frame (``X_n = (X - center) / scale``, object inside the unit sphere) and the camera frame scaled
by ``1 / scale`` likewise: rotations are unchanged, translations and depths are divided by the
scale. :class:`~sixd_pose_ros.geometry.normalization.ObjectNormalization` converts back to meters.

**Viewing directions.** ``view_directions()`` are unit vectors, in the normalized object frame,
from the object centre toward each camera centre ``C = -R^T t``. For every reference ``t`` is
``(0, 0, d)`` so this is ``-R^T e_z`` (minus the third row of ``R``): a rotation about the
optical axis (in-plane rotation, ``inplane_rotation(a) @ R``) leaves it unchanged, which is why
:meth:`ReferenceSet.nearest` is in-plane invariant.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import cv2
import numpy as np
import trimesh

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry.crop_camera import (
    DegenerateReferenceError,
    VirtualCamera,
    crop_focal,
    object_centred_camera,
)
from sixd_pose_ros.geometry.normalization import ObjectNormalization, normalization_from_points
from sixd_pose_ros.geometry.rotations import look_at_rotation
from sixd_pose_ros.geometry.sampling import (
    farthest_point_sampling,
    icosphere_vertices,
    nearest_viewpoints,
)
from sixd_pose_ros.io import atomic_write_bytes

if TYPE_CHECKING:  # torch is imported lazily (only to_torch needs it)
    import torch

__all__ = [
    "REFERENCES_FORMAT_VERSION",
    "DEFAULT_RENDER_DISTANCE",
    "DegenerateReferenceError",
    "ReferenceFormatError",
    "VirtualCamera",
    "ReferenceSet",
    "crop_focal",
    "object_centred_camera",
    "warp_to_object",
    "references_from_frames",
    "render_references",
]

#: Version of the ``.npz`` layout written by :meth:`ReferenceSet.save`. Bump it whenever the
#: stored arrays or their meaning change; :meth:`ReferenceSet.load` refuses other versions.
REFERENCES_FORMAT_VERSION = 1
_FORMAT_TAG = "sixd_pose_ros.ReferenceSet"

#: Camera distance of rendered references, in normalized units (object bounding-sphere radii).
#: The unit sphere fills the crop at any distance (the focal length follows ``d``), so ``d`` only
#: sets the strength of perspective. 4 radii is a close-range grasping view (a 5 cm radius object
#: at 20 cm) and keeps the perspective of queries at 2..20 radii within a few pixels of it.
DEFAULT_RENDER_DISTANCE = 4.0


class ReferenceFormatError(SixdPoseError):
    """A saved reference set cannot be read (other format version, corrupt or foreign file)."""


# ------------------------------------------------------------------------------------------------
# Virtual object-centred camera
# ------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------
# Warping one posed image
# ------------------------------------------------------------------------------------------------


def _check_rotation(R: np.ndarray) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(R)) or np.abs(R @ R.T - np.eye(3)).max() > 1e-4 \
            or np.linalg.det(R) < 0:
        raise ValueError(f"R must be a rotation matrix (orthonormal, det +1), got\n{R}")
    return R


def _ray_z(vc: VirtualCamera, size: int) -> np.ndarray:
    """``(S, S)`` z component, in the original camera, of the ray through each crop pixel scaled
    to virtual ``z = 1``: ``(R_v^T K'^-1 [u, v, 1])_z``."""
    f, c = vc.K[0, 0], vc.K[0, 2]
    coords = (np.arange(size, dtype=np.float64) - c) / f
    x, y = np.meshgrid(coords, coords)  # x along columns (u), y along rows (v)
    col = vc.R_v[:, 2]  # (R_v^T m)_z = R_v[:, 2] . m
    return col[0] * x + col[1] * y + col[2]


def _warp_color(image: np.ndarray, K: np.ndarray, vc: VirtualCamera, size: int) -> np.ndarray:
    """Bilinear warp; when the crop shrinks the object a lot the image is first reduced with
    area averaging (``cv2.INTER_AREA``), so that the bilinear sampling does not alias."""
    fx, fy = K[0, 0], K[1, 1]
    shrink = vc.K[0, 0] / np.sqrt(fx * fy)  # crop pixels per original pixel near the centre
    H = vc.H
    h, w = image.shape[:2]
    if shrink < 0.5:
        new_w, new_h = max(1, int(round(w * shrink))), max(1, int(round(h * shrink)))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        sx, sy = new_w / w, new_h / h
        # cv2.resize maps the image edges -0.5 and W - 0.5 onto each other.
        S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        H = H @ np.linalg.inv(S)
    return cv2.warpPerspective(image, H, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_to_object(
    image: np.ndarray,
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    normalization: ObjectNormalization,
    size: int = 128,
    mask: Optional[np.ndarray] = None,
    depth: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray, np.ndarray,
           Optional[np.ndarray]]:
    """Warp a posed image to the object-centred crop whose unit sphere fills the crop.

    See the module docstring for the geometry. Crop pixels that fall outside the original image
    (or whose ray points behind the original camera) are 0 in colour, mask and depth.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        K: ``(3, 3)`` intrinsics of ``image``.
        R: ``(3, 3)`` object-to-camera rotation (metric object frame).
        t: ``(3,)`` object-to-camera translation, meters.
        normalization: object centre (meters, object frame) and scale (bounding radius, m).
        size: crop side ``S`` in pixels.
        mask: optional ``(H, W)`` object mask (bool, 0/1 or 0/255).
        depth: optional ``(H, W)`` depth along the optical axis, meters; ``0`` or non-finite
            means no measurement.

    Returns:
        ``(crop, crop_mask, K_new, R_new, t_new, crop_depth)``:
        ``crop`` ``(S, S, 3)`` uint8; ``crop_mask`` ``(S, S)`` bool or ``None``; ``K_new``
        ``(3, 3)``; ``R_new = R_v R`` ``(3, 3)`` (normalized object frame -> virtual camera);
        ``t_new = (0, 0, d / scale)`` ``(3,)`` in normalized units; ``crop_depth`` ``(S, S)``
        float32 in normalized units (virtual-camera z / scale, 0 = none) or ``None``.

    Raises:
        DegenerateReferenceError (a ``ValueError``): centre behind the camera or camera inside
            the bounding sphere.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    h, w = image.shape[:2]
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    R = _check_rotation(R)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    size = int(size)
    p = R @ normalization.center + t
    vc = object_centred_camera(K, p, normalization.scale, size)

    crop = _warp_color(image, K, vc, size)
    ray_z = _ray_z(vc, size)
    in_front = ray_z > 1e-9
    crop[~in_front] = 0

    crop_mask = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (h, w):
            raise ValueError(f"mask shape {mask.shape} != image shape {(h, w)}")
        m8 = (mask != 0).astype(np.uint8)
        crop_mask = cv2.warpPerspective(m8, vc.H, (size, size), flags=cv2.INTER_NEAREST,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
        crop_mask &= in_front

    crop_depth = None
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float32)
        if depth.shape != (h, w):
            raise ValueError(f"depth shape {depth.shape} != image shape {(h, w)}")
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
        z_old = cv2.warpPerspective(depth, vc.H, (size, size), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        z_new = np.where(in_front, z_old / np.where(in_front, ray_z, 1.0), 0.0)
        crop_depth = (z_new / normalization.scale).astype(np.float32)

    R_new = vc.R_v @ R
    t_new = np.array([0.0, 0.0, vc.distance / normalization.scale])
    return crop, crop_mask, vc.K, R_new, t_new, crop_depth


# ------------------------------------------------------------------------------------------------
# The reference set
# ------------------------------------------------------------------------------------------------


@dataclass(eq=False)  # arrays have no single truth value; compare fields explicitly
class ReferenceSet:
    """``N`` object-centred reference crops of one object, with their cameras and poses.

    Every crop looks at the object centre and the unit sphere of the normalized object exactly
    fills it, so all references share one scale whatever their original distance.

    Attributes:
        images: ``(N, S, S, 3)`` uint8 RGB crops.
        masks: ``(N, S, S)`` bool object masks, or ``None`` when unknown.
        K: ``(N, 3, 3)`` float64 crop intrinsics (square pixels, principal point at
            ``((S-1)/2, (S-1)/2)``).
        R: ``(N, 3, 3)`` float64 object-to-camera rotations of the virtual cameras, normalized
            object frame.
        t: ``(N, 3)`` float64 translations in normalized units, ``(0, 0, d)`` with ``d`` the
            distance over the scale.
        normalization: ``X_norm = (X - center) / scale``; ``center`` ``(3,)`` m, ``scale`` m.
        depth: ``(N, S, S)`` float32 depth along the virtual optical axis in normalized units
            (meters / scale), 0 = none; or ``None``.
    """

    images: np.ndarray
    masks: Optional[np.ndarray]
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    normalization: ObjectNormalization
    depth: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        if self.images.ndim != 4 or self.images.shape[3] != 3 \
                or self.images.shape[1] != self.images.shape[2] or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N, S, S, 3) uint8, got {self.images.shape} "
                             f"{self.images.dtype}")
        n, s = self.images.shape[:2]
        self.K = np.asarray(self.K, dtype=np.float64)
        self.R = np.asarray(self.R, dtype=np.float64)
        self.t = np.asarray(self.t, dtype=np.float64)
        for name, arr, shape in (("K", self.K, (n, 3, 3)), ("R", self.R, (n, 3, 3)),
                                 ("t", self.t, (n, 3))):
            if arr.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
        if self.masks is not None:
            self.masks = np.asarray(self.masks)
            if self.masks.shape != (n, s, s):
                raise ValueError(f"masks must have shape {(n, s, s)}, got {self.masks.shape}")
            if self.masks.dtype != np.bool_:
                self.masks = self.masks != 0
        if self.depth is not None:
            self.depth = np.asarray(self.depth, dtype=np.float32)
            if self.depth.shape != (n, s, s):
                raise ValueError(f"depth must have shape {(n, s, s)}, got {self.depth.shape}")
        if not isinstance(self.normalization, ObjectNormalization):
            raise TypeError("normalization must be an ObjectNormalization")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        """Crop side ``S`` in pixels."""
        return int(self.images.shape[1])

    def view_directions(self) -> np.ndarray:
        """``(N, 3)`` unit vectors, normalized object frame, from the object centre toward each
        camera centre: ``-R^T t / |t|`` (equal to ``-R^T e_z`` since ``t = (0, 0, d)``)."""
        c = -np.einsum("nji,nj->ni", self.R, self.t)
        return c / np.linalg.norm(c, axis=1, keepdims=True)

    def subset(self, idx: Union[np.ndarray, Sequence[int], slice, int]) -> "ReferenceSet":
        """References ``idx`` (indices, a boolean mask or a slice), as a new set (copies)."""
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.atleast_1d(np.asarray(idx))
        if idx.dtype == np.bool_:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean index must have shape ({len(self)},), got {idx.shape}")
            idx = np.nonzero(idx)[0]
        idx = idx.astype(np.int64)
        return ReferenceSet(
            images=self.images[idx].copy(),
            masks=None if self.masks is None else self.masks[idx].copy(),
            K=self.K[idx].copy(), R=self.R[idx].copy(), t=self.t[idx].copy(),
            normalization=self.normalization,
            depth=None if self.depth is None else self.depth[idx].copy(),
        )

    def fps_subset(self, k: int, start: int = 0) -> "ReferenceSet":
        """``k`` references spread over the viewing sphere: farthest-point sampling of
        :meth:`view_directions` from reference ``start`` (deterministic; order = FPS order)."""
        return self.subset(farthest_point_sampling(self.view_directions(), k, start))

    def nearest(self, R_query: np.ndarray, k: int = 6,
                t_query: Optional[np.ndarray] = None) -> np.ndarray:
        """Indices of the ``k`` references whose viewing direction is closest to the query's.

        The query's viewing direction is the unit vector from the object centre to the query
        camera, in the normalized object frame. For a camera looking at the object centre (an
        object-centred crop, or a query pose whose translation is unknown) it is ``-R^T e_z``,
        minus the third row of ``R_query``: invariant to in-plane rotation about the optical axis.
        When ``t_query`` is given (normalized units, so ``R c + t`` must be the centre in the
        scaled camera frame, e.g. from ``normalization.pose_to_normalized``) the exact
        ``-R^T t / |t|`` is used instead, which also holds for an off-axis object.

        Args:
            R_query: ``(3, 3)`` or ``(M, 3, 3)`` object-to-camera rotation(s).
            k: number of references, ``1 <= k <= N``.
            t_query: optional ``(3,)`` or ``(M, 3)`` normalized translation(s).

        Returns:
            ``(k,)`` or ``(M, k)`` int64 indices, closest first (lower index first on ties).
        """
        R_query = np.asarray(R_query, dtype=np.float64)
        if R_query.shape[-2:] != (3, 3):
            raise ValueError(f"R_query must be (3, 3) or (M, 3, 3), got {R_query.shape}")
        if t_query is None:
            q = -R_query[..., 2, :]
        else:
            t_query = np.asarray(t_query, dtype=np.float64)
            q = -np.einsum("...ji,...j->...i", R_query, t_query)
        return nearest_viewpoints(self.view_directions(), q, k)

    # --- persistence ------------------------------------------------------------------------

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the set to one ``.npz`` file (exact bytes of every array), atomically: readers
        never see a half-written file. Returns the path."""
        arrays = {
            "format": np.array(_FORMAT_TAG),
            "format_version": np.array(REFERENCES_FORMAT_VERSION, dtype=np.int64),
            "images": self.images, "K": self.K, "R": self.R, "t": self.t,
            "center": self.normalization.center,
            "scale": np.array(self.normalization.scale, dtype=np.float64),
        }
        if self.masks is not None:
            arrays["masks"] = self.masks
        if self.depth is not None:
            arrays["depth"] = self.depth
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        path = Path(path)
        atomic_write_bytes(path, buf.getvalue(), overwrite=True)
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "ReferenceSet":
        """Read a set written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            ReferenceFormatError: another format version, or not a reference-set file; the
                message says to rebuild the object database.
        """
        path = Path(path)
        fix = ("rebuild the object database (sixd-pose build-object) with this version of "
               "sixd_pose_ros")
        try:
            with np.load(path, allow_pickle=False) as data:
                files = set(data.files)
                if "format_version" not in files or "format" not in files \
                        or str(data["format"]) != _FORMAT_TAG:
                    raise ReferenceFormatError(
                        f"{path} is not a sixd_pose_ros reference-set file; {fix}")
                version = int(data["format_version"])
                if version != REFERENCES_FORMAT_VERSION:
                    raise ReferenceFormatError(
                        f"{path} holds reference views in format version {version}, but this "
                        f"sixd_pose_ros reads version {REFERENCES_FORMAT_VERSION}; {fix}")
                arrays = {k: data[k] for k in files}
        except (zipfile.BadZipFile, ValueError, OSError, KeyError, EOFError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise ReferenceFormatError(
                f"{path} cannot be read as a reference-set file ({exc}); {fix}") from exc
        try:
            return cls(
                images=arrays["images"], masks=arrays.get("masks"), K=arrays["K"],
                R=arrays["R"], t=arrays["t"],
                normalization=ObjectNormalization(arrays["center"], float(arrays["scale"])),
                depth=arrays.get("depth"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ReferenceFormatError(
                f"{path} is an incomplete or inconsistent reference-set file ({exc}); {fix}"
            ) from exc

    def to_torch(self, device: Union[str, "torch.device"] = "cpu") -> dict[str, "torch.Tensor"]:
        """Float32 tensors for the networks.

        Returns:
            ``images`` ``(N, 3, S, S)`` in ``[0, 1]``; ``K``, ``R`` ``(N, 3, 3)``; ``t``
            ``(N, 3)``; ``directions`` ``(N, 3)`` (:meth:`view_directions`); and when present
            ``masks`` ``(N, S, S)`` in ``{0, 1}`` and ``depth`` ``(N, S, S)`` (normalized
            units, 0 = none).
        """
        import torch

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        out = {
            "images": tensor(self.images.transpose(0, 3, 1, 2)) / 255.0,
            "K": tensor(self.K), "R": tensor(self.R), "t": tensor(self.t),
            "directions": tensor(self.view_directions()),
        }
        if self.masks is not None:
            out["masks"] = tensor(self.masks)
        if self.depth is not None:
            out["depth"] = tensor(self.depth)
        return out


# ------------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------------


def references_from_frames(frames: Sequence[tuple], normalization: ObjectNormalization,
                           size: int = 128) -> ReferenceSet:
    """Reference set of the model-free mode: warp each posed photo to its object-centred crop.

    Args:
        frames: sequence of ``(rgb, K, R_m2c, t_m2c, mask | None, depth | None)`` (the last two
            may be omitted): ``rgb`` ``(H, W, 3)`` uint8, ``K`` ``(3, 3)``, ``R_m2c`` ``(3, 3)``,
            ``t_m2c`` ``(3,)`` meters, ``mask`` ``(H, W)``, ``depth`` ``(H, W)`` meters. Image
            sizes and intrinsics may differ between frames.
        normalization: the object's centre and scale (meters).
        size: crop side ``S``.

    Returns:
        :class:`ReferenceSet` with ``masks`` when every frame has a mask (``None`` when none has
        one) and ``depth`` when at least one frame has depth (zeros, i.e. "none", for the others).

    Raises:
        DegenerateReferenceError: a frame's pose puts the centre behind the camera or the camera
            inside the bounding sphere (the message names the frame).
        ValueError: no frames, or masks given for some frames only.
    """
    if len(frames) == 0:
        raise ValueError("references_from_frames needs at least one posed frame")
    crops, masks, Ks, Rs, ts, depths = [], [], [], [], [], []
    for i, frame in enumerate(frames):
        if not 4 <= len(frame) <= 6:
            raise ValueError(f"frame {i}: expected (rgb, K, R, t[, mask[, depth]]), "
                             f"got {len(frame)} items")
        rgb, K, R, t = frame[:4]
        mask = frame[4] if len(frame) > 4 else None
        depth = frame[5] if len(frame) > 5 else None
        try:
            out = warp_to_object(rgb, K, R, t, normalization, size, mask=mask, depth=depth)
        except DegenerateReferenceError as exc:
            raise DegenerateReferenceError(f"frame {i}: {exc}") from exc
        crop, cmask, K_new, R_new, t_new, cdepth = out
        crops.append(crop)
        masks.append(cmask)
        Ks.append(K_new)
        Rs.append(R_new)
        ts.append(t_new)
        depths.append(cdepth)
    have_mask = [m is not None for m in masks]
    if any(have_mask) and not all(have_mask):
        missing = [i for i, h in enumerate(have_mask) if not h]
        raise ValueError(f"masks are given for some frames only (missing for frames {missing}); "
                         "give a mask for every frame or for none")
    depth_arr = None
    if any(d is not None for d in depths):
        zeros = np.zeros((size, size), np.float32)
        depth_arr = np.stack([zeros if d is None else d for d in depths])
    return ReferenceSet(
        images=np.stack(crops), masks=np.stack(masks) if all(have_mask) else None,
        K=np.stack(Ks), R=np.stack(Rs), t=np.stack(ts), normalization=normalization,
        depth=depth_arr,
    )


def render_references(mesh: trimesh.Trimesh, n_views: int = 64, size: int = 128, *,
                      subdivisions: int = 3, seed: int = 0, lighting=None,
                      distance: float = DEFAULT_RENDER_DISTANCE,
                      backend: str = "numba") -> ReferenceSet:
    """Reference set of the known-model mode: renders of the mesh from spread-out viewpoints.

    Viewpoints: ``n_views`` directions chosen by farthest-point sampling among the vertices of an
    icosphere of level ``subdivisions`` (642 for level 3), starting from a vertex drawn with
    ``seed``. Each camera sits at ``distance`` (normalized units) along its direction and looks at
    the object centre with ``look_at_rotation(dir, up = object z)``; its crop intrinsics make the
    unit sphere fill the ``S x S`` image exactly (:func:`crop_focal`), as for warped photos. All
    views are rendered in one batched call of the renderer at the metric pose
    ``t_m = scale * t_n - R c``.

    Args:
        mesh: the object mesh, meters.
        n_views: number of references, ``1 <= n_views <= 10 * 4**subdivisions + 2``.
        size: crop side ``S``.
        subdivisions: icosphere level of the candidate directions.
        seed: picks the first FPS direction (so different seeds give rotated sets).
        lighting: a :class:`~sixd_pose_ros.render.renderer.Lighting`, one per view, or ``None``
            for the renderer's default.
        distance: camera distance in normalized units (> 1); see
            :data:`DEFAULT_RENDER_DISTANCE`.
        backend: renderer backend (``"numba"`` or ``"pyrender"``).

    Returns:
        :class:`ReferenceSet` with masks and depth (normalized units).
    """
    from sixd_pose_ros.render.renderer import RenderMesh, render

    if distance <= 1.0:
        raise ValueError(f"distance must be > 1 (outside the unit sphere), got {distance}")
    size = int(size)
    norm = normalization_from_points(np.asarray(mesh.vertices))
    candidates = icosphere_vertices(subdivisions)
    if not 1 <= n_views <= len(candidates):
        raise ValueError(f"n_views must be in [1, {len(candidates)}] for subdivisions="
                         f"{subdivisions}, got {n_views}")
    start = int(np.random.default_rng(seed).integers(len(candidates)))
    dirs = candidates[farthest_point_sampling(candidates, n_views, start)]
    R = look_at_rotation(dirs, up=(0.0, 0.0, 1.0))
    t_n = np.tile([0.0, 0.0, float(distance)], (n_views, 1))
    _, t_m = norm.pose_to_metric(R, t_n)
    f = float(crop_focal(distance, 1.0, size))
    c = 0.5 * (size - 1)
    K = np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
    out = render([RenderMesh.from_trimesh(mesh)], R, t_m, K, size, size, lighting=lighting,
                 backend=backend)
    return ReferenceSet(
        images=out.rgb, masks=out.mask == 1, K=np.tile(K, (n_views, 1, 1)), R=R, t=t_n,
        normalization=norm, depth=(out.depth / norm.scale).astype(np.float32),
    )

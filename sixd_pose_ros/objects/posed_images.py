"""Posed reference photos of one object, read from three input formats into one list of views.

The model-free mode builds an object database from photos whose camera poses are known. Users
get those poses in different ways: a robot arm (TF) or a phone's AR tracking (a plain folder
with a ``poses.json``), a rendered or annotated dataset (a BOP scene with ground truth), or
structure from motion (a COLMAP text model). Each reader here turns its input into one
:class:`PosedImageSet`, so everything after it (object frame, centre and size, warping; see
:mod:`sixd_pose_ros.objects.model_free_database`) is written once. ``docs/model_free_inputs.md``
documents every format with an example.

Conventions of a :class:`PosedImageSet` (whatever the file on disk uses):

* cameras are OpenCV cameras (x right, y down, z forward; pixel centres at integer
  coordinates), poses are **world-to-camera**: ``X_cam = R_w2c @ X_world + t_w2c``;
* the *world* is the input's own frame (the robot base, the COLMAP reconstruction, the BOP
  object frame); :class:`ObjectHint` says what the user told about the object in it;
* lengths are meters when ``metric`` is true, else the input's arbitrary unit (COLMAP);
* images are read lazily (:meth:`PosedView.load`), so a few hundred photos do not sit in memory
  at once.

Every problem a user can fix (a missing file, a pose that is not a rigid transform, an image
without intrinsics) raises :class:`PosedImagesError` naming the file and the fix.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry.read_rotation import NotARotationError, checked_rotation

__all__ = [
    "FORMATS",
    "MIN_REFERENCES",
    "ObjectHint",
    "PosedImageSet",
    "PosedImagesError",
    "PosedView",
    "detect_format",
    "focal_from_exif",
    "read_bop_views",
    "read_colmap_model",
    "read_folder",
    "read_posed_images",
]

#: Input formats accepted by :func:`read_posed_images` (``auto`` detects one of them).
FORMATS = ("folder", "bop", "colmap")
#: Fewer references than this cannot cover an object's viewing sphere (issue 5).
MIN_REFERENCES = 8
POSES_FILES = ("poses.json", "poses.yaml", "poses.yml")
_UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001, "arbitrary": None}
#: Diagonal of a 36 x 24 mm film frame: the EXIF 35 mm-equivalent focal length is defined
#: against it (CIPA DC-008), so it converts to pixels through the image diagonal.
_FILM_DIAGONAL_MM = math.hypot(36.0, 24.0)
_EXIF_IFD = 0x8769
_EXIF_FOCAL_35MM = 0xA405
_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


class PosedImagesError(SixdPoseError):
    """Posed reference images cannot be read or used; the message names the file and the fix."""


# ------------------------------------------------------------------------------------------------
# Data types
# ------------------------------------------------------------------------------------------------


@dataclass
class PosedView:
    """One posed photo (its pixels are read on demand by :meth:`load`).

    Attributes:
        name: the image's name as the input gives it (used in every message).
        image_path: colour image file.
        K: ``(3, 3)`` OpenCV intrinsics (pixel centres at integers) of the image as stored
            (after undistortion when ``dist`` is given).
        R_w2c: ``(3, 3)`` world-to-camera rotation.
        t_w2c: ``(3,)`` world-to-camera translation (meters, or the input's unit when not metric).
        width, height: image size in pixels.
        depth_path: optional depth image; stored value times ``depth_scale`` = meters.
        depth_scale: meters per stored depth unit.
        mask_path: optional object mask image (non-zero = object).
        dist: optional OpenCV distortion ``(k1, k2, p1, p2)``; :meth:`load` undistorts with it.
        visib_fract: fraction of the object's projection that is visible (not occluded), when
            the input says (BOP ``scene_gt_info.json``); ``None``: unknown.
    """

    name: str
    image_path: Path
    K: np.ndarray
    R_w2c: np.ndarray
    t_w2c: np.ndarray
    width: int
    height: int
    depth_path: Path | None = None
    depth_scale: float = 0.001
    mask_path: Path | None = None
    dist: np.ndarray | None = None
    visib_fract: float | None = None

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.R_w2c = np.asarray(self.R_w2c, dtype=np.float64).reshape(3, 3)
        self.t_w2c = np.asarray(self.t_w2c, dtype=np.float64).reshape(3)

    @property
    def camera_center(self) -> np.ndarray:
        """``(3,)`` optical centre in the world: ``-R^T t``."""
        return -self.R_w2c.T @ self.t_w2c

    @property
    def optical_axis(self) -> np.ndarray:
        """``(3,)`` unit viewing direction (camera +z) in the world: the third row of ``R``."""
        return self.R_w2c[2].copy()

    def pixel_ray(self, uv: np.ndarray) -> np.ndarray:
        """``(..., 3)`` unit world directions of the rays through pixels ``uv`` ``(..., 2)``."""
        uv = np.asarray(uv, dtype=np.float64)
        m = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], axis=-1)
        rays = m @ np.linalg.inv(self.K).T @ self.R_w2c  # (K^-1 m) in camera, then R^T
        return rays / np.linalg.norm(rays, axis=-1, keepdims=True)

    def _undistort(self, image: np.ndarray, interpolation: int) -> np.ndarray:
        if self.dist is None or not np.any(self.dist != 0):
            return image
        # Same K before and after: the undistorted image keeps the model's intrinsics.
        map1, map2 = cv2.initUndistortRectifyMap(self.K, self.dist, None, self.K,
                                                 (self.width, self.height), cv2.CV_32FC1)
        return cv2.remap(image, map1, map2, interpolation, borderMode=cv2.BORDER_CONSTANT)

    def load_rgb(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB (undistorted when ``dist`` is set)."""
        rgb = _read_rgb(self.image_path)
        if rgb.shape[:2] != (self.height, self.width):
            raise PosedImagesError(
                f"image {self.name} is {rgb.shape[1]}x{rgb.shape[0]} pixels but its camera says "
                f"{self.width}x{self.height}; give the intrinsics of the image as stored")
        return self._undistort(rgb, cv2.INTER_LINEAR)

    def load_depth(self) -> np.ndarray | None:
        """``(H, W)`` float32 depth in meters (0 = none), or ``None`` without a depth file."""
        if self.depth_path is None:
            return None
        d = _read_depth(self.depth_path, self.depth_scale, self.name, (self.height, self.width))
        return self._undistort(d, cv2.INTER_NEAREST)

    def load_mask(self) -> np.ndarray | None:
        """``(H, W)`` bool object mask, or ``None`` without a mask file."""
        if self.mask_path is None:
            return None
        m = _read_mask(self.mask_path, self.name, (self.height, self.width))
        return self._undistort(m.astype(np.uint8), cv2.INTER_NEAREST) > 0

    def load(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(rgb, depth, mask)``: see :meth:`load_rgb`, :meth:`load_depth`, :meth:`load_mask`."""
        return self.load_rgb(), self.load_depth(), self.load_mask()


@dataclass
class ObjectHint:
    """What the input says about the object, in its world frame and unit (all optional).

    Attributes:
        R_o2w: ``(3, 3)`` object axes in the world (columns x, y, z), from a given object pose,
            from the axis hints (``up`` = object +z, ``forward`` = object +x), or ``None``: then
            the object frame keeps the world's axes.
        origin: ``(3,)`` object-frame origin in the world when the input fixes it (a given
            object pose, BOP ground truth); ``None``: the origin is put at the estimated centre.
        center: ``(3,)`` object centre in the world, when given.
        extents: ``(3,)`` full box side lengths along the object axes (box centred on ``center``).
        radius: bounding-sphere radius around ``center``, when given.
        points: ``(N, 3)`` object points in the world (a cropped point cloud), when given.
        frame_source: how the object frame was fixed (recorded in ``object.json``).
    """

    R_o2w: np.ndarray | None = None
    origin: np.ndarray | None = None
    center: np.ndarray | None = None
    extents: np.ndarray | None = None
    radius: float | None = None
    points: np.ndarray | None = None
    frame_source: str = "world_axes"

    @property
    def located(self) -> bool:
        """The input places the object in its world (a pose, a centre or box, a point cloud),
        so a view can be checked for showing it without first estimating where it is."""
        return self.origin is not None or self.center is not None or self.points is not None

    @property
    def location(self) -> np.ndarray | None:
        """``(3,)`` the best given point of the object in the world: the point cloud's box
        centre, the given centre, or the given frame's origin; ``None`` when not located."""
        if self.points is not None:
            pts = np.asarray(self.points, np.float64)
            return 0.5 * (pts.min(axis=0) + pts.max(axis=0))
        if self.center is not None:
            return np.asarray(self.center, np.float64)
        return None if self.origin is None else np.asarray(self.origin, np.float64)


@dataclass
class PosedImageSet:
    """All posed views of one object, in the conventions of the module docstring.

    Attributes:
        views: the posed photos.
        format: ``"folder"``, ``"bop"`` or ``"colmap"``.
        metric: lengths are meters (``False``: arbitrary, e.g. COLMAP without a scale).
        hint: what the input says about the object.
        source: the input folder.
        pose_file: the file that holds the poses (its hash is recorded in ``object.json``).
        notes: warnings for the user (depth ignored, frames skipped, ...).
    """

    views: list[PosedView]
    format: str
    metric: bool
    hint: ObjectHint
    source: Path
    pose_file: Path | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.views)

    @property
    def has_depth(self) -> bool:
        return any(v.depth_path is not None for v in self.views)

    @property
    def has_masks(self) -> bool:
        return any(v.mask_path is not None for v in self.views)


# ------------------------------------------------------------------------------------------------
# Pixels
# ------------------------------------------------------------------------------------------------


def _imread(path: Path, flags: int, what: str) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise PosedImagesError(f"cannot read {what} {path}: the file is missing, corrupt or not "
                               "an image; replace it or remove its entry")
    return image


def _read_rgb(path: Path) -> np.ndarray:
    # IGNORE_ORIENTATION: poses belong to the pixels as stored (COLMAP and TF see those).
    image = _imread(path, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION, "image")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise PosedImagesError(f"image {path} has pixel type {image.dtype}; save it as 8-bit "
                               "PNG or JPEG")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_depth(path: Path, scale: float, name: str, shape: tuple[int, int]) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PosedImagesError(f"cannot read depth {path} of image {name} ({exc}); replace "
                                   "it or remove the 'depth' entry") from exc
    else:
        raw = _imread(path, cv2.IMREAD_ANYDEPTH, f"depth of image {name}")
    if raw.shape != shape:
        raise PosedImagesError(f"depth {path} is {raw.shape[::-1]} but image {name} is "
                               f"{shape[::-1]}; depth must be registered to the colour image")
    depth = raw.astype(np.float64) * float(scale)
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)


def _read_mask(path: Path, name: str, shape: tuple[int, int]) -> np.ndarray:
    image = _imread(path, cv2.IMREAD_UNCHANGED, f"mask of image {name}")
    if image.ndim == 3:
        image = image[..., :3].max(axis=2)
    if image.shape != shape:
        raise PosedImagesError(f"mask {path} is {image.shape[::-1]} but image {name} is "
                               f"{shape[::-1]}; give a mask of the same size")
    return image > 0


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header (Pillow reads no pixels for it)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (OSError, UnidentifiedImageError) as exc:
        raise PosedImagesError(f"cannot read image {path} ({exc}); replace it or remove its "
                               "entry") from exc


def focal_from_exif(path: str | os.PathLike) -> np.ndarray | None:
    """Intrinsics from the EXIF tag ``FocalLengthIn35mmFilm``, or ``None`` without it.

    The 35 mm-equivalent focal length ``f35`` relates to the frame diagonal, so
    ``f_px = f35 * hypot(W, H) / hypot(36, 24)``; square pixels, principal point at the image
    centre ``((W - 1) / 2, (H - 1) / 2)``. A fallback only: lens distortion and a principal
    point off the centre are ignored, so calibrated intrinsics are better.

    Returns:
        ``(3, 3)`` K or ``None``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            exif = im.getexif()
            f35 = exif.get_ifd(_EXIF_IFD).get(_EXIF_FOCAL_35MM) or exif.get(_EXIF_FOCAL_35MM)
    except (OSError, UnidentifiedImageError):
        return None
    try:
        f35 = float(f35) if f35 is not None else 0.0
    except (TypeError, ValueError):
        return None
    if not f35 > 0:
        return None
    f = f35 * math.hypot(w, h) / _FILM_DIAGONAL_MM
    return np.array([[f, 0.0, 0.5 * (w - 1)], [0.0, f, 0.5 * (h - 1)], [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------------------------
# Shared checks
# ------------------------------------------------------------------------------------------------


def _check_rotation(R: Any, where: str, fix: str) -> np.ndarray:
    """The nearest rotation to a pose file's matrix; refuses what rounding cannot explain.

    Real BOP ground truth is off orthonormal by up to 1e-2, so the tolerance is the shared
    :data:`~sixd_pose_ros.geometry.read_rotation.READ_ROTATION_TOLERANCE`, then SVD repairs it.
    """
    try:
        return checked_rotation(R)
    except NotARotationError as exc:
        raise PosedImagesError(f"{where}: the rotation {exc}, so this is not a camera pose; "
                               f"{fix}") from exc


def _check_K(K: np.ndarray, where: str) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.size != 9:
        raise PosedImagesError(f"{where}: K must be 3x3 (nested or 9 numbers row-major)")
    K = K.reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 \
            or not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise PosedImagesError(f"{where}: K = {K.tolist()} is not a pinhole intrinsic matrix "
                               "[[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
    return K


def _missing_files(pairs: Sequence[tuple[str, Path]], source: Path) -> None:
    missing = [(what, p) for what, p in pairs if not p.is_file()]
    if missing:
        listed = ", ".join(f"{what} {p}" for what, p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise PosedImagesError(f"{len(missing)} file(s) named in {source} are missing: {listed}"
                               f"{more}; copy them there or remove their entries")


def _vector(value: Any, n: int, where: str) -> np.ndarray:
    try:
        v = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise PosedImagesError(f"{where} must be {n} numbers, got {value!r}") from exc
    if v.size != n or not np.all(np.isfinite(v)):
        raise PosedImagesError(f"{where} must be {n} finite numbers, got {value!r}")
    return v


def _rigid(value: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A 4x4 (or 3x4) rigid transform, nested or row-major flat -> ``(R, t)``."""
    try:
        m = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise PosedImagesError(f"{where} must be a 4x4 matrix of numbers") from exc
    if m.size not in (12, 16) or not np.all(np.isfinite(m)):
        raise PosedImagesError(f"{where} must be a 4x4 matrix (16 finite numbers, row-major), "
                               f"got {m.size} values")
    if m.size == 16:
        m = m.reshape(4, 4)
        if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
            raise PosedImagesError(f"{where}: the last row must be [0, 0, 0, 1], got "
                                   f"{m[3].tolist()}")
    m = m.reshape(-1, 4)
    fix = "write a rigid transform (orthonormal rotation, det +1; no scale, no mirroring)"
    return _check_rotation(m[:3, :3], where, fix), m[:3, 3].copy()


def _axes_from_hints(up: Any, forward: Any, where: str) -> np.ndarray:
    """Object axes (columns) from the up (+z) and forward (+x) hints; y = z x x.

    The forward hint is made orthogonal to up (Gram-Schmidt), so hints read off a viewer need
    not be exactly perpendicular; nearly parallel ones cannot fix a frame.
    """
    z = _vector(up, 3, f"{where} 'up'")
    x = _vector(forward, 3, f"{where} 'forward'")
    if np.linalg.norm(z) == 0 or np.linalg.norm(x) == 0:
        raise PosedImagesError(f"{where}: 'up' and 'forward' must be non-zero vectors")
    z = z / np.linalg.norm(z)
    x = x / np.linalg.norm(x)
    if abs(float(x @ z)) > math.cos(math.radians(10.0)):
        raise PosedImagesError(
            f"{where}: 'forward' {x.round(3).tolist()} and 'up' {z.round(3).tolist()} are within "
            "10 degrees of each other, so they do not fix the object's axes; give two directions "
            "that are about perpendicular (forward = object +x, up = object +z)")
    x = x - (x @ z) * z
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def _read_point_cloud(path: Path) -> np.ndarray:
    import trimesh

    try:
        geom = trimesh.load(path, process=False)
    except Exception as exc:  # trimesh raises many types on bad files
        raise PosedImagesError(f"cannot read the object point cloud {path} ({exc}); export it "
                               "again as a .ply of points") from exc
    points = np.asarray(getattr(geom, "vertices", np.empty((0, 3))), dtype=np.float64)
    points = points[np.all(np.isfinite(points), axis=1)]
    if len(points) < 4:
        raise PosedImagesError(f"the object point cloud {path} has {len(points)} points; crop "
                               "the reconstruction to the object and keep its points (>= 4)")
    return points


def _object_hint(block: Any, where: str, unit: float, base: Path) -> ObjectHint:
    """Parse an ``object`` block (folder format) or COLMAP object meta; lengths times ``unit``.

    Keys: ``to_world`` (4x4 object-to-world) or ``up`` + ``forward``; ``center``; ``extents``;
    ``radius``; ``point_cloud`` (a .ply file, relative to ``base``).
    """
    hint = ObjectHint()
    if block is None:
        return hint
    if not isinstance(block, dict):
        raise PosedImagesError(f"{where} must be a mapping (see docs/model_free_inputs.md)")
    known = {"to_world", "up", "forward", "center", "extents", "radius", "point_cloud"}
    unknown = set(block) - known
    if unknown:
        raise PosedImagesError(f"{where} has unknown keys {sorted(unknown)}; use {sorted(known)}")
    if "to_world" in block and ("up" in block or "forward" in block):
        raise PosedImagesError(f"{where}: give either 'to_world' or 'up' + 'forward', not both")
    if "to_world" in block:
        R, t = _rigid(block["to_world"], f"{where} 'to_world'")
        hint.R_o2w, hint.origin, hint.frame_source = R, t * unit, "given_pose"
    elif "up" in block or "forward" in block:
        if "up" not in block or "forward" not in block:
            raise PosedImagesError(f"{where}: the axis hints need both 'up' (object +z) and "
                                   "'forward' (object +x)")
        hint.R_o2w = _axes_from_hints(block["up"], block["forward"], where)
        hint.frame_source = "axis_hints"
    if "center" in block:
        hint.center = _vector(block["center"], 3, f"{where} 'center'") * unit
    if "extents" in block:
        ext = _vector(block["extents"], 3, f"{where} 'extents'")
        if np.any(ext <= 0):
            raise PosedImagesError(f"{where} 'extents' must be positive box side lengths")
        if hint.center is None:
            raise PosedImagesError(f"{where}: a box needs its 'center' besides 'extents'")
        hint.extents = ext * unit
    if "radius" in block:
        r = float(_vector(block["radius"], 1, f"{where} 'radius'")[0])
        if r <= 0:
            raise PosedImagesError(f"{where} 'radius' must be > 0")
        if hint.center is None:
            raise PosedImagesError(f"{where}: a 'radius' needs the 'center' it is around")
        hint.radius = r * unit
    if "point_cloud" in block:
        path = base / str(block["point_cloud"])
        if not path.is_file():
            raise PosedImagesError(f"{where}: the point cloud {path} does not exist; fix the "
                                   "path or remove 'point_cloud'")
        hint.points = _read_point_cloud(path) * unit
    return hint


def _load_mapping(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise PosedImagesError(f"{path} cannot be parsed ({exc}); fix its syntax") from exc
    if not isinstance(data, dict):
        raise PosedImagesError(f"{path} must hold a mapping with an 'images' list (see "
                               "docs/model_free_inputs.md)")
    return data


# ------------------------------------------------------------------------------------------------
# (a) a plain folder with poses.json / poses.yaml
# ------------------------------------------------------------------------------------------------


def _intrinsics(entry: dict, default: Any, where: str, image: Path) -> np.ndarray:
    def parse(spec: Any, w: str) -> np.ndarray:
        if isinstance(spec, dict):
            if "K" in spec:
                return _check_K(spec["K"], w)
            if all(k in spec for k in ("fx", "fy", "cx", "cy")):
                fx, fy, cx, cy = (float(spec[k]) for k in ("fx", "fy", "cx", "cy"))
                return _check_K([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], w)
            return None
        return _check_K(spec, w)

    partial = [k for k in ("fx", "fy", "cx", "cy") if k in entry]
    if partial and len(partial) < 4:
        raise PosedImagesError(f"{where} gives {partial} only: give all of fx, fy, cx, cy "
                               "(pixels) or a 3x3 'K'")
    K = parse(entry, where)
    if K is None and default is not None:
        K = parse(default, "poses file 'intrinsics'")
        if K is None:
            raise PosedImagesError("the top-level 'intrinsics' needs 'K' or fx, fy, cx, cy")
    if K is None:
        K = focal_from_exif(image)
    if K is None:
        raise PosedImagesError(
            f"{where} has no intrinsics and its photo has no EXIF FocalLengthIn35mmFilm: add "
            "'K' (3x3) or 'fx', 'fy', 'cx', 'cy' (pixels) to the entry, or a top-level "
            "'intrinsics' shared by all images")
    return K


def read_folder(path: str | os.PathLike) -> PosedImageSet:
    """Read format (a): a folder with ``poses.json`` (or ``poses.yaml``) and its images.

    Schema (``docs/model_free_inputs.md`` has an example)::

        units: m | cm | mm | arbitrary      # of translations and the object block (default m);
                                            # arbitrary + depth: the builder finds meters
        camera_axes: opencv | opengl        # default opencv (x right, y down, z forward)
        intrinsics: {fx, fy, cx, cy} | {K}  # optional default for every image
        depth_scale: 0.001                  # optional default: meters per stored depth unit
        object: {...}                       # optional, see ObjectHint (world frame)
        images:
          - file: rgb/000.png               # relative to the folder
            camera_to_world: 4x4            # camera pose in the world, X_w = T X_cam
            # or world_to_camera: 4x4       # X_cam = T X_w  (exactly one of the two)
            K: 3x3 | fx, fy, cx, cy         # else the default, else EXIF FocalLengthIn35mmFilm
            depth: depth/000.png            # optional, registered to the image
            depth_scale: 0.001              # optional, overrides the default
            mask: mask/000.png              # optional, non-zero = object

    Raises:
        PosedImagesError: missing or unparsable file, unknown keys, missing or non-rigid
            poses, images without intrinsics, missing image files.
    """
    folder = Path(path)
    pose_file = next((folder / n for n in POSES_FILES if (folder / n).is_file()), None)
    if pose_file is None:
        raise PosedImagesError(f"{folder} has no poses.json or poses.yaml; write one (see "
                               "docs/model_free_inputs.md) or pass --format bop|colmap")
    data = _load_mapping(pose_file)
    known = {"units", "camera_axes", "intrinsics", "depth_scale", "object", "images"}
    unknown = set(data) - known
    if unknown:
        raise PosedImagesError(f"{pose_file} has unknown keys {sorted(unknown)}; use "
                               f"{sorted(known)}")
    units = str(data.get("units", "m")).strip().lower()
    if units not in _UNITS:
        raise PosedImagesError(f"{pose_file}: units {units!r} unknown; use one of "
                               f"{list(_UNITS)}")
    metric = _UNITS[units] is not None
    unit = _UNITS[units] or 1.0
    axes = str(data.get("camera_axes", "opencv")).strip().lower()
    if axes not in ("opencv", "opengl"):
        raise PosedImagesError(f"{pose_file}: camera_axes {axes!r} unknown; use 'opencv' "
                               "(x right, y down, z forward) or 'opengl' (x right, y up, "
                               "z backward)")
    entries = data.get("images")
    if not isinstance(entries, list) or not entries:
        raise PosedImagesError(f"{pose_file} needs a non-empty 'images' list")
    default_scale = data.get("depth_scale")
    entry_keys = {"file", "camera_to_world", "world_to_camera", "K", "fx", "fy", "cx", "cy",
                  "depth", "depth_scale", "mask"}
    files: list[tuple[str, Path]] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "file" not in e:
            raise PosedImagesError(f"{pose_file}: images[{i}] must be a mapping with 'file'")
        bad = set(e) - entry_keys
        if bad:
            raise PosedImagesError(f"{pose_file}: images[{i}] has unknown keys {sorted(bad)}; "
                                   f"use {sorted(entry_keys)}")
        files.append(("image", folder / str(e["file"])))
        for key in ("depth", "mask"):
            if e.get(key) is not None:
                files.append((key, folder / str(e[key])))
    _missing_files(files, pose_file)
    notes: list[str] = []
    views = []
    for i, e in enumerate(entries):
        name = str(e["file"])
        where = f"{pose_file.name}: image {name}"
        has_c2w, has_w2c = "camera_to_world" in e, "world_to_camera" in e
        if has_c2w == has_w2c:
            raise PosedImagesError(f"{where} needs exactly one of 'camera_to_world' (the camera's "
                                   "pose in the world) or 'world_to_camera' (its inverse)")
        R, t = _rigid(e["camera_to_world" if has_c2w else "world_to_camera"], where)
        if has_c2w:
            if axes == "opengl":
                R = R @ _OPENGL_TO_OPENCV
            R, t = R.T, -R.T @ t
        elif axes == "opengl":
            R, t = _OPENGL_TO_OPENCV @ R, _OPENGL_TO_OPENCV @ t
        image = folder / name
        K = _intrinsics(e, data.get("intrinsics"), where, image)
        w, h = _image_size(image)
        depth_path = folder / str(e["depth"]) if e.get("depth") is not None else None
        scale = e.get("depth_scale", default_scale)
        if scale is None:
            scale = 1.0 if depth_path is not None and depth_path.suffix.lower() == ".npy" \
                else 0.001
        if not float(scale) > 0:
            raise PosedImagesError(f"{where}: depth_scale must be > 0 (meters per stored unit)")
        mask_path = folder / str(e["mask"]) if e.get("mask") is not None else None
        views.append(PosedView(name=name, image_path=image, K=K, R_w2c=R, t_w2c=t * unit,
                               width=w, height=h, depth_path=depth_path,
                               depth_scale=float(scale), mask_path=mask_path))
    hint = _object_hint(data.get("object"), f"{pose_file.name} 'object'", unit, folder)
    return PosedImageSet(views=views, format="folder", metric=metric, hint=hint,
                         source=folder, pose_file=pose_file, notes=notes)


# ------------------------------------------------------------------------------------------------
# (b) a BOP scene with ground truth
# ------------------------------------------------------------------------------------------------


def _bop_json(path: Path) -> dict:
    if not path.is_file():
        raise PosedImagesError(f"{path} is missing: a BOP scene folder needs scene_camera.json "
                               "and scene_gt.json; point --images at the scene folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PosedImagesError(f"{path} is not valid JSON ({exc}); re-create it") from exc
    if not isinstance(data, dict):
        raise PosedImagesError(f"{path} must map image ids to entries (BOP format)")
    return {int(k): v for k, v in data.items()}


def _find_image(folder: Path, stem: str) -> Path | None:
    for ext in (".png", ".jpg", ".jpeg", ".tif"):
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    return None


def _visib_fract(gt_info: dict, im_id: int, gt_id: int) -> float | None:
    """``visib_fract`` of one ground-truth instance from ``scene_gt_info.json``, or ``None``
    when the file, the frame or the value is missing (then visibility is judged from the pixels)."""
    entries = gt_info.get(im_id) or []
    if gt_id >= len(entries) or not isinstance(entries[gt_id], dict):
        return None
    value = entries[gt_id].get("visib_fract")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def read_bop_views(path: str | os.PathLike, obj_id: int | None = None) -> PosedImageSet:
    """Read format (b): one BOP scene (``scene_camera.json``, ``scene_gt.json``, ``rgb/``,
    optional ``depth/`` and ``mask_visib/``) with ground-truth poses of the object.

    The ground-truth pose *is* the object-to-camera pose, so the world is the BOP model frame
    (``R_o2w = I``, origin 0) and everything is metric (``cam_t_m2c`` in mm, depth times
    ``depth_scale`` in mm). Frames without the object are skipped (a note says so). When
    ``scene_gt_info.json`` is there, each view carries its ``visib_fract``, so that the build
    can leave out frames where the object is hidden
    (:mod:`~sixd_pose_ros.objects.view_visibility`).

    Args:
        path: the scene folder.
        obj_id: the object's BOP id; needed only when the scene shows several objects.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise PosedImagesError(f"BOP scene folder {folder} does not exist; check the path")
    camera = _bop_json(folder / "scene_camera.json")
    gt = _bop_json(folder / "scene_gt.json")
    gt_info = _bop_json(folder / "scene_gt_info.json") if (folder / "scene_gt_info.json").is_file() else {}
    ids = sorted({int(g["obj_id"]) for gts in gt.values() for g in gts})
    if obj_id is None:
        if len(ids) != 1:
            raise PosedImagesError(f"the BOP scene {folder} shows objects {ids}: choose one "
                                   "with --obj-id")
        obj_id = ids[0]
    elif int(obj_id) not in ids:
        raise PosedImagesError(f"object {obj_id} is not in the BOP scene {folder} (it has "
                               f"{ids}); pass one of those to --obj-id")
    obj_id = int(obj_id)
    views, skipped, files, bad = [], [], [], []
    for im_id in sorted(camera):
        hits = [(k, g) for k, g in enumerate(gt.get(im_id, [])) if int(g["obj_id"]) == obj_id]
        if not hits:
            skipped.append(im_id)
            continue
        gt_id, g = hits[0]
        stem = f"{im_id:06d}"
        image = _find_image(folder / "rgb", stem) or _find_image(folder / "gray", stem)
        if image is None:
            files.append(("image", folder / "rgb" / f"{stem}.png"))
            continue
        cam = camera[im_id]
        where = f"BOP scene {folder.name}, image {im_id}"
        if "cam_K" not in cam:
            raise PosedImagesError(f"{where}: scene_camera.json has no cam_K; add the "
                                   "intrinsics")
        try:
            R = _check_rotation(g.get("cam_R_m2c"), where, "fix scene_gt.json (cam_R_m2c, row-major)")
            t = _vector(g.get("cam_t_m2c"), 3, f"{where} cam_t_m2c") / 1000.0
        except PosedImagesError as exc:
            bad.append(str(exc))  # real ground truth has the odd broken entry: skip, say so
            continue
        depth_path = _find_image(folder / "depth", stem)
        mask_path = folder / "mask_visib" / f"{stem}_{gt_id:06d}.png"
        w, h = _image_size(image)
        views.append(PosedView(
            name=f"rgb/{image.name}", image_path=image, K=_check_K(cam["cam_K"], where),
            R_w2c=R, t_w2c=t, width=w, height=h, depth_path=depth_path,
            depth_scale=float(cam.get("depth_scale", 1.0)) / 1000.0,
            mask_path=mask_path if mask_path.is_file() else None,
            visib_fract=_visib_fract(gt_info, im_id, gt_id)))
    _missing_files(files, folder / "scene_camera.json")
    notes = []
    if skipped:
        notes.append(f"{len(skipped)} frame(s) without object {obj_id} skipped")
    if bad and not views:
        raise PosedImagesError(f"no usable ground-truth pose of object {obj_id} in {folder}: "
                               + "; ".join(bad[:3]))
    if bad:
        notes.append(f"{len(bad)} frame(s) with an unusable ground-truth pose skipped: " + "; ".join(bad[:3]))
    hint = ObjectHint(R_o2w=np.eye(3), origin=np.zeros(3), frame_source="bop_ground_truth")
    return PosedImageSet(views=views, format="bop", metric=True, hint=hint, source=folder,
                         pose_file=folder / "scene_gt.json", notes=notes)


# ------------------------------------------------------------------------------------------------
# (c) a COLMAP text model with the object's point cloud or box and axis hints
# ------------------------------------------------------------------------------------------------

# COLMAP model -> (names of its parameters, OpenCV distortion built from them). Only models
# that OpenCV's (k1, k2, p1, p2) covers; others must be undistorted by COLMAP first.
_COLMAP_MODELS = {
    "SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8,
}


def _data_lines(path: Path) -> list[str]:
    """Lines of a COLMAP text file without comments (empty lines kept: images.txt pairs)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PosedImagesError(f"cannot read {path} ({exc})") from exc
    return [ln.strip() for ln in lines if not ln.lstrip().startswith("#")]


def _colmap_cameras(path: Path) -> dict[int, tuple[int, int, np.ndarray, np.ndarray]]:
    """``{camera_id: (width, height, K, dist)}`` with OpenCV pixel centres (COLMAP's are at
    +0.5: its image origin is the top-left *corner*)."""
    cams = {}
    for n, line in enumerate(_data_lines(path), 1):
        if not line:
            continue
        tok = line.split()
        where = f"{path.name} line {n}"
        try:
            cam_id, model, w, h = int(tok[0]), tok[1], int(tok[2]), int(tok[3])
            p = [float(x) for x in tok[4:]]
        except (IndexError, ValueError) as exc:
            raise PosedImagesError(f"{where} is not 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...'"
                                   ) from exc
        if model not in _COLMAP_MODELS:
            raise PosedImagesError(
                f"{where}: camera model {model} is not supported (use {sorted(_COLMAP_MODELS)}); "
                "undistort the images with `colmap image_undistorter` and export the undistorted "
                "model as text")
        if len(p) != _COLMAP_MODELS[model]:
            raise PosedImagesError(f"{where}: {model} takes {_COLMAP_MODELS[model]} parameters, "
                                   f"got {len(p)}")
        dist = np.zeros(4)
        if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            fx = fy = p[0]
            cx, cy = p[1], p[2]
            dist[:len(p) - 3] = p[3:]
        else:
            fx, fy, cx, cy = p[:4]
            dist[:len(p) - 4] = p[4:]
        K = _check_K([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1]], where)
        cams[cam_id] = (w, h, K, dist)
    return cams


def _colmap_images(path: Path) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
    """``[(name, camera_id, R_w2c, t_w2c)]`` from images.txt (two lines per image; the second,
    the 2D points, may be empty)."""
    from sixd_pose_ros.geometry.rotations import matrix_from_quat_xyzw

    lines = _data_lines(path)
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        tok = line.split()
        where = f"{path.name}: '{line[:60]}'"
        try:
            qw, qx, qy, qz, tx, ty, tz = (float(x) for x in tok[1:8])
            cam_id, name = int(tok[8]), " ".join(tok[9:])
        except (IndexError, ValueError) as exc:
            raise PosedImagesError(f"{where} is not 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID "
                                   "NAME'") from exc
        if not name:
            raise PosedImagesError(f"{where} has no image NAME")
        q = np.array([qx, qy, qz, qw])
        if not np.all(np.isfinite(q)) or abs(np.linalg.norm(q) - 1.0) > 1e-3:
            raise PosedImagesError(f"{path.name}: image {name}: the quaternion {q.tolist()} "
                                   "(x, y, z, w) is not a unit quaternion, so this is not a "
                                   "camera pose; export the model again")
        out.append((name, cam_id, matrix_from_quat_xyzw(q), np.array([tx, ty, tz])))
        i += 1  # skip the POINTS2D line that follows every image line
    return out


_COLMAP_MODEL_DIRS = (".", "sparse/0", "sparse", "colmap/sparse/0", "colmap/sparse", "colmap")


def read_colmap_model(path: str | os.PathLike) -> PosedImageSet:
    """Read format (c): a COLMAP text model plus the object's geometry and axes.

    Folder layout (as in Gen6D's custom-object workflow)::

        DIR/images/...                 the photos (names as in images.txt)
        DIR/cameras.txt, images.txt    COLMAP text model (also found in DIR/sparse/0,
                                       DIR/sparse, DIR/colmap/sparse/0, DIR/colmap);
                                       points3D.txt may be there and is not needed
        DIR/meta_info.txt              two lines of 3 numbers: object +x (forward), then object
                                       +z (up), in COLMAP world coordinates
        DIR/object_point_cloud.ply     the reconstruction cropped to the object (optional)
        DIR/object.json|yaml           optional: up, forward, center, extents, radius,
                                       point_cloud, images (folder), meters_per_unit

    Without ``meters_per_unit`` the model's scale is arbitrary (``metric = False``).
    """
    folder = Path(path)
    model = next((folder / d for d in _COLMAP_MODEL_DIRS
                  if (folder / d / "cameras.txt").is_file()
                  and (folder / d / "images.txt").is_file()), None)
    if model is None:
        binary = next((folder / d for d in _COLMAP_MODEL_DIRS
                       if (folder / d / "cameras.bin").is_file()), None)
        if binary is not None:
            raise PosedImagesError(
                f"{binary} holds a binary COLMAP model; convert it to text with `colmap "
                f"model_converter --input_path {binary} --output_path {binary} --output_type TXT`")
        raise PosedImagesError(f"no cameras.txt + images.txt in {folder} (or its sparse/0, "
                               "colmap/ folders); export the COLMAP model as text there")
    meta: dict = {}
    meta_file = next((folder / n for n in ("object.json", "object.yaml", "object.yml")
                      if (folder / n).is_file()), None)
    if meta_file is not None:
        meta = _load_mapping(meta_file)
    where = meta_file.name if meta_file else "COLMAP object"
    extra = {"images", "meters_per_unit"}
    block = {k: v for k, v in meta.items() if k not in extra}
    if "up" not in block and "forward" not in block and "to_world" not in block:
        info = folder / "meta_info.txt"
        if not info.is_file():
            raise PosedImagesError(
                f"the COLMAP model in {folder} needs the object's axes: write {info} with two "
                "lines of 3 numbers, the object's forward (+x) then up (+z) direction in the "
                "model's coordinates (or 'forward' and 'up' in object.json)")
        try:
            rows = np.loadtxt(info, dtype=np.float64, ndmin=2)
        except ValueError as exc:
            raise PosedImagesError(f"{info} must hold two lines of 3 numbers ({exc})") from exc
        if rows.shape != (2, 3):
            raise PosedImagesError(f"{info} must hold two lines of 3 numbers (forward, then "
                                   f"up), got shape {rows.shape}")
        block["forward"], block["up"] = rows[0].tolist(), rows[1].tolist()
        where = "meta_info.txt" if meta_file is None else where
    if "point_cloud" not in block and (folder / "object_point_cloud.ply").is_file():
        block["point_cloud"] = "object_point_cloud.ply"
    scale = meta.get("meters_per_unit")
    if scale is not None and not float(scale) > 0:
        raise PosedImagesError(f"{meta_file}: meters_per_unit must be > 0")
    unit = float(scale) if scale is not None else 1.0
    hint = _object_hint(block, where, unit, folder)
    cams = _colmap_cameras(model / "cameras.txt")
    records = _colmap_images(model / "images.txt")
    image_dir = folder / str(meta.get("images", "images"))
    _missing_files([("image", image_dir / name) for name, *_ in records], model / "images.txt")
    views = []
    for name, cam_id, R, t in records:
        if cam_id not in cams:
            raise PosedImagesError(f"images.txt: image {name} uses camera {cam_id}, which "
                                   "cameras.txt does not define; export the model again")
        w, h, K, dist = cams[cam_id]
        iw, ih = _image_size(image_dir / name)
        if (iw, ih) != (w, h):
            raise PosedImagesError(f"image {name} is {iw}x{ih} but COLMAP camera {cam_id} is "
                                   f"{w}x{h}; use the images the model was reconstructed from")
        views.append(PosedView(name=name, image_path=image_dir / name, K=K, R_w2c=R,
                               t_w2c=t * unit, width=w, height=h,
                               dist=dist if np.any(dist != 0) else None))
    notes = [] if hint.points is not None or hint.extents is not None or hint.radius is not None \
        else [("no object_point_cloud.ply and no box: the object's size comes from the camera "
               "frusta (an upper bound); crop the reconstruction to the object for a tight one")]
    return PosedImageSet(views=views, format="colmap", metric=scale is not None, hint=hint,
                         source=folder, pose_file=model / "images.txt", notes=notes)


# ------------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------------


def detect_format(path: str | os.PathLike) -> str:
    """``"folder"`` (poses.json/yaml), ``"bop"`` (scene_gt.json + scene_camera.json) or
    ``"colmap"`` (cameras.txt + images.txt in the folder or its sparse/0, colmap/ folders)."""
    folder = Path(path)
    if not folder.is_dir():
        raise PosedImagesError(f"{folder} is not a folder; give the folder of posed images")
    if any((folder / n).is_file() for n in POSES_FILES):
        return "folder"
    if (folder / "scene_gt.json").is_file() and (folder / "scene_camera.json").is_file():
        return "bop"
    if any((folder / d / "cameras.txt").is_file() or (folder / d / "cameras.bin").is_file()
           for d in _COLMAP_MODEL_DIRS):
        return "colmap"
    raise PosedImagesError(
        f"cannot tell the format of {folder}: it has no poses.json/poses.yaml (plain folder), no "
        "scene_gt.json + scene_camera.json (BOP scene) and no cameras.txt + images.txt (COLMAP); "
        "see docs/model_free_inputs.md")


def read_posed_images(path: str | os.PathLike, fmt: str = "auto",
                      obj_id: int | None = None) -> PosedImageSet:
    """Read posed reference images in any supported format.

    Args:
        path: the input folder.
        fmt: ``"auto"``, ``"folder"``, ``"bop"`` or ``"colmap"``.
        obj_id: BOP object id (BOP scenes with several objects only).

    Raises:
        PosedImagesError: see the readers.
    """
    fmt = fmt.strip().lower()
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "folder":
        return read_folder(path)
    if fmt == "bop":
        return read_bop_views(path, obj_id)
    if fmt == "colmap":
        return read_colmap_model(path)
    raise PosedImagesError(f"unknown input format {fmt!r}; use auto, {', '.join(FORMATS)}")

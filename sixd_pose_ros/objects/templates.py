"""Feature templates of a mesh: rendered views encoded by the frozen pretrained backbone.

Why templates of a frozen ImageNet backbone instead of the trained codebook: the codebook's
encoder was trained from scratch on 2 CPU cores and does not transfer to real images, while
patch features of a pretrained network compared position by position find the viewing
direction of a real object from grey renders of its untextured CAD model (see
``features/efficientnet.py``).

A template is one rendered view, object-centred exactly as a query crop is
(``geometry/crop_camera.py``), so that a patch at the same grid cell of query and template shows
the same part of the object when the rotations agree. In-plane turns are made by rotating the
rendered image about its principal point (exact for this camera: a rotation about the optical
axis), so rendering costs ``n_directions`` views and the backbone ``n_directions x n_inplane``.

Stored per template: its rotation (normalized object frame -> template camera), unit patch
features at stride 16, a foreground mask per patch, and the depth at each patch centre
(normalized units), which lifts a matched patch to a 3D model point for PnP.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import trimesh

from sixd_pose_ros.io import atomic_output_path
from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry.crop_camera import crop_focal
from sixd_pose_ros.geometry.rotations import inplane_rotation
from sixd_pose_ros.objects.codebook import mesh_geometry_sha256, rotate_crop

__all__ = ["TemplateSet", "TemplateFormatError", "build_templates", "crop_intrinsics", "encode_turned_views", "TEMPLATE_DEFAULTS"]

#: (icosphere subdivisions of the directions, in-plane angles, crop side in pixels).
#: 162 directions x 12 angles (30 degrees): the coarsest grid whose retrieval error is below what
#: depth alignment and PnP recover from; 224 px = the backbone's native input, a 14x14 patch grid.
TEMPLATE_DEFAULTS = (2, 12, 224)
_FORMAT_VERSION = 1


class TemplateFormatError(SixdPoseError):
    """A template file is missing, corrupt or made by other features; the message says how to rebuild."""


@dataclass
class TemplateSet:
    """Encoded templates of one object (see the module docstring).

    Attributes:
        R: ``(N, 3, 3)`` rotations, normalized object frame -> template camera.
        distance: camera distance of every template, normalized units (``t = (0, 0, distance)``).
        K: ``(3, 3)`` template crop intrinsics (``size`` x ``size``).
        size: crop side, pixels.
        features: ``(N, G, G, C)`` float16 unit patch features.
        patch_mask: ``(N, G, G)`` bool: the patch is mostly object.
        patch_depth: ``(N, G, G)`` float32 depth at the patch centre, normalized units (0 = none).
        backbone: the backbone's identity (``BackboneIdentity.as_dict()``).
        grid_settings: ``(subdivisions, n_inplane)`` it was built with.
        distances: ``(N,)`` per-template camera distance, or None when all are ``distance``.
            Templates made from photos (objects/reference_templates.py) keep each photo's own
            distance: a crop's focal length follows from it, and lifting a patch to a model
            point with another camera's would bend the points by the perspective difference.
    """

    R: np.ndarray
    distance: float
    K: np.ndarray
    size: int
    features: np.ndarray
    patch_mask: np.ndarray
    patch_depth: np.ndarray
    backbone: dict
    grid_settings: tuple[int, int] = TEMPLATE_DEFAULTS[:2]
    distances: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.R)

    def camera(self, j: int) -> tuple[np.ndarray, float]:
        """``(K, distance)`` of template ``j``'s crop camera (``t = (0, 0, distance)``)."""
        if self.distances is None:
            return self.K, self.distance
        d = float(self.distances[j])
        return crop_intrinsics(d, self.size), d

    @property
    def grid(self) -> int:
        return int(self.features.shape[1])

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        extra = {} if self.distances is None else {"distances": np.asarray(self.distances, np.float64)}
        with atomic_output_path(path, overwrite=True) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, R=self.R, distance=self.distance, K=self.K, size=self.size,
                         features=self.features, patch_mask=self.patch_mask, patch_depth=self.patch_depth,
                         version=_FORMAT_VERSION, grid_settings=np.asarray(self.grid_settings), **extra,
                         **{f"backbone_{k}": v for k, v in self.backbone.items()})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, expected_backbone: dict | None = None) -> "TemplateSet":
        path = Path(path)
        try:
            with np.load(path) as z:
                version = int(z["version"])
                backbone = {k[len("backbone_"):]: z[k].item() for k in z.files if k.startswith("backbone_")}
                ts = cls(z["R"], float(z["distance"]), z["K"], int(z["size"]), z["features"],
                         z["patch_mask"], z["patch_depth"], backbone, tuple(int(v) for v in z["grid_settings"]),
                         z["distances"] if "distances" in z.files else None)
        except (OSError, KeyError, ValueError) as exc:
            raise TemplateFormatError(f"cannot read the templates {path} ({exc}); rebuild the object with "
                                      "`sixd-pose build-object ... --overwrite`") from exc
        if version != _FORMAT_VERSION:
            raise TemplateFormatError(f"{path} has template format {version}, this version reads "
                                      f"{_FORMAT_VERSION}; rebuild the object with `sixd-pose build-object ... --overwrite`")
        if expected_backbone is not None and backbone.get("weights_sha256") != expected_backbone["weights_sha256"]:
            raise TemplateFormatError(f"{path} was encoded by other backbone weights ({backbone.get('variant')}, "
                                      f"{str(backbone.get('weights_sha256'))[:12]}) than the ones installed "
                                      f"({expected_backbone['variant']}, {expected_backbone['weights_sha256'][:12]}); "
                                      "rebuild the object with `sixd-pose build-object ... --overwrite`")
        return ts


def crop_intrinsics(distance: float, size: int) -> np.ndarray:
    """Intrinsics of the ``size`` px crop that the unit sphere at ``distance`` fills."""
    f = float(crop_focal(distance, 1.0, size))
    c = 0.5 * (size - 1)
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def _patch_values(images: np.ndarray, grid: int, reduce: str) -> np.ndarray:
    """(N, S, S) -> (N, G, G): the mean over each patch, or the value at its centre pixel."""
    n, s = images.shape[:2]
    cell = s // grid
    if reduce == "mean":
        return images[:, :grid * cell, :grid * cell].reshape(n, grid, cell, grid, cell).mean((2, 4))
    centre = (np.arange(grid) * cell + cell // 2)
    return images[:, centre][:, :, centre]


def build_templates(mesh: trimesh.Trimesh, backbone=None, subdivisions: int = TEMPLATE_DEFAULTS[0],
                    n_inplane: int = TEMPLATE_DEFAULTS[1], size: int = TEMPLATE_DEFAULTS[2],
                    progress: bool = True, batch: int = 32) -> TemplateSet:
    """Render ``mesh`` (meters) from every icosphere direction, turn each view in-plane and encode
    it. ``backbone``: a :class:`~sixd_pose_ros.features.efficientnet.PatchBackbone` (default: the
    shipped EfficientNet-Lite0 block 10)."""
    from sixd_pose_ros.features.efficientnet import load_patch_backbone
    from sixd_pose_ros.geometry.sampling import icosphere_vertices
    from sixd_pose_ros.objects.references import render_references

    backbone = backbone or load_patch_backbone()
    n_dirs = len(icosphere_vertices(subdivisions))
    refs = render_references(mesh, n_views=n_dirs, size=size, subdivisions=subdivisions)
    R, feats, masks, depths = encode_turned_views(refs.images, refs.masks, refs.depth, refs.R, backbone, n_inplane,
                                                  progress, batch)
    return TemplateSet(R, float(refs.t[0, 2]), refs.K[0], size, feats, masks, depths, backbone.identity.as_dict(),
                       (int(subdivisions), int(n_inplane)))


def encode_turned_views(images: np.ndarray, masks: np.ndarray, depth: np.ndarray, R: np.ndarray, backbone,
                        n_inplane: int, progress: bool = True, batch: int = 32):
    """Every object-centred view ``(N, S, S[, 3])`` turned by ``n_inplane`` angles about its
    principal point and encoded: ``(R, features, patch_mask, patch_depth)``, ``N x n_inplane``
    templates, view-major. The one encoding of templates, whether the views are renders of a
    mesh (:func:`build_templates`) or posed photos (objects/reference_templates.py), so both
    compare alike with a query crop. ``masks`` bool, ``depth`` normalized units (0 = none)."""
    from tqdm import tqdm

    grid = images.shape[1] // backbone.stride
    angles = np.arange(n_inplane) * 2 * np.pi / n_inplane
    n = len(images)
    Rs, feats, patch_masks, patch_depths = [], [], [], []
    bar = tqdm(total=n * n_inplane, desc="encoding templates", unit="view", disable=not progress)
    step = max(1, batch // n_inplane)
    for start in range(0, n, step):
        turned, mask_imgs, depth_imgs = [], [], []
        for j in range(start, min(n, start + step)):
            for a in angles:  # the codebook's in-plane turn of a crop, about its principal point
                turned.append(rotate_crop(images[j], a))
                mask_imgs.append(rotate_crop(masks[j].astype(np.float32), a))
                depth_imgs.append(rotate_crop(depth[j], a, cv2.INTER_NEAREST))
                Rs.append(inplane_rotation(a) @ R[j])
        feats.append(backbone.encode(np.stack(turned)).astype(np.float16))
        patch_masks.append(_patch_values(np.stack(mask_imgs), grid, "mean") > 0.5)
        patch_depths.append(_patch_values(np.stack(depth_imgs), grid, "centre").astype(np.float32))
        bar.update(len(turned))
    bar.close()
    return np.stack(Rs), np.concatenate(feats), np.concatenate(patch_masks), np.concatenate(patch_depths)


def _cache_file(mesh: trimesh.Trimesh, backbone, grid_settings: tuple[int, int]) -> Path:
    """Where templates of this mesh (geometry and colours), grid and backbone are kept between
    runs: ``$XDG_CACHE_HOME/sixd_pose_ros/templates`` (``~/.cache/...``). Why a cache beside
    the object folder's copy: evaluations and tests build the same mesh into fresh folders, and
    encoding the templates is the slowest part of a build."""
    h = hashlib.sha256(mesh_geometry_sha256(mesh).encode())
    colors = getattr(mesh.visual, "vertex_colors", None) if mesh.visual.kind == "vertex" else None
    if colors is not None:
        h.update(np.ascontiguousarray(colors, dtype=np.uint8).tobytes())
    h.update(f"{backbone.identity.weights_sha256}:{backbone.identity.block}:{grid_settings}:{_FORMAT_VERSION}".encode())
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sixd_pose_ros" / "templates" / f"{h.hexdigest()[:24]}.npz"


def _load_matching(path: Path, backbone, grid_settings: tuple[int, int]) -> TemplateSet | None:
    if not path.is_file():
        return None
    try:
        templates = TemplateSet.load(path, expected_backbone=backbone.identity.as_dict())
    except TemplateFormatError:
        return None  # stale or corrupt: rebuilt by the caller and replaced atomically
    return templates if templates.grid_settings == tuple(grid_settings) else None


def load_or_build_templates(folder: str | os.PathLike, mesh: trimesh.Trimesh, backbone=None,
                            grid_settings: tuple[int, int] = TEMPLATE_DEFAULTS[:2],
                            progress: bool = True) -> TemplateSet:
    """``folder/templates.npz`` when it was encoded by ``backbone``'s weights on this grid, else
    the user cache's copy, else built now and stored in both (atomically): a folder built before
    the templates existed, or with other backbone weights, gains them once instead of failing."""
    from sixd_pose_ros.features.efficientnet import load_patch_backbone

    backbone = backbone or load_patch_backbone()
    grid_settings = tuple(int(v) for v in grid_settings)
    path = Path(folder) / "templates.npz"
    templates = _load_matching(path, backbone, grid_settings)
    if templates is not None:
        return templates
    cache = _cache_file(mesh, backbone, grid_settings)
    templates = _load_matching(cache, backbone, grid_settings)
    if templates is None:
        templates = build_templates(mesh, backbone, *grid_settings, progress=progress)
        _try_save(templates, cache)
    _try_save(templates, path)
    return templates


def _try_save(templates: TemplateSet, path: Path) -> None:
    try:
        templates.save(path)
    except (OSError, SixdPoseError):
        pass  # a read-only folder still works, at the cost of encoding again next time

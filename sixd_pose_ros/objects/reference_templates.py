"""Feature templates of a model-free object: its posed reference photos, encoded like mesh templates.

Why: known-model mode finds places and rotations with templates of a frozen pretrained backbone
(objects/templates.py), which transfer to real images, while the model-free detector and
selector were trained from scratch on CPU and do not (real YCB-V: RGB-D ADD-S-0.1d 26.9 %).
A model-free database already holds what a template is: each reference is an object-centred
crop whose unit sphere fills the crop (objects/references.py), with its rotation, and a mask and
depth when the photos had them. So the same stages (pipeline/feature_detection.py,
pipeline/template_matching.py) run on them unchanged.

Per reference: the crop resized to the template size (224 px: the backbone's grid and the query
crops of ``TemplateMatcher``; a resize of an object-centred crop is the same camera with a
scaled focal length), the background outside the mask set to black as a mesh render's is (so
that a reference's own surroundings are not part of what a query must match), turned in-plane
by ``n_inplane`` angles and encoded by :func:`~sixd_pose_ros.objects.templates.encode_turned_views`.
Without masks the whole inscribed disk counts as object; without depth the patches have no 3D
point and PnP has nothing to lift (retrieval still works). Each template keeps its photo's
camera distance (``TemplateSet.distances``).

Stored as ``reference_templates.npz`` in the database folder on first use (atomically); reused
when it was encoded by the installed backbone weights with the same in-plane count, rebuilt
otherwise. Rebuilding the database replaces the folder, and with it this file.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.objects.references import ReferenceSet
from sixd_pose_ros.objects.templates import (
    TEMPLATE_DEFAULTS,
    TemplateFormatError,
    TemplateSet,
    crop_intrinsics,
    encode_turned_views,
)

__all__ = ["REFERENCE_TEMPLATES_FILE", "build_reference_templates", "load_or_build_reference_templates"]

REFERENCE_TEMPLATES_FILE = "reference_templates.npz"
#: ``grid_settings[0]`` of reference templates: no icosphere, the directions are the photos'.
_PHOTO_DIRECTIONS = -1


def _resized(refs: ReferenceSet, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (background black), masks and masked depth of every reference at ``size`` px."""
    n, s = len(refs), refs.size
    if refs.masks is not None:
        masks = refs.masks
    else:  # the unit sphere's disk: all the crop can say about where the object is
        yy, xx = np.mgrid[:s, :s] - 0.5 * (s - 1)
        masks = np.broadcast_to(np.hypot(xx, yy) <= 0.5 * s, (n, s, s))
    depth = refs.depth if refs.depth is not None else np.zeros((n, s, s), np.float32)
    images, out_masks, out_depth = [], [], []
    for img, m, d in zip(refs.images, masks, depth):
        if s != size:
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
            m = cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
            d = cv2.resize(d, (size, size), interpolation=cv2.INTER_NEAREST)
        images.append(np.where(m[..., None], img, 0).astype(np.uint8))
        out_masks.append(m)
        out_depth.append(np.where(m, d, 0.0).astype(np.float32))  # a patch centre off the object has no point
    return np.stack(images), np.stack(out_masks), np.stack(out_depth)


def build_reference_templates(refs: ReferenceSet, backbone, n_inplane: int = TEMPLATE_DEFAULTS[1],
                              size: int = TEMPLATE_DEFAULTS[2], progress: bool = False) -> TemplateSet:
    """Templates of every reference of ``refs`` (see the module docstring)."""
    images, masks, depth = _resized(refs, size)
    R, feats, patch_mask, patch_depth = encode_turned_views(images, masks, depth, refs.R, backbone, n_inplane,
                                                            progress)
    distances = np.repeat(refs.t[:, 2], n_inplane)
    median = float(np.median(distances))
    return TemplateSet(R, median, crop_intrinsics(median, size), size, feats, patch_mask, patch_depth, backbone.identity.as_dict(),
                       (_PHOTO_DIRECTIONS, int(n_inplane)), distances)


def load_or_build_reference_templates(folder: str | Path, refs: ReferenceSet, backbone,
                                      n_inplane: int = TEMPLATE_DEFAULTS[1]) -> TemplateSet:
    """``folder/reference_templates.npz`` when the installed backbone encoded it with
    ``n_inplane`` turns of these ``refs``' count, else built now and stored there (a read-only
    folder still works: the templates are then encoded on every load)."""
    path = Path(folder) / REFERENCE_TEMPLATES_FILE
    if path.is_file():
        try:
            ts = TemplateSet.load(path, expected_backbone=backbone.identity.as_dict())
            if ts.grid_settings == (_PHOTO_DIRECTIONS, int(n_inplane)) and len(ts) == len(refs) * n_inplane:
                return ts
        except TemplateFormatError:
            pass  # stale or corrupt: rebuilt below and replaced atomically
    ts = build_reference_templates(refs, backbone, n_inplane)
    try:
        ts.save(path)
    except (OSError, SixdPoseError):
        pass
    return ts

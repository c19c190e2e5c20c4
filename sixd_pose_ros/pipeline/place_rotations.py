"""Rotation hypotheses at given places of one object with a CAD mesh: from its templates (and
without depth the PnP pose of their patch matches) or from the trained pose codebook.

Why a module of its own: the known-model proposer chooses places and orders hypotheses; what a
place's crop says about the rotation is a stage of its own, with two implementations.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from sixd_pose_ros.geometry.crop_camera import DegenerateReferenceError, object_centred_camera
from sixd_pose_ros.objects.codebook import pose_from_hit
from sixd_pose_ros.pipeline.detection import images_to_tensor
from sixd_pose_ros.pipeline.template_matching import TemplateMatcher, TemplatePose
from sixd_pose_ros.pipeline.types import Frame

__all__ = ["template_rotations", "codebook_rotations"]


def template_rotations(matcher: TemplateMatcher, frame: Frame, places: list, k: int, *, recentre_rounds: int,
                       pnp_templates: int, with_depth: bool) -> tuple[list, list]:
    """The templates' rotations at each place ``(detection, centre, segment)``, recentred where
    they match best; without depth also the PnP pose of the best templates' matches, first.
    Returns the usable places ``(det, query, centre, segment)`` and, per place,
    ``[(R, t, similarity)]`` best first."""
    K = frame.K
    queries = matcher.locate(frame.rgb, K, [center for _, center, _ in places], recentre_rounds)
    cams, hits = [], []
    for (det, _, segment), query in zip(places, queries):
        if query is None:
            continue
        center = query.center  # where the templates moved the place
        found = matcher.retrieve(query, k=max(k, pnp_templates))
        place = [(p.R, p.t, p.score) for p in found[:k]]
        if not with_depth:
            pnp = _pnp_pose(frame, matcher, query, found, pnp_templates)
            if pnp is not None:
                place.insert(0, (pnp.R, pnp.t, found[0].score))
                query.pnp_inliers = pnp.inliers
        cams.append((det, query, center, segment))
        hits.append(place)
    return cams, hits


def _pnp_pose(frame: Frame, matcher: TemplateMatcher, query, found: list[TemplatePose], pnp_templates: int):
    """PnP from the best templates' matches; then once more from a crop centred where that
    pose puts the object (tight crops match better). ``None`` when PnP finds no consensus."""
    pose = matcher.pnp(query, frame.K, [p.template for p in found[:pnp_templates]])
    if pose is None:
        return None
    center = pose.R @ matcher.norm.center + pose.t
    recentred = matcher.crop(frame.rgb, frame.K, [center])[0]
    if recentred is None:
        return pose
    again = matcher.retrieve(recentred, k=pnp_templates)
    second = matcher.pnp(recentred, frame.K, [p.template for p in again])
    return second if second is not None and second.inliers >= pose.inliers else pose


def codebook_rotations(encoder, codebook, scale: float, frame: Frame, places: list, k: int, crop_size: int,
                       device) -> tuple[list, list]:
    """The codebook's ``k`` best rotations at each place, from the encoder's code of the
    object-centred crop there. Returns the usable places ``(det, crop camera, centre, segment)``
    and, per place, ``[(R, t, similarity)]`` best first."""
    K = frame.K
    crops, cams = [], []
    for det, center, segment in places:
        try:
            vc = object_centred_camera(K, center, scale, crop_size)
        except DegenerateReferenceError:
            continue
        crops.append(cv2.warpPerspective(frame.rgb, vc.H, (crop_size, crop_size), flags=cv2.INTER_LINEAR))
        cams.append((det, vc, center, segment))
    if not crops:
        return [], []
    # Chunks of 8: the encoder's engine profile (engines/export.py) takes at most 8 crops.
    z_p = torch.cat([encoder(images_to_tensor(np.stack(crops[c:c + 8]), device))[1]
                     for c in range(0, len(crops), 8)])
    idx, sim = codebook.lookup(z_p, k=k)
    idx, sim = idx.cpu().numpy(), sim.cpu().numpy()
    hits = [[(*pose_from_hit(codebook, int(idx[i, j]), cams[i][1].R_v, cams[i][2]), float(sim[i, j]))
             for j in range(idx.shape[1])] for i in range(len(cams))]
    return cams, hits

"""Rotations from feature templates, and poses from patch correspondences + PnP.

At a hypothesized object centre the query is cropped exactly as the templates were rendered
(object-centred virtual camera, ``geometry/crop_camera.py``), encoded once by the frozen
backbone, and compared with every template by masked patch cosine: the mean, over the
template's object patches, of the cosine with the query patch at the same grid cell. A
template that scores high shows the object turned as in the query, so its rotation, carried
back through the virtual camera, is a rotation hypothesis.

Correspondences: query and template patches matched as mutual nearest neighbours (over all
query patches, so a shifted crop still matches), template patches lifted to 3D model points by
the template's depth, then PnP-RANSAC (SQPnP) and Levenberg-Marquardt on the inliers: a full
pose, translation included, without depth; the inlier count is its evidence.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sixd_pose_ros.geometry.crop_camera import DegenerateReferenceError, VirtualCamera, object_centred_camera
from sixd_pose_ros.geometry.normalization import ObjectNormalization
from sixd_pose_ros.objects.templates import TemplateSet

__all__ = ["QueryCrop", "TemplateMatcher", "TemplatePose"]


@dataclass
class QueryCrop:
    """One encoded query crop: where it was taken and its patch features ``(G, G, C)``."""

    center: np.ndarray  # (3,) hypothesized object centre, camera frame, meters
    camera: VirtualCamera
    features: np.ndarray
    scores: np.ndarray | None = None  # (N,) against the templates, once computed
    pnp_inliers: int = 0  # of the PnP pose found from this crop (0: none tried or found)


@dataclass
class TemplatePose:
    """A pose from a template: ``R, t`` object -> camera (meters); ``score`` the masked patch
    cosine of its template; ``inliers`` the PnP inliers (0 when the pose is the template's
    rotation at the crop centre)."""

    R: np.ndarray
    t: np.ndarray
    score: float
    template: int
    inliers: int = 0


class TemplateMatcher:
    """Retrieval and PnP against one object's templates."""

    def __init__(self, templates: TemplateSet, normalization: ObjectNormalization, backbone,
                 runner=None) -> None:
        """``runner``: the backbone as an engines Runner (``patch_backbone_spec``) to encode
        query crops with; None = the torch module."""
        self.templates = templates
        self.norm = normalization
        self.backbone = backbone
        self.runner = runner
        g, c = templates.grid, templates.features.shape[-1]
        mask = templates.patch_mask.reshape(len(templates), g * g).astype(np.float32)
        # Masked and pre-divided by the mask's size, so one matrix product gives every score.
        weights = mask / np.maximum(mask.sum(1, keepdims=True), 1.0)
        self._bank = (templates.features.reshape(len(templates), g * g, c).astype(np.float32)
                      * weights[:, :, None]).reshape(len(templates), g * g * c)

    def crop(self, rgb: np.ndarray, K: np.ndarray, centers: list[np.ndarray]) -> list[QueryCrop | None]:
        """Crop and encode the image at each centre (one backbone batch); ``None`` for a
        degenerate centre (behind the camera, or the camera inside the object)."""
        size = self.templates.size
        cams: list[VirtualCamera | None] = []
        images = []
        for c in centers:
            try:
                vc = object_centred_camera(K, c, self.norm.scale, size)
            except DegenerateReferenceError:
                cams.append(None)
                continue
            images.append(cv2.warpPerspective(rgb, vc.H, (size, size), flags=cv2.INTER_LINEAR))
            cams.append(vc)
        feats = iter(self.backbone.encode(np.stack(images), runner=self.runner) if images else [])
        return [None if vc is None else QueryCrop(np.asarray(c, np.float64), vc, next(feats))
                for c, vc in zip(centers, cams)]

    def scores(self, query: QueryCrop) -> np.ndarray:
        """``(N,)`` masked patch cosine of the query with every template (computed once per crop:
        the product reads the whole template bank, the largest memory traffic of a place)."""
        if query.scores is None:
            query.scores = self._bank @ query.features.reshape(-1).astype(np.float32)
        return query.scores

    def retrieve(self, query: QueryCrop, k: int = 3) -> list[TemplatePose]:
        """The ``k`` best templates as poses: their rotation, at the crop's centre."""
        s = self.scores(query)
        top = np.argsort(-s)[:k]
        return [self._template_pose(query, int(j), float(s[j])) for j in top]

    def best_shift(self, query: QueryCrop, candidates: int = 16, reach: int = 4) -> tuple[int, int, float]:
        """Where in the crop the object is: the template-patch offset ``(dx, dy)`` (in patches,
        at most ``reach``) at which the ``candidates`` best templates match best, and that score.

        Why: a place from a depth segment or a detector peak is often off the object's centre
        (touching objects merge into one segment, whose centroid lies between them), and both
        the retrieval and the later depth alignment start from it. One correlation over shifts,
        batched as a convolution, finds the offset; the caller re-crops there."""
        import torch

        ts = self.templates
        g, c = ts.grid, ts.features.shape[-1]
        top = np.argsort(-self.scores(query))[:candidates]
        kernels = torch.from_numpy(self._bank[top].reshape(len(top), g, g, c)).permute(0, 3, 1, 2)
        q = torch.from_numpy(np.ascontiguousarray(query.features, dtype=np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            out = torch.nn.functional.conv2d(torch.nn.functional.pad(q, (reach,) * 4), kernels)[0]  # (M, 2r+1, 2r+1)
        flat = int(out.reshape(-1).argmax())
        _, dy, dx = np.unravel_index(flat, out.shape)
        return int(dx) - reach, int(dy) - reach, float(out.reshape(-1)[flat])

    def shifted_center(self, query: QueryCrop, dx: int, dy: int) -> np.ndarray:
        """The 3D centre seen ``(dx, dy)`` patches from the crop's centre, at the same distance."""
        cell = self.templates.size / self.templates.grid
        Kv = query.camera.K
        uv = np.array([Kv[0, 2] + dx * cell, Kv[1, 2] + dy * cell, 1.0])
        ray = query.camera.R_v.T @ (np.linalg.inv(Kv) @ uv)
        return ray / np.linalg.norm(ray) * np.linalg.norm(query.center)

    def locate(self, rgb: np.ndarray, K: np.ndarray, centers: list[np.ndarray],
               rounds: int = 2, top: int = 6) -> list[QueryCrop | None]:
        """Crops at ``centers``; the ``top`` that match the templates best are each moved (up to
        ``rounds`` times) to where the templates match best, so that retrieval and matching see
        the object centred. Only the best are moved because every move costs a backbone pass."""
        queries = self.crop(rgb, K, centers)
        for _ in range(rounds):
            shifts = {i: self.best_shift(q) for i, q in enumerate(queries) if q is not None}
            best = sorted(shifts, key=lambda i: -shifts[i][2])[:top]
            moves = {i: self.shifted_center(queries[i], *shifts[i][:2]) for i in best if shifts[i][:2] != (0, 0)}
            if not moves:
                break
            for i, q in zip(moves, self.crop(rgb, K, list(moves.values()))):
                if q is not None:
                    queries[i] = q
        return queries

    def _template_pose(self, query: QueryCrop, j: int, score: float) -> TemplatePose:
        R_n = query.camera.R_v.T @ self.templates.R[j]  # normalized object frame -> camera
        R = R_n  # the normalized frame is the model frame shifted and scaled, never turned
        t = query.center - R @ self.norm.center
        return TemplatePose(R, t, score, j)

    def correspondences(self, query: QueryCrop, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Mutual-nearest-neighbour patch matches with template ``j``: ``(M, 3)`` model points
        (meters, model frame) and ``(M, 2)`` query pixels in the crop."""
        ts = self.templates
        g, c = ts.grid, ts.features.shape[-1]
        q = query.features.reshape(g * g, c).astype(np.float32)
        fg = np.flatnonzero(ts.patch_mask[j].reshape(-1) & (ts.patch_depth[j].reshape(-1) > 0))
        if len(fg) == 0:
            return np.zeros((0, 3)), np.zeros((0, 2))
        sim = q @ ts.features[j].reshape(g * g, c)[fg].astype(np.float32).T
        best_t = sim.argmax(1)
        best_q = sim.argmax(0)
        qi = np.flatnonzero(best_q[best_t] == np.arange(len(q)))
        ti = fg[best_t[qi]]
        cell = ts.size / g
        tu, tv = (ti % g + 0.5) * cell - 0.5, (ti // g + 0.5) * cell - 0.5
        d = ts.patch_depth[j].reshape(-1)[ti]
        Kt, distance = ts.camera(j)
        X_cam = np.stack([(tu - Kt[0, 2]) / Kt[0, 0] * d, (tv - Kt[1, 2]) / Kt[1, 1] * d, d], 1)
        X_n = (X_cam - np.array([0.0, 0.0, distance])) @ ts.R[j]  # R^T (X - t), row vectors
        uv = np.stack([(qi % g + 0.5) * cell - 0.5, (qi // g + 0.5) * cell - 0.5], 1)
        return self.norm.to_metric(X_n), uv

    def pnp(self, query: QueryCrop, K: np.ndarray, templates: list[int],
            reprojection_px: float = 12.0) -> TemplatePose | None:
        """PnP-RANSAC (SQPnP) on the matches pooled over ``templates``, then LM on the inliers,
        in the crop's camera (its pixels are where the matches were found), carried back to the
        image camera. ``None`` when fewer than 6 matches or no consensus."""
        X, uv = zip(*(self.correspondences(query, j) for j in templates))
        X, uv = np.concatenate(X), np.concatenate(uv)
        if len(X) < 6:
            return None
        Kc = query.camera.K
        try:
            ok, rvec, tvec, inliers = cv2.solvePnPRansac(X, uv, Kc, None, iterationsCount=300,
                                                         reprojectionError=reprojection_px,
                                                         flags=cv2.SOLVEPNP_SQPNP)
            if not ok or inliers is None or len(inliers) < 6:
                return None
            inl = inliers[:, 0]
            rvec, tvec = cv2.solvePnPRefineLM(X[inl], uv[inl], Kc, None, rvec, tvec)
        except cv2.error:
            return None  # degenerate matches (e.g. all on one patch of a far crop): no consensus
        R_v, t_v = cv2.Rodrigues(rvec)[0], tvec.ravel()
        R_cam = query.camera.R_v.T  # virtual -> image camera (same optical centre)
        return TemplatePose(R_cam @ R_v, R_cam @ t_v, 0.0, int(templates[0]), int(len(inl)))

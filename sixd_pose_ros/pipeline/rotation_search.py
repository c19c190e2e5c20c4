"""Coarse rotation hypotheses for an object on a depth segment, when retrieval's are not enough.

Why: ICP converges from about 30 degrees off, and the codebook's top hits (an encoder trained on
2 CPU cores) are often further than that: at the right place, the right rotation was then never
tried and a wrong place won. With depth, the fit of each rotation of a fixed, roughly uniform
grid (icosphere views x in-plane angles, ~30 degrees apart) to the segment is cheap to score all
at once: the visible model surface is put with its centroid on the segment's, projected, and
compared with the observed depth at those pixels (the projective test depth_alignment's
agreement uses, with a coarse tolerance for the grid's spacing). The best few join the codebook's
hits; ICP and the full depth check decide among them.

Written with numpy because it is one batched projection over all rotations (no per-rotation
loop or KD-tree), which no registration library exposes in this form.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import trimesh

from sixd_pose_ros.geometry.pinhole import depth_at_projections
from sixd_pose_ros.geometry.sampling import viewpoint_rotation_grid


class _QuietShortfall(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("only got")


logging.getLogger("trimesh.sample").addFilter(_QuietShortfall())


@dataclass
class SurfaceSamples:
    """Points on a model's surface with their outward normals (model frame, meters)."""

    points: np.ndarray  # (P, 3)
    normals: np.ndarray  # (P, 3)

    @classmethod
    def from_mesh(cls, mesh: trimesh.Trimesh, count: int = 240, seed: int = 0) -> "SurfaceSamples":
        # Evenly spread samples fit the grid search better than random ones (measured in the tests);
        # the even sampler rejects close points and logs when it returns fewer, which is fine here
        # (_QuietShortfall drops that one message, for every caller, without touching levels).
        points, faces = trimesh.sample.sample_surface_even(mesh, count, seed=seed)
        if len(points) < count // 2:  # very thin meshes: too few even samples
            points, faces = trimesh.sample.sample_surface(mesh, count, seed=seed)
        return cls(np.asarray(points, dtype=np.float64), np.asarray(mesh.face_normals[faces], dtype=np.float64))


def search_grid(subdivisions: int = 1, n_inplane: int = 12) -> np.ndarray:
    """(M, 3, 3) rotations for the search (default 42 views x 12 angles = 504, ~30 deg apart)."""
    return viewpoint_rotation_grid(subdivisions, n_inplane).astype(np.float64)


class RotationSearch:
    """The grid's rotated surface samples of one object, computed once when the object loads
    (they do not depend on the frame): a search then costs one projection of them."""

    def __init__(self, samples: SurfaceSamples, rotations: np.ndarray) -> None:
        self.samples = samples
        self.rotations = np.asarray(rotations, dtype=np.float64)
        self.points = np.einsum("mij,pj->mpi", self.rotations, samples.points)  # (M, P, 3) camera axes
        self.normals = np.einsum("mij,pj->mpi", self.rotations, samples.normals)

    @classmethod
    def for_mesh(cls, mesh: trimesh.Trimesh, rotations: np.ndarray) -> "RotationSearch | None":
        """None for a mesh without faces (a point cloud has no normals to tell the visible side)."""
        if len(mesh.faces) == 0:
            return None
        return cls(SurfaceSamples.from_mesh(mesh), rotations)

    def fit(self, R: np.ndarray, t: np.ndarray, depth: np.ndarray, K: np.ndarray, diameter: float,
            tol_fraction: float = 0.05) -> np.ndarray:
        """(H,) how well each pose ``R (H, 3, 3)``, ``t (H, 3)`` explains the depth, after sliding it
        along its viewing ray to the observed depth (as depth alignment's first step does): the
        fraction of its visible samples whose observed depth agrees within ``tol_fraction`` of the
        diameter. One batched projection: a cheap pre-ranking before the per-pose ICP."""
        pts = np.einsum("hij,pj->hpi", R, self.samples.points) + t[:, None, :]
        nrm = np.einsum("hij,pj->hpi", R, self.samples.normals)
        facing = np.einsum("hpi,hpi->hp", nrm, pts) < 0.0  # surface turned towards the camera
        z, inside, observed = depth_at_projections(pts, facing, depth, K)
        measured = inside & (observed > 0)
        ratio = np.ones(len(R))
        for h in range(len(R)):  # a median per pose; scaling the points keeps their pixels
            if measured[h].sum() >= 5:
                ratio[h] = np.clip(np.median(observed[h][measured[h]] / z[h][measured[h]]), 0.6, 1.6)
        agree = measured & (np.abs(observed - z * ratio[:, None]) <= tol_fraction * diameter)
        return agree.sum(1) / np.maximum(facing.sum(1), 1)

    def __call__(self, segment_points: np.ndarray, depth: np.ndarray, K: np.ndarray, diameter: float, *,
                 top: int = 3, tol_fraction: float = 0.12, min_separation_deg: float = 40.0,
                 ) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """The ``top`` grid rotations (with their translations) whose visible surface fits a segment.

        Args:
            segment_points: (N, 3) observed points of the segment (camera frame, meters).
            depth: (H, W) observed depth (meters, 0 = none). K: (3, 3).
            tol_fraction: a projected point agrees when its depth is within this fraction of the
                diameter of the observed depth (coarse: the grid is tens of degrees apart).
            min_separation_deg: the answers are at least this far apart (neighbours on the grid
                fit alike; several of them would waste the ICP that follows).
        Returns:
            [(R, t, fit)] best first; fit is the fraction of visible samples that agree.
        """
        rotations = self.rotations
        if len(segment_points) < 10 or len(rotations) == 0:
            return []
        centroid = segment_points.mean(0)
        view = centroid / np.linalg.norm(centroid)
        facing = (self.normals @ view) < 0.0  # (M, P): the side a camera on this ray sees
        count = facing.sum(1)
        visible_centroid = (self.points * facing[..., None]).sum(1) / np.maximum(count, 1)[:, None]
        t = centroid - visible_centroid  # (M, 3): the visible surface's centroid on the segment's
        z, inside, observed = depth_at_projections(self.points + t[:, None, :], facing, depth, K)
        agree = inside & (np.abs(observed - z) <= tol_fraction * diameter)
        fit = np.where(count >= 5, agree.sum(1) / np.maximum(count, 1), 0.0)
        picked: list[int] = []
        cos_sep = np.cos(np.radians(min_separation_deg))
        for i in np.argsort(-fit, kind="stable"):
            if fit[i] <= 0 or len(picked) == top:
                break
            # trace(Ri^T Rj) = 1 + 2 cos(angle): separated when below 1 + 2 cos(min_separation)
            if all(np.trace(rotations[i].T @ rotations[j]) < 1 + 2 * cos_sep for j in picked):
                picked.append(int(i))
        return [(rotations[i].copy(), t[i].copy(), float(fit[i])) for i in picked]


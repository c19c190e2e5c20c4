"""Choosing among pose hypotheses with the depth image, for any object that has a surface mesh.

Both modes end the same way when the frame has depth: a handful of places (detector peaks,
depth segments) times a handful of rotations (codebook hits or selected viewpoints, plus the
rotation grid fitted to each segment) are pre-ranked by one batched projective fit, the best
few are aligned to the depth (ray slide + a quick ICP), and the one whose aligned surface the
depth confirms best, and that accounts for the segment it sits on, wins. Known-model mode gets
the surface from the CAD mesh; model-free mode from the reference depth fused into a mesh
(objects/reconstruction.py). Written once here so the two modes rank alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from sixd_pose_ros.geometry.normalization import object_diameter
from sixd_pose_ros.pipeline.depth_alignment import DepthAlignment, align_to_depth
from sixd_pose_ros.pipeline.depth_proposals import DepthSegmentation, segment_explained, silhouette_support
from sixd_pose_ros.pipeline.rotation_search import RotationSearch
from sixd_pose_ros.pipeline.types import Frame
from sixd_pose_ros.render.renderer import RenderMesh


@dataclass
class SurfaceModel:
    """What depth ranking needs of one object's surface, prepared once when the object loads."""

    render_mesh: RenderMesh
    points: np.ndarray  # (M, 3) surface samples, meters, model frame (ICP, explained, boxes)
    tree: cKDTree  # over points
    diameter: float  # meters
    center: np.ndarray  # (3,) the object's centre in the model frame
    search: RotationSearch | None  # the coarse rotation grid's samples (None: search off or no faces)

    @classmethod
    def from_mesh(cls, mesh: trimesh.Trimesh, center: np.ndarray,
                  grid: np.ndarray | None = None) -> "SurfaceModel":
        """``grid``: the rotation search's rotations (shared by every object), None for no search."""
        points = np.asarray(mesh.sample(2000, seed=0)) if len(mesh.faces) else np.asarray(mesh.vertices)
        search = RotationSearch.for_mesh(mesh, grid) if grid is not None else None
        return cls(RenderMesh.from_trimesh(mesh), points, cKDTree(points),
                   object_diameter(np.asarray(mesh.vertices)), np.asarray(center, np.float64), search)

    def align(self, frame: Frame, R: np.ndarray, t: np.ndarray, tolerance: tuple[float, float],
              quick: bool = False) -> DepthAlignment:
        """Depth alignment of one pose; ``tolerance`` (meters, fraction of the distance) for its
        agreement. ``quick``: a quarter of the points and 5 steps of point-to-point ICP (~5x
        cheaper), enough to rank hypotheses; the winner gets the full alignment, point-to-plane.

        Why two kinds (measured, 20 frames of bench-v1 and the validation scene): point-to-plane
        for the final pose raised Prj-5 15 -> 26 % (2 -> 10 % on validation) and halved the
        translation error at the same ADD-S; point-to-plane for ranking as well lost 8 points of
        ADD-S on bench-v1 (its robust kernel leaves far hypotheses where they are)."""
        points, iters, icp = (self.points[::4], 5, "point_to_point") if quick else \
            (self.points, 15, "point_to_plane")
        return align_to_depth(self.render_mesh, points, R, t, frame.depth, frame.K, self.diameter, icp_iters=iters,
                              agreement_tol=tolerance, icp=icp)


@dataclass
class Hypothesis:
    """One pose to try: where it came from and how much the place looks like the object."""

    R: np.ndarray
    t: np.ndarray
    detection: object  # the place's Detection (its box and score are reported)
    similarity: float  # of this rotation (codebook cosine; the place's look for searched rotations)
    place_similarity: float  # the place's best: how much the crop there looks like the object


@dataclass
class Ranked:
    """One hypothesis after its quick alignment, with the rank that orders it."""

    rank: float
    hypothesis: Hypothesis
    aligned: DepthAlignment


def searched_hypotheses(model: SurfaceModel, frame: Frame, detection, segment, top: int, similarity: float,
                        place_similarity: float) -> list[Hypothesis]:
    """The rotation grid's ``top`` best fits to a place's depth segment (none without a segment,
    a grid, or with ``top`` 0), as hypotheses of that place."""
    if segment is None or model.search is None or top <= 0:
        return []
    return [Hypothesis(R, t, detection, similarity, place_similarity)
            for R, t, _ in model.search(segment.points, frame.depth, frame.K, model.diameter, top=top)]


def rank_by_depth(model: SurfaceModel, hypotheses: list[Hypothesis], frame: Frame,
                  segmentation: DepthSegmentation | None, *, align_top: int, similarity_power: float,
                  tolerance: tuple[float, float], per_place: int = 0,
                  occlusion_weight: float = 1.0, seen_through_penalty: float = 0.0) -> list[Ranked]:
    """Every hypothesis that reached alignment, best first (ties keep the input order).

    Beyond ``align_top`` hypotheses, a batched projective fit x place_similarity**power (x the
    support below) keeps the best ``align_top`` (0 = align them all), at most ``per_place`` of
    one place while other places have some (0 = no such limit). Each is then ranked by its depth
    agreement (occluded surface counted ``occlusion_weight``, see
    ``DepthAlignment.visible_agreement``) x place_similarity**power x max(0.05, explained):
    *explained* is the fraction of the segment under the object that the posed model accounts
    for (without it a small object lying on a big one wins); floored, so that without a segment
    (no table found, flat or tiny objects) agreement still orders them. When a table was found,
    also x max(0.01, support): the fraction of the object's projection that falls on segments
    (see ``silhouette_support``), floored lower than explained (a pose off every segment is all
    but ruled out, but an object too flat to stand out keeps its order). ``seen_through_penalty``
    > 0: also x max(0.05, 1 - seen through / it) (``DepthAlignment.seen_through``: a pose that
    fills space the camera sees through is physically impossible, whatever it looks like; off in
    the first choice, on in a second one, see pipeline/scene_interpretation.py). The whole list,
    not only the winner, is what scripts/hypothesis_oracle.py inspects (is the right pose among
    them at all?).
    """
    if model.search is not None and 0 < align_top < len(hypotheses):
        fit = model.search.fit(np.stack([h.R for h in hypotheses]), np.stack([h.t for h in hypotheses]),
                               frame.depth, frame.K, model.diameter)
        pre = fit * np.maximum([h.place_similarity for h in hypotheses], 0.0) ** similarity_power
        if segmentation is not None and segmentation.plane is not None:
            pre *= np.maximum(0.01, [silhouette_support(segmentation, model.tree, h.R, h.t, frame.K, frame.depth)
                                     for h in hypotheses])
        hypotheses = _best_per_place(hypotheses, np.argsort(-pre, kind="stable"), align_top, per_place)
    ranked = []
    for hyp in hypotheses:
        aligned = model.align(frame, hyp.R, hyp.t, tolerance, quick=True)
        rank = aligned.visible_agreement(occlusion_weight) * max(hyp.place_similarity, 0.0) ** similarity_power
        if seen_through_penalty > 0:
            rank *= max(0.05, 1.0 - aligned.seen_through / seen_through_penalty)
        if segmentation is not None and aligned.agreement > 0:
            rank *= max(0.05, segment_explained(segmentation, model.tree, aligned.R, aligned.t, frame.K,
                                                model.diameter))
            if segmentation.plane is not None:
                rank *= max(0.01, silhouette_support(segmentation, model.tree, aligned.R, aligned.t, frame.K,
                                                     frame.depth))
        ranked.append(Ranked(float(rank), hyp, aligned))
    return sorted(ranked, key=lambda r: -r.rank)  # stable: the first of equal ranks wins


def _best_per_place(hypotheses: list[Hypothesis], order: np.ndarray, total: int, per_place: int) -> list[Hypothesis]:
    """The first ``total`` of ``order``, at most ``per_place`` from any one place (detection) while
    other places have some left; then the rest in order. Why: one place whose crop looks much
    like the object (similarity to the power 4) otherwise fills every slot with its rotations,
    and the object's own place, which an untextured mesh's templates may like less, is never
    aligned (real YCB-V: the pudding box's nine hypotheses at its place all pre-ranked 17th or
    lower, behind the meat can's and the wood block's)."""
    if per_place <= 0:
        return [hypotheses[i] for i in order[:total]]
    taken: dict[int, int] = {}
    first, rest = [], []
    for i in order:
        place = id(hypotheses[i].detection)
        if taken.get(place, 0) < per_place:
            taken[place] = taken.get(place, 0) + 1
            first.append(hypotheses[i])
        else:
            rest.append(hypotheses[i])
    return (first + rest)[:total]


def choose_by_depth(model: SurfaceModel, hypotheses: list[Hypothesis], frame: Frame,
                    segmentation: DepthSegmentation | None, *, align_top: int, similarity_power: float,
                    tolerance: tuple[float, float]) -> tuple[Hypothesis, DepthAlignment]:
    """The hypothesis the depth supports best (see :func:`rank_by_depth`), with its quick
    alignment; the caller aligns the winner fully, after any refinement."""
    best = rank_by_depth(model, hypotheses, frame, segmentation, align_top=align_top,
                         similarity_power=similarity_power, tolerance=tolerance)[0]
    return best.hypothesis, best.aligned

"""One estimator for every mode: the outline each mode shares, and the one part that differs.

Why: known-model and model-free estimation run the same frame: per object, either a tracking
step from the previous pose (pipeline/tracking.py) or detection; detection asks the object's
*proposer* for hypotheses (places in the image and rotations at each), then the depth ranks
them against the object's surface, a render-and-compare check separates the leaders, the
volume refiner and depth alignment finish the winner, and the score says whether the object is
there at all; last, of two objects put in one place only the better stays
(pipeline/exclusion.py), and with depth the other chooses again
(pipeline/scene_interpretation.py). Only where hypotheses come from differs between the modes
(templates or the codebook of a CAD mesh; templates or the viewpoint selector of reference
photos), so a mode is a :class:`Proposer` (pipeline/known_model_proposer.py,
pipeline/model_free_proposer.py, and for the CPU-trained model-free networks
pipeline/model_free_selector.py) and a third mode is one more proposer class, with a thin
estimator subclass that loads its databases and networks (pipeline/known_model.py,
pipeline/model_free.py).

The work every object of a frame shares (the detector's feature pyramid, the image's
pretrained features, the depth segmentation) is done once, on first need (:class:`FrameStages`).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from sixd_pose_ros.engines.backends import InferenceBackend, make_backend
from sixd_pose_ros.engines.export import refiner_spec
from sixd_pose_ros.pipeline.depth_proposals import DepthSegmentation, segment_depth
from sixd_pose_ros.pipeline.depth_ranking import Hypothesis, SurfaceModel, rank_by_depth
from sixd_pose_ros.pipeline.detection import detection_box, images_to_tensor
from sixd_pose_ros.pipeline.exclusion import ObjectShape, exclude_overlaps
from sixd_pose_ros.pipeline.half_turns import aligned_half_turns
from sixd_pose_ros.pipeline.object_info import ObjectInfo, object_info
from sixd_pose_ros.pipeline.rotation_search import search_grid
from sixd_pose_ros.pipeline.scene_interpretation import depth_explained_away, interpret_scene
from sixd_pose_ros.pipeline.settings import EstimatorSettings
from sixd_pose_ros.pipeline.tracking import ObjectTrack, Tracker, TrackerConfig
from sixd_pose_ros.pipeline.types import Estimator, Frame, ObjectPose, projected_box
from sixd_pose_ros.pipeline.volume_refinement import BackendRefiner, refine_metric, refine_normalized

__all__ = ["LoadedObject", "Proposal", "Proposer", "FrameStages", "PoseEstimator", "estimator_class"]


@dataclass
class LoadedObject:
    """One object as the shared stages use it; ``parts`` is what its proposer prepared for it."""

    db: Any  # ObjectDatabase or ModelFreeDatabase: name, references, normalization
    surface: SurfaceModel | None  # depth ranking, alignment and tracking (None: no depth choice)
    refiner_feats: torch.Tensor | None  # the volume refiner's reference features (None: refiner off)
    parts: Any = None  # the proposer's per-object state
    shape: ObjectShape | None = None  # surface samples and box: two objects cannot share a place
    verifier: Any = None  # FeatureRefiner: render-and-compare of the depth's leaders, and the score
    feature_refiner: Any = None  # FeatureRefiner: render-and-match PnP without depth
    mesh: Any = None  # the CAD mesh, when the mode has one (the outputs' box and marker)
    half_turns: bool = False  # try the leaders' half turns (a shape, and colour that tells faces apart)


@dataclass
class Proposal:
    """One object's hypotheses in one frame, best first, and how the depth should weigh them."""

    hypotheses: list[Hypothesis]
    similarity_power: float = 0.0  # see rank_by_depth
    per_place: int = 0  # see rank_by_depth
    # Rank a single hypothesis too (its quick alignment then starts the refiner); known-model
    # mode aligns a lone hypothesis directly.
    rank_alone: bool = True
    # The reported score is the render contrast (objects with a verifier): gate it with
    # min_detection_score (the proposer's places did not decide that the object is there).
    gate_on_contrast: bool = False
    occlusion_weight: float = 1.0  # see rank_by_depth
    seen_through_penalty: float = 0.0  # see rank_by_depth


class Proposer(Protocol):
    """A mode: what it loads per object and the hypotheses it proposes per frame. A proposer
    that subclasses it explicitly writes ``load`` and ``propose`` and inherits the defaults of
    the rest."""

    def prepare(self, estimator: "PoseEstimator") -> None:
        """Load the mode's networks onto the estimator's backend (once, before the objects)."""

    def load(self, estimator: "PoseEstimator", db: Any, grid: Any) -> LoadedObject:
        """The object ready to estimate; ``grid`` is the rotation search's grid (or None)."""
        raise NotImplementedError

    def propose(self, estimator: "PoseEstimator", frame: Frame, stages: "FrameStages", obj: LoadedObject,
                timings: dict) -> Proposal | ObjectPose | None:
        """The object's hypotheses; an ObjectPose when the proposer settled the pose itself; None
        when the object is not in view."""
        raise NotImplementedError

    def uses_segmentation(self, objects: Sequence[LoadedObject]) -> bool:
        """Whether the depth segments can help any of these objects (the frame then segments once)."""
        return True

    def settle(self, estimator: "PoseEstimator", frame: Frame, obj: LoadedObject, detection: Any,
               R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """The final pose when the depth cannot align it (no depth, or no surface), and whether
        it is metric (by default: as proposed, metric)."""
        return R, t, True

    def overlap_limit(self, config: EstimatorSettings) -> float:
        """exclude_overlaps' ``max_inside`` (0: off) for objects with a shape."""
        return 0.0


class FrameStages:
    """The per-frame work shared by all objects, each done once, on first need and timed."""

    def __init__(self, estimator: "PoseEstimator", frame: Frame, timings: dict) -> None:
        self._estimator, self._frame, self._timings = estimator, frame, timings
        self._done: dict[str, Any] = {}
        # With depth and second choices on (PoseEstimator._interprets): the score gate waits for
        # the scene interpretation, which needs each object's proposal to choose again from.
        self.interprets = estimator._interprets(frame)
        self.proposals: dict[str, tuple[LoadedObject, Proposal]] = {}

    def once(self, name: str, compute: Callable[[], Any], timing: str = "backbone") -> Any:
        """``compute()``'s result, computed at the first call of this frame (timed as ``timing``)."""
        if name not in self._done:
            t0 = time.perf_counter()
            self._done[name] = compute()
            self._timings[timing] = 1000 * (time.perf_counter() - t0)
        return self._done[name]

    def segmentation(self) -> DepthSegmentation | None:
        """The depth image's segments (None without depth, with depth proposals off, or when the
        proposer says no object can use them)."""
        est, frame = self._estimator, self._frame
        cfg = est.config
        if not (cfg.use_depth and frame.depth is not None and cfg.depth_proposals > 0
                and est.proposer.uses_segmentation(est.objects)):
            return None
        return self.once("segmentation", lambda: segment_depth(frame.depth, frame.K), "segment")


class PoseEstimator(Estimator):
    """Estimator (see pipeline.types) of any mode: the shared outline around one proposer."""

    def __init__(self, proposer: Proposer, databases: Sequence[Any], refiner, config: EstimatorSettings,
                 backend: InferenceBackend | str | None = None) -> None:
        """``backend``: an InferenceBackend (shared, e.g. by a benchmark), a backend name, or None
        for ``config.backend``. ``refiner``: the volume refiner (torch module) or None."""
        self.config = config
        if not isinstance(backend, InferenceBackend):
            backend = make_backend(backend or config.backend, precision=config.precision)
        self.backend = backend
        self.proposer = proposer
        self.refiner = refiner.to(backend.device).eval() if refiner is not None else None
        self._refiner = (BackendRefiner(self.refiner, backend.runner(refiner_spec(self.refiner)))
                         if self.refiner is not None else None)
        self.tracker = Tracker(config.tracking)
        self.objects: list[LoadedObject] = []
        proposer.prepare(self)
        with torch.no_grad():
            grid = search_grid(*config.rotation_search_grid) \
                if config.use_depth and config.rotation_search > 0 else None  # one grid, every object
            self.objects = [proposer.load(self, db, grid) for db in databases]

    def encode_references(self, db) -> torch.Tensor | None:
        """The volume refiner's features of every reference (None with the refiner off)."""
        if self.refiner is None:
            return None
        return self.refiner.encode_references(images_to_tensor(db.references.images, self.backend.device))

    def object_infos(self) -> list[ObjectInfo]:
        """Name, mesh and box of each object, for the node's outputs."""
        return [object_info(o.db, o.mesh if o.mesh is not None else o.surface.render_mesh if o.surface else None)
                for o in self.objects]

    def configure_tracking(self, config: TrackerConfig) -> None:
        """Replace the tracking settings; every track ends (the next frame detects)."""
        self.config = dataclasses.replace(self.config, tracking=config)  # the default config is shared
        self.tracker = Tracker(config)

    def reset_tracking(self, name: str | None = None) -> None:
        """End the track of one object (or of all): its next frame runs full detection."""
        self.tracker.reset(name)

    @torch.no_grad()
    def estimate(self, frame: Frame) -> list[ObjectPose]:
        timings: dict[str, float] = {}
        tracker = self.tracker
        epoch = tracker.epoch
        with_depth = self.config.use_depth and frame.depth is not None
        stages = FrameStages(self, frame, timings)
        results = []
        for obj in self.objects:
            # Without depth, or without a surface, there is no health: a track cannot go on.
            pose = tracker.step(obj.db.name, frame.stamp_ns, epoch, with_depth and obj.surface is not None,
                                lambda track: self._track_one(frame, obj, track, timings),
                                lambda: self._estimate_one(frame, stages, obj, timings))
            if pose is not None:
                results.append(pose)
        shapes = {o.db.name: o.shape for o in self.objects if o.shape is not None}
        if stages.interprets:
            cfg = self.config

            def gated(pose: ObjectPose) -> bool:
                return pose.name in stages.proposals and self._below_gate(stages.proposals[pose.name][1], pose.score)

            kept = interpret_scene(results, shapes, self.proposer.overlap_limit(cfg),
                                   seen_through_limit=cfg.seen_through_limit, tries=cfg.place_retries, gated=gated,
                                   choose_again=lambda pose, placed: self._choose_again(frame, stages, pose, placed,
                                                                                        timings),
                                   own_support=lambda pose, others: self._own_support(frame, pose, others),
                                   min_own_support=cfg.min_own_support)
            # The tracks follow the outcome: a detection kept (a second choice, maybe) starts
            # one, and one that ended without a pose must not go on as a track.
            for pose in kept:
                if not pose.tracked:
                    tracker.update(pose.name, pose, pose.health, frame.stamp_ns, epoch=epoch)
            for name in {p.name for p in results if not p.tracked} - {p.name for p in kept}:
                tracker.withdraw(name, epoch=epoch)
            return kept
        if not shapes:
            return results
        kept = exclude_overlaps(results, shapes, self.proposer.overlap_limit(self.config))
        survivors = {id(p) for p in kept}
        for pose in results:  # a detection the exclusion dropped must not go on as a track
            if id(pose) not in survivors and not pose.tracked:
                tracker.withdraw(pose.name, epoch=epoch)
        return kept

    def _below_gate(self, proposal: Proposal, score: float) -> bool:
        """Whether a pose of this proposal with this score is reported absent (min_detection_score
        gates the render contrast when the proposer's places did not decide presence)."""
        return proposal.gate_on_contrast and score < self.config.min_detection_score

    def _interprets(self, frame: Frame) -> bool:
        """Whether this frame's poses go through the scene interpretation (depth, the exclusion
        and second choices on) rather than the exclusion alone."""
        cfg = self.config
        # A known-model setting (KnownModelConfig.place_retries): model-free mode has not been
        # measured with second choices, so its config has none and keeps the exclusion alone.
        return (cfg.use_depth and frame.depth is not None and getattr(cfg, "place_retries", 0) > 0
                and self.proposer.overlap_limit(cfg) > 0)

    def _own_support(self, frame: Frame, pose: ObjectPose, others: list[ObjectPose]) -> float:
        """The depth agreement of ``pose`` once the ``others``' points are taken from the depth
        (0 when too little of its surface is left measured): what it explains on its own."""
        surface = next((o.surface for o in self.objects if o.db.name == pose.name), None)
        if surface is None:
            return 1.0
        return float(surface.align(self._without(frame, others), pose.R, pose.t,
                                   self.config.tracking.depth_tolerance, quick=True).agreement)

    def _without(self, frame: Frame, kept: list[ObjectPose]) -> Frame:
        """``frame`` with the depth the ``kept`` poses explain taken away (depth_explained_away)."""
        surfaces = {o.db.name: o.surface for o in self.objects if o.surface is not None}
        posed = [(surfaces[k.name].render_mesh, k.R, k.t) for k in kept if k.name in surfaces and k.metric]
        return dataclasses.replace(frame, depth=depth_explained_away(frame.depth, frame.K, posed,
                                                                     self.config.tracking.depth_tolerance))

    def _choose_again(self, frame: Frame, stages: FrameStages, pose: ObjectPose, kept: list[ObjectPose],
                      timings: dict) -> ObjectPose | None:
        """The object's next choice among its hypotheses, against the depth without what the
        ``kept`` poses explain, with similarity weighed less and seen-through space penalized
        (see pipeline/scene_interpretation.py); None when it has no proposal to choose from."""
        if pose.name not in stages.proposals:
            return None
        cfg = self.config
        obj, proposal = stages.proposals[pose.name]
        again = self._choose(self._without(frame, kept), stages, obj, dataclasses.replace(
            proposal, similarity_power=cfg.retry_similarity_power,
            seen_through_penalty=cfg.retry_seen_through_penalty), timings)
        if again is None:
            return None
        # Its health and seen-through against the whole depth, which the next steps compare
        # (the score stays the one at the pose before this alignment, which moves it little).
        aligned = obj.surface.align(frame, again.R, again.t, cfg.tracking.depth_tolerance)
        return dataclasses.replace(again, R=aligned.R, t=aligned.t, health=float(aligned.agreement),
                                   seen_through=aligned.seen_through)

    def _track_one(self, frame: Frame, obj: LoadedObject, track: ObjectTrack, timings: dict) -> ObjectPose:
        """One tracking step from the track's pose: refiner (if on), then depth alignment."""
        name = obj.db.name
        t0 = time.perf_counter()
        R, t = self.refine(frame, obj, track.R.copy(), track.t.copy())
        aligned = obj.surface.align(frame, R, t, self.config.tracking.depth_tolerance)
        R, t = aligned.R, aligned.t
        health = float(aligned.agreement)
        timings[f"{name}/track"] = 1000 * (time.perf_counter() - t0)
        return ObjectPose(name, R, t, health, projected_box(obj.surface.points, R, t, frame.K),
                          metric=True, stage_ms=dict(timings), tracked=True, health=health)

    @property
    def refines(self) -> bool:
        """Whether the volume refiner runs (loaded, and iterations asked for)."""
        return self._refiner is not None and self.config.refine_iterations > 0

    def refine(self, frame: Frame, obj: LoadedObject, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Volume-refiner iterations on a metric pose (unchanged when the refiner is off)."""
        if not self.refines:
            return R, t
        db = obj.db
        return refine_metric(self._refiner, db.references, obj.refiner_feats, db.normalization, frame, R, t,
                             self.config.refine_iterations)

    def refine_normalized(self, frame: Frame, obj: LoadedObject, R_n: np.ndarray,
                          t_n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Volume-refiner iterations on a pose in the references' normalized frame (unchanged
        when the refiner is off)."""
        if not self.refines:
            return R_n, t_n
        return refine_normalized(self._refiner, obj.db.references, obj.refiner_feats, frame, R_n, t_n,
                                 self.config.refine_iterations)

    def _estimate_one(self, frame: Frame, stages: FrameStages, obj: LoadedObject, timings: dict) -> ObjectPose | None:
        """Detection of one object: its proposer's hypotheses, then :meth:`_choose`."""
        proposal = self.proposer.propose(self, frame, stages, obj, timings)
        if proposal is None or isinstance(proposal, ObjectPose):
            return proposal
        if stages.interprets:
            stages.proposals[obj.db.name] = (obj, proposal)
        return self._choose(frame, stages, obj, proposal, timings)

    def _choose(self, frame: Frame, stages: FrameStages, obj: LoadedObject, proposal: Proposal,
                timings: dict) -> ObjectPose | None:
        """Rank by depth -> verify -> refine -> align (or settle without depth) -> score."""
        cfg, K, name = self.config, frame.K, obj.db.name
        hypotheses = proposal.hypotheses
        if not hypotheses:
            return None
        by_depth = cfg.use_depth and frame.depth is not None and obj.surface is not None
        chosen = hypotheses[0]
        R, t = chosen.R, chosen.t
        if by_depth and (len(hypotheses) > 1 or proposal.rank_alone):
            # Depth chooses among the raw hypotheses (cheap), so the refiner runs on one pose only.
            t3 = time.perf_counter()
            def rank(candidates: list[Hypothesis], align_top: int) -> list:
                return rank_by_depth(obj.surface, candidates, frame, stages.segmentation(), align_top=align_top,
                                     similarity_power=proposal.similarity_power, per_place=proposal.per_place,
                                     tolerance=cfg.tracking.depth_tolerance, occlusion_weight=proposal.occlusion_weight,
                                     seen_through_penalty=proposal.seen_through_penalty)

            ranked = rank(hypotheses, cfg.align_top)
            if obj.half_turns and obj.shape is not None and cfg.flip_leaders > 0:
                flips = aligned_half_turns(obj.surface, obj.shape, ranked[:cfg.flip_leaders], frame,
                                           cfg.tracking.depth_tolerance)
                ranked = sorted(ranked + rank(flips, 0), key=lambda r: -r.rank)
            best = ranked[0]
            if obj.verifier is not None and cfg.verify_top > 1 and len(ranked) > 1:
                # The depth's ranks of the leaders are often within a few percent of each other
                # on real clutter; a render of each, compared with the image, separates them.
                t4 = time.perf_counter()
                verified = [(r.rank * max(obj.verifier.agreement(frame.rgb, K, r.aligned.R, r.aligned.t), 0.0)
                             ** cfg.verify_power, i) for i, r in enumerate(ranked[:cfg.verify_top])]
                best = ranked[max(verified)[1]]
                timings[f"{name}/verify"] = 1000 * (time.perf_counter() - t4)
            chosen = best.hypothesis
            R, t = best.aligned.R, best.aligned.t  # the full alignment below starts from the winner
            timings[f"{name}/depth"] = 1000 * (time.perf_counter() - t3) - timings.get(f"{name}/verify", 0.0)
        if self.refines:
            t2 = time.perf_counter()
            R, t = self.refine(frame, obj, R, t)
            timings[f"{name}/refine"] = 1000 * (time.perf_counter() - t2)
        if frame.depth is None or not cfg.use_depth:
            if obj.feature_refiner is not None and cfg.feature_refine_iterations > 0:
                t2 = time.perf_counter()
                refined = obj.feature_refiner.refine(frame.rgb, K, R, t, cfg.feature_refine_iterations)
                R, t = refined.R, refined.t
                timings[f"{name}/feature_refine"] = 1000 * (time.perf_counter() - t2)
        det, health, metric, seen_through = chosen.detection, None, True, None
        if by_depth:
            t3 = time.perf_counter()
            aligned = obj.surface.align(frame, R, t, cfg.tracking.depth_tolerance)
            R, t, health, seen_through = aligned.R, aligned.t, float(aligned.agreement), aligned.seen_through
            timings[f"{name}/depth"] = timings.get(f"{name}/depth", 0.0) + 1000 * (time.perf_counter() - t3)
        else:
            R, t, metric = self.proposer.settle(self, frame, obj, det, R, t)
        score = float(det.score) * float(max(chosen.similarity, 0.0))
        if obj.verifier is not None:
            # Whether a render at the final pose matches the image there and not beside: what
            # separates right poses from absent objects and wrong ones best of all we measured
            # (see KnownModelConfig.contrast_gain).
            t4 = time.perf_counter()
            contrast = obj.verifier.contrast(frame.rgb, K, R, t)
            score = float(1.0 - np.exp(-cfg.contrast_gain * max(0.0, contrast)))
            timings[f"{name}/verify"] = timings.get(f"{name}/verify", 0.0) + 1000 * (time.perf_counter() - t4)
            if self._below_gate(proposal, score) and not stages.interprets:
                return None  # with the interpretation the gate comes after it (a second choice may pass)
        return ObjectPose(name, R, t, score, detection_box(det), metric=metric, stage_ms=dict(timings),
                          health=health, seen_through=seen_through)


def estimator_class(mode: str) -> type[PoseEstimator]:
    """The estimator class of a mode (``known_model`` or ``model_free``), each with ``from_paths``;
    imported on call: each pulls in its mode's networks."""
    if mode == "model_free":
        from sixd_pose_ros.pipeline.model_free import ModelFreeEstimator

        return ModelFreeEstimator
    if mode == "known_model":
        from sixd_pose_ros.pipeline.known_model import KnownModelEstimator

        return KnownModelEstimator
    raise ValueError(f"{mode!r} is not a mode; use known_model or model_free")

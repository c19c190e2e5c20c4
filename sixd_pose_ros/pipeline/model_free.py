"""Model-free estimator: detector -> viewpoint selector -> volume refiner -> depth (Gen6D's pipeline).

Objects are given as posed reference photos (a model-free object database, see
objects/model_free_database.py), not meshes. Per object, at load time: the detector kernels of
its detector subset (32 references by default), the selector features of its selector subset (64),
and the refiner features of every reference. Per frame: one backbone pass shared by all objects,
then per object the detector head, one crop, the selector, and optionally the refiner.

Scale: a database built from photos without depth has an arbitrary unit. Depth in the query then
fixes the translation in metres (the object is slid along its viewing ray to the observed depth);
without depth the pose comes out with ``metric=False`` and a warning says that translation is up
to scale.

Surface: a database built from metric RGB-D photos holds the surface fused from their depth
(objects/reconstruction.py). With depth in the query, the selector then proposes its
``selector_top`` best viewpoints at every place, a coarse rotation grid fitted to each depth
segment adds more, and the depth chooses among them exactly as in known-model mode
(pipeline/depth_ranking.py: projective pre-ranking, quick ICP, agreement x explained), ending
with ICP; the pose then carries a depth ``health``. Without a surface, the selector's single
viewpoint is used and the centre is slid to the depth. Objects with a surface are tracked
(``ModelFreeConfig.tracking``, the node's ``tracking.*``) as in known-model mode; the others run
detection every frame.

Templates (``ModelFreeConfig.templates``, the default): places and rotations come instead from
the reference photos encoded by the frozen pretrained backbone, through the known-model template
stage (pipeline/model_free_templates.py); the depth then chooses among them as above (with the
template similarity weighing in, as in known-model mode), and without depth PnP on the patch
matches gives the pose. The trained detector's score gate (``min_detection_score``) does not
apply there: the reported score is the correlation of the templates at the chosen place.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from sixd_pose_ros.engines.backends import InferenceBackend, make_backend
from sixd_pose_ros.engines.export import (
    detector_features_spec,
    detector_head_spec,
    patch_backbone_spec,
    refiner_spec,
    selector_spec,
)
from sixd_pose_ros.features.efficientnet import load_patch_backbone
from sixd_pose_ros.geometry.crop_camera import DegenerateReferenceError, object_centred_camera
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_detector, load_refiner, load_selector
from sixd_pose_ros.models.detector import initial_translation
from sixd_pose_ros.models.selector import SelectorOutput, decode_selection, initial_rotation, ranked_selections
from sixd_pose_ros.objects.model_free_database import ModelFreeDatabase, load_model_free_database
from sixd_pose_ros.objects.templates import TEMPLATE_DEFAULTS
from sixd_pose_ros.pipeline.depth_proposals import segment_depth, segment_proposals
from sixd_pose_ros.pipeline.depth_ranking import Hypothesis, SurfaceModel, choose_by_depth
from sixd_pose_ros.pipeline.detection import detect_peaks, detection_box, detector_outputs, heat_near, image_pyramid
from sixd_pose_ros.pipeline.detection import images_to_tensor as _images
from sixd_pose_ros.pipeline.feature_detection import image_backbone_spec, image_scales
from sixd_pose_ros.pipeline.model_free_templates import STAGE_SETTINGS, ReferenceTemplateStage, encode_for_stages
from sixd_pose_ros.pipeline.rotation_search import search_grid
from sixd_pose_ros.pipeline.settings import ModelFreeConfig  # noqa: F401 - re-exported
from sixd_pose_ros.pipeline.tracking import Tracker, TrackerConfig
from sixd_pose_ros.pipeline.types import Frame, ObjectPose, projected_box
from sixd_pose_ros.pipeline.volume_refinement import BackendRefiner, refine_metric, refine_normalized

log = logging.getLogger(__name__)


@dataclass
class _Object:
    db: ModelFreeDatabase
    det_head: object  # None with templates (not run)
    selector: object  # Runner: query crop -> (scores, angle), the object's references baked in; None with templates
    selector_R: np.ndarray  # (N, 3, 3) normalized-frame rotations of the selector subset
    refiner_feats: torch.Tensor | None
    surface: SurfaceModel | None = None  # the fused reference depth (metric databases that have it)
    templates: ReferenceTemplateStage | None = None  # ModelFreeConfig.templates: places and rotations


class ModelFreeEstimator:
    """Estimator (see pipeline.types) for objects given as posed reference photos."""

    def __init__(self, databases: Sequence[ModelFreeDatabase], detector, selector, refiner=None,
                 config: ModelFreeConfig = ModelFreeConfig(),
                 backend: InferenceBackend | str | None = None) -> None:
        self.config = config
        if not isinstance(backend, InferenceBackend):
            backend = make_backend(backend or config.backend, precision=config.precision)
        self.backend = backend
        device = backend.device
        self.detector = detector.to(device).eval()
        self.selector = selector.to(device).eval()
        self.refiner = refiner.to(device).eval() if refiner is not None else None
        scales = tuple(config.detection_scales)
        # Only the graphs this config runs: with templates the trained detector and selector are not
        # run (each graph is an ONNX export at load, and on a GPU a TensorRT build).
        self._features = None if config.templates else \
            backend.runner(detector_features_spec(detector, config.image_size, scales))
        self._refiner = (BackendRefiner(self.refiner, backend.runner(refiner_spec(self.refiner)))
                         if self.refiner is not None else None)
        self._warned_scale: set[str] = set()
        self.tracker = Tracker(config.tracking)
        self.objects: list[_Object] = []
        grid = search_grid(*config.rotation_search_grid) \
            if config.use_depth and config.rotation_search > 0 else None  # one grid, every object
        self.patch_backbone = self._patch_runner = self._image_runner = None
        if config.templates:
            self.patch_backbone = load_patch_backbone()
            self._patch_runner = backend.runner(patch_backbone_spec(self.patch_backbone, TEMPLATE_DEFAULTS[2]))
            self._image_runner = backend.runner(image_backbone_spec(
                self.patch_backbone, config.image_size, image_scales(*STAGE_SETTINGS.feature_scales)))
        with torch.no_grad():
            for db in databases:
                sel = db.selector_references()
                head = runner = None
                if not config.templates:
                    det_refs = detector.encode_references(_images(db.detector_references().images, device))
                    head = backend.runner(detector_head_spec(detector, det_refs.kernels, db.name, config.image_size,
                                                             scales))
                    sel_refs = self.selector.prepare_references(
                        _images(sel.images, device), torch.as_tensor(sel.view_directions(), dtype=torch.float32,
                                                                     device=device))
                    runner = backend.runner(selector_spec(self.selector, sel_refs, db.name, config.crop_size))
                feats = self.refiner.encode_references(_images(db.references.images, device)) \
                    if self.refiner is not None else None
                mesh = db.surface_mesh() if config.use_depth and db.metric else None
                surface = SurfaceModel.from_mesh(mesh, db.normalization.center, grid) if mesh is not None else None
                stage = ReferenceTemplateStage(db, self.patch_backbone, self._patch_runner) \
                    if config.templates else None
                self.objects.append(_Object(db, head, runner, np.asarray(sel.R, np.float64), feats, surface, stage))

    @classmethod
    def from_paths(cls, object_dirs: Sequence[str | Path], weights: str | Path = WEIGHTS_DIR,
                   config: ModelFreeConfig = ModelFreeConfig(), use_refiner: bool = True,
                   backend: InferenceBackend | str | None = None) -> "ModelFreeEstimator":
        weights = Path(weights)
        dbs = [load_model_free_database(p) for p in object_dirs]
        refiner = load_refiner(weights / "refiner.pt") if use_refiner else None
        return cls(dbs, load_detector(weights / "detector.pt"), load_selector(weights / "selector.pt"),
                   refiner, config, backend)

    def configure_tracking(self, config: TrackerConfig) -> None:
        """Replace the tracking settings; every track ends (the next frame detects)."""
        self.config = replace(self.config, tracking=config)
        self.tracker = Tracker(config)

    def reset_tracking(self, name: str | None = None) -> None:
        """End the track of one object (or of all): its next frame runs full detection."""
        self.tracker.reset(name)

    @torch.no_grad()
    def estimate(self, frame: Frame) -> list[ObjectPose]:
        timings: dict[str, float] = {}
        cfg, tracker = self.config, self.tracker
        epoch = tracker.epoch
        with_depth = cfg.use_depth and frame.depth is not None
        shared: dict = {}  # the backbone pyramid and the depth segmentation, computed on first need

        def detect(obj: _Object) -> ObjectPose | None:
            if "segmentation" not in shared:  # the depth segments, shared by every object
                shared["segmentation"] = None
                if with_depth and cfg.depth_proposals > 0 and any(o.db.metric for o in self.objects):
                    t0 = time.perf_counter()
                    shared["segmentation"] = segment_depth(frame.depth, K=frame.K)
                    timings["segment"] = 1000 * (time.perf_counter() - t0)
            if obj.templates is not None:
                return self._estimate_by_templates(frame, obj, timings, shared)
            if "pyramid" not in shared:
                t0 = time.perf_counter()
                shared["pyramid"] = image_pyramid(self._features, frame.rgb, cfg.detection_scales,
                                                  self.backend.device)
                timings["backbone"] = 1000 * (time.perf_counter() - t0)
            return self._estimate_one(frame, shared["pyramid"], obj, timings, shared["segmentation"])

        poses = []
        for obj in self.objects:
            # Only an object with a fused surface has a depth health to track by.
            pose = tracker.step(obj.db.name, frame.stamp_ns, epoch, with_depth and obj.surface is not None,
                                lambda track: self._track_one(frame, obj, track, timings), lambda: detect(obj))
            if pose is not None:
                poses.append(pose)
        return poses

    def _track_one(self, frame: Frame, obj: _Object, track, timings: dict) -> ObjectPose:
        """One tracking step from the track's pose: refiner (if on), then depth alignment."""
        name = obj.db.name
        t0 = time.perf_counter()
        R, t = self._refine_metric(frame, obj, track.R.copy(), track.t.copy())
        aligned = obj.surface.align(frame, R, t, self.config.tracking.depth_tolerance)
        timings[f"{name}/track"] = 1000 * (time.perf_counter() - t0)
        health = float(aligned.agreement)
        return ObjectPose(name, aligned.R, aligned.t, health,
                          projected_box(obj.surface.points, aligned.R, aligned.t, frame.K), metric=True,
                          stage_ms=dict(timings), tracked=True, health=health)

    def _refine_metric(self, frame: Frame, obj: _Object, R: np.ndarray, t: np.ndarray):
        """Volume-refiner iterations on a metric pose (unchanged when the refiner is off)."""
        cfg, norm = self.config, obj.db.normalization
        if self._refiner is None or cfg.refine_iterations <= 0:
            return R, t
        return refine_metric(self._refiner, obj.db.references, obj.refiner_feats, norm, frame, R, t,
                             cfg.refine_iterations)

    def _estimate_one(self, frame: Frame, pyramid, obj: _Object, timings: dict,
                      segmentation=None) -> ObjectPose | None:
        cfg, K, name = self.config, frame.K, obj.db.name
        norm = obj.db.normalization
        t0 = time.perf_counter()
        outputs = detector_outputs(pyramid, obj.det_head, self.detector.cfg.stride)
        peaks = detect_peaks(outputs, self.detector.cfg.ref_size)
        det = peaks[0] if peaks else None
        timings[f"{name}/detect"] = 1000 * (time.perf_counter() - t0)
        if det is None or det.score < cfg.min_detection_score:
            return None  # the detector decides whether the object is in view; depth only adds places
        # Places: the detector's peak, plus depth segments that fit the object's (metric) size.
        places = [(det, initial_translation(det.center_xy, det.box_size, K), None)]  # centre in normalized units
        if segmentation is not None and obj.db.metric:
            diameter = 2.0 * norm.scale
            props = segment_proposals(segmentation, diameter, norm.scale, K)
            # The segments whose visible size is nearest to what the object shows (~0.7 diameter) first.
            props.sort(key=lambda p: abs(np.log(p.segment.extent / (0.7 * diameter))))
            for prop in props[:cfg.depth_proposals]:
                # The reported score of a segment place: the detector's belief there.
                prop.detection.score = heat_near(outputs, prop.detection.center_xy, prop.detection.box_size / 4)
                places.append((prop.detection, prop.centre / norm.scale, prop.segment))
        if obj.surface is not None and cfg.use_depth and frame.depth is not None:
            return self._estimate_on_surface(frame, obj, places, timings, segmentation)
        t1 = time.perf_counter()
        best = None
        for place_det, t_place, _, vc, scores, angle in self._select_at(frame, obj, places):
            # The selector's raw score: comparable across places. (Adding log(heat) of the detector
            # there changed nothing on a validation scene of training objects: ADD-S 10.4 % both.)
            match = float(torch.as_tensor(scores).max())
            if best is None or match > best[0]:
                best = (match, place_det, t_place, vc, scores, angle)
        if best is None:
            return None
        _, det, t_n, vc, scores, angle = best
        sel = decode_selection(SelectorOutput(scores=scores, angle=angle))[0]
        R_n = vc.R_v.T @ initial_rotation(obj.selector_R[sel.index], sel.inplane)
        timings[f"{name}/select"] = 1000 * (time.perf_counter() - t1)
        if self._refiner is not None and cfg.refine_iterations > 0:
            t2 = time.perf_counter()
            R_n, t_n = refine_normalized(self._refiner, obj.db.references, obj.refiner_feats, frame, R_n, t_n,
                                         cfg.refine_iterations)
            timings[f"{name}/refine"] = 1000 * (time.perf_counter() - t2)
        center = norm.scale * np.asarray(t_n, np.float64)  # object centre in the camera, database units
        metric, units_to_m = obj.db.metric, 1.0
        if cfg.use_depth and frame.depth is not None:
            t3 = time.perf_counter()
            slid = self._slide_to_depth(frame, det, center, norm.scale, metric)
            if slid is not None:
                center, units_to_m = slid
                metric = True
            timings[f"{name}/depth"] = 1000 * (time.perf_counter() - t3)
        # Object-frame origin from its centre; an arbitrary-unit frame is scaled to metres with depth.
        t = center - R_n @ (np.asarray(norm.center, np.float64) * units_to_m)
        R = R_n
        self._warn_scale(name, metric)
        return ObjectPose(name, R, t, float(det.score), detection_box(det), metric=metric, stage_ms=dict(timings))

    def _warn_scale(self, name: str, metric: bool) -> None:
        """Once per object: a pose without metric scale says so."""
        if not metric and name not in self._warned_scale:
            self._warned_scale.add(name)
            log.warning("%s: the references have no metric scale and the frame has no usable depth: "
                        "translation is up to scale (ObjectPose.metric=False); give depth, or rebuild "
                        "the object with depth images or poses in metres", name)

    def _select_at(self, frame: Frame, obj: _Object, places: list):
        """Per place ``(detection, centre, segment)`` whose crop camera is defined: the place,
        its crop camera and the selector's ``(scores, angle)`` on the crop there."""
        size = self.config.crop_size
        for det, t_place, segment in places:
            try:
                vc = object_centred_camera(frame.K, t_place, 1.0, size)
            except DegenerateReferenceError:
                continue
            crop = cv2.warpPerspective(frame.rgb, vc.H, (size, size), flags=cv2.INTER_LINEAR)
            scores, angle = obj.selector(_images(crop[None], self.backend.device))
            yield det, t_place, segment, vc, scores, angle

    def _estimate_on_surface(self, frame: Frame, obj: _Object, places: list, timings: dict,
                             segmentation) -> ObjectPose | None:
        """Hypotheses from the selector's best viewpoints and the rotation grid at every place,
        chosen and aligned with the depth against the fused surface (metric database)."""
        cfg, name, norm = self.config, obj.db.name, obj.db.normalization
        t1 = time.perf_counter()
        hypotheses: list[Hypothesis] = []
        for det, t_place, segment, vc, scores, angle in self._select_at(frame, obj, places):
            center = norm.scale * np.asarray(t_place, np.float64)  # metres: the database is metric
            for sel in ranked_selections(SelectorOutput(scores=scores, angle=angle), cfg.selector_top):
                R = vc.R_v.T @ initial_rotation(obj.selector_R[sel.index], sel.inplane)
                # Depth decides (similarity 1): the selector's scores do not compare across places.
                hypotheses.append(Hypothesis(R, center - R @ norm.center, det, sel.prob, 1.0))
            hypotheses += self._searched(frame, obj, det, segment, 1.0)
        timings[f"{name}/select"] = 1000 * (time.perf_counter() - t1)
        return self._choose_on_surface(frame, obj, hypotheses, timings, segmentation, 0.0)

    def _searched(self, frame: Frame, obj: _Object, det, segment, similarity: float) -> list[Hypothesis]:
        """The rotation grid's best fits to a place's depth segment (none without one)."""
        cfg, surface = self.config, obj.surface
        if segment is None or surface.search is None or cfg.rotation_search <= 0:
            return []
        return [Hypothesis(R, t, det, 0.0, similarity)
                for R, t, _ in surface.search(segment.points, frame.depth, frame.K, surface.diameter,
                                              top=cfg.rotation_search)]

    def _choose_on_surface(self, frame: Frame, obj: _Object, hypotheses: list[Hypothesis], timings: dict,
                           segmentation, similarity_power: float) -> ObjectPose | None:
        """The hypothesis the depth supports best against the fused surface, refined (if on) and
        aligned; ``similarity_power`` as in pipeline/depth_ranking.py."""
        cfg, name, surface = self.config, obj.db.name, obj.surface
        if not hypotheses:
            return None
        t3 = time.perf_counter()
        chosen, aligned = choose_by_depth(surface, hypotheses, frame, segmentation, align_top=cfg.align_top,
                                          similarity_power=similarity_power, tolerance=cfg.tracking.depth_tolerance)
        timings[f"{name}/depth"] = 1000 * (time.perf_counter() - t3)
        R, t = aligned.R, aligned.t  # as in known-model mode: the refiner runs on the winner only
        if self._refiner is not None and cfg.refine_iterations > 0:
            t2 = time.perf_counter()
            R, t = self._refine_metric(frame, obj, R, t)
            timings[f"{name}/refine"] = 1000 * (time.perf_counter() - t2)
        t3 = time.perf_counter()
        aligned = surface.align(frame, R, t, cfg.tracking.depth_tolerance)
        timings[f"{name}/depth"] += 1000 * (time.perf_counter() - t3)
        det = chosen.detection
        return ObjectPose(name, aligned.R, aligned.t, float(det.score), detection_box(det), metric=True,
                          stage_ms=dict(timings), health=float(aligned.agreement))

    def _estimate_by_templates(self, frame: Frame, obj: _Object, timings: dict, shared: dict) -> ObjectPose | None:
        """Places and rotations from the reference templates (pipeline/model_free_templates.py);
        with depth and a fused surface the depth chooses among them as in known-model mode,
        otherwise the best place's PnP pose (or best template) is used, slid to the depth if any."""
        cfg, name, stage = self.config, obj.db.name, obj.templates
        segmentation = shared["segmentation"] if obj.db.metric else None  # segments are in metres
        if "image" not in shared:
            t0 = time.perf_counter()
            shared["image"] = encode_for_stages(self.patch_backbone, frame,
                                                [o.templates for o in self.objects if o.templates is not None],
                                                self._image_runner)
            timings["backbone"] = 1000 * (time.perf_counter() - t0)
        t0 = time.perf_counter()
        places = stage.places(frame, shared["image"], segmentation)
        timings[f"{name}/detect"] = 1000 * (time.perf_counter() - t0)
        t1 = time.perf_counter()
        located = stage.locate(frame, places, cfg.selector_top)
        with_depth = cfg.use_depth and frame.depth is not None
        if obj.surface is not None and with_depth:
            hypotheses = []
            for place in located:
                best = place.found[0].score  # masked patch cosine: comparable across places
                hypotheses += [Hypothesis(p.R, p.t, place.detection, p.score, best) for p in place.found[:cfg.selector_top]]
                hypotheses += self._searched(frame, obj, place.detection, place.segment, best)
            timings[f"{name}/retrieve"] = 1000 * (time.perf_counter() - t1)
            return self._choose_on_surface(frame, obj, hypotheses, timings, segmentation,
                                           STAGE_SETTINGS.similarity_power)
        poses = [(stage.pnp(frame, p) if not with_depth else None, p) for p in located]
        with_pnp = [(pose, p) for pose, p in poses if pose is not None]
        if with_pnp:  # the most inliers: the place whose patches agree on one rigid pose
            pose, place = max(with_pnp, key=lambda pp: pp[0].inliers)
        elif located:
            place = max(located, key=lambda p: p.found[0].score)
            pose = place.found[0]
        else:
            return None
        timings[f"{name}/retrieve"] = 1000 * (time.perf_counter() - t1)
        norm, det, metric = obj.db.normalization, place.detection, obj.db.metric
        R, t = pose.R, pose.t
        if self._refiner is not None and cfg.refine_iterations > 0:
            t2 = time.perf_counter()
            R, t = self._refine_metric(frame, obj, R, t)
            timings[f"{name}/refine"] = 1000 * (time.perf_counter() - t2)
        center, units_to_m = R @ norm.center + t, 1.0
        if with_depth:
            slid = self._slide_to_depth(frame, det, center, norm.scale, metric)
            if slid is not None:
                (center, units_to_m), metric = slid, True
        self._warn_scale(name, metric)
        return ObjectPose(name, R, center - R @ (norm.center * units_to_m), float(det.score), detection_box(det),
                          metric=metric, stage_ms=dict(timings))

    def _slide_to_depth(self, frame: Frame, det, center: np.ndarray, scale: float, metric: bool):
        """Move the object centre along its viewing ray to sit behind the observed surface.

        Without a mesh there is no ICP; the median depth in the central half of the detection box
        is the evidence. Returns ``(centre in metres, metres per database unit)``, or None without
        enough depth. For a database in arbitrary units the depth also gives the scale (how big
        the object looks at the observed depth); the rotation does not depend on it.
        """
        depth = frame.depth
        cx, cy = det.center_xy
        half = det.box_size / 4
        x0, x1 = int(max(0, cx - half)), int(min(depth.shape[1], cx + half + 1))
        y0, y1 = int(max(0, cy - half)), int(min(depth.shape[0], cy + half + 1))
        patch = depth[y0:y1, x0:x1]
        valid = patch[patch > 0]
        if valid.size < 10 or center[2] <= 0:
            return None
        surface = float(np.median(valid))
        units_to_m = 1.0 if metric else surface / float(center[2])  # first guess: centre ~ surface
        center_z = surface + self.config.surface_to_center_radii * scale * units_to_m
        if not metric:
            units_to_m = center_z / float(center[2])
        return center * (center_z / float(center[2])), units_to_m

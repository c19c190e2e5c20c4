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
from sixd_pose_ros.engines.export import detector_features_spec, detector_head_spec, refiner_spec, selector_spec
from sixd_pose_ros.geometry.crop_camera import DegenerateReferenceError, object_centred_camera
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_detector, load_refiner, load_selector
from sixd_pose_ros.models.detector import initial_translation
from sixd_pose_ros.models.selector import SelectorOutput, decode_selection, initial_rotation, ranked_selections
from sixd_pose_ros.objects.model_free_database import ModelFreeDatabase, load_model_free_database
from sixd_pose_ros.pipeline.depth_proposals import segment_depth, segment_proposals
from sixd_pose_ros.pipeline.depth_ranking import Hypothesis, SurfaceModel, choose_by_depth
from sixd_pose_ros.pipeline.detection import detect_peaks, detection_box, detector_outputs, heat_near, image_pyramid
from sixd_pose_ros.pipeline.detection import images_to_tensor as _images
from sixd_pose_ros.pipeline.rotation_search import search_grid
from sixd_pose_ros.pipeline.settings import ModelFreeConfig  # noqa: F401 - re-exported
from sixd_pose_ros.pipeline.tracking import Tracker, TrackerConfig
from sixd_pose_ros.pipeline.types import Frame, ObjectPose, projected_box
from sixd_pose_ros.pipeline.volume_refinement import BackendRefiner, refine_metric, refine_normalized

log = logging.getLogger(__name__)


@dataclass
class _Object:
    db: ModelFreeDatabase
    det_head: object
    selector: object  # Runner: query crop -> (scores, angle), the object's references baked in
    selector_R: np.ndarray  # (N, 3, 3) normalized-frame rotations of the selector subset
    refiner_feats: torch.Tensor | None
    surface: SurfaceModel | None = None  # the fused reference depth (metric databases that have it)


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
        self._features = backend.runner(detector_features_spec(detector, config.image_size, scales))
        self._refiner = (BackendRefiner(self.refiner, backend.runner(refiner_spec(self.refiner)))
                         if self.refiner is not None else None)
        self._warned_scale: set[str] = set()
        self.tracker = Tracker(config.tracking)
        self.objects: list[_Object] = []
        grid = search_grid(*config.rotation_search_grid) \
            if config.use_depth and config.rotation_search > 0 else None  # one grid, every object
        with torch.no_grad():
            for db in databases:
                det_refs = detector.encode_references(_images(db.detector_references().images, device))
                head = backend.runner(detector_head_spec(detector, det_refs.kernels, db.name, config.image_size,
                                                         scales))
                sel = db.selector_references()
                sel_refs = self.selector.prepare_references(
                    _images(sel.images, device), torch.as_tensor(sel.view_directions(), dtype=torch.float32,
                                                                 device=device))
                feats = self.refiner.encode_references(_images(db.references.images, device)) \
                    if self.refiner is not None else None
                runner = backend.runner(selector_spec(self.selector, sel_refs, db.name, config.crop_size))
                mesh = db.surface_mesh() if config.use_depth and db.metric else None
                surface = SurfaceModel.from_mesh(mesh, db.normalization.center, grid) if mesh is not None else None
                self.objects.append(_Object(db, head, runner, np.asarray(sel.R, np.float64), feats, surface))

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
            if "pyramid" not in shared:
                t0 = time.perf_counter()
                shared["pyramid"] = image_pyramid(self._features, frame.rgb, cfg.detection_scales,
                                                  self.backend.device)
                timings["backbone"] = 1000 * (time.perf_counter() - t0)
                shared["segmentation"] = None
                if with_depth and cfg.depth_proposals > 0 and any(o.db.metric for o in self.objects):
                    t0 = time.perf_counter()
                    shared["segmentation"] = segment_depth(frame.depth, K=frame.K)
                    timings["segment"] = 1000 * (time.perf_counter() - t0)
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
        if not metric and name not in self._warned_scale:
            self._warned_scale.add(name)
            log.warning("%s: the references have no metric scale and the frame has no usable depth: "
                        "translation is up to scale (ObjectPose.metric=False); give depth, or rebuild "
                        "the object with depth images or poses in metres", name)
        return ObjectPose(name, R, t, float(det.score), detection_box(det), metric=metric, stage_ms=dict(timings))

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
        cfg, K, name, norm, surface = self.config, frame.K, obj.db.name, obj.db.normalization, obj.surface
        t1 = time.perf_counter()
        hypotheses: list[Hypothesis] = []
        for det, t_place, segment, vc, scores, angle in self._select_at(frame, obj, places):
            center = norm.scale * np.asarray(t_place, np.float64)  # metres: the database is metric
            for sel in ranked_selections(SelectorOutput(scores=scores, angle=angle), cfg.selector_top):
                R = vc.R_v.T @ initial_rotation(obj.selector_R[sel.index], sel.inplane)
                # Depth decides (similarity 1): the selector's scores do not compare across places.
                hypotheses.append(Hypothesis(R, center - R @ norm.center, det, sel.prob, 1.0))
            if segment is not None and surface.search is not None and cfg.rotation_search > 0:
                for R, t, _ in surface.search(segment.points, frame.depth, K, surface.diameter,
                                              top=cfg.rotation_search):
                    hypotheses.append(Hypothesis(R, t, det, 0.0, 1.0))
        timings[f"{name}/select"] = 1000 * (time.perf_counter() - t1)
        if not hypotheses:
            return None
        t3 = time.perf_counter()
        chosen, aligned = choose_by_depth(surface, hypotheses, frame, segmentation, align_top=cfg.align_top,
                                          similarity_power=0.0, tolerance=cfg.tracking.depth_tolerance)
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

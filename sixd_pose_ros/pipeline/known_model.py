"""Known-model estimator: places -> rotations -> ranking -> alignment, for objects given as CAD meshes.

With the defaults (templates of frozen pretrained features, ``feature_detection`` "always"):
the templates correlated over the whole image give places (with depth, segments of the depth
image join them); at each place the templates give rotations (without depth, PnP of their patch
matches gives a pose); with depth the hypotheses are ranked by the depth, the leaders are checked
by render-and-compare and the winner is aligned to the depth; without depth render-and-match PnP
refines it. The reported score is the render contrast at the final pose, which
``min_detection_score`` gates (an object that does not stand out where it was put is reported
absent), and of two objects that would share one place only the better stays
(pipeline/exclusion.py). ``templates=False`` or ``feature_detection="off"`` bring back the
CPU-trained codebook and detector, for comparison.

Everything per object that does not depend on the frame (templates and their correlation
kernels, the codebook on the device, the surface for depth ranking) is prepared when the object
is loaded; a frame costs one whole-image backbone pass per scale for all objects plus per-object
crops.

Tracking (``KnownModelConfig.tracking``, see pipeline/tracking.py): once an object has a
confident pose, its next frames start from the previous pose and run depth alignment only.
Health is the depth agreement at the new pose; nothing else runs while every object is tracked.
Without depth there is no health measure, so without depth every frame runs detection.
``ObjectPose.stage_ms`` names the path: ``<name>/track`` or ``<name>/detect``.

Inference backend (``KnownModelConfig.backend`` or the ``backend=`` argument): every network
that runs per frame (the pretrained backbone on the image, on template crops and on
render/image crop pairs; the trained detector, encoder and refiner when used) runs through one
:class:`~sixd_pose_ros.engines.backends.InferenceBackend` (``auto``, ``tensorrt``,
``onnxruntime`` or ``torch``). The pose codebook stays a torch product on the backend's device.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from sixd_pose_ros.engines.backends import InferenceBackend, make_backend
from sixd_pose_ros.engines.export import (
    NetworkSpec,
    detector_features_spec,
    detector_head_spec,
    encoder_spec,
    patch_backbone_spec,
    refiner_spec,
)
from sixd_pose_ros.geometry.crop_camera import (
    DegenerateReferenceError,
    object_centred_camera,
)
from sixd_pose_ros.models.checkpoint import (
    WEIGHTS_DIR,
    load_autoencoder,
    load_detector,
    load_refiner,
    weights_identity,
)
from sixd_pose_ros.models.detector import initial_translation
from sixd_pose_ros.objects.codebook import pose_from_hit
from sixd_pose_ros.features.efficientnet import load_patch_backbone
from sixd_pose_ros.objects.database import ObjectDatabase, load_object_database
from sixd_pose_ros.objects.templates import TEMPLATE_DEFAULTS, load_or_build_templates
from sixd_pose_ros.pipeline.depth_proposals import (
    DepthSegmentation,
    segment_depth,
    segment_proposals,
)
from sixd_pose_ros.pipeline.depth_ranking import Hypothesis, SurfaceModel, rank_by_depth
from sixd_pose_ros.pipeline.exclusion import ObjectShape, exclude_overlaps
from sixd_pose_ros.pipeline.feature_refinement import FeatureRefiner, crop_pair_spec
from sixd_pose_ros.pipeline.feature_detection import (
    ImageFeatures,
    ObjectKernels,
    encode_image_scales,
    image_backbone_spec,
    image_scales,
)
from sixd_pose_ros.pipeline.detection import (
    detect_peaks,
    detection_box,
    detector_outputs,
    heat_near,
    image_pyramid,
)
from sixd_pose_ros.pipeline.detection import images_to_tensor as _images
from sixd_pose_ros.pipeline.rotation_search import search_grid
from sixd_pose_ros.pipeline.settings import FEATURE_DETECTION_MODES, KnownModelConfig  # noqa: F401 - re-exported
from sixd_pose_ros.pipeline.template_matching import TemplateMatcher, TemplatePose
from sixd_pose_ros.pipeline.tracking import Tracker, TrackerConfig
from sixd_pose_ros.pipeline.types import Frame, ObjectPose, projected_box
from sixd_pose_ros.pipeline.volume_refinement import BackendRefiner, refine_metric


@dataclass
class _LoadedObject:
    db: ObjectDatabase
    det_refs: object  # RefFeatures (None when the trained detector is not used)
    refiner_feats: torch.Tensor | None  # (N, C, S/4, S/4) on the backend's device
    surface: SurfaceModel  # the mesh as depth alignment and ranking need it
    det_head: object = None  # Runner: features -> (heatmap_logits, log2_scale, offset)
    matcher: TemplateMatcher | None = None  # pretrained-feature templates (None: the codebook)
    kernels: ObjectKernels | None = None  # the templates as whole-image correlation kernels
    feature_refiner: FeatureRefiner | None = None  # RGB-only refinement against renders
    verifier: FeatureRefiner | None = None  # render-and-compare of depth-ranked hypotheses, and the score
    shape: ObjectShape | None = None  # surface samples and box: two objects cannot share a place


def pretrained_feature_specs(backbone, config: KnownModelConfig) -> dict[str, NetworkSpec]:
    """The pretrained backbone's graphs an estimator with ``config`` runs: template-sized crops
    (``templates``), the whole image at the feature scales (``image``, with feature detection),
    and the refiner's and verifier's crop pairs (``crops``); one ONNX graph with a TensorRT
    profile each. ``sixd-pose build-engines`` builds the same ones ahead of time."""
    specs = {"templates": patch_backbone_spec(backbone, TEMPLATE_DEFAULTS[2]),
             "crops": crop_pair_spec(backbone, (config.feature_refine_size, config.verify_size),
                                     config.feature_refine_size)}
    if config.feature_detection != "off":
        specs["image"] = image_backbone_spec(backbone, config.image_size, image_scales(*config.feature_scales))
    return specs


class _FrameStages:
    """The per-frame work shared by all objects, done on first need: the trained detector's
    feature pyramid, and the image's pretrained features at the scales the objects need."""

    def __init__(self, estimator: "KnownModelEstimator", frame: Frame, timings: dict) -> None:
        self._estimator, self._frame, self._timings = estimator, frame, timings
        self._pyramid: list | None = None
        self._image: ImageFeatures | None = None

    def pyramid(self) -> list:
        if self._pyramid is None:
            self._pyramid = self._estimator._pyramid(self._frame, self._timings)
        return self._pyramid

    def image_features(self) -> ImageFeatures:
        if self._image is None:
            self._image = self._estimator._image_features(self._frame, self._timings)
        return self._image


class KnownModelEstimator:
    """Estimator (see pipeline.types) for objects given as CAD meshes (object databases)."""

    def __init__(self, databases: Sequence[ObjectDatabase], detector, autoencoder, refiner=None,
                 config: KnownModelConfig = KnownModelConfig(),
                 backend: InferenceBackend | str | None = None) -> None:
        """``backend``: an InferenceBackend (shared, e.g. by a benchmark), a backend name, or None
        for ``config.backend``. The torch modules are moved to the backend's device."""
        self.config = config
        if not isinstance(backend, InferenceBackend):
            backend = make_backend(backend or config.backend, precision=config.precision)
        self.backend = backend
        device = backend.device
        self.detector, self.autoencoder = detector.to(device).eval(), autoencoder.to(device).eval()
        self.refiner = refiner.to(device).eval() if refiner is not None else None
        self.tracker = Tracker(config.tracking)
        self.objects: list[_LoadedObject] = []
        scales = tuple(config.detection_scales)
        # The trained detector's and the codebook encoder's graphs only where the config uses
        # them: a runner is exported to ONNX (and on a GPU built into a TensorRT engine, minutes
        # each) when it is made, and the defaults use neither.
        uses_detector = not (config.templates and config.feature_detection == "always")
        self._features = backend.runner(detector_features_spec(detector, config.image_size, scales)) \
            if uses_detector else None
        self._encoder = backend.runner(encoder_spec(autoencoder)) if not config.templates else None
        self._refiner = (BackendRefiner(self.refiner, backend.runner(refiner_spec(self.refiner)))
                         if self.refiner is not None else None)
        self.patch_backbone = load_patch_backbone() if config.templates else None
        specs = pretrained_feature_specs(self.patch_backbone, config) if config.templates else {}
        self._patch_runner = backend.runner(specs["templates"]) if "templates" in specs else None
        self._image_runner = backend.runner(specs["image"]) if "image" in specs else None
        self._crop_runner = backend.runner(specs["crops"]) if "crops" in specs else None
        with torch.no_grad():
            grid = search_grid(*config.rotation_search_grid) \
                if config.use_depth and config.rotation_search > 0 else None  # one grid, every object
            for db in databases:
                matcher = kernels = feature_refiner = verifier = None
                if config.templates:
                    ts = load_or_build_templates(db.path, db.mesh, self.patch_backbone, tuple(config.template_grid),
                                                 progress=False)
                    matcher = TemplateMatcher(ts, db.references.normalization, self.patch_backbone, self._patch_runner)
                    kernels = ObjectKernels(ts, db.references.normalization.scale) \
                        if config.feature_detection != "off" else None
                elif db.codebook is None:
                    raise ValueError(f"object {db.name!r} has no codebook: rebuild it with the "
                                     f"autoencoder weights (sixd-pose build-object ... --overwrite)")
                refs = _images(db.references.images, device)
                feats = self.refiner.encode_references(refs) if self.refiner is not None else None
                det_refs = detector.encode_references(refs) if uses_detector else None
                head = backend.runner(detector_head_spec(detector, det_refs.kernels, db.name, config.image_size,
                                                         scales)) if uses_detector else None
                if db.codebook is not None:
                    db.codebook.to(device)  # codes resident where the pose codes are computed
                surface = SurfaceModel.from_mesh(db.mesh, db.references.normalization.center, grid)
                if matcher is not None:  # the renders of refinement and verification: the surface's mesh
                    feature_refiner = FeatureRefiner(surface.render_mesh, db.references.normalization,
                                                     self.patch_backbone, self._crop_runner,
                                                     size=config.feature_refine_size)
                    verifier = FeatureRefiner(surface.render_mesh, db.references.normalization, self.patch_backbone,
                                              self._crop_runner, size=config.verify_size)
                self.objects.append(_LoadedObject(db, det_refs, feats, surface, head, matcher, kernels, feature_refiner,
                                                  verifier, ObjectShape.from_mesh(db.mesh)))

    @classmethod
    def from_paths(cls, object_dirs: Sequence[str | Path], weights: str | Path = WEIGHTS_DIR,
                   config: KnownModelConfig = KnownModelConfig(), use_refiner: bool = True,
                   backend: InferenceBackend | str | None = None):
        weights = Path(weights)
        # The codebook's encoder must match only when the codebook is what gives rotations.
        expected = {} if config.templates else {"encoder": weights_identity(weights / "autoencoder.pt")}
        dbs = [load_object_database(p, expected_weights=expected) for p in object_dirs]
        refiner = load_refiner(weights / "refiner.pt") if use_refiner else None
        return cls(dbs, load_detector(weights / "detector.pt"), load_autoencoder(weights / "autoencoder.pt"),
                   refiner, config, backend)

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
        stages = _FrameStages(self, frame, timings)
        segmentation: list[DepthSegmentation | None] = []  # computed once, on first need
        results = []

        def detect(obj: _LoadedObject) -> ObjectPose | None:
            if with_depth and self.config.depth_proposals > 0 and not segmentation:
                t0 = time.perf_counter()
                segmentation.append(segment_depth(frame.depth, frame.K))
                timings["segment"] = 1000 * (time.perf_counter() - t0)
            return self._estimate_one(frame, stages, obj, timings, segmentation[0] if segmentation else None)

        for obj in self.objects:
            # Without depth there is no health: a track cannot go on.
            pose = tracker.step(obj.db.name, frame.stamp_ns, epoch, with_depth,
                                lambda track: self._track_one(frame, obj, track, timings), lambda: detect(obj))
            if pose is not None:
                results.append(pose)
        shapes = {o.db.name: o.shape for o in self.objects if o.shape is not None}
        return exclude_overlaps(results, shapes, self.config.exclusion_max_inside)

    def _pyramid(self, frame: Frame, timings: dict) -> list:
        t0 = time.perf_counter()
        pyramid = image_pyramid(self._features, frame.rgb, self.config.detection_scales, self.backend.device)
        timings["backbone"] = 1000 * (time.perf_counter() - t0)
        return pyramid

    def _track_one(self, frame: Frame, obj: _LoadedObject, track, timings: dict) -> ObjectPose:
        """One tracking step from the track's pose: refiner (if on), then depth alignment."""
        cfg, name = self.config, obj.db.name
        t0 = time.perf_counter()
        R, t = track.R.copy(), track.t.copy()
        if self._refiner is not None and cfg.refine_iterations > 0:
            R, t = self._refine(frame, obj, R, t)
        aligned = obj.surface.align(frame, R, t, cfg.tracking.depth_tolerance)
        R, t = aligned.R, aligned.t
        health = float(aligned.agreement)
        timings[f"{name}/track"] = 1000 * (time.perf_counter() - t0)
        return ObjectPose(name, R, t, health, projected_box(obj.surface.points, R, t, frame.K),
                          metric=True, stage_ms=dict(timings), tracked=True, health=health)

    def _estimate_one(self, frame: Frame, stages: "_FrameStages", obj: _LoadedObject, timings: dict,
                      segmentation: DepthSegmentation | None = None) -> ObjectPose | None:
        cfg, K = self.config, frame.K
        with_depth = cfg.use_depth and frame.depth is not None
        n_peaks, n_hits = cfg.hypotheses if with_depth else (1, 1)
        by_features = obj.kernels is not None and (
            cfg.feature_detection == "always" or (cfg.feature_detection == "without_depth" and not with_depth))
        if by_features:
            places = self._feature_places(frame, stages, obj, timings, segmentation)
        else:
            places = self._detector_places(frame, stages, obj, timings, segmentation, n_peaks)
        if not places:
            return None
        t1 = time.perf_counter()
        # Per place: (detection, crop camera or query, centre, segment) and its rotations as
        # (R, t, similarity), best first.
        cams, hits = self._place_hits(frame, obj, places, max(1, n_hits))
        if not cams:
            return None
        if by_features:
            # Every place as the templates saw it once recentred; an object whose best place looks
            # too little like it is not in view.
            order = sorted(range(len(cams)), key=lambda i: -hits[i][0][2])
            if hits[order[0]][0][2] < cfg.min_template_score:
                return None
            if not with_depth:
                # Without depth nothing checks a place but its matches: the PnP inlier count
                # chooses (real validation frames, 27 RGB-only instances: ADD-S-0.1d 11 % by
                # similarity, 19 % by inliers, 22 % if the best place were always chosen).
                order.sort(key=lambda i: -cams[i][1].pnp_inliers)
            else:
                peaks = [i for i in order if cams[i][3] is None][:n_peaks]
                order = peaks + [i for i in order if cams[i][3] is not None][:cfg.depth_proposals]
        else:
            # The detector's peaks, then the segments that look most like the object, up to the budget.
            peaks = [i for i, cam in enumerate(cams) if cam[3] is None]
            segs = sorted((i for i, cam in enumerate(cams) if cam[3] is not None), key=lambda i: -hits[i][0][2])
            order = peaks + segs[:cfg.depth_proposals]
        hypotheses: list[Hypothesis] = []
        search = obj.surface.search
        for i in order:
            det, _, center, segment = cams[i]
            place_sim = hits[i][0][2]
            for R, t, sim in hits[i]:
                hypotheses.append(Hypothesis(R, t, det, sim, place_sim))
            if segment is not None and search is not None and cfg.rotation_search > 0:
                for R, t, _ in search(segment.points, frame.depth, K, obj.surface.diameter, top=cfg.rotation_search):
                    hypotheses.append(Hypothesis(R, t, det, place_sim, place_sim))  # the place's look
        timings[f"{obj.db.name}/retrieve"] = 1000 * (time.perf_counter() - t1)
        chosen = hypotheses[0]
        R, t, det, similarity = chosen.R, chosen.t, chosen.detection, chosen.similarity
        health = None
        if with_depth and len(hypotheses) > 1:
            # Depth chooses among the raw hypotheses (cheap), so the refiner runs on one pose only.
            t3 = time.perf_counter()
            ranked = rank_by_depth(obj.surface, hypotheses, frame, segmentation, align_top=cfg.align_top,
                                   similarity_power=cfg.similarity_power, tolerance=cfg.tracking.depth_tolerance,
                                   per_place=cfg.align_per_place)
            best = ranked[0]
            if obj.verifier is not None and cfg.verify_top > 1 and len(ranked) > 1:
                # The depth's ranks of the leaders are often within a few percent of each other
                # on real clutter; a render of each, compared with the image, separates them.
                t4 = time.perf_counter()
                verified = [(r.rank * max(obj.verifier.agreement(frame.rgb, K, r.aligned.R, r.aligned.t), 0.0)
                             ** cfg.verify_power, i) for i, r in enumerate(ranked[:cfg.verify_top])]
                best = ranked[max(verified)[1]]
                timings[f"{obj.db.name}/verify"] = 1000 * (time.perf_counter() - t4)
            chosen, aligned = best.hypothesis, best.aligned
            det, similarity = chosen.detection, chosen.similarity
            R, t = aligned.R, aligned.t  # the full alignment below starts from the winner
            timings[f"{obj.db.name}/depth"] = 1000 * (time.perf_counter() - t3) - timings.get(f"{obj.db.name}/verify", 0.0)
        if self._refiner is not None and cfg.refine_iterations > 0:
            t2 = time.perf_counter()
            R, t = self._refine(frame, obj, R, t)
            timings[f"{obj.db.name}/refine"] = 1000 * (time.perf_counter() - t2)
            health = None  # the refined pose needs its own depth check below
        if not with_depth and obj.feature_refiner is not None and cfg.feature_refine_iterations > 0:
            t2 = time.perf_counter()
            refined = obj.feature_refiner.refine(frame.rgb, K, R, t, cfg.feature_refine_iterations)
            R, t = refined.R, refined.t
            timings[f"{obj.db.name}/feature_refine"] = 1000 * (time.perf_counter() - t2)
        if with_depth and health is None:
            t3 = time.perf_counter()
            aligned = obj.surface.align(frame, R, t, cfg.tracking.depth_tolerance)
            R, t, health = aligned.R, aligned.t, float(aligned.agreement)
            timings[f"{obj.db.name}/depth"] = timings.get(f"{obj.db.name}/depth", 0.0) + \
                1000 * (time.perf_counter() - t3)
        score = float(det.score) * float(max(similarity, 0.0))
        if obj.verifier is not None:
            # Whether a render at the final pose matches the image there and not beside: what
            # separates right poses from absent objects and wrong ones best of all we measured
            # (see contrast_gain); the correlation and template scores overlap for them.
            t4 = time.perf_counter()
            contrast = obj.verifier.contrast(frame.rgb, K, R, t)
            score = float(1.0 - np.exp(-cfg.contrast_gain * max(0.0, contrast)))
            timings[f"{obj.db.name}/verify"] = timings.get(f"{obj.db.name}/verify", 0.0) + \
                1000 * (time.perf_counter() - t4)
            if by_features and score < cfg.min_detection_score:
                return None
        return ObjectPose(obj.db.name, R, t, score, detection_box(det), metric=True, stage_ms=dict(timings),
                          health=health)

    def _detector_places(self, frame: Frame, stages: "_FrameStages", obj: _LoadedObject, timings: dict,
                         segmentation: DepthSegmentation | None, n_peaks: int) -> list:
        """Places ``(detection, centre, segment)`` from the trained detector's peaks, and with
        depth from the segments the detector's heat orders; none when no peak passes
        ``min_detection_score`` (the detector decides whether the object is in view)."""
        cfg, K = self.config, frame.K
        norm = obj.db.references.normalization
        t0 = time.perf_counter()
        outputs = detector_outputs(stages.pyramid(), obj.det_head, self.detector.cfg.stride)
        dets = [d for d in detect_peaks(outputs, self.detector.cfg.ref_size, max(1, n_peaks))
                if d.score >= cfg.min_detection_score]
        timings[f"{obj.db.name}/detect"] = 1000 * (time.perf_counter() - t0)
        if not dets:
            return []
        places = [(det, norm.scale * initial_translation(det.center_xy, det.box_size, K), None) for det in dets]
        if segmentation is not None and cfg.depth_proposals > 0:
            props = self._segment_places(segmentation, obj, K)
            for prop in props:
                prop.detection.score = heat_near(outputs, prop.detection.center_xy, prop.detection.box_size / 4)
            # Twice the budget, by the detector's heat there, go on to the encoder (its batch stays
            # bounded in clutter); the similarity of their crops picks the budget among them.
            props.sort(key=lambda p: -p.detection.score)
            budget = 2 * cfg.depth_proposals if obj.matcher is None else cfg.template_places
            places += [(p.detection, p.centre, p.segment) for p in props[:budget]]
        return places

    def _feature_places(self, frame: Frame, stages: "_FrameStages", obj: _LoadedObject, timings: dict,
                        segmentation: DepthSegmentation | None) -> list:
        """Places ``(detection, centre, segment)`` from the templates correlated over the image
        (pipeline/feature_detection.py); with depth also the depth segments, ordered by the
        correlation at their place and size. ``template_places`` of each at most."""
        cfg, K = self.config, frame.K
        image = stages.image_features()  # timed as "backbone", once per frame
        t0 = time.perf_counter()
        maps = obj.kernels.score_maps(image, K, cfg.detection_depth_range)
        n_peaks = cfg.hypotheses[0] if segmentation is not None else cfg.template_places
        places = obj.kernels.peak_places(maps, K, n_peaks, frame.depth, segmentation)
        if segmentation is not None and cfg.depth_proposals > 0:
            places += obj.kernels.segment_places(maps, K, self._segment_places(segmentation, obj, K),
                                                 cfg.template_places)
        timings[f"{obj.db.name}/detect"] = 1000 * (time.perf_counter() - t0)
        return places

    def _segment_places(self, segmentation: DepthSegmentation, obj: _LoadedObject, K: np.ndarray) -> list:
        cfg = self.config
        return segment_proposals(segmentation, obj.surface.diameter, obj.db.references.normalization.scale, K,
                                 size_range=(0.15, cfg.max_segment_extent),
                                 split_up_to=cfg.split_segments_up_to if obj.matcher is not None else 0.0)

    def _image_features(self, frame: Frame, timings: dict) -> ImageFeatures:
        """The image at every scale some object's depth range needs (one backbone pass each)."""
        t0 = time.perf_counter()
        cfg = self.config
        every = image_scales(*cfg.feature_scales)
        scales = {s for o in self.objects if o.kernels
                  for s in o.kernels.scales_in_range(every, frame.K, cfg.detection_depth_range)}
        image = encode_image_scales(self.patch_backbone, frame.rgb, sorted(scales) or [every[-1]], self._image_runner)
        timings["backbone"] = 1000 * (time.perf_counter() - t0)
        return image

    def _place_hits(self, frame: Frame, obj: _LoadedObject, places: list, k: int) -> tuple[list, list]:
        """Rotation hypotheses at each place: from the templates (their rotations, and without
        depth also the PnP pose of the best templates' matches, recentred once) or from the
        codebook. Returns the usable places ``(det, camera, centre, segment)`` and, per place,
        ``[(R, t, similarity)]`` best first."""
        cfg, K = self.config, frame.K
        if obj.matcher is not None:
            matcher = obj.matcher
            queries = matcher.locate(frame.rgb, K, [center for _, center, _ in places], cfg.recentre_rounds)
            cams, hits = [], []
            for (det, _, segment), query in zip(places, queries):
                if query is None:
                    continue
                center = query.center  # where the templates moved the place
                found = matcher.retrieve(query, k=max(k, cfg.pnp_templates))
                place = [(p.R, p.t, p.score) for p in found[:k]]
                if not (cfg.use_depth and frame.depth is not None):
                    pnp = self._pnp_pose(frame, matcher, query, found)
                    if pnp is not None:
                        place.insert(0, (pnp.R, pnp.t, found[0].score))
                        query.pnp_inliers = pnp.inliers
                cams.append((det, query, center, segment))
                hits.append(place)
            return cams, hits
        crops, cams = [], []
        for det, center, segment in places:
            try:
                vc = object_centred_camera(K, center, obj.db.references.normalization.scale, cfg.crop_size)
            except DegenerateReferenceError:
                continue
            crops.append(cv2.warpPerspective(frame.rgb, vc.H, (cfg.crop_size, cfg.crop_size),
                                             flags=cv2.INTER_LINEAR))
            cams.append((det, vc, center, segment))
        if not crops:
            return [], []
        # Chunks of 8: the encoder's engine profile (engines/export.py) takes at most 8 crops.
        z_p = torch.cat([self._encoder(_images(np.stack(crops[c:c + 8]), self.backend.device))[1]
                         for c in range(0, len(crops), 8)])
        idx, sim = obj.db.codebook.lookup(z_p, k=k)
        idx, sim = idx.cpu().numpy(), sim.cpu().numpy()
        hits = [[(*pose_from_hit(obj.db.codebook, int(idx[i, j]), cams[i][1].R_v, cams[i][2]), float(sim[i, j]))
                 for j in range(idx.shape[1])] for i in range(len(cams))]
        return cams, hits

    def _pnp_pose(self, frame: Frame, matcher: TemplateMatcher, query, found: list[TemplatePose]):
        """PnP from the best templates' matches; then once more from a crop centred where that
        pose puts the object (tight crops match better). ``None`` when PnP finds no consensus."""
        cfg = self.config
        pose = matcher.pnp(query, frame.K, [p.template for p in found[:cfg.pnp_templates]])
        if pose is None:
            return None
        center = pose.R @ matcher.norm.center + pose.t
        recentred = matcher.crop(frame.rgb, frame.K, [center])[0]
        if recentred is None:
            return pose
        again = matcher.retrieve(recentred, k=cfg.pnp_templates)
        second = matcher.pnp(recentred, frame.K, [p.template for p in again])
        return second if second is not None and second.inliers >= pose.inliers else pose

    def _refine(self, frame: Frame, obj: _LoadedObject, R: np.ndarray, t: np.ndarray):
        refs = obj.db.references
        return refine_metric(self._refiner, refs, obj.refiner_feats, refs.normalization, frame, R, t,
                             self.config.refine_iterations)

"""Known-model mode's proposer: places and rotations of an object given as a CAD mesh.

With the defaults (templates of frozen pretrained features, ``feature_detection`` "always"):
the templates correlated over the whole image give places (with depth, segments of the depth
image join them); at each place the templates give rotations (without depth, PnP of their patch
matches gives a pose first). ``templates=False`` or ``feature_detection="off"``: the CPU-trained
codebook and detector. The rest (depth ranking, half turns, render-and-compare, alignment, the
render-contrast score) is pipeline/estimator.py's."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from sixd_pose_ros.engines.export import detector_features_spec, detector_head_spec, encoder_spec
from sixd_pose_ros.features.efficientnet import load_patch_backbone
from sixd_pose_ros.objects.database import ObjectDatabase
from sixd_pose_ros.objects.templates import load_or_build_templates
from sixd_pose_ros.pipeline.depth_proposals import DepthSegmentation, segment_proposals
from sixd_pose_ros.pipeline.depth_ranking import Hypothesis, SurfaceModel, searched_hypotheses
from sixd_pose_ros.pipeline.detection import heat_near, image_pyramid, peak_places
from sixd_pose_ros.pipeline.detection import images_to_tensor as _images
from sixd_pose_ros.pipeline.estimator import FrameStages, LoadedObject, PoseEstimator, Proposal, Proposer
from sixd_pose_ros.pipeline.exclusion import ObjectShape
from sixd_pose_ros.pipeline.feature_detection import ObjectKernels, encode_for_kernels
from sixd_pose_ros.pipeline.feature_refinement import FeatureRefiner
from sixd_pose_ros.pipeline.feature_specs import pretrained_feature_specs
from sixd_pose_ros.pipeline.half_turns import tells_faces_apart
from sixd_pose_ros.pipeline.place_rotations import codebook_rotations, template_rotations
from sixd_pose_ros.pipeline.settings import KnownModelConfig
from sixd_pose_ros.pipeline.template_matching import TemplateMatcher
from sixd_pose_ros.pipeline.types import Frame

__all__ = ["KnownModelProposer"]


@dataclass
class _Parts:
    det_head: object = None  # Runner: features -> (heatmap_logits, log2_scale, offset); None: detector unused
    matcher: TemplateMatcher | None = None  # pretrained-feature templates (None: the codebook)
    kernels: ObjectKernels | None = None  # the templates as whole-image correlation kernels


class KnownModelProposer(Proposer):
    """Proposer (pipeline/estimator.py) for objects given as CAD meshes (object databases)."""

    def __init__(self, detector, autoencoder) -> None:
        self.detector, self.autoencoder = detector, autoencoder

    def prepare(self, est: PoseEstimator) -> None:
        config, backend = est.config, est.backend
        self.detector = self.detector.to(backend.device).eval()
        self.autoencoder = self.autoencoder.to(backend.device).eval()
        # The trained detector's and encoder's graphs only where the config uses them (the defaults
        # do not): a runner is an ONNX export when made, and on a GPU a TensorRT build (minutes).
        self.uses_detector = not (config.templates and config.feature_detection == "always")
        self._features = backend.runner(detector_features_spec(self.detector, config.image_size,
                                                               tuple(config.detection_scales))) \
            if self.uses_detector else None
        self._encoder = backend.runner(encoder_spec(self.autoencoder)) if not config.templates else None
        self.patch_backbone = load_patch_backbone() if config.templates else None
        specs = pretrained_feature_specs(self.patch_backbone, config) if config.templates else {}
        self._patch_runner, self._image_runner, self._crop_runner = (
            backend.runner(specs[k]) if k in specs else None for k in ("templates", "image", "crops"))

    def load(self, est: PoseEstimator, db: ObjectDatabase, grid) -> LoadedObject:
        config, device = est.config, est.backend.device
        norm = db.references.normalization
        parts, feature_refiner, verifier = _Parts(), None, None
        if config.templates:
            ts = load_or_build_templates(db.path, db.mesh, self.patch_backbone, tuple(config.template_grid),
                                         progress=False)
            parts.matcher = TemplateMatcher(ts, norm, self.patch_backbone, self._patch_runner)
            parts.kernels = ObjectKernels(ts, norm.scale) if config.feature_detection != "off" else None
        elif db.codebook is None:
            raise ValueError(f"object {db.name!r} has no codebook: rebuild it with the "
                             f"autoencoder weights (sixd-pose build-object ... --overwrite)")
        feats = est.encode_references(db)
        if self.uses_detector:
            det_refs = self.detector.encode_references(_images(db.references.images, device))
            parts.det_head = est.backend.runner(detector_head_spec(
                self.detector, det_refs.kernels, db.name, config.image_size, tuple(config.detection_scales)))
        if db.codebook is not None:
            db.codebook.to(device)  # codes resident where the pose codes are computed
        surface = SurfaceModel.from_mesh(db.mesh, norm.center, grid)
        if parts.matcher is not None:  # the renders of refinement and verification: the surface's mesh
            feature_refiner, verifier = (
                FeatureRefiner(surface.render_mesh, norm, self.patch_backbone, self._crop_runner, size=size)
                for size in (config.feature_refine_size, config.verify_size))
        return LoadedObject(db, surface, feats, parts, ObjectShape.from_mesh(db.mesh), verifier, feature_refiner,
                            mesh=db.mesh, half_turns=tells_faces_apart(surface.render_mesh))

    def overlap_limit(self, config: KnownModelConfig) -> float:
        return config.exclusion_max_inside

    def propose(self, est: PoseEstimator, frame: Frame, stages: FrameStages, obj: LoadedObject,
                timings: dict) -> Proposal | None:
        cfg, parts = est.config, obj.parts
        with_depth = cfg.use_depth and frame.depth is not None
        n_peaks, n_hits = cfg.hypotheses if with_depth else (1, 1)
        by_features = parts.kernels is not None and (
            cfg.feature_detection == "always" or (cfg.feature_detection == "without_depth" and not with_depth))
        segmentation = stages.segmentation()
        places = self._feature_places(est, frame, stages, obj, timings, segmentation) if by_features else \
            self._detector_places(est, frame, stages, obj, timings, segmentation, n_peaks)
        if not places:
            return None
        t1 = time.perf_counter()
        # Per place: (detection, crop camera or query, centre, segment) and its rotations as
        # (R, t, similarity), best first.
        if parts.matcher is not None:
            cams, hits = template_rotations(parts.matcher, frame, places, max(1, n_hits), with_depth=with_depth,
                                            recentre_rounds=cfg.recentre_rounds, pnp_templates=cfg.pnp_templates)
        else:
            cams, hits = codebook_rotations(self._encoder, obj.db.codebook, obj.db.references.normalization.scale,
                                            frame, places, max(1, n_hits), cfg.crop_size, est.backend.device)
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
        for i in order:
            det, _, _, segment = cams[i]
            place_sim = hits[i][0][2]
            hypotheses += [Hypothesis(R, t, det, sim, place_sim) for R, t, sim in hits[i]]
            hypotheses += searched_hypotheses(obj.surface, frame, det, segment, cfg.rotation_search,
                                              place_sim, place_sim)  # the place's look
        timings[f"{obj.db.name}/retrieve"] = 1000 * (time.perf_counter() - t1)
        return Proposal(hypotheses, cfg.similarity_power, cfg.align_per_place, rank_alone=False,
                        gate_on_contrast=by_features, occlusion_weight=cfg.occlusion_weight)

    def _detector_places(self, est: PoseEstimator, frame: Frame, stages: FrameStages, obj: LoadedObject,
                         timings: dict, segmentation: DepthSegmentation | None, n_peaks: int) -> list:
        """Places ``(detection, centre, segment)`` from the trained detector's peaks, and with
        depth from the segments the detector's heat orders; none when no peak passes
        ``min_detection_score`` (the detector decides whether the object is in view)."""
        cfg, K = est.config, frame.K
        t0 = time.perf_counter()
        pyramid = stages.once("pyramid", lambda: image_pyramid(self._features, frame.rgb, cfg.detection_scales,
                                                               est.backend.device))
        places, outputs = peak_places(self.detector, pyramid, obj.parts.det_head, K,
                                      obj.db.references.normalization.scale, max(1, n_peaks), cfg.min_detection_score)
        timings[f"{obj.db.name}/detect"] = 1000 * (time.perf_counter() - t0)
        if not places:
            return []
        if segmentation is not None and cfg.depth_proposals > 0:
            props = self._segment_places(cfg, segmentation, obj, K)
            for prop in props:
                prop.detection.score = heat_near(outputs, prop.detection.center_xy, prop.detection.box_size / 4)
            # Twice the budget, by the detector's heat there, go on to the encoder (its batch stays
            # bounded in clutter); the similarity of their crops picks the budget among them.
            props.sort(key=lambda p: -p.detection.score)
            budget = 2 * cfg.depth_proposals if obj.parts.matcher is None else cfg.template_places
            places += [(p.detection, p.centre, p.segment) for p in props[:budget]]
        return places

    def _feature_places(self, est: PoseEstimator, frame: Frame, stages: FrameStages, obj: LoadedObject,
                        timings: dict, segmentation: DepthSegmentation | None) -> list:
        """Places ``(detection, centre, segment)`` from the templates correlated over the image
        (pipeline/feature_detection.py); with depth also the depth segments, ordered by the
        correlation at their place and size. ``template_places`` of each at most."""
        cfg, K, kernels = est.config, frame.K, obj.parts.kernels
        image = stages.once("image", lambda: encode_for_kernels(
            self.patch_backbone, frame.rgb, K, [o.parts.kernels for o in est.objects if o.parts.kernels],
            cfg.feature_scales, cfg.detection_depth_range, self._image_runner))  # once per frame
        t0 = time.perf_counter()
        maps = kernels.score_maps(image, K, cfg.detection_depth_range)
        n_peaks = cfg.hypotheses[0] if segmentation is not None else cfg.template_places
        places = kernels.peak_places(maps, K, n_peaks, frame.depth, segmentation)
        if segmentation is not None and cfg.depth_proposals > 0:
            places += kernels.segment_places(maps, K, self._segment_places(cfg, segmentation, obj, K),
                                             cfg.template_places)
        timings[f"{obj.db.name}/detect"] = 1000 * (time.perf_counter() - t0)
        return places

    @staticmethod
    def _segment_places(cfg: KnownModelConfig, segmentation: DepthSegmentation, obj: LoadedObject,
                        K: np.ndarray) -> list:
        return segment_proposals(segmentation, obj.surface.diameter, obj.db.references.normalization.scale, K,
                                 size_range=(0.15, cfg.max_segment_extent),
                                 split_up_to=cfg.split_segments_up_to if obj.parts.matcher is not None else 0.0,
                                 max_parts=cfg.split_max_parts)

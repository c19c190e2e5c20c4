"""Model-free mode with the CPU-trained networks (``ModelFreeConfig.templates=False``): the
detector's peak and the viewpoint selector's rotations there (Gen6D's pipeline).

Why kept: for comparison with the template stage, which replaced it because these networks,
trained from scratch on 2 CPU cores, do not transfer to real images (see ModelFreeConfig.templates).
Places: the detector's peak, plus with depth the segments that fit a metric object's size. With
depth and a fused surface, the selector's ``selector_top`` viewpoints at every place and the
rotation grid's fits go to the depth (pipeline/estimator.py); otherwise the place the selector
likes best gives the pose, settled here in the references' normalized frame.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from sixd_pose_ros.engines.export import detector_features_spec, detector_head_spec, selector_spec
from sixd_pose_ros.geometry.crop_camera import DegenerateReferenceError, object_centred_camera
from sixd_pose_ros.models.detector import initial_translation
from sixd_pose_ros.models.selector import SelectorOutput, decode_selection, initial_rotation, ranked_selections
from sixd_pose_ros.objects.model_free_database import ModelFreeDatabase
from sixd_pose_ros.pipeline.depth_proposals import segment_proposals
from sixd_pose_ros.pipeline.depth_ranking import Hypothesis, searched_hypotheses
from sixd_pose_ros.pipeline.depth_slide import slide_to_depth
from sixd_pose_ros.pipeline.detection import detect_peaks, detection_box, detector_outputs, heat_near, image_pyramid
from sixd_pose_ros.pipeline.detection import images_to_tensor as _images
from sixd_pose_ros.pipeline.estimator import FrameStages, LoadedObject, PoseEstimator, Proposal
from sixd_pose_ros.pipeline.model_free_proposer import ModelFreeProposer
from sixd_pose_ros.pipeline.types import Frame, ObjectPose

__all__ = ["SelectorProposer"]


@dataclass
class _Parts:
    det_head: object  # Runner: features -> (heatmap_logits, log2_scale, offset)
    selector: object  # Runner: query crop -> (scores, angle), the object's references baked in
    selector_R: np.ndarray  # (N, 3, 3) normalized-frame rotations of the selector subset


class SelectorProposer(ModelFreeProposer):
    """Proposer (pipeline/estimator.py) of the trained detector and viewpoint selector; loading
    and settling as :class:`ModelFreeProposer`."""

    def __init__(self, detector, selector) -> None:
        super().__init__()
        self.detector, self.selector = detector, selector

    def prepare(self, est: PoseEstimator) -> None:
        config, backend = est.config, est.backend
        self.detector = self.detector.to(backend.device).eval()
        self.selector = self.selector.to(backend.device).eval()
        self._features = backend.runner(detector_features_spec(self.detector, config.image_size,
                                                               tuple(config.detection_scales)))

    def presence(self, db: ModelFreeDatabase, mesh, surface) -> tuple[None, None]:
        """None: the trained detector's score says whether the object is there (gated by
        ``min_detection_score`` in :meth:`propose`), as before the render contrast existed."""
        return None, None

    def parts(self, est: PoseEstimator, db: ModelFreeDatabase) -> _Parts:
        config, backend, device = est.config, est.backend, est.backend.device
        sel = db.selector_references()
        det_refs = self.detector.encode_references(_images(db.detector_references().images, device))
        head = backend.runner(detector_head_spec(self.detector, det_refs.kernels, db.name, config.image_size,
                                                 tuple(config.detection_scales)))
        sel_refs = self.selector.prepare_references(
            _images(sel.images, device), torch.as_tensor(sel.view_directions(), dtype=torch.float32, device=device))
        runner = backend.runner(selector_spec(self.selector, sel_refs, db.name, config.crop_size))
        return _Parts(head, runner, np.asarray(sel.R, np.float64))

    def propose(self, est: PoseEstimator, frame: Frame, stages: FrameStages, obj: LoadedObject,
                timings: dict) -> Proposal | ObjectPose | None:
        """The trained detector's peak (and with depth the segments that fit the object's size)
        as places, the viewpoint selector's rotations there. Without a surface the pose is
        settled here: it stays in the references' normalized frame until depth gives the scale."""
        cfg, K, name, norm = est.config, frame.K, obj.db.name, obj.db.normalization
        pyramid = stages.once("pyramid", lambda: image_pyramid(self._features, frame.rgb, cfg.detection_scales,
                                                               est.backend.device))
        segmentation = stages.segmentation()
        t0 = time.perf_counter()
        outputs = detector_outputs(pyramid, obj.parts.det_head, self.detector.cfg.stride)
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
        t1 = time.perf_counter()
        with_depth = cfg.use_depth and frame.depth is not None
        if obj.surface is not None and with_depth:
            # The selector's best viewpoints and the rotation grid at every place; depth decides.
            hypotheses: list[Hypothesis] = []
            for det, t_place, segment, vc, scores, angle in self._select_at(est, frame, obj, places):
                center = norm.scale * np.asarray(t_place, np.float64)  # metres: the database is metric
                for sel in ranked_selections(SelectorOutput(scores=scores, angle=angle), cfg.selector_top):
                    R = vc.R_v.T @ initial_rotation(obj.parts.selector_R[sel.index], sel.inplane)
                    hypotheses.append(Hypothesis(R, center - R @ norm.center, det, 1.0, 1.0))
                hypotheses += searched_hypotheses(obj.surface, frame, det, segment, cfg.rotation_search, 1.0, 1.0)
            timings[f"{name}/select"] = 1000 * (time.perf_counter() - t1)
            return Proposal(hypotheses, 0.0)  # the selector's scores do not compare across places
        best = None
        for place_det, t_place, _, vc, scores, angle in self._select_at(est, frame, obj, places):
            # The selector's raw score: comparable across places. (Adding log(heat) of the detector
            # there changed nothing on a validation scene of training objects: ADD-S 10.4 % both.)
            match = float(torch.as_tensor(scores).max())
            if best is None or match > best[0]:
                best = (match, place_det, t_place, vc, scores, angle)
        if best is None:
            return None
        _, det, t_n, vc, scores, angle = best
        sel = decode_selection(SelectorOutput(scores=scores, angle=angle))[0]
        R_n = vc.R_v.T @ initial_rotation(obj.parts.selector_R[sel.index], sel.inplane)
        timings[f"{name}/select"] = 1000 * (time.perf_counter() - t1)
        if est.refines:
            t2 = time.perf_counter()
            R_n, t_n = est.refine_normalized(frame, obj, R_n, t_n)
            timings[f"{name}/refine"] = 1000 * (time.perf_counter() - t2)
        center = norm.scale * np.asarray(t_n, np.float64)  # object centre in the camera, database units
        metric, units_to_m = obj.db.metric, 1.0
        if with_depth:
            t3 = time.perf_counter()
            slid = slide_to_depth(frame, det, center, norm.scale, metric, cfg.surface_to_center_radii)
            if slid is not None:
                (center, units_to_m), metric = slid, True
            timings[f"{name}/depth"] = 1000 * (time.perf_counter() - t3)
        # Object-frame origin from its centre; an arbitrary-unit frame is scaled to metres with depth.
        t = center - R_n @ (np.asarray(norm.center, np.float64) * units_to_m)
        self.warn_scale(name, metric)
        return ObjectPose(name, R_n, t, float(det.score), detection_box(det), metric=metric, stage_ms=dict(timings))

    def _select_at(self, est: PoseEstimator, frame: Frame, obj: LoadedObject, places: list):
        """Per place ``(detection, centre, segment)`` whose crop camera is defined: the place,
        its crop camera and the selector's ``(scores, angle)`` on the crop there."""
        size = est.config.crop_size
        for det, t_place, segment in places:
            try:
                vc = object_centred_camera(frame.K, t_place, 1.0, size)
            except DegenerateReferenceError:
                continue
            crop = cv2.warpPerspective(frame.rgb, vc.H, (size, size), flags=cv2.INTER_LINEAR)
            scores, angle = obj.parts.selector(_images(crop[None], est.backend.device))
            yield det, t_place, segment, vc, scores, angle

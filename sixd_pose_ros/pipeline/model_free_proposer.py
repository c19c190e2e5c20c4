"""Model-free mode's proposer: places and rotations of an object given as posed reference photos.

With the defaults (``ModelFreeConfig.templates``): the reference photos encoded by the frozen
pretrained backbone give places and rotations through the known-model template stage
(pipeline/model_free_templates.py); without depth, PnP on the patch matches gives the pose.
``templates=False`` brings back the CPU-trained detector and viewpoint selector (Gen6D's
pipeline, pipeline/model_free_selector.py). With depth and a surface fused from metric RGB-D
references, the shared stages (pipeline/estimator.py) let the depth choose among the
hypotheses; without a surface the centre is slid to the observed depth
(pipeline/depth_slide.py), and without depth a database in an arbitrary unit gives a pose
with ``metric=False``.

The reported score, when the database has a fused surface (metric RGB-D references), is the
render contrast of that surface at the final pose, as in known-model mode
(``FeatureRefiner.contrast``, mapped by ``ModelFreeConfig.contrast_gain``), and
``min_detection_score`` gates it: the template places are the image's best matches whether or
not the object is there, so without the gate an absent object still got a pose. Without a
surface (RGB-only references) the score is the detection's and nothing gates it.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from sixd_pose_ros.features.efficientnet import load_patch_backbone
from sixd_pose_ros.objects.model_free_database import ModelFreeDatabase
from sixd_pose_ros.pipeline.depth_ranking import Hypothesis, SurfaceModel, searched_hypotheses
from sixd_pose_ros.pipeline.depth_slide import ScaleWarning, slide_to_depth
from sixd_pose_ros.pipeline.estimator import FrameStages, LoadedObject, PoseEstimator, Proposal, Proposer
from sixd_pose_ros.pipeline.exclusion import ObjectShape
from sixd_pose_ros.pipeline.feature_detection import encode_for_kernels
from sixd_pose_ros.pipeline.feature_refinement import FeatureRefiner
from sixd_pose_ros.pipeline.feature_specs import pretrained_feature_specs
from sixd_pose_ros.pipeline.model_free_templates import STAGE_SETTINGS, ReferenceTemplateStage
from sixd_pose_ros.pipeline.settings import ModelFreeConfig
from sixd_pose_ros.pipeline.types import Frame, ObjectPose
from sixd_pose_ros.render.renderer import RenderMesh

__all__ = ["ModelFreeProposer"]


class ModelFreeProposer(Proposer):
    """Proposer (pipeline/estimator.py) for objects given as posed reference photos, from
    templates of the photos. Every hypothesis has similarity 1; the reported score is the render
    contrast of the fused surface (objects with one), else the detection's."""

    def __init__(self) -> None:
        self.warn_scale = ScaleWarning()

    def prepare(self, est: PoseEstimator) -> None:
        self.patch_backbone = load_patch_backbone()
        # The template stage's graphs: known-model mode's, at this estimator's image size.
        specs = pretrained_feature_specs(self.patch_backbone, replace(STAGE_SETTINGS, image_size=est.config.image_size))
        self._patch_runner = est.backend.runner(specs["templates"])
        self._image_runner = est.backend.runner(specs["image"])
        self._crop_runner = est.backend.runner(specs["crops"])

    def load(self, est: PoseEstimator, db: ModelFreeDatabase, grid) -> LoadedObject:
        mesh = db.surface_mesh() if db.metric else None
        surface = SurfaceModel.from_mesh(mesh, db.normalization.center, grid) \
            if mesh is not None and est.config.use_depth else None
        verifier, shape = self.presence(db, mesh, surface) if mesh is not None else (None, None)
        return LoadedObject(db, surface, est.encode_references(db), self.parts(est, db), shape, verifier)

    def presence(self, db: ModelFreeDatabase, mesh, surface: SurfaceModel | None) -> tuple[FeatureRefiner | None,
                                                                                          ObjectShape | None]:
        """What says whether the object is there: the fused surface rendered at the final pose
        (the score, see the module docstring) and its shape (one place, one object)."""
        render_mesh = surface.render_mesh if surface is not None else RenderMesh.from_trimesh(mesh)
        verifier = FeatureRefiner(render_mesh, db.normalization, self.patch_backbone, self._crop_runner,
                                  size=STAGE_SETTINGS.verify_size)
        return verifier, ObjectShape.from_mesh(mesh)

    def overlap_limit(self, config: ModelFreeConfig) -> float:
        return config.exclusion_max_inside

    def parts(self, est: PoseEstimator, db: ModelFreeDatabase):
        """What the proposer itself needs of the object: its reference templates."""
        return ReferenceTemplateStage(db, self.patch_backbone, self._patch_runner)

    def uses_segmentation(self, objects: list[LoadedObject]) -> bool:
        return any(o.db.metric for o in objects)  # segments are in metres

    def settle(self, est: PoseEstimator, frame: Frame, obj: LoadedObject, detection, R: np.ndarray,
               t: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Without a surface to align: the centre slid to the depth (if any), which also gives an
        arbitrary-unit database its scale."""
        norm, metric = obj.db.normalization, obj.db.metric
        center, units_to_m = R @ norm.center + t, 1.0
        if est.config.use_depth and frame.depth is not None:
            slid = slide_to_depth(frame, detection, center, norm.scale, metric, est.config.surface_to_center_radii)
            if slid is not None:
                (center, units_to_m), metric = slid, True
        self.warn_scale(obj.db.name, metric)
        return R, center - R @ (norm.center * units_to_m), metric

    def propose(self, est: PoseEstimator, frame: Frame, stages: FrameStages, obj: LoadedObject,
                timings: dict) -> Proposal | ObjectPose | None:
        """With depth and a surface: every place's best templates (and the rotation grid's fits),
        for the depth to choose; otherwise the place whose PnP pose has the most inliers (or
        best template)."""
        cfg, name, stage, s = est.config, obj.db.name, obj.parts, STAGE_SETTINGS
        segmentation = stages.segmentation() if obj.db.metric else None
        image = stages.once("image", lambda: encode_for_kernels(
            self.patch_backbone, frame.rgb, frame.K, [o.parts.kernels for o in est.objects], s.feature_scales,
            s.detection_depth_range, self._image_runner))
        t0 = time.perf_counter()
        places = stage.places(frame, image, segmentation)
        timings[f"{name}/detect"] = 1000 * (time.perf_counter() - t0)
        t1 = time.perf_counter()
        located = stage.locate(frame, places, cfg.selector_top)
        with_depth = cfg.use_depth and frame.depth is not None
        if obj.surface is not None and with_depth:
            hypotheses = []
            for place in located:
                best = place.found[0].score  # masked patch cosine: comparable across places
                hypotheses += [Hypothesis(p.R, p.t, place.detection, 1.0, best) for p in place.found[:cfg.selector_top]]
                hypotheses += searched_hypotheses(obj.surface, frame, place.detection, place.segment,
                                                  cfg.rotation_search, 1.0, best)
            timings[f"{name}/retrieve"] = 1000 * (time.perf_counter() - t1)
            return Proposal(hypotheses, s.similarity_power, gate_on_contrast=True)
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
        return Proposal([Hypothesis(pose.R, pose.t, place.detection, 1.0, 1.0)], gate_on_contrast=True)

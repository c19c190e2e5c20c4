"""Places and rotations of a model-free object from templates of its reference photos.

Why: the model-free detector and viewpoint selector were trained from scratch on 2 CPU cores and
do not transfer to real images (real YCB-V validation, references from the scene's own frames:
RGB-D ADD-S-0.1d 26.9 %, the estimate mostly on a neighbouring object). Known-model mode gets
its places and rotations from frozen pretrained patch features instead; here the same stages run
on templates made from the reference photos (objects/reference_templates.py):

- places: the templates correlated over the whole image (``ObjectKernels``), with depth kept
  only where something stands off the table at the distance the size says, plus the depth
  segments that fit the object, ordered by the correlation there;
- rotations: at each place the crop is recentred and the best templates retrieved
  (``TemplateMatcher``); without depth, PnP on their patch matches gives a full pose when the
  references had depth.

The stage's settings are the known-model defaults (``KnownModelConfig``): one measured set of
numbers for one stage, whichever mode calls it.
"""
from __future__ import annotations

from dataclasses import dataclass

from sixd_pose_ros.models.detector import Detection
from sixd_pose_ros.objects.model_free_database import ModelFreeDatabase
from sixd_pose_ros.objects.reference_templates import load_or_build_reference_templates
from sixd_pose_ros.pipeline.depth_proposals import DepthSegmentation, segment_proposals
from sixd_pose_ros.pipeline.feature_detection import ImageFeatures, ObjectKernels
from sixd_pose_ros.pipeline.settings import KnownModelConfig
from sixd_pose_ros.pipeline.template_matching import QueryCrop, TemplateMatcher, TemplatePose
from sixd_pose_ros.pipeline.types import Frame

__all__ = ["STAGE_SETTINGS", "Located", "ReferenceTemplateStage"]

#: The template stage's settings: known-model mode's defaults, where they were measured.
STAGE_SETTINGS = KnownModelConfig()


@dataclass
class Located:
    """One place after recentring: its detection (box, score), crop, depth segment and best templates."""

    detection: Detection
    query: QueryCrop
    segment: object | None
    found: list[TemplatePose]


class ReferenceTemplateStage:
    """One model-free object's reference templates, as retrieval bank and correlation kernels."""

    def __init__(self, db: ModelFreeDatabase, backbone, runner=None) -> None:
        templates = load_or_build_reference_templates(db.path, db.references, backbone,
                                                      STAGE_SETTINGS.template_grid[1])
        self.db = db
        self.matcher = TemplateMatcher(templates, db.normalization, backbone, runner)
        self.kernels = ObjectKernels(templates, db.normalization.scale)
        self.has_points = bool((templates.patch_depth > 0).any())  # reference depth: PnP can lift matches

    def places(self, frame: Frame, image: ImageFeatures, segmentation: DepthSegmentation | None) -> list:
        """``(detection, centre, segment)``: correlation peaks (best first), then the depth
        segments that fit the object (by the correlation at their place). Centres in the
        database's unit (meters when it is metric: the kernels' radius is the normalization's)."""
        s, K, kernels = STAGE_SETTINGS, frame.K, self.kernels
        maps = kernels.score_maps(image, K, s.detection_depth_range)
        n = s.hypotheses[0] if segmentation is not None else s.template_places
        places = kernels.peak_places(maps, K, n, frame.depth, segmentation)
        if segmentation is not None and self.db.metric:
            props = segment_proposals(segmentation, self.db.diameter, kernels.radius, K,
                                      size_range=(0.15, s.max_segment_extent), split_up_to=s.split_segments_up_to)
            places += kernels.segment_places(maps, K, props, s.template_places)
        return places

    def locate(self, frame: Frame, places: list, k: int) -> list[Located]:
        """Each place's crop recentred where the templates match best, and its ``k`` best templates."""
        s = STAGE_SETTINGS
        queries = self.matcher.locate(frame.rgb, frame.K, [c for _, c, _ in places], s.recentre_rounds)
        return [Located(det, q, segment, self.matcher.retrieve(q, k=max(k, s.pnp_templates)))
                for (det, _, segment), q in zip(places, queries) if q is not None]

    def pnp(self, frame: Frame, place: Located) -> TemplatePose | None:
        """PnP on the patch matches of the place's best templates (None without reference depth
        or consensus)."""
        if not self.has_points:
            return None
        return self.matcher.pnp(place.query, frame.K, [p.template for p in place.found[:STAGE_SETTINGS.pnp_templates]])


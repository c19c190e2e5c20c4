"""The pretrained backbone's graphs an estimator runs, one place for every mode and for
``sixd-pose build-engines`` (which builds the same ones ahead of time)."""
from __future__ import annotations

from sixd_pose_ros.engines.export import NetworkSpec, patch_backbone_spec
from sixd_pose_ros.objects.templates import TEMPLATE_DEFAULTS
from sixd_pose_ros.pipeline.feature_detection import image_backbone_spec, image_scales
from sixd_pose_ros.pipeline.feature_refinement import crop_pair_spec
from sixd_pose_ros.pipeline.settings import KnownModelConfig

__all__ = ["pretrained_feature_specs"]


def pretrained_feature_specs(backbone, config: KnownModelConfig) -> dict[str, NetworkSpec]:
    """The pretrained backbone's graphs an estimator with ``config`` runs: template-sized crops
    (``templates``), the whole image at the feature scales (``image``, with feature detection),
    and the refiner's and verifier's crop pairs (``crops``); one ONNX graph with a TensorRT
    profile each."""
    specs = {"templates": patch_backbone_spec(backbone, TEMPLATE_DEFAULTS[2]),
             "crops": crop_pair_spec(backbone, (config.feature_refine_size, config.verify_size),
                                     config.feature_refine_size)}
    if config.feature_detection != "off":
        specs["image"] = image_backbone_spec(backbone, config.image_size, image_scales(*config.feature_scales))
    return specs

"""Estimator settings: the one place their defaults are written.

Each default is written once, here: the node's parameter table (ros/params.py, and through it
config/sixd_pose_node.yaml, which test/test_ros_params.py checks against the table), the CLI's
options and help, and evaluation read them from these classes, and :func:`estimator_config` is
the one mapping from named settings to a mode's config (the node's loader and evaluation both
call it). What both modes share lives in :class:`EstimatorSettings`; each mode's config adds its
own settings.

Frozen: a running estimator's settings change by replacing the whole config
(``dataclasses.replace``), never by writing into one another object may share (a default
instance is shared by every estimator built without a config).

Plain Python, no torch, cv2 or ROS: the node's parameter table and the CLI's parser import this
module to build, and stay quick to import.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from sixd_pose_ros.pipeline.tracking import TrackerConfig

__all__ = ["EstimatorSettings", "KnownModelConfig", "ModelFreeConfig", "FEATURE_DETECTION_MODES", "CONFIGS",
           "estimator_config"]

#: Where places come from with templates (KnownModelConfig.feature_detection).
FEATURE_DETECTION_MODES = ("without_depth", "always", "off")


def _template_grid() -> tuple[int, int]:
    """TEMPLATE_DEFAULTS' grid, imported when a config is made: objects/templates.py brings cv2
    and trimesh, which importing this module must not."""
    from sixd_pose_ros.objects.templates import TEMPLATE_DEFAULTS

    return TEMPLATE_DEFAULTS[:2]


@dataclass(frozen=True)
class EstimatorSettings:
    """The settings both modes have, with their defaults."""

    # Below it the object is reported absent (no output).
    min_detection_score: float = 0.3
    # 0 until a trained refiner improves poses (the shipped CPU one does not: weights/refiner_card.md).
    refine_iterations: int = 0
    use_depth: bool = True
    crop_size: int = 128
    # The detector sees object sizes of ref_size * 2^-1 .. 2^0.5 (60..170 px); running it on the
    # image at these scales as well extends that to near objects (x0.5: up to 340 px).
    detection_scales: tuple[float, ...] = (1.0, 0.5)
    # With depth: up to this many segments of the depth image that stand off the table and fit
    # the object's size (pipeline/depth_proposals.py) join the detector's peaks as places to try,
    # the ones whose crops look most like the object first (known_model: codebook or template
    # similarity; model_free: the selector's score, metric references only). 0 = off: the
    # detector's peaks only. 8 (was 4): on the real validation frames the pudding box's own part
    # of the segment it shares with three neighbours ranks 5th-8th by template similarity (with
    # the split into more parts and the second choices, see KnownModelConfig.place_retries).
    depth_proposals: int = 8
    # With depth: rotations of a coarse grid (pipeline/rotation_search.py) that best fit each
    # depth segment, tried besides the codebook's hits or the selector's viewpoints (model_free:
    # objects with a fused surface). 0 = off.
    rotation_search: int = 6
    # Hypotheses beyond this many are pre-ranked by a batched projective fit to the depth (no
    # render, no ICP), and only the best go to depth alignment. 0 = align them all.
    align_top: int = 16
    # The search's grid: (icosphere subdivisions, in-plane angles); (1, 12) = 504 rotations.
    rotation_search_grid: tuple[int, int] = (1, 12)
    # Off unless asked (each frame on its own, as evaluation over single frames wants); the node
    # turns it on (parameter tracking.enabled, default TrackerConfig.enabled). See pipeline/tracking.py.
    tracking: TrackerConfig = field(default_factory=lambda: TrackerConfig(enabled=False))
    # Inference backend: auto, tensorrt, onnxruntime or torch (engines/backends.py). auto picks
    # TensorRT on a GPU and ONNX Runtime on the CPU: the faster one, measured side by side with
    # `sixd-pose bench` (numbers in engines/backends.py).
    backend: str = "auto"
    precision: str = "fp16"  # TensorRT only: fp16 or fp32
    # The image size TensorRT engines are tuned for (other sizes within the detection pyramid's
    # range run too); ONNX Runtime and torch take any size.
    image_size: tuple[int, int] = (640, 480)


@dataclass(frozen=True)
class KnownModelConfig(EstimatorSettings):
    """Settings of the known-model estimator (pipeline/known_model.py)."""

    # With depth: hypotheses tried per object, (detector peaks, codebook hits per place); each is
    # aligned to the depth and ranked (see similarity_power). RGB-only frames have no such check
    # and use the best peak's best hit. (1, 1) with depth_proposals = 0 = one hypothesis.
    hypotheses: tuple[int, int] = (3, 3)
    # Of the align_top hypotheses, at most this many rotations of one place while other places
    # have some (depth_ranking._best_per_place); 0 = no limit. Off: on every 4th real validation
    # frame, 3 with depth_proposals 8 measured ADD-S-0.1d 75.6 % and ADD(-S) 40.0 % against
    # 75.6 % and 42.2 % without (the pudding box's place then reaches alignment, but ranks last).
    align_per_place: int = 0
    # Hypotheses rank by agreement x explained x similarity**this (the place's best codebook or
    # template similarity: how much the crop there looks like the object); the projective
    # pre-ranking (align_top) uses the same power. 0 = depth alone decides. 4 with templates,
    # chosen on the real YCB-V validation frames (scene 2, first 5 frames, RGB-D ADD-S-0.1d 60 %
    # at 2, 70 % at 4): on real clutter, depth agreement alone also fits the model to other
    # objects and to the desk.
    similarity_power: float = 4.0
    # Depth segments up to this many diameters across are tried (touching objects merge into
    # one segment larger than either).
    max_segment_extent: float = 1.3
    # Segments larger than the object, up to this many diameters, are also split in 2 and 3
    # (k-means) into places: touching objects merge into one segment (depth_proposals.py).
    # Only with templates, whose crops tell the parts apart. 0 = off.
    split_segments_up_to: float = 3.0
    # ... into up to ceil(extent / diameter) + 1 parts, at most this many (3: only 2 and 3).
    # 3: more parts gave the pudding box of the real validation frames a place of its own (every
    # 4th frame, with the second choices: ADD-S-0.1d 77.8 -> 82.2 %; 40 frames: 75.0 %), but on
    # bench-v1 (40 frames) they drew two objects that were right to wrong places, 7 instances.
    split_max_parts: int = 3
    # Rotations from templates of frozen pretrained features (objects/templates.py,
    # pipeline/template_matching.py) instead of the trained codebook, and without depth a pose
    # from patch correspondences + PnP. False = the codebook (the CPU-trained autoencoder).
    templates: bool = True
    # Their grid: (icosphere subdivisions of the directions, in-plane angles); see TEMPLATE_DEFAULTS.
    template_grid: tuple[int, int] = field(default_factory=_template_grid)
    # With templates: depth segments (and their parts) cropped and compared per object; the
    # detector's heat orders them, and the templates' similarity picks depth_proposals of them.
    template_places: int = 16
    # Times a template crop is moved to where the templates match best (TemplateMatcher.locate).
    recentre_rounds: int = 2
    # PnP pools the matches of this many best templates of a place.
    pnp_templates: int = 3
    # With templates, where places come from: the templates correlated over the whole image
    # (pipeline/feature_detection.py) always ("always", the default), only on frames without
    # depth and the CPU-trained detector's peaks with depth ("without_depth"), or never ("off").
    # The trained detector gets nothing right on real frames without depth; with depth, on the
    # real validation frames (10 frames, 45 instances, with verify_top) ADD-S-0.1d is 73.3 %
    # either way, and only "always" finds the watering can of the real smoke frame (ADD 0.02 d
    # against 3.2 d). With correlation places the score is the render contrast at the final
    # pose (see contrast_gain), which min_detection_score gates.
    # The image is encoded at scales from feature_scales[0] to [1] (a third of an octave
    # apart); each object uses those at which it stands within detection_depth_range (meters).
    feature_detection: str = "always"
    feature_scales: tuple[float, float] = (0.25, 1.6)
    detection_depth_range: tuple[float, float] = (0.3, 2.0)
    # Without depth: rounds of render -> patch matches -> PnP at the chosen pose
    # (pipeline/feature_refinement.py) at feature_refine_size px crops; 0 = off. Measured on the
    # real validation frames (27 RGB-only instances, places chosen by PnP inliers): ADD-S-0.1d
    # 19 % -> 26 % with 3 rounds, at about 1-2 s per object on 2 CPU cores.
    feature_refine_iterations: int = 3
    feature_refine_size: int = 448
    # With depth and templates: the verify_top best hypotheses after depth ranking are rendered
    # at verify_size px and compared with the image (FeatureRefiner.agreement); the rank times
    # agreement**verify_power chooses. 0 or 1 = off.
    verify_top: int = 6
    verify_power: float = 4.0
    # With depth, for objects whose mesh has colour: the leaders after depth ranking, this many,
    # also turned half a turn about each of their box axes and ranked with them; the verifier
    # then sees both faces of a look-alike (pipeline/half_turns.py, with the numbers). 0 = off.
    flip_leaders: int = 3
    verify_size: int = 224
    # With feature detection: below this template similarity at the best place (mean patch
    # cosine after recentring) the object is reported absent.
    min_template_score: float = 0.0
    # With templates the reported score is 1 - exp(-contrast_gain x the render contrast at the
    # final pose): how much better a render matches the image where the pose puts it than a
    # quarter of the crop beside (FeatureRefiner.contrast), mapped to 0..1 without reaching 1
    # (min_score 1 stays "never"). With min_detection_score 0.3 (the node's min_score) the gain
    # sets the contrast an object needs: 2.1 -> 0.17. Chosen on the real validation frames
    # (`python scripts/absence_calibration.py ../shared/data/real_val/ycbv OUT 4`: every 4th
    # frame, all 9 objects asked in every frame; 34 right poses, 11 wrong, 45 absent objects):
    # the lowest right pose has contrast 0.176, and the demo drill asked for in the cluttered
    # LM-O photo (test/test_absence.py) reaches 0.164 with depth. Kept at 0.17, with the
    # exclusion below: 34 of 34 right, 2 of 11 wrong, 4 of 45 absent (gain 3.0, contrast 0.12:
    # 34, 2, 5). Both margins are thin and chosen on these frames: optimistic for others.
    # Without depth an absent textured object in clutter still reaches 0.3 or more: the refiner
    # has moved it to where it matches best, so RGB-only scores say less.
    contrast_gain: float = 2.1
    # Of poses of different objects that fill the same space (more than this fraction of one's
    # surface inside the other's box), only the best-scoring stays (pipeline/exclusion.py);
    # 0 = off. Same frames, gate off: 35 of 45 absent objects removed, no right pose.
    exclusion_max_inside: float = 0.25
    # In the depth ranking, how much a surface point with something in front of it counts against
    # a pose (1: as much as a point the depth contradicts; DepthAlignment.visible_agreement).
    # 0.3 measured (session 10): real validation, 40 frames, ADD-S-0.1d 71.7 -> 70.6 % (two
    # poses moved under min_score), ADD(-S) 42.2 -> 42.8 %; bench-v1 40 frames ADD(-S) 63.0 %
    # both. No gain: the wood block's near-true hypotheses stay 5-7 cm off after the quick
    # alignment, where occlusion is not what holds them back.
    occlusion_weight: float = 1.0
    # With depth and the exclusion on: an object whose pose collides with a better-scoring one,
    # or is seen through more than seen_through_limit of its surface, chooses again, up to this
    # many times, against the depth without what the kept poses explain, ranking by
    # similarity**retry_similarity_power and penalizing seen-through space
    # (retry_seen_through_penalty, see rank_by_depth); the score gate then comes after these
    # choices (pipeline/scene_interpretation.py). 0 = the exclusion alone, as before.
    place_retries: int = 2
    seen_through_limit: float = 0.15
    retry_similarity_power: float = 1.0
    retry_seen_through_penalty: float = 0.3
    # Last, of the kept poses, the one that agrees least with the depth the others leave
    # unexplained goes while that is below this (PoseEstimator._own_support). 0 = off.
    min_own_support: float = 0.3

    def __post_init__(self) -> None:
        if self.feature_detection not in FEATURE_DETECTION_MODES:
            raise ValueError(f"feature_detection must be one of {', '.join(FEATURE_DETECTION_MODES)}, "
                             f"got {self.feature_detection!r}")


@dataclass(frozen=True)
class ModelFreeConfig(EstimatorSettings):
    """Settings of the model-free estimator (pipeline/model_free.py)."""

    # Depth of the object centre behind the median visible surface, in bounding radii: the
    # visible surface of a convex-ish object lies between 0 and 1 radius in front of the centre.
    surface_to_center_radii: float = 0.5
    # With depth and a fused surface: the selector's best viewpoints (or, with templates, the
    # best templates) tried per place.
    selector_top: int = 3
    # Places and rotations from templates of the reference photos encoded by the frozen
    # pretrained backbone (objects/reference_templates.py, pipeline/model_free_templates.py: the
    # known-model template stage) instead of the CPU-trained detector and selector (False).
    # Real YCB-V validation frames, 8 references from each object's own video, 108 instances
    # (docs/reports/real_val_ycbv/model_free/): RGB-D ADD(-S)-0.1d 17.6 -> 94.4 %, RGB-only
    # ADD-0.1d 0 -> 31.5 %, at about 3x the CPU time per frame (3.9 -> 11.8 s, 3-6 objects).
    templates: bool = True
    # With templates and a fused surface: the render of the verifier (pipeline/estimator.py)
    # choosing among the depth's leaders. Off: the figures above were measured without it.
    verify_top: int = 0
    # With templates and a fused surface the reported score is 1 - exp(-contrast_gain x the
    # render contrast of the fused surface at the final pose), gated by min_detection_score, as
    # in known-model mode (KnownModelConfig.contrast_gain): at min_score 0.3, 1.3 asks for
    # contrast 0.274. Chosen on the real validation frames, 8 references from each object's own
    # video (`python scripts/absence_calibration.py ../shared/data/real_val/ycbv OUT 4 --mode
    # model_free`; docs/reports/real_val_ycbv/model_free/): with depth the absent objects reach
    # at most 0.252 (look-alikes: the pudding box on the gelatin box), and all right poses but
    # one have 0.346 or more (the large marker once 0.191); RGB-only absent objects reach 0.30.
    # One more case: the demo drill's surface fused from rendered references, asked for in the
    # real LM-O smoke photo where it is not, reaches 0.236 with depth (0.185 without), and 0.494
    # once rendered into it. The fused surface is textured from the references, near-copies of
    # these frames, so right poses score higher here than with references from a real sweep;
    # the threshold sits near the absent side for that reason. Known-model's 2.1 (0.17) would
    # keep 16 of 45 absent objects here. With references rendered around the mesh (bench-v1,
    # 8 frames, 20 objects asked for) absent objects stay alike (90th percentile 0.225) but right
    # poses fall (median 0.37): the default keeps 12 of 19 right, 6 of 132 absent.
    contrast_gain: float = 1.3
    # Of poses of different objects that fill the same space, only the best-scoring stays
    # (pipeline/exclusion.py, shapes from the fused surfaces); 0 = off. Same frames, gate off:
    # 27 of 45 absent objects removed with depth, no right pose.
    exclusion_max_inside: float = 0.25


#: The config class of each mode.
CONFIGS: dict[str, type[EstimatorSettings]] = {"known_model": KnownModelConfig, "model_free": ModelFreeConfig}


def estimator_config(mode: str, **settings: Any) -> EstimatorSettings:
    """The config of ``mode`` with ``settings`` (config field names) over its defaults.

    The one mapping from named settings to a config, for the node's loader and for evaluation:
    a setting given as None keeps its default, and a setting only the other mode has is ignored
    (a model-free run told ``feature_detection`` has none), so callers pass what they have
    without knowing which mode takes what.

    Raises:
        ValueError: an unknown mode, or a setting no mode has (a typo).
    """
    if mode not in CONFIGS:
        raise ValueError(f"{mode!r} is not a mode; use one of {', '.join(CONFIGS)}")
    names = {f.name for f in fields(CONFIGS[mode])}
    unknown = sorted(set(settings) - {f.name for cls in CONFIGS.values() for f in fields(cls)})
    if unknown:
        raise ValueError(f"no estimator has the settings {unknown}")
    return CONFIGS[mode](**{k: v for k, v in settings.items() if v is not None and k in names})

"""Model-free estimator: detector -> viewpoint selector -> volume refiner -> depth (Gen6D's pipeline).

The estimator is pipeline/estimator.py's PoseEstimator with the model-free proposer
(pipeline/model_free_proposer.py, or with ``templates=False`` pipeline/model_free_selector.py);
this module builds it from object databases and weights.

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
matches gives the pose. The reported score is then, for a database with a fused surface, the
render contrast of that surface at the final pose (``ModelFreeConfig.contrast_gain``), which
``min_detection_score`` gates, and of two objects put in one place only the better stays
(``exclusion_max_inside``); a database without a surface reports the correlation of the
templates at the chosen place, ungated.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sixd_pose_ros.engines.backends import InferenceBackend
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_detector, load_refiner, load_selector
from sixd_pose_ros.objects.model_free_database import ModelFreeDatabase, load_model_free_database
from sixd_pose_ros.pipeline.estimator import PoseEstimator
from sixd_pose_ros.pipeline.model_free_proposer import ModelFreeProposer
from sixd_pose_ros.pipeline.model_free_selector import SelectorProposer
from sixd_pose_ros.pipeline.settings import ModelFreeConfig  # noqa: F401 - re-exported


class ModelFreeEstimator(PoseEstimator):
    """PoseEstimator (pipeline/estimator.py) for objects given as posed reference photos."""

    def __init__(self, databases: Sequence[ModelFreeDatabase], detector, selector, refiner=None,
                 config: ModelFreeConfig = ModelFreeConfig(),
                 backend: InferenceBackend | str | None = None) -> None:
        proposer = ModelFreeProposer() if config.templates else SelectorProposer(detector, selector)
        super().__init__(proposer, databases, refiner, config, backend)

    @classmethod
    def from_paths(cls, object_dirs: Sequence[str | Path], weights: str | Path = WEIGHTS_DIR,
                   config: ModelFreeConfig = ModelFreeConfig(), use_refiner: bool = True,
                   backend: InferenceBackend | str | None = None) -> "ModelFreeEstimator":
        weights = Path(weights)
        dbs = [load_model_free_database(p) for p in object_dirs]
        refiner = load_refiner(weights / "refiner.pt") if use_refiner else None
        return cls(dbs, load_detector(weights / "detector.pt"), load_selector(weights / "selector.pt"),
                   refiner, config, backend)

"""Known-model estimator: places -> rotations -> ranking -> alignment, for objects given as CAD meshes.

The estimator is pipeline/estimator.py's PoseEstimator with the known-model proposer
(pipeline/known_model_proposer.py); this module builds it from object databases and weights.

With the defaults (templates of frozen pretrained features, ``feature_detection`` "always"):
the templates correlated over the whole image give places (with depth, segments of the depth
image join them); at each place the templates give rotations (without depth, PnP of their patch
matches gives a pose); with depth the hypotheses are ranked by the depth, the leaders are checked
by render-and-compare and the winner is aligned to the depth; without depth render-and-match PnP
refines it. The reported score is the render contrast at the final pose, which
``min_detection_score`` gates (an object that does not stand out where it was put is reported
absent), and of two objects that would share one place only the better stays
(pipeline/exclusion.py); with depth the other chooses again against the depth the kept poses
leave unexplained, and a pose the camera sees through waits for the others
(pipeline/scene_interpretation.py). ``templates=False`` or ``feature_detection="off"`` bring
back the CPU-trained codebook and detector, for comparison.

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

from collections.abc import Sequence
from pathlib import Path

from sixd_pose_ros.engines.backends import InferenceBackend
from sixd_pose_ros.models.checkpoint import (
    WEIGHTS_DIR,
    load_autoencoder,
    load_detector,
    load_refiner,
    weights_identity,
)
from sixd_pose_ros.objects.database import ObjectDatabase, load_object_database
from sixd_pose_ros.pipeline.estimator import PoseEstimator
from sixd_pose_ros.pipeline.feature_specs import pretrained_feature_specs  # noqa: F401 - re-exported
from sixd_pose_ros.pipeline.known_model_proposer import KnownModelProposer
from sixd_pose_ros.pipeline.settings import FEATURE_DETECTION_MODES, KnownModelConfig  # noqa: F401 - re-exported


class KnownModelEstimator(PoseEstimator):
    """PoseEstimator (pipeline/estimator.py) for objects given as CAD meshes (object databases)."""

    def __init__(self, databases: Sequence[ObjectDatabase], detector, autoencoder, refiner=None,
                 config: KnownModelConfig = KnownModelConfig(),
                 backend: InferenceBackend | str | None = None) -> None:
        """``backend``: an InferenceBackend (shared, e.g. by a benchmark), a backend name, or None
        for ``config.backend``. The torch modules are moved to the backend's device."""
        super().__init__(KnownModelProposer(detector, autoencoder), databases, refiner, config, backend)

    @classmethod
    def from_paths(cls, object_dirs: Sequence[str | Path], weights: str | Path = WEIGHTS_DIR,
                   config: KnownModelConfig = KnownModelConfig(), use_refiner: bool = True,
                   backend: InferenceBackend | str | None = None) -> "KnownModelEstimator":
        weights = Path(weights)
        # The codebook's encoder must match only when the codebook is what gives rotations.
        expected = {} if config.templates else {"encoder": weights_identity(weights / "autoencoder.pt")}
        dbs = [load_object_database(p, expected_weights=expected) for p in object_dirs]
        refiner = load_refiner(weights / "refiner.pt") if use_refiner else None
        return cls(dbs, load_detector(weights / "detector.pt"), load_autoencoder(weights / "autoencoder.pt"),
                   refiner, config, backend)

"""Builds the estimator the parameters ask for, plus what the outputs need to know per object.

:data:`SETTINGS_OF_PARAMS` and :func:`estimator_settings` are the one mapping from the node's
parameters to estimator settings (pipeline/settings.py): the loader builds the config with them,
and the node applies live changes and tracking through them.
"""
from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.pipeline.object_info import ObjectInfo  # noqa: F401 - re-exported
from sixd_pose_ros.pipeline.settings import EstimatorSettings, estimator_config
from sixd_pose_ros.pipeline.tracking import TrackerConfig
from sixd_pose_ros.ros.params import NodeParams, ParameterError

__all__ = ["ObjectInfo", "EstimatorLoadError", "SETTINGS_OF_PARAMS", "estimator_settings", "tracker_config",
           "with_live_settings", "load_estimator"]

#: NodeParams field -> the estimator setting it gives (a setting the mode lacks is ignored).
SETTINGS_OF_PARAMS = {"min_score": "min_detection_score", "refine_iterations": "refine_iterations",
                      "use_depth": "use_depth", "depth_proposals": "depth_proposals",
                      "rotation_search": "rotation_search", "feature_detection": "feature_detection",
                      "exclusion_max_inside": "exclusion_max_inside", "place_retries": "place_retries",
                      "precision": "precision"}


class EstimatorLoadError(SixdPoseError):
    """The estimator cannot be built (weights, object databases); the message names the fix."""


def tracker_config(params: NodeParams) -> TrackerConfig:
    """The tracking.* parameters as tracker settings; a track starts at 0.1 more health than
    keeps it going (hysteresis: a pose barely explained does not start a track it loses at once)."""
    return TrackerConfig(enabled=params.tracking_enabled, min_health=params.tracking_min_health,
                         min_start_health=min(1.0, params.tracking_min_health + 0.1),
                         max_lost_frames=params.tracking_max_lost_frames)


def estimator_settings(params: NodeParams) -> dict[str, Any]:
    """``{setting: value}`` of the estimator the parameters ask for (pipeline/settings.py names);
    settings no parameter names keep their defaults."""
    settings = {setting: getattr(params, name) for name, setting in SETTINGS_OF_PARAMS.items()}
    return {**settings, "tracking": tracker_config(params)}


def with_live_settings(config: EstimatorSettings, params: NodeParams, changed: set[str]) -> EstimatorSettings:
    """``config`` with the settings of the changed NodeParams fields ``changed`` (those the
    config has): a live parameter reaches a running estimator at its next frame."""
    has = {f.name for f in fields(config)}
    settings = estimator_settings(params)
    update = {SETTINGS_OF_PARAMS[n]: settings[SETTINGS_OF_PARAMS[n]] for n in changed
              if n in SETTINGS_OF_PARAMS and SETTINGS_OF_PARAMS[n] in has}
    return replace(config, **update) if update else config


def load_estimator(params: NodeParams):
    """(estimator, [ObjectInfo]) for validated parameters.

    Raises:
        ParameterError: a mode that cannot run.
        EstimatorLoadError: weights or object databases that cannot be loaded (message names the fix).
    """
    if params.mode not in ("known_model", "model_free"):
        raise ParameterError(f"mode: {params.mode!r} is not a mode; use mode:=known_model or model_free")
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR
    from sixd_pose_ros.pipeline.estimator import estimator_class

    weights = Path(params.weights_dir).expanduser() if params.weights_dir else WEIGHTS_DIR
    second = "selector.pt" if params.mode == "model_free" else "autoencoder.pt"
    needed = ["detector.pt", second] + (["refiner.pt"] if params.refine_iterations > 0 else [])
    missing = [n for n in needed if not (weights / n).is_file()]
    if missing:
        raise EstimatorLoadError(f"weights {missing} not found in {weights}: train them (`sixd-pose train "
                                 f"detector|refiner|autoencoder|selector`) and pass weights_dir:=FOLDER, or install "
                                 f"a package release that ships them")
    objects = [Path(o).expanduser() for o in params.objects]
    try:
        config = estimator_config(params.mode, **estimator_settings(params))
        est = estimator_class(params.mode).from_paths(objects, weights, config,
                                                      use_refiner=params.refine_iterations > 0, backend=params.backend)
    except SixdPoseError as exc:
        raise EstimatorLoadError(str(exc)) from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise EstimatorLoadError(f"cannot load the estimator ({type(exc).__name__}: {exc}); rebuild the object "
                                 f"databases with `sixd-pose build-object ... --overwrite` for these weights") from exc
    return est, est.object_infos()

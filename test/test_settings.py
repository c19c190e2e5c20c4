"""Estimator settings: one mapping from named settings to a mode's config, used by evaluation
and the node alike, and the CLI's defaults read from the settings rather than written again."""
from __future__ import annotations

import dataclasses

import pytest

from sixd_pose_ros.pipeline.settings import EstimatorSettings, KnownModelConfig, ModelFreeConfig, estimator_config
from sixd_pose_ros.pipeline.tracking import TrackerConfig


def test_none_keeps_the_default_and_the_other_modes_settings_are_ignored():
    assert estimator_config("known_model") == KnownModelConfig()
    assert estimator_config("model_free", depth_proposals=None) == ModelFreeConfig()
    config = estimator_config("model_free", depth_proposals=2, feature_detection="off", hypotheses=(1, 1))
    assert config == ModelFreeConfig(depth_proposals=2)
    config = estimator_config("known_model", feature_detection="off", selector_top=1)
    assert config == KnownModelConfig(feature_detection="off")


def test_a_setting_no_mode_has_or_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="depth_proposal"):
        estimator_config("known_model", depth_proposal=2)
    with pytest.raises(ValueError, match="not a mode"):
        estimator_config("category_level")


def test_configs_are_frozen_and_share_the_common_defaults():
    config = KnownModelConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.min_detection_score = 1.0  # a default instance is shared by every estimator built without one
    common = {f.name for f in dataclasses.fields(EstimatorSettings)}
    for name in common - {"tracking"}:
        assert getattr(KnownModelConfig(), name) == getattr(ModelFreeConfig(), name) == getattr(
            EstimatorSettings(), name), name
    assert KnownModelConfig().tracking == TrackerConfig(enabled=False)  # evaluation: each frame on its own


def test_evaluation_builds_its_config_through_the_same_mapping():
    from sixd_pose_ros.evaluation.eval_run import EvalOptions, ours_config

    assert ours_config(EvalOptions()) == KnownModelConfig()
    assert ours_config(EvalOptions(mode="model_free", use_depth=False)) == ModelFreeConfig(use_depth=False)
    options = EvalOptions(hypotheses=[2, 2], depth_proposals=0, templates=False, feature_detection="off",
                          feature_refine_iterations=1, refine_iterations=2)
    assert ours_config(options) == KnownModelConfig(hypotheses=(2, 2), depth_proposals=0, templates=False,
                                                    feature_detection="off", feature_refine_iterations=1,
                                                    refine_iterations=2)
    mf = ours_config(dataclasses.replace(options, mode="model_free"))  # known-model-only options are ignored
    assert mf == ModelFreeConfig(depth_proposals=0, refine_iterations=2, templates=False)  # both modes have templates


def test_cli_defaults_come_from_the_settings():
    from sixd_pose_ros.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["eval", "data", "--out", "report"])
    assert args.backend == EstimatorSettings.backend
    assert args.depth_proposals is None and args.feature_detection is None  # None: the estimator's default
    bench = parser.parse_args(["bench"])
    assert bench.precision == EstimatorSettings.precision and tuple(bench.image) == EstimatorSettings.image_size
    eval_parser = parser._subparsers._group_actions[0].choices["eval"]
    text = eval_parser.format_help().replace("\n", " ")
    assert f"(default {EstimatorSettings.depth_proposals}; 0 = off)" in " ".join(text.split())
    assert f"default {KnownModelConfig.feature_detection}" in " ".join(text.split())

"""Node parameters: defaults match config/sixd_pose_node.yaml, every bad value gets a message
naming the fix, and declaring them on a real node survives values of the wrong type."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
from rclpy.parameter import Parameter  # noqa: E402

from sixd_pose_ros.ros.params import PARAMETERS, ParameterError, declare_parameters, read_parameters, \
    validate_params  # noqa: E402

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(tmp_path):
    folder = tmp_path / "objects" / "drill"
    folder.mkdir(parents=True)
    (folder / "object.json").write_text(json.dumps({"name": "drill"}))
    return str(folder)


def _problems(**values) -> str:
    with pytest.raises(ParameterError) as err:
        validate_params(values)
    return str(err.value)


def test_defaults_with_one_object(db):
    p = validate_params({"objects": [db]})
    assert p.mode == "known_model" and p.objects == (db,) and p.weights_dir == ""
    assert p.image_transport == "raw" and p.output_frame == "" and p.camera_frame == ""
    assert p.tf_prefix == "sixd_" and p.min_score == 0.3 and p.refine_iterations == 0 and p.use_depth
    assert p.depth_proposals == 8 and p.rotation_search == 6
    assert p.slop == 0.05 and p.queue_size == 10 and p.max_rate_hz == 0.0
    assert p.tracking_enabled and p.tracking_min_health == 0.5 and p.tracking_max_lost_frames == 2
    assert p.feature_detection == "always" and p.exclusion_max_inside == 0.25


@pytest.mark.parametrize("mode", ["known_model", "model_free"])
def test_the_nodes_defaults_reach_the_estimator_unchanged(db, mode):
    """The parameters' defaults are the estimator's (pipeline/settings.py): default parameters
    build the mode's default config, but for tracking, which the node turns on (TrackerConfig's
    defaults: a track starts at 0.1 more health than keeps it)."""
    from sixd_pose_ros.pipeline.settings import CONFIGS, estimator_config
    from sixd_pose_ros.pipeline.tracking import TrackerConfig
    from sixd_pose_ros.ros.estimator_loader import estimator_settings

    config = estimator_config(mode, **estimator_settings(validate_params({"objects": [db], "mode": mode})))
    assert config == replace(CONFIGS[mode](), tracking=TrackerConfig())


def test_second_choices_are_a_known_model_parameter(db):
    """place_retries reaches the known-model config; model-free mode, never measured with second
    choices, has no such setting and ignores it."""
    from sixd_pose_ros.pipeline.settings import ModelFreeConfig, estimator_config
    from sixd_pose_ros.ros.estimator_loader import estimator_settings

    for mode in ("known_model", "model_free"):
        config = estimator_config(mode, **estimator_settings(validate_params({"objects": [db], "mode": mode,
                                                                             "place_retries": 0})))
        assert getattr(config, "place_retries", None) == (0 if mode == "known_model" else None)
    assert not hasattr(ModelFreeConfig(), "place_retries")


def test_live_settings_reach_the_config_that_has_them(db):
    from sixd_pose_ros.pipeline.settings import KnownModelConfig, ModelFreeConfig
    from sixd_pose_ros.ros.estimator_loader import with_live_settings

    p = validate_params({"objects": [db], "min_score": 0.6, "exclusion_max_inside": 0.0, "depth_proposals": 1})
    changed = {"min_score", "exclusion_max_inside", "slop"}
    assert with_live_settings(KnownModelConfig(), p, changed) == KnownModelConfig(min_detection_score=0.6,
                                                                                  exclusion_max_inside=0.0)
    assert with_live_settings(ModelFreeConfig(), p, changed) == ModelFreeConfig(min_detection_score=0.6,
                                                                                exclusion_max_inside=0.0)
    assert with_live_settings(ModelFreeConfig(), p, {"slop"}) == ModelFreeConfig()


def test_lenient_where_the_meaning_is_clear(db):
    p = validate_params({"objects": db, "min_score": 1, "refine_iterations": 2.0, "use_depth": "false"})
    assert p.objects == (db,) and p.min_score == 1.0 and isinstance(p.min_score, float)
    assert p.refine_iterations == 2 and p.use_depth is False


@pytest.mark.parametrize("values, expected", [
    ({"mode": "magic"}, "mode: 'magic' is not a mode; use mode:=known_model"),
    ({"backend": "cuda"}, "backend: 'cuda' is not one of auto, tensorrt, onnxruntime, torch"),
    ({"precision": "int4"}, "precision: 'int4' must be fp16 or fp32"),
    ({"min_score": 1.5}, "min_score: 1.5 is out of range [0.0, 1.0]"),
    ({"min_score": "high"}, "min_score: 'high' is not a number"),
    ({"refine_iterations": -1}, "refine_iterations: -1 must be >= 0"),
    ({"depth_proposals": -2}, "depth_proposals: -2 must be >= 0"),
    ({"rotation_search": "many"}, "rotation_search: 'many' is not an integer"),
    ({"slop": 0.0}, "slop: 0.0 is out of range (0.0, 10.0]"),
    ({"queue_size": 0}, "queue_size: 0 must be >= 1"),
    ({"use_depth": "maybe"}, "use_depth: 'maybe' is not a boolean; use use_depth:=true or use_depth:=false"),
    ({"max_rate_hz": -2.0}, "max_rate_hz: -2.0 is out of range"),
    ({"frames.tf_prefix": "/sixd_"}, "frames.tf_prefix: '/sixd_' must be a string without spaces or a leading '/'"),
    ({"image_transport": "theora"}, "image_transport: 'theora' must be raw or compressed"),
    ({"frames.output_frame": "base link"}, "frames.output_frame: 'base link' must be a frame id without spaces"),
    ({"queue_size": 10**12}, "queue_size: 1000000000000 must be <= 1000"),
    ({"min_scor": 0.9}, "min_scor: not a parameter of this node; did you mean min_score?"),
    ({"topics.image": "color/image_raw"}, "topics.image: removed; camera topics are remapped now: -r image:="),
    ({"tracking.enabled": "yes"}, "tracking.enabled: 'yes' is not a boolean; use tracking.enabled:=true"),
    ({"tracking.min_health": 1.2}, "tracking.min_health: 1.2 is out of range [0.0, 1.0]"),
    ({"tracking.max_lost_frames": 0}, "tracking.max_lost_frames: 0 must be >= 1"),
    ({"feature_detection": "sometimes"}, "feature_detection: 'sometimes' must be one of without_depth, always, off"),
    ({"exclusion_max_inside": 1.5}, "exclusion_max_inside: 1.5 is out of range [0.0, 1.0]"),
    ({"place_retries": -1}, "place_retries: -1 must be >= 0; the default is 2"),
])
def test_each_bad_value_names_its_fix(db, values, expected):
    assert expected in _problems(objects=[db], **values)


def test_object_folders_are_checked(tmp_path, db):
    assert "no object given; build one with `sixd-pose build-object" in _problems()
    assert "no object given" in _problems(objects=[])
    assert f"objects: {tmp_path / 'nope'} is not a folder" in _problems(objects=[str(tmp_path / "nope")])
    assert "has no object.json" in _problems(objects=[str(tmp_path)])
    assert "is not a list of folders" in _problems(objects=[1, 2])
    other = tmp_path / "elsewhere" / "drill"
    other.mkdir(parents=True)
    (other / "object.json").write_text("{}")
    assert "folder names ['drill'] appear twice" in _problems(objects=[db, str(other)])


def test_weights_folder_is_checked(tmp_path, db):
    assert "is not a folder; leave it empty for the shipped weights" in _problems(
        objects=[db], weights_dir=str(tmp_path / "none"))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "detector.pt").write_bytes(b"x")
    text = _problems(objects=[db], weights_dir=str(tmp_path / "w"), refine_iterations=3)
    assert "lacks ['autoencoder.pt', 'refiner.pt']" in text
    text = _problems(objects=[db], weights_dir=str(tmp_path / "w"), refine_iterations=0)
    assert "lacks ['autoencoder.pt']" in text


def test_all_problems_are_reported_at_once(db):
    text = _problems(objects=[db], min_score=2.0, slop=-1.0, queue_size=0)
    assert text.count("\n") == 3 and "min_score" in text and "slop" in text and "queue_size" in text


def test_each_problem_is_filed_under_its_parameter(db):
    """The node answers a refused ``ros2 param set`` with the lines of the parameters set, picked
    by name from the error, not by reading its message."""
    with pytest.raises(ParameterError) as err:
        validate_params({"objects": [db], "min_score": "high", "slop": 0.0})
    exc = err.value
    assert [name for name, _ in exc.problems] == ["min_score", "slop"]
    assert exc.lines_for({"slop", "warn_period"}) == ["slop: 0.0 is out of range (0.0, 10.0]; the default is 0.05"]
    assert exc.lines_for(["queue_size"]) == []
    assert str(exc) == "invalid parameters:\n  " + "\n  ".join(line for _, line in exc.problems)
    with pytest.raises(ParameterError) as err:
        validate_params({"objects": [db], "min_scroe": 0.5})
    assert err.value.lines_for(["min_scroe"]) == ["min_scroe: not a parameter of this node; did you mean min_score?"]


def test_config_file_documents_exactly_the_defaults():
    data = yaml.safe_load((ROOT / "config" / "sixd_pose_node.yaml").read_text())
    params = data["/**"]["ros__parameters"]

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    values = dict(flat(params))
    assert set(values) == set(PARAMETERS) - {"objects"}  # objects: no default (files cannot hold [])
    for name, value in values.items():
        assert value == PARAMETERS[name][0], name
    assert "objects:" in (ROOT / "config" / "sixd_pose_node.yaml").read_text()  # documented, commented


def test_declared_on_a_node_wrong_types_reach_validation():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node("params_probe", context=ctx, parameter_overrides=[
            Parameter("objects", value="/only/one/folder"), Parameter("min_score", value=1),
            Parameter("slop", value="fast")])
        declare_parameters(node)
        values = read_parameters(node)
        assert values["objects"] == "/only/one/folder" and values["min_score"] == 1
        assert values["refine_iterations"] == 0  # untouched defaults
        text = str(pytest.raises(ParameterError, validate_params, values).value)
        assert "slop: 'fast' is not a number" in text and "min_score" not in text
        assert node.describe_parameter("min_score").description.startswith("detections scoring below")
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_a_typo_in_the_params_file_fails_configure_naming_the_closest_name(tmp_path, db):
    from sixd_pose_ros.ros.node import FAILURE, SixdPoseNode

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "min_scor": 0.9, "objects": [db], "topics": {"image": "color/image_raw"}, "use_sim_time": False,
        "tracking": {"max_lost_frame": 3}}}}))
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=["--ros-args", "--params-file", str(params_file)])
    try:
        node = SixdPoseNode(context=ctx, estimator_factory=lambda p: pytest.fail("configure went on"))
        assert node.trigger_configure() == FAILURE
        text = node.configure_error
        assert "min_scor: not a parameter of this node; did you mean min_score?" in text
        assert "tracking.max_lost_frame: not a parameter of this node; did you mean tracking.max_lost_frames?" in text
        assert "topics.image: removed; camera topics are remapped now: -r image:=" in text
        assert "use_sim_time" not in text
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_out_of_range_start_values_reach_configure_with_their_fix(db):
    """A value outside a descriptor's range would make rclpy raise in the constructor; it is
    declared without the range instead, and configure names the fix."""
    from sixd_pose_ros.ros.node import FAILURE, SixdPoseNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = SixdPoseNode(context=ctx, estimator_factory=lambda p: pytest.fail("configure went on"),
                            parameter_overrides=[Parameter("objects", value=[db]), Parameter("queue_size", value=10**12),
                                                 Parameter("min_score", value=1.5)])
        assert node.trigger_configure() == FAILURE
        assert "queue_size: 1000000000000 must be <= 1000" in node.configure_error
        assert "min_score: 1.5 is out of range [0.0, 1.0]" in node.configure_error
        assert node.describe_parameter("queue_size").read_only
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)

"""`sixd-pose train selector`: samples, symmetries, configs, and a seeded run with its model card."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import torch_single_thread

from sixd_pose_ros.cli import main
from sixd_pose_ros.geometry.rotations import geodesic_angle, look_at_rotation
from sixd_pose_ros.models.checkpoint import load_selector, load_weights
from sixd_pose_ros.models.selector import ViewpointSelector, inplane_angle_between
from sixd_pose_ros.training.pose_samples import pose_object, selector_sample
from sixd_pose_ros.training.train_selector import selector_config, visual_symmetries
from sixd_pose_ros.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    with torch_single_thread():
        yield


def test_shipped_configs_load():
    for profile in ("cpu", "gpu"):
        cfg = TrainConfig.from_yaml(ROOT / "config" / f"train_selector_{profile}.yaml")
        assert cfg.model == "selector" and cfg.model_preset == profile and cfg.steps > 0
        assert cfg.extra["eval_refs"] == 64 and cfg.n_refs >= cfg.extra["refs_per_step"]
        assert selector_config(cfg).input_size == (64 if profile == "cpu" else 128)
    cpu = TrainConfig.from_yaml(ROOT / "config" / "train_selector_cpu.yaml")
    assert cpu.threads == 1 and cpu.deterministic


def test_model_overrides_and_bad_preset():
    cfg = TrainConfig(model="selector", model_preset="cpu", extra={"model": {"n_layers": 1}})
    assert selector_config(cfg).n_layers == 1
    with pytest.raises(ValueError, match="cpu or gpu"):
        selector_config(TrainConfig(model="selector", model_preset="big"))


def test_selector_sample_is_an_object_centred_crop():
    obj = pose_object("train", 5, n_refs=8)
    rng = np.random.default_rng(0)
    for _ in range(3):
        s = selector_sample(obj, rng)
        assert s.crop.shape == (128, 128, 3) and s.crop.dtype == np.uint8
        assert np.degrees(geodesic_angle(s.R @ s.R.T, np.eye(3))) < 1e-6
        # The crop camera looks at the detected centre, within the jitter of the true one.
        off_axis = np.degrees(np.arctan2(np.linalg.norm(s.t[:2]), s.t[2]))
        half_angle = np.degrees(np.arcsin(1.0 / np.linalg.norm(s.t)))
        assert off_axis < 0.35 * half_angle
    # Without roll the query is as upright as the references (look-at, object z up).
    s = selector_sample(obj, rng, max_inplane_deg=0.0, max_shift_frac=0.0)
    upright = look_at_rotation(-s.R[2])
    assert abs(np.degrees(inplane_angle_between(s.R, upright))) < 1e-6


def test_selector_sample_with_occluder_differs_only_by_the_occluder():
    obj = pose_object("train", 5, n_refs=8)
    other = pose_object("train", 6, n_refs=8).mesh
    a = selector_sample(obj, np.random.default_rng(7), occluders=[other], occlusion_prob=0.0)
    b = selector_sample(obj, np.random.default_rng(7), occluders=[other], occlusion_prob=1.0)
    np.testing.assert_allclose(a.R, b.R)
    assert not np.array_equal(a.crop, b.crop)


def test_visual_symmetries():
    from sixd_pose_ros.render.procedural import make_object

    kinds = {}
    for i in range(40):
        obj = make_object("train", i)
        kinds.setdefault(obj.visual_symmetry == obj.symmetry and obj.symmetry.startswith("discrete"), i)
        if len(kinds) == 2:
            break
    asym = visual_symmetries("train", kinds[False])
    assert asym.shape == (1, 3, 3) and np.allclose(asym[0], np.eye(3))
    sym = visual_symmetries("train", kinds[True])
    assert len(sym) >= 2
    np.testing.assert_allclose(sym @ np.swapaxes(sym, 1, 2), np.broadcast_to(np.eye(3), sym.shape), atol=1e-9)


@pytest.mark.slow
def test_training_is_reproducible_and_writes_a_model_card(tmp_path):
    cfg = {"model": "selector", "model_preset": "cpu", "steps": 2, "batch_size": 2, "train_objects": 2,
           "n_refs": 12, "eval_objects": 1, "eval_samples": 3, "log_every": 1, "seed": 5, "threads": 1,
           "extra": {"objects_per_step": 1, "refs_per_step": 6, "eval_refs": 12}}
    config = tmp_path / "selector.yaml"
    config.write_text(json.dumps(cfg))
    for run in ("a", "b"):
        main(["train", "selector", "--config", str(config), "--out", str(tmp_path / run), "--no-progress"])
    a, b = load_weights(tmp_path / "a" / "selector.pt"), load_weights(tmp_path / "b" / "selector.pt")
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), f"{key} differs between two runs with one seed"
    card = json.loads((tmp_path / "a" / "selector_card.json").read_text())
    assert card["train_config"]["seed"] == 5 and card["steps"] == 2
    metrics = card["metrics"]
    for key in ("viewpoint_error_median_deg", "viewpoint_within_30deg", "inplane_error_median_deg",
                "rotation_error_median_deg", "nearest_reference_error_median_deg"):
        assert key in metrics
    assert metrics["references"] == 12 and metrics["samples"] == 3
    assert 0.0 <= metrics["nearest_reference_error_median_deg"] <= metrics["viewpoint_error_median_deg"]
    assert "Held-out metrics" in (tmp_path / "a" / "selector_card.md").read_text()
    model = load_selector(tmp_path / "a" / "selector.pt")
    assert isinstance(model, ViewpointSelector) and not model.training
    assert not list(tmp_path.glob("a/.*")), "temporary files left behind"

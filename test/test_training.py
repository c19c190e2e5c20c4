"""Training runs: one command, seeded, reproducible, weights + model card written atomically."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import save_untrained_weights, torch_single_thread

from sixd_pose_ros.cli import main
from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.models.checkpoint import load_autoencoder, load_detector, load_refiner, load_weights
from sixd_pose_ros.models.refiner import VolumeRefiner
from sixd_pose_ros.training.train_refiner import refiner_config
from sixd_pose_ros.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    with torch_single_thread():
        yield


def _tiny_config(tmp_path: Path, model: str, seed: int = 3) -> Path:
    cfg = {"model": model, "model_preset": "cpu", "steps": 2, "batch_size": 2, "train_objects": 3,
           "n_refs": 8, "eval_objects": 1, "eval_samples": 2, "log_every": 1, "seed": seed, "threads": 1,
           "extra": {"objects_per_step": 1, "refs_per_step": 4} if model == "detector" else {}}
    path = tmp_path / f"{model}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def test_shipped_configs_load():
    for model in ("detector", "refiner", "autoencoder", "selector", "shape_block"):
        for profile in ("cpu", "gpu"):
            cfg = TrainConfig.from_yaml(ROOT / "config" / f"train_{model}_{profile}.yaml")
            assert cfg.model == model and cfg.model_preset == profile and cfg.steps > 0


def test_bad_config_names_the_fix(tmp_path):
    with pytest.raises(SixdPoseError, match="config/"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: refiner\nstepz: 3\n")
    with pytest.raises(SixdPoseError, match="stepz"):
        TrainConfig.from_yaml(bad)


@pytest.mark.slow
def test_refiner_training_is_reproducible_and_writes_a_model_card(tmp_path, capsys):
    config = _tiny_config(tmp_path, "refiner")
    for run in ("a", "b"):
        main(["train", "refiner", "--config", str(config), "--out", str(tmp_path / run), "--no-progress"])
    a, b = load_weights(tmp_path / "a" / "refiner.pt"), load_weights(tmp_path / "b" / "refiner.pt")
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), f"{key} differs between two runs with one seed"
    card = json.loads((tmp_path / "a" / "refiner_card.json").read_text())
    assert card["train_config"]["seed"] == 3 and card["steps"] == 2
    assert {"add_0.1d_input", "add_0.1d_iter3"} <= set(card["metrics"])
    assert "Held-out metrics" in (tmp_path / "a" / "refiner_card.md").read_text()
    # The weights load into the model the card describes.
    model = load_refiner(tmp_path / "a" / "refiner.pt")
    assert isinstance(model, VolumeRefiner) and not model.training
    assert model.config == refiner_config(TrainConfig(model="refiner", model_preset="cpu"))
    assert not list(tmp_path.glob("a/.*")), "temporary files left behind"


@pytest.mark.slow
def test_detector_training_runs_and_evaluates(tmp_path):
    config = _tiny_config(tmp_path, "detector")
    main(["train", "detector", "--config", str(config), "--out", str(tmp_path), "--no-progress", "--steps", "1"])
    card = json.loads((tmp_path / "detector_card.json").read_text())
    assert card["steps"] == 1
    for key in ("median_center_error_px", "median_scale_error", "recall_iou_0.5"):
        assert key in card["metrics"]
    assert load_detector(tmp_path / "detector.pt").cfg.stride == 16


def test_missing_weights_name_the_fix(tmp_path):
    with pytest.raises(SixdPoseError, match="sixd-pose train"):
        load_weights(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SixdPoseError, match="corrupt"):
        load_weights(junk)


def test_train_config_mismatch_is_an_error(tmp_path):
    config = _tiny_config(tmp_path, "refiner")
    with pytest.raises(SystemExit) as exc:
        main(["train", "detector", "--config", str(config), "--out", str(tmp_path)])
    assert exc.value.code == 2


@pytest.mark.slow
def test_stage_evaluation_and_benchmark_write_json(tmp_path, capsys):
    from sixd_pose_ros.evaluation.stages import bench_stages, eval_stages
    from sixd_pose_ros.models.checkpoint import save_weights
    from sixd_pose_ros.models.detector import Detector, DetectorConfig

    torch.manual_seed(0)
    save_weights(tmp_path / "detector.pt", Detector(DetectorConfig()), DetectorConfig())
    rcfg = refiner_config(TrainConfig(model="refiner", model_preset="cpu"))
    save_weights(tmp_path / "refiner.pt", VolumeRefiner(rcfg), rcfg)
    report = eval_stages(tmp_path, n_objects=1, n_samples=2, out=tmp_path / "eval.json", progress=False)
    assert json.loads((tmp_path / "eval.json").read_text())["refiner"]["samples"] == 2
    assert 0.0 <= report["detector"]["recall_iou_0.5"] <= 1.0
    assert "| refiner | ADD-0.1d iter3 |" in capsys.readouterr().out
    bench = bench_stages(tmp_path, repeats=1, out=tmp_path / "bench.json")
    for key in ("detector_ms", "refiner_iteration_ms", "refiner_3_iterations_ms"):
        assert bench[key]["median"] > 0


@pytest.mark.slow
def test_same_command_runs_distributed_under_torchrun(tmp_path):
    """`torchrun --nproc_per_node=2 ... train refiner` (gloo on CPU) trains and writes one card."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun not installed")
    config = _tiny_config(tmp_path, "refiner")
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "sixd_pose_ros.cli", "train",
                           "refiner", "--config", str(config), "--out", str(tmp_path / "ddp"), "--no-progress"],
                          capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((tmp_path / "ddp" / "refiner_card.json").read_text())
    assert card["hardware"]["world_size"] == 2


def test_init_from_continues_from_saved_weights(tmp_path):
    from sixd_pose_ros.models.checkpoint import save_weights
    from sixd_pose_ros.training.trainer import maybe_init_from

    rcfg = refiner_config(TrainConfig(model="refiner", model_preset="cpu"))
    torch.manual_seed(1)
    source = VolumeRefiner(rcfg)
    save_weights(tmp_path / "r.pt", source, rcfg)
    torch.manual_seed(2)
    target = VolumeRefiner(rcfg)
    maybe_init_from(target, TrainConfig(model="refiner", init_from=str(tmp_path / "r.pt")))
    for (k, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.slow
def test_shape_block_training_changes_only_b_and_learns_the_pool(tmp_path):
    """B alone is retrained: every encoder and decoder tensor is bit-identical to the input
    autoencoder's, and B's retrieval accuracy on its own training pool rises."""
    from sixd_pose_ros.training.train_shape_block import encode_pool, shape_block_loss

    cfg = {"model": "shape_block", "steps": 40, "batch_size": 16, "lr": 0.003, "train_objects": 2,
           "eval_objects": 1, "eval_samples": 2, "log_every": 10, "seed": 1, "threads": 1,
           "extra": {"crops_per_object": 8, "negatives": 15}}
    config = tmp_path / "shape_block.yaml"
    config.write_text(json.dumps(cfg))
    source = tmp_path / "weights"
    save_untrained_weights(source)
    main(["train", "shape_block", "--config", str(config), "--init-from", str(source / "autoencoder.pt"),
          "--out", str(tmp_path / "out"), "--no-progress"])
    before = load_weights(source / "autoencoder.pt")["state_dict"]
    after = load_weights(tmp_path / "out" / "autoencoder.pt")["state_dict"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("cond_block.") for k in changed)
    card = json.loads((tmp_path / "out" / "autoencoder_card.json").read_text())
    assert "B(refs)/within_30deg" in card["metrics"] and card["train_config"]["model"] == "shape_block"
    # On the pool it trained on (same seed, same crops), the true rotation wins more often.
    import numpy as np

    def pool_accuracy(weights) -> float:
        ae = load_autoencoder(weights)
        pool = encode_pool(ae, 2, 8, np.random.default_rng((1, 0)), "cpu", progress=False)
        from sixd_pose_ros.geometry.rotations import random_rotations
        neg = torch.from_numpy(random_rotations(16 * 15, 5)).float().reshape(16, 15, 3, 3)
        with torch.no_grad():
            return float(shape_block_loss(ae.cond_block, pool["z_o"], pool["z_p"], pool["R"], neg,
                                          pool["symmetries"])["accuracy"])

    assert pool_accuracy(tmp_path / "out" / "autoencoder.pt") > pool_accuracy(source / "autoencoder.pt")

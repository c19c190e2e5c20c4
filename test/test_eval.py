"""`sixd-pose eval`: dataset resolution, mesh units, the report over a real rendered dataset (BOP
and rosbag2 give the same numbers frame by frame), partial data, and bad input."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import trimesh

from sixd_pose_ros.errors import DatasetError
from sixd_pose_ros.evaluation.eval_run import EvalOptions, run_eval
from sixd_pose_ros.evaluation.mesh_units import decide_mesh_unit
from sixd_pose_ros.evaluation.sources import resolve_dataset
from conftest import torch_single_thread

REQUIRED = {"add_0.1d", "adds_0.1d", "add(-s)_0.1d", "prj_5", "rot_err_deg_median", "trans_err_cm_median"}
# Plumbing speed: a tiny codebook and the torch backend (no ONNX export in tests).
FAST = EvalOptions(objects=(1, 2), max_frames=3, codebook_grid=(1, 12), backend="torch", progress=False)


@pytest.fixture(scope="module")
def smoke_dataset(tmp_path_factory) -> Path:
    from sixd_pose_ros.training.synth import get_preset, synthesize

    out = tmp_path_factory.mktemp("eval") / "smoke"
    synthesize(get_preset("smoke"), out, formats=("bop", "rosbag"), progress=False)
    return out


@pytest.fixture(scope="module")
def bop_report(smoke_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "report"
    with torch_single_thread():
        summary = run_eval(smoke_dataset, out, replace(FAST, overlays=1))
    return out, summary


def _strip_timing(summary: dict) -> dict:
    summary = json.loads(json.dumps(summary))
    summary.pop("latency_ms")
    summary["extra"].pop("seconds", None)
    return summary


def test_resolve_dataset_kinds(smoke_dataset, tmp_path):
    root = resolve_dataset(smoke_dataset)
    assert root.kind == "bop_root" and [u.scene_id for u in root.units] == [0, 1]
    assert root.models_dir == smoke_dataset / "models" and 1 in root.models_info
    scene = resolve_dataset(smoke_dataset / "test" / "000001")
    assert scene.kind == "bop_scene" and scene.units[0].scene_id == 1 and scene.models_dir == root.models_dir
    bag = resolve_dataset(smoke_dataset / "bags" / "000000")
    assert bag.kind == "rosbag" and bag.models_dir == root.models_dir
    mcap = next((smoke_dataset / "bags" / "000000").glob("*.mcap"))
    assert resolve_dataset(mcap).kind == "rosbag"
    with pytest.raises(DatasetError, match="neither a BOP dataset root"):
        resolve_dataset(tmp_path)
    with pytest.raises(DatasetError, match="--split"):
        resolve_dataset(smoke_dataset, split="val")
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_dataset(tmp_path / "missing")


def test_mesh_unit_checked_against_models_info(smoke_dataset, tmp_path):
    info = resolve_dataset(smoke_dataset).models_info[1]
    mm = smoke_dataset / "models" / "obj_000001.ply"
    assert decide_mesh_unit(mm, "auto", info) == "mm"
    metres = tmp_path / "obj_000001.ply"
    mesh = trimesh.load(mm, force="mesh", process=False)
    mesh.apply_scale(0.001)
    mesh.export(metres)
    assert decide_mesh_unit(metres, "auto", info) == "m"
    with pytest.raises(DatasetError, match="pass --mesh-unit m"):
        decide_mesh_unit(metres, "mm", info)
    assert decide_mesh_unit(metres, "auto", None) == "m"  # < 2 units across cannot be millimetres
    assert decide_mesh_unit(mm, "auto", None) == "mm"


def test_report_shape_and_files(bop_report, smoke_dataset):
    out, summary = bop_report
    on_disk = json.loads((out / "metrics.json").read_text())
    assert set(on_disk) >= {"mode", "dataset", "n_frames", "objects", "mean", "latency_ms"}
    assert on_disk["mode"] == "known_model" and on_disk["n_frames"] == 3
    gt = json.loads((smoke_dataset / "test" / "000000" / "scene_gt.json").read_text())
    present = {str(g["obj_id"]) for im in sorted(gt, key=int)[:3] for g in gt[im] if g["obj_id"] in (1, 2)}
    assert present and set(on_disk["objects"]) == present
    for obj in on_disk["objects"].values():
        assert set(obj) == REQUIRED | {"n"}
        for key in ("add_0.1d", "adds_0.1d", "add(-s)_0.1d", "prj_5"):
            assert 0.0 <= obj[key] <= 1.0
    assert set(on_disk["mean"]) == REQUIRED
    assert on_disk["latency_ms"]["median"] > 0
    # Every ground-truth instance of the chosen objects in the first 3 frames is scored, found
    # or not (counted independently from scene_gt.json).
    expected = sum(1 for im in sorted(gt, key=int)[:3] for g in gt[im] if g["obj_id"] in (1, 2))
    rows = (out / "per_frame.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == expected == sum(o["n"] for o in on_disk["objects"].values())
    for name in ("metrics.md", "ap_rotation.png", "ap_translation.png", "error_hist.png"):
        assert (out / name).stat().st_size > 0
    assert len(list((out / "overlays").glob("*.png"))) == 1
    assert on_disk["extra"]["options"]["mesh_units"] == {"obj_000001": "mm", "obj_000002": "mm"}
    assert (out / "objects" / "obj_000001" / "object.json").is_file()


def test_same_command_same_numbers(bop_report, smoke_dataset, tmp_path):
    out, summary = bop_report
    with torch_single_thread():
        again = run_eval(smoke_dataset, tmp_path / "again", FAST, objects_dir=out / "objects")
    assert _strip_timing(again) == _strip_timing(summary)


def test_bag_gives_the_same_numbers_as_the_bop_scene(smoke_dataset, tmp_path):
    """Frame-exact: the bag of scene 0 (GT from /tf) scores exactly like the BOP scene 0."""
    options = replace(FAST, objects=(1, 2, 3, 4))
    objects = tmp_path / "objects"
    with torch_single_thread():
        bag = run_eval(smoke_dataset / "bags" / "000000", tmp_path / "bag", options, objects_dir=objects)
        bop = run_eval(smoke_dataset / "test" / "000000", tmp_path / "bop", options, objects_dir=objects)
    assert bag["n_frames"] == bop["n_frames"] == 3
    # Same frames, same estimates; the bag's ground truth went through a quaternion on /tf, so
    # the errors agree to float rounding, not bit for bit.
    assert bag["objects"].keys() == bop["objects"].keys()
    for key, obj in bag["objects"].items():
        assert obj == pytest.approx(bop["objects"][key], rel=1e-9, abs=1e-9)


def test_missing_frame_marks_the_report_partial(smoke_dataset, tmp_path):
    scene = tmp_path / "data" / "test" / "000000"
    shutil.copytree(smoke_dataset / "test" / "000000", scene)
    shutil.copytree(smoke_dataset / "models", tmp_path / "data" / "models")
    (scene / "rgb" / "000001.png").unlink()
    with torch_single_thread():
        summary = run_eval(scene, tmp_path / "out", replace(FAST, max_frames=None))
    assert summary["n_frames"] == 2
    assert summary["extra"]["partial_data"] is True
    assert [p["im_id"] for p in summary["extra"]["data_problems"]] == [1]


def test_bag_without_ground_truth_is_a_clear_error(smoke_dataset, tmp_path):
    from sixd_pose_ros.datasets.bop import read_bop_scene
    from sixd_pose_ros.datasets.rosbag import write_rosbag

    frames = list(read_bop_scene(smoke_dataset / "test" / "000000"))[:2]
    for f in frames:
        f.instances = []
    bag = tmp_path / "bags" / "nogt"
    write_rosbag(bag, frames)
    shutil.copytree(smoke_dataset / "models", tmp_path / "models")
    with torch_single_thread(), pytest.raises(DatasetError, match="no ground-truth instances"):
        run_eval(bag, tmp_path / "out", FAST)


def test_cli_names_the_fix(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sixd_pose_ros.cli", "eval", str(tmp_path / "nothing"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_workers_merge_into_the_same_report(smoke_dataset, tmp_path):
    options = replace(FAST, objects=(3,), max_frames=None)
    objects = tmp_path / "objects"
    with torch_single_thread():
        one = run_eval(smoke_dataset, tmp_path / "one", options, objects_dir=objects)
    two = run_eval(smoke_dataset, tmp_path / "two", replace(options, workers=2), objects_dir=objects)
    assert one["n_frames"] == two["n_frames"] == 6
    for key, obj in one["objects"].items():  # thread counts differ: equal up to float rounding
        assert obj == pytest.approx(two["objects"][key], rel=1e-6, abs=1e-9)
    assert np.isfinite(two["latency_ms"]["median"])


@pytest.mark.slow
@pytest.mark.ros
def test_live_replay_scores_what_the_node_published(smoke_dataset, tmp_path):
    """The bag played into the real node over DDS on simulated time, answers scored like eval."""
    from sixd_pose_ros.evaluation.live_replay import run_replay

    options = replace(FAST, objects=(3,), max_frames=None)
    with torch_single_thread():
        offline = run_eval(smoke_dataset / "bags" / "000000", tmp_path / "offline", options,
                           objects_dir=tmp_path / "objects")
        live = run_replay(smoke_dataset / "bags" / "000000", tmp_path / "live", options, rate=0.5,
                          objects_dir=tmp_path / "objects")
    extra = live["extra"]
    assert extra["frames_published"] == 3 and live["n_frames"] == 3
    assert live["objects"]["3"]["n"] == offline["objects"]["3"]["n"]
    assert 1 <= extra["frames_answered"] <= 3
    assert extra["frames_answered"] + extra["frames_dropped_busy"] >= 1
    assert extra["end_to_end_latency_ms"]["median"] > 0
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["extra"]["method"] == "live_replay"


@pytest.fixture(scope="module")
def weights_with_selector(tmp_path_factory) -> Path:
    """The shipped weights plus a seeded untrained selector (plumbing: no accuracy asserted)."""
    import torch

    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, save_weights
    from sixd_pose_ros.models.selector import SelectorConfig, ViewpointSelector

    folder = tmp_path_factory.mktemp("weights")
    for name in ("detector.pt", "autoencoder.pt", "refiner.pt"):
        shutil.copy(WEIGHTS_DIR / name, folder / name)
    torch.manual_seed(0)
    cfg = SelectorConfig.preset("cpu")
    save_weights(folder / "selector.pt", ViewpointSelector(cfg), cfg)
    return folder


@pytest.mark.slow
def test_model_free_sequence_protocol_never_scores_a_reference(weights_with_selector, tmp_path):
    """One sequence: --refs frames chosen by FPS of the camera become references, the rest are
    scored; the report names the protocol and the reference frames."""
    from sixd_pose_ros.training.synth import get_preset, synthesize, with_overrides

    data = tmp_path / "seq"
    synthesize(with_overrides(get_preset("smoke"), scenes=1, frames=12), data, formats=("bop",), progress=False)
    gt = json.loads((data / "test" / "000000" / "scene_gt.json").read_text())
    obj = max({g["obj_id"] for v in gt.values() for g in v},
              key=lambda o: sum(any(g["obj_id"] == o for g in v) for v in gt.values()))
    options = EvalOptions(mode="model_free", refs=8, objects=(obj,), backend="torch", progress=False,
                          weights=str(weights_with_selector))
    with torch_single_thread():
        summary = run_eval(data / "test" / "000000", tmp_path / "out", options)
    opts = summary["extra"]["options"]
    assert opts["reference_protocol"] == {f"obj_{obj:06d}": "sequence"}
    refs = set(opts["reference_frames"][f"obj_{obj:06d}"])
    assert len(refs) == 8
    rows = (tmp_path / "out" / "per_frame.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    scored = {int(r.split(",")[header.index("im_id")]) for r in rows[1:]}
    assert scored and not scored & refs
    assert summary["n_frames"] == 12 - 8


@pytest.mark.slow
def test_model_free_capture_protocol(weights_with_selector, smoke_dataset, tmp_path):
    options = EvalOptions(mode="model_free", refs=12, objects=(3,), max_frames=2, backend="torch",
                          progress=False, weights=str(weights_with_selector))
    with torch_single_thread():
        summary = run_eval(smoke_dataset, tmp_path / "out", options)
    assert summary["mode"] == "model_free" and summary["n_frames"] == 2
    assert summary["extra"]["options"]["reference_protocol"] == {"obj_000003": "capture"}
    db = tmp_path / "out" / "objects" / "model_free" / "refs12" / "obj_000003" / "object.json"
    assert json.loads(db.read_text())["mode"] == "model_free"


def test_model_free_without_selector_weights_names_the_fix(smoke_dataset, tmp_path):
    from sixd_pose_ros.errors import SixdPoseError

    empty = tmp_path / "weights"
    empty.mkdir()
    with pytest.raises(SixdPoseError, match="needs detector.pt, selector.pt, refiner.pt"):
        run_eval(smoke_dataset, tmp_path / "out", EvalOptions(mode="model_free", weights=str(empty)))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed (requirements-dev.txt)")
def test_ray_fan_out_gives_the_same_report(smoke_dataset, tmp_path):
    """The same units through a local Ray instance (what an existing cluster address does too)."""
    import ray

    options = replace(FAST, objects=(3,), max_frames=None)
    objects = tmp_path / "objects"
    with torch_single_thread():
        local = run_eval(smoke_dataset, tmp_path / "local", options, objects_dir=objects)
    try:
        remote = run_eval(smoke_dataset, tmp_path / "ray", replace(options, ray_address="local"), objects_dir=objects)
    finally:
        ray.shutdown()
    assert remote["n_frames"] == local["n_frames"] == 6
    for key, obj in local["objects"].items():
        assert obj == pytest.approx(remote["objects"][key], rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_model_free_tables_sweep(weights_with_selector, smoke_dataset, tmp_path):
    from sixd_pose_ros.evaluation.sweep import run_sweep

    options = EvalOptions(objects=(3,), max_frames=2, backend="torch", progress=False,
                          weights=str(weights_with_selector))
    with torch_single_thread():
        result = run_sweep(smoke_dataset, tmp_path / "sweep", options, refs=(8, 12), iterations=(0, 1),
                           refs_for_iterations=8)
    assert set(result["references"]) == {"8", "12"} and set(result["refinement_iterations"]["cells"]) == {"0", "1"}
    for cell in result["references"].values():
        assert 0.0 <= cell["add_0.1d"] <= 1.0 and cell["n_frames"] == 2
    assert "selector only" in (tmp_path / "sweep" / "tables.md").read_text()
    assert json.loads((tmp_path / "sweep" / "tables.json").read_text()) == json.loads(json.dumps(result))


def test_bag_with_other_topic_names_needs_the_remapping(smoke_dataset, tmp_path):
    from sixd_pose_ros.datasets.bop import read_bop_scene
    from sixd_pose_ros.datasets.rosbag import write_rosbag
    from sixd_pose_ros.evaluation.sources import BagTopics

    frames = list(read_bop_scene(smoke_dataset / "test" / "000000"))[:1]
    bag = tmp_path / "bags" / "wrist"
    write_rosbag(bag, frames, namespace="/wrist_cam")
    shutil.copytree(smoke_dataset / "models", tmp_path / "models")
    options = replace(FAST, objects=(3,))
    with torch_single_thread():
        with pytest.raises(DatasetError, match="camera_info topic.*/wrist_cam/color/camera_info"):
            run_eval(bag, tmp_path / "out", options)
        summary = run_eval(bag, tmp_path / "out", replace(options, topics=BagTopics(namespace="/wrist_cam")))
    assert summary["n_frames"] == 1

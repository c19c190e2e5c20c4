"""Evaluation takes real data as it comes: ground-truth rotations off orthonormal by up to 1e-2
(Linemod-derived BOP sets) are repaired, one bad instance is skipped and listed, unusable ground
truth fails before any object is built, and a dataset without depth runs RGB-only and says so.

Every fixture is a tiny BOP dataset written to tmp_path; `run_eval` runs with the object
preparation and the estimator replaced by stand-ins (ground truth as the estimate), so these
tests check the data handling in seconds, not the networks."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import trimesh

from sixd_pose_ros.datasets.bop import read_bop_scene, read_bop_single_frame
from sixd_pose_ros.errors import DatasetError
from sixd_pose_ros.evaluation import eval_run
from sixd_pose_ros.evaluation.eval_run import OURS, EvalOptions, ObjectModel, run_eval
from sixd_pose_ros.evaluation.metrics import EvaluationError
from sixd_pose_ros.evaluation.report import score_instance
from sixd_pose_ros.geometry.read_rotation import (
    NotARotationError,
    checked_rotation,
    orthonormality_error,
)
from sixd_pose_ros.geometry.rotations import look_at_rotation
from sixd_pose_ros.objects.posed_images import PosedImagesError, read_bop_views

K = [[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]]
T_MM = [0.0, 0.0, 500.0]


def _rotation(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=3)
    return look_at_rotation(v / np.linalg.norm(v))


def _linemod_like(R: np.ndarray, off: float = 1e-2) -> np.ndarray:
    """R with a symmetric shear: |R R^T - I| of about ``off``, as Linemod-derived BOP GT has."""
    S = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]) * off / 2
    return (np.eye(3) + S) @ R


def _entry(R: np.ndarray, obj_id: int = 1) -> dict:
    return {"cam_R_m2c": np.asarray(R).reshape(-1).tolist(), "cam_t_m2c": T_MM, "obj_id": obj_id}


def _write_scene(scene: Path, gt: dict[int, list[dict]], depth: bool = False) -> Path:
    """A BOP scene of 64x48 frames; depth/ only when asked."""
    (scene / "rgb").mkdir(parents=True)
    if depth:
        (scene / "depth").mkdir()
    cams = {}
    for im_id in gt:
        cv2.imwrite(str(scene / "rgb" / f"{im_id:06d}.png"), np.full((48, 64, 3), 90, np.uint8))
        if depth:
            cv2.imwrite(str(scene / "depth" / f"{im_id:06d}.png"), np.full((48, 64), 5000, np.uint16))
        cams[str(im_id)] = {"cam_K": np.reshape(K, -1).tolist(), "depth_scale": 0.1}
    (scene / "scene_camera.json").write_text(json.dumps(cams))
    (scene / "scene_gt.json").write_text(json.dumps({str(k): v for k, v in gt.items()}))
    return scene


def _write_dataset(root: Path, gt: dict[int, list[dict]], depth: bool = False) -> Path:
    (root / "models").mkdir(parents=True)
    trimesh.creation.box(extents=(50.0, 40.0, 30.0)).export(root / "models" / "obj_000001.ply")
    _write_scene(root / "test" / "000000", gt, depth)
    return root


# --------------------------------------------------------------------------------------------
# the repair itself and every reader of ground truth
# --------------------------------------------------------------------------------------------


def test_checked_rotation_repairs_rounding_and_refuses_the_rest():
    R = _rotation(0)
    off = _linemod_like(R)
    assert 5e-3 < orthonormality_error(off) < 2e-2
    fixed = checked_rotation(off.reshape(-1).tolist())
    assert orthonormality_error(fixed) < 1e-12 and np.linalg.det(fixed) > 0
    assert np.abs(fixed - R).max() < 1e-2
    with pytest.raises(NotARotationError, match="not orthonormal"):
        checked_rotation(1.1 * R)
    with pytest.raises(NotARotationError, match="reflection"):
        checked_rotation(R @ np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(NotARotationError, match="9 numbers"):
        checked_rotation([1.0, 0.0])


def test_bop_scene_reader_repairs_linemod_rotations(tmp_path):
    scene = _write_scene(tmp_path / "000000", {0: [_entry(_linemod_like(_rotation(1)))]})
    (frame,) = list(read_bop_scene(scene))
    assert orthonormality_error(frame.instances[0].R_m2c) < 1e-12


def test_single_frame_reader_repairs_rotations(tmp_path):
    """The real LM-O smoke frame stores a rotation 2e-3 off orthonormal."""
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((48, 64, 3), np.uint8))
    (tmp_path / "camera.json").write_text(json.dumps({"cam_K": np.reshape(K, -1).tolist(), "depth_scale": 1.0}))
    (tmp_path / "scene_gt.json").write_text(json.dumps({"3": [_entry(_linemod_like(_rotation(2)), 5)]}))
    assert orthonormality_error(read_bop_single_frame(tmp_path).instances[0].R_m2c) < 1e-12


def test_bad_instance_is_skipped_and_listed_in_tolerant_mode(tmp_path):
    R = _rotation(3)
    scene = _write_scene(tmp_path / "000000", {0: [_entry(R), _entry(1.1 * R)], 1: [_entry(R)]})
    problems: list = []
    frames = list(read_bop_scene(scene, problems=problems))
    assert [len(f.instances) for f in frames] == [1, 1]
    assert len(problems) == 1 and problems[0][0] == 0
    assert "instance 1" in problems[0][1] and "not orthonormal" in problems[0][1]
    with pytest.raises(DatasetError, match="instance 1: cam_R_m2c is not orthonormal"):
        list(read_bop_scene(scene))


def test_score_instance_accepts_real_ground_truth():
    R = _rotation(4)
    common = {"scene_id": 0, "im_id": 0, "obj_id": 1, "points": np.random.default_rng(0).normal(size=(50, 3)) * 0.02,
              "diameter": 0.1, "K": np.array(K), "t_gt": np.array(T_MM) / 1000, "image_size": (64, 48)}
    result = score_instance(R_gt=_linemod_like(R), R_est=R, t_est=np.array(T_MM) / 1000, **common)
    assert result.found and result.rot_err_deg < 1.0
    with pytest.raises(EvaluationError, match="R_gt is not a rotation matrix: it is not orthonormal"):
        score_instance(R_gt=1.1 * R, **common)


def test_posed_bop_views_repair_and_skip(tmp_path):
    """`build-object --images` on a BOP scene: rounding is repaired, a broken pose is skipped
    with a note; only when none is usable does it stop."""
    R = _rotation(5)
    scene = _write_scene(tmp_path / "000000", {0: [_entry(_linemod_like(R))], 1: [_entry(1.1 * R)],
                                               2: [_entry(R)]})
    posed = read_bop_views(scene, obj_id=1)
    assert [v.name for v in posed.views] == ["rgb/000000.png", "rgb/000002.png"]
    assert orthonormality_error(posed.views[0].R_w2c) < 1e-12
    assert any("unusable ground-truth pose" in n and "image 1" in n for n in posed.notes)
    bad = _write_scene(tmp_path / "000001", {0: [_entry(1.1 * R)]})
    with pytest.raises(PosedImagesError, match="no usable ground-truth pose"):
        read_bop_views(bad, obj_id=1)


# --------------------------------------------------------------------------------------------
# run_eval with stand-ins for the object databases and the estimator
# --------------------------------------------------------------------------------------------


class _GroundTruthEstimator:
    """Answers every frame with the ground truth read from the scene; remembers the depth it got."""

    def __init__(self, scene: Path) -> None:
        self.gt = {int(k): v for k, v in json.loads((scene / "scene_gt.json").read_text()).items()}
        self.depths: list = []
        self.frame = 0

    def estimate(self, frame):
        self.depths.append(frame.depth)
        entry = self.gt[self.frame][0]
        self.frame += 1
        try:
            R = checked_rotation(entry["cam_R_m2c"])
        except NotARotationError:
            R = np.eye(3)  # a broken ground truth: any answer, it is never scored
        return [SimpleNamespace(name=f"obj_{entry['obj_id']:06d}", R=R, t=np.array(entry["cam_t_m2c"]) / 1000,
                                score=1.0)]


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    """Dummy weight files, objects that are never built, and the ground-truth estimator."""
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("detector.pt", "autoencoder.pt", "refiner.pt"):
        (weights / name).write_bytes(b"")
    state = SimpleNamespace(estimator=None, prepared=0)

    def prepare(dataset, options, objects_dir):
        state.prepared += 1
        mesh = dataset.mesh_path(1)
        return [ObjectModel(1, "obj_000001", str(mesh), "mm", None, 0.0707)]

    monkeypatch.setattr(eval_run, "prepare_objects", prepare)
    monkeypatch.setattr(eval_run, "_worker_estimators", lambda models, options: {OURS: state.estimator})
    state.options = EvalOptions(weights=str(weights), progress=False, backend="torch")
    return state


def test_unusable_ground_truth_fails_before_objects_are_built(stand_ins, tmp_path):
    R = _rotation(6)
    data = _write_dataset(tmp_path / "data", {0: [_entry(1.1 * R)], 1: [_entry(R @ np.diag([1, 1, -1.0]))]})
    with pytest.raises(DatasetError, match="none of the 2 ground-truth instances of objects \\[1\\] is usable"):
        run_eval(data, tmp_path / "out", stand_ins.options)
    assert stand_ins.prepared == 0 and not (tmp_path / "out").exists()


def test_one_bad_instance_never_aborts_a_run(stand_ins, tmp_path):
    R = _rotation(7)
    data = _write_dataset(tmp_path / "data", {0: [_entry(_linemod_like(R))], 1: [_entry(1.1 * R)],
                                              2: [_entry(R)]})
    stand_ins.estimator = _GroundTruthEstimator(data / "test" / "000000")
    summary = run_eval(data, tmp_path / "out", replace(stand_ins.options, use_depth=False))
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["extra"]["partial_data"] is True
    problems = on_disk["extra"]["data_problems"]
    assert [p["im_id"] for p in problems] == [1] and "cam_R_m2c is not orthonormal" in problems[0]["message"]
    assert summary["n_frames"] == 3 and summary["objects"]["1"]["n"] == 2
    assert summary["objects"]["1"]["add_0.1d"] == 1.0  # the repaired rotation scores like the true one


def test_dataset_without_depth_runs_rgb_only_and_says_so(stand_ins, tmp_path, caplog):
    R = _rotation(8)
    data = _write_dataset(tmp_path / "data", {0: [_entry(R)], 1: [_entry(R)]}, depth=False)
    stand_ins.estimator = _GroundTruthEstimator(data / "test" / "000000")
    with caplog.at_level(logging.WARNING):
        run_eval(data, tmp_path / "out", stand_ins.options)  # use_depth=True by default
    options = json.loads((tmp_path / "out" / "metrics.json").read_text())["extra"]["options"]
    assert options["use_depth"] is False and options["use_depth_requested"] is True
    assert "no depth/ folder" in options["no_depth_reason"]
    assert "running RGB-only" in caplog.text
    assert stand_ins.estimator.depths == [None, None]


def test_dataset_with_depth_records_it_used(stand_ins, tmp_path):
    R = _rotation(9)
    data = _write_dataset(tmp_path / "data", {0: [_entry(R)]}, depth=True)
    stand_ins.estimator = _GroundTruthEstimator(data / "test" / "000000")
    summary = run_eval(data, tmp_path / "out", stand_ins.options)
    assert summary["extra"]["options"]["use_depth"] is True
    assert summary["extra"]["options"]["no_depth_reason"] is None
    assert stand_ins.estimator.depths[0] is not None


def test_depth_outcome_of_frames_without_depth():
    """A bag without a depth topic shows it only frame by frame."""
    assert eval_run._depth_outcome(True, 4, 0) == (True, None)
    used, why = eval_run._depth_outcome(True, 4, 4)
    assert not used and "none of the 4 frames" in why
    used, why = eval_run._depth_outcome(True, 4, 1)
    assert used and "1 of 4 frames" in why
    assert eval_run._depth_outcome(False, 4, 4) == (False, None)

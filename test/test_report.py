"""Per-instance scoring, the metrics.json summary and the report files."""
from __future__ import annotations

import csv
import json
import math
import random

import cv2
import numpy as np
import pytest
import trimesh

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.evaluation.metrics import (
    MISSING,
    render_model_depths,
    symmetries_from_models_info,
)
from sixd_pose_ros.evaluation.report import (
    REQUIRED_METRIC_KEYS,
    InstanceResult,
    format_table,
    score_instance,
    summarize,
    write_report,
)
from sixd_pose_ros.geometry.rotations import matrix_from_axis_angle

W, H = 320, 240
K = np.array([[600.0, 0.0, W / 2], [0.0, 600.0, H / 2], [0.0, 0.0, 1.0]])
T = np.array([0.0, 0.0, 0.5])
BOX = trimesh.creation.box(extents=(0.1, 0.2, 0.3))
POINTS = np.asarray(BOX.vertices, dtype=np.float64)  # the 8 corners
DIAMETER = math.sqrt(0.1**2 + 0.2**2 + 0.3**2)


def rz(deg: float) -> np.ndarray:
    return matrix_from_axis_angle([0.0, 0.0, 1.0], math.radians(deg))


def _score(**kw):
    args = {"scene_id": 1, "im_id": 0, "obj_id": 5, "points": POINTS, "diameter": DIAMETER, "K": K,
            "R_gt": np.eye(3), "t_gt": T, "image_size": (W, H)}
    args.update(kw)
    return score_instance(**args)


# ------------------------------------------------------------------------------------------
# score_instance
# ------------------------------------------------------------------------------------------


def test_score_instance_at_the_gt_pose_and_with_a_known_offset():
    depth = render_model_depths(BOX, [(np.eye(3), T)], K, W, H)[0]
    r = _score(R_est=np.eye(3), t_est=T, depth=depth, mesh=BOX, score=0.9, latency_ms=40.0)
    assert r.found and r.obj_id == "5" and r.image_width == W and r.score == 0.9
    for value in (r.add, r.adds, r.prj, r.rot_err_deg, r.trans_err_cm, r.mssd, r.mspd):
        assert value == pytest.approx(0.0, abs=1e-9)
    assert r.vsd == (0.0,) * 10
    off = _score(R_est=np.eye(3), t_est=T + [0.01, 0.0, 0.0])
    assert off.add == pytest.approx(0.01) and off.mssd == pytest.approx(0.01)
    assert off.trans_err_cm == pytest.approx(1.0) and off.rot_err_deg == pytest.approx(0.0)
    assert off.prj == pytest.approx(np.mean(600 * 0.01 / (0.5 + POINTS[:, 2])))
    assert off.vsd is None  # no depth given: VSD not computed


def test_a_box_turned_by_its_symmetry_scores_zero():
    sym = symmetries_from_models_info({"symmetries_discrete": [
        [-1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]]})
    depth = render_model_depths(BOX, [(np.eye(3), T)], K, W, H)[0]
    r = _score(R_est=rz(180), t_est=T, symmetries=sym, depth=depth, mesh=BOX)
    assert r.mssd == pytest.approx(0.0, abs=1e-12)
    assert r.mspd == pytest.approx(0.0, abs=1e-9)
    assert r.rot_err_deg == pytest.approx(0.0, abs=1e-9)
    assert max(r.vsd) == 0.0  # the same depth image
    assert r.add == pytest.approx(2 * math.hypot(0.05, 0.1))  # ADD does not know symmetries
    plain = _score(R_est=rz(180), t_est=T)
    assert plain.rot_err_deg == pytest.approx(180.0) and plain.mssd == pytest.approx(2 * math.hypot(0.05, 0.1))


def test_score_instance_without_an_estimate():
    depth = np.zeros((H, W))
    r = _score(depth=depth, mesh=BOX, latency_ms=12.0)
    assert not r.found and r.R_est is None and r.t_est is None
    for value in (r.add, r.adds, r.prj, r.rot_err_deg, r.trans_err_cm, r.mssd, r.mspd):
        assert value == MISSING
    assert r.vsd == (MISSING,) * 10


@pytest.mark.parametrize("kw, match", [
    ({"depth": np.zeros((H, W))}, "mesh"),
    ({"depth": np.zeros((10, 10)), "mesh": BOX}, "registered"),
    ({"R_est": np.eye(3)}, "both"),
    ({"R_est": np.full((3, 3), np.nan), "t_est": T}, "missing"),
    ({"R_gt": np.ones((3, 3))}, "rotation"),
    ({"diameter": 0.0}, "diameter"),
    ({"points": np.zeros((0, 3))}, "points"),
    ({"image_size": (0, 240)}, "positive"),
])
def test_score_instance_rejects_bad_input_with_a_fix(kw, match):
    with pytest.raises(SixdPoseError, match=match):
        _score(**kw)


# ------------------------------------------------------------------------------------------
# summarize
# ------------------------------------------------------------------------------------------


def _result(scene, im, obj, *, add=None, rot=1.0, trans=1.0, prj=1.0, diameter=0.1, latency=None,
            partial=None, mssd=None, mspd=None, vsd=None, symmetric=False):
    found = add is not None
    inf = MISSING
    return InstanceResult(
        scene_id=scene, im_id=im, obj_id=str(obj), found=found,
        R_est=np.eye(3) if found else None, t_est=T if found else None, R_gt=np.eye(3), t_gt=T,
        score=0.5 if found else 0.0, add=add if found else inf, adds=(add / 2) if found else inf,
        prj=prj if found else inf, rot_err_deg=rot if found else inf, trans_err_cm=trans if found else inf,
        mssd=mssd if found else (inf if mssd is not None else None),
        mspd=mspd if found else (inf if mspd is not None else None),
        vsd=vsd, diameter=diameter, latency_ms=latency, partial=partial, image_width=640, symmetric=symmetric)


def _results():
    return [
        _result(0, 0, 2, add=0.005, rot=4.0, trans=1.0, prj=3.0, latency=10.0),  # passes everything
        _result(0, 1, 2, add=0.05, rot=20.0, trans=5.0, prj=30.0, latency=20.0),  # fails everything
        _result(0, 2, 2, latency=30.0, partial="no depth"),  # not found
        _result(0, 2, 10, partial="no depth"),  # object 10 never found
        _result(1, 0, 10, latency=40.0),
    ]


def test_summarize_has_exactly_the_required_shape():
    s = summarize(_results(), "known_model", "bench-v1")
    assert list(s) == ["mode", "dataset", "n_frames", "objects", "mean", "latency_ms", "extra"]
    assert (s["mode"], s["dataset"], s["n_frames"]) == ("known_model", "bench-v1", 4)
    assert list(s["objects"]) == ["2", "10"]  # numeric order
    for obj in s["objects"].values():
        assert list(obj) == ["n", *REQUIRED_METRIC_KEYS]
    assert list(s["mean"]) == list(REQUIRED_METRIC_KEYS)
    assert list(s["latency_ms"]) == ["median", "p90"]
    json.dumps(s, allow_nan=False)  # strict JSON: no NaN or inf anywhere


def test_add_or_adds_takes_adds_for_symmetric_objects_only():
    # ADD 1.5 cm fails 0.1d of 10 cm; ADD-S (half of it here) passes.
    rows = [_result(0, 0, 1, add=0.015, symmetric=True), _result(0, 0, 2, add=0.015, symmetric=False)]
    s = summarize(rows, "known_model", "d")
    assert s["objects"]["1"]["add(-s)_0.1d"] == 1.0 and s["objects"]["1"]["add_0.1d"] == 0.0
    assert s["objects"]["2"]["add(-s)_0.1d"] == 0.0 and s["objects"]["2"]["adds_0.1d"] == 1.0
    assert s["mean"]["add(-s)_0.1d"] == 0.5


def test_score_instance_marks_objects_with_symmetries():
    flip = np.diag([-1.0, -1.0, 1.0])
    assert _score(symmetries=[flip]).symmetric
    assert not _score().symmetric


def test_summarize_values_by_hand():
    s = summarize(_results(), "known_model", "bench-v1")
    o2, o10 = s["objects"]["2"], s["objects"]["10"]
    assert o2 == {"n": 3, "add_0.1d": pytest.approx(1 / 3), "adds_0.1d": pytest.approx(1 / 3),
                  "add(-s)_0.1d": pytest.approx(1 / 3), "prj_5": pytest.approx(1 / 3), "rot_err_deg_median": 12.0, "trans_err_cm_median": 3.0}
    # Never found: recalls 0, medians null (not 0).
    assert o10 == {"n": 2, "add_0.1d": 0.0, "adds_0.1d": 0.0, "add(-s)_0.1d": 0.0, "prj_5": 0.0,
                   "rot_err_deg_median": None, "trans_err_cm_median": None}
    assert s["mean"]["add_0.1d"] == pytest.approx(1 / 6)
    assert s["mean"]["rot_err_deg_median"] is None  # one object has no median
    # Latency per frame, from the results: 10, 20, 30, 40 ms.
    assert s["latency_ms"] == {"median": 25.0, "p90": pytest.approx(37.0)}
    assert summarize(_results(), "m", "d", latencies_ms=[5.0])["latency_ms"] == {"median": 5.0, "p90": 5.0}
    extra = s["extra"]
    assert (extra["n_instances"], extra["n_found"], extra["n_missing"]) == (5, 2, 3)
    assert extra["missing_per_object"] == {"2": 1, "10": 2}
    assert extra["partial"] == {"n": 2, "reasons": {"no depth": 2}}
    rot = extra["ap_rotation"]
    assert rot["thresholds_deg"][0] == 5.0 and len(rot["thresholds_deg"]) == 12
    assert rot["objects"]["2"][:4] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 2 / 3])  # 4 deg, 20 deg
    assert rot["objects"]["10"] == [0.0] * 12
    trans = extra["ap_translation"]
    assert trans["objects"]["2"] == pytest.approx([1 / 3] * 3 + [2 / 3] * 6)  # 1 cm, 5 cm
    assert trans["auc"]["objects"]["2"] == pytest.approx((3 / 3 + 6 * 2 / 3) / 9)
    assert "bop" not in extra  # no MSSD/MSPD/VSD in these results


def test_summarize_bop_average_recalls():
    res = [
        _result(0, 0, 1, add=0.0, mssd=0.0, mspd=0.0, vsd=(0.0,) * 10),
        _result(0, 1, 1, add=0.0, mssd=0.012, mspd=12.0, vsd=(1.0,) * 10),
        _result(0, 2, 1),  # missing
    ]
    res[2].vsd, res[2].mssd, res[2].mspd = (MISSING,) * 10, MISSING, MISSING
    bop = summarize(res, "known_model", "d")["extra"]["bop"]
    ar = bop["objects"]["1"]
    assert ar["ar_mssd"] == pytest.approx((10 + 8) / 30)  # diameter 0.1: 12 mm passes 15..50 mm
    assert ar["ar_mspd"] == pytest.approx((10 + 8) / 30)  # 12 px passes 15..50 px
    assert ar["ar_vsd"] == pytest.approx(1 / 3)
    assert ar["ar"] == pytest.approx(np.mean([ar["ar_vsd"], ar["ar_mssd"], ar["ar_mspd"]]))
    assert bop["mean"] == bop["pooled"] == ar
    # An object never found scores 0 on every AR the run computed, and pulls the mean down.
    never = _result(0, 3, 7, diameter=0.1)
    bop2 = summarize(res + [never], "known_model", "d")["extra"]["bop"]
    assert bop2["objects"]["7"] == {"ar_vsd": 0.0, "ar_mssd": 0.0, "ar_mspd": 0.0, "ar": 0.0}
    assert bop2["mean"]["ar"] == pytest.approx(ar["ar"] / 2)
    assert bop2["pooled"]["ar_mssd"] == pytest.approx((10 + 8) / 40)


def test_summarize_refuses_nothing():
    with pytest.raises(SixdPoseError, match="no results"):
        summarize([], "known_model", "d")


# ------------------------------------------------------------------------------------------
# report files
# ------------------------------------------------------------------------------------------

NAMES = ["metrics.json", "metrics.md", "per_frame.csv", "ap_rotation.png", "ap_translation.png", "error_hist.png"]


def test_write_report_writes_every_file(tmp_path):
    res = _results()
    s = summarize(res, "known_model", "bench-v1")
    overlay = np.zeros((20, 30, 3), np.uint8)
    overlay[:, :, 0] = 255  # red in RGB
    paths = write_report(tmp_path / "out", s, res, overlays={"frame_0": overlay})
    assert [p.name for p in paths] == NAMES + ["frame_0.png"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == s
    for name in NAMES[3:]:
        img = cv2.imread(str(tmp_path / "out" / name))
        assert img is not None and img.shape[0] > 200
    bgr = cv2.imread(str(tmp_path / "out" / "overlays" / "frame_0.png"))
    assert bgr.shape == (20, 30, 3) and bgr[0, 0].tolist() == [0, 0, 255]
    md = (tmp_path / "out" / "metrics.md").read_text()
    assert "| 2 | 3 | 33.3 | 33.3 | 33.3 | 33.3 | 12.00 | 3.00 |" in md
    assert "| 10 | 2 | 0.0 | 0.0 | 0.0 | 0.0 | - | - |" in md
    assert "**mean**" in md and "median 25.0 ms" in md
    rows = list(csv.DictReader((tmp_path / "out" / "per_frame.csv").open()))
    assert [(r["scene_id"], r["im_id"], r["obj_id"]) for r in rows] == [
        ("0", "0", "2"), ("0", "1", "2"), ("0", "2", "2"), ("0", "2", "10"), ("1", "0", "10")]
    assert rows[0]["found"] == "1" and float(rows[0]["add_m"]) == 0.005
    assert rows[2]["found"] == "0" and rows[2]["add_m"] == "inf" and rows[2]["R_est"] == ""
    assert np.allclose(np.array(rows[0]["R_gt"].split(), float).reshape(3, 3), np.eye(3))


def test_write_report_is_deterministic_and_replaces_files(tmp_path):
    res = _results()
    s = summarize(res, "known_model", "bench-v1")
    write_report(tmp_path / "a", s, res)
    shuffled = res[:]
    random.Random(3).shuffle(shuffled)
    s2 = summarize(shuffled, "known_model", "bench-v1")
    write_report(tmp_path / "b", s2, shuffled)
    for name in ("metrics.json", "metrics.md", "per_frame.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # Writing again into the same folder replaces the files, leaving no temporaries behind.
    write_report(tmp_path / "a", summarize(res[:2], "known_model", "x"), res[:2])
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["dataset"] == "x"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(NAMES)


def test_write_report_rejects_bad_overlays(tmp_path):
    res = _results()
    s = summarize(res, "known_model", "d")
    with pytest.raises(SixdPoseError, match="file name"):
        write_report(tmp_path / "o", s, res, overlays={"../evil": np.zeros((2, 2, 3), np.uint8)})
    with pytest.raises(SixdPoseError, match="uint8"):
        write_report(tmp_path / "o", s, res, overlays={"x": np.zeros((2, 2, 3), np.float32)})


def test_format_table_and_ar_column():
    res = _results()
    text = format_table(summarize(res, "known_model", "bench-v1"))
    lines = text.splitlines()
    assert lines[0] == "bench-v1 (known_model): 4 frames"
    assert "ADD-0.1d" in lines[1] and "AR" not in lines[1].split()
    assert any(line.startswith("mean") for line in lines)
    assert lines[-1] == "latency: median 25.0 ms, p90 37.0 ms"
    bop_res = [_result(0, 0, 1, add=0.0, mssd=0.0, mspd=0.0, vsd=(0.0,) * 10)]
    assert "AR" in format_table(summarize(bop_res, "known_model", "d")).splitlines()[1].split()

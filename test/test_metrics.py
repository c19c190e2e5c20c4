"""Evaluation metrics against hand-computed cases: cubes, boxes, a few pixels, known rotations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.evaluation import metrics as M
from sixd_pose_ros.geometry.pose_errors import add_error, adds_error
from sixd_pose_ros.geometry.rotations import geodesic_angle, matrix_from_axis_angle

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
T = np.array([0.0, 0.0, 0.5])


def rz(deg: float) -> np.ndarray:
    return matrix_from_axis_angle([0.0, 0.0, 1.0], math.radians(deg))


def box_corners(sx: float, sy: float, sz: float, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    c = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    return c * np.array([sx, sy, sz]) / 2 + np.asarray(center)


def mm_4x4(R: np.ndarray, t_mm=(0.0, 0.0, 0.0)) -> list[float]:
    m = np.eye(4)
    m[:3, :3] = R
    m[:3, 3] = t_mm
    return m.reshape(-1).tolist()


# ------------------------------------------------------------------------------------------
# recalls and AP curves
# ------------------------------------------------------------------------------------------


def test_recall_counts_missing_and_nan_as_failures():
    e = [0.1, 0.2, math.inf, math.nan]
    assert M.recall(e, 0.15) == 0.25
    assert M.recall(e, 0.2) == 0.5  # <= by default
    assert M.recall(e, 0.2, strict=True) == 0.25
    assert M.recall(e, 1e9) == 0.5  # missing never passes
    with pytest.raises(ValueError):
        M.recall([], 1.0)


def test_add_recall_at_a_tenth_of_the_cube_diameter():
    cube = box_corners(0.1, 0.1, 0.1)
    diameter = 0.1 * math.sqrt(3.0)  # 0.1732: 0.1 d = 17.3 mm
    e1 = add_error(np.eye(3), T + [0.01, 0, 0], np.eye(3), T, cube)  # 10 mm: passes
    e2 = add_error(np.eye(3), T + [0.02, 0, 0], np.eye(3), T, cube)  # 20 mm: fails
    assert e1 == pytest.approx(0.01) and e2 == pytest.approx(0.02)
    assert M.recall_at_diameter([e1, e2, M.MISSING], diameter) == pytest.approx(1 / 3)
    # Per-instance diameters: a larger object forgives the same 20 mm.
    assert M.recall_at_diameter([e1, e2], np.array([diameter, 0.3])) == 1.0
    # ADD-S forgives the 90-degree turn of a cube, ADD does not.
    adds = adds_error(rz(90), T, np.eye(3), T, cube)
    add = add_error(rz(90), T, np.eye(3), T, cube)
    assert M.recall_at_diameter([adds], diameter) == 1.0
    assert M.recall_at_diameter([add], diameter) == 0.0


def test_projection_recall_at_5px():
    assert M.projection_recall([0.0, 4.9, 5.0, 5.1, math.inf]) == pytest.approx(3 / 5)
    assert M.projection_recall([6.0], threshold_px=10.0) == 1.0


def test_ap_curve_and_area():
    errors = [3.0, 7.0, 12.0, math.inf]
    curve = M.ap_curve(errors, [5, 10, 15])
    np.testing.assert_allclose(curve, [0.25, 0.5, 0.75])
    assert M.ap_auc(errors, [5, 10, 15]) == pytest.approx(0.5)
    np.testing.assert_array_equal(M.DEFAULT_ROT_THRESHOLDS_DEG, np.arange(5, 61, 5))
    np.testing.assert_array_equal(M.DEFAULT_TRANS_THRESHOLDS_CM, np.arange(2, 11))
    rot = M.ap_curve([2.0, 22.0, 100.0], M.DEFAULT_ROT_THRESHOLDS_DEG)
    assert rot.shape == (12,) and np.all(np.diff(rot) >= 0)
    np.testing.assert_allclose(rot[:4], [1 / 3, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(rot[4:], 2 / 3)


# ------------------------------------------------------------------------------------------
# symmetries
# ------------------------------------------------------------------------------------------


def test_symmetry_transforms_accept_pairs_and_matrices_and_add_the_identity():
    Rs, ts = M.as_symmetry_transforms(None)
    np.testing.assert_array_equal(Rs, np.eye(3)[None])
    np.testing.assert_array_equal(ts, np.zeros((1, 3)))
    Rs, ts = M.as_symmetry_transforms([np.eye(4), (rz(180), [0.1, 0, 0])])
    assert len(Rs) == 2  # the given identity is not duplicated
    np.testing.assert_allclose(Rs[1], rz(180))
    np.testing.assert_allclose(ts[1], [0.1, 0, 0])
    Rs, _ = M.as_symmetry_transforms(np.stack([rz(90), rz(180), rz(270)]))
    assert len(Rs) == 4
    Rs2, _ = M.as_symmetry_transforms((Rs, np.zeros((4, 3))))  # its own output
    np.testing.assert_allclose(Rs2, Rs)
    with pytest.raises(SixdPoseError, match="4x4"):
        M.as_symmetry_transforms([np.eye(2)])
    with pytest.raises(SixdPoseError, match="proper rotation"):
        M.as_symmetry_transforms([np.diag([1.0, 1.0, -1.0])])


def test_symmetries_from_models_info_units_offsets_and_sampling():
    assert len(M.symmetries_from_models_info({"diameter": 100.0})[0]) == 1
    # A box centred at x = 30 mm, symmetric under 180 degrees about the z axis through its
    # centre: the 4x4 carries t = c - R c = (60, 0, 0) mm.
    entry = {"symmetries_discrete": [mm_4x4(rz(180), (60.0, 0.0, 0.0))]}
    Rs, ts = M.symmetries_from_models_info(entry)
    assert len(Rs) == 2
    np.testing.assert_allclose(ts[1], [0.06, 0.0, 0.0])
    # Continuous about z: ceil(pi / 0.01) = 315 steps of 1.143 degrees, identity included.
    Rs, ts = M.symmetries_from_models_info({"symmetries_continuous": [{"axis": [0, 0, 1], "offset": [0, 0, 0]}]})
    assert len(Rs) == 315
    step = math.degrees(geodesic_angle(Rs[0], Rs[1]))
    assert step == pytest.approx(360 / 315)
    # With an offset every transform keeps the axis (through x = 20 mm) fixed.
    Rs, ts = M.symmetries_from_models_info(
        {"symmetries_continuous": [{"axis": [0, 0, 1], "offset": [20.0, 0, 0]}]}, max_sym_disc_step=0.1)
    assert len(Rs) == 32
    on_axis = np.array([0.02, 0.0, 0.05])
    np.testing.assert_allclose(Rs @ on_axis + ts, np.tile(on_axis, (32, 1)), atol=1e-12)
    # Discrete x continuous: every combination (a plain cylinder: 2 x 315).
    cyl = {"symmetries_discrete": [mm_4x4(matrix_from_axis_angle([1, 0, 0], math.pi))],
           "symmetries_continuous": [{"axis": [0, 0, 1], "offset": [0, 0, 0]}]}
    assert len(M.symmetries_from_models_info(cyl)[0]) == 630
    with pytest.raises(SixdPoseError, match="16 numbers"):
        M.symmetries_from_models_info({"symmetries_discrete": [[1, 0, 0]]})


def test_symmetric_rotation_error():
    sym = [rz(180)]
    assert M.symmetric_rotation_error_deg(rz(180), np.eye(3)) == pytest.approx(180.0)
    assert M.symmetric_rotation_error_deg(rz(180), np.eye(3), sym) == pytest.approx(0.0, abs=1e-9)
    assert M.symmetric_rotation_error_deg(rz(170), np.eye(3), sym) == pytest.approx(10.0)
    assert M.symmetric_rotation_error_deg(rz(30), rz(10)) == pytest.approx(20.0)


# ------------------------------------------------------------------------------------------
# MSSD and MSPD
# ------------------------------------------------------------------------------------------


def test_mssd_and_mspd_of_a_translated_cube():
    cube = box_corners(0.1, 0.1, 0.1)
    t_est = T + [0.01, 0.0, 0.0]
    assert M.mssd_error(np.eye(3), t_est, np.eye(3), T, cube) == pytest.approx(0.01)
    # Every corner moves 10 mm sideways; the image shift f dx / z is largest for the near
    # face (z = 0.45 m): 500 * 0.01 / 0.45 px.
    assert M.mspd_error(np.eye(3), t_est, np.eye(3), T, cube, K) == pytest.approx(500 * 0.01 / 0.45)
    # A 90-degree turn moves each corner by sqrt(2) * |r_xy| = 2 * 0.05 m.
    assert M.mssd_error(rz(90), T, np.eye(3), T, cube) == pytest.approx(0.1)
    assert M.mssd_error(rz(90), T, np.eye(3), T, cube, [rz(90), rz(180), rz(270)]) == pytest.approx(0.0, abs=1e-12)


def test_mssd_mspd_forgive_the_symmetry_of_a_box():
    box = box_corners(0.1, 0.2, 0.3)
    r_xy = math.hypot(0.05, 0.1)
    assert M.mssd_error(rz(180), T, np.eye(3), T, box) == pytest.approx(2 * r_xy)
    assert M.mspd_error(rz(180), T, np.eye(3), T, box, K) == pytest.approx(500 * 2 * r_xy / 0.35)
    sym = M.symmetries_from_models_info({"symmetries_discrete": [mm_4x4(rz(180))]})
    assert M.mssd_error(rz(180), T, np.eye(3), T, box, sym) == pytest.approx(0.0, abs=1e-12)
    assert M.mspd_error(rz(180), T, np.eye(3), T, box, K, sym) == pytest.approx(0.0, abs=1e-9)
    # Off-centre symmetry axis (the box centred at x = 30 mm): only the right t_s gives 0.
    shifted = box + [0.03, 0.0, 0.0]
    Rs, ts = M.symmetries_from_models_info({"symmetries_discrete": [mm_4x4(rz(180), (60.0, 0.0, 0.0))]})
    R_eq, t_eq = Rs[1], T + ts[1]  # the GT pose (R = I) composed with the symmetry
    assert M.mssd_error(R_eq, t_eq, np.eye(3), T, shifted, (Rs, ts)) == pytest.approx(0.0, abs=1e-12)
    assert M.mssd_error(R_eq, t_eq, np.eye(3), T, shifted) > 0.1


def test_mssd_with_a_sampled_continuous_symmetry():
    angles = np.radians(np.arange(360))
    ring = np.stack([0.05 * np.cos(angles), 0.05 * np.sin(angles), np.zeros(360)], axis=1)
    plain = M.mssd_error(rz(37), T, np.eye(3), T, ring)
    assert plain == pytest.approx(2 * 0.05 * math.sin(math.radians(37) / 2), rel=1e-6)
    sym = M.symmetries_from_models_info({"symmetries_continuous": [{"axis": [0, 0, 1]}]})
    # The nearest sampled rotation is at most half a step (0.57 degrees) away.
    assert M.mssd_error(rz(37), T, np.eye(3), T, ring, sym) <= 0.05 * math.radians(360 / 315 / 2) + 1e-9


# ------------------------------------------------------------------------------------------
# VSD
# ------------------------------------------------------------------------------------------


def test_depth_to_distance():
    Kd = np.array([[100.0, 0.0, 1.0], [0.0, 100.0, 1.0], [0.0, 0.0, 1.0]])
    depth = np.full((3, 3), 2.0)
    depth[0, 0] = 0.0
    dist = M.depth_to_distance(depth, Kd)
    assert dist[1, 1] == 2.0
    assert dist[1, 2] == pytest.approx(2.0 * math.sqrt(1 + 0.01**2))
    assert dist[2, 2] == pytest.approx(2.0 * math.sqrt(1 + 2 * 0.01**2))
    assert dist[0, 0] == 0.0


def test_visibility_mask_bop19_rules():
    model = np.array([[1.0, 1.0, 0.0, 1.0, 1.0]])
    test = np.array([[1.01, 0.5, 1.0, 0.0, 0.99]])
    # in front of the scene / occluded / no model / depth hole / 10 mm behind (within delta)
    np.testing.assert_array_equal(M.visibility_mask(test, model, 0.015), [[True, False, False, True, True]])
    with pytest.raises(SixdPoseError, match="differ in size"):
        M.visibility_mask(test, model[:, :3], 0.015)


def test_vsd_from_distances_hand_case():
    gt = np.array([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    est = np.array([[1.0, 1.02, 0.0, 1.0], [1.1, 1.0, 0.0, 0.0]])
    test = np.array([[1.0, 1.0, 1.0, 0.5], [1.0, 0.0, 0.0, 0.0]])
    # V_gt = {00, 01, 02, 10, 11}. The estimate's own visible pixels are 00 and 11 (01 and 10
    # lie behind the scene, 03 is occluded), plus 01 and 10 because they cover visible GT
    # pixels. Union 5 pixels, intersection 4 with differences 0, 0.02, 0.1, 0; 02 costs 1.
    e = M.vsd_from_distances(est, gt, test, 0.015, [0.01, 0.05, 0.2])
    np.testing.assert_allclose(e, [3 / 5, 2 / 5, 1 / 5])
    # Nothing rendered anywhere: BOP's convention is an error of 1.
    z = np.zeros((2, 4))
    np.testing.assert_array_equal(M.vsd_from_distances(z, z, test, 0.015, [0.01, 0.02]), [1.0, 1.0])


def _scene(width=320, height=240):
    Kv = np.array([[600.0, 0.0, width / 2], [0.0, 600.0, height / 2], [0.0, 0.0, 1.0]])
    mesh = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    depth = M.render_model_depths(mesh, [(np.eye(3), T)], Kv, width, height)[0]
    return Kv, mesh, depth


def test_vsd_is_zero_at_the_gt_pose_and_one_far_away():
    Kv, mesh, depth = _scene()
    taus = M.BOP_VSD_TAU_FRACTIONS * 0.1 * math.sqrt(3)
    assert (depth > 0).sum() > 1000
    np.testing.assert_array_equal(M.vsd_error(np.eye(3), T, np.eye(3), T, depth, Kv, mesh, taus), 0.0)
    far = M.vsd_error(np.eye(3), T + [0.3, 0.0, 0.0], np.eye(3), T, depth, Kv, mesh, taus)
    np.testing.assert_array_equal(far, 1.0)
    # Occluded left half and depth holes: only the visible surface counts, still 0 at GT.
    observed = depth.copy()
    observed[:, : depth.shape[1] // 2] = np.where(depth[:, : depth.shape[1] // 2] > 0, 0.3, 0.0)
    observed[100:110, 200:210] = 0.0
    np.testing.assert_array_equal(M.vsd_error(np.eye(3), T, np.eye(3), T, observed, Kv, mesh, taus), 0.0)


def test_vsd_of_a_pose_20mm_too_far():
    Kv, mesh, depth = _scene()
    d = 0.1 * math.sqrt(3)
    taus = M.BOP_VSD_TAU_FRACTIONS * d  # 8.7 mm, 17.3 mm, 26 mm, ...
    e = M.vsd_error(np.eye(3), T + [0, 0, 0.02], np.eye(3), T, depth, Kv, mesh, taus)
    # Tolerances under the ~20 mm offset: every overlapping pixel is wrong.
    np.testing.assert_array_equal(e[:2], 1.0)
    # Larger ones: only the rim of the GT silhouette the smaller estimate leaves bare,
    # 1 - (0.45 / 0.47)^2 of it (front faces at 0.45 m and 0.47 m).
    np.testing.assert_allclose(e[2:], 1 - (0.45 / 0.47) ** 2, atol=0.01)


# ------------------------------------------------------------------------------------------
# BOP average recalls
# ------------------------------------------------------------------------------------------


def test_bop_threshold_sets():
    np.testing.assert_array_equal(M.BOP_VSD_TAU_FRACTIONS, [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5])
    np.testing.assert_array_equal(M.BOP_VSD_THETAS, M.BOP_VSD_TAU_FRACTIONS)
    np.testing.assert_array_equal(M.BOP_MSPD_THRESHOLDS_PX, np.arange(5, 51, 5))


def test_average_recalls_hand_cases():
    # MSSD: diameter 0.1 m, thresholds 5..50 mm; 12 mm passes 8 of 10, a miss none.
    assert M.ar_mssd([0.0, 0.012, M.MISSING], 0.1) == pytest.approx((10 + 8 + 0) / 30)
    # MSPD: BOP's test is strict: 10 px fails the 10 px threshold.
    assert M.ar_mspd([10.0], 640) == pytest.approx(0.8)
    # A 1280-wide image doubles the thresholds (10..100 px): 12 px passes 9 of 10.
    assert M.ar_mspd([12.0], 1280) == pytest.approx(0.9)
    # VSD: row 0 passes all thetas at tau 0, and thetas 0.25..0.5 at tau 1; a miss never.
    assert M.ar_vsd([[0.0, 0.2], [M.MISSING, M.MISSING]]) == pytest.approx((10 + 6) / 40)
    assert M.bop_average_recall(0.4, 0.6, 0.8) == pytest.approx(0.6)

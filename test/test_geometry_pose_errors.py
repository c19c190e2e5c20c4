"""Tests of sixd_pose_ros.geometry.pose_errors and .normalization (diameter, normalization)."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist

from sixd_pose_ros.geometry import (
    ObjectNormalization,
    add_error,
    adds_error,
    matrix_from_axis_angle,
    normalization_from_points,
    object_diameter,
    projection_error_2d,
    random_rotations,
    rotation_error_deg,
    translation_error,
)

K = np.array([[600.0, 0.0, 320.0], [0.0, 610.0, 240.0], [0.0, 0.0, 1.0]])


def cube_surface_points(half=0.05, n=5):
    """Points on a cube surface, exactly symmetric under 90 degree turns about the axes."""
    g = np.linspace(-half, half, n)
    pts = np.array([p for p in itertools.product(g, g, g) if np.max(np.abs(p)) == half])
    return pts


def test_add_pure_translation_equals_offset():
    pts = np.random.default_rng(0).uniform(-0.1, 0.1, (100, 3))
    R = random_rotations(1, rng=1)[0]
    t = np.array([0.1, -0.05, 0.8])
    offset = np.array([0.003, 0.004, 0.0])  # 5 mm
    assert add_error(R, t + offset, R, t, pts) == pytest.approx(0.005, abs=1e-12)
    assert adds_error(R, t, R, t, pts) == pytest.approx(0.0, abs=1e-12)
    # (3, 1) translations as in BOP files.
    assert add_error(R, (t + offset)[:, None], R, t[:, None], pts) == pytest.approx(0.005)


def test_adds_symmetric_cube_rotated_90():
    pts = cube_surface_points()
    t = np.array([0.0, 0.0, 0.6])
    R_gt = np.eye(3)
    R_est = matrix_from_axis_angle([0, 0, 1], np.pi / 2)
    assert adds_error(R_est, t, R_gt, t, pts) == pytest.approx(0.0, abs=1e-12)
    assert add_error(R_est, t, R_gt, t, pts) > 0.03  # large: most points moved by ~half a face
    assert rotation_error_deg(R_est, R_gt) == pytest.approx(90.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_adds_never_exceeds_add(seed):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-0.1, 0.1, (60, 3))
    R1, R2 = random_rotations(2, rng=rng)
    t1, t2 = rng.uniform(-0.1, 0.1, (2, 3)) + [0, 0, 1]
    assert adds_error(R1, t1, R2, t2, pts) <= add_error(R1, t1, R2, t2, pts) + 1e-12


def test_projection_error_2d_hand_computed():
    # A planar object facing the camera at depth d shifted by dx: every point moves fx*dx/d px.
    g = np.linspace(-0.05, 0.05, 4)
    pts = np.array([[x, y, 0.0] for x in g for y in g])
    d, dx = 0.5, 0.01
    t = np.array([0.0, 0.0, d])
    err = projection_error_2d(np.eye(3), t + [dx, 0, 0], np.eye(3), t, pts, K)
    assert err == pytest.approx(600.0 * dx / d)
    assert projection_error_2d(np.eye(3), t, np.eye(3), t, pts, K) == 0.0


def test_rotation_and_translation_error():
    R = random_rotations(1, rng=4)[0]
    dR = matrix_from_axis_angle([1.0, 2.0, -0.5], np.deg2rad(30.0))
    assert rotation_error_deg(dR @ R, R) == pytest.approx(30.0, abs=1e-9)
    assert rotation_error_deg(R, R) == pytest.approx(0.0, abs=1e-6)
    assert translation_error([0.3, 0.4, 1.0], [0.0, 0.0, 1.0]) == pytest.approx(0.5)
    assert translation_error(np.zeros((3, 1)), np.array([[0.0], [0.0], [2.0]])) == 2.0
    Rs = random_rotations(5, rng=5)
    assert rotation_error_deg(Rs, Rs).shape == (5,)
    assert translation_error(np.zeros((5, 3)), np.ones((5, 3))).shape == (5,)


# ---------------------------------------------------------------- normalization, diameter


def test_normalization_round_trips_and_unit_sphere():
    rng = np.random.default_rng(6)
    pts = rng.uniform([-0.02, 0.1, 0.3], [0.08, 0.15, 0.5], (200, 3))
    norm = normalization_from_points(pts)
    np.testing.assert_allclose(norm.center, 0.5 * (pts.min(0) + pts.max(0)))
    pn = norm.to_normalized(pts)
    assert np.linalg.norm(pn, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(norm.to_metric(pn), pts, atol=1e-15)

    R = random_rotations(1, rng=7)[0]
    t = np.array([0.05, -0.02, 0.7])
    R_n, t_n = norm.pose_to_normalized(R, t)
    # The normalized pose maps normalized points to the camera frame scaled by 1/scale.
    np.testing.assert_allclose(pn @ R_n.T + t_n, (pts @ R.T + t) / norm.scale, atol=1e-12)
    R_m, t_m = norm.pose_to_metric(R_n, t_n)
    np.testing.assert_allclose(R_m, R)
    np.testing.assert_allclose(t_m, t, atol=1e-15)
    # Batched poses.
    Rs = random_rotations(3, rng=8)
    ts = rng.uniform(size=(3, 3))
    Rb, tb = norm.pose_to_normalized(Rs, ts)
    np.testing.assert_allclose(tb[1], norm.pose_to_normalized(Rs[1], ts[1])[1])


def test_normalization_rejects_degenerate():
    with pytest.raises(ValueError):
        normalization_from_points(np.ones((5, 3)))
    with pytest.raises(ValueError):
        ObjectNormalization(center=np.zeros(3), scale=0.0)


def test_object_diameter_exact_and_degenerate():
    cube = np.array(list(itertools.product([0.0, 1.0], repeat=3)))
    assert object_diameter(cube) == pytest.approx(np.sqrt(3))
    pts = np.random.default_rng(9).normal(size=(500, 3))
    assert object_diameter(pts) == pytest.approx(pdist(pts).max())
    # Flat (coplanar) and straight (collinear) inputs make Qhull fail in 3D.
    square = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0.5, 0.5, 0]], float)
    assert object_diameter(square) == pytest.approx(np.sqrt(2))
    tilted = square @ random_rotations(1, rng=10)[0].T + 0.3
    assert object_diameter(tilted) == pytest.approx(np.sqrt(2))
    line = np.outer(np.linspace(-1, 2, 7), [1.0, 2.0, 2.0])
    assert object_diameter(line) == pytest.approx(9.0)
    assert object_diameter(np.zeros((1, 3))) == 0.0
    assert object_diameter(np.zeros((4, 3))) == 0.0
    assert object_diameter(np.array([[0, 0, 0], [3, 4, 0.0]])) == pytest.approx(5.0)

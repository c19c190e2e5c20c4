"""Tests of sixd_pose_ros.geometry.rotations (numpy and torch)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixd_pose_ros.geometry import (
    axis_angle_from_matrix,
    geodesic_angle,
    geodesic_angle_torch,
    inplane_rotation,
    look_at_rotation,
    matrix_from_axis_angle,
    matrix_from_quat_xyzw,
    matrix_from_quat_xyzw_torch,
    project,
    quat_xyzw_from_matrix,
    quat_xyzw_from_matrix_torch,
    random_rotations,
)

SETTINGS = settings(max_examples=60, deadline=None)

finite = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)
vec3 = st.tuples(finite, finite, finite).map(np.array).filter(lambda v: np.linalg.norm(v) > 1e-3)
vec4 = st.tuples(finite, finite, finite, finite).map(np.array).filter(
    lambda v: np.linalg.norm(v) > 1e-3)


def assert_rotation(R, atol=1e-9):
    R = np.asarray(R, dtype=np.float64)
    eye = np.broadcast_to(np.eye(3), R.shape)
    np.testing.assert_allclose(np.swapaxes(R, -1, -2) @ R, eye, atol=atol)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=atol)


# ---------------------------------------------------------------- quaternions


def test_quat_known_value_ros_order():
    # 90 degrees about z: q = (0, 0, sin 45, cos 45) in (x, y, z, w).
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    s = np.sqrt(0.5)
    np.testing.assert_allclose(quat_xyzw_from_matrix(R), [0, 0, s, s], atol=1e-12)
    np.testing.assert_allclose(matrix_from_quat_xyzw([0, 0, s, s]), R, atol=1e-12)
    np.testing.assert_allclose(quat_xyzw_from_matrix(np.eye(3)), [0, 0, 0, 1])


@SETTINGS
@given(vec4)
def test_quat_matrix_round_trip(q):
    R = matrix_from_quat_xyzw(q)
    assert_rotation(R)
    q2 = quat_xyzw_from_matrix(R)
    assert q2[3] >= 0.0
    np.testing.assert_allclose(np.linalg.norm(q2), 1.0, atol=1e-12)
    # Same rotation up to the sign of q (w ~ 0 leaves the sign ambiguous).
    np.testing.assert_allclose(abs(q2 @ (q / np.linalg.norm(q))), 1.0, atol=1e-9)
    np.testing.assert_allclose(matrix_from_quat_xyzw(q2), R, atol=1e-12)


def test_quat_batch_shapes_and_canonical_sign():
    R = random_rotations(10, rng=0).reshape(2, 5, 3, 3)
    q = quat_xyzw_from_matrix(R)
    assert q.shape == (2, 5, 4)
    assert np.all(q[..., 3] >= 0)
    np.testing.assert_allclose(matrix_from_quat_xyzw(q), R, atol=1e-12)
    np.testing.assert_allclose(matrix_from_quat_xyzw(-q), R, atol=1e-12)  # q and -q alike


# ---------------------------------------------------------------- axis-angle, geodesic


@SETTINGS
@given(vec3, st.floats(1e-3, np.pi - 1e-3))
def test_axis_angle_round_trip(axis, angle):
    R = matrix_from_axis_angle(axis, angle)
    assert_rotation(R)
    a2, ang2 = axis_angle_from_matrix(R)
    np.testing.assert_allclose(ang2, angle, atol=1e-9)
    np.testing.assert_allclose(a2, axis / np.linalg.norm(axis), atol=1e-6)


def test_axis_angle_identity_and_batch():
    axis, angle = axis_angle_from_matrix(np.stack([np.eye(3), inplane_rotation(0.5)]))
    np.testing.assert_allclose(angle, [0.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(axis, [[0, 0, 1], [0, 0, 1]], atol=1e-12)
    R = matrix_from_axis_angle(np.array([[1.0, 0, 0], [0, 2.0, 0]]), np.array([0.1, 0.2]))
    assert R.shape == (2, 3, 3)
    # Right-hand rule: +90 deg about x maps y to z.
    np.testing.assert_allclose(matrix_from_axis_angle([1, 0, 0], np.pi / 2) @ [0, 1, 0],
                               [0, 0, 1], atol=1e-12)


@SETTINGS
@given(vec3, st.floats(-np.pi, np.pi), st.integers(0, 2**31 - 1))
def test_geodesic_angle_symmetric_and_equals_axis_angle(axis, angle, seed):
    R1 = random_rotations(1, rng=seed)[0]
    dR = matrix_from_axis_angle(axis, angle)
    R2 = R1 @ dR
    np.testing.assert_allclose(geodesic_angle(R1, R2), abs(angle), atol=1e-7)
    np.testing.assert_allclose(geodesic_angle(R1, R2), geodesic_angle(R2, R1), atol=1e-12)


def test_geodesic_angle_edge_cases():
    assert geodesic_angle(np.eye(3), np.eye(3)) == 0.0
    np.testing.assert_allclose(geodesic_angle(np.eye(3), inplane_rotation(np.pi)), np.pi)
    # Accurate for tiny angles (arccos would return ~1e-8 rad of noise here).
    np.testing.assert_allclose(geodesic_angle(np.eye(3), inplane_rotation(1e-9)), 1e-9,
                               rtol=1e-6)
    # Slightly non-orthonormal input stays finite (no domain error).
    assert np.isfinite(geodesic_angle(np.eye(3) * (1 + 1e-9), np.eye(3)))
    # Broadcasting.
    Rs = random_rotations(4, rng=1)
    assert geodesic_angle(Rs, np.eye(3)).shape == (4,)


def test_inplane_rotation_about_camera_z():
    R = inplane_rotation(np.pi / 2)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)  # x -> y (down)
    np.testing.assert_allclose(R @ [0, 0, 1], [0, 0, 1], atol=1e-12)
    assert inplane_rotation(np.zeros((3, 2))).shape == (3, 2, 3, 3)


# ---------------------------------------------------------------- look-at


@SETTINGS
@given(vec3, st.floats(0.1, 5.0))
def test_look_at_origin_on_optical_axis(view_dir, d):
    R = look_at_rotation(view_dir)
    assert_rotation(R)
    t = np.array([0.0, 0.0, d])
    K = np.array([[600.0, 0, 311.5], [0, 620.0, 247.0], [0, 0, 1]])
    # The object origin projects to the principal point.
    np.testing.assert_allclose(project(R @ np.zeros(3) + t, K), [311.5, 247.0], atol=1e-9)
    # The camera center (-R^T t in object coordinates) lies on the ray view_dir at distance d.
    v = view_dir / np.linalg.norm(view_dir)
    np.testing.assert_allclose(-R.T @ t, d * v, atol=1e-9)
    # Image up (-y_cam) is as close as possible to the object's up (+z): x_cam is orthogonal
    # to up and -y_cam has a non-negative component along up.
    up = np.array([0.0, 0.0, 1.0])
    if np.linalg.norm(np.cross(v, up)) > 1e-3:
        assert abs(R[0] @ up) < 1e-9
        assert -R[1] @ up > 0


def test_look_at_simple_case():
    # Camera on the -y axis of the object looking along +y, object z up -> image up.
    R = look_at_rotation([0.0, -1.0, 0.0])
    np.testing.assert_allclose(R, [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)


@pytest.mark.parametrize("v", [[0, 0, 1], [0, 0, -1], [0, 0, 2.5]])
def test_look_at_parallel_to_up_has_no_nan(v):
    R = look_at_rotation(v)
    assert np.all(np.isfinite(R))
    assert_rotation(R)
    np.testing.assert_allclose(R[2], -np.asarray(v) / np.linalg.norm(v), atol=1e-12)


def test_look_at_batch_with_degenerate_items():
    v = np.array([[0, 0, 1.0], [1.0, 0, 0], [0, 0, -1.0], [0.3, -0.2, 0.9]])
    R = look_at_rotation(v, up=[0, 0, 1])
    assert R.shape == (4, 3, 3)
    assert_rotation(R)
    np.testing.assert_allclose(R[1], look_at_rotation(v[1]))


# ---------------------------------------------------------------- random


def test_random_rotations_valid_deterministic_uniform():
    R = random_rotations(20000, rng=123)
    assert R.shape == (20000, 3, 3)
    assert_rotation(R)
    np.testing.assert_array_equal(R[:5], random_rotations(5, rng=123))
    # Haar measure: E[R] = 0 and the angle density is (1 - cos a) / pi, so E[angle] = pi/2 + 2/pi.
    np.testing.assert_allclose(R.mean(axis=0), np.zeros((3, 3)), atol=0.02)
    np.testing.assert_allclose(geodesic_angle(R, np.eye(3)).mean(), np.pi / 2 + 2 / np.pi,
                               atol=0.02)


# ---------------------------------------------------------------- torch


def test_torch_versions_match_numpy():
    torch = pytest.importorskip("torch")
    R = random_rotations(200, rng=7)
    # Include near-180 degree rotations, where naive conversions break down.
    R_pi = matrix_from_axis_angle(np.random.default_rng(0).normal(size=(20, 3)), np.pi - 1e-7)
    R = np.concatenate([R, R_pi, np.eye(3)[None]])
    q_np = quat_xyzw_from_matrix(R)
    q_t = quat_xyzw_from_matrix_torch(torch.from_numpy(R)).numpy()
    assert np.all(q_t[:, 3] >= 0)
    np.testing.assert_allclose(np.abs(np.sum(q_t * q_np, axis=1)), 1.0, atol=1e-9)
    np.testing.assert_allclose(matrix_from_quat_xyzw_torch(torch.from_numpy(q_np)).numpy(), R,
                               atol=1e-9)
    R2 = random_rotations(R.shape[0], rng=8)
    np.testing.assert_allclose(
        geodesic_angle_torch(torch.from_numpy(R), torch.from_numpy(R2)).numpy(),
        geodesic_angle(R, R2), atol=1e-9)
    # float32 and batch shape preserved.
    q32 = quat_xyzw_from_matrix_torch(torch.from_numpy(R[:6].reshape(2, 3, 3, 3)).float())
    assert q32.shape == (2, 3, 4) and q32.dtype == torch.float32


def test_torch_gradients_finite():
    torch = pytest.importorskip("torch")
    q = torch.tensor([[0.1, -0.2, 0.3, 0.9], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64,
                     requires_grad=True)
    R = matrix_from_quat_xyzw_torch(q)
    # Zero angle (second item vs identity) is where a naive norm/arccos gives NaN gradients.
    ang = geodesic_angle_torch(R, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    ang.sum().backward()
    assert torch.all(torch.isfinite(q.grad))
    Rm = torch.from_numpy(random_rotations(3, rng=2)).requires_grad_(True)
    quat_xyzw_from_matrix_torch(Rm).sum().backward()
    assert torch.all(torch.isfinite(Rm.grad))

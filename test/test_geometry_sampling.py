"""Tests of sixd_pose_ros.geometry.sampling."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from sixd_pose_ros.geometry import (
    farthest_point_sampling,
    geodesic_angle,
    grid_index,
    icosphere_vertices,
    inplane_angles,
    inplane_rotation,
    look_at_rotation,
    nearest_viewpoints,
    quat_xyzw_from_matrix,
    split_grid_index,
    viewpoint_rotation_grid,
)


@pytest.mark.parametrize("k,n", [(0, 12), (1, 42), (2, 162), (3, 642), (4, 2562)])
def test_icosphere_counts_unit_and_distinct(k, n):
    v = icosphere_vertices(k)
    assert v.shape == (n, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-12)
    d, _ = cKDTree(v).query(v, k=2)
    assert d[:, 1].min() > 0.5 * d[:, 1].max()  # near-uniform, no duplicates


def test_icosphere_returns_copy():
    v = icosphere_vertices(1)
    v[:] = 0
    assert np.all(np.linalg.norm(icosphere_vertices(1), axis=1) > 0.99)


def test_inplane_angles():
    a = inplane_angles(36)
    assert a.shape == (36,)
    assert a[0] == 0.0 and a[-1] < 2 * np.pi
    np.testing.assert_allclose(np.diff(a), np.deg2rad(10.0))
    np.testing.assert_allclose(inplane_angles(1), [0.0])


def test_rotation_grid_size_layout_and_distinct():
    R, views, angles = viewpoint_rotation_grid(4, 36, return_layout=True)
    assert R.shape == (92232, 3, 3) and R.dtype == np.float32
    assert views.shape == (2562, 3) and angles.shape == (36,)
    assert R.shape == viewpoint_rotation_grid().shape  # defaults are the codebook grid

    # Layout: index = view_idx * n_inplane + inplane_idx.
    rng = np.random.default_rng(0)
    for vi, ai in zip(rng.integers(0, 2562, 20), rng.integers(0, 36, 20)):
        idx = grid_index(vi, ai, 36)
        assert tuple(split_grid_index(idx, 36)) == (vi, ai)
        expected = inplane_rotation(angles[ai]) @ look_at_rotation(views[vi])
        np.testing.assert_allclose(R[idx], expected, atol=1e-6)
    # The in-plane rotation keeps the optical axis: row z = -view for all angles.
    np.testing.assert_allclose(R[:, 2, :].reshape(2562, 36, 3),
                               np.broadcast_to(-views[:, None, :], (2562, 36, 3)), atol=1e-6)
    # Proper rotations.
    Rd = R.astype(np.float64)
    np.testing.assert_allclose(np.linalg.det(Rd), 1.0, atol=1e-5)

    # All distinct: nearest other rotation via a KD-tree on quaternions (q and -q both stored
    # so that the sign ambiguity does not hide a neighbour).
    q = quat_xyzw_from_matrix(Rd)
    tree = cKDTree(np.concatenate([q, -q]))
    dist, nn = tree.query(q, k=2)
    assert np.all(dist[:, 0] < 1e-9)  # itself
    chord = dist[:, 1]
    # Chord between unit quaternions -> rotation angle: theta = 4 * arcsin(chord / 2).
    min_angle = np.degrees(4 * np.arcsin(np.clip(chord.min() / 2, 0, 1)))
    assert min_angle > 1.0, min_angle
    # Cross-check the KD-tree result with exact geodesic angles on the closest pairs.
    i = np.argsort(chord)[:50]
    j = nn[i, 1] % len(q)
    assert np.all(j != i)
    assert np.degrees(geodesic_angle(Rd[i], Rd[j])).min() > 1.0


def test_farthest_point_sampling():
    v = icosphere_vertices(2)
    idx = farthest_point_sampling(v, 20, start=5)
    assert idx.shape == (20,) and idx[0] == 5
    assert len(set(idx.tolist())) == 20
    np.testing.assert_array_equal(idx, farthest_point_sampling(v, 20, start=5))
    # The second sample is the antipode of the first.
    np.testing.assert_allclose(v[idx[1]], -v[5], atol=1e-12)
    # Greedy FPS is spread out: its min pairwise angle beats random subsets.
    def min_angle(sel):
        d = np.clip(v[sel] @ v[sel].T, -1, 1)
        np.fill_diagonal(d, -1)
        return np.arccos(d.max())
    rng = np.random.default_rng(0)
    assert min_angle(idx) > max(min_angle(rng.choice(len(v), 20, replace=False))
                                for _ in range(20))


def test_farthest_point_sampling_octahedron_and_duplicates():
    octa = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])
    dirs = np.concatenate([octa, octa * 3.0])  # duplicates (unnormalized)
    idx = farthest_point_sampling(dirs, 8)
    assert set(idx[:6].tolist()) == set(range(6))  # every axis before any duplicate
    assert len(set(idx.tolist())) == 8
    with pytest.raises(ValueError):
        farthest_point_sampling(octa, 7)


def test_nearest_viewpoints():
    v = icosphere_vertices(3)
    idx = nearest_viewpoints(v, v[10], k=6)
    assert idx.shape == (6,) and idx[0] == 10
    ang = np.arccos(np.clip(v[idx] @ v[10], -1, 1))
    assert np.all(np.diff(ang) >= -1e-12)
    # Unnormalized batched queries.
    q = np.stack([v[3] * 2.0, -v[7]])
    idx2 = nearest_viewpoints(v, q, k=4)
    assert idx2.shape == (2, 4) and idx2[0, 0] == 3
    all_ang = np.arccos(np.clip(v @ (-v[7]), -1, 1))
    np.testing.assert_allclose(all_ang[idx2[1]], np.sort(all_ang)[:4], atol=1e-12)

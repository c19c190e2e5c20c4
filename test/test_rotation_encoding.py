"""Tests of sixd_pose_ros.models.rotation_encoding (4D hyperspherical-harmonics encoding)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from conftest import torch_single_thread
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from sixd_pose_ros.geometry import (
    geodesic_angle,
    matrix_from_axis_angle,
    matrix_from_quat_xyzw,
    quat_xyzw_from_matrix,
    random_rotations,
)
from sixd_pose_ros.models.rotation_encoding import (
    HSH_DIM,
    HSH_TAU,
    hsh_encode,
    hsh_encode_matrix,
    hsh_encode_matrix_numpy,
    hsh_encode_numpy,
    hsh_scales,
    hsh_terms,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_single_thread():
        yield


def _unit_quats(n: int, seed: int) -> np.ndarray:
    q = np.random.default_rng(seed).standard_normal((n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


# Identity, 180 degree turns (w = 0, where w >= 0 canonicalization would cut), the axis poles
# (x = y = 0) and a near-identity rotation.
SPECIAL = np.array([
    [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, -1.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 0.0, 0.6, 0.8], [1e-7, 0.0, 0.0, 1.0],
    [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 2.5],
])


def test_term_set_is_128_even_degrees_without_constant():
    terms = hsh_terms()
    assert len(terms) == HSH_DIM == 128
    assert len(set(terms)) == 128
    per_degree = Counter(t.n for t in terms)
    # full degrees 2, 4, 6 ((n + 1)^2 real functions each) + 45 of degree 8
    assert per_degree == {2: 9, 4: 25, 6: 49, 8: 45}
    assert all(t.n % 2 == 0 and t.n > 0 for t in terms)
    assert all(0 <= t.m <= t.l <= t.n for t in terms)
    assert not any(t.m == 0 and t.part == 1 for t in terms)  # Im Z_nl0 == 0 is dropped
    assert terms == sorted(terms)  # canonical order: n, l, m, Re before Im
    assert max((t.l, t.m) for t in terms if t.n == 8) == (6, 4)


def test_shape_dtype_and_batching():
    q = torch.tensor(_unit_quats(35, 0)).reshape(5, 7, 4)
    h = hsh_encode(q)
    assert h.shape == (5, 7, 128) and h.dtype == torch.float64
    assert hsh_encode(q.float()).dtype == torch.float32
    assert hsh_encode(q[0, 0]).shape == (128,)
    torch.testing.assert_close(h.reshape(35, 128), hsh_encode(q.reshape(35, 4)))
    R = torch.tensor(random_rotations(6, 1)).reshape(2, 3, 3, 3)
    assert hsh_encode_matrix(R).shape == (2, 3, 128)
    with pytest.raises(ValueError):
        hsh_encode(q, weighting="bogus")


@pytest.mark.parametrize("weighting", ["heat", "none"])
def test_matches_numpy_reference(weighting):
    q = np.concatenate([_unit_quats(500, 1), SPECIAL])
    ref = hsh_encode_numpy(q, weighting)
    got64 = hsh_encode(torch.tensor(q), weighting).numpy()
    np.testing.assert_allclose(got64, ref, atol=1e-10, rtol=0)
    got32 = hsh_encode(torch.tensor(q, dtype=torch.float32), weighting).numpy()
    np.testing.assert_allclose(got32, ref, atol=2e-5 * np.abs(ref).max(), rtol=0)
    # matrix entry points agree with the quaternion ones
    R = matrix_from_quat_xyzw(q)
    np.testing.assert_allclose(hsh_encode_matrix_numpy(R, weighting), ref, atol=1e-9)
    np.testing.assert_allclose(hsh_encode_matrix(torch.tensor(R), weighting).numpy(), ref,
                               atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.tuples(*[st.floats(-1.0, 1.0, allow_nan=False)] * 4).filter(
    lambda v: np.linalg.norm(v) > 1e-3))
def test_antipodal_invariance(v):
    q = torch.tensor(np.array(v))
    torch.testing.assert_close(hsh_encode(-q), hsh_encode(q), atol=1e-12, rtol=0)
    np.testing.assert_allclose(hsh_encode_numpy(-np.array(v)), hsh_encode_numpy(np.array(v)),
                               atol=1e-10)
    # scale invariance too (input is normalized)
    torch.testing.assert_close(hsh_encode(3.0 * q), hsh_encode(q), atol=1e-12, rtol=1e-9)


def test_gram_matrix_orthonormal_and_well_conditioned():
    q = torch.tensor(_unit_quats(20000, 2))
    F = hsh_encode(q, "none")
    G = (F.T @ F / F.shape[0]).numpy()  # Monte Carlo of E[f_i f_j], = identity in theory
    assert np.abs(np.diag(G) - 1.0).max() < 0.1
    assert np.abs(G - np.diag(np.diag(G))).max() < 0.08
    assert np.linalg.cond(G) < 2.0
    Fh = hsh_encode(q, "heat")
    assert (Fh.std(0) > 1e-3).all()  # no dead feature
    Gh = (Fh.T @ Fh / Fh.shape[0]).numpy()
    s = hsh_scales("heat") / hsh_scales("none")  # per-degree heat weights
    np.testing.assert_allclose(np.diag(Gh), s**2, rtol=0.1)
    assert np.linalg.cond(Gh) < 1.2 * (s.max() / s.min()) ** 2 < 300


def test_inner_product_is_heat_kernel_of_the_angle():
    """Addition theorem: over full degrees, <h(q1), h(q2)> = sum_n w_n^2 (n+1) sin((n+1)a)/sin a
    with a = angle between q1 and q2 on S^3, whatever the pair (a check of every normalization
    constant and sign)."""
    q1, q2 = _unit_quats(300, 3), _unit_quats(300, 4)
    full = [i for i, t in enumerate(hsh_terms()) if t.n <= 6]
    h1, h2 = hsh_encode_numpy(q1)[:, full], hsh_encode_numpy(q2)[:, full]
    a = np.arccos(np.clip(np.abs((q1 * q2).sum(1)), 0.0, 1.0))
    expected = sum(math.exp(-HSH_TAU * (n * (n + 2) - 8)) * (n + 1) * np.sin((n + 1) * a)
                   / np.sin(a) for n in (2, 4, 6))
    np.testing.assert_allclose((h1 * h2).sum(1), expected, atol=1e-9)
    # ... and that kernel decreases strictly with the rotation angle 2a over [0, pi]
    a = np.linspace(1e-4, np.pi / 2, 2000)
    k = sum(math.exp(-HSH_TAU * (n * (n + 2) - 8)) * (n + 1) * np.sin((n + 1) * a) / np.sin(a)
            for n in (2, 4, 6, 8))
    assert np.all(np.diff(k) < 0)


def test_smooth_through_180_degrees_and_sign_flips():
    """A rotation about a fixed axis through 180 degrees: the canonical quaternion (w >= 0)
    jumps to its antipode there, the encoding must not."""
    angles = np.linspace(np.pi - 0.05, np.pi + 0.05, 101)
    R = matrix_from_axis_angle(np.array([0.3, -0.5, 0.8]), angles)
    q = quat_xyzw_from_matrix(R)
    assert np.abs(np.diff(q, axis=0)).max() > 1.0  # the quaternion does jump
    h = hsh_encode_matrix(torch.tensor(R)).numpy()
    step = np.linalg.norm(np.diff(h, axis=0), axis=1)
    assert step.max() < 3.0 * step.mean() and step.max() < 0.1


def test_near_close_far_distinguishable_and_distance_tracks_angle():
    rng = np.random.default_rng(5)
    R1 = random_rotations(4000, rng)
    R2 = random_rotations(4000, rng)
    h1 = hsh_encode_matrix(torch.tensor(R1)).numpy()
    h2 = hsh_encode_matrix(torch.tensor(R2)).numpy()
    dist = np.linalg.norm(h1 - h2, axis=1)
    ang = geodesic_angle(R1, R2)
    rho = spearmanr(dist, ang)[0]
    assert rho > 0.9, rho
    # small perturbations: Lipschitz, and much closer than any far pair
    axes = rng.standard_normal((4000, 3))
    small = rng.uniform(0.0, np.radians(2.0), 4000)
    R3 = matrix_from_axis_angle(axes, small) @ R1
    h3 = hsh_encode_matrix(torch.tensor(R3)).numpy()
    d_small = np.linalg.norm(h3 - h1, axis=1)
    lipschitz = (d_small / np.maximum(small, 1e-9)).max()
    assert lipschitz < 20.0, lipschitz
    far = ang > np.radians(30.0)
    assert dist[far].min() > d_small.max()
    print(f"\nHSH: spearman(dist, angle) = {rho:.3f}; Lipschitz ~{lipschitz:.1f}/rad; "
          f"min dist > 30 deg {dist[far].min():.2f} vs max dist < 2 deg {d_small.max():.2f}")


def test_differentiable_everywhere():
    R = torch.tensor(matrix_from_quat_xyzw(SPECIAL[:-1]), requires_grad=True)
    h = hsh_encode_matrix(R)
    (h * torch.linspace(-1, 1, 128, dtype=h.dtype)).sum().backward()
    assert torch.isfinite(R.grad).all()
    q = torch.tensor(SPECIAL, requires_grad=True)
    hsh_encode(q).pow(2).sum().backward()
    assert torch.isfinite(q.grad).all()
    # analytic gradient matches finite differences
    q0 = torch.tensor(_unit_quats(2, 6), requires_grad=True)
    assert torch.autograd.gradcheck(hsh_encode, (q0,), eps=1e-6, atol=1e-5, fast_mode=True)

"""Tests of the procedural object generator (the sixd_pose_ros.render.procedural package).

The networks are trained on these objects and evaluated on held-out ones, so the tests check
what that relies on: determinism, distinct objects, a split that cannot leak, the face budget,
every family present, honest symmetry labels, valid geometry and visuals. A sample of 200
training objects is generated once per module (about 3 s) and shared.
"""
from __future__ import annotations

import collections
import functools
import time

import numpy as np
import pytest
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist

from sixd_pose_ros.render import procedural as P
from sixd_pose_ros.render.procedural import bodies
from sixd_pose_ros.render.procedural import symmetry as S

N_SAMPLE = 200
# Calibrated on the generator (see procedural.symmetry._FAR_SYMMETRIC / _FAR_ASYMMETRIC / _FAR_NEAR): true
# symmetries measure <= ~0.02; the generator keeps "none" objects only at >= 0.05 under every
# candidate rotation and "near" ones at >= 0.04 under their body's symmetry (with other samples).
SYMMETRIC_BELOW = 0.025
ASYMMETRIC_ABOVE = 0.03
NEAR_ABOVE = 0.02


@functools.lru_cache(maxsize=None)
def sample() -> tuple[P.ProceduralObject, ...]:
    return tuple(P.make_object("train", i) for i in range(N_SAMPLE))


def _probe_fraction(obj: P.ProceduralObject, R: np.ndarray, seed: int = 123, center=np.zeros(3)):
    """Off-surface fraction(s) for one rotation or a stack, about the object's z axis by default."""
    return S.symmetry_far_fraction(obj.mesh, R, center=center, seed=seed)


def _rz(a: float) -> np.ndarray:
    return bodies.rotation_about((0, 0, 1), a)


def _descriptor(obj: P.ProceduralObject) -> np.ndarray:
    """Cheap shape descriptor: sorted extents, area and volume, normalized by the diameter."""
    m = obj.watertight_mesh()
    d = obj.diameter
    ext = np.sort(m.extents) / d
    return np.concatenate([ext, [m.area / d ** 2, abs(m.volume) / d ** 3]])


# --- seeds and splits ----------------------------------------------------------------------

def test_seed_keys_of_splits_never_collide():
    # By construction the entropy tuples differ in their first word (the split code); check it,
    # and that the 128-bit states drawn from them do not collide either.
    assert len(set(P.SPLIT_CODE.values())) == len(P.SPLITS)
    assert set(P.SPLIT_CODE) == set(P.SPLITS)
    n = 3000
    states = {split: {tuple(P.object_seed(split, i).generate_state(4)) for i in range(n)}
              for split in P.SPLITS}
    assert all(len(s) == n for s in states.values())
    assert not (states["train"] & states["heldout"])
    assert P.object_seed("train", 5).entropy != P.object_seed("heldout", 5).entropy


@settings(max_examples=200, deadline=None)
@given(i=st.integers(min_value=0, max_value=2 ** 40), j=st.integers(min_value=0, max_value=2 ** 40))
def test_seed_entropy_is_injective(i, j):
    a = P.object_seed("train", i).entropy
    b = P.object_seed("heldout", j).entropy
    assert a != b
    assert (P.object_seed("train", i).entropy == P.object_seed("train", j).entropy) == (i == j)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        P.object_seed("test", 0)
    with pytest.raises(ValueError):
        P.object_seed("train", -1)
    with pytest.raises(ValueError):
        P.make_object("train", 0, max_faces=100)
    with pytest.raises(ValueError):
        P.make_object("train", 0, size_range=(0.3, 0.1))


def test_heldout_benchmark_ids_are_fixed():
    assert P.heldout_benchmark_ids() == list(range(20))
    assert P.heldout_benchmark_ids(5) == [0, 1, 2, 3, 4]


# --- determinism and distinctness ----------------------------------------------------------

def _fingerprint(obj: P.ProceduralObject) -> tuple:
    m = obj.mesh
    if obj.textured:
        vis = (np.asarray(m.visual.uv).tobytes(), np.asarray(m.visual.material.image).tobytes())
    else:
        vis = (np.asarray(m.visual.vertex_colors).tobytes(),)
    return (np.asarray(m.vertices).tobytes(), np.asarray(m.faces).tobytes(), obj.family, obj.symmetry,
            obj.diameter) + vis


@pytest.mark.parametrize("key", [("train", 0), ("train", 7), ("train", 123456), ("heldout", 3)])
def test_same_key_gives_identical_object(key):
    a, b = P.make_object(*key), P.make_object(*key)
    assert _fingerprint(a) == _fingerprint(b)
    assert a.seed_key == key


def test_cached_sample_matches_a_fresh_build():
    # Building other objects in between must not change an object (no hidden global state).
    assert _fingerprint(sample()[17]) == _fingerprint(P.make_object("train", 17))


def test_objects_are_pairwise_distinct():
    objs = sample()
    desc = np.stack([_descriptor(o) for o in objs])
    dist = np.linalg.norm(desc[:, None] - desc[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    i, j = np.unravel_index(np.argmin(dist), dist.shape)
    print(f"closest pair of {len(objs)}: {i}, {j} at descriptor distance {dist[i, j]:.4g}")
    assert dist.min() > 1e-4
    vertex_bytes = {np.asarray(o.mesh.vertices).tobytes() for o in objs}
    assert len(vertex_bytes) == len(objs)


def test_heldout_objects_differ_from_training_objects():
    train = np.stack([_descriptor(o) for o in sample()])
    held = np.stack([_descriptor(P.make_object("heldout", i)) for i in range(20)])
    dist = np.linalg.norm(held[:, None] - train[None], axis=-1)
    assert dist.min() > 1e-4


# --- families, budgets, sizes --------------------------------------------------------------

def test_every_family_appears_and_proportions_are_reported():
    objs = sample()
    fam = collections.Counter(o.family for o in objs)
    sym = collections.Counter(o.symmetry for o in objs)
    print("families:", dict(fam.most_common()))
    print("symmetries:", dict(sym.most_common()))
    print("textured:", sum(o.textured for o in objs), "of", len(objs))
    assert set(fam) == set(P.FAMILIES)
    assert set(sym) <= set(P.SYMMETRIES)
    for label in ("none", "near", "continuous_z"):
        assert sym[label] >= 0.08 * len(objs), label
    assert sum(v for k, v in sym.items() if k.startswith("discrete_")) >= 0.08 * len(objs)
    assert 0.35 * len(objs) <= sum(o.textured for o in objs) <= 0.65 * len(objs)
    assert all(o.base_family in P.FAMILIES for o in objs)


def test_face_budget_is_respected():
    assert max(len(o.mesh.faces) for o in sample()) <= 10_000
    for i in range(0, 60, 3):
        o = P.make_object("train", i, max_faces=500)
        assert len(o.mesh.faces) <= 500
        assert o.mesh.is_watertight


def test_shape_parameters_do_not_depend_on_the_face_budget():
    for i in (2, 5, 9):
        fine, coarse = P.make_object("train", i), P.make_object("train", i, max_faces=800)
        assert fine.family == coarse.family and fine.symmetry == coarse.symmetry
        assert fine.diameter == pytest.approx(coarse.diameter)
        assert np.allclose(np.sort(fine.mesh.extents), np.sort(coarse.mesh.extents), rtol=0.15)


def test_size_range_is_honoured():
    for i in range(10):
        o = P.make_object("heldout", i, size_range=(0.1, 0.12))
        assert 0.1 - 1e-9 <= o.diameter <= 0.12 + 1e-9


# --- geometry and visuals ------------------------------------------------------------------

def test_geometry_is_valid():
    for o in sample():
        m = o.mesh
        v = np.asarray(m.vertices)
        assert np.isfinite(v).all()
        assert m.is_watertight and m.is_winding_consistent, (o.seed_key, o.family)
        g = o.watertight_mesh()
        assert g.volume > 0 and g.area > 0, (o.seed_key, o.family)
        assert 0.05 - 1e-9 <= o.diameter <= 0.30 + 1e-9
        center = 0.5 * (v.min(0) + v.max(0))
        assert np.linalg.norm(center) < 0.35 * o.diameter  # near-symmetric knobs shift the box a little
        if o.symmetry == "none":
            assert np.allclose(center, 0.0, atol=1e-9 * o.diameter + 1e-12)


def test_diameter_is_the_exact_largest_vertex_distance():
    for o in sample()[:80]:
        exact = pdist(np.asarray(o.mesh.vertices)).max()
        assert o.diameter == pytest.approx(exact, rel=1e-9)


def test_visuals_are_present():
    for o in sample():
        v = o.mesh.visual
        n = len(o.mesh.vertices)
        if o.textured:
            assert isinstance(v, trimesh.visual.TextureVisuals)
            uv = np.asarray(v.uv)
            assert uv.shape == (n, 2) and np.isfinite(uv).all()
            assert uv.min() > 0.0 and uv.max() < 1.0
            img = v.material.image
            assert img.size == (256, 256) and img.mode == "RGB"
            assert o.appearance.startswith("texture:")
        else:
            assert isinstance(v, trimesh.visual.ColorVisuals)
            colors = np.asarray(v.vertex_colors)
            assert colors.shape == (n, 4) and colors.dtype == np.uint8
            assert o.appearance.startswith("vertex:")
        assert o.visual_symmetry in (o.symmetry, "none")


# --- symmetry labels -------------------------------------------------------------------------

def test_symmetry_labels_hold_numerically():
    rng = np.random.default_rng(0)
    checked = collections.Counter()
    for o in sample()[:70]:
        angle = rng.uniform(0.3, 2 * np.pi - 0.3)
        if o.symmetry == "continuous_z":
            assert _probe_fraction(o, _rz(angle)) < SYMMETRIC_BELOW, (o.seed_key, o.family)
        elif o.symmetry.startswith("discrete_"):
            k = int(o.symmetry.split("_")[1])
            # k-fold, and not more: not 2k-fold (hence not continuous either)
            sym, half = _probe_fraction(o, np.stack([_rz(2 * np.pi / k), _rz(np.pi / k)]))
            assert sym < SYMMETRIC_BELOW and half > ASYMMETRIC_ABOVE, (o.seed_key, o.family, sym, half)
        else:  # "none" and "near": no rotation about z maps the shape onto itself
            bound = NEAR_ABOVE if o.symmetry == "near" else ASYMMETRIC_ABOVE
            rots = np.stack([_rz(angle)] + [_rz(2 * np.pi / j) for j in range(2, 7)])
            assert _probe_fraction(o, rots).min() > bound, (o.seed_key, o.family)
        checked[o.symmetry.split("_")[0]] += 1
    print("labels checked:", dict(checked))
    assert set(checked) == {"none", "near", "continuous", "discrete"}


def test_asymmetric_objects_have_no_hidden_flip_symmetry():
    # Hidden symmetries about other axes (e.g. the 180-degree flip of a bent but otherwise
    # symmetric body) would make "none" a lie for ADD; their axes are principal axes.
    for o in [o for o in sample() if o.symmetry == "none"][:15]:
        v = np.asarray(o.mesh.vertices)
        probe = S._SymmetryProbe(v, np.asarray(o.mesh.faces), seed=77)
        worst = min(probe.far_fraction(R) for R in S._candidate_rotations(probe))
        assert worst > ASYMMETRIC_ABOVE, (o.seed_key, o.family, worst)


def test_near_symmetric_objects_are_a_symmetric_body_plus_a_small_feature():
    near = [o for o in sample() if o.symmetry == "near"][:10]
    assert near
    for o in near:
        assert o.body_symmetry not in ("none", "near")
        assert o.extra.get("feature") in ("knob", "fin", "handle")
        # most of the surface still maps onto itself under the body's symmetry
        k = 7.3 if o.body_symmetry == "continuous_z" else int(o.body_symmetry.split("_")[1])
        assert NEAR_ABOVE < _probe_fraction(o, _rz(2 * np.pi / k)) < 0.5, o.seed_key


def test_symmetry_rotations_of_a_box_include_its_flips():
    box = next(o for o in sample() if o.family == "box" and o.symmetry == "discrete_2")
    group = S.symmetry_rotations(box)
    assert len(group) == 4  # identity, z half-turn and two horizontal flips
    for R in group:
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert _probe_fraction(box, R) < SYMMETRIC_BELOW


# --- demo object and speed -------------------------------------------------------------------

def test_bundled_demo_object_is_fixed_textured_and_asymmetric():
    a, b = P.make_bundled_demo_object(), P.make_bundled_demo_object()
    assert _fingerprint(a) == _fingerprint(b)
    assert a.textured and a.symmetry == "none" and a.seed_key == ("demo", 0)
    assert a.mesh.is_watertight and a.watertight_mesh().volume > 0
    assert 0.15 < a.diameter < 0.35
    probe = S._SymmetryProbe(np.asarray(a.mesh.vertices), np.asarray(a.mesh.faces), seed=5)
    assert min(probe.far_fraction(R) for R in S._candidate_rotations(probe)) > ASYMMETRIC_ABOVE


def test_generation_speed_is_reported():
    t0 = time.process_time()
    for i in range(50):
        P.make_object("heldout", 1000 + i)
    per_object = (time.process_time() - t0) / 50
    print(f"procedural objects: {1000 * per_object:.1f} ms CPU per object (mean of 50)")
    assert per_object < 0.2  # loose: the target is < 50 ms; this only catches a gross regression

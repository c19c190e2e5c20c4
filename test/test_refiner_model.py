"""Tests of sixd_pose_ros.models.refiner (Gen6D-style volume refiner)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from conftest import torch_single_thread
import torch
import torch.nn.functional as F

from sixd_pose_ros.geometry import (
    look_at_rotation,
    matrix_from_axis_angle,
    project,
    random_rotations,
)
from sixd_pose_ros.models.refiner import (
    RefinerConfig,
    RefinerOutput,
    VolumeRefiner,
    apply_similarity,
    crop_around_pose,
    crop_camera,
    grid_alignment_loss,
    iterative_refine,
    pose_from_crop,
    similarity_targets,
    volume_grid,
)

S = 128


def _crop_K(d: float, S: int = S) -> np.ndarray:
    f = 0.5 * S * math.sqrt(d * d - 1.0)
    c = 0.5 * (S - 1)
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def _textures(n: int, gen: torch.Generator, S: int = S) -> torch.Tensor:
    """Smooth random colour textures (n, 3, S, S) in [0, 1]."""
    low = torch.rand(n, 3, 8, 8, generator=gen)
    mid = torch.rand(n, 3, 32, 32, generator=gen)
    img = 0.7 * F.interpolate(low, size=S, mode="bilinear", align_corners=False) \
        + 0.3 * F.interpolate(mid, size=S, mode="bilinear", align_corners=False)
    return img.clamp(0, 1)


def _ref_cameras(n: int, rng: np.random.Generator, d: float = 2.5):
    dirs = rng.standard_normal((n, 3))
    R_ref = look_at_rotation(dirs)
    t_ref = np.tile([0.0, 0.0, d], (n, 1))
    K_ref = np.tile(_crop_K(d), (n, 1, 1))
    return (torch.tensor(K_ref, dtype=torch.float32), torch.tensor(R_ref, dtype=torch.float32),
            torch.tensor(t_ref, dtype=torch.float32))


def _random_pose_pair(n: int, rng: np.random.Generator):
    """Random input/GT poses in front of a camera with fx != fy and skew-free K (float64)."""
    R_in = random_rotations(n, rng)
    R_gt = random_rotations(n, rng)
    t_in = np.stack([rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n),
                     rng.uniform(2.0, 6.0, n)], -1)
    t_gt = t_in + rng.normal(0, 0.3, (n, 3))
    K = np.tile(np.array([[300.0, 0.0, 61.2], [0.0, 270.0, 66.9], [0.0, 0.0, 1.0]]), (n, 1, 1))
    K[:, 0, 0] += rng.uniform(-20, 20, n)
    T = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return T(R_in), T(t_in), T(R_gt), T(t_gt), T(K)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_single_thread():
        yield


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VolumeRefiner(RefinerConfig()).eval()


def _batch(model: VolumeRefiner, B: int = 2, Nr: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    ref_imgs = _textures(Nr, gen)
    with torch.no_grad():
        feats = model.encode_references(ref_imgs)
    K_ref, R_ref, t_ref = _ref_cameras(Nr, rng)
    d = 3.0
    K_q = torch.tensor(_crop_K(d), dtype=torch.float32).expand(B, 3, 3)
    R_in = torch.tensor(random_rotations(B, rng), dtype=torch.float32)
    t_in = torch.tensor([0.0, 0.0, d]).expand(B, 3)
    return (_textures(B, gen), K_q, R_in, t_in, feats.expand(B, *feats.shape),
            K_ref.expand(B, Nr, 3, 3), R_ref.expand(B, Nr, 3, 3), t_ref.expand(B, Nr, 3))


# ------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------


def test_shapes_and_unit_quaternion(model):
    args = _batch(model, B=2, Nr=6)
    assert args[4].shape == (2, 6, 32, 32, 32)
    with torch.no_grad():
        out = model(*args)
    assert isinstance(out, RefinerOutput)
    assert out.quat.shape == (2, 4) and out.offset.shape == (2, 2)
    assert out.log2_scale.shape == (2, 1)
    torch.testing.assert_close(out.quat.norm(dim=-1), torch.ones(2))
    # Near the identity similarity at initialization.
    assert (out.quat[:, 3] > 0.99).all()
    assert out.offset.abs().max() < 0.1 and out.log2_scale.abs().max() < 0.1
    with torch.no_grad():
        vol = model.build_volume(model.features(args[0]), (S, S), *args[1:])
    assert vol.shape == (2, 3 * 32, 32, 32, 32)
    assert torch.isfinite(vol).all()


def test_print_size_and_latency(model, capsys):
    args = _batch(model, B=1, Nr=6)
    n_params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        model(*args)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            model(*args)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.encode_references(torch.rand(6, 3, S, S))
        t_enc = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n[refiner] parameters: {n_params} | CPU forward B=1 Nr=6: "
              f"{1000 * min(times):.1f} ms (threads={torch.get_num_threads()}) | "
              f"encode 6 refs: {1000 * t_enc:.1f} ms")


def test_nan_images_give_finite_outputs(model):
    args = list(_batch(model, B=2, Nr=6))
    q = args[0].clone()
    q[0, :, 10:50, 20:70] = float("nan")
    q[1] = float("nan")
    args[0] = q
    refs = torch.rand(6, 3, S, S)
    refs[2] = float("nan")
    refs[3, 1, :5] = float("inf")
    with torch.no_grad():
        feats = model.encode_references(refs)
        assert torch.isfinite(feats).all()
        args[4] = feats.expand(2, *feats.shape)
        out = model(*args)
    for x in out:
        assert torch.isfinite(x).all()
    torch.testing.assert_close(out.quat.norm(dim=-1), torch.ones(2))


def test_nan_pose_still_finite_and_normalized(model):
    args = list(_batch(model, B=2, Nr=6))
    R = args[2].clone()
    R[1] = float("nan")
    args[2] = R
    with torch.no_grad():
        out = model(*args)
    for x in out:
        assert torch.isfinite(x).all()
    torch.testing.assert_close(out.quat.norm(dim=-1), torch.ones(2))


def test_any_number_of_refs(model):
    args = _batch(model, B=1, Nr=3)
    with torch.no_grad():
        out = model(*args)
    assert out.quat.shape == (1, 4)


def test_bad_shapes_raise(model):
    args = list(_batch(model, B=1, Nr=6))
    with pytest.raises(ValueError):
        model(args[0][:, :2], *args[1:])
    with pytest.raises(ValueError):
        model.encode_references(torch.rand(6, 1, S, S))


def test_volume_grid_layout():
    g = volume_grid(4)
    assert g.shape == (64, 3)
    assert float(g.min()) == -0.75 and float(g.max()) == 0.75  # cell centres of [-1, 1]
    v = g.view(4, 4, 4, 3)  # (z, y, x) = (D, H, W)
    assert (v[1, 2, 3] == torch.tensor([0.75, 0.25, -0.25])).all()


def test_config_validation():
    with pytest.raises(ValueError):
        RefinerConfig(grid_size=24)
    with pytest.raises(ValueError):
        RefinerConfig(crop_size=130)


def test_small_grid_config_runs():
    m = VolumeRefiner(RefinerConfig(grid_size=8, feat_channels=8, base_width=8)).eval()
    args = _batch(m, B=1, Nr=2)
    with torch.no_grad():
        out = m(*args)
    assert torch.isfinite(out.quat).all()


def test_volume_samples_reference_features_where_the_grid_projects():
    """A reference that is the query camera itself gives mean == query features at the centre."""
    torch.manual_seed(1)
    m = VolumeRefiner().eval()
    gen = torch.Generator().manual_seed(3)
    img = _textures(1, gen)
    d = 3.0
    K = torch.tensor(_crop_K(d), dtype=torch.float32)[None]
    R = torch.tensor(random_rotations(1, 5), dtype=torch.float32)
    t = torch.tensor([[0.0, 0.0, d]])
    with torch.no_grad():
        feats = m.encode_references(img)
        vol = m.build_volume(feats, (S, S), K, R, t, feats[None], K[None], R[None], t[None])
    C = m.config.feat_channels
    mean, var, query = vol[:, :C], vol[:, C:2 * C], vol[:, 2 * C:]
    torch.testing.assert_close(mean, query, atol=1e-5, rtol=1e-5)
    assert var.abs().max() < 1e-6


# ------------------------------------------------------------------------------------------
# similarity <-> rigid pose
# ------------------------------------------------------------------------------------------


def test_similarity_round_trip_exact():
    rng = np.random.default_rng(0)
    R_in, t_in, R_gt, t_gt, K = _random_pose_pair(64, rng)
    sim = similarity_targets(R_in, t_in, R_gt, t_gt, K, S)
    assert sim.quat.shape == (64, 4) and sim.offset.shape == (64, 2)
    assert sim.log2_scale.shape == (64, 1)
    R_new, t_new = apply_similarity(R_in, t_in, K, *sim, crop_size=S)
    assert (R_new - R_gt).abs().max() < 1e-4
    assert (t_new - t_gt).abs().max() < 1e-4


def test_similarity_round_trip_float32():
    rng = np.random.default_rng(1)
    R_in, t_in, R_gt, t_gt, K = (x.float() for x in _random_pose_pair(32, rng))
    sim = similarity_targets(R_in, t_in, R_gt, t_gt, K, S)
    R_new, t_new = apply_similarity(R_in, t_in, K, *sim, crop_size=S)
    assert (R_new - R_gt).abs().max() < 1e-4
    assert (t_new - t_gt).abs().max() < 1e-4


def test_identity_similarity_leaves_pose_unchanged():
    rng = np.random.default_rng(2)
    R_in, t_in, _, _, K = _random_pose_pair(16, rng)
    quat = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).expand(16, 4)
    R_new, t_new = apply_similarity(R_in, t_in, K, quat, torch.zeros(16, 2, dtype=torch.float64),
                                    torch.zeros(16, 1, dtype=torch.float64), S)
    torch.testing.assert_close(R_new, R_in)
    torch.testing.assert_close(t_new, t_in)
    sim = similarity_targets(R_in, t_in, R_in, t_in, K, S)
    torch.testing.assert_close(sim.quat, quat)
    assert sim.offset.abs().max() < 1e-12 and sim.log2_scale.abs().max() < 1e-12


def test_similarity_semantics_hand_computed():
    """offset (1, 0) moves the centre S/2 px right; log2_scale 1 halves the depth."""
    K = torch.tensor(_crop_K(3.0))[None]
    R = torch.eye(3, dtype=torch.float64)[None]
    t = torch.tensor([[0.0, 0.0, 3.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    _, t1 = apply_similarity(R, t, K, q, torch.tensor([[1.0, 0.0]], dtype=torch.float64),
                             torch.zeros(1, 1, dtype=torch.float64), S)
    uv = project(t1[0].numpy(), K[0].numpy())
    np.testing.assert_allclose(uv, [63.5 + 64.0, 63.5], atol=1e-9)
    assert abs(float(t1[0, 2]) - 3.0) < 1e-12
    _, t2 = apply_similarity(R, t, K, q, torch.zeros(1, 2, dtype=torch.float64),
                             torch.ones(1, 1, dtype=torch.float64), S)
    np.testing.assert_allclose(t2[0].numpy(), [0.0, 0.0, 1.5], atol=1e-12)
    # Rotation is about the object centre: t unchanged, R left-multiplied.
    q90 = torch.tensor([[0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)]],
                       dtype=torch.float64)
    R3, t3 = apply_similarity(R, t, K, q90, torch.zeros(1, 2, dtype=torch.float64),
                              torch.zeros(1, 1, dtype=torch.float64), S)
    torch.testing.assert_close(t3, t)
    np.testing.assert_allclose(R3[0].numpy(), matrix_from_axis_angle([0, 0, 1], math.pi / 2),
                               atol=1e-12)


def test_apply_similarity_is_differentiable():
    rng = np.random.default_rng(3)
    R_in, t_in, _, _, K = _random_pose_pair(4, rng)
    quat = torch.tensor([0.1, -0.2, 0.05, 1.0], dtype=torch.float64).repeat(4, 1)
    quat.requires_grad_(True)
    off = torch.full((4, 2), 0.1, dtype=torch.float64, requires_grad=True)
    ls = torch.full((4, 1), 0.2, dtype=torch.float64, requires_grad=True)
    R_new, t_new = apply_similarity(R_in, t_in, K, quat, off, ls, S)
    (R_new.sum() + t_new.sum()).backward()
    for x in (quat, off, ls):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(
        lambda q, o, s: apply_similarity(R_in, t_in, K, q, o, s, S),
        (quat.detach().requires_grad_(), off.detach().requires_grad_(),
         ls.detach().requires_grad_()))


def test_grid_alignment_loss_zero_and_monotonic():
    rng = np.random.default_rng(4)
    R_in, t_in, R_gt, t_gt, K = _random_pose_pair(8, rng)
    sim = similarity_targets(R_in, t_in, R_gt, t_gt, K, S)
    assert float(grid_alignment_loss(sim, sim)) < 1e-5
    assert float(grid_alignment_loss(sim, sim, squared=True)) < 1e-10
    # Same rotation with q and -q is the same transform.
    neg = RefinerOutput(-sim.quat, sim.offset, sim.log2_scale)
    assert float(grid_alignment_loss(neg, sim)) < 1e-5
    ident = RefinerOutput(torch.tensor([[0.0, 0.0, 0.0, 1.0]]), torch.zeros(1, 2),
                          torch.zeros(1, 1))
    prev = 0.0
    for angle in (0.05, 0.2, 0.5, 1.0):
        q = torch.tensor([[math.sin(angle / 2), 0.0, 0.0, math.cos(angle / 2)]])
        loss = float(grid_alignment_loss(RefinerOutput(q, ident.offset, ident.log2_scale), ident))
        assert loss > prev
        prev = loss
    prev = 0.0
    for off in (0.01, 0.1, 0.5):
        loss = float(grid_alignment_loss(
            RefinerOutput(ident.quat, torch.tensor([[off, -off]]), ident.log2_scale), ident))
        assert loss > prev
        # A pure shift moves every point by the same vector.
        assert abs(loss - off * math.sqrt(2)) < 1e-5
        prev = loss
    prev = 0.0
    for ls in (0.05, 0.3, 1.0):
        loss = float(grid_alignment_loss(
            RefinerOutput(ident.quat, ident.offset, torch.tensor([[ls]])), ident))
        assert loss > prev
        prev = loss


# ------------------------------------------------------------------------------------------
# learning signal
# ------------------------------------------------------------------------------------------


def test_overfit_one_example_loss_falls():
    """40 Adam steps on one synthetic example: the grid-alignment loss must fall 5x.

    Uses the default widths with a 16^3 volume (8x fewer points than the default 32^3, same
    code path), so that it stays within a few seconds on a CI machine.
    """
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(7)
    rng = np.random.default_rng(7)
    model = VolumeRefiner(RefinerConfig(grid_size=16)).train()
    Nr = 6
    ref_imgs = _textures(Nr, gen)
    K_ref, R_ref, t_ref = _ref_cameras(Nr, rng)
    d = 3.0
    K_q = torch.tensor(_crop_K(d), dtype=torch.float32)[None]
    query = _textures(1, gen)
    # Ground truth in the crop camera; the input pose is a perturbation of it centred in the crop.
    R_gt = random_rotations(1, rng)
    dR = matrix_from_axis_angle(rng.standard_normal(3), np.deg2rad(20.0))
    R_in = torch.tensor(dR.T @ R_gt[0], dtype=torch.float32)[None]
    t_in = torch.tensor([[0.0, 0.0, d]])
    t_gt = torch.tensor([[0.25, -0.2, d * 1.2]])
    target = similarity_targets(R_in.double(), t_in.double(), torch.tensor(R_gt), t_gt.double(),
                                K_q.double(), S)
    target = RefinerOutput(*(x.float() for x in target))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    t0 = time.perf_counter()
    for step in range(40):
        feats = model.encode_references(ref_imgs)[None]
        out = model(query, K_q, R_in, t_in, feats, K_ref[None], R_ref[None], t_ref[None])
        loss = grid_alignment_loss(out, target)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            # Gradients reach the shared 2D feature network, not just the head.
            g = model.features.body[0][0].weight.grad
            assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    elapsed = time.perf_counter() - t0
    print(f"\n[refiner] overfit: loss {losses[0]:.4f} -> {losses[-1]:.4f} in 40 steps, "
          f"{elapsed:.1f} s")
    assert all(math.isfinite(x) for x in losses)
    assert min(losses[-5:]) < losses[0] / 5.0


# ------------------------------------------------------------------------------------------
# crops on real images
# ------------------------------------------------------------------------------------------

K_REAL = np.array([[612.0, 0.0, 330.25], [0.0, 598.5, 231.75], [0.0, 0.0, 1.0]])


def test_crop_camera_geometry():
    t = np.array([0.6, -0.4, 4.0])
    K_c, R_v, H = crop_camera(K_REAL, t, S)
    d = np.linalg.norm(t)
    np.testing.assert_allclose(R_v @ t, [0.0, 0.0, d], atol=1e-12)
    np.testing.assert_allclose(R_v @ R_v.T, np.eye(3), atol=1e-12)
    assert abs(np.linalg.det(R_v) - 1.0) < 1e-12
    # The crop's x axis stays in the camera's x-z plane (the references' convention, no roll).
    assert abs(R_v[0, 1]) < 1e-12 and R_v[0, 0] > 0
    # The projected centre is the crop centre and the unit sphere's outline has radius S/2.
    np.testing.assert_allclose(project(R_v @ t, K_c), [63.5, 63.5], atol=1e-9)
    rng = np.random.default_rng(0)
    u = rng.standard_normal((20000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    uv = project((R_v @ (t + u).T).T, K_c)
    r = np.linalg.norm(uv - 63.5, axis=1)
    assert abs(r.max() - S / 2) < 0.05 and r.max() <= S / 2 + 1e-9
    # H maps real pixels to crop pixels consistently with the two cameras.
    pts = t + 0.8 * u[:50]
    uv_real = project(pts, K_REAL)
    h = (H @ np.c_[uv_real, np.ones(50)].T).T
    np.testing.assert_allclose(h[:, :2] / h[:, 2:], project((R_v @ pts.T).T, K_c), atol=1e-8)


def test_crop_around_pose_centres_the_object():
    H_img, W_img = 480, 640
    t = np.array([0.9, 0.5, 5.0])
    R = random_rotations(1, 3)[0]
    uv = project(t, K_REAL)
    yy, xx = np.mgrid[0:H_img, 0:W_img]
    blob = np.exp(-((xx - uv[0]) ** 2 + (yy - uv[1]) ** 2) / (2 * 6.0 ** 2))
    img = np.zeros((H_img, W_img, 3), np.uint8)
    img[..., 1] = np.round(255 * blob).astype(np.uint8)
    crop, K_c, R_c, t_c = crop_around_pose(img, K_REAL, R, t, S)
    assert crop.shape == (S, S, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(project(t_c, K_c), [63.5, 63.5], atol=1e-9)
    np.testing.assert_allclose(t_c, [0.0, 0.0, np.linalg.norm(t)], atol=1e-12)
    w = crop[..., 1].astype(np.float64)
    w = np.where(w > 20, w, 0.0)
    ys, xs = np.mgrid[0:S, 0:S]
    centroid = np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()
    np.testing.assert_allclose(centroid, [63.5, 63.5], atol=0.3)
    # The pose maps back to the real camera, and object points project consistently.
    R_v = R_c @ R.T
    R_back, t_back = pose_from_crop(R_v, R_c, t_c)
    np.testing.assert_allclose(R_back, R, atol=1e-12)
    np.testing.assert_allclose(t_back, t, atol=1e-12)


def test_crop_around_pose_rejects_bad_poses():
    img = np.zeros((480, 640, 3), np.uint8)
    R = np.eye(3)
    with pytest.raises(ValueError, match="behind the camera"):
        crop_around_pose(img, K_REAL, R, np.array([0.0, 0.0, -3.0]), S)
    with pytest.raises(ValueError, match="behind the camera"):
        crop_around_pose(img, K_REAL, R, np.array([2.0, 0.0, 0.0]), S)
    with pytest.raises(ValueError, match="inside"):
        crop_around_pose(img, K_REAL, R, np.array([0.0, 0.0, 0.9]), S)
    with pytest.raises(ValueError, match="finite"):
        crop_around_pose(img, K_REAL, R, np.array([0.0, np.nan, 3.0]), S)
    with pytest.raises(ValueError):
        crop_around_pose(np.zeros((480, 640), np.uint8), K_REAL, R, np.array([0, 0, 3.0]), S)


def test_crop_of_float_image_with_nan_is_finite():
    img = np.random.default_rng(0).random((100, 120, 3)).astype(np.float32)
    img[40:60, 50:70] = np.nan
    crop, *_ = crop_around_pose(img, np.array([[150.0, 0, 60], [0, 140.0, 50], [0, 0, 1]]),
                                np.eye(3), np.array([0.0, 0.0, 4.0]), 64)
    assert crop.dtype == np.float32 and np.isfinite(crop).all()


def test_iterative_refine_runs_and_returns_a_rotation(model):
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        feats = model.encode_references(_textures(6, gen))
    K_ref, R_ref, t_ref = _ref_cameras(6, rng)
    img = (np.random.default_rng(1).random((240, 320, 3)) * 255).astype(np.uint8)
    K = np.array([[300.0, 0, 160], [0, 290.0, 120], [0, 0, 1]])
    R0, t0 = random_rotations(1, 2)[0], np.array([0.3, -0.2, 6.0])
    calls = []

    def refs(R, t):
        calls.append(1)
        return feats, K_ref, R_ref, t_ref

    R, t = iterative_refine(model, img, K, R0, t0, refs, n_iters=3)
    assert len(calls) == 3
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
    assert np.isfinite(t).all() and t[2] > 0
    # An untrained (near-identity) refiner barely moves the pose.
    assert np.linalg.norm(t - t0) < 0.5
    with pytest.raises(ValueError):
        iterative_refine(model, img, K, R0, np.array([0.0, 0.0, -2.0]),
                         (feats, K_ref, R_ref, t_ref))

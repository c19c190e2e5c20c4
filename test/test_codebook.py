"""Pose codebook: grid layout, in-plane warps against direct renders, retrieval, persistence."""
from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import torch_single_thread
import torch
import trimesh
from torch import nn
from torch.nn import functional as F

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry import (
    geodesic_angle,
    inplane_angles,
    inplane_rotation,
    normalization_from_points,
    viewpoint_rotation_grid,
)
from sixd_pose_ros.geometry.crop_camera import crop_focal, object_centred_camera
from sixd_pose_ros.objects.codebook import (
    CODEBOOK_FORMAT_VERSION,
    Codebook,
    CodebookError,
    as_encoder,
    build_codebook,
    inplane_crops,
    pose_from_hit,
    render_codebook_views,
    rotate_crop,
    silhouette_boxes,
    translation_from_box,
)
from sixd_pose_ros.objects.references import DEFAULT_RENDER_DISTANCE
from sixd_pose_ros.render.renderer import RenderMesh, render


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_single_thread():
        yield


class TinyEncoder(nn.Module):
    """A stand-in pose encoder for testing the codebook mechanics: a deterministic random conv
    net (fixed seed, no training) whose outputs are L2-normalized ``(z_o, z_p)`` like the real
    one. It keeps coarse spatial layout (no global pooling), so different crops get different
    codes."""

    def __init__(self, dim: int = 128, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(3, 8, 4, stride=4)
        self.c2 = nn.Conv2d(8, 16, 4, stride=4)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(16 * 4 * 4, 2 * dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.c2(torch.tanh(self.c1(x - 0.5))))
        z_o, z_p = self.fc(self.pool(h).flatten(1)).chunk(2, dim=1)
        return F.normalize(z_o, dim=1), F.normalize(z_p, dim=1)


def asymmetric_object() -> trimesh.Trimesh:
    """Three differently coloured boxes: no symmetry, off-origin bounding centre."""
    parts = []
    for extents, offset, rgb in (((0.10, 0.06, 0.04), (0, 0, 0), (200, 60, 40)),
                                 ((0.03, 0.03, 0.08), (0.03, 0.01, 0.05), (40, 180, 60)),
                                 ((0.02, 0.07, 0.02), (-0.04, 0.04, -0.01), (50, 70, 220))):
        m = trimesh.creation.box(extents)
        m.apply_translation(offset)
        m.visual = trimesh.visual.ColorVisuals(
            m, vertex_colors=np.tile([*rgb, 255], (len(m.vertices), 1)).astype(np.uint8))
        parts.append(m)
    return trimesh.util.concatenate(parts)


@pytest.fixture(scope="module")
def mesh() -> trimesh.Trimesh:
    return asymmetric_object()


@pytest.fixture(scope="module")
def encoder() -> TinyEncoder:
    return TinyEncoder().eval()


@pytest.fixture(scope="module")
def views128(mesh):
    return render_codebook_views(mesh, subdivisions=1, size=128)


@pytest.fixture(scope="module")
def views64(mesh):
    return render_codebook_views(mesh, subdivisions=1, size=64)


@pytest.fixture(scope="module")
def small_codebook(mesh, encoder) -> Codebook:
    with torch_single_thread():
        return build_codebook(mesh, encoder, subdivisions=1, n_inplane=8, size=64, batch=64,
                              progress=False, name="boxes", encoder_id="a" * 64)


def _direct_crop(mesh, R, size):
    """Render the object-centred crop of rotation ``R`` directly (no warp)."""
    norm = normalization_from_points(np.asarray(mesh.vertices))
    _, t_m = norm.pose_to_metric(R, np.array([0.0, 0.0, DEFAULT_RENDER_DISTANCE]))
    f = float(crop_focal(DEFAULT_RENDER_DISTANCE, 1.0, size))
    c = 0.5 * (size - 1)
    K = np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
    out = render([RenderMesh.from_trimesh(mesh)], R[None], t_m[None], K, size, size)
    return out.rgb[0], out.mask[0] == 1


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


# ------------------------------------------------------------------------------------------------


def test_layout_matches_viewpoint_rotation_grid(views64, small_codebook):
    crops, masks, R_views, box_px = views64
    assert crops.shape == (42, 64, 64, 3) and crops.dtype == np.uint8
    assert masks.shape == (42, 64, 64) and masks.dtype == np.bool_ and masks.any(axis=(1, 2)).all()
    np.testing.assert_allclose(R_views, viewpoint_rotation_grid(1, 1), atol=1e-6)
    assert box_px.shape == (42,) and (box_px > 0).all() and (box_px <= 64).all()

    cb = small_codebook
    assert len(cb) == 42 * 8 and cb.codes.shape == (336, 128) and cb.codes.dtype == np.float16
    np.testing.assert_array_equal(cb.rotations, viewpoint_rotation_grid(1, 8))
    view, k = cb.view_and_angle(8 * 5 + 3)
    assert (view, k) == (5, 3)
    np.testing.assert_allclose(cb.rotation(8 * 5 + 3),
                               inplane_rotation(inplane_angles(8)[3]) @ R_views[5], atol=1e-6)
    # Angle-0 entries carry the views' own boxes; unit pose codes.
    np.testing.assert_allclose(cb.box_px[::8], box_px)
    np.testing.assert_allclose(np.linalg.norm(cb.codes.astype(np.float32), axis=1), 1.0, atol=2e-3)


@pytest.mark.parametrize("view", [3, 17, 30])
@pytest.mark.parametrize("angle", [0.35, 1.0, -2.0, np.pi / 2])
def test_inplane_warp_equals_direct_render(mesh, views128, view, angle):
    """Rotating the crop by +a is rendering inplane_rotation(+a) @ R_view (and not -a)."""
    crops, masks, R_views, _ = views128
    rgb_direct, mask_direct = _direct_crop(mesh, inplane_rotation(angle) @ R_views[view], 128)
    warped = rotate_crop(masks[view].astype(np.uint8) * 255, angle) >= 128
    assert _iou(warped, mask_direct) > 0.95
    wrong = rotate_crop(masks[view].astype(np.uint8) * 255, -angle) >= 128
    assert _iou(wrong, mask_direct) < 0.9  # the check can tell the directions apart
    # Colours too: the default light is symmetric about the optical axis.
    rgb_warped = rotate_crop(crops[view], angle)
    inner = warped & mask_direct
    diff = np.abs(rgb_warped.astype(int) - rgb_direct.astype(int))[inner]
    assert np.median(diff) <= 3


def test_inplane_crops_quarter_turns_match_warps(mesh):
    crops, _, _, _ = render_codebook_views(mesh, subdivisions=0, size=64)
    angles = inplane_angles(8)
    fast = inplane_crops(crops[2], angles)
    for k, a in enumerate(angles):
        direct = rotate_crop(crops[2], float(a))
        assert np.abs(fast[k].astype(int) - direct.astype(int)).max() <= 1
    # An angle count that is not a multiple of 4 warps every angle.
    np.testing.assert_array_equal(inplane_crops(crops[2], inplane_angles(3))[1],
                                  rotate_crop(crops[2], float(inplane_angles(3)[1])))


def test_silhouette_boxes_match_rotated_masks(mesh):
    _, masks, _, _ = render_codebook_views(mesh, subdivisions=0, size=128)
    angles = inplane_angles(8)
    box_px, box_off = silhouette_boxes(masks[:3], angles)
    for i in range(3):
        for k, a in enumerate(angles):
            m = rotate_crop(masks[i].astype(np.uint8) * 255, float(a)) >= 128
            ys, xs = np.nonzero(m)
            side = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            centre = np.array([xs.max() + xs.min(), ys.max() + ys.min()]) / 2 - 63.5
            assert abs(box_px[i * 8 + k] - side) <= 2.0
            np.testing.assert_allclose(box_off[i * 8 + k], centre, atol=1.5)


def test_lookup_returns_the_exact_entry(views64, encoder, small_codebook):
    cb = small_codebook
    crops = views64[0]
    angles = inplane_angles(8)
    queries = [0, 7, 8 * 11 + 2, 8 * 29 + 5, 8 * 41 + 6]
    batch = np.stack([inplane_crops(crops[i // 8], angles)[i % 8] for i in queries])
    x = torch.from_numpy(batch.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    with torch.no_grad():
        _, z_p = encoder(x)
    idx, scores = cb.lookup(z_p.numpy(), k=3)
    assert idx.shape == (5, 3) and scores.shape == (5, 3) and idx.dtype == np.int64
    np.testing.assert_array_equal(idx[:, 0], queries)
    assert (scores[:, 0] > 0.999).all() and (np.diff(scores, axis=1) <= 0).all()
    # torch in -> torch out; 1-D query; small chunks give the same answer.
    idx_t, scores_t = cb.lookup(z_p, k=3, chunk=7)
    assert isinstance(idx_t, torch.Tensor)
    np.testing.assert_array_equal(idx_t.numpy(), idx)
    np.testing.assert_allclose(scores_t.numpy(), scores, atol=1e-6)
    i1, s1 = cb.lookup(z_p[1].numpy(), k=1)
    assert i1.shape == (1,) and i1[0] == queries[1]
    R_hit = cb.rotation(idx[:, 0])
    assert geodesic_angle(R_hit, viewpoint_rotation_grid(1, 8)[queries]).max() < 1e-5


def test_lookup_against_brute_force():
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((1000, 16))
    codes /= np.linalg.norm(codes, axis=1, keepdims=True)
    cb = Codebook(codes=codes, rotations=np.tile(np.eye(3), (1000, 1, 1)),
                  box_px=np.ones(1000), box_offset=np.zeros((1000, 2)),
                  normalization=normalization_from_points(rng.standard_normal((10, 3))))
    q = rng.standard_normal((4, 16))
    idx, scores = cb.lookup(q, k=5, chunk=64)
    full = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ cb.codes.astype(np.float32).T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :5], atol=1e-5)
    with pytest.raises(ValueError):
        cb.lookup(np.zeros((2, 15)))


def test_save_load_round_trip(tmp_path, small_codebook):
    cb = small_codebook
    path = cb.save(tmp_path / "codebook.npz")
    back = Codebook.load(path, expected_encoder_id="a" * 64)
    for attr in ("codes", "rotations", "box_px", "box_offset"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(cb, attr))
    np.testing.assert_array_equal(back.normalization.center, cb.normalization.center)
    assert back.normalization.scale == cb.normalization.scale
    assert (back.name, back.encoder_id, back.mesh_sha256) == (cb.name, cb.encoder_id, cb.mesh_sha256)
    assert (back.subdivisions, back.n_inplane, back.size) == (1, 8, 64)
    assert set(back.timings) >= {"render", "warp", "encode", "total"}
    np.testing.assert_array_equal(back.lookup(cb.codes[:3].astype(np.float32), k=1)[0][:, 0],
                                  [0, 1, 2])
    assert not list(tmp_path.glob(".*"))  # atomic write left no temporary behind


def _assert_names_fix(exc_info):
    assert isinstance(exc_info.value, SixdPoseError)
    assert "sixd-pose build-object" in str(exc_info.value)


def test_load_errors_name_the_fix(tmp_path, small_codebook):
    good = small_codebook.save(tmp_path / "codebook.npz")
    with pytest.raises(CodebookError) as e:
        Codebook.load(good, expected_encoder_id="b" * 64)
    _assert_names_fix(e)
    assert "encoder" in str(e.value)

    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["format_version"] = np.array(CODEBOOK_FORMAT_VERSION + 1)
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(CodebookError) as e:
        Codebook.load(tmp_path / "future.npz")
    _assert_names_fix(e)
    assert "version" in str(e.value)

    (tmp_path / "truncated.npz").write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CodebookError) as e:
        Codebook.load(tmp_path / "truncated.npz")
    _assert_names_fix(e)

    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(CodebookError) as e:
        Codebook.load(tmp_path / "foreign.npz")
    _assert_names_fix(e)

    with pytest.raises(CodebookError) as e:
        Codebook.load(tmp_path / "missing.npz")
    _assert_names_fix(e)


def test_encoder_protocol_errors_and_eval_mode(mesh):
    enc = TinyEncoder()
    enc.train()

    class Auto(nn.Module):  # an autoencoder whose forward decodes: as_encoder picks encode()
        def __init__(self):
            super().__init__()
            self.enc = enc

        def forward(self, x):
            raise AssertionError("forward must not be called")

        def encode(self, x):
            assert not self.training
            return self.enc(x)

    auto = Auto().train()
    cb = build_codebook(mesh, as_encoder(auto), subdivisions=0, n_inplane=4, size=32,
                        progress=False)
    assert len(cb) == 48 and auto.training  # eval during the build, restored after
    with pytest.raises(TypeError, match="z_o, z_p"):
        build_codebook(mesh, lambda x: x.flatten(1), subdivisions=0, n_inplane=4, size=32,
                       progress=False)


def test_pose_and_translation_from_a_hit(mesh, small_codebook):
    """An object rendered in a real camera at a codebook rotation: the hit's box gives its
    distance within a few percent, and pose_from_hit inverts the crop camera rotation."""
    cb = small_codebook
    norm = cb.normalization
    K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])
    i = 8 * 9 + 3
    p_true = np.array([0.0, 0.0, 0.6])  # object centre on the optical axis: R_v = I
    R_true = cb.rotation(i)
    t_true = p_true - R_true @ norm.center
    out = render([RenderMesh.from_trimesh(mesh)], R_true[None], t_true[None], K, 640, 480)
    ys, xs = np.nonzero(out.mask[0])
    side = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    centre = np.array([xs.max() + xs.min(), ys.max() + ys.min()]) / 2.0
    p = translation_from_box(centre, side, K, cb, i)
    assert abs(np.linalg.norm(p) - 0.6) / 0.6 < 0.06
    assert np.linalg.norm(p[:2]) < 0.01
    # Off axis: the crop camera turns by R_v; the hit's rotation maps back through it.
    p_off = np.array([0.15, -0.1, 0.6])
    vc = object_centred_camera(K, p_off, norm.scale, 64)
    R_cam = vc.R_v.T @ cb.rotation(i)
    R, t = pose_from_hit(cb, i, vc.R_v, p_off)
    np.testing.assert_allclose(R, R_cam, atol=1e-6)
    np.testing.assert_allclose(R @ norm.center + t, p_off, atol=1e-9)


def test_coarse_codebook_timing_is_reported(mesh, encoder):
    """Prints the build time of a small codebook and extrapolates to the presets (not asserted:
    the CI cores are shared)."""
    t = time.perf_counter()
    cb = build_codebook(mesh, encoder, subdivisions=2, n_inplane=12, progress=False)
    wall = time.perf_counter() - t
    per_crop = (cb.timings["warp"] + cb.timings["encode"]) / len(cb)
    per_view = cb.timings["render"] / 162
    print(f"\ncodebook 162 x 12 = {len(cb)} at 128 px: {wall:.2f} s "
          f"({', '.join(f'{k} {v:.2f} s' for k, v in cb.timings.items())}); with this stand-in "
          f"encoder, extrapolated: coarse 642 x 36 ~ {642 * per_view + 23112 * per_crop:.0f} s, "
          f"full 2562 x 36 ~ {2562 * per_view + 92232 * per_crop:.0f} s")
    assert len(cb) == 1944

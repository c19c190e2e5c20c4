"""Viewpoint selector: geometry of in-plane rotations and initial poses, targets, network
mechanics (references prepared once, order of references, subsets), learning, export."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from conftest import torch_single_thread

from sixd_pose_ros.geometry.crop_camera import crop_focal, object_centred_camera
from sixd_pose_ros.geometry.rotations import (
    geodesic_angle,
    inplane_rotation,
    look_at_rotation,
    random_rotations,
)
from sixd_pose_ros.models.checkpoint import load_selector, save_weights
from sixd_pose_ros.models.selector import (
    SelectorConfig,
    SelectorExport,
    SelectorOutput,
    ViewpointSelector,
    decode_selection,
    initial_pose,
    initial_rotation,
    inplane_angle_between,
    rotate_images,
    selector_loss,
    selector_targets,
)

TINY = SelectorConfig(base=8, input_size=32, levels=(8, 16), proj_dim=8, sim_width=8, sim_dim=16,
                      d_model=16, n_heads=2, n_layers=1, ff_dim=32, pe_freqs=2)


@pytest.fixture(autouse=True)
def one_thread():
    with torch_single_thread():
        yield


def _tiny(seed: int = 0) -> ViewpointSelector:
    torch.manual_seed(seed)
    return ViewpointSelector(TINY)


# ---------------------------------------------------------------------- geometry
def test_initial_rotation_of_an_exact_reference_turned_in_plane():
    rng = np.random.default_rng(1)
    dirs = rng.normal(size=(5, 3))
    R_ref = look_at_rotation(dirs / np.linalg.norm(dirs, axis=1, keepdims=True))
    for alpha in (0.0, 0.3, -1.2, 2.9, np.pi):
        R_query = inplane_rotation(alpha) @ R_ref  # the reference seen with the camera rolled
        R0 = initial_rotation(R_ref, alpha)
        assert np.degrees(geodesic_angle(R0, R_query)).max() < 1e-9
        # Same viewing direction as the reference, and the angle is recovered from the pair.
        np.testing.assert_allclose(R0[:, 2], R_ref[:, 2], atol=1e-12)
        got = inplane_angle_between(R_query, R_ref)
        np.testing.assert_allclose(np.cos(got - alpha), 1.0, atol=1e-12)


def test_inplane_angle_between_is_the_best_roll_for_nearby_views():
    rng = np.random.default_rng(2)
    R_ref = random_rotations(1, rng)[0]
    tilt = inplane_rotation(0.0)
    tilt = np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]]) @ tilt
    R_query = inplane_rotation(0.7) @ tilt @ R_ref  # 11 deg off the reference's viewpoint
    alpha = float(inplane_angle_between(R_query, R_ref))
    grid = np.linspace(-np.pi, np.pi, 7201)
    errors = geodesic_angle(inplane_rotation(grid) @ R_ref, R_query)
    assert abs(alpha - grid[np.argmin(errors)]) < 2e-3


def test_initial_pose_brings_the_crop_rotation_back_to_the_real_camera():
    rng = np.random.default_rng(3)
    K = np.array([[600.0, 0, 319.5], [0, 610.0, 239.5], [0, 0, 1]])
    R_true = random_rotations(1, rng)[0]
    t = np.array([0.8, -0.5, 6.0])  # off the optical axis: the crop camera is turned
    R_v = object_centred_camera(K, t, 1.0).R_v
    R_crop = R_v @ R_true
    alpha = 1.1
    R_ref = inplane_rotation(-alpha) @ R_crop  # a reference with the crop's viewpoint, upright
    R, t_out = initial_pose(R_ref, alpha, t, K)
    assert np.degrees(geodesic_angle(R, R_true)) < 1e-9
    np.testing.assert_allclose(t_out, t)


def test_rotated_reference_looks_like_the_camera_rolled_by_the_same_angle():
    """rotate_images(img of R, a) must show what a camera with inplane_rotation(a) @ R sees:
    the sign convention that ties the network's angles to initial_rotation."""
    from sixd_pose_ros.render.procedural import make_object
    from sixd_pose_ros.render.renderer import Lighting, RenderMesh, render

    obj = make_object("heldout", 3)
    mesh = RenderMesh.from_trimesh(obj.mesh)
    center = obj.mesh.bounding_sphere.primitive.center
    radius = float(np.linalg.norm(obj.mesh.vertices - center, axis=1).max())
    S, d = 96, 4.0
    f = float(crop_focal(d, 1.0, S))
    K = np.array([[f, 0, (S - 1) / 2], [0, f, (S - 1) / 2], [0, 0, 1]])
    R = look_at_rotation(np.array([0.3, -0.8, 0.5]) / np.linalg.norm([0.3, -0.8, 0.5]))
    a = np.radians(50.0)
    Rs = np.stack([R, inplane_rotation(a) @ R])
    ts = np.stack([radius * np.array([0, 0, d]) - r @ center for r in Rs])
    out = render([mesh], Rs, ts, K, S, S, lighting=Lighting())
    img = torch.from_numpy(out.rgb.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    turned = rotate_images(img[:1], torch.tensor([a, -a], dtype=torch.float32))[0]
    err_right = (turned[0] - img[1]).abs().mean().item()
    err_wrong = (turned[1] - img[1]).abs().mean().item()
    err_none = (img[0] - img[1]).abs().mean().item()
    assert err_right < 0.3 * min(err_wrong, err_none), (err_right, err_wrong, err_none)


def test_rotate_images_by_zero_is_the_identity():
    x = torch.rand(2, 3, 16, 16)
    out = rotate_images(x, torch.tensor([0.0]))
    assert out.shape == (2, 1, 3, 16, 16)
    torch.testing.assert_close(out[:, 0], x, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- targets and loss
def test_targets_favour_the_matching_reference_and_angle():
    dirs = np.array([[0, 0, 1.0], [1, 0, 0], [0, 1, 0], [0.6, 0.8, 0]])
    R_refs = look_at_rotation(dirs)
    angles = np.radians([-90, -45, 0, 45, 90])
    R_q = inplane_rotation(np.radians(45.0)) @ R_refs[2]
    tg = selector_targets(R_q[None], R_refs, angles)
    n, a = np.unravel_index(np.argmax(tg["probs"][0]), tg["probs"][0].shape)
    assert (n, a) == (2, 3)
    assert tg["probs"].sum() == pytest.approx(1.0, abs=1e-5)
    assert tg["view_error"][0, 2] < 1e-6 and np.degrees(tg["inplane"][0, 2]) == pytest.approx(45.0, abs=1e-4)
    assert tg["weight"][0, 2] == pytest.approx(1.0) and tg["weight"][0, 0] < 1e-3


def test_targets_use_symmetries():
    """A 2-fold symmetric object seen from -x matches a reference at +x exactly."""
    S = np.stack([np.eye(3), inplane_rotation(np.pi)])  # rotation by 180 deg about object z
    R_refs = look_at_rotation(np.array([[1.0, 0, 0], [0, 0, 1.0]]))
    R_q = look_at_rotation(np.array([-1.0, 0, 0]))
    plain = selector_targets(R_q[None], R_refs, np.zeros(1))
    sym = selector_targets(R_q[None], R_refs, np.zeros(1), symmetries=S)
    assert np.degrees(plain["view_error"][0, 0]) == pytest.approx(180.0, abs=1e-3)
    assert sym["view_error"][0, 0] < 1e-6 and np.argmax(sym["probs"][0, :, 0]) == 0
    # The in-plane angle is the one of the equivalent pose: R_q S = inplane(alpha) R_ref.
    alpha = sym["inplane"][0, 0]
    assert min(np.degrees(geodesic_angle(initial_rotation(R_refs[0], alpha), R_q @ S))) < 1e-3


def test_loss_is_small_for_the_target_and_large_for_the_opposite():
    R_refs = look_at_rotation(np.array([[0, 0, 1.0], [1, 0, 0], [0, 1, 0]]))
    angles = np.radians([-90, -45, 0, 45, 90])
    tg = selector_targets((inplane_rotation(0.3) @ R_refs[1])[None], R_refs, angles)
    p = torch.tensor(tg["probs"])
    alpha = torch.tensor(tg["inplane"])
    good = SelectorOutput(torch.log(p + 1e-9), torch.stack([alpha.cos(), alpha.sin()], -1))
    bad = SelectorOutput(-torch.log(p + 1e-9), -good.angle)
    lg, lb = selector_loss(good, tg), selector_loss(bad, tg)
    assert lg["angle"] < 1e-6 and lb["angle"] > 3.9
    assert lg["score"] < lb["score"]


# ---------------------------------------------------------------------- network
def test_shapes_unit_angles_and_references_prepared_once():
    model = _tiny().eval()
    with torch.no_grad():
        refs = model.prepare_references(torch.rand(6, 3, 64, 64), torch.randn(6, 3))
        assert [tuple(f.shape) for f in refs.levels] == [(6, 5, 8, 4, 4), (6, 5, 8, 2, 2)]
        out = model(torch.rand(3, 3, 64, 64), refs)
    assert out.scores.shape == (3, 6, 5) and out.angle.shape == (3, 6, 2)
    torch.testing.assert_close(out.angle.norm(dim=-1), torch.ones(3, 6))
    sel = decode_selection(out)
    assert len(sel) == 3 and all(0 <= s.index < 6 and -np.pi <= s.inplane <= np.pi for s in sel)
    assert sel[0].probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_references_are_a_set_and_subsets_match():
    """The transformer sees references by their viewing directions, not by their order."""
    model = _tiny().eval()
    images, dirs = torch.rand(7, 3, 32, 32), torch.randn(7, 3)
    q = torch.rand(2, 3, 32, 32)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    with torch.no_grad():
        refs = model.prepare_references(images, dirs)
        out = model(q, refs)
        out_perm = model(q, model.prepare_references(images[perm], dirs[perm]))
        sub = [4, 1, 2]
        out_sub = model(q, refs.select(sub))
        out_sub2 = model(q, model.prepare_references(images[sub], dirs[sub]))
    torch.testing.assert_close(out_perm.scores, out.scores[:, perm], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_perm.angle, out.angle[:, perm], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_sub.scores, out_sub2.scores, atol=1e-4, rtol=1e-4)


def test_query_crops_of_any_size_are_resized():
    model = _tiny().eval()
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        refs = model.prepare_references(torch.rand(3, 3, 32, 32), torch.randn(3, 3))
        a = model(x, refs).scores
        b = model(torch.nn.functional.avg_pool2d(x, 3), refs).scores
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="crops must be"):
        model(torch.rand(1, 3, 32, 48), refs)


def test_learns_a_fixed_batch():
    """A few optimizer steps on one batch must lower the loss a lot (gradients reach the
    backbone through prepare_references)."""
    model = _tiny(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(8, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    R_refs = look_at_rotation(dirs)
    images = torch.rand(8, 3, 32, 32)
    pick = [2, 5, 7, 0]
    q = images[pick] * 0.9 + 0.05  # the references themselves, slightly changed
    tg = selector_targets(R_refs[pick], R_refs, model.angles.numpy())
    losses = []
    for _ in range(40):
        out = model(q, model.prepare_references(images, torch.tensor(dirs, dtype=torch.float32)))
        loss = selector_loss(out, tg)["loss"]
        opt.zero_grad()
        loss.backward()
        assert model.backbone.stage2[0][0].weight.grad.abs().sum() > 0
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
    assert [s.index for s in decode_selection(out)] == pick


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="input_size"):
        SelectorConfig(input_size=40)
    with pytest.raises(ValueError, match="levels"):
        SelectorConfig(levels=(2,))
    with pytest.raises(ValueError, match="n_heads"):
        SelectorConfig(d_model=30, n_heads=4)
    assert SelectorConfig.preset("gpu").input_size == 128
    with pytest.raises(ValueError, match="cpu"):
        SelectorConfig.preset("tpu")


def test_weights_round_trip(tmp_path):
    model = _tiny(4).eval()
    save_weights(tmp_path / "selector.pt", model, TINY)
    loaded = load_selector(tmp_path / "selector.pt")
    assert loaded.cfg == TINY and not loaded.training
    with torch.no_grad():
        refs = model.prepare_references(torch.rand(3, 3, 32, 32), torch.randn(3, 3))
        q = torch.rand(1, 3, 32, 32)
        torch.testing.assert_close(loaded(q, refs).scores, model(q, refs).scores)


# ---------------------------------------------------------------------- export
@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None
                    or importlib.util.find_spec("onnxruntime") is None,
                    reason="onnxscript/onnxruntime not installed")
def test_onnx_export_matches_torch(tmp_path):
    import onnxruntime as ort

    model = _tiny(2).eval()
    with torch.no_grad():
        refs = model.prepare_references(torch.rand(6, 3, 64, 64), torch.randn(6, 3))
    q = torch.rand(2, 3, 64, 64)  # batch 2: a batch of 1 would be specialized by the exporter
    n = len(TINY.levels)
    path = tmp_path / "selector.onnx"
    torch.onnx.export(SelectorExport(model).eval(), (q, refs.directions, *refs.levels), str(path),
                      dynamo=True, dynamic_shapes=SelectorExport.dynamic_shapes(n),
                      input_names=SelectorExport.input_names(n), output_names=SelectorExport.output_names)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for qq, rr in ((q, refs), (torch.rand(3, 3, 64, 64), refs.select([5, 1, 0, 2]))):
        feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), (qq, rr.directions, *rr.levels))}
        scores, angle = sess.run(None, feeds)
        with torch.no_grad():
            ref = model(qq, rr)
        np.testing.assert_allclose(scores, ref.scores.numpy(), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(angle, ref.angle.numpy(), rtol=1e-3, atol=1e-4)

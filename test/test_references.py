"""Reference views: the object-centred warp against direct renders, and the ReferenceSet API."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry import (
    ObjectNormalization,
    backproject_depth,
    geodesic_angle,
    inplane_rotation,
    normalization_from_points,
    project,
)
from sixd_pose_ros.objects.references import (
    DEFAULT_RENDER_DISTANCE,
    REFERENCES_FORMAT_VERSION,
    DegenerateReferenceError,
    ReferenceFormatError,
    ReferenceSet,
    object_centred_camera,
    references_from_frames,
    render_references,
    warp_to_object,
)
from sixd_pose_ros.render.renderer import Lighting, RenderMesh, render

# A real camera: non-square pixels, principal point off the image centre.
K = np.array([[600.0, 0.0, 331.7], [0.0, 570.0, 228.2], [0.0, 0.0, 1.0]])
W, H = 640, 480
# Flat lighting: shading then does not depend on the camera's orientation, so a warped view and
# a direct render of the virtual camera must show the same colours.
FLAT = Lighting(ambient=1.0, diffuse=0.0)
# Object off the optical axis (about 15 degrees), so that the warp rotates noticeably.
R_OBJ = Rotation.from_euler("xyz", [40, -25, 70], degrees=True).as_matrix()
T_OBJ = np.array([0.12, -0.08, 0.55])


def _colored(m: trimesh.Trimesh, rgb) -> trimesh.Trimesh:
    m.visual = trimesh.visual.ColorVisuals(
        m, vertex_colors=np.tile([*rgb, 255], (len(m.vertices), 1)).astype(np.uint8))
    return m


def _asymmetric_object() -> trimesh.Trimesh:
    """Union of three differently coloured boxes: no symmetry, off-origin bounding centre."""
    a = trimesh.creation.box((0.10, 0.06, 0.04))
    b = trimesh.creation.box((0.03, 0.03, 0.08))
    b.apply_translation((0.03, 0.01, 0.05))
    c = trimesh.creation.box((0.02, 0.07, 0.02))
    c.apply_translation((-0.04, 0.04, -0.01))
    return trimesh.util.concatenate([_colored(a, (220, 40, 40)), _colored(b, (40, 200, 60)),
                                     _colored(c, (50, 60, 230))])


@pytest.fixture(scope="module")
def obj():
    mesh = _asymmetric_object()
    return mesh, RenderMesh.from_trimesh(mesh), normalization_from_points(mesh.vertices)


@pytest.fixture(scope="module")
def photo(obj):
    _, rm, _ = obj
    out = render([rm], R_OBJ, T_OBJ, K, W, H, lighting=FLAT)
    return out.rgb[0], out.mask[0] > 0, out.depth[0]


@pytest.fixture(scope="module")
def refs(obj):
    mesh, _, _ = obj
    return render_references(mesh, n_views=64, size=64)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# ------------------------------------------------------------------------------------------------
# warp_to_object
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [128, 64])  # 64 also exercises the anti-alias pre-shrink
def test_warp_matches_direct_render_of_virtual_camera(obj, photo, size):
    """Homography, K_new, the new pose and the depth conversion all agree with a direct render."""
    _, rm, norm = obj
    rgb, mask, depth = photo
    crop, cmask, K_new, R_new, t_new, cdepth = warp_to_object(
        rgb, K, R_OBJ, T_OBJ, norm, size, mask=mask, depth=depth)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    assert cmask.shape == (size, size) and cmask.dtype == np.bool_
    assert cdepth.shape == (size, size) and cdepth.dtype == np.float32
    d = np.linalg.norm(R_OBJ @ norm.center + T_OBJ) / norm.scale
    np.testing.assert_allclose(t_new, [0.0, 0.0, d], rtol=1e-12)
    # R_new is the original rotation followed by a pure camera rotation.
    assert abs(np.linalg.det(R_new) - 1) < 1e-12

    R_m, t_m = norm.pose_to_metric(R_new, t_new)
    direct = render([rm], R_m, t_m, K_new, size, size, lighting=FLAT)
    dmask = direct.mask[0] > 0
    assert _iou(cmask, dmask) > 0.95

    both = cmask & dmask & (cdepth > 0)
    ref_depth = direct.depth[0][both] / norm.scale  # normalized units
    err = np.abs(cdepth[both] - ref_depth)
    assert np.median(err) < 0.01 * d
    # The per-pixel conversion matters: keeping the original z would be off by ~3.5 % here.
    naive = cv2.warpPerspective(depth, object_centred_camera(K, R_OBJ @ norm.center + T_OBJ,
                                                             norm.scale, size).H,
                                (size, size), flags=cv2.INTER_NEAREST) / norm.scale
    assert np.median(np.abs(naive[both] - ref_depth)) > 0.02 * d

    # Colours agree inside the object (flat lighting, one colour per box).
    inner = cv2.erode(dmask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    diff = np.abs(crop.astype(int) - direct.rgb[0].astype(int))[inner]
    assert np.median(diff) <= 2 and diff.mean() < 12


def test_centre_at_crop_centre_and_sphere_fills_crop(obj):
    """The object centre maps to the crop centre and the sphere's silhouette to radius S/2."""
    _, _, norm = obj
    S = 128
    p = R_OBJ @ norm.center + T_OBJ
    vc = object_centred_camera(K, p, norm.scale, S)
    centre = (S - 1) / 2
    # Through the homography, from the original image.
    uv = project(p, K)
    h = vc.H @ np.array([uv[0], uv[1], 1.0])
    np.testing.assert_allclose(h[:2] / h[2], [centre, centre], atol=1e-9)
    # Through the new pose and intrinsics returned by the warp.
    _, _, K_new, R_new, t_new, _ = warp_to_object(np.zeros((H, W, 3), np.uint8), K, R_OBJ,
                                                  T_OBJ, norm, S)
    np.testing.assert_allclose(project(R_new @ np.zeros(3) + t_new, K_new), [centre, centre],
                               atol=1e-9)
    # Silhouette of the bounding sphere (tangent circle seen from the original optical centre),
    # projected into the original image and carried into the crop by H: radius S/2.
    r, d = norm.scale, np.linalg.norm(p)
    ph = p / d
    e1 = np.cross(ph, [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(ph, e1)
    phi = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    n = -(r / d) * ph + np.sqrt(1 - (r / d) ** 2) * (np.cos(phi)[:, None] * e1
                                                     + np.sin(phi)[:, None] * e2)
    sil = p + r * n
    assert np.allclose(np.einsum("ij,ij->i", sil, n), 0.0, atol=1e-12)  # tangent rays
    uv = project(sil, K)
    hh = np.c_[uv, np.ones(len(uv))] @ vc.H.T
    radius = np.linalg.norm(hh[:, :2] / hh[:, 2:] - centre, axis=1)
    assert np.abs(radius - S / 2).max() < 0.5
    # The same with the normalized pose: the unit sphere's tangent points seen from the camera
    # centre C = -R^T t satisfy P . C = 1, i.e. P = C / |C|^2 + sqrt(1 - 1/|C|^2) u, u _|_ C.
    C = -R_new.T @ t_new
    dn = np.linalg.norm(C)
    u = np.stack([np.cos(phi), np.sin(phi), np.zeros_like(phi)], axis=1) @ R_new  # R^T [c, s, 0]
    sil_n = C / dn ** 2 + np.sqrt(1 - 1 / dn ** 2) * u
    np.testing.assert_allclose(np.linalg.norm(sil_n, axis=1), 1.0, atol=1e-12)
    radius_n = np.linalg.norm(project(sil_n @ R_new.T + t_new, K_new) - centre, axis=1)
    assert np.abs(radius_n - S / 2).max() < 0.5


def test_rendered_sphere_fills_the_crop():
    """End to end: a rendered sphere of radius = scale warps to the inscribed disc of the crop."""
    r, S = 0.05, 64
    sphere = RenderMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=4, radius=r))
    norm = ObjectNormalization(center=np.zeros(3), scale=r)
    t = np.array([-0.15, 0.1, 0.45])
    out = render([sphere], np.eye(3), t, K, W, H)
    _, cmask, _, _, _, _ = warp_to_object(out.rgb[0], K, np.eye(3), t, norm, S,
                                          mask=out.mask[0])
    ys, xs = np.nonzero(cmask)
    assert abs(xs.mean() - (S - 1) / 2) < 0.5 and abs(ys.mean() - (S - 1) / 2) < 0.5
    assert abs(cmask.sum() / (np.pi * (S / 2) ** 2) - 1) < 0.04
    assert xs.min() <= 1 and xs.max() >= S - 2 and ys.min() <= 1 and ys.max() >= S - 2


@settings(max_examples=40, deadline=None)
@given(
    fx=st.floats(300, 900), aspect=st.floats(0.8, 1.25),
    cx=st.floats(200, 440), cy=st.floats(150, 330),
    x=st.floats(-0.3, 0.3), y=st.floats(-0.3, 0.3), z=st.floats(0.3, 2.0),
    r=st.floats(0.01, 0.15), size=st.sampled_from([32, 64, 128, 256]),
)
def test_virtual_camera_properties(fx, aspect, cx, cy, x, y, z, r, size):
    """For any camera and any visible centre: centre -> crop centre, upright (no roll) rotation,
    and H consistent with K_new R_v K^-1."""
    Ko = np.array([[fx, 0, cx], [0, fx * aspect, cy], [0, 0, 1.0]])
    p = np.array([x, y, z])
    if np.linalg.norm(p) <= r * 1.01:
        return
    vc = object_centred_camera(Ko, p, r, size)
    assert abs(np.linalg.det(vc.R_v) - 1) < 1e-12
    np.testing.assert_allclose(vc.R_v @ vc.R_v.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(vc.R_v @ p, [0, 0, np.linalg.norm(p)], atol=1e-12)
    assert abs(vc.R_v[0, 1]) < 1e-12  # new x axis has no component along the old y: no roll
    uv = project(p, Ko)
    h = vc.H @ np.array([*uv, 1.0])
    np.testing.assert_allclose(h[:2] / h[2], [(size - 1) / 2] * 2, atol=1e-6)
    # The sphere's angular radius maps to S/2 pixels.
    alpha = np.arcsin(r / np.linalg.norm(p))
    assert abs(vc.K[0, 0] * np.tan(alpha) - size / 2) < 1e-6 * size


def test_degenerate_views_raise(obj):
    _, _, norm = obj
    img = np.zeros((H, W, 3), np.uint8)
    behind = -R_OBJ @ norm.center + np.array([0.05, 0.0, -0.5])  # centre at z = -0.5 m
    with pytest.raises(ValueError, match="behind the camera"):
        warp_to_object(img, K, R_OBJ, behind, norm)
    inside = -R_OBJ @ norm.center + np.array([0.0, 0.0, 0.5 * norm.scale])
    with pytest.raises(ValueError, match="inside the object's bounding sphere") as info:
        warp_to_object(img, K, R_OBJ, inside, norm)
    assert isinstance(info.value, SixdPoseError)
    frames = [(img, K, R_OBJ, T_OBJ), (img, K, R_OBJ, inside)]
    with pytest.raises(DegenerateReferenceError, match="frame 1"):
        references_from_frames(frames, norm, size=32)
    with pytest.raises(ValueError, match="rotation"):
        warp_to_object(img, K, 2 * R_OBJ, T_OBJ, norm)


def test_references_from_frames(obj, photo):
    _, rm, norm = obj
    rgb, mask, depth = photo
    R2 = Rotation.from_euler("y", 100, degrees=True).as_matrix() @ R_OBJ
    t2 = np.array([-0.05, 0.03, 0.7]) - R2 @ norm.center
    o2 = render([rm], R2, t2, K, W, H, lighting=FLAT)
    frames = [(rgb, K, R_OBJ, T_OBJ, mask, depth), (o2.rgb[0], K, R2, t2, o2.mask[0], None)]
    refs = references_from_frames(frames, norm, size=48)
    assert len(refs) == 2 and refs.images.shape == (2, 48, 48, 3)
    assert refs.masks.shape == (2, 48, 48) and refs.masks.all(axis=(1, 2)).sum() == 0
    assert refs.masks.any(axis=(1, 2)).all()
    assert (refs.depth[1] == 0).all() and (refs.depth[0] > 0).any()  # no depth -> zeros
    np.testing.assert_allclose(refs.t[:, :2], 0.0)
    # The viewing direction is the true camera centre seen from the object centre.
    C = -R2.T @ t2 - norm.center
    np.testing.assert_allclose(refs.view_directions()[1], C / np.linalg.norm(C), atol=1e-12)
    no_masks = references_from_frames([f[:4] for f in frames], norm, size=48)
    assert no_masks.masks is None and no_masks.depth is None
    with pytest.raises(ValueError, match="some frames only"):
        references_from_frames([frames[0], frames[1][:4]], norm, size=48)


# ------------------------------------------------------------------------------------------------
# render_references and the ReferenceSet API
# ------------------------------------------------------------------------------------------------


def test_render_references_geometry(obj, refs):
    mesh, _, norm = obj
    n, S = 64, 64
    assert len(refs) == n and refs.images.shape == (n, S, S, 3) and refs.size == S
    assert refs.masks.any(axis=(1, 2)).all()
    np.testing.assert_allclose(refs.t, np.tile([0, 0, DEFAULT_RENDER_DISTANCE], (n, 1)))
    np.testing.assert_allclose(refs.normalization.center, norm.center)
    np.testing.assert_allclose(refs.K[:, :2, 2], (S - 1) / 2)
    dirs = refs.view_directions()
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-12)
    ang = np.degrees(np.arccos(np.clip(dirs @ dirs.T, -1, 1)))
    np.fill_diagonal(ang, 180.0)
    # FPS of 64 among 642 icosphere directions: 17.4 degrees here; 64 random directions would
    # typically come within a few degrees of each other, an ideal packing ~26 degrees.
    assert ang.min() > 15.0
    # Depth (normalized units) back-projects onto the normalized object: inside the unit sphere,
    # and the nearest surface point to each back-projected pixel is close.
    surface = cKDTree(trimesh.sample.sample_surface(mesh, 60000, seed=0)[0])
    for i in (0, 17, 40):
        pts = backproject_depth(refs.depth[i], refs.K[i])
        obj_pts = (pts - refs.t[i]) @ refs.R[i]  # R^T (X - t)
        assert len(obj_pts) > 50
        assert np.linalg.norm(obj_pts, axis=1).max() < 1.0 + 1e-3
        metric = norm.to_metric(obj_pts)
        dist, _ = surface.query(metric)
        assert np.median(dist) < 0.01 * norm.scale
        # Rendered mask == where depth exists.
        assert ((refs.depth[i] > 0) == refs.masks[i]).all()


def test_nearest_and_fps(refs):
    n = len(refs)
    for i in (0, 5, 63):
        assert refs.nearest(refs.R[i], k=6)[0] == i
        for a in (0.3, 2.0, -1.1):  # spinning the query about its optical axis changes nothing
            spun = inplane_rotation(a) @ refs.R[i]
            np.testing.assert_array_equal(refs.nearest(spun, k=6), refs.nearest(refs.R[i], k=6))
        assert refs.nearest(refs.R[i], k=3, t_query=refs.t[i])[0] == i
    # Batched queries; a slightly perturbed pose still finds the reference it came from.
    rng = np.random.default_rng(0)
    small = Rotation.from_rotvec(rng.normal(size=(n, 3)) * 0.02).as_matrix()
    nn = refs.nearest(refs.R @ small, k=2)
    assert nn.shape == (n, 2) and (nn[:, 0] == np.arange(n)).all()
    # nearest really minimises the angle between viewing directions.
    q = Rotation.from_euler("xyz", [10, 130, -40], degrees=True).as_matrix()
    qdir = -q[2]
    best = np.argmax(refs.view_directions() @ qdir)
    assert refs.nearest(q, k=1)[0] == best
    sub = refs.fps_subset(8, start=3)
    assert len(sub) == 8
    np.testing.assert_array_equal(sub.R[0], refs.R[3])
    d = sub.view_directions()
    ang = np.degrees(np.arccos(np.clip(d @ d.T, -1, 1)))
    np.fill_diagonal(ang, 180.0)
    assert ang.min() > 50.0
    # subset with a mask, a slice and a single index.
    assert len(refs.subset(np.arange(n) % 2 == 0)) == n // 2
    assert len(refs.subset(slice(0, 10))) == 10
    one = refs.subset(7)
    assert len(one) == 1 and geodesic_angle(one.R[0], refs.R[7]) == 0.0


def test_save_load_round_trip(tmp_path, refs):
    path = refs.save(tmp_path / "refs.npz")
    assert sorted(os.listdir(tmp_path)) == ["refs.npz"]  # no temporary left behind
    back = ReferenceSet.load(path)
    for name in ("images", "masks", "K", "R", "t", "depth"):
        a, b = getattr(refs, name), getattr(back, name)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
    np.testing.assert_array_equal(back.normalization.center, refs.normalization.center)
    assert back.normalization.scale == refs.normalization.scale
    # Optional arrays absent -> None after loading; saving again replaces the file.
    bare = ReferenceSet(refs.images[:3], None, refs.K[:3], refs.R[:3], refs.t[:3],
                        refs.normalization)
    bare.save(path)
    back = ReferenceSet.load(path)
    assert back.masks is None and back.depth is None and len(back) == 3


def test_load_rejects_other_versions_and_foreign_files(tmp_path, refs):
    path = tmp_path / "old.npz"
    small = refs.subset([0, 1])
    small.save(path)
    with np.load(path) as data:
        arrays = dict(data)
    arrays["format_version"] = np.array(REFERENCES_FORMAT_VERSION + 1)
    np.savez(path, **arrays)
    with pytest.raises(ReferenceFormatError, match="rebuild the object database") as info:
        ReferenceSet.load(path)
    assert f"version {REFERENCES_FORMAT_VERSION + 1}" in str(info.value)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ReferenceFormatError, match="rebuild the object database"):
        ReferenceSet.load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ReferenceFormatError, match="not a sixd_pose_ros reference-set"):
        ReferenceSet.load(other)
    with pytest.raises(FileNotFoundError):
        ReferenceSet.load(tmp_path / "missing.npz")


def test_to_torch(refs):
    import torch

    t = refs.subset([0, 1, 2]).to_torch()
    assert t["images"].shape == (3, 3, 64, 64) and t["images"].dtype == torch.float32
    assert 0.0 <= float(t["images"].min()) and float(t["images"].max()) <= 1.0
    np.testing.assert_allclose(t["images"][1, :, 10, 20].numpy(), refs.images[1, 10, 20] / 255.0,
                               rtol=1e-6)
    assert t["masks"].shape == (3, 64, 64) and t["depth"].shape == (3, 64, 64)
    assert t["R"].shape == (3, 3, 3) and t["t"].shape == (3, 3) and t["K"].shape == (3, 3, 3)
    assert t["directions"].shape == (3, 3)


def test_reference_set_validates_shapes(refs):
    with pytest.raises(ValueError, match="R must have shape"):
        ReferenceSet(refs.images, None, refs.K, refs.R[:-1], refs.t, refs.normalization)
    with pytest.raises(ValueError, match="uint8"):
        ReferenceSet(refs.images.astype(np.float32), None, refs.K, refs.R, refs.t,
                     refs.normalization)

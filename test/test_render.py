"""Renderer correctness against analytic cases, and the two backends against each other."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh
from PIL import Image
from scipy.spatial.transform import Rotation

from sixd_pose_ros.render.rasterizer import rasterize
from sixd_pose_ros.render.renderer import Lighting, RenderMesh, render

# Non-square pixels and an off-centre principal point, as real cameras have.
K = np.array([[600.0, 0.0, 331.7], [0.0, 585.0, 228.2], [0.0, 0.0, 1.0]])
W, H = 640, 480


def _box(extents=(0.1, 0.1, 0.1)) -> RenderMesh:
    return RenderMesh.from_trimesh(trimesh.creation.box(extents=extents))


@pytest.mark.parametrize("angle_deg", [0.0, 33.0])
def test_box_face_depth_within_1mm(angle_deg):
    R = Rotation.from_euler("z", angle_deg, degrees=True).as_matrix()
    t = np.array([0.02, -0.01, 0.5])
    out = render([_box()], R, t, K, W, H)
    u, v = K[:2, :2] @ (t[:2] / t[2]) + K[:2, 2]
    # Pixels around the projected centre all see the front face at z = 0.5 - 0.05.
    patch = out.depth[0, int(v) - 5:int(v) + 6, int(u) - 5:int(u) + 6]
    assert np.abs(patch - 0.45).max() < 1e-3
    assert out.depth.dtype == np.float32 and out.depth[0, 0, 0] == 0.0


def test_mask_centroid_matches_projected_center():
    sphere = RenderMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=4, radius=0.03))
    t = np.array([0.06, -0.04, 0.7])
    out = render([sphere], np.eye(3), t, K, W, H)
    ys, xs = np.nonzero(out.mask[0])
    expected = np.array([K[0, 0] * t[0] / t[2] + K[0, 2], K[1, 1] * t[1] / t[2] + K[1, 2]])
    # A sphere off the optical axis projects to an ellipse whose centre moves outward by a
    # fraction of a pixel at this distance; the mask centroid must match within 0.5 px.
    assert np.linalg.norm([xs.mean() - expected[0], ys.mean() - expected[1]]) < 0.5
    # And its area matches the analytic disc area within 2 %.
    radius_px = np.sqrt(K[0, 0] * K[1, 1]) * 0.03 / np.sqrt(t[2] ** 2 - 0.03 ** 2)
    assert abs(len(xs) / (np.pi * radius_px ** 2) - 1.0) < 0.03


def test_render_backproject_recovers_pose():
    """Back-projected depth + the rasterizer's surface points give the pose back (Kabsch)."""
    mesh = trimesh.creation.annulus(r_min=0.02, r_max=0.05, height=0.04)
    mesh.vertices[:, 0] *= 1.5  # break the symmetry
    rm = RenderMesh.from_trimesh(mesh)
    R = Rotation.from_euler("xyz", [30, -20, 75], degrees=True).as_matrix()
    t = np.array([-0.03, 0.02, 0.6])
    verts = (rm.vertices @ R.T + t)[None]
    depth, face_id, bary = rasterize(verts, rm.faces, K, W, H)
    hit = face_id[0] >= 0
    ys, xs = np.nonzero(hit)
    z = depth[0][hit]
    cam_pts = np.stack([(xs - K[0, 2]) * z / K[0, 0], (ys - K[1, 2]) * z / K[1, 1], z], axis=1)
    tri = rm.vertices[rm.faces[face_id[0][hit]]]
    obj_pts = np.einsum("mk,mkc->mc", bary[0][hit], tri)
    rot, _ = Rotation.align_vectors(cam_pts - cam_pts.mean(0), obj_pts - obj_pts.mean(0))
    R_est = rot.as_matrix()
    t_est = cam_pts.mean(0) - R_est @ obj_pts.mean(0)
    angle = np.degrees(np.arccos(np.clip((np.trace(R_est.T @ R) - 1) / 2, -1, 1)))
    assert angle < 0.01
    assert np.linalg.norm(t_est - t) < 1e-4


def test_batch_equals_single_renders():
    box = _box((0.08, 0.05, 0.12))
    Rs = Rotation.random(3, random_state=1).as_matrix()
    ts = np.array([[0, 0, 0.5], [0.05, 0, 0.6], [0, -0.05, 0.4]])
    batch = render([box], Rs, ts, K, 160, 120)
    for i in range(3):
        single = render([box], Rs[i], ts[i], K, 160, 120)
        np.testing.assert_array_equal(batch.rgb[i], single.rgb[0])
        np.testing.assert_array_equal(batch.depth[i], single.depth[0])


def test_two_objects_occlude_by_depth():
    near_box, far_box = _box((0.05, 0.05, 0.05)), _box((0.2, 0.2, 0.02))
    R = np.stack([np.eye(3), np.eye(3)])
    t = np.array([[0.0, 0.0, 0.4], [0.0, 0.0, 0.6]])
    out = render([near_box, far_box], R, t, K, W, H)
    cu, cv = int(K[0, 2]), int(K[1, 2])
    assert out.mask[0, cv, cu] == 1 and abs(out.depth[0, cv, cu] - 0.375) < 1e-3
    assert out.mask[0, cv, cu + 100] == 2 and abs(out.depth[0, cv, cu + 100] - 0.59) < 1e-3


def test_texture_and_vertex_colors_are_used():
    quad = trimesh.Trimesh(vertices=[[-0.1, -0.1, 0], [0.1, -0.1, 0], [0.1, 0.1, 0], [-0.1, 0.1, 0]],
                           faces=[[0, 1, 2], [0, 2, 3]], process=False)
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[:, :32] = (255, 0, 0)  # left half red, right half blue (u < 0.5 is red)
    tex[:, 32:] = (0, 0, 255)
    quad.visual = trimesh.visual.TextureVisuals(uv=[[0, 0], [1, 0], [1, 1], [0, 1]], image=Image.fromarray(tex))
    light = Lighting(ambient=1.0, diffuse=0.0)
    out = render([RenderMesh.from_trimesh(quad)], np.eye(3), [0, 0, 0.5], K, W, H, lighting=light)
    cu, cv = int(K[0, 2]), int(K[1, 2])
    assert tuple(out.rgb[0, cv, cu - 60]) == (255, 0, 0)
    assert tuple(out.rgb[0, cv, cu + 60]) == (0, 0, 255)
    box = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    box.visual.vertex_colors = [0, 255, 0, 255]
    out = render([RenderMesh.from_trimesh(box)], np.eye(3), [0, 0, 0.5], K, W, H, lighting=light)
    assert tuple(out.rgb[0, cv, cu]) == (0, 255, 0)


def test_pyrender_backend_agrees_with_numba():
    from sixd_pose_ros.errors import SixdPoseError

    mesh = RenderMesh.from_trimesh(trimesh.creation.capsule(radius=0.04, height=0.08))
    R = Rotation.from_euler("xyz", [40, 10, -30], degrees=True).as_matrix()
    t = np.array([0.03, -0.02, 0.5])
    ours = render([mesh], R, t, K, W, H)
    try:
        theirs = render([mesh], R, t, K, W, H, backend="pyrender")
    except SixdPoseError as exc:  # no libOSMesa and no GPU: the backend says how to get it
        pytest.skip(str(exc))
    a, b = ours.mask[0] > 0, theirs.mask[0] > 0
    iou = (a & b).sum() / (a | b).sum()
    assert iou > 0.98
    both = a & b
    assert np.median(np.abs(ours.depth[0][both] - theirs.depth[0][both])) < 1e-3

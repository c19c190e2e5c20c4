"""Tests of sixd_pose_ros.geometry.pinhole."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixd_pose_ros.geometry import (
    backproject_depth,
    backproject_pixels,
    crop_affine,
    crop_intrinsics,
    project,
    project_model_points,
    random_rotations,
    scale_intrinsics,
)

# Non-square pixels and an off-center principal point on purpose.
K = np.array([[612.0, 0.0, 330.25], [0.0, 598.5, 231.75], [0.0, 0.0, 1.0]])


def test_optical_axis_hits_principal_point():
    np.testing.assert_allclose(project([0.0, 0.0, 1.7], K), [330.25, 231.75])


def test_project_hand_computed():
    # u = fx x / z + cx, v = fy y / z + cy.
    uv = project(np.array([[0.1, -0.2, 2.0], [0.0, 0.05, 0.5]]), K)
    np.testing.assert_allclose(uv, [[612 * 0.05 + 330.25, 598.5 * -0.1 + 231.75],
                                    [330.25, 598.5 * 0.1 + 231.75]])


def test_project_model_points_batch():
    pts = np.random.default_rng(0).uniform(-0.05, 0.05, (7, 3))
    Rs = random_rotations(3, rng=1)
    ts = np.array([[0, 0, 0.5], [0.1, 0, 0.8], [0, -0.1, 1.0]])
    uv = project_model_points(pts, Rs, ts, K)
    assert uv.shape == (3, 7, 2)
    np.testing.assert_allclose(uv[1], project(pts @ Rs[1].T + ts[1], K))
    np.testing.assert_allclose(project_model_points(pts, Rs[2], ts[2][:, None], K), uv[2])


coord = st.floats(-1.0, 1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(coord, coord, st.floats(0.05, 10.0))
def test_backproject_inverts_project(x, y, z):
    p = np.array([x, y, z])
    uv = project(p, K)
    np.testing.assert_allclose(backproject_pixels(uv, z, K), p, rtol=1e-10, atol=1e-12)


def test_backproject_pixels_batch_and_skew():
    Ks = K.copy()
    Ks[0, 1] = 3.0  # skew is honoured if present
    p = np.random.default_rng(2).uniform([-1, -1, 0.2], [1, 1, 3], (4, 5, 3))
    uv = project(p, Ks)
    assert uv.shape == (4, 5, 2)
    np.testing.assert_allclose(backproject_pixels(uv, p[..., 2], Ks), p, atol=1e-12)


def test_backproject_depth_valid_mask_and_pixel_centers():
    H, W = 6, 8
    depth = np.full((H, W), 1.25)
    depth[0, 0] = 0.0
    depth[1, 2] = np.nan
    depth[2, 3] = -1.0
    pts, rc = backproject_depth(depth, K, return_pixels=True)
    assert pts.shape == (H * W - 3, 3) and rc.shape == (H * W - 3, 2)
    np.testing.assert_allclose(pts[:, 2], 1.25)
    # Each point projects back to its pixel center (integer coordinates).
    np.testing.assert_allclose(project(pts, K), rc[:, ::-1].astype(float), atol=1e-9)
    # Row-major order.
    assert tuple(rc[0]) == (0, 1) and tuple(rc[-1]) == (H - 1, W - 1)

    mask = np.zeros((H, W), bool)
    mask[3:5, 4:6] = True
    mask[0, 0] = True  # invalid depth there: still skipped
    assert backproject_depth(depth, K, mask=mask).shape == (4, 3)
    with pytest.raises(ValueError):
        backproject_depth(depth, K, mask=np.ones((2, 2), bool))


def test_crop_intrinsics_matches_cropped_projection():
    pts = np.random.default_rng(3).uniform([-0.2, -0.2, 0.5], [0.2, 0.2, 1.5], (50, 3))
    for box, out in [((100.5, 60.0, 260.5, 220.0), 128), ((320.0, 240.0, 96.0), 64),
                     ((10.0, 20.0, 110.0, 70.0), (64, 32))]:
        Kc = crop_intrinsics(K, np.array(box), out)
        A = crop_affine(np.array(box), out)
        uv = project(pts, K)
        expected = uv @ A[:, :2].T + A[:, 2]
        np.testing.assert_allclose(project(pts, Kc), expected, atol=1e-9)


def test_crop_intrinsics_hand_cases():
    # Box edges map to the output image edges: x0 -> -0.5, x1 -> S - 0.5.
    A = crop_affine(np.array([100.0, 50.0, 200.0, 150.0]), 50)
    np.testing.assert_allclose(A @ [100.0, 50.0, 1.0], [-0.5, -0.5])
    np.testing.assert_allclose(A @ [200.0, 150.0, 1.0], [49.5, 49.5])
    # (cx, cy, size) form equals the xyxy form of the same square.
    np.testing.assert_allclose(crop_intrinsics(K, np.array([150.0, 100.0, 100.0]), 50),
                               crop_intrinsics(K, np.array([100.0, 50.0, 200.0, 150.0]), 50))
    # Cropping the whole image outline at the same size is the identity.
    W, H = 640, 480
    full = np.array([-0.5, -0.5, W - 0.5, H - 0.5])
    np.testing.assert_allclose(crop_intrinsics(K, full, (W, H)), K, atol=1e-12)
    # Batched boxes.
    boxes = np.array([[320.0, 240.0, 100.0], [100.0, 100.0, 50.0]])
    assert crop_intrinsics(K, boxes, 128).shape == (2, 3, 3)


def test_scale_intrinsics():
    np.testing.assert_allclose(scale_intrinsics(K, 1.0), K)
    K2 = scale_intrinsics(K, 0.5, 2.0)
    np.testing.assert_allclose(K2[0], [306.0, 0.0, 0.5 * (330.25 + 0.5) - 0.5])
    np.testing.assert_allclose(K2[1], [0.0, 1197.0, 2.0 * (231.75 + 0.5) - 0.5])
    # Resizing = cropping the whole image outline to the new size.
    W, H = 640, 480
    full = np.array([-0.5, -0.5, W - 0.5, H - 0.5])
    np.testing.assert_allclose(scale_intrinsics(K, 0.5, 2.0),
                               crop_intrinsics(K, full, (W * 0.5, H * 2.0)), atol=1e-12)

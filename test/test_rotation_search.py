"""Coarse rotation search: on the depth of an asymmetric object, one of the few rotations it
returns is within ICP's reach of the truth, and it never answers from too little data."""
from __future__ import annotations

import numpy as np
import pytest

from sixd_pose_ros.geometry.pinhole import backproject_depth
from sixd_pose_ros.geometry.rotations import geodesic_angle, matrix_from_axis_angle
from sixd_pose_ros.pipeline.rotation_search import RotationSearch, SurfaceSamples, search_grid
from sixd_pose_ros.render.procedural import make_bundled_demo_object
from sixd_pose_ros.render.renderer import RenderMesh, render

K = np.array([[600.0, 0, 322.0], [0, 598.0, 241.0], [0, 0, 1.0]])


@pytest.fixture(scope="module")
def drill():
    obj = make_bundled_demo_object()
    return obj, RenderMesh.from_trimesh(obj.mesh), SurfaceSamples.from_mesh(obj.mesh)


@pytest.mark.parametrize("axis,angle", [((1.0, 0.3, 0.2), 2.0), ((0.0, 1.0, 0.0), 0.7), ((0.3, -1.0, 0.5), 2.6)])
def test_a_returned_rotation_is_within_icp_reach(drill, axis, angle):
    obj, rm, samples = drill
    R = matrix_from_axis_angle(np.array(axis) / np.linalg.norm(axis), angle)
    t = np.array([0.05, -0.03, 0.75])
    depth = render([rm], R, t, K, 640, 480).depth[0]
    found = RotationSearch(samples, search_grid())(backproject_depth(depth, K), depth, K, obj.diameter)
    assert 1 <= len(found) <= 3
    errors = [float(np.degrees(geodesic_angle(R_f, R))) for R_f, _, _ in found]
    assert min(errors) < 35.0, errors
    best = found[int(np.argmin(errors))]
    assert np.linalg.norm(best[1] - t) < 0.3 * obj.diameter  # the translation is near too
    fits = [fit for _, _, fit in found]
    assert fits == sorted(fits, reverse=True) and 0 < fits[0] <= 1


def test_too_few_points_or_no_rotations_give_nothing(drill):
    obj, _, samples = drill
    depth = np.zeros((480, 640))
    assert RotationSearch(samples, search_grid())(np.zeros((3, 3)), depth, K, obj.diameter) == []
    pts = np.random.default_rng(0).normal([0, 0, 0.7], 0.01, (100, 3))
    assert RotationSearch(samples, np.zeros((0, 3, 3)))(pts, depth, K, obj.diameter) == []
    # No depth where the model lands: no rotation fits, so none is returned.
    assert RotationSearch(samples, search_grid())(pts, depth, K, obj.diameter) == []


def test_fit_prefers_the_true_pose_and_forgives_a_distance_error(drill):
    obj, rm, samples = drill
    R = matrix_from_axis_angle(np.array([1.0, 0.3, 0.2]) / np.linalg.norm([1.0, 0.3, 0.2]), 2.0)
    t = np.array([0.05, -0.03, 0.75])
    depth = render([rm], R, t, K, 640, 480).depth[0]
    search = RotationSearch(samples, search_grid(0, 4))
    turned = matrix_from_axis_angle(np.array([0.0, 1.0, 0.0]), np.radians(90)) @ R
    poses = np.stack([R, R, turned, R]), np.stack([t, t * 1.1, t, t + np.array([0.3, 0, 0])])
    fit = search.fit(*poses, depth, K, obj.diameter)
    # Facing samples hidden behind other parts disagree (self-occlusion is not modelled): ~0.86.
    assert fit[0] > 0.8
    # 10 % too far: the slide along the ray restores the depth; the smaller silhouette misses the rim.
    assert fit[1] > 0.5
    assert fit[2] < fit[0] - 0.2 and fit[3] < 0.1  # turned, or beside the object

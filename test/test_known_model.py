"""Known-model estimator: depth alignment recovers pose errors; the estimator runs end to end
on a rendered frame with real networks and an object database built by build-object."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import torch_single_thread

from sixd_pose_ros.geometry.pose_errors import add_error
from sixd_pose_ros.geometry.rotations import matrix_from_axis_angle
from sixd_pose_ros.pipeline.depth_alignment import align_to_depth
from sixd_pose_ros.pipeline.types import Frame
from sixd_pose_ros.render.procedural import make_bundled_demo_object
from sixd_pose_ros.render.renderer import RenderMesh, render

K = np.array([[600.0, 0, 322.0], [0, 598.0, 241.0], [0, 0, 1.0]])


@pytest.fixture(autouse=True)
def one_thread():
    with torch_single_thread():
        yield


@pytest.fixture(scope="module")
def demo():
    obj = make_bundled_demo_object()
    R = matrix_from_axis_angle(np.array([1.0, 0.3, 0.2]) / np.linalg.norm([1.0, 0.3, 0.2]), 2.0)
    t = np.array([0.03, -0.02, 0.7])
    rm = RenderMesh.from_trimesh(obj.mesh)
    out = render([rm], R, t, K, 640, 480)
    return obj, rm, R, t, out


def test_depth_alignment_fixes_distance_and_small_rotation(demo):
    obj, rm, R, t, out = demo
    points = np.asarray(obj.mesh.sample(2000))
    R_in = matrix_from_axis_angle(np.array([0.0, 1.0, 0.0]), np.radians(4)) @ R
    t_in = t * 1.08  # 8 % too far, as an RGB box-size error gives
    before = add_error(R_in, t_in, R, t, points)
    result = align_to_depth(rm, points, R_in, t_in, out.depth[0], K, obj.diameter)
    after = add_error(result.R, result.t, R, t, points)
    assert result.accepted and 0.85 < result.depth_ratio < 0.99
    assert after < 0.3 * before and after < 0.01 * obj.diameter * 10  # < 10 % of the diameter


def test_depth_alignment_rejects_a_pose_off_the_object(demo):
    obj, rm, R, t, out = demo
    points = np.asarray(obj.mesh.sample(500))
    far_away = t + np.array([0.5, 0.0, 0.0])  # projects where there is no object depth
    result = align_to_depth(rm, points, R, far_away, np.zeros_like(out.depth[0]), K, obj.diameter)
    assert not result.accepted and np.allclose(result.t, far_away)


@pytest.mark.slow
def test_estimator_runs_end_to_end_with_built_database(tmp_path, demo):
    from conftest import build_small_database, save_untrained_weights

    from sixd_pose_ros.pipeline.known_model import KnownModelConfig, KnownModelEstimator

    _, _, R, t, out = demo
    weights = save_untrained_weights(tmp_path / "weights")
    db, _ = build_small_database(weights, tmp_path)
    est = KnownModelEstimator.from_paths([db], weights, KnownModelConfig(min_detection_score=0.0, refine_iterations=1))
    frame = Frame(out.rgb[0], K, out.depth[0])
    poses = est.estimate(frame)
    assert len(poses) == 1
    pose = poses[0]
    assert pose.name == "drill" and pose.metric and 0.0 <= pose.score <= 1.0
    assert np.allclose(pose.R @ pose.R.T, np.eye(3), atol=1e-6) and np.isfinite(pose.t).all()
    for stage in ("backbone", "segment", "drill/detect", "drill/retrieve", "drill/refine", "drill/depth"):
        assert stage in pose.stage_ms
    # An impossible score threshold: the object is reported absent, not guessed.
    est.config = replace(est.config, min_detection_score=1.01)
    assert est.estimate(frame) == []

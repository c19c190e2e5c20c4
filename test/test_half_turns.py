"""The half turns of a pose fill the same box: they are the object's other faces, not other places."""
from __future__ import annotations

import numpy as np
import trimesh

from sixd_pose_ros.geometry.rotations import matrix_from_axis_angle
from sixd_pose_ros.pipeline.depth_alignment import DepthAlignment
from sixd_pose_ros.pipeline.depth_ranking import Hypothesis, Ranked
from sixd_pose_ros.pipeline.exclusion import ObjectShape
from sixd_pose_ros.pipeline.half_turns import half_turns


def test_half_turns_keep_the_box_and_turn_it_half_a_turn():
    # An off-centre box (its model origin is not its centre) in a general pose.
    mesh = trimesh.creation.box((0.2, 0.08, 0.05))
    mesh.apply_translation((0.03, -0.02, 0.01))
    shape = ObjectShape.from_mesh(mesh)
    R = matrix_from_axis_angle(np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8]), 1.1)
    t = np.array([0.05, -0.03, 0.7])
    ranked = [Ranked(0.5, Hypothesis(R, t, None, 0.4, 0.4), DepthAlignment(R, t, 1.0, 0.001, True, 0.9))]
    turned = half_turns(ranked, shape)
    assert len(turned) == 3
    corners = np.asarray(mesh.bounding_box_oriented.vertices)
    at_pose = corners @ R.T + t
    for h in turned:
        angle = np.degrees(np.arccos(np.clip((np.trace(R.T @ h.R) - 1) / 2, -1, 1)))
        assert abs(angle - 180) < 1e-3
        assert np.allclose(np.linalg.det(h.R), 1.0)
        moved = corners @ h.R.T + h.t
        # Every corner lands on a corner of the same box: the same space, another face forward.
        dist = np.linalg.norm(moved[:, None] - at_pose[None], axis=2).min(1)
        assert dist.max() < 1e-6
        assert h.similarity == 0.4 and h.place_similarity == 0.4

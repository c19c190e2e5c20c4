"""Two rigid objects cannot share their space: of two poses that would interpenetrate, the better
one stays; stacked and side-by-side objects both stay."""
from __future__ import annotations

import numpy as np
import trimesh

from sixd_pose_ros.pipeline.exclusion import ObjectShape, exclude_overlaps
from sixd_pose_ros.pipeline.types import ObjectPose

BOX = trimesh.creation.box((0.15, 0.1, 0.03))  # a flat box, as a gelatin or pudding box lies
SMALL = trimesh.creation.box((0.04, 0.04, 0.04))


def _pose(name: str, t, score: float, R=np.eye(3)) -> ObjectPose:
    return ObjectPose(name, np.asarray(R, float), np.asarray(t, float), score, np.zeros(4))


def test_the_better_of_two_poses_in_one_place_stays():
    shapes = {"a": ObjectShape.from_mesh(BOX), "b": ObjectShape.from_mesh(BOX.copy())}
    turned = trimesh.transformations.rotation_matrix(np.radians(20), [0, 0, 1])[:3, :3]
    poses = [_pose("a", [0, 0, 0.6], 0.4), _pose("b", [0.01, 0.005, 0.6], 0.7, turned)]
    assert [p.name for p in exclude_overlaps(poses, shapes, 0.25)] == ["b"]
    assert len(exclude_overlaps(poses, shapes, 0.0)) == 2  # off


def test_stacked_and_neighbouring_objects_both_stay():
    shapes = {"a": ObjectShape.from_mesh(BOX), "b": ObjectShape.from_mesh(BOX.copy())}
    stacked = [_pose("a", [0, 0, 0.6], 0.4), _pose("b", [0.02, 0.01, 0.6 - 0.03], 0.7)]  # lying on it
    beside = [_pose("a", [0, 0, 0.6], 0.4), _pose("b", [0.15, 0.0, 0.6], 0.7)]  # touching its side
    assert len(exclude_overlaps(stacked, shapes, 0.25)) == 2
    assert len(exclude_overlaps(beside, shapes, 0.25)) == 2


def test_a_small_object_inside_a_large_one_goes_whichever_scores_better():
    shapes = {"box": ObjectShape.from_mesh(BOX), "cube": ObjectShape.from_mesh(SMALL)}
    inside = [_pose("box", [0, 0, 0.6], 0.9), _pose("cube", [0.01, 0, 0.6], 0.5)]
    assert [p.name for p in exclude_overlaps(inside, shapes, 0.25)] == ["box"]
    around = [_pose("box", [0, 0, 0.6], 0.5), _pose("cube", [0.01, 0, 0.6], 0.9)]
    assert [p.name for p in exclude_overlaps(around, shapes, 0.25)] == ["cube"]
    # Objects without a shape, and poses without metric scale, are never dropped.
    unknown = [_pose("box", [0, 0, 0.6], 0.9), _pose("mug", [0, 0, 0.6], 0.5)]
    assert len(exclude_overlaps(unknown, shapes, 0.25)) == 2


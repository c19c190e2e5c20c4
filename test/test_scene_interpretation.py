"""The scene interpretation: of objects that compete for one place the best-scoring keeps it and
the others choose again; a pose the camera sees through chooses again before it takes a place;
a second choice sees the depth without what the kept poses explain."""
from __future__ import annotations

import numpy as np
import trimesh

from sixd_pose_ros.pipeline.exclusion import ObjectShape
from sixd_pose_ros.pipeline.scene_interpretation import depth_explained_away, interpret_scene
from sixd_pose_ros.pipeline.types import ObjectPose
from sixd_pose_ros.render.renderer import RenderMesh, render

BOX = trimesh.creation.box((0.1, 0.08, 0.05))
SHAPES = {name: ObjectShape.from_mesh(BOX.copy()) for name in ("a", "b", "c")}
K = np.array([[600.0, 0, 320.0], [0, 600.0, 240.0], [0, 0, 1.0]])


def _pose(name: str, x: float, score: float, seen: float | None = 0.05) -> ObjectPose:
    return ObjectPose(name, np.eye(3), np.array([x, 0.0, 0.7]), score, np.zeros(4), seen_through=seen)


class Choices:
    """choose_again that hands out prepared second choices and records what it was asked."""

    def __init__(self, second: dict[str, list[ObjectPose]]) -> None:
        self.second, self.asked = second, []

    def __call__(self, pose: ObjectPose, kept: list[ObjectPose]) -> ObjectPose | None:
        self.asked.append((pose.name, sorted(k.name for k in kept)))
        left = self.second.get(pose.name, [])
        return left.pop(0) if left else None

    def run(self, poses, gate: float = 0.0, tries: int = 2) -> list[ObjectPose]:
        return interpret_scene(poses, SHAPES, 0.25, seen_through_limit=0.15, tries=tries,
                               gated=lambda p: p.score < gate, choose_again=self)


def _names(poses: list[ObjectPose]) -> list[str]:
    return [p.name for p in poses]


def test_the_loser_of_a_place_chooses_again_and_keeps_its_second_choice():
    second = _pose("b", 0.2, 0.4)
    choices = Choices({"b": [second]})
    kept = choices.run([_pose("a", 0.0, 0.8), _pose("b", 0.01, 0.5)])
    assert _names(kept) == ["a", "b"] and kept[1] is second
    assert choices.asked == [("b", ["a"])]  # it chose again knowing what "a" holds


def test_a_second_choice_that_collides_again_is_dropped_after_the_tries():
    choices = Choices({"b": [_pose("b", 0.02, 0.4), _pose("b", -0.01, 0.3), _pose("b", 0.5, 0.3)]})
    assert _names(choices.run([_pose("a", 0.0, 0.8), _pose("b", 0.01, 0.5)], tries=2)) == ["a"]
    assert len(choices.asked) == 2


def test_a_pose_the_camera_sees_through_waits_while_the_others_take_their_places():
    # "b" scores better than "a" but is seen through at a's place: a keeps it, b's second
    # choice is kept, and b's first choice, coming back last, finds its place taken.
    second = _pose("b", 0.3, 0.6, seen=0.3)
    choices = Choices({"b": [second]})
    kept = choices.run([_pose("a", 0.0, 0.5), _pose("b", 0.01, 0.7, seen=0.32)])
    assert _names(kept) == ["a", "b"] and kept[1] is second  # kept though seen through as much
    assert choices.asked == [("b", [])]  # asked first: the best score, but suspect


def test_a_seen_through_pose_comes_back_when_its_place_stays_free():
    # A right mug is seen past at its edges: its second choice scores lower (or none is
    # found), and its place is free at the end: the first choice comes back.
    first = _pose("b", 0.3, 0.7, seen=0.25)
    choices = Choices({"b": [_pose("b", 0.6, 0.35)]})
    kept = choices.run([_pose("a", 0.0, 0.5), first])
    assert _names(kept) == ["a", "b"] and kept[1] is first
    alone = Choices({})
    assert alone.run([_pose("a", 0.0, 0.5), first])[1] is first
    # A better-scoring second choice wins over it.
    better = _pose("b", 0.6, 0.8)
    assert Choices({"b": [better]}).run([_pose("a", 0.0, 0.5), first])[1] is better


def test_without_a_second_choice_the_exclusion_is_what_remains():
    choices = Choices({})
    assert _names(choices.run([_pose("a", 0.0, 0.8), _pose("b", 0.01, 0.5), _pose("c", 0.3, 0.4)])) == ["a", "c"]


def test_the_score_gate_comes_after_the_second_choice():
    # Below the gate and alone: dropped, no second choice. Below the gate on a kept pose's
    # place: it chooses again, and its second choice passes the gate.
    choices = Choices({"b": [_pose("b", 0.2, 0.45)]})
    kept = choices.run([_pose("a", 0.0, 0.8), _pose("b", 0.01, 0.2), _pose("c", 0.5, 0.1)], gate=0.3)
    assert _names(kept) == ["a", "b"]
    assert [name for name, _ in choices.asked] == ["b"]


def test_a_kept_pose_whose_depth_the_others_explain_goes_last():
    # "b" fills none of a's volume (20 cm apart) but agrees only with depth that "a" explains;
    # "a" keeps most of its support with b's points taken away. b goes, a stays; then a alone
    # is not asked again.
    table = {"a": 0.8, "b": 0.1, "c": 0.9}
    calls = []

    def own(pose, others):
        calls.append((pose.name, sorted(k.name for k in others)))
        return table[pose.name]

    kept = interpret_scene([_pose("a", 0.0, 0.5), _pose("b", 0.2, 0.8), _pose("c", 0.5, 0.4)], SHAPES, 0.25,
                           seen_through_limit=0.15, tries=2, gated=lambda p: False, choose_again=Choices({}),
                           own_support=own, min_own_support=0.3)
    assert _names(kept) == ["a", "c"]
    assert calls[:3] == [("b", ["a", "c"]), ("a", ["b", "c"]), ("c", ["a", "b"])]
    assert calls[3:] == [("a", ["c"]), ("c", ["a"])]  # checked again without b, both pass


def test_tracked_poses_are_kept_without_choosing_again():
    tracked = ObjectPose("b", np.eye(3), np.array([0.3, 0.0, 0.7]), 0.9, np.zeros(4), tracked=True,
                         seen_through=None)
    choices = Choices({})
    assert _names(choices.run([_pose("a", 0.0, 0.5), tracked])) == ["a", "b"] and choices.asked == []


def test_explained_away_depth_drops_exactly_the_kept_poses_points():
    # Two boxes side by side in front of a wall; the first one's pose explains its own pixels only.
    mesh = RenderMesh.from_trimesh(BOX)
    R = np.stack([np.eye(3), np.eye(3)])
    t = np.array([[-0.08, 0.0, 0.6], [0.08, 0.0, 0.6]])
    out = render([mesh, mesh], R, t, K, 640, 480)
    depth = np.where(out.depth[0] > 0, out.depth[0], 1.0).astype(np.float32)
    left = depth_explained_away(depth, K, [(mesh, R[0], t[0])], (0.02, 0.02))
    first, second = out.mask[0] == 1, out.mask[0] == 2
    assert (left[first] == 0).all()
    assert np.array_equal(left[~first], depth[~first]) and (left[second] > 0).all()
    # A kept pose 10 cm in front of what the camera measured explains nothing.
    moved = depth_explained_away(depth, K, [(mesh, R[0], t[0] - [0, 0, 0.1])], (0.02, 0.02))
    assert np.array_equal(moved, depth)
    assert np.array_equal(depth_explained_away(depth, K, [], (0.02, 0.02)), depth)

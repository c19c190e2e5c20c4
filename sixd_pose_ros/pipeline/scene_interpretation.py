"""Which of a frame's poses stay when objects compete for one place, and a second choice for the
objects that lose theirs.

Why: each object chooses its pose on its own, so two objects can choose one place, and an object
can choose a place where the camera sees through it. Measured on the real YCB-Video validation
frames (scene 2, frame 1; meshes without texture): the pudding box's untextured templates like
the meat can's place a factor 2.8 more than its own after the similarity power, and the wood
block's like the pudding box's place more than its own. The old exclusion (keep the best score
of two poses that share a place, pipeline/exclusion.py) then dropped the pudding box and kept the
wood block on the pudding box's place, seen through over 0.32 of its surface (right poses:
0.03-0.08). Here poses are placed best score first, as in the exclusion, but:

* a pose seen through more than ``seen_through_limit`` (the pose fills space the camera sees
  past) chooses again before it may take its place; it comes back last if its place is still
  free and it scores better than the second choice;
* a pose that collides with a kept one chooses again instead of vanishing;
* a second choice sees the depth without the points the kept poses already explain
  (:func:`depth_explained_away`): the meat can's place is gone for the pudding box, whose own
  place then wins on depth. The caller also weighs similarity less and penalizes seen-through
  space in that choice (KnownModelConfig.retry_similarity_power and
  retry_seen_through_penalty);
* last, a kept pose whose depth support the other kept poses already explain goes (a fit to
  another object's surface that does not fill its volume: on every 4th validation frame, 3 of
  the 5 absent objects that passed the score gate agreed with what the other poses leave
  unexplained below 0.3, right poses at 0.76 or more).

This is a greedy interpretation, not a joint search over all combinations: each object chooses
again at most ``tries`` times, and the best-scoring pose keeps its place.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from sixd_pose_ros.pipeline.exclusion import ObjectShape, collides_with_any
from sixd_pose_ros.pipeline.types import ObjectPose
from sixd_pose_ros.render.renderer import RenderMesh, render

__all__ = ["interpret_scene", "depth_explained_away"]


def interpret_scene(poses: Sequence[ObjectPose], shapes: Mapping[str, ObjectShape], max_inside: float, *,
                    seen_through_limit: float, tries: int, gated: Callable[[ObjectPose], bool],
                    choose_again: Callable[[ObjectPose, list[ObjectPose]], ObjectPose | None],
                    own_support: Callable[[ObjectPose, list[ObjectPose]], float] | None = None,
                    min_own_support: float = 0.0) -> list[ObjectPose]:
    """The poses that stay, after second choices (order: the input's objects' order; objects
    missing from it end without a pose).

    Args:
        poses: each object's first choice (at most one per object), not gated yet.
        shapes: the objects' shapes (objects without one are never in conflict).
        max_inside: the collision threshold (see ``collides_with_any``).
        seen_through_limit: above it a pose chooses again before it may take its place. The
            first choice waits until every other pose is placed, and comes back if its place is
            still free and it scores better than what the object chose instead (thin and round
            objects are seen past at their edges: a right mug or marker can be above the limit).
        tries: second choices per object, at most.
        gated: whether a pose's score is below what reports it; such a pose chooses again when
            it collides with a kept pose (its own place may score higher), else it is dropped.
        choose_again: (the pose, the poses kept so far) -> the object's next choice, or None.
        own_support: (a kept pose, the other kept poses) -> how much of the depth the others
            leave unexplained still confirms it (0..1). Last, the kept pose with the least is
            dropped while that is below ``min_own_support``, one at a time (two poses on the
            same points: the one that explains less of its own goes, and the other then keeps
            its support). None: no such check.
    """
    order = {pose.name: i for i, pose in enumerate(poses)}
    pending = sorted(poses, key=lambda p: -p.score)
    tried: dict[str, int] = {}
    waiting: list[ObjectPose] = []  # first choices seen through: placed last, if still free
    kept: list[ObjectPose] = []

    while pending:
        pose = pending.pop(0)
        hit = collides_with_any(pose, kept, shapes, max_inside)
        if gated(pose) and not pose.tracked:
            if hit and tried.get(pose.name, 0) < tries:
                tried[pose.name] = tried.get(pose.name, 0) + 1
                pending = _with(pending, choose_again(pose, list(kept)))
            continue
        suspect = (pose.seen_through is not None and pose.seen_through > seen_through_limit
                   and pose.name not in tried and not pose.tracked)
        if not hit and not suspect:
            kept.append(pose)
            continue
        if pose.tracked or tried.get(pose.name, 0) >= tries:
            continue
        if suspect and not hit:
            waiting.append(pose)
        tried[pose.name] = tried.get(pose.name, 0) + 1
        pending = _with(pending, choose_again(pose, list(kept)))
    for first in waiting:
        instead = next((k for k in kept if k.name == first.name), None)
        if not collides_with_any(first, kept, shapes, max_inside) and (instead is None or first.score > instead.score):
            kept = [k for k in kept if k is not instead] + [first]
    while own_support is not None and min_own_support > 0 and len(kept) > 1:
        checked = [p for p in kept if p.metric and not p.tracked]
        support = [own_support(p, [k for k in kept if k is not p]) for p in checked]
        if not checked or min(support) >= min_own_support:
            break
        kept.remove(checked[int(np.argmin(support))])
    return sorted(kept, key=lambda p: order[p.name])


def _with(pending: list[ObjectPose], pose: ObjectPose | None) -> list[ObjectPose]:
    """``pending`` with ``pose`` (if any), best score first."""
    return sorted(pending + ([pose] if pose is not None else []), key=lambda p: -p.score)


def depth_explained_away(depth: np.ndarray, K: np.ndarray, posed: Sequence[tuple[RenderMesh, np.ndarray, np.ndarray]],
                         tolerance: tuple[float, float]) -> np.ndarray:
    """A copy of ``depth`` (meters, 0 = none) with 0 wherever one of the ``posed`` meshes (mesh,
    R, t), rendered together, lies within ``tolerance`` (meters, fraction of the distance) of the
    measurement: the points those poses already explain, which another object's second choice
    must not claim again (to the depth ranking they are missing measurements)."""
    out = depth.copy()
    if not posed:
        return out
    height, width = depth.shape
    rendered = render([mesh for mesh, _, _ in posed], np.stack([R for _, R, _ in posed]),
                      np.stack([t for _, _, t in posed]), K, width, height).depth
    rendered = rendered[0] if rendered.ndim == 3 else rendered
    near = (rendered > 0) & (np.abs(depth - rendered) <= np.maximum(tolerance[0], tolerance[1] * rendered))
    out[near] = 0
    return out

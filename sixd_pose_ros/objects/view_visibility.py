"""Which posed views show the object, for inputs whose poses already say where it is.

Why: in a real scene the camera looks at the table, not at each object. When the poses are
object-centred (BOP ground truth; a folder with the object's pose, centre, box or point cloud)
a frame whose projected object centre falls outside the image, whose ``visib_fract`` is low, or
whose depth holds nothing on the object is still a correctly posed frame: it just does not
show the object. Such frames are left out of the references, each with a line saying why
(``object.json`` ``coverage.left_out``, and the build summary), instead of stopping the build.

Photo sets that do not locate the object (only camera poses) cannot be judged this way: there
the object's position is itself estimated from the views, and a view that disagrees is an
error naming the view (see :func:`~sixd_pose_ros.objects.model_free_database.check_views`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sixd_pose_ros.objects.posed_images import PosedImageSet, PosedView

__all__ = ["MIN_DEPTH_PIXELS", "MIN_VISIB_FRACT", "LeftOutView", "centre_outside_reason",
           "leave_out_unseen", "summarize_left_out"]

#: Below this visible fraction a reference crop shows more occluder than object, and its mask
#: no longer outlines the object (BOP scores targets from 0.1; references need more).
MIN_VISIB_FRACT = 0.3
#: Fewer valid depth pixels than this on the object (inside its mask, or near its projected
#: centre without a mask): the depth does not support the object in that frame.
MIN_DEPTH_PIXELS = 50
#: Half side (pixels) of the window around the projected centre that stands in for a mask.
_WINDOW = 12


@dataclass(frozen=True)
class LeftOutView:
    """One frame left out of the references, and why (what the coverage report lists)."""

    name: str
    reason: str

    def to_json(self) -> dict:
        return {"image": self.name, "reason": self.reason}


def centre_outside_reason(view: PosedView, centre_w: np.ndarray) -> str | None:
    """Why ``centre_w`` (world) is not seen by ``view`` (behind it, outside the image), or None."""
    p = view.R_w2c @ np.asarray(centre_w, np.float64) + view.t_w2c
    if p[2] <= 0:
        return "object centre behind the camera"
    u = view.K @ (p / p[2])
    if not (-0.5 <= u[0] <= view.width - 0.5 and -0.5 <= u[1] <= view.height - 0.5):
        return f"object centre projects to ({u[0]:.0f}, {u[1]:.0f}), outside the {view.width}x{view.height} image"
    return None


def _pixel_reason(view: PosedView, centre_w: np.ndarray, use_depth: bool) -> str | None:
    """Mask and depth evidence: an empty mask, or (with depth) no depth on the object."""
    mask = view.load_mask()
    if mask is not None and not mask.any():
        return "empty mask"
    if not use_depth or view.depth_path is None:
        return None
    depth = view.load_depth()
    if mask is None:  # a window around the projected centre stands in for the mask
        p = view.R_w2c @ centre_w + view.t_w2c
        u, v = np.rint((view.K @ (p / p[2]))[:2]).astype(int)
        window = depth[max(v - _WINDOW, 0):v + _WINDOW + 1, max(u - _WINDOW, 0):u + _WINDOW + 1]
        valid, where = int((window > 0).sum()), "near the projected object centre"
    else:
        valid, where = int((depth[mask] > 0).sum()), "inside the mask"
    if valid < MIN_DEPTH_PIXELS:
        return f"no depth support ({valid} valid depth pixels {where}, need {MIN_DEPTH_PIXELS})"
    return None


def leave_out_unseen(images: PosedImageSet, min_visib_fract: float = MIN_VISIB_FRACT
                     ) -> tuple[PosedImageSet, list[LeftOutView]]:
    """The views that show the object, and the ones left out with their reasons.

    Checked in order, cheapest first: ``visib_fract`` (when the input gives it) below
    ``min_visib_fract``; the object's given location (:attr:`ObjectHint.location`) behind the
    camera or outside the image; an empty mask; with metric depth, fewer than
    :data:`MIN_DEPTH_PIXELS` valid depth pixels on the object. Sets that do not locate the
    object come back unchanged (nothing can be judged before the object is found), and so do
    sets whose given location every view misses (or, for a user's centre, box or point cloud,
    most views): that is a misplaced location or a wrong pose convention, which
    :func:`~sixd_pose_ros.objects.model_free_database.check_views` reports.

    Args:
        images: the posed set as read.
        min_visib_fract: smallest visible fraction kept, in ``[0, 1]``.

    Returns:
        ``(kept set, left out)``; the kept set's notes gain one line when any view is left out.
    """
    if not 0.0 <= min_visib_fract <= 1.0:
        raise ValueError(f"min_visib_fract must be in [0, 1], got {min_visib_fract}")
    centre = images.hint.location
    if centre is None:
        return images, []
    outside = [centre_outside_reason(v, centre) for v in images.views]
    n_out = sum(r is not None for r in outside)
    given = images.hint.center is not None or images.hint.points is not None
    if n_out == len(outside) or (given and 2 * n_out > len(outside)):
        # Missed by every view (or the user's own centre/box/cloud by most): the location or
        # the pose convention is wrong, not the object hidden; check_views says which.
        return images, []
    use_depth = images.metric and images.has_depth
    kept, left_out = [], []
    for view, out in zip(images.views, outside):
        reason = None
        if view.visib_fract is not None and view.visib_fract < min_visib_fract:
            reason = f"visib_fract {view.visib_fract:.2f} < {min_visib_fract:g}"
        reason = reason or out or _pixel_reason(view, centre, use_depth)
        if reason is None:
            kept.append(view)
        else:
            left_out.append(LeftOutView(view.name, reason))
    notes = list(images.notes)
    if left_out:
        notes.append(summarize_left_out(left_out, len(images.views)))
    return replace(images, views=kept, notes=notes), left_out


def summarize_left_out(left_out: list[LeftOutView], n_read: int, limit: int = 8) -> str:
    """One line for people: how many frames were left out of how many, and why."""
    listed = "; ".join(f"{v.name} ({v.reason})" for v in left_out[:limit])
    more = f"; and {len(left_out) - limit} more" if len(left_out) > limit else ""
    return (f"left out {len(left_out)} of {n_read} frame(s) that do not show the object: "
            f"{listed}{more}")

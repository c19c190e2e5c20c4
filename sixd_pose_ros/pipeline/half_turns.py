"""The other faces of a box-like object: each leading pose turned half a turn about its box axes.

Templates and depth both confuse an object with itself turned 180 degrees when its outline is
near-symmetric: the demo drill's frame 5 came out 178 degrees off (about the drill's long axis)
with depth health 0.94, and no hypothesis within 30 degrees of the truth had been generated. The
half turn of that leader is 7 degrees from the truth, but about the box centre it lands 5.6 cm
off (the wrong face had been fitted to the depth), and the quick alignment of the ranking did not
bring it back (agreement 0.02). A full alignment first does: the verifier then chooses it (ADD
0.09 d, 19 degrees).

Only the object's appearance can tell its faces apart, so only objects whose mesh has colour get
half turns. Measured with them for every object (session 10): the demo's 12 frames 10 -> 11
within ADD-0.1d; bench-v1 40 frames ADD(-S)-0.1d 63.0 -> 63.9 %; but the untextured real YCB-V
meshes, where the verifier compares a grey render, ADD(-S) 42.2 -> 40.6 % (faces chosen at
random: 17 instances got their face right, 19 lost it) at unchanged ADD-S, and the frame cost
more than doubled.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sixd_pose_ros.pipeline.depth_ranking import Hypothesis, Ranked, SurfaceModel
from sixd_pose_ros.pipeline.exclusion import ObjectShape
from sixd_pose_ros.pipeline.types import Frame
from sixd_pose_ros.render.renderer import RenderMesh

#: Colour spread (mean per-channel standard deviation, 0..1) below which a mesh counts as plain:
#: the untextured YCB-V meshes have 0, the demo drill 0.38, bench-v1's plainest box 0.03.
PLAIN_SPREAD = 0.05


def tells_faces_apart(mesh: RenderMesh) -> bool:
    """Whether renders of the mesh differ by more than shading: a texture or vertex colours
    that vary. Half turns of a plain mesh would be chosen by chance."""
    if mesh.texture is not None:
        colours = mesh.texture.reshape(-1, 3).astype(np.float32) / 255.0
    elif mesh.colors is not None:
        colours = mesh.colors
    else:
        return False
    return float(np.asarray(colours, np.float64).std(0).mean()) >= PLAIN_SPREAD


def half_turns(ranked: Sequence[Ranked], shape: ObjectShape) -> list[Hypothesis]:
    """Each ranked pose (as aligned) turned 180 degrees about each of its box axes, through the
    box centre (model frame): the box then fills the same space."""
    axes, center = shape.box_rotation, shape.box_center
    out = []
    for r in ranked:
        R, t, h = r.aligned.R, r.aligned.t, r.hypothesis
        for k in range(3):
            F = 2.0 * np.outer(axes[:, k], axes[:, k]) - np.eye(3)  # half a turn about the axis
            R_f = R @ F
            out.append(Hypothesis(R_f, t + R @ center - R_f @ center, h.detection, h.similarity, h.place_similarity))
    return out


def aligned_half_turns(surface: SurfaceModel, shape: ObjectShape, ranked: Sequence[Ranked], frame: Frame,
                       tolerance: tuple[float, float]) -> list[Hypothesis]:
    """:func:`half_turns`, each given a full depth alignment, ready to be ranked with the rest."""
    out = []
    for h in half_turns(ranked, shape):
        aligned = surface.align(frame, h.R, h.t, tolerance)
        out.append(Hypothesis(aligned.R, aligned.t, h.detection, h.similarity, h.place_similarity))
    return out

"""Reference photos for evaluating the model-free mode, by one of two documented protocols.

* **sequence** (the object is seen in one sequence only: one BOP scene of the dataset, e.g. a
  real video): the frames that show the object (ground truth locates it, so frames where it is
  hidden, out of the image or without depth on it are left out; see
  :mod:`~sixd_pose_ros.objects.view_visibility`) are candidates; ``--refs`` of them are chosen
  by farthest-point sampling of the camera's viewing direction in the object frame, become the
  references, and are not scored for that object: the estimator never scores an object on a
  frame it was given as that object's reference. Other objects in the frame are still scored.
  The references come from the scene's own frames, as in Gen6D's protocol; how well they cover
  the object depends on the sequence (20 consecutive frames of one video move the camera a few
  cm: one side of the object only).
* **capture** (a dataset whose objects appear in many short scenes, like the synthetic benchmark):
  the capture a user would make with the arm is simulated: ``--refs`` views rendered around the
  mesh (FPS directions on a sphere, random roll, colour + depth + mask), written in the plain
  folder format (a) and built with the same `build-object --images` code a user runs. The mesh
  never reaches the estimator; only these photos do.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import trimesh

from sixd_pose_ros.geometry.normalization import normalization_from_points
from sixd_pose_ros.geometry.sampling import farthest_point_sampling, icosphere_vertices
from sixd_pose_ros.objects.posed_images import PosedImageSet, read_bop_views
from sixd_pose_ros.objects.view_visibility import LeftOutView, leave_out_unseen

CAPTURE_SIZE = (320, 240)
CAPTURE_DISTANCE_RADII = 3.0


def _look_from(cam: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """World-to-camera rotation of a camera at ``cam`` looking at ``target`` (OpenCV axes)."""
    z = target - cam
    z /= np.linalg.norm(z)
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.95 else np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    c, s = np.cos(roll), np.sin(roll)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ R


def render_capture(mesh: trimesh.Trimesh, folder: Path, n_views: int, seed: int = 0) -> Path:
    """Write ``n_views`` rendered photos of ``mesh`` (metres) as format (a) into ``folder``.

    The object frame is the world frame (``object.to_world`` = identity), so estimated poses are
    directly comparable with the dataset's ground truth.
    """
    from sixd_pose_ros.render.renderer import RenderMesh, render

    rng = np.random.default_rng(seed)
    norm = normalization_from_points(np.asarray(mesh.vertices))
    candidates = icosphere_vertices(3)
    dirs = candidates[farthest_point_sampling(candidates, n_views, start=int(rng.integers(len(candidates))))]
    width, height = CAPTURE_SIZE
    f = 0.5 * width / np.tan(np.radians(25.0))
    K = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    cams = norm.center + CAPTURE_DISTANCE_RADII * norm.scale * dirs
    R = np.stack([_look_from(c, norm.center, rng.uniform(-0.5, 0.5)) for c in cams])
    t = -np.einsum("nij,nj->ni", R, cams)
    out = render([RenderMesh.from_trimesh(mesh)], R, t, K, width, height)
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(n_views):
        for sub in ("rgb", "depth", "mask"):
            (folder / sub).mkdir(exist_ok=True)
        cv2.imwrite(str(folder / "rgb" / f"{i:03d}.png"), cv2.cvtColor(out.rgb[i], cv2.COLOR_RGB2BGR))
        depth_mm = np.round(np.nan_to_num(out.depth[i]) * 1000.0).clip(0, 65535).astype(np.uint16)
        cv2.imwrite(str(folder / "depth" / f"{i:03d}.png"), depth_mm)
        cv2.imwrite(str(folder / "mask" / f"{i:03d}.png"), (out.mask[i] == 1).astype(np.uint8) * 255)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R[i], t[i]
        images.append({"file": f"rgb/{i:03d}.png", "world_to_camera": T.tolist(),
                       "depth": f"depth/{i:03d}.png", "mask": f"mask/{i:03d}.png"})
    poses = {"units": "m", "camera_axes": "opencv", "depth_scale": 0.001,
             "intrinsics": {"K": K.tolist()}, "object": {"to_world": np.eye(4).tolist()}, "images": images}
    (folder / "poses.json").write_text(json.dumps(poses, indent=1))
    return folder


@dataclass(frozen=True)
class SequenceReferences:
    """References of one object taken from the frames of its one scene.

    Attributes:
        images: the chosen reference frames (a posed set ready for the build).
        im_ids: BOP image ids of those frames (never scored for this object).
        candidates: frames of the scene that show the object (the pool the references came from).
        left_out: frames of the scene where the object is not seen, with the reason.
    """

    images: PosedImageSet
    im_ids: tuple[int, ...]
    candidates: int
    left_out: tuple[LeftOutView, ...]


def sequence_references(scene: str | Path, obj_id: int, n_refs: int,
                        min_scored: int = 4) -> SequenceReferences | None:
    """``n_refs`` reference frames of ``obj_id`` from a BOP scene's own frames, or ``None``
    when fewer than ``n_refs + min_scored`` frames show the object (then no frame would be left
    to score, or too few: the caller falls back to the capture protocol).

    Raises:
        PosedImagesError: the scene's files cannot be read.
    """
    images, left_out = leave_out_unseen(read_bop_views(scene, obj_id))
    if len(images.views) < n_refs + min_scored:
        return None
    R = np.stack([v.R_w2c for v in images.views])
    t = np.stack([v.t_w2c for v in images.views])
    chosen = sequence_reference_frames(R, t, n_refs)
    subset = replace(images, views=[images.views[i] for i in chosen])
    return SequenceReferences(subset, tuple(int(Path(images.views[i].name).stem) for i in chosen),
                              len(images.views), tuple(left_out))


def sequence_reference_frames(R_m2c: np.ndarray, t_m2c: np.ndarray, n_refs: int) -> np.ndarray:
    """Indices of ``n_refs`` frames whose viewing directions (object frame) are farthest apart.

    ``R_m2c (N, 3, 3)``, ``t_m2c (N, 3)``: the object's ground-truth poses in those frames.
    """
    cams = -np.einsum("nji,nj->ni", R_m2c, t_m2c)  # camera centres in the object frame
    dirs = cams / np.linalg.norm(cams, axis=1, keepdims=True)
    return np.sort(farthest_point_sampling(dirs, min(n_refs, len(dirs)), start=0))

"""Training samples for the detector and the volume refiner, rendered on the fly.

Both stages learn from procedural training objects only (held-out objects are for evaluation).
Rendering a sample is cheaper than reading one from disk here (a 256x256 query takes a few
milliseconds with the numba rasterizer), so samples are made as they are needed, from a seed,
and no training set has to be stored or shipped.

Geometry follows objects/references.py: everything pose-related is in the normalized object
frame (unit bounding sphere), and crops are object-centred virtual cameras.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from sixd_pose_ros.geometry.rotations import matrix_from_axis_angle, random_rotations
from sixd_pose_ros.objects.references import ReferenceSet, object_centred_camera, render_references
from sixd_pose_ros.render.procedural import make_object
from sixd_pose_ros.render.renderer import Lighting, RenderMesh, render
from sixd_pose_ros.training.scenes import jitter_color, random_texture

# The detector's scale range (Gen6D: 2^-1 .. 2^0.5 of the reference size).
LOG2_SCALE_RANGE = (-1.0, 0.5)


@dataclass
class PoseObject:
    """A training or evaluation object with its render mesh and reference views."""

    key: tuple[str, int]
    mesh: RenderMesh
    refs: ReferenceSet

    @property
    def center(self) -> np.ndarray:
        return self.refs.normalization.center

    @property
    def scale(self) -> float:
        return float(self.refs.normalization.scale)


@lru_cache(maxsize=512)
def pose_object(split: str, index: int, n_refs: int = 32, ref_size: int = 128) -> PoseObject:
    """Object (split, index) with n_refs rendered references; cached, references are the costly part."""
    obj = make_object(split, index)
    return PoseObject((split, index), RenderMesh.from_trimesh(obj.mesh),
                      render_references(obj.mesh, n_views=n_refs, size=ref_size))


def random_lighting(rng: np.random.Generator) -> Lighting:
    d = rng.normal(size=3)
    d[2] = abs(d[2]) + 0.5
    return Lighting(ambient=float(rng.uniform(0.3, 0.6)), diffuse=float(rng.uniform(0.3, 0.7)),
                    specular=float(rng.uniform(0.0, 0.3)), shininess=float(rng.uniform(5, 40)),
                    direction=tuple(d / np.linalg.norm(d)))


def metric_translation(obj: PoseObject, R: np.ndarray, center_cam_n: np.ndarray) -> np.ndarray:
    """Metric t that puts the object's centre at center_cam_n (normalized camera units)."""
    return obj.scale * center_cam_n - R @ obj.center


def sphere_diameter_px(distance_n: float, focal: float) -> float:
    """Apparent diameter in pixels of the unit sphere at distance_n (normalized units)."""
    return 2.0 * focal * np.tan(np.arcsin(1.0 / distance_n))


def distance_for_diameter(diameter_px: float, focal: float) -> float:
    return 1.0 / np.sin(np.arctan(diameter_px / (2.0 * focal)))


def _composite(out, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    fg = out.mask[0] > 0
    rgb = np.where(fg[..., None], out.rgb[0], background)
    return jitter_color(rgb, rng)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    return cv2.resize(random_texture(rng, 256), (width, height), interpolation=cv2.INTER_LINEAR)


@dataclass
class DetectorSample:
    query: np.ndarray  # (H, W, 3) uint8
    K: np.ndarray  # (3, 3)
    center_xy: np.ndarray  # (2,) projected object centre, pixels
    box_px: float  # apparent diameter of the unit sphere, pixels
    key: tuple[str, int]


def detector_sample(obj: PoseObject, distractors: list[PoseObject], rng: np.random.Generator,
                    width: int = 256, height: int = 256, ref_size: int = 120) -> DetectorSample:
    """A query image holding obj at a random pose, centre and scale, among distractors."""
    focal = float(rng.uniform(0.9, 1.4) * width)
    K = np.array([[focal, 0, (width - 1) / 2 + rng.uniform(-8, 8)],
                  [0, focal * rng.uniform(0.98, 1.02), (height - 1) / 2 + rng.uniform(-8, 8)],
                  [0, 0, 1.0]])
    box = ref_size * 2.0 ** rng.uniform(*LOG2_SCALE_RANGE)
    margin = 0.25 * box
    center = np.array([rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)])
    meshes, Rs, ts = [], [], []
    for i, o in enumerate([obj] + distractors):
        if i == 0:
            c_px, b = center, box
        else:  # distractors anywhere, some overlapping the target
            c_px = np.array([rng.uniform(0, width), rng.uniform(0, height)])
            b = ref_size * 2.0 ** rng.uniform(*LOG2_SCALE_RANGE)
        ray = np.linalg.solve(K, [c_px[0], c_px[1], 1.0])
        d = distance_for_diameter(b, np.sqrt(K[0, 0] * K[1, 1]))
        if i > 0:
            d *= rng.uniform(1.05, 1.6)  # distractors behind or beside: the target stays mostly visible
        R = random_rotations(1, rng)[0]
        meshes.append(o.mesh)
        Rs.append(R)
        ts.append(metric_translation(o, R, d * ray / np.linalg.norm(ray)))
    out = render(meshes, np.stack(Rs)[None], np.stack(ts)[None], K, width, height,
                 lighting=random_lighting(rng))
    query = _composite(out, _background(rng, width, height), rng)
    # The sphere centre's projection (what the heatmap targets) and its apparent size.
    c_cam = (Rs[0] @ obj.center + ts[0]) / obj.scale
    uv = K @ c_cam
    return DetectorSample(query, K, uv[:2] / uv[2], float(box), obj.key)


@dataclass
class RefinerSample:
    crop: np.ndarray  # (S, S, 3) uint8, the query crop around the INPUT pose's centre
    K_crop: np.ndarray  # (3, 3)
    R_in: np.ndarray  # (3, 3) input pose in the crop camera, normalized frame
    t_in: np.ndarray  # (3,) = (0, 0, d_in)
    R_gt: np.ndarray
    t_gt: np.ndarray
    ref_idx: np.ndarray  # (n_near,) nearest references to R_in
    key: tuple[str, int]


def perturb_pose(R: np.ndarray, t: np.ndarray, K: np.ndarray, rng: np.random.Generator,
                 max_rot_deg: float = 15.0, max_depth_frac: float = 0.1,
                 max_shift_px: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """The refiner's input: ground truth moved by up to max_rot_deg (about the object centre),
    max_depth_frac of its depth and max_shift_px of its projected centre."""
    axis = rng.normal(size=3)
    angle = np.radians(rng.uniform(0, max_rot_deg))
    R_in = matrix_from_axis_angle(axis / np.linalg.norm(axis), angle) @ R
    uv = K @ t
    uv = uv[:2] / uv[2] + rng.uniform(-1, 1, 2) * max_shift_px
    z = t[2] * (1.0 + rng.uniform(-max_depth_frac, max_depth_frac))
    t_in = z * np.linalg.solve(K, [uv[0], uv[1], 1.0])
    return R_in, t_in


def refiner_sample(obj: PoseObject, rng: np.random.Generator, crop_size: int = 128,
                   n_near: int = 6, image_focal: float = 600.0, **perturb) -> RefinerSample:
    """Ground truth at a random pose in a 640x480-like camera, a perturbed input pose, and the
    query crop of the input pose rendered directly in its object-centred virtual camera."""
    K = np.array([[image_focal, 0, 319.5], [0, image_focal, 239.5], [0, 0, 1.0]])
    R_gt = random_rotations(1, rng)[0]
    box = 120 * 2.0 ** rng.uniform(-1.0, 1.0)
    d = distance_for_diameter(box, image_focal)
    uv = np.array([rng.uniform(200, 440), rng.uniform(150, 330), 1.0])
    ray = np.linalg.solve(K, uv)
    t_gt = d * ray / np.linalg.norm(ray)
    R_in, t_in = perturb_pose(R_gt, t_gt, K, rng, **perturb)
    vc = object_centred_camera(K, t_in, 1.0, crop_size)
    R_gt_c, t_gt_c = vc.R_v @ R_gt, vc.R_v @ t_gt
    R_in_c, t_in_c = vc.R_v @ R_in, vc.R_v @ t_in
    out = render([obj.mesh], R_gt_c, metric_translation(obj, R_gt_c, t_gt_c), vc.K, crop_size,
                 crop_size, lighting=random_lighting(rng))
    crop = _composite(out, _background(rng, crop_size, crop_size), rng)
    ref_idx = obj.refs.nearest(R_in_c, k=n_near, t_query=t_in_c)
    return RefinerSample(crop, vc.K, R_in_c, t_in_c, R_gt_c, t_gt_c, np.asarray(ref_idx), obj.key)


# ----------------------------------------------------------------------------------------------
# Autoencoder (known-model mode): augmented crop -> canonical view of the same rotation
# ----------------------------------------------------------------------------------------------
CANONICAL_DISTANCE = 4.0  # normalized units, as the rendered references and the codebook


@lru_cache(maxsize=4096)
def render_object(split: str, index: int) -> tuple[RenderMesh, np.ndarray, float]:
    """(mesh, centre, scale) of a procedural object, cached (no references needed here)."""
    from sixd_pose_ros.geometry.normalization import normalization_from_points

    obj = make_object(split, index)
    norm = normalization_from_points(np.asarray(obj.mesh.vertices))
    return RenderMesh.from_trimesh(obj.mesh), norm.center, float(norm.scale)


def occluder_meshes(count: int, start: int) -> list[RenderMesh]:
    """Training-split objects ``start .. start + count - 1`` as occluders for augmented crops.
    Trainers pass a start outside their object pool; evaluations use 1_000_000 and up."""
    return [render_object("train", start + i)[0] for i in range(count)]


def canonical_crop_K(size: int = 128, distance: float = CANONICAL_DISTANCE) -> np.ndarray:
    """Crop intrinsics at which the unit sphere at `distance` fills the crop."""
    f = 0.5 * size * np.sqrt(distance * distance - 1.0)
    c = 0.5 * (size - 1)
    return np.array([[f, 0, c], [0, f, c], [0, 0, 1.0]])


@dataclass
class AutoencoderSample:
    crop: np.ndarray  # (S, S, 3) uint8, augmented
    target_rgb: np.ndarray  # (S, S, 3) uint8, clean canonical view, black background
    target_depth: np.ndarray  # (S, S) float32, (z - d) in object radii on the object, 1 elsewhere
    mask: np.ndarray  # (S, S) bool, canonical silhouette
    R: np.ndarray  # (3, 3) rotation shown, in the crop camera


def autoencoder_samples(split: str, index: int, rotations: np.ndarray, rng: np.random.Generator,
                        size: int = 128, occluders: list[RenderMesh] | None = None
                        ) -> list[AutoencoderSample]:
    """For each rotation: the canonical view (clean, centred, fixed scale) and an augmented
    crop of the same rotation (crop offset and scale jitter as a detector box would have,
    random light, clutter behind, an occluder in front, colour jitter and noise)."""
    mesh, center, scale = render_object(split, index)
    n = len(rotations)
    K = canonical_crop_K(size)
    t_n = np.array([0.0, 0.0, CANONICAL_DISTANCE])
    t_m = np.stack([scale * t_n - R @ center for R in rotations])
    clean = render([mesh], rotations, t_m, K, size, size, lighting=Lighting())  # as the codebook views
    # Augmented: box jitter moves the principal point and the focal length a little.
    K_aug = np.repeat(K[None], n, axis=0)
    K_aug[:, :2, 2] += rng.uniform(-0.06, 0.06, (n, 2)) * size
    K_aug[:, 0, 0] *= (zoom := rng.uniform(0.85, 1.15, n))
    K_aug[:, 1, 1] *= zoom
    lights = [random_lighting(rng) for _ in range(n)]
    if occluders and rng.random() < 0.5:
        occ = occluders[int(rng.integers(len(occluders)))]
        R_o = random_rotations(n, rng)
        # In front of the object, off to one side: hides part of it (up to about half).
        side = rng.uniform(-1, 1, (n, 2))
        side *= (rng.uniform(0.9, 1.6, n) / np.linalg.norm(side, axis=1))[:, None]
        t_o = np.concatenate([side * scale, np.full((n, 1), (CANONICAL_DISTANCE - 1.5) * scale)], axis=1)
        occ_scale = scale / (np.linalg.norm(occ.vertices, axis=1).max() + 1e-9) * rng.uniform(0.4, 0.8)
        occ_mesh = RenderMesh(occ.vertices * occ_scale, occ.faces, occ.normals, occ.colors, occ.uv, occ.texture)
        aug = render([mesh, occ_mesh], np.stack([rotations, R_o], 1), np.stack([t_m, t_o], 1), K_aug,
                     size, size, lighting=lights)
    else:
        aug = render([mesh], rotations, t_m, K_aug, size, size, lighting=lights)
    samples = []
    for i in range(n):
        fg = aug.mask[i] > 0
        crop = np.where(fg[..., None], aug.rgb[i], _background(rng, size, size))
        mask = clean.mask[i] > 0
        depth = np.where(mask, clean.depth[i] / scale - CANONICAL_DISTANCE, 1.0).astype(np.float32)
        samples.append(AutoencoderSample(jitter_color(crop, rng), clean.rgb[i], depth, mask, rotations[i]))
    return samples


# ----------------------------------------------------------------------------------------------
# Viewpoint selector (model-free mode): object-centred query crop -> which reference, which angle
# ----------------------------------------------------------------------------------------------
@dataclass
class SelectorSample:
    crop: np.ndarray  # (S, S, 3) uint8, centred on the (jittered) detected centre
    R: np.ndarray  # (3, 3) rotation of the normalized object in the crop camera
    t: np.ndarray  # (3,) true object centre in the crop camera, normalized units
    key: tuple[str, int]


def _scaled_occluder(occ: RenderMesh, radius: float) -> RenderMesh:
    """occ scaled so that its farthest vertex from its origin is at `radius` (meters)."""
    s = radius / (np.linalg.norm(occ.vertices, axis=1).max() + 1e-9)
    return RenderMesh(occ.vertices * s, occ.faces, occ.normals, occ.colors, occ.uv, occ.texture)


def selector_sample(obj: PoseObject, rng: np.random.Generator, crop_size: int = 128,
                    image_focal: float = 600.0, max_inplane_deg: float = 180.0,
                    occluders: list[RenderMesh] | None = None, occlusion_prob: float = 0.4,
                    max_shift_frac: float = 0.1, max_scale_jitter: float = 0.1) -> SelectorSample:
    """The selector's query: obj at a random rotation, cropped by the crop camera of a detected
    centre and scale that miss the truth by up to max_shift_frac of the box and
    max_scale_jitter of the distance (what the detector leaves), rendered directly in that
    camera over clutter, sometimes half hidden by an occluder, colour-jittered, noised, blurred.

    Rotation: max_inplane_deg >= 180 draws it uniformly on SO(3) (any camera roll); smaller
    values draw a uniform viewing direction and an in-plane angle within +-max_inplane_deg of
    the upright look-at view (object z up), i.e. of the rendered references' convention.
    """
    from sixd_pose_ros.geometry.rotations import inplane_rotation, look_at_rotation

    K = np.array([[image_focal, 0, 319.5], [0, image_focal, 239.5], [0, 0, 1.0]])
    box = 120 * 2.0 ** rng.uniform(-1.0, 1.0)
    d = distance_for_diameter(box, image_focal)
    uv = np.array([rng.uniform(200, 440), rng.uniform(150, 330)])
    ray = np.linalg.solve(K, [uv[0], uv[1], 1.0])
    t_gt = d * ray / np.linalg.norm(ray)
    uv_in = uv + rng.uniform(-1, 1, 2) * max_shift_frac * box
    ray_in = np.linalg.solve(K, [uv_in[0], uv_in[1], 1.0])
    t_in = d * (1.0 + rng.uniform(-max_scale_jitter, max_scale_jitter)) * ray_in / np.linalg.norm(ray_in)
    vc = object_centred_camera(K, t_in, 1.0, crop_size)
    if max_inplane_deg >= 180.0:
        R_c = random_rotations(1, rng)[0]
    else:
        v = rng.normal(size=3)
        R_c = inplane_rotation(np.radians(rng.uniform(-max_inplane_deg, max_inplane_deg))) @ \
            look_at_rotation(v / np.linalg.norm(v))
    t_c = vc.R_v @ t_gt
    meshes, Rs, ts = [obj.mesh], [R_c], [metric_translation(obj, R_c, t_c)]
    if occluders and rng.random() < occlusion_prob:
        # In front of the object (1.5 radii closer), off to one side: hides up to about half.
        side = rng.normal(size=2)
        side *= rng.uniform(0.9, 1.6) / np.linalg.norm(side)
        depth = np.linalg.norm(t_c)
        centre = t_c * (depth - 1.5) / depth + np.array([side[0], side[1], 0.0])
        occ = occluders[int(rng.integers(len(occluders)))]
        meshes.append(_scaled_occluder(occ, obj.scale * rng.uniform(0.4, 0.8)))
        Rs.append(random_rotations(1, rng)[0])
        ts.append(obj.scale * centre)
    out = render(meshes, np.stack(Rs)[None], np.stack(ts)[None], vc.K, crop_size, crop_size,
                 lighting=random_lighting(rng))
    crop = _composite(out, _background(rng, crop_size, crop_size), rng)
    return SelectorSample(crop, R_c, t_c, obj.key)

"""Compose ground-truthed RGB-D frames: objects on a table, seen by a camera moving around them.

A scene is what a robot sees while its wrist camera moves over a table: a fixed arrangement of
target objects (annotated) and distractors (not annotated) resting on a textured plane, and a
camera orbiting them. Frames of one scene share the arrangement, so the same data serves
single-frame training, tracking and bag replay.

Realism where it matters for pose networks trained only on this: random lights with specular
highlights, cluttered backgrounds, occlusion by other objects (bounded: every annotated target
keeps at least ``min_visib_fract`` of its silhouette visible), sensor-like depth (noise growing
with the square of distance, 1 mm quantization, dropouts at depth edges and in random blobs)
and colour jitter. All randomness comes from one numpy Generator, so a seed fixes a scene.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
import trimesh

from sixd_pose_ros.datasets.types import GTInstance, SceneFrame
from sixd_pose_ros.geometry.rotations import look_at_rotation, random_rotations
from sixd_pose_ros.render.rasterizer import rasterize
from sixd_pose_ros.render.renderer import Lighting, RenderMesh, pack_faces, render

# Off-screen place for objects that must not appear in an image (behind the camera: the
# rasterizer drops triangles behind its near plane, so this costs almost nothing).
_HIDDEN_T = np.array([0.0, 0.0, -100.0])


@dataclass(frozen=True)
class CameraModel:
    """Nominal intrinsics (a RealSense D435-like 640x480 colour camera) and their jitter."""

    width: int = 640
    height: int = 480
    fx: float = 610.0
    fy: float = 605.0
    cx: float = 321.5
    cy: float = 242.0
    jitter: float = 0.05  # relative focal jitter per scene; principal point moves up to 2 %

    def sample_K(self, rng: np.random.Generator) -> np.ndarray:
        f = 1.0 + rng.uniform(-self.jitter, self.jitter)
        aspect = 1.0 + rng.uniform(-0.01, 0.01)
        return np.array([[self.fx * f, 0.0, self.cx + rng.uniform(-0.02, 0.02) * self.width],
                         [0.0, self.fy * f * aspect, self.cy + rng.uniform(-0.02, 0.02) * self.height],
                         [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class SceneConfig:
    camera: CameraModel = field(default_factory=CameraModel)
    distance_range: tuple[float, float] = (0.45, 0.9)  # camera to table centre, meters
    elevation_deg: tuple[float, float] = (25.0, 70.0)
    table_radius: float = 0.22  # objects are placed within this radius
    min_visib_fract: float = 0.4  # occlusion of annotated targets is at most 60 %
    depth_noise: bool = True
    color_jitter: bool = True
    frame_period_ns: int = 100_000_000  # 10 Hz recordings


@dataclass
class SceneObject:
    obj_id: int  # 0 for distractors (not annotated)
    mesh: RenderMesh
    radius: float  # bounding radius about the mesh origin, meters


@dataclass
class _Arrangement:
    poses_world: list[np.ndarray]  # 4x4 object-to-world
    table_texture: np.ndarray
    wall_texture: np.ndarray
    table_tile_m: float


def scene_object(obj_id: int, mesh: trimesh.Trimesh) -> SceneObject:
    render_mesh = RenderMesh.from_trimesh(mesh)
    return SceneObject(obj_id, render_mesh, float(np.linalg.norm(render_mesh.vertices, axis=1).max()))


def random_texture(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """Cluttered background texture: smooth noise, stripes, shapes; (size, size, 3) uint8."""
    coarse = rng.uniform(0, 255, (rng.integers(2, 9), rng.integers(2, 9), 3)).astype(np.float32)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.normal(0, 25, (size // 8, size // 8, 3)).astype(np.float32), (size, size))
    img = img + fine
    if rng.random() < 0.4:  # wood-grain-like or fabric stripes
        period = rng.uniform(6, 40)
        xs = np.arange(size)[None, :] * np.cos(rng.uniform(0, np.pi)) + np.arange(size)[:, None] * 0.3
        img += (np.sin(xs / period * 2 * np.pi)[..., None] * rng.uniform(10, 40)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, 25)):  # clutter: boxes, discs, lines of random colours
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        p = tuple(int(c) for c in rng.integers(0, size, 2))
        kind = rng.integers(0, 3)
        if kind == 0:
            q = tuple(int(c) for c in np.clip(np.array(p) + rng.integers(-80, 80, 2), 0, size - 1))
            cv2.rectangle(img, p, q, color, -1 if rng.random() < 0.7 else 2)
        elif kind == 1:
            cv2.circle(img, p, int(rng.integers(4, 50)), color, -1)
        else:
            q = tuple(int(c) for c in rng.integers(0, size, 2))
            cv2.line(img, p, q, color, int(rng.integers(1, 6)))
    return img


def arrange(objects: Sequence[SceneObject], rng: np.random.Generator, table_radius: float) -> _Arrangement:
    """Rest each object on the table (z = 0 plane of the world) at a random orientation,
    without overlapping bounding circles where the table has room."""
    poses, placed = [], []
    for obj in objects:
        R = random_rotations(1, rng)[0]
        lowest = float((obj.mesh.vertices @ R.T)[:, 2].min())
        for attempt in range(50):
            xy = rng.uniform(-1, 1, 2) * table_radius
            ok = all(np.linalg.norm(xy - q) > 0.8 * (obj.radius + r) for q, r in placed)
            if ok or attempt == 49:
                break
        placed.append((xy, obj.radius))
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, [xy[0], xy[1], -lowest]
        poses.append(T)
    return _Arrangement(poses, random_texture(rng), random_texture(rng), float(rng.uniform(0.3, 0.8)))


def _camera_pose(rng: np.random.Generator, cfg: SceneConfig, azimuth: float) -> np.ndarray:
    """World-to-camera 4x4 of a camera on a sphere around the table centre, looking at it."""
    elev = np.radians(rng.uniform(*cfg.elevation_deg))
    dist = rng.uniform(*cfg.distance_range)
    view_dir = np.array([np.cos(elev) * np.cos(azimuth), np.cos(elev) * np.sin(azimuth), np.sin(elev)])
    target = np.array([*rng.normal(0, 0.03, 2), 0.03])
    R_cw = look_at_rotation(view_dir, up=(0.0, 0.0, 1.0))
    R_cw = cv2.Rodrigues(rng.normal(0, np.radians(4), 3))[0] @ R_cw  # hand-held-like wobble
    T = np.eye(4)
    T[:3, :3] = R_cw
    T[:3, 3] = -R_cw @ (target + dist * view_dir)
    return T


def _background(T_cw: np.ndarray, K: np.ndarray, width: int, height: int,
                arr: _Arrangement) -> tuple[np.ndarray, np.ndarray]:
    """Colour and depth of the table plane (z_world = 0) and of a wall where rays miss it."""
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
    R_wc = T_cw[:3, :3].T
    cam_center = -R_wc @ T_cw[:3, 3]
    rays_w = rays @ R_wc.T
    with np.errstate(divide="ignore", invalid="ignore"):
        z = -cam_center[2] / rays_w[..., 2]  # depth along the optical axis (rays have z_cam = 1)
    on_table = (z > 0) & (z < 4.0)
    hit = cam_center + rays_w * np.where(on_table, z, 0)[..., None]
    tex = arr.table_texture
    ts = tex.shape[0]
    tu = ((hit[..., 0] / arr.table_tile_m) % 1.0 * (ts - 1)).astype(np.float32)
    tv = ((hit[..., 1] / arr.table_tile_m) % 1.0 * (ts - 1)).astype(np.float32)
    table = cv2.remap(tex, tu, tv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    wall = cv2.resize(arr.wall_texture, (width, height))
    rgb = np.where(on_table[..., None], table, wall)
    depth = np.where(on_table, z, 0.0).astype(np.float32)
    return rgb, depth


def _lighting(rng: np.random.Generator) -> Lighting:
    d = rng.normal(size=3)
    d[2] = abs(d[2]) + 0.5  # light travels into the scene, away from the camera
    tint = 1.0 + rng.uniform(-0.1, 0.1, 3)
    return Lighting(ambient=float(rng.uniform(0.25, 0.6)), diffuse=float(rng.uniform(0.3, 0.8)),
                    specular=float(rng.uniform(0.0, 0.4)) if rng.random() < 0.6 else 0.0,
                    shininess=float(rng.uniform(5, 60)), direction=tuple(d / np.linalg.norm(d)),
                    color=tuple(np.clip(tint, 0.8, 1.2)))


def sensor_depth(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Structured-light/stereo-like depth: z^2 noise, 1 mm steps, holes at edges and in blobs."""
    depth = np.asarray(depth, dtype=np.float32)
    out = depth.copy()
    valid = out > 0
    sigma = 0.0012 + 0.0019 * (np.clip(out, 0.4, None) - 0.4) ** 2
    out[valid] += rng.normal(0, 1, valid.sum()).astype(np.float32) * sigma[valid]
    out = np.round(out * 1000.0) / 1000.0
    # Dropouts where depth jumps (the projector is occluded there on real sensors).
    grad = np.maximum(np.abs(cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)),
                      np.abs(cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)))
    edges = cv2.dilate((grad > 0.08).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    out[edges & (rng.random(out.shape) < 0.7)] = 0.0
    holes = cv2.resize(rng.random((depth.shape[0] // 16, depth.shape[1] // 16)).astype(np.float32),
                       depth.shape[::-1], interpolation=cv2.INTER_CUBIC)
    out[holes > 0.93] = 0.0
    out[~valid] = 0.0
    return out


def jitter_color(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation, hue, sensor noise and slight blur."""
    img = rgb.astype(np.float32)
    img = (img - 128.0) * rng.uniform(0.8, 1.2) + 128.0 + rng.uniform(-20, 20)
    hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-6, 6)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.75, 1.25), 0, 255)
    img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    img += rng.normal(0, rng.uniform(1, 5), img.shape).astype(np.float32)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.0))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def compose_scene(targets: Sequence[SceneObject], distractors: Sequence[SceneObject], n_frames: int,
                  rng: np.random.Generator, cfg: SceneConfig = SceneConfig(),
                  start_stamp_ns: int = 1_700_000_000_000_000_000,
                  frame_id: str = "camera_color_optical_frame") -> list[SceneFrame]:
    """Render n_frames of one scene: a camera orbiting a fixed arrangement on a table.

    Every annotated target keeps at least cfg.min_visib_fract of its silhouette visible and
    inside the image; viewpoints that break this are re-drawn (up to 30 times, after which
    the least occluded viewpoint is kept and over-occluded targets are left unannotated).
    """
    objects = list(targets) + list(distractors)
    meshes = [o.mesh for o in objects]
    arr = arrange(objects, rng, cfg.table_radius)
    K = cfg.camera.sample_K(rng)
    width, height = cfg.camera.width, cfg.camera.height
    azimuth0 = rng.uniform(0, 2 * np.pi)
    sweep = rng.uniform(0.5, 1.5) * np.pi  # how far the camera travels around the table
    frames = []
    for k in range(n_frames):
        azimuth = azimuth0 + sweep * k / max(n_frames - 1, 1)
        best = None
        for attempt in range(30):
            T_cw = _camera_pose(rng, cfg, azimuth + (rng.normal(0, 0.3) if attempt else 0.0))
            shot = _render_frame(meshes, arr, T_cw, K, width, height, len(targets), rng)
            worst = min(shot["visib"], default=1.0)
            if best is None or worst > best[0]:
                best = (worst, T_cw, shot)
            if worst >= cfg.min_visib_fract:
                break
        _, T_cw, shot = best
        frames.append(_finish_frame(shot, objects, arr, T_cw, K, cfg, rng,
                                    start_stamp_ns + k * cfg.frame_period_ns, frame_id))
    return frames


def _render_frame(meshes, arr, T_cw, K, width, height, n_targets, rng) -> dict:
    poses = [T_cw @ T for T in arr.poses_world]
    R = np.stack([p[:3, :3] for p in poses])
    t = np.stack([p[:3, 3] for p in poses])
    out = render(meshes, R, t, K, width, height, lighting=_lighting(rng))
    scene_mask = out.mask[0]
    # Full silhouettes: target i alone in image i. Only the z-buffer is needed, no shading;
    # the other objects are moved behind the camera, where the rasterizer skips them.
    faces, vert_offsets, face_offsets = pack_faces(meshes)
    verts = np.zeros((n_targets, vert_offsets[-1], 3))
    for i, m in enumerate(meshes):
        verts[:, vert_offsets[i]:vert_offsets[i + 1]] = _HIDDEN_T
    for i in range(n_targets):
        verts[i, vert_offsets[i]:vert_offsets[i + 1]] = meshes[i].vertices @ R[i].T + t[i]
    _, face_id, _ = rasterize(verts, faces, K, width, height) if n_targets else (None, [], None)
    visib, full_masks = [], []
    for i in range(n_targets):
        full = (face_id[i] >= face_offsets[i]) & (face_id[i] < face_offsets[i + 1])
        full_masks.append(full)
        # Occlusion by the image border counts too: the visible fraction is taken of the
        # silhouette on an unbounded image (as bop_toolkit does), measured on a larger canvas
        # for the targets that touch the border.
        area = _unbounded_area(meshes[i], R[i], t[i], K, full) if _touches_border(full) else full.sum()
        visib.append((scene_mask == i + 1).sum() / max(area, 1))
    return {"render": out, "poses": (R, t), "visib": visib, "full_masks": full_masks}


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _unbounded_area(mesh: RenderMesh, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                    mask: np.ndarray, subsample: int = 4) -> float:
    """Silhouette area in pixels on a canvas extended by the image size on every side,
    rasterized at 1/subsample resolution (the area only feeds a visibility threshold)."""
    height, width = mask.shape
    K_ext = K.copy()
    K_ext[0, 2] += width
    K_ext[1, 2] += height
    K_ext[:2] = (K_ext[:2] + 0.5 * np.array([[0, 0, 1], [0, 0, 1]])) / subsample
    K_ext[:2, 2] -= 0.5
    _, face_id, _ = rasterize((mesh.vertices @ R.T + t)[None], mesh.faces, K_ext,
                              3 * width // subsample, 3 * height // subsample)
    return float((face_id[0] >= 0).sum()) * subsample * subsample


def _finish_frame(shot, objects, arr, T_cw, K, cfg, rng, stamp_ns, frame_id) -> SceneFrame:
    out = shot["render"]
    width, height = cfg.camera.width, cfg.camera.height
    bg_rgb, bg_depth = _background(T_cw, K, width, height, arr)
    fg = out.mask[0] > 0
    rgb = np.where(fg[..., None], out.rgb[0], bg_rgb)
    depth = np.where(fg, out.depth[0], bg_depth).astype(np.float32)
    if cfg.color_jitter:
        rgb = jitter_color(rgb, rng)
    if cfg.depth_noise:
        depth = sensor_depth(depth, rng)
    R, t = shot["poses"]
    instances = []
    for i, visib in enumerate(shot["visib"]):
        if visib < cfg.min_visib_fract:
            continue  # over-occluded after all retries: not annotated, like BOP's hard cases
        instances.append(GTInstance(obj_id=objects[i].obj_id, R_m2c=R[i].copy(), t_m2c=t[i].copy(),
                                    mask_visib=out.mask[0] == i + 1, mask=shot["full_masks"][i]))
    return SceneFrame(rgb=rgb, depth=depth, K=K.copy(), instances=instances, stamp_ns=int(stamp_ns),
                      frame_id=frame_id)

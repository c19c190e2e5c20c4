"""Render RGB, metric depth and instance masks of posed meshes for any pinhole camera.

One call renders a batch of B images of the same N meshes at B x N poses: the codebook uses
N = 1 and thousands of poses, the scene synthesizer N objects and B = 1. Two backends:

- ``numba`` (default): our z-buffer rasterizer (see rasterizer.py for why), shaded here in
  numpy with ambient + Lambert + Phong lighting; no OpenGL needed.
- ``pyrender``: OpenGL through OSMesa on CPU machines or EGL where a GPU exists; used to
  cross-check the numba backend and on GPU machines for large renders.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
import trimesh

from sixd_pose_ros.render.rasterizer import compose, rasterize, shade


@dataclass(frozen=True)
class RenderMesh:
    """A mesh prepared once for rendering: float arrays, normals, colors or texture.

    Preparing is what costs (normals, colour conversion), so the codebook builder and the
    synthesizer prepare each mesh once and render it many times.
    """

    vertices: np.ndarray  # (V, 3) float64 meters
    faces: np.ndarray  # (F, 3) int32
    normals: np.ndarray  # (V, 3) float64 unit vertex normals
    colors: np.ndarray | None  # (V, 3) float32 in [0, 1], when not textured
    uv: np.ndarray | None  # (V, 2) float32, when textured
    texture: np.ndarray | None  # (Ht, Wt, 3) uint8 RGB, when textured

    @classmethod
    def from_trimesh(cls, mesh: trimesh.Trimesh, default_color=(0.7, 0.7, 0.7)) -> "RenderMesh":
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
        faces = np.asarray(mesh.faces, dtype=np.int32)
        normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
        colors = uv = texture = None
        visual = mesh.visual
        if isinstance(visual, trimesh.visual.TextureVisuals) and visual.uv is not None \
                and getattr(visual.material, "image", None) is not None:
            uv = np.asarray(visual.uv, dtype=np.float32)
            texture = np.asarray(visual.material.image.convert("RGB"), dtype=np.uint8)
        elif isinstance(visual, trimesh.visual.TextureVisuals):
            # Texture coordinates without an image (or a material colour only): use its colour.
            colors = np.asarray(visual.to_color().vertex_colors, dtype=np.float32)[:, :3] / 255.0
        elif isinstance(visual, trimesh.visual.ColorVisuals) and visual.kind is not None:
            colors = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
        if colors is None and texture is None:
            colors = np.tile(np.asarray(default_color, np.float32), (len(vertices), 1))
        return cls(vertices, faces, normals, colors, uv, texture)


@dataclass(frozen=True)
class Lighting:
    """Lights in the camera frame; the defaults give a plain, evenly lit look."""

    ambient: float = 0.45
    diffuse: float = 0.55
    specular: float = 0.0
    shininess: float = 20.0
    direction: tuple[float, float, float] = (0.0, 0.0, 1.0)  # light travels along this (camera frame)
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class RenderOutput:
    """rgb (B,H,W,3) uint8; depth (B,H,W) float32 meters, 0 = background; mask (B,H,W) uint8
    instance index 1..N, 0 = background; rgb_float keeps the unquantized colors when asked."""

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    extras: dict = field(default_factory=dict)


def _as_batch(R: np.ndarray, t: np.ndarray, n_meshes: int) -> tuple[np.ndarray, np.ndarray]:
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if R.shape == (3, 3):
        R, t = R[None, None], t.reshape(1, 1, 3)
    elif R.ndim == 3:  # (B, 3, 3) with one mesh, or (N, 3, 3) for one image of N meshes
        if n_meshes == 1:
            R, t = R[:, None], t.reshape(-1, 1, 3)
        else:
            R, t = R[None], t.reshape(1, -1, 3)
    if R.ndim != 4 or R.shape[1] != n_meshes or t.shape != R.shape[:2] + (3,):
        raise ValueError(f"poses must be (B, N, 3, 3) and (B, N, 3) for N={n_meshes} meshes, "
                         f"got {R.shape} and {t.shape}")
    return R, t


def pack_faces(meshes: Sequence[RenderMesh]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One face list for N meshes whose vertices are stacked in order; returns it with the
    (N+1,) vertex and face offsets that map stacked indices back to (mesh, local index)."""
    vert_offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])
    face_offsets = np.cumsum([0] + [len(m.faces) for m in meshes])
    faces = np.concatenate([m.faces + off for m, off in zip(meshes, vert_offsets[:-1])])
    return faces, vert_offsets, face_offsets


def render(meshes: Sequence[RenderMesh], R: np.ndarray, t: np.ndarray, K: np.ndarray,
           width: int, height: int, *, lighting: Lighting | Sequence[Lighting] | None = None,
           backend: str = "numba") -> RenderOutput:
    """Render B images of N meshes.

    Args:
        meshes: N prepared meshes (vertices in meters).
        R, t: object-to-camera poses, (B, N, 3, 3) and (B, N, 3) meters; (N,3,3)/(N,3) for one
            image of N meshes, or (B,3,3)/(B,3) for B images of one mesh.
        K: (3, 3) or (B, 3, 3) intrinsics; fx != fy and any principal point are fine.
        lighting: one Lighting for all images or one per image.
    """
    if backend == "pyrender":
        from sixd_pose_ros.render.pyrender_backend import render_pyrender

        return render_pyrender(meshes, R, t, K, width, height, lighting=lighting)
    if backend != "numba":
        raise ValueError(f"unknown render backend {backend!r}: use 'numba' or 'pyrender'")
    R, t = _as_batch(R, t, len(meshes))
    batch = R.shape[0]
    faces, vert_offsets, face_offsets = pack_faces(meshes)
    verts = np.concatenate(
        [np.einsum("bij,vj->bvi", R[:, i], m.vertices) + t[:, i, None] for i, m in enumerate(meshes)],
        axis=1)
    depth, face_id, bary = rasterize(verts, faces, K, width, height)
    face_to_instance = np.repeat(np.arange(1, len(meshes) + 1, dtype=np.uint8), np.diff(face_offsets))
    normals_cam = np.concatenate(
        [np.einsum("bij,vj->bvi", R[:, i], m.normals) for i, m in enumerate(meshes)], axis=1)
    colors = np.concatenate([m.colors if m.colors is not None else np.ones((len(m.vertices), 3), np.float32)
                             for m in meshes])
    uv = np.concatenate([m.uv if m.uv is not None else np.zeros((len(m.vertices), 2), np.float32)
                         for m in meshes])
    lights = _per_image_lighting(lighting, batch)
    light_params = np.array([_light_vector(light) for light in lights])
    albedo, shading, uv_img = shade(face_id, bary, faces, verts, normals_cam, colors, uv, light_params)
    textured = [i for i, m in enumerate(meshes) if m.texture is not None]
    if textured:
        instance_of_pixel = np.where(face_id >= 0, face_to_instance[face_id], 0)
        for i in textured:
            sel = instance_of_pixel == i + 1
            if sel.any():
                albedo[sel] = _sample_texture(meshes[i].texture, uv_img[sel])
    light_color = np.array([light.color for light in lights], np.float32)
    rgb8, mask = compose(face_id, face_to_instance, albedo, shading, light_color)
    return RenderOutput(rgb=rgb8, depth=depth, mask=mask)


def _light_vector(light: Lighting) -> list[float]:
    to_light = -np.asarray(light.direction, dtype=np.float64)
    to_light /= np.linalg.norm(to_light)
    return [*to_light, light.ambient, light.diffuse, light.specular, light.shininess]


def _sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear texture lookup of (M, 2) OpenGL uv (v = 0 at the bottom row), wrapping."""
    th, tw = texture.shape[:2]
    # cv2.remap limits each map side to 32767, so the M lookups go in as rows of 1024.
    m = len(uv)
    rows = -(-m // 1024)
    maps = np.zeros((2, rows * 1024), np.float32)
    maps[0, :m] = (uv[:, 0] % 1.0) * (tw - 1)
    maps[1, :m] = (1.0 - (uv[:, 1] % 1.0)) * (th - 1)
    sampled = cv2.remap(texture, maps[0].reshape(rows, 1024), maps[1].reshape(rows, 1024),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return sampled.reshape(-1, 3)[:m].astype(np.float32) / 255.0


def _per_image_lighting(lighting, batch: int) -> list[Lighting]:
    if lighting is None:
        return [Lighting()] * batch
    if isinstance(lighting, Lighting):
        return [lighting] * batch
    lights = list(lighting)
    if len(lights) != batch:
        raise ValueError(f"{len(lights)} lightings for {batch} images")
    return lights

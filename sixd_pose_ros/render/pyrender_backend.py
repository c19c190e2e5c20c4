"""OpenGL backend through pyrender: OSMesa on machines without a GPU, EGL where one exists.

Kept beside the numba rasterizer as an independent implementation (tests compare the two) and
for GPU machines, where OpenGL renders large images faster than the CPU rasterizer.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from sixd_pose_ros.errors import SixdPoseError


def _select_platform() -> None:
    """EGL when an NVIDIA device node exists, else OSMesa; must run before OpenGL is imported."""
    # PyOpenGL logs a harmless "Platform import failed (likely during shutdown)" at exit.
    logging.getLogger("OpenGL.platform.baseplatform").setLevel(logging.WARNING)
    if "PYOPENGL_PLATFORM" not in os.environ:
        os.environ["PYOPENGL_PLATFORM"] = "egl" if os.path.exists("/dev/nvidia0") else "osmesa"


# OpenCV/ROS optical frame (x right, y down, z forward) -> OpenGL camera (y up, z backward).
_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])
_RENDERERS: dict[tuple[int, int], object] = {}


def _renderer(width: int, height: int):
    import pyrender

    key = (width, height)
    if key not in _RENDERERS:
        _RENDERERS[key] = pyrender.OffscreenRenderer(width, height)
    return _RENDERERS[key]


def render_pyrender(meshes: Sequence, R: np.ndarray, t: np.ndarray, K: np.ndarray, width: int,
                    height: int, *, lighting=None):
    """Same contract as renderer.render; lighting is approximated by ambient + one directional light."""
    _select_platform()
    try:
        import pyrender
        import trimesh
    except Exception as exc:  # OSMesa/EGL missing shows up as ImportError or OSError
        raise SixdPoseError(f"the pyrender backend is unavailable ({exc}); install libosmesa6 "
                            f"(apt-get install libosmesa6) or use backend='numba'") from exc
    from sixd_pose_ros.render.renderer import Lighting, RenderOutput, _as_batch, _per_image_lighting

    R, t = _as_batch(R, t, len(meshes))
    batch = R.shape[0]
    Ks = np.broadcast_to(np.asarray(K, np.float64), (batch, 3, 3))
    lights = _per_image_lighting(lighting, batch)
    pyr_meshes = []
    for m in meshes:
        tm = trimesh.Trimesh(m.vertices, m.faces, process=False)
        if m.texture is not None:
            from PIL import Image

            tm.visual = trimesh.visual.TextureVisuals(uv=m.uv, image=Image.fromarray(m.texture))
        else:
            tm.visual.vertex_colors = np.concatenate(
                [np.clip(m.colors * 255 + 0.5, 0, 255), np.full((len(m.colors), 1), 255)], axis=1
            ).astype(np.uint8)
        pyr_meshes.append(pyrender.Mesh.from_trimesh(tm, smooth=True))
    rgb = np.zeros((batch, height, width, 3), np.uint8)
    depth = np.zeros((batch, height, width), np.float32)
    mask = np.zeros((batch, height, width), np.uint8)
    r = _renderer(width, height)
    for b in range(batch):
        light: Lighting = lights[b]
        scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[light.ambient] * 3)
        nodes = []
        for i, pm in enumerate(pyr_meshes):
            pose = np.eye(4)
            pose[:3, :3], pose[:3, 3] = R[b, i], t[b, i]
            nodes.append(scene.add(pm, pose=_CV_TO_GL @ pose))
        k = Ks[b]
        cam = pyrender.IntrinsicsCamera(k[0, 0], k[1, 1], k[0, 2], k[1, 2], znear=1e-3, zfar=100.0)
        scene.add(cam, pose=np.eye(4))
        scene.add(pyrender.DirectionalLight(color=light.color, intensity=light.diffuse * np.pi),
                  pose=_light_pose(light.direction))
        color, z = r.render(scene)
        rgb[b], depth[b] = color[..., :3], z
        seg_map = {node: i + 1 for i, node in enumerate(nodes)}
        seg, _ = r.render(scene, flags=pyrender.RenderFlags.SEG, seg_node_map=seg_map)
        mask[b] = _seg_to_index(seg, len(nodes))
    return RenderOutput(rgb=rgb, depth=depth, mask=mask)


def _seg_to_index(seg: np.ndarray, n: int) -> np.ndarray:
    # pyrender paints each node with a colour derived from its id; decode by nearest colour.
    out = np.zeros(seg.shape[:2], np.uint8)
    flat = seg.reshape(-1, 3).astype(np.int32)
    ids = flat[:, 0]  # pyrender's SEG uses the id as a grey level when ids are small
    out.reshape(-1)[:] = np.where((ids > 0) & (ids <= n), ids, 0)
    return out


def _light_pose(direction) -> np.ndarray:
    """Pose of a pyrender directional light (shines along its -z) travelling along `direction`
    given in the OpenCV camera frame."""
    d = _CV_TO_GL[:3, :3] @ np.asarray(direction, np.float64)
    d /= np.linalg.norm(d)
    z = -d
    x = np.cross([0.0, 1.0, 0.0], z)
    if np.linalg.norm(x) < 1e-6:
        x = np.array([1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], axis=1)
    return pose

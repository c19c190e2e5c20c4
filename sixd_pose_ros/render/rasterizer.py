"""Z-buffer triangle rasterizer compiled with numba, parallel over images.

Why hand-written: pyrender over OSMesa measured 43 images/s at 128x128 for a 10k-face mesh on
2 cores (per-call OpenGL state and read-back overhead dominate), far below the 300 images/s
the codebook and training data need. A per-triangle loop compiled by numba does the same work
in well under a millisecond per small image, and needs no OpenGL at all, so it also runs on
headless CI machines without libOSMesa. pyrender stays available as a second backend.

Conventions: pinhole intrinsics without skew; pixel centres at integer coordinates (OpenCV);
a pixel is covered when its centre lies inside the triangle (ties go to both triangles, the
z-test then picks one). Depth is the camera z coordinate in the units of the vertices,
interpolated perspective-correctly; barycentrics written are perspective-correct too.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, fastmath=False, nogil=True)
def _rasterize_one(verts: np.ndarray, faces: np.ndarray, K: np.ndarray, near: float,
                   depth: np.ndarray, face_id: np.ndarray, bary: np.ndarray) -> None:
    height, width = depth.shape
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    n_faces = faces.shape[0]
    for f in range(n_faces):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        z0, z1, z2 = verts[i0, 2], verts[i1, 2], verts[i2, 2]
        # No near-plane clipping: a triangle crossing the near plane is dropped. Objects are
        # always in front of the camera in this project, so this only removes degenerate cases.
        if z0 < near or z1 < near or z2 < near:
            continue
        x0 = fx * verts[i0, 0] / z0 + cx
        y0 = fy * verts[i0, 1] / z0 + cy
        x1 = fx * verts[i1, 0] / z1 + cx
        y1 = fy * verts[i1, 1] / z1 + cy
        x2 = fx * verts[i2, 0] / z2 + cx
        y2 = fy * verts[i2, 1] / z2 + cy
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area == 0.0:
            continue
        xmin = max(int(np.ceil(min(x0, x1, x2))), 0)
        xmax = min(int(np.floor(max(x0, x1, x2))), width - 1)
        ymin = max(int(np.ceil(min(y0, y1, y2))), 0)
        ymax = min(int(np.floor(max(y0, y1, y2))), height - 1)
        if xmin > xmax or ymin > ymax:
            continue
        inv_area = 1.0 / area
        iz0, iz1, iz2 = 1.0 / z0, 1.0 / z1, 1.0 / z2
        for py in range(ymin, ymax + 1):
            for px in range(xmin, xmax + 1):
                # Edge functions, normalized so they are barycentrics whatever the winding.
                l0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) * inv_area
                l1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) * inv_area
                l2 = 1.0 - l0 - l1
                if l0 < 0.0 or l1 < 0.0 or l2 < 0.0:
                    continue
                w0, w1, w2 = l0 * iz0, l1 * iz1, l2 * iz2
                z = 1.0 / (w0 + w1 + w2)
                if z < depth[py, px]:
                    depth[py, px] = z
                    face_id[py, px] = f
                    bary[py, px, 0] = w0 * z
                    bary[py, px, 1] = w1 * z
                    bary[py, px, 2] = w2 * z


@njit(parallel=True, cache=True, nogil=True)
def _rasterize_batch(verts: np.ndarray, faces: np.ndarray, K: np.ndarray, near: float,
                     depth: np.ndarray, face_id: np.ndarray, bary: np.ndarray) -> None:
    for b in prange(verts.shape[0]):
        _rasterize_one(verts[b], faces, K[b], near, depth[b], face_id[b], bary[b])
        # Background: depth 0 (no measurement, like a depth sensor) and zero barycentrics.
        height, width = face_id.shape[1], face_id.shape[2]
        for y in range(height):
            for x in range(width):
                if face_id[b, y, x] < 0:
                    depth[b, y, x] = 0.0
                    bary[b, y, x, 0] = 0.0
                    bary[b, y, x, 1] = 0.0
                    bary[b, y, x, 2] = 0.0


def rasterize(verts_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, width: int, height: int,
              near: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterize a batch of triangle meshes that share one face list.

    Args:
        verts_cam: (B, V, 3) vertices in camera coordinates (x right, y down, z forward).
        faces: (F, 3) vertex indices, shared by every image of the batch.
        K: (3, 3) or (B, 3, 3) intrinsics.
        width, height: image size in pixels.
        near: vertices closer than this (same unit as the vertices) drop their triangle.

    Returns:
        depth (B, H, W) float32, 0 where nothing was hit; face_id (B, H, W) int32, -1 where
        nothing was hit; bary (B, H, W, 3) float32 perspective-correct barycentrics.
    """
    verts_cam = np.ascontiguousarray(verts_cam, dtype=np.float64)
    if verts_cam.ndim != 3 or verts_cam.shape[-1] != 3:
        raise ValueError(f"verts_cam must be (B, V, 3), got {verts_cam.shape}")
    batch = verts_cam.shape[0]
    K = np.asarray(K, dtype=np.float64)
    K = np.ascontiguousarray(np.broadcast_to(K, (batch, 3, 3)))
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    depth = np.full((batch, height, width), np.inf, dtype=np.float32)
    face_id = np.full((batch, height, width), -1, dtype=np.int32)
    bary = np.empty((batch, height, width, 3), dtype=np.float32)
    _rasterize_batch(verts_cam, faces, K, float(near), depth, face_id, bary)
    return depth, face_id, bary


@njit(parallel=True, cache=True, nogil=True)
def _shade_batch(face_id: np.ndarray, bary: np.ndarray, faces: np.ndarray, verts_cam: np.ndarray,
                 normals_cam: np.ndarray, colors: np.ndarray, uv: np.ndarray,
                 lights: np.ndarray, albedo: np.ndarray, shade: np.ndarray, uv_out: np.ndarray) -> None:
    """Per hit pixel: interpolated albedo (vertex colours) and uv, and the lighting terms.

    lights[b] = (to_light xyz, ambient, diffuse, specular, shininess). Two-sided: a normal
    facing away from the camera is flipped, so thin or open meshes are lit on both sides.
    """
    batch, height, width = face_id.shape
    for b in prange(batch):
        lx, ly, lz = lights[b, 0], lights[b, 1], lights[b, 2]
        ambient, diffuse, specular, shininess = lights[b, 3], lights[b, 4], lights[b, 5], lights[b, 6]
        for y in range(height):
            for x in range(width):
                f = face_id[b, y, x]
                if f < 0:
                    continue
                nx = ny = nz = px = py = pz = 0.0
                for k in range(3):
                    v = faces[f, k]
                    w = bary[b, y, x, k]
                    nx += w * normals_cam[b, v, 0]
                    ny += w * normals_cam[b, v, 1]
                    nz += w * normals_cam[b, v, 2]
                    px += w * verts_cam[b, v, 0]
                    py += w * verts_cam[b, v, 1]
                    pz += w * verts_cam[b, v, 2]
                    for c in range(3):
                        albedo[b, y, x, c] += w * colors[v, c]
                    uv_out[b, y, x, 0] += w * uv[v, 0]
                    uv_out[b, y, x, 1] += w * uv[v, 1]
                nn = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-12
                pn = np.sqrt(px * px + py * py + pz * pz) + 1e-12
                nx, ny, nz = nx / nn, ny / nn, nz / nn
                vx, vy, vz = -px / pn, -py / pn, -pz / pn  # toward the camera
                if nx * vx + ny * vy + nz * vz < 0.0:
                    nx, ny, nz = -nx, -ny, -nz
                ndotl = nx * lx + ny * ly + nz * lz
                s = ambient + diffuse * max(ndotl, 0.0)
                spec = 0.0
                if specular > 0.0 and ndotl > 0.0:
                    rx, ry, rz = 2 * ndotl * nx - lx, 2 * ndotl * ny - ly, 2 * ndotl * nz - lz
                    spec = specular * max(rx * vx + ry * vy + rz * vz, 0.0) ** shininess
                shade[b, y, x, 0] = s
                shade[b, y, x, 1] = spec


def shade(face_id: np.ndarray, bary: np.ndarray, faces: np.ndarray, verts_cam: np.ndarray,
          normals_cam: np.ndarray, colors: np.ndarray, uv: np.ndarray,
          lights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolate vertex attributes and lighting at every covered pixel (see _shade_batch).

    Returns albedo (B,H,W,3), shade (B,H,W,2) = (ambient+diffuse factor, specular), uv (B,H,W,2).
    """
    batch, height, width = face_id.shape
    albedo = np.zeros((batch, height, width, 3), np.float32)
    shading = np.zeros((batch, height, width, 2), np.float32)
    uv_out = np.zeros((batch, height, width, 2), np.float32)
    _shade_batch(face_id, bary, np.ascontiguousarray(faces, np.int32),
                 np.ascontiguousarray(verts_cam, np.float64), np.ascontiguousarray(normals_cam, np.float64),
                 np.ascontiguousarray(colors, np.float32), np.ascontiguousarray(uv, np.float32),
                 np.ascontiguousarray(lights, np.float64), albedo, shading, uv_out)
    return albedo, shading, uv_out


@njit(parallel=True, cache=True, nogil=True)
def _compose_batch(face_id: np.ndarray, face_to_instance: np.ndarray, albedo: np.ndarray,
                   shading: np.ndarray, light_color: np.ndarray, rgb: np.ndarray,
                   mask: np.ndarray) -> None:
    batch, height, width = face_id.shape
    for b in prange(batch):
        for y in range(height):
            for x in range(width):
                f = face_id[b, y, x]
                if f < 0:
                    continue
                mask[b, y, x] = face_to_instance[f]
                for c in range(3):
                    v = (albedo[b, y, x, c] * shading[b, y, x, 0] + shading[b, y, x, 1]) * light_color[b, c]
                    rgb[b, y, x, c] = np.uint8(min(max(v * 255.0 + 0.5, 0.0), 255.0))


def compose(face_id: np.ndarray, face_to_instance: np.ndarray, albedo: np.ndarray,
            shading: np.ndarray, light_color: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Final 8-bit colour and instance mask: albedo x (ambient + diffuse) + specular, x light colour."""
    rgb = np.zeros(albedo.shape, np.uint8)
    mask = np.zeros(face_id.shape, np.uint8)
    _compose_batch(face_id, np.ascontiguousarray(face_to_instance, np.uint8), albedo, shading,
                   np.ascontiguousarray(light_color, np.float32), rgb, mask)
    return rgb, mask

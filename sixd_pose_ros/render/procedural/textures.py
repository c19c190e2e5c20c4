"""Appearance of the procedural objects: procedural textures with seamless uv, or vertex colours.

Half the objects carry a 256x256 texture (stripes, checkers, blobs, gradients, glyph-like text,
labels) with per-vertex uv from mirrored cylindrical, spherical or planar projections (no seams,
so vertices stay shared and the mesh watertight); the others vertex colours (uniform =
textureless, per part, bands along z, or smooth 3D noise). Each choice reports whether it keeps
the shape's symmetry about z.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import trimesh
from PIL import Image

_P_TEXTURED = 0.5
_TEX_SIZE = 256


# ----------------------------------------------------------------------------------------------
# Appearance
# ----------------------------------------------------------------------------------------------

def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.round(np.array(rgb) * 255).astype(np.uint8)


def _random_color(rng: np.random.Generator) -> np.ndarray:
    """A uint8 RGB colour; about a quarter near-grey, as many real objects are."""
    h = rng.random()
    s = rng.uniform(0.0, 0.15) if rng.random() < 0.25 else rng.uniform(0.35, 1.0)
    v = rng.uniform(0.18, 1.0)
    return _hsv_to_rgb(h, s, v)


def _palette(rng: np.random.Generator, k: int) -> np.ndarray:
    return np.stack([_random_color(rng) for _ in range(k)]).astype(np.float64)


def _smooth_noise_2d(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in [0, 1] (bicubic upsampling of a coarse random grid)."""
    coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32))
    out = np.asarray(coarse.resize((size, size), Image.BICUBIC), np.float64)
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-9)


def _tex_stripes(rng: np.random.Generator, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    ang = rng.uniform(0, np.pi)
    t = (xx * math.cos(ang) + yy * math.sin(ang)) / rng.uniform(6, 64)
    k = int(rng.integers(2, 5))
    pal = _palette(rng, k)
    return pal[np.floor(t).astype(int) % k]


def _tex_checker(rng: np.random.Generator, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n]
    cx, cy = rng.integers(8, 64, 2)
    pal = _palette(rng, 2)
    return pal[((xx // cx) + (yy // cy)) % 2]


def _tex_blobs(rng: np.random.Generator, n: int) -> np.ndarray:
    field_ = _smooth_noise_2d(rng, n, int(rng.integers(3, 12)))
    pal = _palette(rng, 3)
    if rng.random() < 0.5:  # hard-edged spots
        levels = np.digitize(field_, np.sort(rng.uniform(0.3, 0.7, 2)))
        return pal[levels]
    return pal[0] * (1 - field_[..., None]) + pal[1] * field_[..., None]


def _tex_gradient(rng: np.random.Generator, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) / (n - 1)
    pal = _palette(rng, 2)
    if rng.random() < 0.5:
        ang = rng.uniform(0, 2 * np.pi)
        t = xx * math.cos(ang) + yy * math.sin(ang)
    else:
        cx, cy = rng.uniform(0, 1, 2)
        t = np.hypot(xx - cx, yy - cy)
    t = (t - t.min()) / max(np.ptp(t), 1e-9)
    return pal[0] * (1 - t[..., None]) + pal[1] * t[..., None]


def _tex_text(rng: np.random.Generator, n: int, base: np.ndarray | None = None) -> np.ndarray:
    """Lines of glyph-like blocks on a background: the printed labels of packaged goods."""
    img = np.empty((n, n, 3)) if base is None else base.copy()
    if base is None:
        img[:] = _random_color(rng)
    ink = _random_color(rng).astype(np.float64)
    line_h = int(rng.integers(6, 22))
    y = int(rng.integers(2, line_h + 2))
    while y + line_h < n:
        x = int(rng.integers(2, 24))
        end = n - int(rng.integers(2, 40))
        while x < end:
            for _ in range(int(rng.integers(2, 8))):  # one word
                w = int(rng.integers(max(2, line_h // 4), max(3, line_h // 2) + 1))
                h = int(line_h * rng.uniform(0.55, 1.0))
                if x + w >= end:
                    break
                img[y + line_h - h:y + line_h, x:x + w] = ink
                x += w + max(1, line_h // 8)
            x += int(rng.integers(line_h // 2 + 1, line_h + 2))
        y += int(line_h * rng.uniform(1.3, 2.0))
    return img


def _tex_label(rng: np.random.Generator, n: int) -> np.ndarray:
    """A background pattern with a text panel on it (a composite, like real packaging)."""
    base = [_tex_stripes, _tex_gradient, _tex_blobs][int(rng.integers(0, 3))](rng, n)
    y0, y1 = sorted(rng.integers(0, n, 2))
    if y1 - y0 < n // 4:
        y0, y1 = n // 4, 3 * n // 4
    panel = _tex_text(rng, y1 - y0 + 0, None)
    w = panel.shape[1]
    base[y0:y1, :min(n, w)] = panel[:, :min(n, w)]
    return base


_TEXTURES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "stripes": _tex_stripes, "checker": _tex_checker, "blobs": _tex_blobs,
    "gradient": _tex_gradient, "text": _tex_text, "label": _tex_label,
}


def _tex_z_only(rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
    """A texture whose colour depends on the row only: with cylindrical uv it varies with height
    only, so it keeps every rotational symmetry of the shape about z."""
    kind = str(rng.choice(["bands", "vgradient", "vnoise"]))
    rows = np.arange(n, dtype=np.float64) / (n - 1)
    if kind == "bands":
        k = int(rng.integers(2, 6))
        edges = np.sort(rng.random(k - 1))
        pal = _palette(rng, k)
        col = pal[np.searchsorted(edges, rows)]
    elif kind == "vgradient":
        pal = _palette(rng, 2)
        col = pal[0] * (1 - rows[:, None]) + pal[1] * rows[:, None]
    else:
        t = np.interp(rows, np.linspace(0, 1, 8), rng.random(8))
        pal = _palette(rng, 2)
        col = pal[0] * (1 - t[:, None]) + pal[1] * t[:, None]
    return np.broadcast_to(col[:, None, :], (n, n, 3)).copy(), kind


def _uv(v: np.ndarray, mapping: str, rng: np.random.Generator) -> np.ndarray:
    """Per-vertex uv in [0, 1] without seams, so the mesh keeps shared vertices (watertight).

    cylindrical: u = |azimuth| / pi (mirrored, hence continuous all around), v = height;
    spherical: the same u, v = polar angle; planar: projection on two random orthogonal axes.
    """
    c = 0.5 * (v.min(0) + v.max(0))
    p = v - c
    if mapping in ("cylindrical", "spherical"):
        u = np.abs(np.arctan2(p[:, 1], p[:, 0])) / np.pi
        if mapping == "cylindrical":
            w = (p[:, 2] - p[:, 2].min()) / max(np.ptp(p[:, 2]), 1e-12)
        else:
            cos_polar = np.clip(p[:, 2] / np.maximum(np.linalg.norm(p, axis=1), 1e-12), -1, 1)
            w = 1.0 - np.arccos(cos_polar) / np.pi
    else:
        a = rng.normal(size=3)
        a /= np.linalg.norm(a)
        b = np.cross(a, rng.normal(size=3))
        b /= np.linalg.norm(b)
        e1, e2 = np.cross(a, b), b
        u, w = np.einsum("nc,c->n", p, e1), np.einsum("nc,c->n", p, e2)
        span = max(np.ptp(u), np.ptp(w), 1e-12)
        u = (u - u.min()) / span
        w = (w - w.min()) / span
    return _uv_margin(np.stack([u, w], -1))


def _uv_margin(uv: np.ndarray) -> np.ndarray:
    """Keep uv a hair inside [0, 1]: renderers that wrap (ours does) would otherwise read the
    opposite border at exactly 1.0, and speckle where interpolation lands on either side of it."""
    return 0.002 + 0.996 * np.clip(uv, 0.0, 1.0)


def _apply_appearance(v: np.ndarray, f: np.ndarray, part: np.ndarray, symmetry: str, radial_union: bool,
                      rng: np.random.Generator) -> tuple[trimesh.Trimesh, bool, str, bool]:
    """Attach visuals. Returns (mesh, textured, appearance name, appearance keeps symmetry)."""
    mesh = trimesh.Trimesh(v, f, process=False)
    symmetric_shape = symmetry not in ("none",)
    if rng.random() < _P_TEXTURED:
        if symmetric_shape and rng.random() < 0.35:
            img, kind = _tex_z_only(rng, _TEX_SIZE)
            mapping, keeps = "cylindrical", True
        else:
            kind = str(rng.choice(list(_TEXTURES)))
            img = _TEXTURES[kind](rng, _TEX_SIZE)
            mapping = str(rng.choice(["cylindrical", "planar", "spherical"], p=[0.5, 0.3, 0.2]))
            keeps = False
        grain = rng.normal(0.0, rng.uniform(0, 6), (img.shape[0], 1 if keeps else img.shape[1], 3))
        img = np.clip(img + grain, 0, 255)  # sensor-like grain; per row only where it must keep symmetry
        image = Image.fromarray(img.astype(np.uint8))
        mesh.visual = trimesh.visual.TextureVisuals(uv=_uv(v, mapping, rng), image=image)
        return mesh, True, f"texture:{kind}/{mapping}", keeps

    kind = str(rng.choice(["uniform", "parts", "noise"], p=[0.45, 0.25, 0.3]))
    if kind == "uniform":  # textureless, like T-LESS
        rgb = np.broadcast_to(_random_color(rng), (len(v), 3))
        keeps = True
    elif kind == "parts" and part.max() > 0:
        pal = _palette(rng, int(part.max()) + 1)
        rgb = pal[part]
        keeps = radial_union or symmetry == "continuous_z"  # arms share one colour; coaxial parts
    elif kind == "parts":  # one part: colour bands along z (keeps z symmetry)
        k = int(rng.integers(2, 5))
        t = (v[:, 2] - v[:, 2].min()) / max(np.ptp(v[:, 2]), 1e-12)
        pal = _palette(rng, k)
        rgb = pal[np.searchsorted(np.sort(rng.random(k - 1)), t)]
        kind, keeps = "bands", True
    else:  # smooth 3D noise
        scale = max(np.ptp(v, axis=0).max(), 1e-12)
        freq = rng.normal(size=(4, 3)) * rng.uniform(1.0, 4.0) * 2 * np.pi / scale
        t = np.sin(np.einsum("nc,kc->nk", v, freq) + rng.uniform(0, 2 * np.pi, 4)).sum(1)
        t = (t - t.min()) / max(np.ptp(t), 1e-12)
        pal = _palette(rng, 2)
        rgb = pal[0] * (1 - t[:, None]) + pal[1] * t[:, None]
        keeps = False
    rgba = np.empty((len(v), 4), np.uint8)
    rgba[:, :3] = np.clip(np.round(rgb), 0, 255)
    rgba[:, 3] = 255
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=rgba)
    return mesh, False, f"vertex:{kind}", keeps

"""Pose codebook of a known mesh: encoder codes of rendered views, rotation by cosine argmax.

The known-model mode (Wen et al., ECCV 2022; the idea of Sundermeyer et al.'s augmented
autoencoder) recovers an object's rotation by *retrieval*: the encoder maps a 128 x 128 crop to
a shape code ``z_o`` and a pose code ``z_p``; offline, the pose codes of crops rendered at every
rotation of a grid are stored with their rotations; online, the rotation whose code has the
largest cosine similarity with the query's ``z_p`` is the answer.

**Grid.** ``viewpoint_rotation_grid(subdivisions, n_inplane)``: icosphere viewpoints ``v`` x
in-plane angles ``a``, ``R = inplane_rotation(a) @ look_at_rotation(v)``, flat index
``view * n_inplane + k``. Presets (:data:`CODEBOOK_PRESETS`): ``full`` 2562 x 36 = 92232
rotations (neighbouring viewpoints 4.3 degrees apart, in-plane step 10 degrees; the paper's grid,
for machines with a GPU) and ``coarse`` 642 x 36 = 23112 (viewpoints 8.6 degrees apart, same
in-plane step; for CPU-only machines, built in about a quarter of the time).

**Crops.** Every view is rendered in the object-centred crop camera of
:mod:`sixd_pose_ros.objects.references`: the camera sits at
:data:`~sixd_pose_ros.objects.references.DEFAULT_RENDER_DISTANCE` bounding radii from the
object centre, looks at it, and its focal length makes the unit sphere of the normalized object
exactly fill the ``S x S`` crop (``f = crop_focal(d, 1, S)``, principal point at the crop centre
``((S-1)/2, (S-1)/2)``). Only the 2562 (or 642) viewpoints are rendered; the in-plane angles are
made by *rotating the rendered crop* about its centre with ``cv2.warpAffine``. That is exact, not
an approximation: ``inplane_rotation(a)`` spins the camera frame about the optical axis, which
leaves ``z`` unchanged and rotates the pixel offsets ``(u - c, v - c)`` from the principal point
by the same 2D matrix ``[[cos a, -sin a], [sin a, cos a]]`` (clockwise on screen for ``a > 0``,
since ``v`` points down); the sphere's disc, hence the whole object, stays inside the crop.
It needs lighting that is symmetric about the optical axis, as the default
:class:`~sixd_pose_ros.render.renderer.Lighting` is (light along the optical axis, no specular);
with another light the warped crop is lit like the un-rotated view.

**Boxes.** For every entry the silhouette's axis-aligned bounding box *in the rotated crop* is
stored: ``box_px`` (its larger side, crop pixels) and ``box_offset`` (its centre minus the crop
centre, crop pixels), computed exactly by rotating the convex hull of the view's mask pixels
(:func:`silhouette_boxes`). The crop centre is the projection of the object centre, so a detector
that returns a tight silhouette box (instead of the sphere's centre and diameter, see
:func:`~sixd_pose_ros.models.detector.initial_translation`) gives the translation of a hit ``i``:
the crop's tangent scale is ``tan(alpha) = (S / 2) / f_crop`` with ``sin(alpha) = 1 / d``, so the
object's angular size is ``box_px[i] / f_crop``; setting it equal to the detected
``box_size / f`` (``f = sqrt(fx fy)``) gives ``tan(alpha) = box_size * (S / 2) / (f * box_px[i])``
and the distance of the object centre ``d = scale * sqrt(1 + tan^2) / tan`` (meters); its pixel is
``box_center - box_offset[i] * box_size / box_px[i]``. :func:`translation_from_box` does this.

**Rotation of a hit.** Codebook rotations are object-to-camera in the *crop* camera (normalized
object frame, same rotation in meters). A query crop made with
:func:`~sixd_pose_ros.geometry.crop_camera.object_centred_camera` (camera rotated by ``R_v``
onto the object centre) gives ``R_m2c = R_v^T @ codebook.rotation(i)`` in the real camera; then
``t_m2c = p - R_m2c @ center`` with ``p`` the object centre in the camera (meters) and
``center`` the normalization centre. See :func:`pose_from_hit`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Union

import cv2
import numpy as np
import trimesh

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry.crop_camera import crop_focal
from sixd_pose_ros.geometry.normalization import ObjectNormalization, normalization_from_points
from sixd_pose_ros.geometry.rotations import look_at_rotation
from sixd_pose_ros.geometry.sampling import (
    icosphere_vertices,
    inplane_angles,
    viewpoint_rotation_grid,
)
from sixd_pose_ros.io import atomic_write_bytes
from sixd_pose_ros.objects.references import DEFAULT_RENDER_DISTANCE

if TYPE_CHECKING:  # torch is imported lazily: loading a codebook must not pay for it
    import torch

__all__ = [
    "CODEBOOK_FORMAT_VERSION",
    "CODEBOOK_PRESETS",
    "Encoder",
    "CodebookError",
    "Codebook",
    "as_encoder",
    "build_codebook",
    "inplane_crops",
    "inplane_warp_matrix",
    "mesh_geometry_sha256",
    "pose_from_hit",
    "render_codebook_views",
    "rotate_crop",
    "silhouette_boxes",
    "translation_from_box",
]

#: Version of the ``.npz`` layout written by :meth:`Codebook.save`; :meth:`Codebook.load`
#: refuses other versions. Bump it whenever the stored arrays or their meaning change.
CODEBOOK_FORMAT_VERSION = 1
_FORMAT_TAG = "sixd_pose_ros.Codebook"

#: ``name -> (subdivisions, n_inplane)``. ``full``: the paper's 92232 rotations (GPU machines);
#: ``coarse``: 23112 rotations, the CPU-only default (``--coarse``).
CODEBOOK_PRESETS: dict[str, tuple[int, int]] = {"full": (4, 36), "coarse": (3, 36)}

#: The encoder protocol: ``(B, 3, S, S)`` float crops in ``[0, 1]`` (RGB, on the encoder's
#: device) -> ``(z_o (B, D_o), z_p (B, D))``. Only ``z_p`` is used (normalized here anyway).
Encoder = Callable[["torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]

_REBUILD = ("rebuild it with `sixd-pose build-object --mesh MESH --unit UNIT --name NAME "
            "--overwrite` (with the encoder weights this sixd_pose_ros ships)")


class CodebookError(SixdPoseError):
    """A codebook file cannot be used (missing, corrupt, other format version, or built with
    other encoder weights); the message names the rebuild command."""


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def mesh_geometry_sha256(mesh: trimesh.Trimesh) -> str:
    """sha256 of the geometry in meters (float64 vertices, int64 faces): identifies the mesh a
    codebook was rendered from independently of its file format."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(mesh.vertices, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(mesh.faces, dtype="<i8").tobytes())
    return h.hexdigest()


def inplane_warp_matrix(angle: float, size: int) -> np.ndarray:
    """``(2, 3)`` forward affine (source -> destination pixel) of ``cv2.warpAffine`` that turns
    the crop of ``R`` into the crop of ``inplane_rotation(angle) @ R``: a rotation of the pixel
    offsets from the crop centre ``c = (S-1)/2`` by ``[[cos, -sin], [sin, cos]]``."""
    c = 0.5 * (int(size) - 1)
    co, si = float(np.cos(angle)), float(np.sin(angle))
    return np.array([[co, -si, c - co * c + si * c],
                     [si, co, c - si * c - co * c]], dtype=np.float64)


def rotate_crop(image: np.ndarray, angle: float, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """The crop of ``inplane_rotation(angle) @ R`` from the crop of ``R`` (``(S, S[, C])``, any
    dtype cv2 takes); outside the source is 0. ``angle = 0`` returns an exact copy."""
    size = image.shape[0]
    if image.shape[1] != size:
        raise ValueError(f"crop must be square, got {image.shape}")
    if angle == 0.0:
        return image.copy()
    return cv2.warpAffine(image, inplane_warp_matrix(angle, size), (size, size), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _silhouette_corners(mask: np.ndarray) -> np.ndarray:
    """``(P, 2)`` float64 ``(x, y)`` corners of the convex hull of a mask's pixel squares (pixel
    ``(i, j)`` covers ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``); empty for an empty mask."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2))
    centres = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    corners = (centres[:, None, :] + np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5],
                                               [-0.5, 0.5]])).reshape(-1, 2)
    return cv2.convexHull(corners.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _rotated_boxes(corners: np.ndarray, angles: np.ndarray,
                   size: int) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box of a silhouette (its hull ``corners``) after the in-plane rotation of
    each angle (:func:`inplane_warp_matrix`): ``box_px (A,)`` larger side and ``box_offset
    (A, 2)`` box centre minus crop centre, crop pixels. Zeros for an empty silhouette."""
    a = len(angles)
    if len(corners) == 0:
        return np.zeros(a, np.float32), np.zeros((a, 2), np.float32)
    c = 0.5 * (size - 1)
    co, si = np.cos(angles), np.sin(angles)
    rot = np.stack([np.stack([co, -si], -1), np.stack([si, co], -1)], -2)  # (A, 2, 2)
    pts = np.einsum("aij,pj->api", rot, corners - c)  # offsets from the crop centre
    lo, hi = pts.min(axis=1), pts.max(axis=1)  # (A, 2)
    return (hi - lo).max(axis=1).astype(np.float32), (0.5 * (lo + hi)).astype(np.float32)


def silhouette_boxes(masks: np.ndarray, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of every view's silhouette at every in-plane angle, from the un-rotated masks.

    Computed exactly from the convex hull of the mask's pixel squares (rotating the hull is
    cheaper and sharper than measuring warped masks).

    Args:
        masks: ``(V, S, S)`` bool silhouettes.
        angles: ``(A,)`` in-plane angles, radians.

    Returns:
        ``box_px (V * A,)`` float32 larger side of the axis-aligned box, crop pixels, and
        ``box_offset (V * A, 2)`` its centre minus the crop centre, in the codebook layout
        ``view * A + k``.
    """
    v, s = masks.shape[0], masks.shape[1]
    box_px = np.empty((v, len(angles)), np.float32)
    box_offset = np.empty((v, len(angles), 2), np.float32)
    for i in range(v):
        box_px[i], box_offset[i] = _rotated_boxes(_silhouette_corners(masks[i]), angles, s)
    return box_px.reshape(-1), box_offset.reshape(-1, 2)


def as_encoder(model) -> Encoder:
    """The :data:`Encoder` callable of a model: its ``encode`` method when it has one (an
    autoencoder whose ``forward`` also decodes), else the model itself."""
    encode = getattr(model, "encode", None)
    return encode if callable(encode) else model


def _encoder_device(encoder, device) -> "torch.device":
    import torch

    if device is not None:
        return torch.device(device)
    for obj in (encoder, getattr(encoder, "__self__", None)):  # a module, or a bound method
        params = getattr(obj, "parameters", None)
        if callable(params):
            try:
                return next(iter(params())).device
            except StopIteration:
                pass
    return torch.device("cpu")


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False,
                dynamic_ncols=True)


# ------------------------------------------------------------------------------------------------
# Rendering the viewpoints
# ------------------------------------------------------------------------------------------------


def render_codebook_views(mesh: trimesh.Trimesh, subdivisions: int = 4, size: int = 128,
                          lighting=None, *, distance: float = DEFAULT_RENDER_DISTANCE,
                          batch: int = 128, progress: bool = False,
                          backend: str = "numba") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render the mesh from every icosphere viewpoint, in the object-centred crop camera.

    Args:
        mesh: the object, meters.
        subdivisions: icosphere level: ``10 * 4**k + 2`` views (2562 for 4, 642 for 3).
        size: crop side ``S``.
        lighting: renderer lighting; keep it symmetric about the optical axis (the default is)
            so that rotated crops stay exact (see the module docstring).
        distance: camera distance, bounding radii (the unit sphere fills the crop at any).
        batch: views per renderer call.
        progress: show a tqdm bar.
        backend: renderer backend.

    Returns:
        ``(crops (V, S, S, 3) uint8, masks (V, S, S) bool, R_views (V, 3, 3) float64, box_px (V,)
        float32)``: ``R_views[i] = look_at_rotation(icosphere_vertices(subdivisions)[i])``
        (object z up), equal to the in-plane angle 0 entries of ``viewpoint_rotation_grid``;
        ``box_px`` is the larger side of each silhouette's bounding box, crop pixels.
    """
    from sixd_pose_ros.render.renderer import RenderMesh, render

    size = int(size)
    if distance <= 1.0:
        raise ValueError(f"distance must be > 1 (outside the unit sphere), got {distance}")
    norm = normalization_from_points(np.asarray(mesh.vertices))
    dirs = icosphere_vertices(subdivisions)
    R = look_at_rotation(dirs, up=(0.0, 0.0, 1.0))
    n = len(R)
    t_n = np.tile([0.0, 0.0, float(distance)], (n, 1))
    _, t_m = norm.pose_to_metric(R, t_n)
    f = float(crop_focal(distance, 1.0, size))
    c = 0.5 * (size - 1)
    K = np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
    rmesh = RenderMesh.from_trimesh(mesh)
    crops = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    with _progress(n, "render views", progress) as bar:
        for s in range(0, n, batch):
            e = min(n, s + batch)
            out = render([rmesh], R[s:e], t_m[s:e], K, size, size, lighting=lighting, backend=backend)
            crops[s:e] = out.rgb
            masks[s:e] = out.mask == 1
            bar.update(e - s)
    box_px, _ = silhouette_boxes(masks, np.zeros(1))
    return crops, masks, R, box_px


# ------------------------------------------------------------------------------------------------
# The codebook
# ------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Codebook:
    """``N`` pose codes of one object with their rotations (see the module docstring).

    Attributes:
        codes: ``(N, D)`` float16 unit pose codes ``z_p``.
        rotations: ``(N, 3, 3)`` float32 object-to-camera rotations in the crop camera.
        box_px: ``(N,)`` float32 larger side of the silhouette's bounding box, crop pixels.
        box_offset: ``(N, 2)`` float32 box centre minus crop centre ``(du, dv)``, crop pixels.
        normalization: the object's centre and scale (meters).
        name: object name.
        encoder_id: identity (sha256 of the weights file) of the encoder that made ``codes``.
        mesh_sha256: :func:`mesh_geometry_sha256` of the rendered mesh.
        subdivisions, n_inplane: the grid (``N = (10 * 4**subdivisions + 2) * n_inplane``).
        size: crop side ``S``; distance: render distance in bounding radii.
        timings: seconds per build stage (``render``, ``warp``, ``encode``, ``total``).
    """

    codes: np.ndarray
    rotations: np.ndarray
    box_px: np.ndarray
    box_offset: np.ndarray
    normalization: ObjectNormalization
    name: str = ""
    encoder_id: str = ""
    mesh_sha256: str = ""
    subdivisions: int = 4
    n_inplane: int = 36
    size: int = 128
    distance: float = DEFAULT_RENDER_DISTANCE
    timings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.float16)
        self.rotations = np.asarray(self.rotations, dtype=np.float32)
        self.box_px = np.asarray(self.box_px, dtype=np.float32)
        self.box_offset = np.asarray(self.box_offset, dtype=np.float32)
        if self.codes.ndim != 2 or self.codes.shape[0] == 0:
            raise ValueError(f"codes must be (N, D) with N >= 1, got {self.codes.shape}")
        n = self.codes.shape[0]
        for name, arr, shape in (("rotations", self.rotations, (n, 3, 3)),
                                 ("box_px", self.box_px, (n,)),
                                 ("box_offset", self.box_offset, (n, 2))):
            if arr.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
        if not isinstance(self.normalization, ObjectNormalization):
            raise TypeError("normalization must be an ObjectNormalization")
        self.subdivisions, self.n_inplane, self.size = \
            int(self.subdivisions), int(self.n_inplane), int(self.size)
        self.distance = float(self.distance)
        self._codes_t = None  # torch copy of codes, made on first lookup (see to())

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def dim(self) -> int:
        """Code length ``D``."""
        return int(self.codes.shape[1])

    def rotation(self, index: Union[int, np.ndarray]) -> np.ndarray:
        """Rotation(s) of entry ``index`` (int or array of ints): ``(3, 3)`` or ``(..., 3, 3)``
        float64, object-to-camera in the crop camera."""
        return self.rotations[np.asarray(index)].astype(np.float64)

    def view_and_angle(self, index: Union[int, np.ndarray]) -> tuple:
        """``(view_idx, inplane_idx)`` of entry ``index`` (``divmod(index, n_inplane)``)."""
        return np.divmod(index, self.n_inplane)

    def to(self, device: Union[str, "torch.device"]) -> "Codebook":
        """Keep the codes on ``device`` for :meth:`lookup`; returns ``self``.

        On a GPU they stay float16 (half the memory; each chunk is upcast on the fly, which
        costs nothing there). On the CPU they are upcast to float32 once (4 bytes x 128 x 92232
        = 47 MB for the full grid): converting float16 on every lookup would cost ~40 ms a
        frame, the float32 product alone a few ms.
        """
        import torch

        codes = torch.from_numpy(self.codes).to(device)
        self._codes_t = codes.float() if codes.device.type == "cpu" else codes
        return self

    def lookup(self, z_p, k: int = 5, chunk: int = 16384):
        """The ``k`` entries whose codes are most cosine-similar to each query.

        Scores are computed as float32 matrix products over chunks of ``chunk`` codes (float16
        codes on a GPU are upcast one chunk at a time), keeping a running top-k. The codes live
        on the CPU unless :meth:`to` moved them.

        Args:
            z_p: ``(B, D)`` or ``(D,)`` pose codes, numpy or torch (normalized here).
            k: number of hits, clipped to ``N``.
            chunk: codes per matrix product.

        Returns:
            ``(indices (B, k) int64, scores (B, k) float32)``, best first; numpy for numpy
            input, torch (on the codebook's device) for torch input; ``(k,)`` for 1-D input.
        """
        import torch
        import torch.nn.functional as F

        is_torch = isinstance(z_p, torch.Tensor)
        q = z_p if is_torch else torch.from_numpy(np.asarray(z_p, dtype=np.float32))
        single = q.ndim == 1
        if single:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"z_p must be (B, {self.dim}) or ({self.dim},), got {tuple(q.shape)}")
        if self._codes_t is None:
            self.to("cpu")
        codes = self._codes_t
        q = F.normalize(q.detach().to(device=codes.device, dtype=torch.float32), dim=1)
        k = max(1, min(int(k), len(self)))
        vals, idxs = [], []
        with torch.no_grad():
            for s in range(0, len(self), chunk):
                scores = q @ codes[s:s + chunk].float().T
                v, i = scores.topk(min(k, scores.shape[1]), dim=1)
                vals.append(v)
                idxs.append(i + s)
            v_all, i_all = torch.cat(vals, dim=1), torch.cat(idxs, dim=1)
            v, j = v_all.topk(k, dim=1)
            idx = i_all.gather(1, j)
        if single:
            idx, v = idx[0], v[0]
        if is_torch:
            return idx, v
        return idx.cpu().numpy().astype(np.int64), v.cpu().numpy().astype(np.float32)

    # --- persistence ------------------------------------------------------------------------

    def _meta(self) -> dict:
        return {"name": self.name, "encoder_id": self.encoder_id, "mesh_sha256": self.mesh_sha256,
                "subdivisions": self.subdivisions, "n_inplane": self.n_inplane, "size": self.size,
                "distance": self.distance, "timings": self.timings}

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write one ``.npz`` (uncompressed: codes do not compress), atomically. Returns it."""
        buf = io.BytesIO()
        np.savez(buf, format=np.array(_FORMAT_TAG),
                 format_version=np.array(CODEBOOK_FORMAT_VERSION, dtype=np.int64),
                 meta=np.array(json.dumps(self._meta())), codes=self.codes,
                 rotations=self.rotations, box_px=self.box_px, box_offset=self.box_offset,
                 center=self.normalization.center,
                 scale=np.array(self.normalization.scale, dtype=np.float64))
        path = Path(path)
        atomic_write_bytes(path, buf.getvalue(), overwrite=True)
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike], expected_encoder_id: Optional[str] = None,
             rebuild_hint: Optional[str] = None) -> "Codebook":
        """Read a codebook written by :meth:`save`.

        Args:
            path: the ``.npz`` file.
            expected_encoder_id: when given, the encoder identity the codes must come from.
            rebuild_hint: the command to suggest in errors (default: a generic build-object).

        Raises:
            CodebookError: missing or corrupt file, other format version, foreign file, or
                codes made by another encoder; the message names the rebuild command.
        """
        path = Path(path)
        fix = rebuild_hint or _REBUILD
        if not path.is_file():
            raise CodebookError(f"codebook {path} not found; {fix}")
        try:
            with np.load(path, allow_pickle=False) as data:
                files = set(data.files)
                if "format" not in files or "format_version" not in files \
                        or str(data["format"]) != _FORMAT_TAG:
                    raise CodebookError(f"{path} is not a sixd_pose_ros codebook file; {fix}")
                version = int(data["format_version"])
                if version != CODEBOOK_FORMAT_VERSION:
                    raise CodebookError(
                        f"{path} holds a codebook in format version {version}, but this "
                        f"sixd_pose_ros reads version {CODEBOOK_FORMAT_VERSION}; {fix}")
                arrays = {k: data[k] for k in files}
            meta = json.loads(str(arrays["meta"]))
        except CodebookError:
            raise
        except (zipfile.BadZipFile, ValueError, OSError, KeyError, EOFError) as exc:
            raise CodebookError(f"{path} cannot be read as a codebook ({type(exc).__name__}: "
                                f"{exc}): the file is corrupt or truncated; {fix}") from exc
        recorded = meta.get("encoder_id", "")
        if expected_encoder_id is not None and recorded != expected_encoder_id:
            raise CodebookError(
                f"codebook {path} was encoded with encoder weights {recorded[:12] or '(unknown)'}"
                f"..., but the encoder in use is {expected_encoder_id[:12]}...: its codes would "
                f"not match the query codes; {fix}")
        try:
            return cls(codes=arrays["codes"], rotations=arrays["rotations"],
                       box_px=arrays["box_px"], box_offset=arrays["box_offset"],
                       normalization=ObjectNormalization(arrays["center"], float(arrays["scale"])),
                       name=meta.get("name", ""), encoder_id=recorded,
                       mesh_sha256=meta.get("mesh_sha256", ""),
                       subdivisions=meta["subdivisions"], n_inplane=meta["n_inplane"],
                       size=meta["size"], distance=meta["distance"],
                       timings=meta.get("timings", {}))
        except (KeyError, ValueError, TypeError) as exc:
            raise CodebookError(f"{path} is an incomplete or inconsistent codebook ({exc}); "
                                f"{fix}") from exc


# ------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------


#: cv2.rotate codes of 1, 2 and 3 clockwise quarter turns (``np.rot90(x, -m)``).
_QUARTER_TURNS = (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)


def inplane_crops(view: np.ndarray, angles: np.ndarray,
                  out: Optional[np.ndarray] = None) -> np.ndarray:
    """All in-plane rotations of one rendered view: ``out[k] = rotate_crop(view, angles[k])``.

    For evenly spaced angles from 0 with ``len(angles) % 4 == 0`` (what
    :func:`~sixd_pose_ros.geometry.sampling.inplane_angles` gives for 4, 8, 36, ...), only the
    first quarter is warped: ``angles[k + m A/4] = angles[k] + m pi/2`` and a quarter turn about
    the centre of a square crop maps pixels onto pixels, so those crops are exact
    ``np.rot90(crop_k, -m)`` copies (clockwise, like positive in-plane angles), made with
    ``cv2.rotate``. 4x fewer warps.

    Args:
        view: ``(S, S, C)`` crop of the view (in-plane angle 0).
        angles: ``(A,)`` radians.
        out: optional ``(A, S, S, C)`` uint8 array to fill.

    Returns:
        ``(A, S, S, C)`` crops; entry ``k`` is the crop of ``inplane_rotation(angles[k]) @ R``.
    """
    a = len(angles)
    if out is None:
        out = np.empty((a,) + view.shape, view.dtype)
    q = a // 4
    quarter = a % 4 == 0 and np.allclose(angles, 2.0 * np.pi * np.arange(a) / a, atol=1e-12)
    for k in range(q if quarter else a):
        out[k] = rotate_crop(view, float(angles[k]))
    if quarter:  # cv2.rotate: ~10x faster than copying a strided np.rot90 view
        for m, code in enumerate(_QUARTER_TURNS, start=1):
            for k in range(q):
                out[k + m * q] = cv2.rotate(out[k], code)
    return out


def _views_to_crops(views: np.ndarray, angles: np.ndarray,
                    pool: Optional[ThreadPoolExecutor]) -> np.ndarray:
    """``(nv, S, S, 3)`` views -> ``(nv * A, S, S, 3)`` crops in codebook order."""
    a = len(angles)
    out = np.empty((len(views) * a,) + views.shape[1:], np.uint8)

    def work(i: int) -> None:
        inplane_crops(views[i], angles, out[i * a:(i + 1) * a])

    if pool is None or len(views) < 2:
        for i in range(len(views)):
            work(i)
    else:
        list(pool.map(work, range(len(views))))
    return out


def _to_input(rgb: np.ndarray, device: "torch.device") -> "torch.Tensor":
    """``(B, S, S, 3)`` uint8 -> ``(B, 3, S, S)`` float32 in ``[0, 1]`` on ``device``. On a GPU
    the uint8 batch is sent (4x less traffic) and converted there; on the CPU numpy converts
    (several times faster than torch's single-threaded uint8 -> float cast)."""
    import torch

    if device.type == "cpu":
        return torch.from_numpy(rgb.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255))
    x = torch.from_numpy(rgb).to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().mul_(1 / 255).contiguous()


def build_codebook(mesh: trimesh.Trimesh, encoder: Encoder, *, subdivisions: int = 4,
                   n_inplane: int = 36, batch: int = 256, size: int = 128, progress: bool = True,
                   name: str = "", encoder_id: str = "", lighting=None,
                   distance: float = DEFAULT_RENDER_DISTANCE, device=None,
                   workers: Optional[int] = None) -> Codebook:
    """Encode the pose codebook of ``mesh``: render the viewpoints, rotate each crop to every
    in-plane angle, run ``encoder`` on batches, keep the normalized ``z_p`` as float16.

    Device-agnostic: crops go to the encoder's device (its parameters' device, or ``device``)
    as uint8 and become float ``[0, 1]`` there, so the same loop serves CPU and GPU; rendering
    and the ``cv2`` rotations run on the CPU (threads, ``workers``). An ``nn.Module`` encoder
    (or a bound method of one) is put in eval mode for the build and restored after.

    Args:
        mesh: the object, meters.
        encoder: see :data:`Encoder`; ``as_encoder(model)`` adapts an autoencoder.
        subdivisions, n_inplane: the grid; :data:`CODEBOOK_PRESETS` has ``full`` (4, 36) and
            ``coarse`` (3, 36).
        batch: crops per encoder call, rounded down to whole views (``n_inplane`` crops each;
            at least one view).
        size: crop side ``S`` (the encoder's input size, 128).
        progress: tqdm bars.
        name, encoder_id: recorded in the codebook (``encoder_id``: sha256 of the weights).
        lighting: see :func:`render_codebook_views`.
        distance: render distance, bounding radii.
        device: overrides the encoder's device.
        workers: threads for the crop rotations (default: half the cores, at most 8; one
            on a 2-core machine, where the encoder needs the other core).

    Returns:
        :class:`Codebook` of ``V * n_inplane`` entries, index ``view * n_inplane + k``, with
        ``timings`` in seconds.
    """
    import torch

    t0 = time.perf_counter()
    norm = normalization_from_points(np.asarray(mesh.vertices))
    crops, masks, _, _ = render_codebook_views(mesh, subdivisions, size, lighting,
                                               distance=distance, progress=progress)
    angles = inplane_angles(n_inplane)
    box_px, box_offset = silhouette_boxes(masks, angles)
    del masks
    t_render = time.perf_counter() - t0
    rotations = viewpoint_rotation_grid(subdivisions, n_inplane)  # float32, same layout
    n = len(rotations)
    dev = _encoder_device(encoder, device)
    module = encoder if isinstance(encoder, torch.nn.Module) else getattr(encoder, "__self__", None)
    was_training = module.training if isinstance(module, torch.nn.Module) else None
    if was_training:
        module.eval()
    codes = None
    t_warp = t_encode = 0.0
    workers = workers or max(1, min(8, (os.cpu_count() or 1) // 2))
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    views_per_batch = max(1, int(batch) // n_inplane)  # whole views: batch ~ `batch` crops
    try:
        with torch.inference_mode(), _progress(n, "encode codebook", progress) as bar:
            for v0 in range(0, len(crops), views_per_batch):
                v1 = min(len(crops), v0 + views_per_batch)
                s, e = v0 * n_inplane, v1 * n_inplane
                tw = time.perf_counter()
                x = _to_input(_views_to_crops(crops[v0:v1], angles, pool), dev)
                te = time.perf_counter()
                t_warp += te - tw
                out = encoder(x)
                if not isinstance(out, (tuple, list)) or len(out) < 2:
                    raise TypeError("the encoder must return (z_o, z_p); wrap an autoencoder "
                                    "with as_encoder(model)")
                z_p = out[1]
                if z_p.ndim != 2 or z_p.shape[0] != e - s:
                    raise TypeError(f"z_p must be (B, D), got {tuple(z_p.shape)} for B={e - s}")
                z_p = torch.nn.functional.normalize(z_p.float(), dim=1)
                if codes is None:
                    codes = np.empty((n, z_p.shape[1]), np.float16)
                codes[s:e] = z_p.half().cpu().numpy()
                t_encode += time.perf_counter() - te
                bar.update(e - s)
    finally:
        if pool is not None:
            pool.shutdown()
        if was_training:
            module.train()
    timings = {"render": t_render, "warp": t_warp, "encode": t_encode,
               "total": time.perf_counter() - t0}
    return Codebook(codes=codes, rotations=rotations, box_px=box_px, box_offset=box_offset,
                    normalization=norm, name=name, encoder_id=encoder_id,
                    mesh_sha256=mesh_geometry_sha256(mesh), subdivisions=subdivisions,
                    n_inplane=n_inplane, size=size, distance=distance, timings=timings)


# ------------------------------------------------------------------------------------------------
# From a hit to a pose
# ------------------------------------------------------------------------------------------------


def translation_from_box(box_center_xy: np.ndarray, box_size_px: float, K: np.ndarray,
                         codebook: Codebook, index: int) -> np.ndarray:
    """Object-centre position in the camera (meters) from a tight silhouette box and a hit.

    See the module docstring: the hit's ``box_px`` / ``box_offset`` (crop pixels) against the
    detected box (image pixels, focal ``f = sqrt(fx fy)``). Approximate off the optical axis
    (the box is measured in the real image, not in a camera turned to the object).

    Args:
        box_center_xy: ``(2,)`` centre of the detected silhouette box, pixels.
        box_size_px: its larger side, pixels.
        K: ``(3, 3)`` intrinsics.
        codebook: the codebook; index: the hit.

    Returns:
        ``p`` ``(3,)``: the object centre in the camera frame, meters (``t = p - R @ center``).
    """
    K = np.asarray(K, dtype=np.float64)
    f = float(np.sqrt(K[0, 0] * K[1, 1]))
    ref = float(codebook.box_px[index])
    if not (box_size_px > 0 and ref > 0):
        raise ValueError("box sizes must be > 0")
    tan_a = box_size_px * 0.5 * codebook.size / (f * ref)
    d = codebook.normalization.scale * np.sqrt(1.0 + tan_a * tan_a) / tan_a
    uv = np.asarray(box_center_xy, dtype=np.float64) \
        - codebook.box_offset[index].astype(np.float64) * (box_size_px / ref)
    ray = np.linalg.inv(K) @ np.array([uv[0], uv[1], 1.0])
    return d * ray / np.linalg.norm(ray)


def pose_from_hit(codebook: Codebook, index: int, R_v: np.ndarray,
                  center_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metric object-to-camera pose of a codebook hit on a query crop.

    Args:
        codebook: the codebook; index: the hit (entry of :meth:`Codebook.lookup`).
        R_v: ``(3, 3)`` rotation camera -> crop camera of the query crop
            (``object_centred_camera(K, center_cam, radius).R_v``).
        center_cam: ``(3,)`` object centre in the camera frame, meters (from the detector's
            ``initial_translation`` times the scale, or :func:`translation_from_box`).

    Returns:
        ``(R (3, 3), t (3,) meters)`` with ``X_cam = R @ X_obj + t`` for the metric mesh.
    """
    R = np.asarray(R_v, dtype=np.float64).T @ codebook.rotation(index)
    t = np.asarray(center_cam, dtype=np.float64) - R @ codebook.normalization.center
    return R, t

"""Pose codebooks for objects without a mesh: CP = B(z_o, h(R)) from a shape code alone.

The disentangled autoencoder's conditioned block B predicts the pose code an object of shape
code ``z_o`` would show at rotation ``R`` (through the rotation's hyperspherical-harmonics
encoding). Over a grid of rotations that is a codebook, built without rendering anything: the
shape code can come from the query crop itself, or from a few photos of the object. Retrieval
then works as with a rendered codebook (cosine top-k of the query's pose code).

What such a codebook cannot give is translation from rendered box sizes: there is no mesh to
render. ``box_px`` is NaN; translation comes from the detector's box or from depth.
"""
from __future__ import annotations

import numpy as np
import torch

from sixd_pose_ros.geometry.normalization import ObjectNormalization
from sixd_pose_ros.geometry.sampling import viewpoint_rotation_grid
from sixd_pose_ros.objects.codebook import Codebook


def shape_code_of(autoencoder, crops: torch.Tensor) -> torch.Tensor:
    """One shape code ``(d,)`` (unit) for an object seen in ``crops (B, C, S, S)``: the mean of the
    crops' codes, renormalized (several views average out what one view cannot show)."""
    z_o, _ = autoencoder.encode(crops)
    z = z_o.mean(0)
    return z / z.norm().clamp_min(1e-12)


@torch.no_grad()
def shape_codebook(autoencoder, z_o: torch.Tensor, *, subdivisions: int = 2, n_inplane: int = 36,
                   name: str = "", encoder_id: str = "") -> Codebook:
    """The codebook ``B(z_o, R_i)`` over the viewpoint x in-plane grid (no mesh, no rendering).

    Args:
        autoencoder: a DisentangledAutoencoder (its ``cond_block`` is B).
        z_o: ``(d,)`` shape code (see :func:`shape_code_of`).
        subdivisions, n_inplane: the rotation grid (as ``build_codebook``'s).
    """
    if not torch.isfinite(z_o).all():
        raise ValueError("the shape code has NaN or inf entries: the crops it came from are broken")
    R = viewpoint_rotation_grid(subdivisions, n_inplane)
    device = next(autoencoder.parameters()).device
    codes = autoencoder.cond_block.codebook(z_o.to(device).float(), torch.from_numpy(R).to(device))
    n = len(R)
    return Codebook(codes.cpu().numpy(), R, box_px=np.full(n, np.nan, np.float32),
                    box_offset=np.zeros((n, 2), np.float32),
                    normalization=ObjectNormalization(np.zeros(3), 1.0), name=name, encoder_id=encoder_id,
                    mesh_sha256="", subdivisions=subdivisions, n_inplane=n_inplane)


@torch.no_grad()
def rotations_without_mesh(autoencoder, crops: torch.Tensor, *, z_o: torch.Tensor | None = None, k: int = 1,
                           subdivisions: int = 2, n_inplane: int = 36) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rotations (crop camera) of each crop from a shape-conditioned codebook.

    ``z_o`` None: each crop's own shape code builds its codebook (nothing but the query is
    known); else the given code (e.g. :func:`shape_code_of` a few photos) serves every crop.
    Returns ``R (B, k, 3, 3)`` and cosine similarities ``(B, k)``.
    """
    own_z_o, z_p = autoencoder.encode(crops)
    rotations, sims = [], []
    shared = shape_codebook(autoencoder, z_o, subdivisions=subdivisions, n_inplane=n_inplane) \
        if z_o is not None else None
    for i in range(len(crops)):
        book = shared if shared is not None else \
            shape_codebook(autoencoder, own_z_o[i], subdivisions=subdivisions, n_inplane=n_inplane)
        idx, sim = book.lookup(z_p[i].cpu().numpy(), k=k)
        rotations.append(book.rotation(idx))
        sims.append(sim)
    return np.stack(rotations), np.stack(sims)

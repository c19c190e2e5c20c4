"""Mesh-free codebooks B(z_o, R): built from a shape code alone, consistent with their grid, and
the held-out comparison runs end to end with the shipped autoencoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import torch_single_thread

from sixd_pose_ros.evaluation.shape_codebook_eval import format_table
from sixd_pose_ros.geometry.sampling import viewpoint_rotation_grid
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_autoencoder
from sixd_pose_ros.objects.shape_codebook import rotations_without_mesh, shape_code_of, shape_codebook
from sixd_pose_ros.training.train_shape_block import METHODS, evaluate_shape_codebook


@pytest.fixture(scope="module")
def autoencoder():
    """The shipped autoencoder: its B is trained (weakly: its codes over rotations are nearly
    constant, see eval-shape-codebook), so mechanics tests that need distinct codes use a
    freshly initialised one."""
    with torch_single_thread():
        yield load_autoencoder(WEIGHTS_DIR / "autoencoder.pt").eval()


@pytest.fixture(scope="module")
def untrained():
    from sixd_pose_ros.models.autoencoder import AutoencoderConfig, DisentangledAutoencoder

    torch.manual_seed(0)
    return DisentangledAutoencoder(AutoencoderConfig()).eval()


def _crops(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, 128, 128), generator=g)


def test_codebook_from_a_shape_code_matches_its_grid(untrained):
    autoencoder = untrained
    z_o = shape_code_of(autoencoder, _crops(3))
    assert z_o.shape == (autoencoder.cfg.code_dim,) and abs(float(z_o.norm()) - 1) < 1e-5
    book = shape_codebook(autoencoder, z_o, subdivisions=1, n_inplane=6, name="no_mesh")
    assert len(book) == 42 * 6 and np.allclose(book.rotations, viewpoint_rotation_grid(1, 6))
    assert np.isnan(book.box_px).all() and book.mesh_sha256 == ""  # nothing rendered: no boxes
    # Each entry's own code retrieves that entry: codes and rotations are in the same order.
    entries = np.array([0, 17, 100, 251])
    idx, sim = book.lookup(book.codes[entries].astype(np.float32), k=1)
    assert np.array_equal(idx[:, 0], entries) and np.all(sim[:, 0] > 0.999)
    # Another shape code gives another codebook (B is conditioned on the shape).
    other = shape_codebook(autoencoder, shape_code_of(autoencoder, _crops(3, seed=1) * 0.2), subdivisions=1,
                           n_inplane=6)
    assert not np.allclose(other.codes.astype(np.float32), book.codes.astype(np.float32), atol=1e-3)


def test_rotations_without_mesh_own_and_shared_codes(autoencoder):
    crops = _crops(2)
    R, sim = rotations_without_mesh(autoencoder, crops, k=3, subdivisions=1, n_inplane=6)
    assert R.shape == (2, 3, 3, 3) and sim.shape == (2, 3)
    assert np.allclose(R @ np.swapaxes(R, -1, -2), np.eye(3), atol=1e-5)
    assert np.all(np.diff(sim, axis=1) <= 1e-6)  # best first
    z_o = shape_code_of(autoencoder, crops)
    R_shared, _ = rotations_without_mesh(autoencoder, crops, z_o=z_o, k=1, subdivisions=1, n_inplane=6)
    book = shape_codebook(autoencoder, z_o, subdivisions=1, n_inplane=6)
    _, z_p = autoencoder.encode(crops)
    idx, _ = book.lookup(z_p.numpy(), k=1)
    assert np.allclose(R_shared[:, 0], book.rotation(idx[:, 0]))


def test_a_broken_shape_code_is_refused(autoencoder):
    with pytest.raises(ValueError, match="NaN"):
        shape_codebook(autoencoder, torch.full((autoencoder.cfg.code_dim,), float("nan")))


def test_heldout_comparison_reports_every_method(autoencoder):
    report = evaluate_shape_codebook(autoencoder, n_objects=1, samples_per_object=2, n_refs=2,
                                     subdivisions=0, n_inplane=4, progress=False)
    assert set(report["methods"]) == set(METHODS)
    for summary in report["methods"].values():
        assert summary["samples"] == 2 and 0 <= summary["median_rotation_error_deg"] <= 180
    assert len(report["families"]) == 1
    table = format_table(report)
    assert "B(refs)" in table and "within 30 deg" in table

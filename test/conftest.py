"""Shared test setup: DDS kept on this machine, on a domain of its own for every run."""
from __future__ import annotations

import os
import random
import tempfile
import time
from contextlib import contextmanager

import pytest

# Set before any test creates an rclpy context: rcl reads these at context init. A random
# domain per run keeps parallel runs (two developers, CI) from hearing each other.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
# ONNX exports and engines of a test run go to a folder of its own, not the user's cache.
os.environ.setdefault("SIXD_POSE_CACHE", tempfile.mkdtemp(prefix="sixd_pose_cache_"))


@contextmanager
def torch_single_thread():
    """One torch thread, restored afterwards with oneDNN's switch (training turns it off for
    determinism): on the 2 shared CI cores, two OpenMP threads are slower as soon as anything
    else runs, and these tests are small."""
    import torch

    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn


def wait_until(predicate, timeout, what="condition"):
    """Poll ``predicate`` every 20 ms until it returns something truthy, and return that; an
    AssertionError naming ``what`` after ``timeout`` seconds (DDS tests wait for messages so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (runs on the lent device)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def save_untrained_weights(folder):
    """detector.pt, refiner.pt, autoencoder.pt of freshly initialised (seeded) networks: real
    models for plumbing tests, which then assert mechanics, never accuracy. Returns the folder."""
    import torch

    from sixd_pose_ros.models.autoencoder import AutoencoderConfig, DisentangledAutoencoder
    from sixd_pose_ros.models.checkpoint import save_weights
    from sixd_pose_ros.models.detector import Detector, DetectorConfig
    from sixd_pose_ros.models.refiner import RefinerConfig, VolumeRefiner

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_weights(folder / "autoencoder.pt", DisentangledAutoencoder(AutoencoderConfig()), AutoencoderConfig())
    save_weights(folder / "detector.pt", Detector(DetectorConfig()), DetectorConfig())
    save_weights(folder / "refiner.pt", VolumeRefiner(RefinerConfig(grid_size=16)), RefinerConfig(grid_size=16))
    return folder


def build_small_database(weights, out, name="drill"):
    """The bundled demo object's database with a tiny codebook (6 views x 4 angles), encoded
    with the autoencoder in `weights`; returns (database folder, the ProceduralObject)."""
    from sixd_pose_ros.models.checkpoint import load_autoencoder, weights_identity
    from sixd_pose_ros.objects.codebook import as_encoder
    from sixd_pose_ros.objects.database import build_object_database
    from sixd_pose_ros.render.procedural import make_bundled_demo_object

    obj = make_bundled_demo_object()
    out.mkdir(parents=True, exist_ok=True)
    mesh_path = out / f"{name}.ply"
    obj.mesh.export(mesh_path)
    db = build_object_database(mesh_path, name, out / "objects", unit="m",
                               encoder=as_encoder(load_autoencoder(weights / "autoencoder.pt")),
                               encoder_id=weights_identity(weights / "autoencoder.pt"), progress=False,
                               subdivisions=1, n_inplane=4, n_references=16,
                               # encoded here, not when a node configures (about a minute on a
                               # fresh machine, then cached per mesh): node tests wait seconds
                               templates=True)
    return db, obj


def put_into_photo(mesh, center, photo):
    """``mesh`` rendered into a real photo (colour and depth) at one fixed pose, its model-frame
    ``center`` 0.75 m in front of the camera: ``(Frame, R, t)``. One pose for every mode's
    absence test (the LM-O smoke photo's table), so their numbers compare."""
    import numpy as np
    from scipy.spatial.transform import Rotation

    from sixd_pose_ros.pipeline.types import Frame
    from sixd_pose_ros.render.renderer import RenderMesh, render

    R = Rotation.from_euler("xyz", [100, 20, 35], degrees=True).as_matrix()
    t = np.array([0.08, 0.04, 0.75]) - R @ center
    out = render([RenderMesh.from_trimesh(mesh)], R[None], t[None], photo.K, photo.rgb.shape[1],
                 photo.rgb.shape[0])
    inside = out.mask[0] == 1
    rgb = np.where(inside[..., None], out.rgb[0], photo.rgb)
    depth = np.where(inside, out.depth[0], photo.depth).astype(np.float32)
    return Frame(rgb, photo.K, depth), R, t


"""TensorRT engines on a real GPU: build from the exported graph, agree with torch, cached per
key, a damaged engine file rebuilt, CUDA tensors in and out. Skipped without tensorrt + CUDA
(the cache logic they rely on is tested everywhere in test_engines_cache.py)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import build_small_database

from sixd_pose_ros.engines.tensorrt_engine import tensorrt_available

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not tensorrt_available()[0], reason="needs tensorrt and a CUDA GPU: "
                                 + tensorrt_available()[1])]


@pytest.fixture(scope="module")
def encoder():
    from sixd_pose_ros.engines.export import encoder_spec
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_autoencoder

    return encoder_spec(load_autoencoder(WEIGHTS_DIR / "autoencoder.pt", "cuda"))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a.float() - b.float()) / torch.linalg.vector_norm(b.float()))


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_engine_matches_torch_and_is_cached(tmp_path, encoder, precision, tol):
    from sixd_pose_ros.engines.backends import TorchRunner, make_backend

    backend = make_backend("tensorrt", "cuda", precision, cache=tmp_path)
    assert backend.name == "tensorrt"
    runner = backend.runner(encoder)
    assert runner.backend == "tensorrt" and encoder.cache_name in backend.build_seconds
    crops = torch.rand(3, 3, 128, 128, device="cuda")
    got = runner(crops)
    assert all(g.is_cuda for g in got)  # stays on the device
    want = TorchRunner(encoder.module, torch.device("cuda"))(crops)
    for g, w in zip(got, want):
        assert _relative(g, w) < tol
    again = make_backend("tensorrt", "cuda", precision, cache=tmp_path)
    again.runner(encoder)
    assert encoder.cache_name not in again.build_seconds  # loaded, not rebuilt


def test_truncated_engine_is_rebuilt(tmp_path, encoder, caplog):
    from sixd_pose_ros.engines.backends import make_backend

    make_backend("tensorrt", "cuda", "fp16", cache=tmp_path).runner(encoder)
    (engine,) = (tmp_path / "tensorrt").glob("encoder-*.engine")
    engine.write_bytes(engine.read_bytes()[:1000])
    backend = make_backend("tensorrt", "cuda", "fp16", cache=tmp_path)
    with caplog.at_level(logging.WARNING):
        runner = backend.runner(encoder)
    assert "unusable" in caplog.text and encoder.cache_name in backend.build_seconds
    assert runner.backend == "tensorrt"


def test_estimator_runs_on_tensorrt(tmp_path):
    from sixd_pose_ros.geometry.rotations import matrix_from_axis_angle
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR
    from sixd_pose_ros.pipeline.known_model import KnownModelConfig, KnownModelEstimator
    from sixd_pose_ros.pipeline.types import Frame
    from sixd_pose_ros.render.renderer import RenderMesh, render

    db, obj = build_small_database(WEIGHTS_DIR, tmp_path)
    K = np.array([[600.0, 0, 322.0], [0, 598.0, 241.0], [0, 0, 1.0]])
    R = matrix_from_axis_angle(np.array([1.0, 0.3, 0.2]) / np.linalg.norm([1.0, 0.3, 0.2]), 2.0)
    out = render([RenderMesh.from_trimesh(obj.mesh)], R, np.array([0.03, -0.02, 0.7]), K, 640, 480)
    frame = Frame(out.rgb[0], K, out.depth[0])
    cfg = KnownModelConfig(min_detection_score=0.0, refine_iterations=3, backend="tensorrt", precision="fp32")
    est = KnownModelEstimator.from_paths([db], WEIGHTS_DIR, cfg)
    assert set(est.backend.used.values()) == {"tensorrt"}
    ref = KnownModelEstimator.from_paths([db], WEIGHTS_DIR, KnownModelConfig(min_detection_score=0.0,
                                                                                refine_iterations=3), backend="torch")
    (a,), (b,) = est.estimate(frame), ref.estimate(frame)
    angle = np.degrees(np.arccos(np.clip((np.trace(a.R.T @ b.R) - 1) / 2, -1, 1)))
    assert angle < 0.5 and np.linalg.norm(a.t - b.t) < 2e-3


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_dynamic_patch_backbone_engines_match_torch_at_their_sizes(tmp_path, precision, tol):
    """The patch backbone's two engines (one ONNX graph, two profiles): the whole image at the
    feature scales' sizes (0.25, 0.5, 1.0 and 1.59 of 640x480, none a multiple of 16 but 1.0)
    and the refiner's and verifier's crop pairs (448 and 224 px). Relative error of the whole
    feature map as for the encoder above, and every patch's cosine with torch's (the features
    are unit vectors the pipeline compares by cosine): within 1e-3 in fp32, 2e-2 in fp16."""
    import copy

    from sixd_pose_ros.engines.backends import TorchRunner, make_backend
    from sixd_pose_ros.features.efficientnet import load_patch_backbone
    from sixd_pose_ros.pipeline.feature_detection import image_backbone_spec, image_scales, scaled_size
    from sixd_pose_ros.pipeline.feature_refinement import crop_pair_spec

    backbone = copy.deepcopy(load_patch_backbone())  # the cached CPU one stays on the CPU
    scales = image_scales(0.25, 1.6)
    image = image_backbone_spec(backbone, (640, 480), scales)
    crops = crop_pair_spec(backbone, (448, 224), 448)
    backend = make_backend("tensorrt", "cuda", precision, cache=tmp_path)
    # A copy on the GPU: the specs' module stays on the CPU, where the export traces it.
    reference = TorchRunner(copy.deepcopy(image.module), torch.device("cuda"))
    gen = torch.Generator(device="cuda").manual_seed(0)
    sizes = [scaled_size((640, 480), s) for s in (scales[0], 0.5, 1.0, scales[-1])]
    cases = [(image, [(1, 3, h, w) for w, h in sizes]),
             (crops, [(2, 3, 448, 448), (2, 3, 224, 224), (1, 3, 448, 448)])]
    for spec, shapes in cases:
        runner = backend.runner(spec)
        assert runner.backend == "tensorrt" and spec.cache_name in backend.build_seconds
        for shape in shapes:
            x = torch.rand(shape, device="cuda", generator=gen)
            (got,), (want,) = runner(x), reference(x)
            assert got.is_cuda and got.shape == want.shape == (shape[0], 112, -(-shape[2] // 16), -(-shape[3] // 16))
            cosine = float((got.float() * want).sum(1).min())
            err = _relative(got, want)
            assert err < tol and 1.0 - cosine < tol, (spec.cache_name, shape, err, cosine)
    assert len(list((tmp_path / "onnx").glob("patch_backbone_dynamic-*.onnx"))) == 1  # one export, two engines
    assert len(list((tmp_path / "tensorrt").glob("patch_backbone_dynamic-*.engine"))) == 2

"""One backend interface: choice by name, fallback order with warnings that name the fix, and
every bad-input path that runs without a GPU (missing tensorrt, unwritable or damaged cache,
a graph that cannot export, a runner out of memory)."""
from __future__ import annotations

import logging

import pytest
import torch
from conftest import has_cuda, torch_single_thread

from sixd_pose_ros.engines.backends import (
    CPU_AUTO_ORDER,
    BackendError,
    FallbackRunner,
    TorchRunner,
    fallback_chain,
    make_backend,
)
from sixd_pose_ros.engines.export import DynDim, NetworkSpec, TensorSpec, encoder_spec
from sixd_pose_ros.engines.tensorrt_engine import tensorrt_available
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_autoencoder

no_tensorrt = pytest.mark.skipif(tensorrt_available()[0], reason="checks the path without TensorRT")
cpu_only = pytest.mark.skipif(has_cuda(), reason="checks the CPU-only choice")


@pytest.fixture(autouse=True)
def one_thread():
    with torch_single_thread():
        yield


@pytest.fixture(scope="module")
def encoder():
    return encoder_spec(load_autoencoder(WEIGHTS_DIR / "autoencoder.pt"))


def test_names_and_orders():
    assert fallback_chain("tensorrt", True) == ("tensorrt", "onnxruntime", "torch")
    assert fallback_chain("onnxruntime", False) == ("onnxruntime", "torch")
    assert fallback_chain("torch", True) == ("torch",)
    assert fallback_chain("auto", True)[0] == "tensorrt"
    # On the CPU ONNX Runtime goes first (the pretrained backbone runs 2-3x faster there).
    assert fallback_chain("auto", False) == CPU_AUTO_ORDER == ("onnxruntime", "torch")
    with pytest.raises(BackendError, match="auto, tensorrt, onnxruntime, torch"):
        make_backend("tensorflow")
    with pytest.raises(BackendError, match="fp16"):
        make_backend("torch", precision="int3")


@no_tensorrt
def test_tensorrt_without_the_module_falls_back_to_onnxruntime_naming_the_fix(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        backend = make_backend("tensorrt", cache=tmp_path)
    assert backend.name == "onnxruntime" and backend.chain == ("onnxruntime", "torch")
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "tensorrt is unavailable" in warning and ("pip install tensorrt" in warning or "CUDA" in warning)
    assert "using onnxruntime" in warning


@cpu_only
def test_auto_on_a_cpu_is_onnxruntime_quietly_whatever_the_threads(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with caplog.at_level(logging.WARNING):
        single = make_backend("auto", cache=tmp_path)  # the fixture runs torch on one thread
        torch.set_num_threads(2)
        several = make_backend("auto", cache=tmp_path)
    assert single.name == several.name == "onnxruntime" and several.device.type == "cpu"
    assert single.chain == ("onnxruntime", "torch")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no GPU is not a fault


def test_unwritable_cache_keeps_exports_in_memory(tmp_path, caplog, encoder):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING):
        backend = make_backend("onnxruntime", cache=blocker / "cache")
    assert backend.cache is None and "SIXD_POSE_CACHE" in caplog.text
    runner = backend.runner(encoder)
    assert runner.backend == "onnxruntime"
    crops = torch.rand(2, 3, 128, 128)
    z_o, z_p = runner(crops)
    want = TorchRunner(encoder.module, torch.device("cpu"))(crops)
    assert torch.allclose(z_p, want[1], atol=1e-4) and torch.allclose(z_o, want[0], atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written anywhere


def test_truncated_cached_graph_is_detected_and_re_exported(tmp_path, caplog, encoder):
    backend = make_backend("onnxruntime", cache=tmp_path)
    backend.runner(encoder)
    (onnx_file,) = (tmp_path / "onnx").glob("encoder-*.onnx")
    good = onnx_file.read_bytes()
    onnx_file.write_bytes(good[: len(good) // 3])  # a copy cut short
    with caplog.at_level(logging.WARNING):
        runner = make_backend("onnxruntime", cache=tmp_path).runner(encoder)
    assert "unusable" in caplog.text and runner.backend == "onnxruntime"
    assert onnx_file.read_bytes() == good  # the same export again, complete
    crops = torch.rand(1, 3, 128, 128)
    assert torch.allclose(runner(crops)[1], TorchRunner(encoder.module, torch.device("cpu"))(crops)[1], atol=1e-4)


class _DataDependent(torch.nn.Module):
    """Python control flow on a tensor's value: runs in torch, cannot be exported as a graph."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x * 2,) if float(x.sum()) > 0 else (x - 1,)


def test_a_graph_that_cannot_export_runs_on_the_next_backend(tmp_path, caplog):
    spec = NetworkSpec("odd", _DataDependent(), (TensorSpec("x", ("batch", 4)),), ("y",),
                       {"batch": DynDim(1, 1, 4)}, identity="odd")
    backend = make_backend("onnxruntime", cache=tmp_path)
    with caplog.at_level(logging.WARNING):
        runner = backend.runner(spec)
    assert runner.backend == "torch" and backend.used["odd"] == "torch"
    assert "falling back to torch" in caplog.text and "odd" in backend.missing
    assert torch.equal(runner(torch.ones(2, 4))[0], torch.full((2, 4), 2.0))


class _OutOfMemory:
    """A runner whose device is full (what a CUDA runner raises when another process took the
    GPU's memory; there is no GPU here to fill)."""

    backend = "tensorrt"
    device = torch.device("cpu")
    calls = 0

    def __call__(self, *inputs):
        self.calls += 1
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_switches_once_to_the_next_backend(caplog, encoder):
    made = []

    def torch_runner():
        made.append(1)
        return TorchRunner(encoder.module, torch.device("cpu"))

    failing = _OutOfMemory()
    runner = FallbackRunner("encoder", failing, [torch_runner])
    crops = torch.rand(1, 3, 128, 128)
    with caplog.at_level(logging.WARNING):
        first = runner(crops)
        second = runner(crops)
    assert failing.calls == 1 and len(made) == 1  # no retry loop on the failed backend
    assert runner.backend == "torch" and torch.equal(first[1], second[1])
    assert "out of memory" in caplog.text and "switching to torch" in caplog.text
    with pytest.raises(RuntimeError, match="shape|size"):  # bad input is not a resource error: it propagates
        runner(torch.rand(1, 3, 7))
    last = FallbackRunner("encoder", _OutOfMemory(), [])
    with pytest.raises(torch.cuda.OutOfMemoryError):  # nothing left to fall back to
        last(crops)


def test_torch_backend_touches_no_cache(tmp_path, encoder):
    backend = make_backend("torch", cache=tmp_path / "cache")
    out = backend.runner(encoder)(torch.rand(1, 3, 128, 128))
    assert out[1].shape == (1, 128) and not (tmp_path / "cache").exists()

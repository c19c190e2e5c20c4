"""One interface over three inference backends: ``tensorrt``, ``onnxruntime`` and ``torch``.

An estimator asks :func:`make_backend` for a backend by name (``auto`` picks the best one that
works here) and then :meth:`InferenceBackend.runner` for a :class:`Runner` per graph (a
:class:`~sixd_pose_ros.engines.export.NetworkSpec`). Every runner has the same contract:
``runner(*inputs) -> tuple of outputs``, torch tensors in and out, outputs on the backend's
device, the same numbers as the torch module up to the backend's precision.

**Fallback.** Backends are tried in a fixed order and the first one that works is used; each
step down logs a warning that names what was missing and how to fix it:

- ``tensorrt`` -> ``onnxruntime`` -> ``torch``;
- ``onnxruntime`` -> ``torch``;
- ``auto`` = ``tensorrt`` -> ``onnxruntime`` -> ``torch`` when a CUDA device is visible, and
  ``onnxruntime`` -> ``torch`` on the CPU: since every per-frame network (above all the frozen
  pretrained backbone on the whole image and on crop pairs) runs through the backend, ONNX
  Runtime is the faster one (``sixd-pose bench``, side by side, 2 threads, 640x480, 1 object:
  full estimation 879 vs 1782 ms, the whole-image encode 287 vs 912 ms; on 1 thread 680 vs
  946 ms; ``docs/reports/bench_cpu_templates.json``). Before the pretrained stages, with the
  trained detector's correlation heads the slow part, torch was faster unless its OpenMP threads
  spin-waited against numba's, and the order depended on threads and ``OMP_WAIT_POLICY``.

The same order is used per graph: a graph whose export or engine build fails runs on the next
backend while the others stay where they are. At run time a runner that fails for lack of
resources (CUDA out of memory, an engine that refuses a shape) switches once, permanently, to
the next backend with a warning: a robot keeps running slower rather than failing every frame.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from sixd_pose_ros.engines.cache import CacheError, cache_dir, ensure_writable
from sixd_pose_ros.engines.export import ExportError, NetworkSpec, ensure_onnx
from sixd_pose_ros.engines.tensorrt_engine import (
    PRECISIONS,
    EngineExecutionError,
    TensorRTRunner,
    load_or_build_engine,
    tensorrt_available,
)
from sixd_pose_ros.errors import SixdPoseError

__all__ = [
    "BACKENDS",
    "CPU_AUTO_ORDER",
    "BackendError",
    "FallbackRunner",
    "InferenceBackend",
    "OnnxRuntimeRunner",
    "Runner",
    "TorchRunner",
    "fallback_chain",
    "make_backend",
    "onnxruntime_available",
]

LOG = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "onnxruntime", "torch")
GPU_AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")
CPU_AUTO_ORDER = ("onnxruntime", "torch")  # see the module docstring for the numbers


class BackendError(SixdPoseError):
    """A backend name or setting that cannot work; the message names the fix."""


class Runner(Protocol):
    """``runner(*inputs) -> outputs``: torch tensors in (any device), torch tensors out (on
    the runner's device), in the graph's input and output order."""

    backend: str
    device: torch.device

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


def onnxruntime_available() -> tuple[bool, str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return False, "the onnxruntime module is not installed (pip install onnxruntime)"
    return True, str(ort.__version__)


def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def fallback_chain(name: str, cuda: bool) -> tuple[str, ...]:
    """Backends to try, best first, for a requested ``name`` (see the module docstring)."""
    if name == "auto":
        return GPU_AUTO_ORDER if cuda else CPU_AUTO_ORDER
    if name not in BACKENDS:
        raise BackendError(f"unknown inference backend {name!r}: choose auto, {', '.join(BACKENDS)}")
    return BACKENDS[BACKENDS.index(name):]


# ------------------------------------------------------------------------------- runners
class TorchRunner:
    """The spec's torch module itself (the reference every other backend is tested against)."""

    backend = "torch"

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            out = self.module(*(x.to(self.device, torch.float32) for x in inputs))
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


class OnnxRuntimeRunner:
    """An ONNX Runtime session over the exported graph.

    On the CPU, inputs are handed over as numpy views of the torch tensors and the outputs are
    wrapped back without copies. With a CUDA device and ONNX Runtime's CUDA provider, inputs and
    outputs are bound to torch CUDA memory (IO binding): no host round trip.
    """

    backend = "onnxruntime"

    def __init__(self, model: bytes | str | Path, input_names: Sequence[str], output_names: Sequence[str],
                 device: torch.device, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.device = torch.device(device)
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)
        options = ort.SessionOptions()
        # Follow torch's thread setting, so one knob (torch.set_num_threads, the node's
        # parameter) governs both backends and tests can keep everything on one core.
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between calls: the pipeline runs numpy/OpenCV/numba work between graph
        # calls, and on a robot's few cores spinning ONNX Runtime threads would steal its time.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self._cuda = self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        if self._cuda:
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0}), "CPUExecutionProvider"]
        elif self.device.type != "cpu":
            self.device = torch.device("cpu")
        source = str(model) if isinstance(model, Path) else model
        self.session = ort.InferenceSession(source, options, providers=providers)
        got = tuple(i.name for i in self.session.get_inputs())
        if got != self.input_names:
            raise ExportError(f"ONNX graph inputs {got} differ from {self.input_names}: delete the cached "
                              f"file and rerun (it is re-exported)")

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self._cuda:
            return self._run_bound(inputs)
        feeds = {n: np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
                 for n, x in zip(self.input_names, inputs)}
        return tuple(torch.from_numpy(o) for o in self.session.run(list(self.output_names), feeds))

    def _run_bound(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        binding = self.session.io_binding()
        idx = self.device.index or 0
        keep = []
        for name, x in zip(self.input_names, inputs):
            x = x.to(self.device, torch.float32).contiguous()
            keep.append(x)
            binding.bind_input(name, "cuda", idx, np.float32, tuple(x.shape), x.data_ptr())
        for name in self.output_names:
            binding.bind_output(name, "cuda", idx)
        torch.cuda.current_stream(self.device).synchronize()  # ORT uses its own stream
        self.session.run_with_iobinding(binding)
        return tuple(torch.from_dlpack(o.to_dlpack()) if hasattr(o, "to_dlpack")
                     else torch.from_numpy(o.numpy()).to(self.device) for o in binding.get_outputs())


def _is_resource_error(exc: BaseException) -> bool:
    """Errors that another backend may not have: memory, an engine's limits. Other errors are
    bugs or bad input and propagate."""
    if isinstance(exc, (MemoryError, EngineExecutionError)):
        return True
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "failed to allocate" in text


class FallbackRunner:
    """A runner that, on its first resource error, switches for good to the next runner of a
    chain (built lazily) and repeats the call there; the warning names both and the reason.
    Without a next runner the error propagates."""

    def __init__(self, label: str, runner: Runner, fallbacks: Sequence[Callable[[], Runner]]) -> None:
        self.label = label
        self.runner = runner
        self._fallbacks = list(fallbacks)

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def device(self) -> torch.device:
        return self.runner.device

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        while True:
            try:
                return self.runner(*inputs)
            except Exception as exc:
                if not _is_resource_error(exc) or not self._fallbacks:
                    raise
                failed = self.runner
                self.runner = self._fallbacks.pop(0)()
                LOG.warning("%s on %s failed (%s: %s); switching to %s on %s for the rest of this run",
                            self.label, failed.backend, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
                            self.runner.backend, self.runner.device)


# ------------------------------------------------------------------------------- backend
@dataclass
class InferenceBackend:
    """A chosen backend: builds runners for graphs, falling back per graph when needed.

    Attributes:
        requested: the name asked for (``auto`` or a backend).
        chain: backends that are available here, best first (``name`` = ``chain[0]``).
        device: where runners put their outputs (``cuda`` for TensorRT).
        precision: TensorRT precision (``fp16`` or ``fp32``).
        cache: cache folder for ONNX files and engines, None to keep everything in memory.
        missing: backend -> why it is unavailable here, and graph -> why it fell back (the
            warnings' text).
        used: graph (cache name) -> backend that runs it.
    """

    requested: str
    chain: tuple[str, ...]
    device: torch.device
    precision: str = "fp16"
    cache: Path | None = None
    missing: dict[str, str] = field(default_factory=dict)
    used: dict[str, str] = field(default_factory=dict)
    build_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.chain[0]

    def describe(self) -> str:
        where = f"{self.device}" + (f" ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else "")
        extra = f", {self.precision}" if self.name == "tensorrt" else ""
        return f"{self.name} on {where}{extra}"

    def _device_for(self, backend: str) -> torch.device:
        if backend == "onnxruntime" and self.device.type == "cuda" and not _ort_has_cuda():
            return torch.device("cpu")
        return self.device

    def make_runner(self, backend: str, spec: NetworkSpec) -> Runner:
        """A bare runner of ``spec`` on ``backend`` (no fallback): exports and builds as needed.
        Raises whatever the backend raises (what ``sixd-pose build-engines`` wants to show)."""
        device = self._device_for(backend)
        if backend == "torch":
            return TorchRunner(spec.module, device)
        art = ensure_onnx(spec, self.cache)
        if backend == "onnxruntime":
            return OnnxRuntimeRunner(art.path if art.path is not None else art.data, spec.input_names,
                                     spec.output_names, device)
        result = load_or_build_engine(art.data, art.sha256, spec.profile(), self.precision, self.cache,
                                      spec.cache_name, device)
        if result.built:
            self.build_seconds[spec.cache_name] = result.build_seconds
        return TensorRTRunner(result.engine, spec.input_names, spec.output_names, device, spec.cache_name)

    def runner(self, spec: NetworkSpec) -> Runner:
        """A runner for ``spec`` on the first backend of the chain that can build it, wrapped
        so that a resource error at run time moves it down the chain (see the module doc)."""
        errors = []
        for i, backend in enumerate(self.chain):
            try:
                runner = self.make_runner(backend, spec)
            except Exception as exc:  # noqa: BLE001  (any failure to build a runner: try the next backend)
                errors.append(f"{backend}: {type(exc).__name__}: {exc}")
                nxt = self.chain[i + 1] if i + 1 < len(self.chain) else None
                LOG.warning("%s cannot run on %s (%s)%s", spec.cache_name, backend, exc,
                            f"; falling back to {nxt}" if nxt else "")
                continue
            if errors:
                self.missing[spec.cache_name] = " | ".join(errors)
            self.used[spec.cache_name] = backend
            rest = [b for b in self.chain[i + 1:]]
            factories = [(lambda b=b: self.make_runner(b, spec)) for b in rest]
            if runner.device.type == "cuda":  # last resort for a GPU out of memory: the CPU
                factories.append(lambda: TorchRunner(spec.module, torch.device("cpu")))
            return FallbackRunner(spec.cache_name, runner, factories)
        raise BackendError(f"no backend can run {spec.cache_name}: " + " | ".join(errors))


def make_backend(name: str = "auto", device: str | torch.device | None = None, precision: str = "fp16",
                 cache: str | os.PathLike | None | bool = True) -> InferenceBackend:
    """Choose a backend (see the module docstring for the order and the warnings).

    Args:
        name: ``auto``, ``tensorrt``, ``onnxruntime`` or ``torch``.
        device: ``cuda``/``cpu``; default CUDA when visible.
        precision: TensorRT precision, ``fp16`` (default) or ``fp32``.
        cache: a folder, True for :func:`~sixd_pose_ros.engines.cache.cache_dir`, or False/None
            to keep exports in memory. An unwritable folder logs a warning naming the fix and
            keeps exports in memory.

    Raises:
        BackendError: an unknown name or precision, or no backend at all (torch always works,
            so only when torch itself is broken).
    """
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}: choose fp16 (default) or fp32")
    cuda = torch.cuda.is_available()
    dev = torch.device(device) if device is not None else torch.device("cuda" if cuda else "cpu")
    if dev.type == "cuda" and not cuda:
        LOG.warning("device %s was asked for but no CUDA device is visible; using the CPU", dev)
        dev = torch.device("cpu")
    chain = fallback_chain(name, dev.type == "cuda")
    missing = {}
    available = []
    for backend in chain:
        if backend == "tensorrt":
            ok, why = tensorrt_available()
            if ok and dev.type != "cuda":
                ok, why = False, "TensorRT runs on a CUDA device, and device cpu was asked for"
        elif backend == "onnxruntime":
            ok, why = onnxruntime_available()
            if ok and dev.type == "cuda" and not _ort_has_cuda():
                if name == "onnxruntime":  # asked for by name: run it, on the CPU
                    LOG.warning("onnxruntime has no CUDA provider here (pip install onnxruntime-gpu); its graphs "
                                "run on the CPU, with a copy to and from the GPU per call")
                else:  # a fallback on a GPU machine: torch on the GPU beats ONNX Runtime on the CPU
                    ok, why = False, "onnxruntime has no CUDA provider here (pip install onnxruntime-gpu)"
        else:
            ok, why = True, ""
        if ok:
            available.append(backend)
        else:
            missing[backend] = why
    if not available:
        raise BackendError(f"no inference backend works here: {missing}")
    folder = None
    if cache is not None and cache is not False:
        folder = cache_dir(None if cache is True else cache)
        if available[0] != "torch":
            try:
                ensure_writable(folder)
            except CacheError as exc:
                LOG.warning("%s; exports and engines are kept in memory for this run", exc)
                folder = None
    backend = InferenceBackend(name, tuple(available), dev, precision, folder, missing)
    skipped = [b for b in chain[:chain.index(available[0])]]
    for b in skipped:
        # Asked for by name, or auto on a GPU machine: a missing backend is worth a warning.
        # auto without a GPU is the normal CPU setup: info only.
        level = logging.INFO if (name == "auto" and dev.type == "cpu") else logging.WARNING
        LOG.log(level, "inference backend %s is unavailable: %s; using %s", b, missing[b], available[0])
    LOG.info("inference backend: %s (requested %s)", backend.describe(), name)
    return backend

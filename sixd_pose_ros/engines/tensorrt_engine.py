"""TensorRT engines: built from the exported ONNX graphs, cached per GPU, run on torch tensors.

**Cache key.** An engine is only valid for the GPU architecture, the TensorRT version, the
precision and the optimization profile it was built with, and for the exact graph. Its key is
the sha256 of all of these (:func:`engine_facts`): GPU name and compute capability, TensorRT
version, ``fp16``/``fp32``, the profile's ``(min, opt, max)`` shape of every input, and the
sha256 of the ONNX bytes. Change any of them (a new GPU, a TensorRT upgrade, other weights,
another image size) and the engine is rebuilt automatically, with a log line that says why and
a progress bar (TensorRT's ``IProgressMonitor``) while it builds, which takes tens of seconds
to minutes. An engine file copied from another GPU is caught twice: its key names another
GPU, and :func:`deserialize` refuses a file TensorRT cannot load (it is then rebuilt).

**Runtime.** :class:`TensorRTRunner` keeps one execution context per engine and runs it with
``execute_async_v3`` on the current torch CUDA stream: inputs are torch CUDA tensors whose
pointers are bound with ``set_tensor_address``, outputs are torch CUDA tensors allocated to the
shapes the context infers. Nothing goes through the host between stages. The context's
scratch memory is a torch allocation too (``USER_MANAGED``), so torch's peak-memory counter
sees it.

Only :func:`engine_facts`, :func:`engine_entry` and :func:`gpu_info` are used without TensorRT;
everything else needs ``import tensorrt`` and a CUDA device.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sixd_pose_ros.engines.cache import CacheEntry, CacheError, ensure_writable
from sixd_pose_ros.errors import SixdPoseError

__all__ = [
    "PRECISIONS",
    "EngineBuildError",
    "EngineExecutionError",
    "GpuInfo",
    "TensorRTRunner",
    "TensorRTUnavailable",
    "build_serialized_engine",
    "deserialize",
    "engine_entry",
    "engine_facts",
    "gpu_info",
    "load_or_build_engine",
    "tensorrt_available",
]

LOG = logging.getLogger(__name__)
PRECISIONS = ("fp16", "fp32")
ENGINE_FORMAT_VERSION = 1


class TensorRTUnavailable(SixdPoseError):
    """TensorRT cannot run here (no module, no CUDA device); the message names the fix."""


class EngineBuildError(SixdPoseError):
    """An engine could not be built or loaded; the message names the fix."""


class EngineExecutionError(SixdPoseError):
    """An engine failed at run time (out of memory, shape outside its profile)."""


@dataclass(frozen=True)
class GpuInfo:
    """What an engine is tied to: the device's name and compute capability ``(major, minor)``."""

    name: str
    compute_capability: tuple[int, int]

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


def gpu_info(device: torch.device | str | int = 0) -> GpuInfo:
    """The CUDA device's :class:`GpuInfo` (raises :class:`TensorRTUnavailable` without CUDA)."""
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA device is visible (torch.cuda.is_available() is False): TensorRT "
                                  "needs an NVIDIA GPU with its driver; use backend onnxruntime or torch")
    dev = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return GpuInfo(torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)))


def tensorrt_available() -> tuple[bool, str]:
    """``(True, version)`` when ``import tensorrt`` works and a CUDA device is visible, else
    ``(False, what is missing and how to fix it)``."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, ("the tensorrt Python module is not installed (pip install tensorrt, on a machine with "
                       "an NVIDIA GPU)")
    except Exception as exc:  # noqa: BLE001  (a broken install raises OSError and friends)
        return False, f"import tensorrt failed ({type(exc).__name__}: {exc}); reinstall tensorrt for this CUDA"
    if not torch.cuda.is_available():
        return False, ("no CUDA device is visible (torch.cuda.is_available() is False); TensorRT needs an "
                       "NVIDIA GPU and a CUDA build of torch")
    return True, str(trt.__version__)


def engine_facts(onnx_sha256: str, profile: dict[str, tuple], precision: str, gpu: GpuInfo,
                 tensorrt_version: str) -> dict[str, Any]:
    """The facts an engine depends on (its cache key, see the module docstring).

    Args:
        onnx_sha256: sha256 of the ONNX bytes the engine is built from.
        profile: ``{input: (min_shape, opt_shape, max_shape)}``.
        precision: ``"fp16"`` or ``"fp32"``.
        gpu: the device.
        tensorrt_version: ``tensorrt.__version__``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {"onnx_sha256": onnx_sha256, "precision": precision, "gpu": gpu.name,
            "compute_capability": list(gpu.compute_capability), "tensorrt": tensorrt_version,
            "profile": {k: [list(s) for s in v] for k, v in sorted(profile.items())},
            "engine_format": ENGINE_FORMAT_VERSION}


def engine_entry(folder: str | Path, name: str, facts: dict[str, Any]) -> CacheEntry:
    """Cache entry of an engine: ``<folder>/tensorrt/<name>-<sm>-<precision>-<key>.engine``."""
    cc = facts["compute_capability"]
    return CacheEntry.for_facts(Path(folder) / "tensorrt", f"{name}-sm{cc[0]}{cc[1]}-{facts['precision']}",
                                facts, "engine")


def _logger():
    import tensorrt as trt

    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        _TRT_LOGGER = trt.Logger(trt.Logger.WARNING)
    return _TRT_LOGGER


_TRT_LOGGER = None


def _progress_monitor(label: str):
    """A ``tensorrt.IProgressMonitor`` that shows the build's phases as tqdm bars (TensorRT
    >= 10; None on older versions, which then build silently after the log line)."""
    import tensorrt as trt
    from tqdm import tqdm

    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Monitor(trt.IProgressMonitor):
        # TensorRT calls these from its own threads: one lock around the bars.
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}
            self.lock = threading.Lock()

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self.lock:
                self.bars[phase_name] = tqdm(total=num_steps, desc=f"{label}: {phase_name}", leave=False,
                                             position=len(self.bars))

        def step_complete(self, phase_name, step):
            with self.lock:
                bar = self.bars.get(phase_name)
                if bar is not None:
                    bar.n = step + 1
                    bar.refresh()
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            with self.lock:
                bar = self.bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return _Monitor()


def build_serialized_engine(onnx_bytes: bytes, profile: dict[str, tuple], precision: str = "fp16",
                            workspace_bytes: int = 1 << 30, label: str = "engine") -> bytes:
    """Parse the ONNX graph and build a serialized engine with one optimization profile.

    FP16 sets ``BuilderFlag.FP16`` (inputs and outputs stay float32; TensorRT picks FP16
    kernels where they are faster and keeps FP32 where a layer needs it).

    Raises:
        EngineBuildError: the parser or the builder failed (the parser's errors are quoted).
    """
    import tensorrt as trt

    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse the {label} ONNX graph ({errors}); use backend onnxruntime")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision == "fp16":
        if not getattr(builder, "platform_has_fast_fp16", True):
            LOG.warning("this GPU has no fast FP16; building %s in FP16 anyway (slower than expected)", label)
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    for name, (mn, opt, mx) in profile.items():
        opt_profile.set_shape(name, tuple(mn), tuple(opt), tuple(mx))
    config.add_optimization_profile(opt_profile)
    monitor = _progress_monitor(label)
    if monitor is not None:
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build the {label} engine (see its log above); "
                               f"try --precision fp32 or backend onnxruntime")
    return bytes(serialized)


def deserialize(data: bytes, label: str = "engine"):
    """``ICudaEngine`` from bytes; :class:`EngineBuildError` when TensorRT refuses them (an
    engine built by another TensorRT version or for another GPU, a damaged file)."""
    global _TRT_RUNTIME
    import tensorrt as trt

    if _TRT_RUNTIME is None:  # one runtime for all engines; it must outlive them (module lifetime)
        _TRT_RUNTIME = trt.Runtime(_logger())
    engine = _TRT_RUNTIME.deserialize_cuda_engine(data)
    if engine is None:
        raise EngineBuildError(f"TensorRT cannot load the cached {label} engine (built for another GPU or "
                               f"TensorRT version, or damaged)")
    return engine


_TRT_RUNTIME = None


@dataclass
class EngineResult:
    engine: Any
    path: Path | None
    built: bool
    build_seconds: float


def load_or_build_engine(onnx_bytes: bytes, onnx_sha256: str, profile: dict[str, tuple], precision: str,
                         folder: str | Path | None, name: str, device: torch.device | str = "cuda") -> EngineResult:
    """The engine for these facts: loaded from the cache when intact, else built (and cached
    when ``folder`` is writable).

    A cached engine TensorRT cannot load is removed and rebuilt once. A build that failed
    before for the same key is not retried at every start (that would be a slow crash loop):
    :class:`EngineBuildError` names the file to delete to retry.
    """
    ok, version = tensorrt_available()
    if not ok:
        raise TensorRTUnavailable(version)
    gpu = gpu_info(device)
    facts = engine_facts(onnx_sha256, profile, precision, gpu, version)
    entry = engine_entry(folder, name, facts) if folder is not None else None
    if entry is not None:
        data = entry.load()
        if data is not None:
            try:
                return EngineResult(deserialize(data, name), entry.path, False, 0.0)
            except EngineBuildError as exc:
                LOG.warning("%s: removing %s and rebuilding", exc, entry.path)
                entry.remove()
        failed = entry.previous_failure()
        if failed:
            raise EngineBuildError(f"building the {name} engine failed before with this exact key ({failed}); "
                                   f"delete {entry.failure_path} to retry")
        stale = entry.siblings()
        why = (f"the key changed (GPU, TensorRT version, precision, shapes or weights) since {stale[0].name}"
               if stale else "no cached engine for this GPU/precision/shapes yet")
        LOG.warning("building TensorRT engine %s (%s, %s, %s): %s; this takes a while, once",
                    name, gpu.name, gpu.sm, precision, why)
    t0 = time.perf_counter()
    try:
        data = build_serialized_engine(onnx_bytes, profile, precision, label=name)
    except EngineBuildError as exc:
        if entry is not None:
            entry.record_failure(str(exc))
        raise
    seconds = time.perf_counter() - t0
    path = None
    if entry is not None:
        try:
            ensure_writable(entry.folder)
            path = entry.store(data, facts, build_seconds=round(seconds, 2))
        except CacheError as exc:
            LOG.warning("%s; the %s engine is used without caching (rebuilt at every start)", exc, name)
    LOG.warning("built TensorRT engine %s in %.1f s%s", name, seconds, f" -> {path}" if path else "")
    return EngineResult(deserialize(data, name), path, True, seconds)


_TORCH_DTYPES = None


def _torch_dtype(trt_dtype) -> torch.dtype:
    import tensorrt as trt

    global _TORCH_DTYPES
    if _TORCH_DTYPES is None:
        pairs = (("float32", torch.float32), ("float16", torch.float16), ("int32", torch.int32),
                 ("int64", torch.int64), ("bool", torch.bool), ("int8", torch.int8))
        _TORCH_DTYPES = {getattr(trt, n): t for n, t in pairs if hasattr(trt, n)}
    return _TORCH_DTYPES[trt_dtype]


class TensorRTRunner:
    """Runs one engine on torch CUDA tensors: ``runner(*inputs) -> tuple of outputs``.

    Inputs are made contiguous and cast to the engine's input dtype on the device (no copy when
    they already are); outputs are fresh torch CUDA tensors. Work is queued on torch's current
    CUDA stream, so it orders with the torch ops before and after it without a sync.
    """

    backend = "tensorrt"

    def __init__(self, engine, input_names: tuple[str, ...], output_names: tuple[str, ...],
                 device: torch.device | str = "cuda", label: str = "engine") -> None:
        import tensorrt as trt

        self.engine, self.label = engine, label
        self.device = torch.device(device)
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        missing = [n for n in self.input_names + self.output_names if n not in names]
        if missing:
            raise EngineBuildError(f"the {label} engine has no tensors {missing} (it has {names}): rebuild it")
        self._dtypes = {n: _torch_dtype(engine.get_tensor_dtype(n)) for n in names}
        self._scratch = None
        try:  # scratch memory from torch's allocator: counted in torch's memory statistics
            self.context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            size = int(getattr(engine, "device_memory_size_v2", engine.device_memory_size))
            self._scratch = torch.empty(max(size, 1), dtype=torch.uint8, device=self.device)
            self.context.device_memory = self._scratch.data_ptr()
        except (AttributeError, TypeError):
            self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineExecutionError(f"cannot create an execution context for {label}: out of GPU memory?")

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx = self.context
        keep = []
        for name, x in zip(self.input_names, inputs):
            x = x.to(device=self.device, dtype=self._dtypes[name]).contiguous()
            keep.append(x)
            if not ctx.set_input_shape(name, tuple(x.shape)):
                raise EngineExecutionError(f"input {name} of shape {tuple(x.shape)} is outside the {self.label} "
                                           f"engine's profile: rebuild it with `sixd-pose build-engines --image W H`")
            ctx.set_tensor_address(name, x.data_ptr())
        outputs = []
        for name in self.output_names:
            shape = tuple(ctx.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            ctx.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise EngineExecutionError(f"TensorRT failed to run the {self.label} engine (see its log)")
        for x in keep:  # inputs must live until the queued work has read them
            x.record_stream(stream)
        return tuple(o.float() if o.dtype == torch.float16 else o for o in outputs)

    @property
    def device_memory_bytes(self) -> int:
        return int(self._scratch.numel()) if self._scratch is not None else 0

"""`sixd-pose bench`: end-to-end and per-stage latency of the known-model estimator per backend.

What is timed is the estimator the node runs (``KnownModelEstimator.estimate``), on a rendered
640x480 RGB-D frame of procedural held-out objects (the ``bench-v1`` objects, never trained on),
for three workloads:

- ``full``: every object detected from scratch (detector + codebook retrieval + the configured
  refinement iterations + depth alignment);
- ``full_3iter``: the same with 3 refinement iterations (the issue's "full estimation");
- ``tracking``: every object tracked from its previous pose (refiner iterations as configured,
  then depth alignment); tracks are seeded with the true pose before each timed frame, so the
  number measures the tracking step itself, whatever the detector's accuracy.

The detection threshold is 0 so that every object runs every stage (worst case). Per stage the
times of all objects of a frame are summed (``detect`` is the correlation heads of all objects,
``backbone`` the shared feature pass: the trained detector's pyramid, or with
``feature_detection="always"`` the pretrained backbone over the image at every feature scale;
``verify`` the render-and-compare of the leading hypotheses, two backbone passes each).
Several backends in one call are measured *side by side*: each repetition runs every backend in
turn, so a machine whose load changes (CI, a robot doing other work) shifts all of them alike.

Object databases are built once and cached under the engine cache folder
(``bench_objects/``), keyed by the encoder weights; the ``coarse`` codebook (642 x 36) is the
CPU default, ``full`` (2562 x 36) the GPU one, ``tiny`` (42 x 4) is for tests only.

On the CPU, mind ``OMP_WAIT_POLICY``: without ``PASSIVE``, torch's OpenMP threads and numba's
(the depth alignment's renderer, another OpenMP runtime in the same process) spin against each
other and multi-threaded torch runs ~10x slower (engines/backends.py has the numbers); the
report's ``device`` and ``threads`` fields say what was measured.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sixd_pose_ros.engines.backends import InferenceBackend, make_backend
from sixd_pose_ros.engines.cache import cache_dir
from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.io import atomic_write_text
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, weights_identity
from sixd_pose_ros.pipeline.tracking import TrackerConfig
from sixd_pose_ros.pipeline.types import Frame, ObjectPose

__all__ = ["CODEBOOKS", "bench_objects", "bench_scene", "format_table", "run_bench", "summarize"]

LOG = logging.getLogger(__name__)

#: Codebook grid per name: (icosphere subdivisions, in-plane angles).
CODEBOOKS = {"full": (4, 36), "coarse": (3, 36), "tiny": (1, 4)}
STAGES = ("backbone", "detect", "retrieve", "refine", "depth", "verify", "track")
K_BENCH = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])


def bench_objects(n: int, weights: Path = WEIGHTS_DIR, codebook: str = "coarse",
                  folder: Path | None = None, progress: bool = True) -> list[Path]:
    """Object databases of the first ``n`` held-out benchmark objects (built once, cached)."""
    from sixd_pose_ros.models.checkpoint import load_autoencoder
    from sixd_pose_ros.objects.codebook import as_encoder
    from sixd_pose_ros.objects.database import build_object_database
    from sixd_pose_ros.render.procedural import heldout_benchmark_ids, make_object

    if codebook not in CODEBOOKS:
        raise SixdPoseError(f"unknown codebook {codebook!r}: choose {', '.join(CODEBOOKS)}")
    encoder_id = weights_identity(Path(weights) / "autoencoder.pt")
    folder = Path(folder) if folder is not None else cache_dir() / "bench_objects" / f"{codebook}-{encoder_id[:12]}"
    sub, n_inplane = CODEBOOKS[codebook]
    paths, encoder = [], None
    for i in heldout_benchmark_ids(n):
        name = f"heldout_{i:03d}"
        path = folder / name
        if not (path / "object.json").is_file():
            if encoder is None:
                device = "cuda" if torch.cuda.is_available() else "cpu"
                encoder = as_encoder(load_autoencoder(Path(weights) / "autoencoder.pt", device))
            LOG.warning("building bench object %s (%s codebook, once) in %s", name, codebook, folder)
            mesh_file = folder / f"{name}.ply"
            folder.mkdir(parents=True, exist_ok=True)
            make_object("heldout", i).mesh.export(mesh_file)
            build_object_database(mesh_file, name, folder, unit="m", encoder=encoder, encoder_id=encoder_id,
                                  progress=progress, subdivisions=sub, n_inplane=n_inplane, overwrite=True)
        paths.append(path)
    return paths


def bench_scene(n: int, width: int = 640, height: int = 480, seed: int = 0):
    """One rendered RGB-D frame of the first ``n`` held-out objects side by side, seeded rotations. Returns ``(rgb (H, W, 3) uint8, depth (H, W) m, K, [(name, R, t)])``."""
    from sixd_pose_ros.geometry.rotations import matrix_from_axis_angle
    from sixd_pose_ros.render.procedural import heldout_benchmark_ids, make_object
    from sixd_pose_ros.render.renderer import RenderMesh, render

    rng = np.random.default_rng(seed)
    K = K_BENCH.copy()
    K[0, 2], K[1, 2] = (width - 1) / 2, (height - 1) / 2
    objs = [make_object("heldout", i) for i in heldout_benchmark_ids(n)]
    # One object at 0.8 m; several on a row at 1.1 m, 0.22 m apart (objects are 5-30 cm).
    z = 0.8 if n == 1 else 1.1
    xs = (np.arange(n) - (n - 1) / 2) * 0.22
    poses = []
    for i, (obj, x) in enumerate(zip(objs, xs)):
        axis = rng.normal(size=3)
        R = matrix_from_axis_angle(axis / np.linalg.norm(axis), rng.uniform(0, np.pi))
        center = np.asarray(obj.mesh.vertices).mean(axis=0)
        t = np.array([x, 0.03 * (-1) ** i, z]) - R @ center
        poses.append((f"heldout_{i:03d}", R, t))
    out = render([RenderMesh.from_trimesh(o.mesh) for o in objs], np.stack([p[1] for p in poses]),
                 np.stack([p[2] for p in poses]), K, width, height)
    return out.rgb[0], out.depth[0], K, poses


def _stage_of(key: str) -> str | None:
    name = key.rsplit("/", 1)[-1]
    return name if name in STAGES else None


def _frame_stages(poses: list[ObjectPose]) -> dict[str, float]:
    """Stage -> ms summed over the frame's objects (each pose carries the frame's timings so far;
    the last one has them all)."""
    if not poses:
        return {}
    sums: dict[str, float] = {}
    for key, ms in poses[-1].stage_ms.items():
        stage = _stage_of(key)
        if stage is not None:
            sums[stage] = sums.get(stage, 0.0) + float(ms)
    return sums


def summarize(times_ms: Sequence[float]) -> dict[str, float]:
    """``{"median", "p90", "mean", "rate_hz"}`` of a list of latencies (ms)."""
    a = np.asarray(times_ms, dtype=np.float64)
    med = float(np.median(a))
    return {"median": med, "p90": float(np.percentile(a, 90)), "mean": float(a.mean()),
            "rate_hz": 1000.0 / med if med > 0 else float("inf"), "n": int(a.size)}


class _Workload:
    """One backend's estimators and what they measured."""

    def __init__(self, backend: InferenceBackend, objects: list[Path], weights: Path, refine_iterations: int,
                 feature_detection: str | None = None) -> None:
        from sixd_pose_ros.pipeline.known_model import (
            KnownModelConfig,
            KnownModelEstimator,
        )

        base = KnownModelConfig(min_detection_score=0.0, refine_iterations=refine_iterations,
                                backend=backend.requested, precision=backend.precision)
        if feature_detection is not None:
            base = replace(base, feature_detection=feature_detection)
        self.feature_detection = base.feature_detection
        t0 = time.perf_counter()
        self.full = KnownModelEstimator.from_paths(objects, weights, base, backend=backend)
        self.load_s = time.perf_counter() - t0
        # The others share the loaded networks and databases: only the settings differ.
        self.full3 = _sibling(self.full, replace(base, refine_iterations=3))
        self.track = _sibling(self.full, replace(base, tracking=TrackerConfig(enabled=True)))
        self.backend = backend
        self.times: dict[str, list[float]] = {"full": [], "full_3iter": [], "tracking": []}
        self.stages: dict[str, dict[str, list[float]]] = {k: {} for k in self.times}
        self.tracked_fraction: list[float] = []

    def _record(self, kind: str, ms: float, poses: list[ObjectPose]) -> None:
        self.times[kind].append(ms)
        for stage, v in _frame_stages(poses).items():
            self.stages[kind].setdefault(stage, []).append(v)

    def step(self, frame_args: tuple, truth: list, stamp_ns: int, timed: bool, threads: int) -> None:
        rgb, depth, K = frame_args
        cuda = self.backend.device.type == "cuda"

        def sync() -> None:
            # numba's renderer (depth alignment) resets the OpenMP thread count torch reads, so
            # the setting is restored before every frame; CUDA work is finished before a clock.
            torch.set_num_threads(threads)
            if cuda:
                torch.cuda.synchronize()

        for kind, est in (("full", self.full), ("full_3iter", self.full3)):
            frame = Frame(rgb, K, depth, stamp_ns=stamp_ns)
            sync()
            t0 = time.perf_counter()
            poses = est.estimate(frame)
            sync()
            if timed:
                self._record(kind, 1000 * (time.perf_counter() - t0), poses)
        est = self.track
        est.reset_tracking()
        epoch = est.tracker.epoch
        for name, R, t in truth:  # seed every track with the true pose (see the module docstring)
            seed = ObjectPose(name, R, t, 1.0, np.zeros(4), health=1.0)
            est.tracker.update(name, seed, 1.0, stamp_ns, epoch=epoch)
        frame = Frame(rgb, K, depth, stamp_ns=stamp_ns + 33_000_000)
        sync()
        t0 = time.perf_counter()
        poses = est.estimate(frame)
        sync()
        if timed:
            self._record("tracking", 1000 * (time.perf_counter() - t0), poses)
            self.tracked_fraction.append(sum(p.tracked for p in poses) / max(1, len(truth)))


def _sibling(est, config):
    """An estimator sharing ``est``'s networks, runners and databases, with another config."""
    import copy

    from sixd_pose_ros.pipeline.tracking import Tracker

    other = copy.copy(est)
    other.config = config
    other.tracker = Tracker(config.tracking)
    return other


def _device_name(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    return f"cpu: {platform.processor() or platform.machine()}, {threads} threads"


def run_bench(backends: Sequence[str] = ("auto",), objects: Sequence[int] = (1,), image: tuple[int, int] = (640, 480),
              repeats: int = 10, refine_iterations: int | None = None, codebook: str | None = None,
              weights: Path = WEIGHTS_DIR, precision: str = "fp16", threads: int | None = None,
              out: Path | None = None, progress: bool = True, feature_detection: str | None = None) -> list[dict]:
    """Measure every (backend, object count) pair; returns one report per pair (see the module
    docstring) and writes them to ``out`` (one dict for one pair, else ``{"runs": [...]}``).

    Args:
        refine_iterations: refinement iterations of the ``full`` workload; default the
            estimator's default (KnownModelConfig.refine_iterations).
        codebook: ``coarse``/``full``/``tiny``; default ``full`` with a GPU, else ``coarse``.
        threads: torch (and ONNX Runtime) CPU threads; default torch's.
        feature_detection: ``KnownModelConfig.feature_detection`` (``always``: the pretrained
            backbone over the whole image at every feature scale, what the ``backbone`` stage
            then times); default the estimator's.
    """
    from sixd_pose_ros.pipeline.known_model import KnownModelConfig

    if repeats < 1:
        raise SixdPoseError(f"--repeats must be at least 1, got {repeats}")
    threads = int(threads or torch.get_num_threads())
    torch.set_num_threads(threads)
    iters = KnownModelConfig().refine_iterations if refine_iterations is None else int(refine_iterations)
    codebook = codebook or ("full" if torch.cuda.is_available() else "coarse")
    weights = Path(weights)
    reports = []
    for n in objects:
        if n < 1:
            raise SixdPoseError(f"--objects must be at least 1, got {n}")
        paths = bench_objects(n, weights, codebook, progress=progress)
        rgb, depth, K, truth = bench_scene(n, *image)
        torch.set_num_threads(threads)  # before the sessions are made: ONNX Runtime copies it
        loads = []
        for name in backends:
            backend = make_backend(name, precision=precision)
            loads.append(_Workload(backend, paths, weights, iters, feature_detection))
        if backend.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        stamp = 1_700_000_000_000_000_000
        for r in range(repeats + 1):  # the first round warms up (allocations, lazy init)
            for w in loads:
                stamp += 100_000_000
                w.step((rgb, depth, K), truth, stamp, r > 0, threads)
        for w in loads:
            b = w.backend
            mem = None
            if b.device.type == "cuda":
                mem = torch.cuda.max_memory_allocated(b.device) / 2**20
            report = {
                "backend": b.name, "requested": b.requested, "device": _device_name(b.device, threads),
                "image": [int(image[0]), int(image[1])], "objects": int(n),
                "refine_iterations": iters, "codebook": codebook, "repeats": repeats,
                "feature_detection": w.feature_detection,
                "full_ms": summarize(w.times["full"]),
                "full_3iter_ms": summarize(w.times["full_3iter"]),
                "tracking_ms": summarize(w.times["tracking"]),
                "stages_ms": {s: summarize(v) for s, v in w.stages["full"].items()},
                "stages_3iter_ms": {s: summarize(v) for s, v in w.stages["full_3iter"].items()},
                "tracking_stages_ms": {s: summarize(v) for s, v in w.stages["tracking"].items()},
                "tracked_fraction": float(np.mean(w.tracked_fraction)) if w.tracked_fraction else 0.0,
                "gpu_mem_mb": mem, "graphs": dict(b.used), "load_s": round(w.load_s, 2),
                "engine_build_s": dict(b.build_seconds), "threads": threads,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "torch": torch.__version__,
            }
            reports.append(report)
    print(format_table(reports))
    if out is not None:
        payload = reports[0] if len(reports) == 1 else {"runs": reports}
        atomic_write_text(Path(out), json.dumps(payload, indent=1))
    return reports


def format_table(reports: Sequence[dict]) -> str:
    """A markdown table: one row per (backend, objects), medians and p90 in ms."""
    stages = [s for s in STAGES if any(s in r["stages_3iter_ms"] or s in r["stages_ms"] for r in reports)]
    head = ("| backend | objects | full ms (p90) | full 3 iter ms (p90) | tracking ms (p90) | "
            + " | ".join(f"{s} ms" for s in stages) + " | GPU MB |")
    rows = [head, "|" + "---|" * (6 + len(stages))]
    def cell(r: dict, key: str) -> str:
        return f"{r[key]['median']:.1f} ({r[key]['p90']:.1f})"

    for r in reports:
        st = r["stages_3iter_ms"]
        mem = "-" if r["gpu_mem_mb"] is None else f"{r['gpu_mem_mb']:.0f}"
        rows.append(f"| {r['backend']} | {r['objects']} | {cell(r, 'full_ms')} | {cell(r, 'full_3iter_ms')} | "
                    f"{cell(r, 'tracking_ms')} | "
                    + " | ".join(f"{st[s]['median']:.1f}" if s in st else "-" for s in stages) + f" | {mem} |")
    dev = reports[0]["device"] if reports else ""
    return "\n".join(rows) + f"\n({dev}; stages: the 3-iteration run, summed over objects)"

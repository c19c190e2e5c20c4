"""`sixd-pose build-engines`: export and build every graph ahead of time, with progress.

A robot should not spend its first minutes after boot building TensorRT engines, so this does
it beforehand, into the same cache the node reads (``$SIXD_POSE_CACHE`` or
``~/.cache/sixd_pose_ros/engines``): the pretrained backbone's graphs that the default estimator
runs (template crops, the whole image at every feature scale, the refiner's and verifier's crop
pairs; passed in by the CLI), the trained detector features, encoder and refiner graphs, plus the
correlation head of every object folder given (heads are per object: their reference kernels
are constants of the graph). Unlike the estimator, a backend asked for here does not fall back:
a failure is the message to show.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from sixd_pose_ros.engines.backends import make_backend
from sixd_pose_ros.engines.export import (
    NetworkSpec,
    detector_features_spec,
    detector_head_spec,
    encoder_spec,
    refiner_spec,
)
from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.models.checkpoint import (
    WEIGHTS_DIR,
    load_autoencoder,
    load_detector,
    load_refiner,
)

__all__ = ["build_engines", "engine_specs"]

LOG = logging.getLogger(__name__)


def engine_specs(weights: Path = WEIGHTS_DIR, image: tuple[int, int] = (640, 480),
                 object_dirs: Sequence[str | Path] = (), scales: Sequence[float] = (1.0, 0.5),
                 device: str | torch.device = "cpu") -> list[NetworkSpec]:
    """The graphs a known-model estimator with these weights, image size and objects runs."""
    weights = Path(weights)
    detector = load_detector(weights / "detector.pt", device)
    specs = [detector_features_spec(detector, image, scales),
             encoder_spec(load_autoencoder(weights / "autoencoder.pt", device))]
    if (weights / "refiner.pt").is_file():
        specs.append(refiner_spec(load_refiner(weights / "refiner.pt", device)))
    if object_dirs:
        from sixd_pose_ros.objects.database import load_object_database

        for path in object_dirs:
            db = load_object_database(path)
            images = torch.from_numpy(db.references.images).to(device).permute(0, 3, 1, 2).float() / 255.0
            with torch.no_grad():
                refs = detector.encode_references(images)
            specs.append(detector_head_spec(detector, refs.kernels, db.name, image, scales))
    return specs


def build_engines(backend: str = "tensorrt", precision: str = "fp16", image: tuple[int, int] = (640, 480),
                  weights: Path = WEIGHTS_DIR, object_dirs: Sequence[str | Path] = (),
                  cache: str | Path | None = None, progress: bool = True,
                  extra_specs: Sequence[NetworkSpec] = ()) -> list[dict]:
    """Export (``onnxruntime``) or export and build (``tensorrt``) every graph into the cache.

    ``extra_specs``: graphs the caller knows the estimator runs besides the trained networks
    (the CLI passes the pretrained backbone's, ``pipeline.known_model.pretrained_feature_specs``:
    this package's lower layers do not import the pipeline).

    Returns one row per graph: name, backend, seconds, and whether it was already cached.

    Raises:
        SixdPoseError: the backend is unavailable here (the message names the fix), or a graph
            fails to export or build.
    """
    if backend not in ("tensorrt", "onnxruntime"):
        raise SixdPoseError(f"build-engines builds tensorrt or onnxruntime graphs, not {backend!r}")
    chosen = make_backend(backend, precision=precision, cache=cache if cache is not None else True)
    if chosen.name != backend:
        raise SixdPoseError(f"cannot build {backend} engines here: {chosen.missing.get(backend, 'unavailable')}")
    if chosen.cache is None:
        raise SixdPoseError("the engine cache folder is not writable, so nothing built now would be kept: set "
                            "SIXD_POSE_CACHE to a writable folder")
    specs = engine_specs(weights, image, object_dirs, device=chosen.device) + list(extra_specs)
    if not object_dirs:
        LOG.warning("no --objects given: detector heads are per object and are built when the node loads "
                    "each object (pass --objects objects/NAME ... to build them now)")
    rows = []
    bar = tqdm(specs, desc=f"build {backend} ({precision})" if backend == "tensorrt" else "export onnx",
               unit="graph", disable=not progress)
    for spec in bar:
        bar.set_postfix_str(spec.cache_name)
        t0 = time.perf_counter()
        try:
            chosen.make_runner(backend, spec)
        except SixdPoseError:
            raise
        except Exception as exc:  # TensorRT and ONNX Runtime raise their own types
            raise SixdPoseError(f"building {spec.cache_name} with {backend} failed ({type(exc).__name__}: {exc})") \
                from exc
        seconds = time.perf_counter() - t0
        built = chosen.build_seconds.get(spec.cache_name)
        rows.append({"graph": spec.cache_name, "backend": backend, "seconds": round(seconds, 2),
                     "engine_build_s": built, "precision": precision if backend == "tensorrt" else None})
    bar.close()
    print(f"cache: {chosen.cache}")
    for r in rows:
        extra = f", engine built in {r['engine_build_s']:.1f} s" if r["engine_build_s"] else ""
        print(f"  {r['graph']:32s} {r['backend']:12s} {r['seconds']:7.2f} s{extra}")
    return rows

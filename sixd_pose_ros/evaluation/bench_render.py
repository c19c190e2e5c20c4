"""Renderer and synthesizer throughput, printed and written as JSON.

Numbers are rates measured in this process on this machine; compare them side by side, not
across machines.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import trimesh

from sixd_pose_ros.geometry.rotations import random_rotations
from sixd_pose_ros.render.renderer import RenderMesh, render


def benchmark_mesh() -> trimesh.Trimesh:
    """A 10,368-face vertex-coloured capsule: the '10k-face mesh' of the render goal."""
    mesh = trimesh.creation.capsule(radius=0.05, height=0.1, count=[71, 71])
    rng = np.random.default_rng(0)
    mesh.visual.vertex_colors = rng.integers(0, 256, (len(mesh.vertices), 4), dtype=np.uint8)
    return mesh


def _rate(fn, items_per_call: int, min_seconds: float) -> dict:
    fn()  # warm-up (numba compiles or loads its cache on first use)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    per_call = float(np.median(times))
    return {"items_per_s": items_per_call / per_call, "ms_per_item": 1000 * per_call / items_per_call,
            "calls": len(times)}


def bench_render(backend: str = "numba", min_seconds: float = 3.0, batch_small: int = 64,
                 batch_large: int = 4) -> dict:
    """Images/s of the 10k-face mesh at 128x128 (codebook crops) and 640x480 (full frames)."""
    mesh = RenderMesh.from_trimesh(benchmark_mesh())
    results = {}
    for (w, h), batch in (((128, 128), batch_small), ((640, 480), batch_large)):
        K = np.array([[1.2 * w, 0, w / 2], [0, 1.2 * w, h / 2], [0, 0, 1.0]])
        R = random_rotations(batch, 0)
        t = np.tile([0.0, 0.0, 0.35], (batch, 1))  # the object fills about half the image
        results[f"{w}x{h}"] = _rate(lambda: render([mesh], R, t, K, w, h, backend=backend), batch,
                                    min_seconds) | {"batch": batch}
    return results


def bench_synth(n_frames: int = 10, n_objects: int = 5) -> dict:
    """Synthetic 640x480 frames/s with n_objects annotated objects (+2 distractors), all
    stages included (render, full masks, background, depth noise, colour jitter)."""
    from sixd_pose_ros.render.procedural import make_object
    from sixd_pose_ros.training.scenes import compose_scene, scene_object

    targets = [scene_object(i + 1, make_object("heldout", i).mesh) for i in range(n_objects)]
    distractors = [scene_object(0, make_object("heldout", 1_000_000 + i).mesh) for i in range(2)]
    rng = np.random.default_rng(0)
    compose_scene(targets, distractors, 1, rng)  # warm-up
    t0 = time.perf_counter()
    frames = compose_scene(targets, distractors, n_frames, rng)
    dt = time.perf_counter() - t0
    return {"frames_per_s": len(frames) / dt, "frames": len(frames), "objects": n_objects,
            "image": [640, 480]}


def run(out: Path | None, backend: str = "numba", min_seconds: float = 3.0) -> dict:
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "backend": backend,
        "mesh_faces": int(len(benchmark_mesh().faces)),
        "render": bench_render(backend, min_seconds),
        "synth": bench_synth(),
    }
    for size, r in report["render"].items():
        print(f"render {backend} {size}: {r['items_per_s']:.0f} images/s ({r['ms_per_item']:.2f} ms/image, "
              f"batch {r['batch']})")
    s = report["synth"]
    print(f"synth 640x480 with {s['objects']} objects: {s['frames_per_s']:.2f} frames/s")
    if out is not None:
        Path(out).write_text(json.dumps(report, indent=1))
        print(f"wrote {out}")
    return report

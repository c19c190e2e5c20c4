"""Held-out accuracy and CPU latency of the detector and the volume refiner.

`sixd-pose eval-stages` scores the (shipped or given) weights on held-out procedural objects
only, the same protocol the training runs end with, and prints a table; `sixd-pose bench-stages`
times each stage at 640x480. Both write JSON.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_detector, load_refiner
from sixd_pose_ros.models.detector import decode
from sixd_pose_ros.models.refiner import iterative_refine
from sixd_pose_ros.training.pose_samples import perturb_pose, pose_object
from sixd_pose_ros.training.train_detector import evaluate_detector, images_to_tensor
from sixd_pose_ros.training.train_refiner import _full_image, evaluate_refiner


def eval_stages(weights: Path = WEIGHTS_DIR, n_objects: int = 10, n_samples: int = 100, seed: int = 0,
                out: Path | None = None, progress: bool = True) -> dict:
    detector = load_detector(weights / "detector.pt")
    refiner = load_refiner(weights / "refiner.pt")
    report = {
        "weights": str(weights), "heldout_objects": n_objects, "seed": seed,
        "detector": evaluate_detector(detector, n_objects, n_samples, 32, seed, "cpu", progress=progress),
        "refiner": evaluate_refiner(refiner, n_objects, n_samples, 32, seed, "cpu", progress=progress),
    }
    print(format_table(report))
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    return report


def format_table(report: dict) -> str:
    d, r = report["detector"], report["refiner"]
    rows = [
        "| stage | metric | value |", "|---|---|---|",
        f"| detector | median centre error (px, 256x256 queries) | {d['median_center_error_px']:.1f} |",
        f"| detector | median relative scale error | {d['median_scale_error']:.3f} |",
        f"| detector | recall at IoU 0.5 | {d['recall_iou_0.5']:.3f} |",
    ]
    for key in ("add_0.1d_input", "add_0.1d_iter1", "add_0.1d_iter2", "add_0.1d_iter3"):
        rows.append(f"| refiner | ADD-0.1d {key.split('_')[-1]} | {r[key]:.3f} |")
    return "\n".join(rows) + f"\n({d['samples']} detector and {r['samples']} refiner samples on " \
                             f"{report['heldout_objects']} held-out objects)"


def _median_ms(fn, repeats: int) -> dict:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return {"median": float(np.median(times)), "p90": float(np.percentile(times, 90))}


@torch.no_grad()
def bench_stages(weights: Path = WEIGHTS_DIR, repeats: int = 10, threads: int = 0,
                 out: Path | None = None) -> dict:
    """CPU latency at 640x480: detector (32 references encoded beforehand) and one refiner
    iteration (crop + network + update), and 3 iterations."""
    if threads:
        torch.set_num_threads(threads)
    detector = load_detector(weights / "detector.pt")
    refiner = load_refiner(weights / "refiner.pt")
    obj = pose_object("heldout", 0, n_refs=32)
    rng = np.random.default_rng(0)
    K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1.0]])
    R_gt = np.eye(3)
    t_gt = np.array([0.3, -0.2, 8.0])
    image = _full_image(obj, R_gt, t_gt, K, rng)
    refs = detector.encode_references(images_to_tensor(obj.refs.images, "cpu"))
    feats = refiner.encode_references(images_to_tensor(obj.refs.images, "cpu")).numpy()

    def detect():
        out = detector(images_to_tensor(image[None], "cpu"), refs)
        return decode(out, image.shape[:2], detector.cfg.ref_size)

    def refs_near(R, t):
        idx = obj.refs.nearest(R, k=refiner.config.n_refs, t_query=t)
        return feats[idx], obj.refs.K[idx], obj.refs.R[idx], obj.refs.t[idx]

    R_in, t_in = perturb_pose(R_gt, t_gt, K, rng)
    report = {
        "image": [640, 480], "threads": torch.get_num_threads(), "references": 32,
        "detector_ms": _median_ms(detect, repeats),
        "refiner_iteration_ms": _median_ms(lambda: iterative_refine(refiner, image, K, R_in, t_in, refs_near, 1),
                                           repeats),
        "refiner_3_iterations_ms": _median_ms(
            lambda: iterative_refine(refiner, image, K, R_in, t_in, refs_near, 3), max(3, repeats // 3)),
        "encode_references_ms": {"detector": _median_ms(
            lambda: detector.encode_references(images_to_tensor(obj.refs.images, "cpu")), 3)["median"]},
        "refiner_grid": refiner.config.grid_size,
    }
    for key in ("detector_ms", "refiner_iteration_ms", "refiner_3_iterations_ms"):
        print(f"{key:26s} median {report[key]['median']:8.1f} ms   p90 {report[key]['p90']:8.1f} ms")
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    return report

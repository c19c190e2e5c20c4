"""Known-model estimator on every STEP-th frame of a BOP dataset: ADD-S / ADD(-S) per instance, the
absent objects that pass the gate, and the latency per frame.

    python scripts/real_val_subset.py DATASET OBJECTS_DIR [--step 4] [--no-depth] [--set '{"depth_proposals": 4}']

DATASET: a BOP dataset root (``../shared/data/real_val/ycbv``); OBJECTS_DIR: object databases
built by ``sixd-pose eval DATASET --out X --objects-dir OBJECTS_DIR`` (one ``obj_NNNNNN`` folder
per object). Every object is asked for in every frame, as ``sixd-pose eval`` does. ``--set``
overrides known-model settings (KnownModelConfig field names, JSON; lists become tuples).

Why a script: ``sixd-pose eval`` on all 40 validation frames takes 10-15 minutes on 2 cores;
design steps were compared on every 4th frame (10 frames, 45 instances) with this, and two
variants run one after the other give a side-by-side latency ratio. Prints one line per instance
(``none`` when the object got no pose), then the recalls, per-object ADD-S, the median latency
and the scores of absent objects that passed the gate.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from sixd_pose_ros.datasets.bop import read_bop_models_info, read_bop_scene
from sixd_pose_ros.geometry.pose_errors import add_error, adds_error
from sixd_pose_ros.pipeline.known_model import KnownModelConfig, KnownModelEstimator
from sixd_pose_ros.pipeline.types import Frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("objects_dir", type=Path)
    parser.add_argument("--step", type=int, default=4)
    parser.add_argument("--no-depth", action="store_true")
    parser.add_argument("--set", default="{}", help="KnownModelConfig overrides, JSON")
    args = parser.parse_args()
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args.set).items()}
    info = read_bop_models_info(args.dataset / "models")
    ids = sorted(info)
    config = dataclasses.replace(KnownModelConfig(use_depth=not args.no_depth), **overrides)
    est = KnownModelEstimator.from_paths([args.objects_dir / f"obj_{i:06d}" for i in ids], config=config,
                                         backend="onnxruntime")
    points = {f"obj_{i:06d}": obj.surface.points for i, obj in zip(ids, est.objects)}
    symmetric = {i: bool(info[i].get("symmetries_discrete") or info[i].get("symmetries_continuous")) for i in ids}
    rows, absent, seconds = [], [], []
    for scene in sorted(p for p in (args.dataset / "test").iterdir() if p.is_dir()):
        for fr in list(read_bop_scene(scene))[::args.step]:
            t0 = time.perf_counter()
            poses = {p.name: p for p in est.estimate(Frame(fr.rgb, fr.K, None if args.no_depth else fr.depth))}
            seconds.append(time.perf_counter() - t0)
            present = set()
            for inst in fr.instances:
                name = f"obj_{inst.obj_id:06d}"
                present.add(name)
                pose, d = poses.get(name), info[inst.obj_id]["diameter"] / 1000.0
                if pose is None:
                    rows.append((inst.obj_id, np.inf, np.inf))
                    print(scene.name, fr.im_id, inst.obj_id, "none", flush=True)
                    continue
                e_s = adds_error(pose.R, pose.t, inst.R_m2c, inst.t_m2c, points[name]) / d
                e_a = e_s if symmetric[inst.obj_id] else add_error(pose.R, pose.t, inst.R_m2c, inst.t_m2c,
                                                                   points[name]) / d
                rows.append((inst.obj_id, e_s, e_a))
                print(scene.name, fr.im_id, inst.obj_id, f"adds {e_s:.2f} add {e_a:.2f} score {pose.score:.3f}",
                      flush=True)
            absent += [p.score for n, p in poses.items() if n not in present]
    r = np.array(rows)
    print(f"ADD-S-0.1d {(r[:, 1] < 0.1).mean():.3f}  ADD(-S)-0.1d {(r[:, 2] < 0.1).mean():.3f}  n {len(r)}")
    for i in ids:
        if (m := r[:, 0] == i).any():
            print(f" obj {i} adds {(r[m, 1] < 0.1).mean():.2f} n {m.sum()}")
    print(f"latency s/frame median {np.median(seconds):.1f}")
    print("absent scores", np.round(sorted(absent), 3), "n", len(absent))


if __name__ == "__main__":
    main()

"""How well a mode's score says "the object is there": the table behind min_score.

    python scripts/absence_calibration.py DATASET OUT [STEP] [--no-depth] [--mode model_free] [--refs N]

Runs the estimator of a mode (known_model, the default, or model_free) with its defaults but
with the absence gate and the overlap exclusion off, on every STEP-th frame (default 4) of a BOP
DATASET, asking for every object of the dataset in every frame, so that the objects of the other
scenes are absent. Each output pose is labelled *right* (ADD-S within 0.1 d: an untextured mesh
cannot tell a box's twin faces apart, so a pose on the twin face is there all the same), *wrong*
(the object is in the frame, the pose is not within 0.1 d), or *absent* (the object is not in
the frame). It then prints, for thresholds on the score (the node's ``min_score``), how many of
each are kept, with and without the exclusion (pipeline/exclusion.py) applied to the kept poses,
as the estimator applies it, and each label's render contrast (the score before the gain's
mapping: its percentiles are what a gain is chosen on). The threshold wants right kept and
absent dropped.

Model-free objects get references as ``sixd-pose eval --mode model_free --refs N`` does
(evaluation/model_free_refs.py, default 8): from the frames of the object's own scene. An object
present in one of its own reference frames is not counted (that frame is its reference); absent
objects are counted in every frame.

Why a script: the threshold and the exclusion's overlap were chosen on these tables, and the
numbers in KnownModelConfig's and ModelFreeConfig's comments (contrast_gain,
exclusion_max_inside) must be reproducible. Writes OUT/absence.json (one record per output
pose, and the tables). Object databases are built in, or reused from, OUT/objects as
`sixd-pose eval` does.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np

from sixd_pose_ros.evaluation.eval_run import EvalOptions, load_metric_mesh, object_name, prepare_objects
from sixd_pose_ros.evaluation.sources import read_unit, resolve_dataset
from sixd_pose_ros.geometry.pose_errors import adds_error
from sixd_pose_ros.pipeline.estimator import estimator_class
from sixd_pose_ros.pipeline.exclusion import exclude_overlaps
from sixd_pose_ros.pipeline.settings import estimator_config
from sixd_pose_ros.pipeline.types import Frame

THRESHOLDS = (0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
LABELS = ("right", "wrong", "absent")


def _option(argv: list[str], name: str, default: str) -> tuple[str, list[str]]:
    """The value after ``name`` in ``argv`` (or ``default``), and ``argv`` without the two."""
    if name not in argv:
        return default, argv
    i = argv.index(name)
    return argv[i + 1], argv[:i] + argv[i + 2:]


def main(argv: list[str]) -> None:
    use_depth = "--no-depth" not in argv
    argv = [a for a in argv if a != "--no-depth"]
    mode, argv = _option(argv, "--mode", "known_model")
    refs, argv = _option(argv, "--refs", "8")
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    dataset, out = resolve_dataset(argv[0]), Path(argv[1])
    step = int(argv[2]) if len(argv) == 3 else 4
    models = prepare_objects(dataset, EvalOptions(mode=mode, refs=int(refs), use_depth=use_depth, progress=False),
                             out / "objects")
    defaults = estimator_config(mode, use_depth=use_depth)
    config = dataclasses.replace(defaults, min_detection_score=0.0)
    if hasattr(defaults, "exclusion_max_inside"):
        config = dataclasses.replace(config, exclusion_max_inside=0.0)
    estimator = estimator_class(mode).from_paths([m.database for m in models], config=config)
    by_name = {m.name: m for m in models}
    points = {m.name: np.asarray(load_metric_mesh(m.mesh_path, m.unit).sample(2000, seed=0)) for m in models}
    records, kept_sets = [], []
    for unit in dataset.units:
        for n, scene_frame in enumerate(read_unit(dataset, unit, [])):
            if n % step:
                continue
            frame = Frame(scene_frame.rgb, scene_frame.K, scene_frame.depth if use_depth else None)
            truth = {object_name(g.obj_id): g for g in scene_frame.instances}
            key = (unit.scene_id, int(scene_frame.im_id or 0))
            # An object is not scored on its own reference frame; absent ones are.
            poses = [p for p in estimator.estimate(frame)
                     if not (p.name in truth and key in by_name[p.name].excluded)]
            for pose in poses:
                gt, model = truth.get(pose.name), by_name[pose.name]
                error = None if gt is None else \
                    adds_error(pose.R, pose.t, gt.R_m2c, gt.t_m2c, points[pose.name]) / model.diameter
                label = "absent" if gt is None else ("right" if error <= 0.1 else "wrong")
                contrast = -math.log(max(1.0 - pose.score, 1e-12)) / config.contrast_gain
                records.append({"scene_id": key[0], "im_id": key[1], "object": pose.name, "label": label,
                                "adds": error, "score": pose.score, "contrast": contrast})
            kept_sets.append((poses, len(records) - len(poses)))
            print(f"scene {unit.scene_id} frame {scene_frame.im_id}: "
                  + ", ".join(f"{r['object']} {r['label']} {r['score']:.2f}" for r in records[-len(poses):]),
                  flush=True)
    shapes = {o.db.name: o.shape for o in estimator.objects if o.shape is not None}
    exclusions = sorted({0.0, estimator.proposer.overlap_limit(defaults)})
    tables = {}
    for exclusion in exclusions:
        rows = []
        for threshold in THRESHOLDS:
            counts = dict.fromkeys(LABELS, 0)
            for poses, first in kept_sets:
                kept = [(p, records[first + i]) for i, p in enumerate(poses) if p.score >= threshold]
                survivors = {id(p) for p in exclude_overlaps([p for p, _ in kept], shapes, exclusion)}
                for p, record in kept:
                    if id(p) in survivors:
                        counts[record["label"]] += 1
            rows.append({"min_score": threshold, **counts})
        tables[f"exclusion_{exclusion}"] = rows
    contrasts = {label: _percentiles([r["contrast"] for r in records if r["label"] == label]) for label in LABELS}
    totals = {label: sum(r["label"] == label for r in records) for label in LABELS}
    lines = [f"{len(records)} output poses with the gate off: {totals}"]
    lines += [f"contrast of {label} poses (min, 10th, median, 90th, max): {c}" for label, c in contrasts.items()]
    for name, rows in tables.items():
        lines.append(f"{name}: " + "; ".join(f"min_score {r['min_score']:.2f}: right {r['right']}, "
                                             f"wrong {r['wrong']}, absent {r['absent']}" for r in rows))
    print("\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    (out / "absence.json").write_text(json.dumps({"mode": mode, "use_depth": use_depth, "step": step,
                                                  "refs": int(refs) if mode == "model_free" else None,
                                                  "records": records, "contrast": contrasts, "tables": tables},
                                                 indent=1) + "\n")


def _percentiles(values: list[float]) -> list[float] | None:
    """min, 10th, median, 90th percentile and max, rounded (None for no values)."""
    if not values:
        return None
    return [round(float(v), 3) for v in np.percentile(values, [0, 10, 50, 90, 100])]


if __name__ == "__main__":
    main(sys.argv[1:])

"""How well the known-model score says "the object is there": the table behind min_score.

    python scripts/absence_calibration.py DATASET OUT [STEP] [--no-depth]

Runs the known-model estimator with its defaults but with the absence gate and the overlap
exclusion off, on every STEP-th frame (default 4) of a BOP DATASET, asking for every object of
the dataset in every frame, so that the objects of the other scenes are absent. Each output pose
is labelled *right* (ADD-S within 0.1 d: an untextured mesh cannot tell a box's twin faces
apart, so a pose on the twin face is there all the same), *wrong* (the object is in the frame,
the pose is not within 0.1 d), or *absent* (the object is not in the frame). It then prints, for thresholds on the score (the node's ``min_score``), how
many of each are kept, with and without the exclusion (pipeline/exclusion.py) applied to the
kept poses, as the estimator applies it. The threshold wants right kept and absent dropped.

Why a script: the threshold and the exclusion's overlap were chosen on these tables, and the
numbers in KnownModelConfig's comments (contrast_gain, exclusion_max_inside) must be
reproducible. Writes OUT/absence.json (one record per output pose, and the tables). Object
databases are built in, or reused from, OUT/objects as `sixd-pose eval` does.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path


from sixd_pose_ros.evaluation.eval_run import EvalOptions, object_name, prepare_objects
from sixd_pose_ros.evaluation.sources import read_unit, resolve_dataset
from sixd_pose_ros.geometry.pose_errors import adds_error
from sixd_pose_ros.pipeline.exclusion import exclude_overlaps
from sixd_pose_ros.pipeline.known_model import KnownModelConfig, KnownModelEstimator
from sixd_pose_ros.pipeline.types import Frame

THRESHOLDS = (0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)


def main(argv: list[str]) -> None:
    use_depth = "--no-depth" not in argv
    argv = [a for a in argv if a != "--no-depth"]
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    dataset, out = resolve_dataset(argv[0]), Path(argv[1])
    step = int(argv[2]) if len(argv) == 3 else 4
    models = prepare_objects(dataset, EvalOptions(progress=False), out / "objects")
    defaults = KnownModelConfig(use_depth=use_depth)
    config = dataclasses.replace(defaults, min_detection_score=0.0, exclusion_max_inside=0.0)
    estimator = KnownModelEstimator.from_paths([m.database for m in models], config=config)
    objects = {o.db.name: o for o in estimator.objects}
    records, kept_sets = [], []
    for unit in dataset.units:
        for n, scene_frame in enumerate(read_unit(dataset, unit, [])):
            if n % step:
                continue
            frame = Frame(scene_frame.rgb, scene_frame.K, scene_frame.depth if use_depth else None)
            poses = estimator.estimate(frame)
            truth = {object_name(g.obj_id): g for g in scene_frame.instances}
            for pose in poses:
                gt, surface = truth.get(pose.name), objects[pose.name].surface
                error = None if gt is None else \
                    adds_error(pose.R, pose.t, gt.R_m2c, gt.t_m2c, surface.points) / surface.diameter
                label = "absent" if gt is None else ("right" if error <= 0.1 else "wrong")
                records.append({"scene_id": unit.scene_id, "im_id": int(scene_frame.im_id or 0), "object": pose.name,
                                "label": label, "adds": error, "score": pose.score})
            kept_sets.append((poses, len(records) - len(poses)))
            print(f"scene {unit.scene_id} frame {scene_frame.im_id}: "
                  + ", ".join(f"{r['object']} {r['label']} {r['score']:.2f}" for r in records[-len(poses):]),
                  flush=True)
    shapes = {name: o.shape for name, o in objects.items() if o.shape is not None}
    tables = {}
    for exclusion in (0.0, defaults.exclusion_max_inside):
        rows = []
        for threshold in THRESHOLDS:
            counts = {"right": 0, "wrong": 0, "absent": 0}
            for poses, first in kept_sets:
                kept = [(p, records[first + i]) for i, p in enumerate(poses) if p.score >= threshold]
                survivors = {id(p) for p in exclude_overlaps([p for p, _ in kept], shapes, exclusion)}
                for p, record in kept:
                    if id(p) in survivors:
                        counts[record["label"]] += 1
            rows.append({"min_score": threshold, **counts})
        tables[f"exclusion_{exclusion}"] = rows
    totals = {label: sum(r["label"] == label for r in records) for label in ("right", "wrong", "absent")}
    lines = [f"{len(records)} output poses with the gate off: {totals}"]
    for name, rows in tables.items():
        lines.append(f"{name}: " + "; ".join(f"min_score {r['min_score']:.2f}: right {r['right']}, "
                                             f"wrong {r['wrong']}, absent {r['absent']}" for r in rows))
    print("\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    (out / "absence.json").write_text(json.dumps({"use_depth": use_depth, "step": step, "records": records,
                                                  "tables": tables}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

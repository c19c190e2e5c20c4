"""Known-model mode's failures split by cause: was the right pose among the hypotheses at all?

    python scripts/hypothesis_oracle.py DATASET OUT OBJECTS FRAMES

Runs the known-model estimator with its defaults (depth on) over the first FRAMES frames of
DATASET, and for every ground-truth instance of OBJECTS keeps every hypothesis that reached the
depth ranking (after its quick alignment) with its ADD and ADD-S against the ground truth. It then
prints, out of all instances:

- final: the published pose passes ADD(-S)-0.1d (ADD-S for objects with a symmetry in
  models_info) / ADD-S-0.1d;
- oracle: some ranked hypothesis passes it after its quick alignment, i.e. about the best a
  better ranking could do without new hypotheses (the winner's full alignment can pass where its
  quick one did not, so final may exceed it by a few);
- the failures split into: right pose ranked too low; right place (ADD-S passes) but no right
  rotation; no hypothesis at the right place.

Why: it says whether work should go to the ranking or to the hypotheses (the detector, the
codebook, the rotation grid). Writes OUT/oracle.json (one record per instance); object databases
are built in, or reused from, OUT/objects as `sixd-pose eval` does.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import sixd_pose_ros.pipeline.estimator as estimator_module
import sixd_pose_ros.pipeline.known_model as known_model
from sixd_pose_ros.evaluation.eval_run import EvalOptions, object_name, prepare_objects
from sixd_pose_ros.evaluation.metrics import has_symmetry
from sixd_pose_ros.evaluation.sources import read_unit, resolve_dataset
from sixd_pose_ros.geometry.pose_errors import add_error, adds_error
from sixd_pose_ros.pipeline.depth_ranking import rank_by_depth
from sixd_pose_ros.pipeline.types import Frame


def _record_rankings(log: dict) -> None:
    """Make the estimator keep every ranked list (keyed by the surface model it ranked for)."""
    def rank(model, hypotheses, frame, segmentation, **kwargs):
        ranked = rank_by_depth(model, hypotheses, frame, segmentation, **kwargs)
        log[id(model)] = ranked
        return ranked

    estimator_module.rank_by_depth = rank


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        sys.exit(__doc__)
    dataset_path, out, objects, n_frames = argv[0], Path(argv[1]), argv[2], int(argv[3])
    dataset = resolve_dataset(dataset_path)
    options = EvalOptions(objects=tuple(int(o) for o in objects.split(",")), codebook_grid=(2, 36), progress=False)
    models = prepare_objects(dataset, options, out / "objects")
    estimator = known_model.KnownModelEstimator.from_paths([m.database for m in models], options.weights,
                                                           backend="torch")
    log: dict = {}
    _record_rankings(log)
    records, seen = [], 0
    for unit in dataset.units:
        for scene_frame in read_unit(dataset, unit, []):
            if seen >= n_frames:
                break
            seen += 1
            log.clear()
            frame = Frame(rgb=scene_frame.rgb, K=scene_frame.K, depth=scene_frame.depth)
            poses = {p.name: p for p in estimator.estimate(frame)}
            for model, obj in zip(models, estimator.objects):
                gt = next((g for g in scene_frame.instances if object_name(g.obj_id) == obj.db.name), None)
                if gt is None:
                    continue
                points, diameter = obj.surface.points, obj.surface.diameter

                def errors(R, t):
                    return (add_error(R, t, gt.R_m2c, gt.t_m2c, points) / diameter,
                            adds_error(R, t, gt.R_m2c, gt.t_m2c, points) / diameter)

                pose = poses.get(obj.db.name)
                records.append({
                    "scene_id": unit.scene_id, "im_id": int(scene_frame.im_id or 0), "obj_id": int(gt.obj_id),
                    "symmetric": has_symmetry(model.symmetries),
                    "final": None if pose is None else errors(pose.R, pose.t),
                    "ranked": [{"rank": r.rank, "errors": errors(r.aligned.R, r.aligned.t)}
                               for r in log.get(id(obj.surface), [])]})
        if seen >= n_frames:
            break
    out.mkdir(parents=True, exist_ok=True)
    (out / "oracle.json").write_text(json.dumps(records, indent=1) + "\n")
    print(summarize(records))


def summarize(records: list[dict]) -> str:
    def passes(errs, symmetric, shape_only=False):
        return errs is not None and (errs[1] if symmetric or shape_only else errs[0]) <= 0.1

    n = len(records)
    final = sum(passes(r["final"], r["symmetric"]) for r in records)
    final_s = sum(passes(r["final"], r["symmetric"], True) for r in records)
    oracle = sum(any(passes(h["errors"], r["symmetric"]) for h in r["ranked"]) for r in records)
    oracle_s = sum(any(passes(h["errors"], r["symmetric"], True) for h in r["ranked"]) for r in records)
    failed = [r for r in records if not passes(r["final"], r["symmetric"])]
    ranked_low = sum(any(passes(h["errors"], r["symmetric"]) for h in r["ranked"]) for r in failed)
    right_place = sum(not any(passes(h["errors"], r["symmetric"]) for h in r["ranked"])
                      and any(passes(h["errors"], r["symmetric"], True) for h in r["ranked"]) for r in failed)
    return (f"{n} instances\n"
            f"final:  ADD(-S) {final} ({100 * final / n:.1f} %), ADD-S {final_s} ({100 * final_s / n:.1f} %)\n"
            f"oracle: ADD(-S) {oracle} ({100 * oracle / n:.1f} %), ADD-S {oracle_s} ({100 * oracle_s / n:.1f} %)\n"
            f"{len(failed)} failures: right pose ranked too low {ranked_low}; right place, no right rotation "
            f"{right_place}; no hypothesis at the right place {len(failed) - ranked_low - right_place}")


if __name__ == "__main__":
    main(sys.argv[1:])

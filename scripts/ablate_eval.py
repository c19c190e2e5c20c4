"""Evaluate with estimator settings the command line does not expose: how the defaults in
pipeline/known_model.py and pipeline/model_free.py were chosen, and how the numbers in
docs/reports/README.md that compare them can be rerun.

    python scripts/ablate_eval.py DATASET OUT MODE OBJECTS FRAMES OVERRIDES [QUICK_ICP FINAL_ICP KERNEL]

MODE: known_model or model_free. OVERRIDES: JSON of config fields, e.g. '{"similarity_power": 6}'
('{}' for the defaults). QUICK_ICP / FINAL_ICP: point_to_point or point_to_plane, the ICP that
ranks hypotheses and the one that finishes the winner; KERNEL: the point-to-plane Tukey kernel in
diameters. Prints the mean metrics and writes the usual report into OUT (object databases are
reused from OUT/objects). Example, the validation scene with point-to-point ICP everywhere:

    python scripts/ablate_eval.py /tmp/val/test/000000 /tmp/abl known_model \\
        1156,1248,1366,1551,1668,1792 8 '{}' point_to_point point_to_point 0.05

Why a script and not CLI flags: these are developer knobs for measuring; a user tunes the
documented parameters (config/sixd_pose_node.yaml, sixd-pose eval's options).
"""
from __future__ import annotations

import dataclasses
import json
import sys

import sixd_pose_ros.pipeline.depth_ranking as depth_ranking
from sixd_pose_ros.evaluation.eval_run import EvalOptions, run_eval
from sixd_pose_ros.pipeline.known_model import KnownModelConfig
from sixd_pose_ros.pipeline.model_free import ModelFreeConfig


def _override_defaults(cls, overrides: dict) -> None:
    """run_eval builds its config from the class defaults: change those for this process."""
    names = [f.name for f in dataclasses.fields(cls)]
    defaults = list(cls.__init__.__defaults__)
    for key, value in overrides.items():
        defaults[names.index(key)] = tuple(value) if isinstance(value, list) else value
    cls.__init__.__defaults__ = tuple(defaults)


def _override_icp(quick_icp: str, final_icp: str, kernel: float) -> None:
    align = depth_ranking.align_to_depth

    def chosen(*args, **kwargs):
        quick = kwargs["icp_iters"] == 5  # SurfaceModel.align's quick alignment
        return align(*args, **{**kwargs, "icp": quick_icp if quick else final_icp, "robust_fraction": kernel})

    depth_ranking.align_to_depth = chosen


def main(argv: list[str]) -> None:
    if len(argv) not in (6, 9):
        sys.exit(__doc__)
    dataset, out, mode, objects, frames, overrides = argv[:6]
    _override_defaults(ModelFreeConfig if mode == "model_free" else KnownModelConfig, json.loads(overrides))
    if len(argv) == 9:
        _override_icp(argv[6], argv[7], float(argv[8]))
    options = EvalOptions(mode=mode, objects=tuple(int(o) for o in objects.split(",")), codebook_grid=(2, 36),
                          refs=64, max_frames=int(frames), progress=False, backend="torch")
    print(json.dumps(run_eval(dataset, out, options)["mean"]))


if __name__ == "__main__":
    main(sys.argv[1:])

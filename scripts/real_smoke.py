#!/usr/bin/env python3
"""Run the known-model estimator on the one real frame in ../shared/data/real_smoke (LM-O scene 2
frame 3, object 5, a watering can) with and without depth, and print the pose errors.

A smoke test only: one frame says whether the real-data path runs and roughly where it stands;
never train or tune on it.   Usage: .venv/bin/python scripts/real_smoke.py [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from sixd_pose_ros.datasets.bop import read_bop_single_frame
from sixd_pose_ros.geometry.pose_errors import add_error, rotation_error_deg, translation_error
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_autoencoder, weights_identity
from sixd_pose_ros.objects.codebook import as_encoder
from sixd_pose_ros.objects.database import build_object_database
from sixd_pose_ros.pipeline.known_model import FEATURE_DETECTION_MODES, KnownModelConfig, KnownModelEstimator
from sixd_pose_ros.pipeline.types import Frame

SMOKE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_smoke" / "lmo_scene2_frame3"
OBJ_ID = 5


def run(out: Path, weights: Path = WEIGHTS_DIR, subdivisions: int = 2, n_inplane: int = 18,
        feature_detection: str = KnownModelConfig.feature_detection) -> dict:
    frame = read_bop_single_frame(SMOKE)
    gt = next(i for i in frame.instances if i.obj_id == OBJ_ID)
    db = build_object_database(SMOKE / f"obj_{OBJ_ID:06d}.ply", "watering_can", out / "objects", unit="mm",
                               encoder=as_encoder(load_autoencoder(weights / "autoencoder.pt")),
                               encoder_id=weights_identity(weights / "autoencoder.pt"), overwrite=True,
                               progress=False, subdivisions=subdivisions, n_inplane=n_inplane)
    report = {}
    for mode, depth in (("rgbd", frame.depth), ("rgb", None)):
        est = KnownModelEstimator.from_paths([db], weights, KnownModelConfig(min_detection_score=0.0,
                                                                            use_depth=depth is not None,
                                                                            feature_detection=feature_detection))
        poses = est.estimate(Frame(frame.rgb, frame.K, depth))
        if not poses:
            report[mode] = {"found": False}
            continue
        p = poses[0]
        points = np.asarray(est.objects[0].db.mesh.vertices)
        diameter = est.objects[0].surface.diameter
        add = add_error(p.R, p.t, gt.R_m2c, gt.t_m2c, points)
        report[mode] = {"found": True, "score": p.score, "add_over_diameter": float(add / diameter),
                        "add_0.1d": bool(add < 0.1 * diameter),
                        "rotation_error_deg": float(rotation_error_deg(p.R, gt.R_m2c)),
                        "translation_error_cm": float(100 * translation_error(p.t, gt.t_m2c)),
                        "stage_ms": {k: round(v, 1) for k, v in p.stage_ms.items()}}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--feature-detection", choices=FEATURE_DETECTION_MODES,
                        default=KnownModelConfig.feature_detection,
                        help="where places come from (KnownModelConfig.feature_detection)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(args.out or Path(tmp), args.weights, feature_detection=args.feature_detection), indent=1))


if __name__ == "__main__":
    main()

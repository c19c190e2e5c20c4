"""Held-out rotation retrieval with and without a mesh (`sixd-pose eval-shape-codebook`).

Three codebooks for the same augmented crops of procedural objects the autoencoder never saw:

- ``rendered``: the mesh rendered over the grid and encoded (known-model mode's codebook);
- ``B(query)``: ``B(z_o, R)`` with the query crop's own shape code (no mesh, no photos);
- ``B(refs)``: ``B(z_o, R)`` with the mean shape code of ``n_refs`` other photos (augmented
  crops at random rotations) of the object: the mesh-free setting with a few pictures.

The error is symmetry-aware (the object's symmetry group from the generator). Results per
shape family say where a shape code carries the pose and where it does not. The measurement
itself is :func:`sixd_pose_ros.training.train_shape_block.evaluate_shape_codebook`, which the
shape block's training reports as well; this module prints and writes it.
"""
from __future__ import annotations

import json
from pathlib import Path

from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_autoencoder
from sixd_pose_ros.training.train_shape_block import METHODS, evaluate_shape_codebook


def format_table(report: dict) -> str:
    rows = ["| codebook | median rotation error (deg) | within 15 deg | within 30 deg | samples |",
            "|---|---|---|---|---|"]
    for method, s in report["methods"].items():
        rows.append(f"| {method} | {s['median_rotation_error_deg']:.1f} | {s['within_15deg']:.3f} | "
                    f"{s['within_30deg']:.3f} | {s['samples']} |")
    rows += ["", "| family | " + " | ".join(f"{m} within 30 deg" for m in METHODS) + " | samples |",
             "|---|" + "---|" * (len(METHODS) + 1)]
    for family, per in report["families"].items():
        cells = " | ".join(f"{per[m]['within_30deg']:.2f}" for m in METHODS)
        rows.append(f"| {family} | {cells} | {per[METHODS[0]]['samples']} |")
    return "\n".join(rows)


def run_shape_codebook_eval(weights: Path = WEIGHTS_DIR, out: Path | None = None, **kwargs) -> dict:
    report = evaluate_shape_codebook(load_autoencoder(Path(weights) / "autoencoder.pt"), **kwargs)
    report["weights"] = str(weights)
    print(format_table(report))
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    return report

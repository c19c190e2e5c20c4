"""Held-out rotation retrieval with and without a mesh (`sixd-pose eval-shape-codebook`).

Three codebooks for the same augmented crops of procedural objects the autoencoder never saw:

- ``rendered``: the mesh rendered over the grid and encoded (known-model mode's codebook);
- ``B(query)``: ``B(z_o, R)`` with the query crop's own shape code (no mesh, no photos);
- ``B(refs)``: ``B(z_o, R)`` with the mean shape code of ``n_refs`` other photos (augmented
  crops at random rotations) of the object: the mesh-free setting with a few pictures.

The error is symmetry-aware (the object's symmetry group from the generator). Results per
shape family say where a shape code carries the pose and where it does not.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sixd_pose_ros.geometry.rotations import geodesic_angle, random_rotations
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_autoencoder
from sixd_pose_ros.objects.codebook import as_encoder, build_codebook
from sixd_pose_ros.objects.shape_codebook import rotations_without_mesh, shape_code_of
from sixd_pose_ros.render.procedural import make_object
from sixd_pose_ros.render.procedural.symmetry import symmetry_rotations
from sixd_pose_ros.training.pose_samples import autoencoder_samples, occluder_meshes
from sixd_pose_ros.training.train_detector import images_to_tensor

METHODS = ("rendered", "B(query)", "B(refs)")


def _error_deg(R_est: np.ndarray, R_true: np.ndarray, symmetries: np.ndarray) -> float:
    return float(np.degrees(np.min(geodesic_angle(R_est, R_true @ symmetries))))


def _summary(errors: list[float]) -> dict:
    e = np.asarray(errors)
    if len(e) == 0:
        return {"samples": 0}
    return {"median_rotation_error_deg": float(np.median(e)), "within_15deg": float(np.mean(e < 15)),
            "within_30deg": float(np.mean(e < 30)), "samples": int(len(e))}


@torch.no_grad()
def evaluate_shape_codebook(autoencoder, n_objects: int = 10, samples_per_object: int = 20, n_refs: int = 8,
                            seed: int = 0, subdivisions: int = 2, n_inplane: int = 18,
                            progress: bool = True) -> dict:
    """Per-method and per-family retrieval errors on held-out objects 0..n_objects-1."""
    autoencoder.eval()
    device = next(autoencoder.parameters()).device
    rng = np.random.default_rng((seed, 777))
    occluders = occluder_meshes(4, 1_000_000)
    errors: dict[str, list[float]] = {m: [] for m in METHODS}
    by_family: dict[str, dict[str, list[float]]] = defaultdict(lambda: {m: [] for m in METHODS})
    for i in tqdm(range(n_objects), desc="eval shape codebook", disable=not progress):
        obj = make_object("heldout", i)
        symmetries = symmetry_rotations(obj)
        queries = autoencoder_samples("heldout", i, random_rotations(samples_per_object, rng), rng,
                                      occluders=occluders)
        photos = autoencoder_samples("heldout", i, random_rotations(n_refs, rng), rng, occluders=occluders)
        crops = images_to_tensor([s.crop for s in queries], device)
        rendered = build_codebook(obj.mesh, as_encoder(autoencoder), subdivisions=subdivisions,
                                  n_inplane=n_inplane, progress=False)
        _, z_p = autoencoder.encode(crops)
        hits, _ = rendered.lookup(z_p.cpu().numpy(), k=1)
        estimates = {
            "rendered": rendered.rotation(hits[:, 0]),
            "B(query)": rotations_without_mesh(autoencoder, crops, subdivisions=subdivisions,
                                               n_inplane=n_inplane)[0][:, 0],
            "B(refs)": rotations_without_mesh(
                autoencoder, crops, z_o=shape_code_of(autoencoder, images_to_tensor([p.crop for p in photos], device)),
                subdivisions=subdivisions, n_inplane=n_inplane)[0][:, 0],
        }
        for method, R_est in estimates.items():
            for s, R in zip(queries, R_est):
                err = _error_deg(R, s.R, symmetries)
                errors[method].append(err)
                by_family[obj.family][method].append(err)
    return {
        "heldout_objects": n_objects, "samples_per_object": samples_per_object, "n_refs": n_refs, "seed": seed,
        "codebook": f"{10 * 4 ** subdivisions + 2} views x {n_inplane} in-plane",
        "methods": {m: _summary(e) for m, e in errors.items()},
        "families": {f: {m: _summary(e) for m, e in v.items()} for f, v in sorted(by_family.items())},
    }


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

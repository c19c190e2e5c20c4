"""The README's first command: a bundled object, a synthetic RGB-D recording of it, the real pose
node over DDS, and the poses it sends back scored against ground truth.

Needs no data of the user's: the object is procedural (made by this package), the frames are
rendered here and written as a BOP scene and a rosbag2 bag, the object database is built with
`build-object`'s code, and the frames are played into `sixd_pose_node` over Fast DDS on this
machine.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

from sixd_pose_ros.datasets.bop import read_bop_scene
from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_autoencoder, weights_identity
from sixd_pose_ros.objects.codebook import as_encoder
from sixd_pose_ros.objects.database import build_object_database
from sixd_pose_ros.render.procedural import make_bundled_demo_object
from sixd_pose_ros.training.synth import get_preset, synthesize

# A small codebook (162 views x 18 in-plane) keeps the demo's object build to seconds on 2 cores.
DEMO_CODEBOOK = {"subdivisions": 2, "n_inplane": 18}


def overview_image(rgb: np.ndarray, depth: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """rgb | depth (colour-mapped, black = no measurement) | rgb with mask outlines, RGB uint8."""
    valid = depth > 0
    d = np.zeros(depth.shape, np.uint8)
    if valid.any():
        lo, hi = np.percentile(depth[valid], [1, 99])
        d[valid] = np.clip((depth[valid] - lo) / max(hi - lo, 1e-6) * 254 + 1, 1, 255).astype(np.uint8)
    depth_vis = cv2.applyColorMap(d, cv2.COLORMAP_TURBO)[..., ::-1].copy()
    depth_vis[~valid] = 0
    overlay = rgb.copy()
    for mask in masks:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(overlay, contours, -1, (0, 255, 0), 2)
    return np.concatenate([rgb, depth_vis, overlay], axis=1)


def run_demo(out: Path, overwrite: bool = True, progress: bool = True, weights: Path = WEIGHTS_DIR,
             codebook: dict | None = None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("detector.pt", "autoencoder.pt", "refiner.pt"):
        if not (Path(weights) / name).is_file():
            raise SixdPoseError(f"{Path(weights) / name} is missing: reinstall the package, or train it with "
                                f"`sixd-pose train {name[:-3]}`")
    timings = {}
    t0 = time.perf_counter()
    dataset = out / "dataset"
    info = synthesize(get_preset("demo"), dataset, formats=("bop", "rosbag"), overwrite=overwrite,
                      progress=progress)
    frames = list(read_bop_scene(dataset / "test" / "000000"))
    first = frames[0]
    cv2.imwrite(str(out / "overview.png"), cv2.cvtColor(
        overview_image(first.rgb, first.depth, [i.mask_visib for i in first.instances]), cv2.COLOR_RGB2BGR))
    timings["synthesize_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    obj = make_bundled_demo_object()
    mesh_path = dataset / "models" / "obj_000001.ply"  # the dataset's copy, in millimetres
    db = build_object_database(mesh_path, "drill", out / "objects", unit="mm",
                               encoder=as_encoder(load_autoencoder(Path(weights) / "autoencoder.pt")),
                               encoder_id=weights_identity(Path(weights) / "autoencoder.pt"),
                               overwrite=True, progress=progress, templates=True, **(codebook or DEMO_CODEBOOK))
    timings["build_object_s"] = time.perf_counter() - t1

    from sixd_pose_ros.ros.demo_runner import play_and_score  # the only ROS part of the demo

    t2 = time.perf_counter()
    points = np.asarray(obj.mesh.sample(2000, seed=0)) if "seed" in obj.mesh.sample.__code__.co_varnames \
        else np.asarray(obj.mesh.vertices)
    scores = play_and_score(frames, db, weights, "drill", 1, points, obj.diameter,
                            overlay_path=out / "overlay.png")
    timings["node_s"] = time.perf_counter() - t2
    summary = {
        "object": {"name": "drill", "family": info["objects"]["1"]["family"],
                   "diameter_m": round(obj.diameter, 4), "faces": info["objects"]["1"]["faces"]},
        "frames": info["frames"], "bop_scene": str(dataset / "test" / "000000"),
        "rosbag": str(dataset / "bags" / "000000"), "object_database": str(db),
        "over_dds": scores, "overview_png": str(out / "overview.png"),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    print(json.dumps(summary, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary

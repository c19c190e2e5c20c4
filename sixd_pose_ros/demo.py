"""The README's first command: make the bundled object's synthetic RGB-D recording, show it.

Needs no data of the user's: the object is procedural (made by this package), the frames are
rendered here, written as a BOP scene and a rosbag2 bag, and summarized in a picture.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from sixd_pose_ros.datasets.bop import read_bop_scene
from sixd_pose_ros.training.synth import get_preset, synthesize


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


def run_demo(out: Path, overwrite: bool = True, progress: bool = True) -> dict:
    out = Path(out)
    dataset = out / "dataset"
    info = synthesize(get_preset("demo"), dataset, formats=("bop", "rosbag"), overwrite=overwrite,
                      progress=progress)
    first = next(read_bop_scene(dataset / "test" / "000000"))
    image = overview_image(first.rgb, first.depth, [i.mask_visib for i in first.instances])
    overview = out / "overview.png"
    cv2.imwrite(str(overview), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    obj = info["objects"]["1"]
    summary = {
        "object": {"family": obj["family"], "diameter_m": round(obj["diameter_m"], 4),
                   "faces": obj["faces"], "symmetry": obj["symmetry"], "textured": obj["textured"]},
        "frames": info["frames"],
        "annotated_instances": info["instances"],
        "image": [int(first.rgb.shape[1]), int(first.rgb.shape[0])],
        "bop_scene": str(dataset / "test" / "000000"),
        "rosbag": str(dataset / "bags" / "000000"),
        "overview_png": str(overview),
        "frames_per_second": round(info["frames_per_second_render"], 2),
        "first_frame_gt": [{"obj_id": i.obj_id, "t_m2c_m": [round(float(x), 4) for x in i.t_m2c],
                            "visible_pixels": int(i.mask_visib.sum())} for i in first.instances],
    }
    print(json.dumps(summary, indent=1))
    return summary

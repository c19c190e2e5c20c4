"""`sixd-pose train selector`: the viewpoint selector of model-free mode, from scratch.

Each step draws a few training objects; for each, a random subset of its FPS-spread rendered
references (colour-jittered like photos) is prepared once, and several query crops of the object
(random rotation and roll, centre and scale jittered as a detector leaves them, clutter,
occluder, light, colour, noise, blur) are scored against it. Loss: cross-entropy over all
(reference, in-plane angle) pairs with a soft target that favours the references nearest the
query's viewing direction (symmetry-aware), plus an L2 loss on ``(cos, sin)`` of the in-plane
angle relative to those references.

Evaluation at the end runs on held-out objects with 64 references each, as model-free mode
does, and reports the viewing-direction error of the top-1 reference, the in-plane angle error
and the error of the resulting initial rotation.
"""
from __future__ import annotations

import time
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sixd_pose_ros.geometry.rotations import geodesic_angle
from sixd_pose_ros.models.selector import (
    SelectorConfig,
    SelectorOutput,
    ViewpointSelector,
    decode_selection,
    initial_rotation,
    selector_loss,
    selector_targets,
)
from sixd_pose_ros.render.procedural import make_object
from sixd_pose_ros.render.procedural.symmetry import symmetry_rotations
from sixd_pose_ros.training.pose_samples import (
    PoseObject,
    occluder_meshes,
    pose_object,
    selector_sample,
)
from sixd_pose_ros.training.scenes import jitter_color
from sixd_pose_ros.training.train_detector import images_to_tensor
from sixd_pose_ros.training.trainer import (
    TrainConfig,
    finish_training,
    make_optimizer,
    optimizer_step,
    prepare_model,
    start_run,
    wrap_model,
    report_progress,
)


def selector_config(cfg: TrainConfig) -> SelectorConfig:
    """The model preset ('cpu' or 'gpu'), with overrides from ``extra: {model: {...}}``."""
    if cfg.model_preset not in ("cpu", "gpu"):
        raise ValueError(f"unknown selector preset {cfg.model_preset!r}: use cpu or gpu")
    return replace(SelectorConfig.preset(cfg.model_preset), **cfg.extra.get("model", {}))


@lru_cache(maxsize=4096)
def visual_symmetries(split: str, index: int) -> np.ndarray:
    """``(K, 3, 3)`` rotations under which the object *looks* the same (shape and appearance):
    its shape symmetries when the appearance keeps them, else the identity. A query of a
    symmetric object matches every equivalent reference equally, so targets and errors use all."""
    obj = make_object(split, index)
    if obj.visual_symmetry in ("", "none", "near") or obj.visual_symmetry != obj.symmetry:
        return np.eye(3)[None]
    return symmetry_rotations(obj)


class _SelectorStep(nn.Module):
    """References prepared and queries scored in one forward(), so that DistributedDataParallel
    sees every parameter used inside it."""

    def __init__(self, model: ViewpointSelector) -> None:
        super().__init__()
        self.model = model

    def forward(self, query: torch.Tensor, ref_images: torch.Tensor,
                directions: torch.Tensor) -> SelectorOutput:
        return self.model(query, self.model.prepare_references(ref_images, directions))


def _ref_tensors(obj: PoseObject, idx: np.ndarray, rng: np.random.Generator | None, device):
    """Reference crops (colour-jittered when rng is given: real references are photos) and
    their viewing directions, as tensors."""
    images = obj.refs.images[idx]
    if rng is not None:
        images = np.stack([jitter_color(im, rng) for im in images])
    dirs = torch.as_tensor(obj.refs.view_directions()[idx], dtype=torch.float32, device=device)
    return images_to_tensor(images, device), dirs


@torch.no_grad()
def evaluate_selector(model: ViewpointSelector, n_objects: int, n_samples: int, n_refs: int,
                      seed: int, device, max_inplane_deg: float = 180.0,
                      progress: bool = False) -> dict:
    """Held-out objects, ``n_refs`` references each: errors of the top-1 selection.

    - viewpoint error: angle between the selected reference's viewing direction and the
      query's (symmetry-aware); ``nearest_reference`` is the same for the best possible choice
      (the references' spacing);
    - in-plane error: predicted minus true in-plane angle relative to the selected reference;
    - rotation error: geodesic angle between :func:`initial_rotation` and the truth
      (symmetry-aware), what the refiner starts from.
    """
    model.eval()
    rng = np.random.default_rng((seed, 5151))
    occluders = occluder_meshes(4, 1_000_000)
    angles = model.angles.cpu().numpy()
    view_err, oracle_err, inplane_err, rot_err = [], [], [], []
    per_object = max(1, n_samples // n_objects)
    for i in tqdm(range(n_objects), desc="eval selector", disable=not progress):
        obj = pose_object("heldout", i, n_refs=n_refs)
        syms = visual_symmetries("heldout", i)
        images, dirs = _ref_tensors(obj, np.arange(len(obj.refs)), None, device)
        refs = model.prepare_references(images, dirs)
        samples = [selector_sample(obj, rng, max_inplane_deg=max_inplane_deg, occluders=occluders)
                   for _ in range(per_object)]
        out = model(images_to_tensor([s.crop for s in samples], device), refs)
        R_q = np.stack([s.R for s in samples])
        tg = selector_targets(R_q, obj.refs.R, angles, syms)
        for b, sel in enumerate(decode_selection(out)):
            n = sel.index
            view_err.append(float(tg["view_error"][b, n]))
            oracle_err.append(float(tg["view_error"][b].min()))
            d = sel.inplane - float(tg["inplane"][b, n])
            inplane_err.append(abs((d + np.pi) % (2 * np.pi) - np.pi))
            R0 = initial_rotation(obj.refs.R[n], sel.inplane)
            rot_err.append(float(np.min(geodesic_angle(R0, R_q[b] @ syms))))
    model.train()
    deg = {k: np.degrees(np.asarray(v)) for k, v in
           (("view", view_err), ("oracle", oracle_err), ("inplane", inplane_err), ("rot", rot_err))}
    return {"viewpoint_error_median_deg": float(np.median(deg["view"])),
            "viewpoint_within_30deg": float(np.mean(deg["view"] < 30)),
            "viewpoint_within_15deg": float(np.mean(deg["view"] < 15)),
            "nearest_reference_error_median_deg": float(np.median(deg["oracle"])),
            "inplane_error_median_deg": float(np.median(deg["inplane"])),
            "inplane_within_30deg": float(np.mean(deg["inplane"] < 30)),
            "rotation_error_median_deg": float(np.median(deg["rot"])),
            "rotation_within_30deg": float(np.mean(deg["rot"] < 30)),
            "samples": len(view_err), "objects": n_objects, "references": n_refs,
            "max_inplane_deg": max_inplane_deg}


def train_selector(cfg: TrainConfig, out_dir: Path, progress: bool = True) -> dict:
    dist, rng = start_run(cfg)
    model_cfg = selector_config(cfg)
    model = prepare_model(ViewpointSelector(model_cfg), cfg, dist)
    net = wrap_model(_SelectorStep(model), dist)
    opt, sched = make_optimizer(model, cfg)
    groups = int(cfg.extra.get("objects_per_step", 2))
    refs_per_step = min(int(cfg.extra.get("refs_per_step", 32)), cfg.n_refs)
    max_inplane = float(cfg.extra.get("max_inplane_deg", 180.0))
    eval_refs = int(cfg.extra.get("eval_refs", 64))
    sigma_view = float(cfg.extra.get("sigma_view_deg", 12.0))
    per_group = max(1, cfg.batch_size // groups)
    occluders = occluder_meshes(8, cfg.train_objects)  # training split, outside the object pool
    angles = model.angles.cpu().numpy()
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="train selector", disable=not (progress and dist.is_main))
    for step in bar:
        opt.zero_grad(set_to_none=True)
        total, parts = 0.0, np.zeros(2)
        for _ in range(groups):
            index = int(rng.integers(cfg.train_objects))
            obj = pose_object("train", index, n_refs=cfg.n_refs)
            idx = np.sort(rng.choice(len(obj.refs), size=refs_per_step, replace=False))
            samples = [selector_sample(obj, rng, max_inplane_deg=max_inplane, occluders=occluders)
                       for _ in range(per_group)]
            images, dirs = _ref_tensors(obj, idx, rng, dist.device)
            out = net(images_to_tensor([s.crop for s in samples], dist.device), images, dirs)
            targets = selector_targets(np.stack([s.R for s in samples]), obj.refs.R[idx], angles,
                                       visual_symmetries("train", index), sigma_view_deg=sigma_view)
            parts_g = selector_loss(out, targets)
            loss = parts_g["loss"] / groups
            loss.backward()
            total += float(loss.detach())
            parts += [float(parts_g["score"].detach()) / groups, float(parts_g["angle"].detach()) / groups]
        optimizer_step(model, opt, sched)
        losses.append(total)
        report_progress(bar, step, cfg, losses, started, score=float(parts[0]), angle=float(parts[1]))
    seconds = time.perf_counter() - started
    return finish_training("selector", model, model_cfg, cfg, dist, out_dir, seconds, losses,
                           lambda: evaluate_selector(model, cfg.eval_objects, cfg.eval_samples, eval_refs,
                                                     cfg.seed, dist.device, max_inplane, progress=progress))

"""`sixd-pose train detector`: the correlation detector, from scratch, on rendered samples.

Each step draws a few training objects, renders queries of each (object at a random pose,
centre and scale among distractors, over clutter, colour-jittered), encodes a random subset of
the object's references and applies the paper's losses (balanced BCE on the centre heatmap, L2
on log2 scale and sub-cell offset). Evaluation at the end runs on held-out objects only.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sixd_pose_ros.models.detector import Detector, DetectorConfig, decode, detector_loss, targets_from_ground_truth
from sixd_pose_ros.training.pose_samples import DetectorSample, detector_sample, pose_object
from sixd_pose_ros.training.trainer import (
    TrainConfig, finish_training, make_optimizer, optimizer_step, prepare_model, start_run, wrap_model,
    report_progress,
)


def images_to_tensor(images: list[np.ndarray] | np.ndarray, device) -> torch.Tensor:
    """(B,H,W,3) uint8 -> (B,3,H,W) float in [0,1]."""
    arr = np.ascontiguousarray(np.stack(images) if isinstance(images, list) else images)
    return torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _batch(samples: list[DetectorSample]):
    return ([s.query for s in samples], np.stack([s.center_xy for s in samples]),
            np.array([s.box_px for s in samples]))


def box_iou(c1, s1, c2, s2) -> float:
    """IoU of two axis-aligned squares given by centre and side."""
    lo = np.maximum(c1 - s1 / 2, c2 - s2 / 2)
    hi = np.minimum(c1 + s1 / 2, c2 + s2 / 2)
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    return inter / (s1 * s1 + s2 * s2 - inter)


@torch.no_grad()
def evaluate_detector(model: Detector, n_objects: int, n_samples: int, n_refs: int, seed: int,
                      device, n_distractors: int = 2, progress: bool = False) -> dict:
    """Held-out objects: median centre error (px), median relative scale error, recall at IoU 0.5."""
    model.eval()
    rng = np.random.default_rng((seed, 999))
    center_err, scale_err, hits = [], [], []
    per_object = max(1, n_samples // n_objects)
    for i in tqdm(range(n_objects), desc="eval detector", disable=not progress):
        obj = pose_object("heldout", i, n_refs=n_refs)
        refs = model.encode_references(images_to_tensor(obj.refs.images, device))
        others = [pose_object("heldout", 1_000_000 + j, n_refs=4) for j in rng.integers(0, 50, n_distractors)]
        samples = [detector_sample(obj, others, rng) for _ in range(per_object)]
        queries, centers, boxes = _batch(samples)
        out = model(images_to_tensor(queries, device), refs)
        for det, c, b in zip(decode(out, queries[0].shape[:2], model.cfg.ref_size), centers, boxes):
            center_err.append(float(np.linalg.norm(det.center_xy - c)))
            scale_err.append(abs(det.box_size / b - 1.0))
            hits.append(box_iou(det.center_xy, det.box_size, c, b) >= 0.5)
    model.train()
    return {"median_center_error_px": float(np.median(center_err)),
            "median_scale_error": float(np.median(scale_err)),
            "recall_iou_0.5": float(np.mean(hits)), "samples": len(hits),
            "objects": n_objects, "query_size": [256, 256]}


def train_detector(cfg: TrainConfig, out_dir: Path, progress: bool = True) -> dict:
    dist, rng = start_run(cfg)
    model_cfg = DetectorConfig.preset(cfg.model_preset)
    model = prepare_model(Detector(model_cfg), cfg, dist)
    net = wrap_model(model, dist)
    opt, sched = make_optimizer(model, cfg)
    groups = int(cfg.extra.get("objects_per_step", 2))
    refs_per_step = int(cfg.extra.get("refs_per_step", 16))
    per_group = max(1, cfg.batch_size // groups)
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="train detector", disable=not (progress and dist.is_main))
    for step in bar:
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(groups):
            obj = pose_object("train", int(rng.integers(cfg.train_objects)), n_refs=cfg.n_refs)
            others = [pose_object("train", int(j), n_refs=cfg.n_refs)
                      for j in rng.integers(cfg.train_objects, size=int(rng.integers(0, 3)))]
            samples = [detector_sample(obj, others, rng) for _ in range(per_group)]
            queries, centers, boxes = _batch(samples)
            ref_idx = rng.choice(len(obj.refs), size=min(refs_per_step, len(obj.refs)), replace=False)
            refs = model.encode_references(images_to_tensor(obj.refs.images[ref_idx], dist.device))
            out = net(images_to_tensor(queries, dist.device), refs)
            targets = targets_from_ground_truth(centers, boxes, tuple(out.heatmap_logits.shape[-2:]),
                                                out.stride, model_cfg.ref_size, device=dist.device)
            loss = detector_loss(out, targets)["loss"] / groups
            loss.backward()
            total += float(loss.detach())
        optimizer_step(model, opt, sched)
        losses.append(total)
        report_progress(bar, step, cfg, losses, started)
    seconds = time.perf_counter() - started
    return finish_training("detector", model, model_cfg, cfg, dist, out_dir, seconds, losses,
                           lambda: evaluate_detector(model, cfg.eval_objects, cfg.eval_samples, cfg.n_refs, cfg.seed,
                                                  dist.device, progress=progress))

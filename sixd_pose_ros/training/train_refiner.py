"""`sixd-pose train refiner`: the volume refiner, from scratch, on rendered samples.

Each sample is a training object at a random ground-truth pose, an input pose perturbed from it
(up to 15 degrees, 10 % depth, 10 px), the query crop of the input pose (rendered directly in its
object-centred crop camera, over clutter) and the references nearest the input viewpoint; the
loss is the paper's: distance between volume grid points moved by the predicted and by the true
similarity. Evaluation runs the real inference path (crop a full image, refine, re-crop) on
held-out objects and reports ADD-0.1d before and after 1, 2 and 3 iterations.
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from sixd_pose_ros.geometry.pose_errors import add_error
from sixd_pose_ros.geometry.rotations import random_rotations
from sixd_pose_ros.models.refiner import (
    RefinerConfig,
    VolumeRefiner,
    grid_alignment_loss,
    iterative_refine,
    similarity_targets,
)
from sixd_pose_ros.render.renderer import render
from sixd_pose_ros.training.pose_samples import (
    PoseObject,
    metric_translation,
    perturb_pose,
    pose_object,
    random_lighting,
    refiner_sample,
)
from sixd_pose_ros.training.scenes import jitter_color, random_texture
from sixd_pose_ros.training.train_detector import images_to_tensor
from sixd_pose_ros.training.trainer import (
    TrainConfig, finish_training, make_optimizer, optimizer_step, prepare_model, start_run, wrap_model,
    report_progress,
)


def refiner_config(cfg: TrainConfig) -> RefinerConfig:
    """The model preset: 'cpu' uses a 16^3 volume (4-10x cheaper to train), 'gpu' the paper's 32^3."""
    if cfg.model_preset == "cpu":
        return RefinerConfig(grid_size=16, **cfg.extra.get("model", {}))
    if cfg.model_preset == "gpu":
        return RefinerConfig(grid_size=32, base_width=32, feat_channels=48, **cfg.extra.get("model", {}))
    raise ValueError(f"unknown refiner preset {cfg.model_preset!r}: use cpu or gpu")


def _tensor(x, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device)


def refiner_batch(model: VolumeRefiner, samples, objects: dict, device):
    """Model inputs and similarity targets for a list of RefinerSample."""
    S = model.config.crop_size
    crops = images_to_tensor([s.crop for s in samples], device)
    ref_imgs = np.concatenate([objects[s.key].refs.images[s.ref_idx] for s in samples])
    feats = model.encode_references(images_to_tensor(ref_imgs, device))
    feats = feats.reshape(len(samples), -1, *feats.shape[1:])
    K_ref = _tensor(np.stack([objects[s.key].refs.K[s.ref_idx] for s in samples]), device)
    R_ref = _tensor(np.stack([objects[s.key].refs.R[s.ref_idx] for s in samples]), device)
    t_ref = _tensor(np.stack([objects[s.key].refs.t[s.ref_idx] for s in samples]), device)
    K_q = _tensor(np.stack([s.K_crop for s in samples]), device)
    R_in = _tensor(np.stack([s.R_in for s in samples]), device)
    t_in = _tensor(np.stack([s.t_in for s in samples]), device)
    target = similarity_targets(R_in.double(), t_in.double(), _tensor(np.stack([s.R_gt for s in samples]), device).double(),
                                _tensor(np.stack([s.t_gt for s in samples]), device).double(), K_q.double(), S)
    target = type(target)(*(x.float() for x in target))
    return (crops, K_q, R_in, t_in, feats, K_ref, R_ref, t_ref), target


def _full_image(obj: PoseObject, R: np.ndarray, t_n: np.ndarray, K: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """640x480 image of obj at (R, t_n) (normalized units) over clutter."""
    out = render([obj.mesh], R, metric_translation(obj, R, t_n), K, 640, 480, lighting=random_lighting(rng))
    background = cv2.resize(random_texture(rng, 256), (640, 480))
    return jitter_color(np.where(out.mask[0][..., None] > 0, out.rgb[0], background), rng)


@torch.no_grad()
def evaluate_refiner(model: VolumeRefiner, n_objects: int, n_samples: int, n_refs: int, seed: int,
                     device, iterations: int = 3, progress: bool = False) -> dict:
    """ADD-0.1d recall on held-out objects, from ground truth perturbed by up to 15 deg, 10 %
    depth and 10 px, before refinement and after each of `iterations` steps."""
    model.eval()
    rng = np.random.default_rng((seed, 12345))
    K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1.0]])
    per_object = max(1, n_samples // n_objects)
    hits = np.zeros((iterations + 1,), np.int64)
    errors = [[] for _ in range(iterations + 1)]
    total = 0
    for i in tqdm(range(n_objects), desc="eval refiner", disable=not progress):
        obj = pose_object("heldout", i, n_refs=n_refs)
        feats_all = model.encode_references(images_to_tensor(obj.refs.images, device)).cpu().numpy()
        points = (obj.mesh.vertices - obj.center) / obj.scale
        diameter = float(np.max(np.linalg.norm(points[:, None] - points[None, ::7], axis=-1)))

        def refs_near(R, t, _obj=obj, _f=feats_all):
            idx = _obj.refs.nearest(R, k=model.config.n_refs, t_query=t)
            return _f[idx], _obj.refs.K[idx], _obj.refs.R[idx], _obj.refs.t[idx]

        for _ in range(per_object):
            R_gt = random_rotations(1, rng)[0]
            d = 1.0 / np.sin(np.arctan(2.0 ** rng.uniform(-1, 1) * 120 / 1200.0))
            ray = np.linalg.solve(K, [rng.uniform(200, 440), rng.uniform(150, 330), 1.0])
            t_gt = d * ray / np.linalg.norm(ray)
            image = _full_image(obj, R_gt, t_gt, K, rng)
            R, t = perturb_pose(R_gt, t_gt, K, rng)
            for it in range(iterations + 1):
                if it:
                    R, t = iterative_refine(model, image, K, R, t, refs_near, n_iters=1)
                err = add_error(R, t, R_gt, t_gt, points)
                errors[it].append(err / diameter)
                hits[it] += err < 0.1 * diameter
            total += 1
    model.train()
    recall = {("add_0.1d_input" if it == 0 else f"add_0.1d_iter{it}"): float(hits[it] / total)
              for it in range(iterations + 1)}
    return recall | {"median_add_over_diameter_input": float(np.median(errors[0])),
                     f"median_add_over_diameter_iter{iterations}": float(np.median(errors[-1])),
                     "samples": total, "objects": n_objects}


def train_refiner(cfg: TrainConfig, out_dir: Path, progress: bool = True) -> dict:
    dist, rng = start_run(cfg)
    model_cfg = refiner_config(cfg)
    model = prepare_model(VolumeRefiner(model_cfg), cfg, dist)
    net = wrap_model(model, dist)
    opt, sched = make_optimizer(model, cfg)
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="train refiner", disable=not (progress and dist.is_main))
    for step in bar:
        objects = {}
        samples = []
        for _ in range(cfg.batch_size):
            obj = pose_object("train", int(rng.integers(cfg.train_objects)), n_refs=cfg.n_refs)
            objects[obj.key] = obj
            samples.append(refiner_sample(obj, rng, n_near=model_cfg.n_refs))
        inputs, target = refiner_batch(model, samples, objects, dist.device)
        loss = grid_alignment_loss(net(*inputs), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_step(model, opt, sched)
        losses.append(float(loss.detach()))
        report_progress(bar, step, cfg, losses, started)
    seconds = time.perf_counter() - started
    return finish_training("refiner", model, model_cfg, cfg, dist, out_dir, seconds, losses,
                           lambda: evaluate_refiner(model, cfg.eval_objects, cfg.eval_samples, cfg.n_refs, cfg.seed,
                                                  dist.device, progress=progress))

"""`sixd-pose train autoencoder`: the disentangled shape/pose autoencoder of known-model mode.

One encoder serves every object: it is trained on many procedural training objects to map an
augmented crop (box jitter, clutter, occluder, light, colour) to the canonical view of the same
rotation, with a contrastive shape code and a rotation-tied pose code. Each step shows the same
rotations on several objects, which is what teaches the pose code to ignore shape.

Evaluation builds a small codebook for each held-out object with the trained encoder and reports
how well codebook retrieval recovers the rotation of augmented crops (symmetry-aware error).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sixd_pose_ros.geometry.rotations import geodesic_angle, random_rotations
from sixd_pose_ros.models.autoencoder import AutoencoderConfig, DisentangledAutoencoder, ShapeEmbedding
from sixd_pose_ros.objects.codebook import as_encoder, build_codebook
from sixd_pose_ros.render.procedural import make_object
from sixd_pose_ros.render.procedural.symmetry import symmetry_rotations
from sixd_pose_ros.training.pose_samples import autoencoder_samples, occluder_meshes
from sixd_pose_ros.training.train_detector import images_to_tensor
from sixd_pose_ros.training.trainer import (
    TrainConfig, finish_training, make_optimizer, optimizer_step, prepare_model, start_run, wrap_model,
    report_progress,
)


class _LossModule(nn.Module):
    """The autoencoder's loss as a forward(), so DistributedDataParallel syncs its gradients;
    the shape bank is a buffer here, which DDP broadcasts from rank 0."""

    def __init__(self, model: DisentangledAutoencoder, bank: ShapeEmbedding) -> None:
        super().__init__()
        self.model, self.bank = model, bank

    def forward(self, batch: dict) -> dict:
        return self.model.loss(batch, self.bank)


def autoencoder_batch(samples, object_ids: list[int], device) -> dict:
    return {
        "crop": images_to_tensor([s.crop for s in samples], device),
        "target_rgb": images_to_tensor([s.target_rgb for s in samples], device),
        "target_depth": torch.from_numpy(np.stack([s.target_depth for s in samples]))[:, None].to(device),
        "mask": torch.from_numpy(np.stack([s.mask for s in samples]))[:, None].float().to(device),
        "R": torch.from_numpy(np.stack([s.R for s in samples])).float().to(device),
        "object_id": torch.tensor(object_ids, dtype=torch.long, device=device),
    }


@torch.no_grad()
def evaluate_autoencoder(model: DisentangledAutoencoder, n_objects: int, n_samples: int, seed: int,
                         subdivisions: int = 2, n_inplane: int = 18, progress: bool = False) -> dict:
    """Codebook retrieval on held-out objects: median symmetry-aware rotation error of the top-1
    hit for augmented crops, and the fraction within 15 and 30 degrees."""
    model.eval()
    rng = np.random.default_rng((seed, 4242))
    occluders = occluder_meshes(4, 1_000_000)
    errors = []
    per_object = max(1, n_samples // n_objects)
    for i in tqdm(range(n_objects), desc="eval autoencoder", disable=not progress):
        obj = make_object("heldout", i)
        codebook = build_codebook(obj.mesh, as_encoder(model), subdivisions=subdivisions,
                                  n_inplane=n_inplane, progress=False)
        symmetries = symmetry_rotations(obj)
        samples = autoencoder_samples("heldout", i, random_rotations(per_object, rng), rng, occluders=occluders)
        _, z_p = model.encode(images_to_tensor([s.crop for s in samples], next(model.parameters()).device))
        hits, _ = codebook.lookup(z_p.cpu().numpy(), k=1)
        for s, hit in zip(samples, hits[:, 0]):
            R_est = codebook.rotation(int(hit))
            errors.append(float(np.degrees(np.min(geodesic_angle(R_est, s.R @ symmetries)))))
    model.train()
    errors = np.asarray(errors)
    return {"median_rotation_error_deg": float(np.median(errors)),
            "within_15deg": float(np.mean(errors < 15)), "within_30deg": float(np.mean(errors < 30)),
            "samples": int(len(errors)), "objects": n_objects,
            "codebook": f"{10 * 4 ** subdivisions + 2} views x {n_inplane} in-plane"}


def train_autoencoder(cfg: TrainConfig, out_dir: Path, progress: bool = True) -> dict:
    dist, rng = start_run(cfg)
    model_cfg = AutoencoderConfig.preset(cfg.model_preset)
    model = prepare_model(DisentangledAutoencoder(model_cfg), cfg, dist)
    bank = ShapeEmbedding.from_config(model_cfg, cfg.train_objects).to(dist.device)
    net = wrap_model(_LossModule(model, bank), dist)
    opt, sched = make_optimizer(model, cfg)
    per_step = int(cfg.extra.get("objects_per_step", 4))
    rotations_per_object = max(1, cfg.batch_size // per_step)
    occluders = occluder_meshes(8, cfg.train_objects)  # training split, outside the object pool
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="train autoencoder", disable=not (progress and dist.is_main))
    for step in bar:
        ids = rng.choice(cfg.train_objects, size=per_step, replace=False)
        rotations = random_rotations(rotations_per_object, rng)  # the same rotations on every object
        samples, sample_ids = [], []
        for i in ids:
            samples += autoencoder_samples("train", int(i), rotations, rng, occluders=occluders)
            sample_ids += [int(i)] * rotations_per_object
        out = net(autoencoder_batch(samples, sample_ids, dist.device))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer_step(model, opt, sched)
        losses.append(float(out["loss"].detach()))
        report_progress(bar, step, cfg, losses, started, recon=float(out["recon"]))
    seconds = time.perf_counter() - started
    return finish_training("autoencoder", model, model_cfg, cfg, dist, out_dir, seconds, losses,
                           lambda: evaluate_autoencoder(model, cfg.eval_objects, cfg.eval_samples, cfg.seed,
                                                        progress=progress))

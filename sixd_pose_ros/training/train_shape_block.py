"""`sixd-pose train shape_block`: retrain the conditioned block B of a trained autoencoder.

Why a stage of its own: in the joint autoencoder training B's loss weighs 0.002 against the
reconstruction, and after a CPU-sized run its codes over all rotations were nearly one vector
(mean pairwise cosine 0.9997): a mesh-free codebook B(z_o, R) could not tell rotations apart.
Here the encoder is frozen and B alone is trained, on what it is used for: given the pose code
z_p of a crop and the object's shape code z_o, the true rotation must score highest among
candidate rotations (InfoNCE, temperature 0.07, negatives that the object's symmetry makes
equivalent to the truth masked out), plus the paper's cosine regression of z_p.

The encoder's outputs are computed once for a pool of augmented crops of training objects
(rendering dominates the cost), then B trains over the pool for many cheap steps. The saved
autoencoder.pt is the input autoencoder with the new B; its encoder is bit-identical, but the
file's identity changes, so object databases are rebuilt once (build-object says so).
"""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry.rotations import geodesic_angle, random_rotations
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_autoencoder, load_weights
from sixd_pose_ros.objects.codebook import as_encoder, build_codebook
from sixd_pose_ros.objects.shape_codebook import rotations_without_mesh, shape_code_of
from sixd_pose_ros.render.procedural import make_object
from sixd_pose_ros.render.procedural.symmetry import symmetry_rotations
from sixd_pose_ros.training.pose_samples import autoencoder_samples, occluder_meshes
from sixd_pose_ros.training.train_detector import images_to_tensor
from sixd_pose_ros.training.trainer import (
    TrainConfig, finish_training, make_optimizer, optimizer_step, report_progress, start_run,
)


def encode_pool(autoencoder, n_objects: int, per_object: int, rng: np.random.Generator, device,
                progress: bool = True) -> dict[str, torch.Tensor]:
    """Frozen-encoder outputs for augmented crops of training objects 0..n_objects-1:
    ``z_o (N, d)``, ``z_p (N, d)``, ``R (N, 3, 3)``, and ``symmetries`` (list of (S, 3, 3))."""
    occluders = occluder_meshes(4, 1_000_000)
    z_o, z_p, R, syms = [], [], [], []
    for i in tqdm(range(n_objects), desc="encode pool", disable=not progress):
        samples = autoencoder_samples("train", i, random_rotations(per_object, rng), rng, occluders=occluders)
        with torch.no_grad():
            zo, zp = autoencoder.encode(images_to_tensor([s.crop for s in samples], device))
        z_o.append(zo)
        z_p.append(zp)
        R.append(torch.from_numpy(np.stack([s.R for s in samples])).float())
        sym = torch.from_numpy(symmetry_rotations(make_object("train", i))).float()
        syms += [sym] * len(samples)
    return {"z_o": torch.cat(z_o), "z_p": torch.cat(z_p), "R": torch.cat(R).to(device), "symmetries": syms}


def _equivalent(R_true: torch.Tensor, candidates: torch.Tensor, symmetries: list[torch.Tensor],
                max_deg: float) -> torch.Tensor:
    """(N, K) bool: candidate k is within ``max_deg`` of a symmetric equivalent of R_true[n]."""
    cos_max = float(np.cos(np.radians(max_deg)))
    out = torch.zeros(candidates.shape[:2], dtype=torch.bool, device=candidates.device)
    for n, sym in enumerate(symmetries):
        eq = R_true[n] @ sym.to(R_true.device)  # (S, 3, 3)
        tr = torch.einsum("sij,kij->sk", eq, candidates[n])  # trace(eq^T cand)
        out[n] = ((tr - 1) / 2 >= cos_max).any(0)
    return out


def shape_block_loss(block, z_o: torch.Tensor, z_p: torch.Tensor, R: torch.Tensor, negatives: torch.Tensor,
                     symmetries: list[torch.Tensor], temperature: float = 0.07,
                     regression_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """InfoNCE of the true rotation against ``negatives (N, K, 3, 3)`` plus 1 - cos regression."""
    candidates = torch.cat([R[:, None], negatives], 1)  # (N, 1 + K, 3, 3), the truth first
    codes = block.codes_for(z_o, candidates)  # (N, 1 + K, d)
    logits = (codes * F.normalize(z_p, dim=-1)[:, None]).sum(-1) / temperature
    masked = _equivalent(R, negatives, symmetries, 15.0)
    logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(masked, float("-inf"))], 1)
    nce = F.cross_entropy(logits, torch.zeros(len(R), dtype=torch.long, device=R.device))
    regression = (1.0 - logits[:, 0] * temperature).mean()
    accuracy = (logits.argmax(1) == 0).float().mean()
    return {"loss": nce + regression_weight * regression, "nce": nce.detach(), "regression": regression.detach(),
            "accuracy": accuracy.detach()}


def train_shape_block(cfg: TrainConfig, out_dir: Path, progress: bool = True) -> dict:
    dist, rng = start_run(cfg)
    if dist.world_size > 1:
        raise SixdPoseError("train shape_block runs in one process (B trains in minutes even on a CPU; the "
                            "pool encoding is the cost): run it without torchrun")
    source = Path(cfg.init_from or WEIGHTS_DIR / "autoencoder.pt")  # the autoencoder whose B is retrained
    autoencoder = load_autoencoder(source).to(dist.device)  # (init_from: read here, not by prepare_model)
    autoencoder.eval()
    for p in autoencoder.parameters():
        p.requires_grad_(False)
    block = autoencoder.cond_block
    for p in block.parameters():
        p.requires_grad_(True)
    block.train()
    pool = encode_pool(autoencoder, cfg.train_objects, int(cfg.extra.get("crops_per_object", 16)), rng,
                       dist.device, progress and dist.is_main)
    n_neg = int(cfg.extra.get("negatives", 63))
    opt, sched = make_optimizer(block, cfg)
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="train shape block", disable=not (progress and dist.is_main))
    n = len(pool["R"])
    for step in bar:
        idx = rng.choice(n, size=min(cfg.batch_size, n), replace=False)
        negatives = torch.from_numpy(random_rotations(len(idx) * n_neg, rng)).float().to(dist.device)
        parts = shape_block_loss(block, pool["z_o"][idx], pool["z_p"][idx], pool["R"][idx],
                                 negatives.reshape(len(idx), n_neg, 3, 3), [pool["symmetries"][i] for i in idx])
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer_step(block, opt, sched)
        losses.append(float(parts["loss"].detach()))
        report_progress(bar, step, cfg, losses, started, accuracy=float(parts["accuracy"]))
    seconds = time.perf_counter() - started
    autoencoder.eval()
    model_config = load_weights(source)["config"]
    return finish_training("autoencoder", autoencoder, model_config, cfg, dist, out_dir, seconds, losses,
                           lambda: _metrics(autoencoder, cfg, progress))


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
    """Per-method and per-family retrieval errors on held-out objects 0..n_objects-1.

    Three codebooks for the same augmented crops of each object (see
    :mod:`sixd_pose_ros.evaluation.shape_codebook_eval`, the ``eval-shape-codebook`` command):
    ``rendered`` (the mesh rendered and encoded), ``B(query)`` (``B(z_o, R)`` with the crop's own
    shape code) and ``B(refs)`` (with the mean shape code of ``n_refs`` other photos). Errors are
    symmetry-aware (the object's symmetry group from the generator).
    """
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


def _metrics(autoencoder, cfg: TrainConfig, progress: bool) -> dict:
    report = evaluate_shape_codebook(autoencoder, cfg.eval_objects, max(1, cfg.eval_samples // cfg.eval_objects),
                                     seed=cfg.seed, progress=progress)
    flat = {}
    for method, summary in report["methods"].items():
        for key, value in summary.items():
            flat[f"{method}/{key}"] = value
    return flat | {"codebook": report["codebook"], "note": "the encoder is unchanged; only B was retrained"}

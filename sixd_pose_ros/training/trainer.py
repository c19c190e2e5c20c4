"""What every training run shares: config files, seeding, (distributed) devices, the loop's
bookkeeping, atomic weight files and the model card written next to them.

One command trains on 2 CPU cores or on GPUs: `torchrun --nproc_per_node=N` sets the usual
environment (RANK, WORLD_SIZE, LOCAL_RANK) and the same code wraps the model in
DistributedDataParallel; samples are rendered on the fly from per-rank seeds, so no sampler is
needed and ranks never see the same sample.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import sys
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.io import atomic_write_text
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_weights, save_weights  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of one training run; loaded from config/train_<model>_<profile>.yaml."""

    model: str = "detector"  # detector | refiner
    model_preset: str = "cpu"  # the model's size preset (cpu | gpu)
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    train_objects: int = 300  # training-split objects sampled from
    n_refs: int = 32  # references per object
    eval_objects: int = 10  # held-out objects for the evaluation at the end
    eval_samples: int = 100
    log_every: int = 50
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
    # Bit-identical reruns: oneDNN (mkldnn) CPU kernels vary in the last bits with buffer
    # alignment, so they are switched off (about 1.5x slower on CPU); cuDNN is pinned likewise.
    deterministic: bool = True
    init_from: str = ""  # weights file to start from (continue or fine-tune a run), "" = scratch
    extra: dict = field(default_factory=dict)  # model-specific settings

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise SixdPoseError(f"training config {path} not found: use one of the files in "
                                f"config/ (e.g. config/train_detector_cpu.yaml)")
        data = yaml.safe_load(path.read_text()) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SixdPoseError(f"unknown keys {sorted(unknown)} in {path}: valid keys are {sorted(known)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.mkldnn.enabled = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistInfo:
    """Single process by default; DDP when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return DistInfo(rank=dist.get_rank(), world_size=world, device=device)


def wrap_model(model: torch.nn.Module, dist_info: DistInfo) -> torch.nn.Module:
    if dist_info.world_size <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def write_model_card(path: Path, *, name: str, cfg: TrainConfig, model_config: Any, n_params: int,
                     weight_bytes: int, seconds: float, steps_done: int, losses: list[float],
                     metrics: dict, dist_info: DistInfo, command: str) -> None:
    """Markdown + JSON next to the weights: data, steps, seed, time, hardware, metrics."""
    hardware = {"device": str(dist_info.device), "world_size": dist_info.world_size,
                "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                "platform": platform.platform(), "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    card = {"name": name, "train_config": dataclasses.asdict(cfg),
            "model_config": dataclasses.asdict(model_config) if dataclasses.is_dataclass(model_config)
            else model_config,
            "parameters": n_params, "weights_bytes": weight_bytes, "train_seconds": round(seconds, 1),
            "steps": steps_done, "final_loss": float(np.mean(losses[-50:])) if losses else None,
            "loss_curve": [float(x) for x in losses[:: max(1, len(losses) // 100)]],
            "metrics": metrics, "hardware": hardware, "command": command,
            "data": f"procedural training objects ('train', 0..{cfg.train_objects - 1}) rendered on the "
                    f"fly; evaluation on held-out objects ('heldout', 0..{cfg.eval_objects - 1}), "
                    f"never seen in training",
            "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(path.with_suffix(".json"), json.dumps(card, indent=1))
    lines = [f"# Model card: {name}", "",
             f"- Trained by: `{command}`",
             f"- Data: {card['data']}",
             f"- Steps: {steps_done} x batch {cfg.batch_size} (seed {cfg.seed}), {seconds / 60:.1f} min on "
             f"{hardware['device']} ({hardware['cpu_count']} CPUs, {hardware['torch_threads']} torch threads"
             f"{', ' + hardware['gpu'] if hardware['gpu'] else ''}, world size {dist_info.world_size})",
             f"- Parameters: {n_params:,}; weights file: {weight_bytes / 1e6:.2f} MB",
             f"- Final training loss (mean of last 50 steps): {card['final_loss']}",
             "", "## Held-out metrics", ""]
    lines += [f"- {k}: {v}" for k, v in metrics.items()]
    atomic_write_text(path.with_suffix(".md"), "\n".join(lines) + "\n")


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig):
    """AdamW with a one-cycle schedule over cfg.steps (5 % warm-up): what both stages use."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # OneCycleLR divides by (pct_start * steps - 1): exactly one warm-up step (steps = 20) is a
    # division by zero, so that one case warms up a little longer.
    pct_start = 0.05 if abs(0.05 * cfg.steps - 1.0) > 1e-9 else 0.1
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=pct_start)
    return opt, sched


def optimizer_step(model: torch.nn.Module, opt, sched, max_grad_norm: float = 5.0) -> None:
    """Apply the gradients already accumulated: clip their norm, step, advance the schedule.
    The same three steps in every trainer (some accumulate over groups before calling it)."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.step()
    sched.step()


def finish_training(name: str, model: torch.nn.Module, model_config: Any, cfg: TrainConfig,
                    dist_info: DistInfo, out_dir: Path, seconds: float, losses: list[float],
                    evaluate) -> dict:
    """On the main rank: held-out evaluation, weights (<name>.pt) and model card beside them."""
    result = {"train_seconds": seconds, "final_loss": float(np.mean(losses[-50:])) if losses else None}
    if not dist_info.is_main:
        return result
    metrics = evaluate()
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{name}.pt"
    nbytes = save_weights(weights, model, model_config, {"train_config": dataclasses.asdict(cfg)})
    write_model_card(weights.with_name(f"{name}_card"), name=name, cfg=cfg, model_config=model_config,
                     n_params=sum(p.numel() for p in model.parameters()), weight_bytes=nbytes,
                     seconds=seconds, steps_done=cfg.steps, losses=losses, metrics=metrics,
                     dist_info=dist_info, command=" ".join(["sixd-pose"] + sys.argv[1:]))
    return result | {"metrics": metrics, "weights": str(weights), "weights_bytes": nbytes}


def maybe_init_from(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Start from cfg.init_from when set: a later, longer run continues an earlier one."""
    if cfg.init_from:
        model.load_state_dict(load_weights(cfg.init_from)["state_dict"])


def start_run(cfg: TrainConfig) -> tuple[DistInfo, np.random.Generator]:
    """Devices (and DDP under torchrun), seeds, CPU threads, and the run's sample stream (one
    per rank, so ranks never render the same sample)."""
    dist_info = setup_distributed()
    seed_everything(cfg.seed + dist_info.rank, cfg.deterministic)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return dist_info, np.random.default_rng((cfg.seed, dist_info.rank))


def prepare_model(model: torch.nn.Module, cfg: TrainConfig, dist_info: DistInfo) -> torch.nn.Module:
    """The model on the run's device, started from cfg.init_from when given."""
    model = model.to(dist_info.device)
    maybe_init_from(model, cfg)
    return model


def report_progress(bar, step: int, cfg: TrainConfig, losses: list, started: float, **parts: float) -> None:
    """Every ``cfg.log_every`` steps: the loss on the progress bar, or, when the bar is off
    (``--no-progress``, a log file, a cluster job), a log line with the rate and time left."""
    if step % cfg.log_every:
        return
    loss = float(np.mean(losses[-cfg.log_every:]))
    extra = {k: f"{v:.3f}" for k, v in parts.items()}
    if not getattr(bar, "disable", True):
        bar.set_postfix(loss=f"{loss:.4f}", **extra)
        return
    per_step = (time.perf_counter() - started) / (step + 1)
    log.info("step %d/%d: loss %.4f%s, %.2f s/step, %.0f min left", step + 1, cfg.steps, loss,
             "".join(f", {k} {v}" for k, v in extra.items()), per_step, per_step * (cfg.steps - step - 1) / 60)

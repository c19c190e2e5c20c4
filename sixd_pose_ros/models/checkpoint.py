"""Weight files: one .pt per network holding its state_dict and the config that built it.

Weights ship inside the package (sixd_pose_ros/weights/, with a model card beside each), so a
robot needs no download; a user's own training writes the same format anywhere.
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import torch

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.io import atomic_write_bytes, file_sha256

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def save_weights(path: Path, model: torch.nn.Module, model_config: Any, extra: dict | None = None) -> int:
    """state_dict + the model's config in one .pt file, written atomically; returns bytes."""
    buf = io.BytesIO()
    config = dataclasses.asdict(model_config) if dataclasses.is_dataclass(model_config) else model_config
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "config": config, "extra": extra or {}, "format": 1}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return len(buf.getvalue())


def load_weights(path: str | Path) -> dict:
    """The dict save_weights wrote; a clear error when the file is missing or not ours."""
    path = Path(path)
    if not path.is_file():
        raise SixdPoseError(f"weights file {path} not found: train it with `sixd-pose train ...` "
                            f"or reinstall the package (weights ship in sixd_pose_ros/weights)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SixdPoseError(f"cannot read weights {path} ({exc}): the file is corrupt; retrain or "
                            f"reinstall the package") from exc
    if not isinstance(data, dict) or data.get("format") != 1 or "state_dict" not in data:
        raise SixdPoseError(f"{path} is not a sixd_pose_ros weights file (format 1)")
    return data


def _load_model(path: Path, config_cls, model_cls, device):
    """Build model_cls(config_cls(**saved config)) and load its weights, in eval mode. Lists in
    the saved config (JSON-like) become the tuples the frozen config dataclasses hold."""
    data = load_weights(path)
    cfg = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["config"].items()})
    model = model_cls(cfg)
    model.load_state_dict(data["state_dict"])
    return model.to(device).eval()


def load_detector(path: str | Path | None = None, device: str | torch.device = "cpu"):
    """The detector (weights/detector.pt by default), in eval mode."""
    from sixd_pose_ros.models.detector import Detector, DetectorConfig

    return _load_model(Path(path) if path else WEIGHTS_DIR / "detector.pt", DetectorConfig, Detector, device)


def load_refiner(path: str | Path | None = None, device: str | torch.device = "cpu"):
    """The volume refiner (weights/refiner.pt by default), in eval mode."""
    from sixd_pose_ros.models.refiner import RefinerConfig, VolumeRefiner

    return _load_model(Path(path) if path else WEIGHTS_DIR / "refiner.pt", RefinerConfig, VolumeRefiner, device)


def load_autoencoder(path: str | Path | None = None, device: str | torch.device = "cpu"):
    """The shape/pose autoencoder (weights/autoencoder.pt by default), in eval mode."""
    from sixd_pose_ros.models.autoencoder import AutoencoderConfig, DisentangledAutoencoder

    return _load_model(Path(path) if path else WEIGHTS_DIR / "autoencoder.pt", AutoencoderConfig,
                       DisentangledAutoencoder, device)


def load_selector(path: str | Path | None = None, device: str | torch.device = "cpu"):
    """The viewpoint selector of model-free mode (weights/selector.pt by default), in eval mode."""
    from sixd_pose_ros.models.selector import SelectorConfig, ViewpointSelector

    return _load_model(Path(path) if path else WEIGHTS_DIR / "selector.pt", SelectorConfig, ViewpointSelector,
                       device)


def weights_identity(path: str | Path) -> str:
    """sha256 of a weights file: what object databases record to detect stale codebooks."""
    return file_sha256(path)

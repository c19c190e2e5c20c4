"""Plain-Python helpers the launch files share (no `launch` import here, so they are testable
where launch is not installed).
"""
from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["parse_objects", "node_parameters", "as_bool", "PACKAGE", "EXECUTABLE", "CONFIG_FILE", "RVIZ_FILE"]

PACKAGE = "sixd_pose_ros"
EXECUTABLE = "sixd_pose_node"
CONFIG_FILE = "sixd_pose_node.yaml"
RVIZ_FILE = "sixd_pose.rviz"


def as_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean launch argument: use true or false")


def parse_objects(text: str) -> list[str]:
    """Object folders from a launch argument: a YAML list (``[/a, /b]``) or comma-separated
    (``/a,/b``); empty -> [] (the parameter file's ``objects`` is kept)."""
    text = (text or "").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"objects:={text} is not a YAML list of folders ({exc.problem})") from exc
        if not isinstance(value, list):
            raise ValueError(f"objects:={text} is not a list of folders")
        return [str(v) for v in value if str(v).strip()]
    return [part.strip() for part in text.split(",") if part.strip()]


def node_parameters(config: str, *, mode: str, use_sim_time: str, objects: str = "", weights_dir: str = "",
                    extra: dict | None = None) -> list:
    """The ``parameters=`` list of the node: the YAML file, then overrides from launch arguments
    (only those that were given, so the file's values stay otherwise)."""
    if not Path(config).is_file():
        raise FileNotFoundError(f"config file {config} not found: pass config:=/path/to/{CONFIG_FILE}")
    overrides: dict = {"mode": mode, "use_sim_time": as_bool(use_sim_time)}
    folders = parse_objects(objects)
    if folders:
        overrides["objects"] = folders
    if weights_dir.strip():
        overrides["weights_dir"] = weights_dir.strip()
    overrides.update(extra or {})
    return [config, overrides]

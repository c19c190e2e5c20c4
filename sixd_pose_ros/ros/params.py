"""The node's parameters: declared up front with descriptions, validated with one clear message
per bad value.

All parameters are declared with dynamic typing so that a value of the wrong type (``objects:=
/a/b`` instead of ``[/a/b]``, ``min_score:=1`` for 1.0) reaches :func:`validate_params` and gets
a message naming the fix instead of an rclpy type exception at start-up. Values are read at
``configure``; change them, then run cleanup + configure (or restart the node).

``use_sim_time`` is rclpy's own parameter and is not handled here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from sixd_pose_ros.errors import SixdPoseError

__all__ = ["ParameterError", "NodeParams", "PARAMETERS", "MODES", "validate_params", "declare_parameters",
           "read_parameters"]

MODES = ("known_model", "model_free")
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")

# name -> (default, description). The defaults here are the ones config/sixd_pose_node.yaml documents.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "mode": ("known_model", "known_model (objects given as database folders built from meshes) or "
                            "model_free (folders built from posed reference images, `build-object --images`)"),
    "objects": (None, "list of object database folders (sixd-pose build-object output), e.g. "
                      "[/home/robot/objects/drill]; the folder's object name names topics and TF frames"),
    "weights_dir": ("", "folder with detector.pt, autoencoder.pt and refiner.pt; empty = the weights shipped "
                        "with the package"),
    "topics.image": ("color/image_raw", "colour image topic (rgb8/bgr8/mono8), relative to the node's namespace"),
    "topics.depth": ("aligned_depth_to_color/image_raw", "depth image registered to the colour image "
                                                         "(16UC1 mm or 32FC1 m)"),
    "topics.camera_info": ("color/camera_info", "camera_info of the colour image"),
    "frames.tf_prefix": ("sixd_", "TF child frame of an object = <tf_prefix><object name>"),
    "frames.camera_frame": ("", "override the camera frame of the outputs; empty = the colour image's frame_id"),
    "min_score": (0.3, "detections scoring below this (0..1) are reported absent: no pose, no TF"),
    "refine_iterations": (0, "volume refiner iterations per object (0 = codebook pose only; the shipped "
                                "CPU-trained refiner does not improve poses yet, see its model card)"),
    "use_depth": (True, "subscribe to depth and align poses to it; false = RGB only"),
    "depth_proposals": (4, "with depth: segments of the depth image standing off the table that are tried per "
                           "object besides the detector's peaks (0 = the detector's peaks only; model_free: "
                           "metric references only)"),
    "rotation_search": (6, "with depth: rotations of a coarse grid fitted to each depth segment, tried besides the "
                           "codebook's hits or the selector's viewpoints (0 = off; each costs one quick depth "
                           "alignment; model_free: objects whose references had depth)"),
    "tracking.enabled": (True, "after a confident pose, later frames start from the previous pose and run "
                               "refinement only (needs depth; without it every frame runs detection)"),
    "tracking.min_health": (0.5, "a tracked pose whose depth agreement (0..1) is below this is lost: not "
                                 "published; a detection needs a little more to start a track"),
    "tracking.max_lost_frames": (2, "this many lost frames in a row end a track: the next frame runs full "
                                    "detection"),
    "max_rate_hz": (0.0, "process at most this many frames per second (0 = as fast as the estimator runs)"),
    "slop": (0.05, "approximate-time sync: max stamp difference (s) between image, depth and camera_info"),
    "queue_size": (10, "approximate-time sync: messages kept per input"),
    "publish_tf": (True, "broadcast camera -> <tf_prefix><object> on /tf"),
    "publish_markers": (True, "publish ~/markers (mesh, or a box when the mesh cannot be shown)"),
    "publish_debug_image": (True, "publish ~/debug_image (boxes and axes drawn over the colour image)"),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages"),
    "warn_period": (5.0, "the same warning is logged at most once per this many seconds"),
    "backend": ("auto", "inference backend: auto (TensorRT on a GPU, else the fastest CPU runtime), tensorrt, "
                        "onnxruntime or torch; a missing one falls back with a warning"),
    "precision": ("fp16", "TensorRT precision: fp16 or fp32"),
    "num_threads": (0, "torch CPU threads for the estimator (0 = torch's default)"),
    "autostart": (True, "sixd_pose_node configures and activates itself at start; false = wait for a "
                        "lifecycle manager"),
}


class ParameterError(SixdPoseError):
    """One or more parameters are invalid; the message has one line per bad value with its fix."""


@dataclass(frozen=True)
class NodeParams:
    mode: str
    objects: tuple[str, ...]
    weights_dir: str
    image_topic: str
    depth_topic: str
    camera_info_topic: str
    tf_prefix: str
    camera_frame: str
    min_score: float
    refine_iterations: int
    use_depth: bool
    depth_proposals: int
    rotation_search: int
    tracking_enabled: bool
    tracking_min_health: float
    tracking_max_lost_frames: int
    max_rate_hz: float
    slop: float
    queue_size: int
    publish_tf: bool
    publish_markers: bool
    publish_debug_image: bool
    diagnostics_period: float
    warn_period: float
    num_threads: int
    backend: str
    precision: str
    autostart: bool


def _as_bool(name, v, problems):
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    problems.append(f"{name}: {v!r} is not a boolean; use {name}:=true or {name}:=false")
    return False


def _as_float(name, v, problems, lo=None, hi=None, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        problems.append(f"{name}: {v!r} is not a number; e.g. {name}:={PARAMETERS[name][0]}")
        return float("nan")
    v = float(v)
    if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
        rng = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}{']' if hi is not None else ')'}"
        problems.append(f"{name}: {v} is out of range {rng}; the default is {PARAMETERS[name][0]}")
    return v


def _as_int(name, v, problems, lo=None):
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        problems.append(f"{name}: {v!r} is not an integer; e.g. {name}:={PARAMETERS[name][0]}")
        return 0
    if lo is not None and v < lo:
        problems.append(f"{name}: {v} must be >= {lo}; the default is {PARAMETERS[name][0]}")
    return v


def _as_topic(name, v, problems):
    if not isinstance(v, str) or not v.strip():
        problems.append(f"{name}: {v!r} is not a topic name; e.g. {name}:={PARAMETERS[name][0]}")
        return ""
    if any(c.isspace() for c in v) or v.endswith("/") or "//" in v:
        problems.append(f"{name}: {v!r} is not a valid topic name (no spaces, no empty tokens)")
    return v


def validate_params(values: Mapping[str, Any], check_paths: bool = True) -> NodeParams:
    """Check every parameter (missing ones take their defaults) and return them typed.

    Raises:
        ParameterError: one line per bad value, each naming the fix.
    """
    unknown = sorted(set(values) - set(PARAMETERS) - {"use_sim_time"})
    if unknown:
        raise ValueError(f"unknown parameters {unknown}")
    v = {k: (values[k] if values.get(k) is not None else d) for k, (d, _) in PARAMETERS.items()}
    problems: list[str] = []

    mode = v["mode"]
    if mode not in MODES:
        problems.append(f"mode: {mode!r} is not a mode; use mode:=known_model (or model_free)")

    objects = v["objects"]
    if isinstance(objects, str):
        objects = [objects] if objects.strip() else []
    if objects is None or (isinstance(objects, (list, tuple)) and len(objects) == 0):
        problems.append("objects: no object given; build one with `sixd-pose build-object --mesh FILE --unit mm "
                        "--name NAME` and pass objects:=[/path/to/objects/NAME]")
        objects = []
    elif not isinstance(objects, (list, tuple)) or not all(isinstance(o, str) for o in objects):
        problems.append(f"objects: {objects!r} is not a list of folders; e.g. objects:=[/path/to/objects/drill]")
        objects = []
    else:
        objects = [str(o) for o in objects]
        if check_paths:
            for o in objects:
                p = Path(o).expanduser()
                if not p.is_dir():
                    problems.append(f"objects: {o} is not a folder; build it with `sixd-pose build-object` or fix "
                                    f"the path")
                elif not (p / "object.json").is_file():
                    problems.append(f"objects: {o} has no object.json, so it is not an object database; point at "
                                    f"the folder `sixd-pose build-object` wrote (objects/NAME)")
        dups = sorted({Path(o).name for o in objects if [Path(x).name for x in objects].count(Path(o).name) > 1})
        if dups:
            problems.append(f"objects: folder names {dups} appear twice; give each object its own name")

    weights = v["weights_dir"]
    if not isinstance(weights, str):
        problems.append(f"weights_dir: {weights!r} is not a path; e.g. weights_dir:=/path/to/weights or empty")
        weights = ""
    elif weights and check_paths:
        wp = Path(weights).expanduser()
        needed = ["detector.pt", "selector.pt" if mode == "model_free" else "autoencoder.pt"]
        if not wp.is_dir():
            problems.append(f"weights_dir: {weights} is not a folder; leave it empty for the shipped weights")
        else:
            if isinstance(v["refine_iterations"], int) and v["refine_iterations"] > 0:
                needed.append("refiner.pt")
            missing = [n for n in needed if not (wp / n).is_file()]
            if missing:
                problems.append(f"weights_dir: {weights} lacks {missing}; train them (`sixd-pose train ...`) or "
                                f"leave weights_dir empty for the shipped weights")

    image = _as_topic("topics.image", v["topics.image"], problems)
    depth = _as_topic("topics.depth", v["topics.depth"], problems)
    info = _as_topic("topics.camera_info", v["topics.camera_info"], problems)
    prefix = v["frames.tf_prefix"]
    if not isinstance(prefix, str) or prefix.startswith("/") or any(c.isspace() for c in prefix):
        problems.append(f"frames.tf_prefix: {prefix!r} must be a string without spaces or a leading '/' "
                        f"(TF frame ids are not rooted); e.g. frames.tf_prefix:=sixd_")
        prefix = ""
    camera_frame = v["frames.camera_frame"]
    if not isinstance(camera_frame, str) or any(c.isspace() for c in camera_frame):
        problems.append(f"frames.camera_frame: {camera_frame!r} must be a frame id without spaces (or empty)")
        camera_frame = ""

    backend = v["backend"]
    if backend not in BACKENDS:
        problems.append(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}; e.g. backend:=auto")
        backend = "auto"
    precision = v["precision"]
    if precision not in ("fp16", "fp32"):
        problems.append(f"precision: {precision!r} must be fp16 or fp32")
        precision = "fp16"

    params = NodeParams(
        mode=mode if isinstance(mode, str) else "",
        objects=tuple(objects),
        weights_dir=weights,
        image_topic=image, depth_topic=depth, camera_info_topic=info,
        tf_prefix=prefix, camera_frame=camera_frame.lstrip("/"),
        min_score=_as_float("min_score", v["min_score"], problems, 0.0, 1.0),
        refine_iterations=_as_int("refine_iterations", v["refine_iterations"], problems, 0),
        use_depth=_as_bool("use_depth", v["use_depth"], problems),
        depth_proposals=_as_int("depth_proposals", v["depth_proposals"], problems, 0),
        rotation_search=_as_int("rotation_search", v["rotation_search"], problems, 0),
        tracking_enabled=_as_bool("tracking.enabled", v["tracking.enabled"], problems),
        tracking_min_health=_as_float("tracking.min_health", v["tracking.min_health"], problems, 0.0, 1.0),
        tracking_max_lost_frames=_as_int("tracking.max_lost_frames", v["tracking.max_lost_frames"], problems, 1),
        max_rate_hz=_as_float("max_rate_hz", v["max_rate_hz"], problems, 0.0),
        slop=_as_float("slop", v["slop"], problems, 0.0, 10.0, lo_open=True),
        queue_size=_as_int("queue_size", v["queue_size"], problems, 1),
        publish_tf=_as_bool("publish_tf", v["publish_tf"], problems),
        publish_markers=_as_bool("publish_markers", v["publish_markers"], problems),
        publish_debug_image=_as_bool("publish_debug_image", v["publish_debug_image"], problems),
        diagnostics_period=_as_float("diagnostics_period", v["diagnostics_period"], problems, 0.0, lo_open=True),
        warn_period=_as_float("warn_period", v["warn_period"], problems, 0.0),
        num_threads=_as_int("num_threads", v["num_threads"], problems, 0),
        backend=backend, precision=precision,
        autostart=_as_bool("autostart", v["autostart"], problems),
    )
    if problems:
        raise ParameterError("invalid parameters:\n  " + "\n  ".join(problems))
    return params


def declare_parameters(node) -> None:
    """Declare every parameter on ``node`` (dynamic typing; see the module docstring)."""
    from rcl_interfaces.msg import ParameterDescriptor

    for name, (default, text) in PARAMETERS.items():
        shown = "[]" if default is None else repr(default)
        node.declare_parameter(name, default, ParameterDescriptor(
            name=name, description=f"{text} (default {shown}; read at configure)", dynamic_typing=True))


def read_parameters(node) -> dict:
    """The declared parameters' current values (None where unset)."""
    return {name: node.get_parameter(name).value for name in PARAMETERS}

"""The node's parameters: declared up front with descriptions, ranges and read-only flags,
validated with one clear message per bad value.

All parameters are declared with dynamic typing so that a value of the wrong type (``objects:=
/a/b`` instead of ``[/a/b]``, ``min_score:=1`` for 1.0) reaches :func:`validate_params` and gets
a message naming the fix instead of an rclpy type exception at start-up. Numbers carry their
range in the descriptor (``ros2 param describe``, rqt_reconfigure's sliders), and
:func:`validate_params` checks the same :data:`RANGES`.

Two kinds (:data:`LIVE`): thresholds, rates, tracking and frame settings apply to the next frame
when set on a running node (``ros2 param set``); the others shape what configure builds (the
estimator, its weights and objects, the subscriptions, the publishers) and are ``read_only``:
give them at start (params file, ``-p``, launch arguments).

Camera topics are not parameters: the node subscribes to the relative names ``image`` (or
``image/compressed`` with ``image_transport:=compressed``), ``depth`` and ``camera_info``, which
the launch files remap to the camera's topics (:mod:`sixd_pose_ros.ros.launch_support`).

Defaults are written once: the estimator's parameters take theirs from its settings
(pipeline/settings.py, pipeline/tracking.py), the node's own ones are written in
:data:`PARAMETERS`, and config/sixd_pose_node.yaml documents the same values (a test checks it).
ros/estimator_loader.py maps the validated parameters to the estimator's settings.

``use_sim_time`` is rclpy's own parameter and is not handled here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.pipeline.settings import FEATURE_DETECTION_MODES, EstimatorSettings, KnownModelConfig
from sixd_pose_ros.pipeline.tracking import TrackerConfig

__all__ = ["ParameterError", "NodeParams", "PARAMETERS", "MODES", "LIVE", "RANGES", "REMOVED", "validate_params",
           "declare_parameters", "read_parameters", "unknown_parameter_problems", "live_fields"]

MODES = ("known_model", "model_free")
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")

# The estimator's defaults (pipeline/settings.py) and the tracker's (pipeline/tracking.py) are the
# node's: they are written there, never here. Tracking is off in the estimator's own default (one
# frame at a time, as evaluation wants) and on in the node's (TrackerConfig's default).
_EST, _TRACK = EstimatorSettings(), TrackerConfig()

# name -> (default, description). config/sixd_pose_node.yaml documents exactly these defaults
# (test/test_ros_params.py checks it).
PARAMETERS: dict[str, tuple[Any, str]] = {
    "mode": ("known_model", "known_model (objects given as database folders built from meshes) or "
                            "model_free (folders built from posed reference images, `build-object --images`)"),
    "objects": (None, "list of object database folders (sixd-pose build-object output), e.g. "
                      "[/home/robot/objects/drill]; the folder's object name names topics and TF frames"),
    "weights_dir": ("", "folder with detector.pt, autoencoder.pt and refiner.pt; empty = the weights shipped "
                        "with the package"),
    "image_transport": ("raw", "raw: subscribe to `image` (sensor_msgs/Image, rgb8/bgr8/mono8); compressed: to "
                               "`image/compressed` (sensor_msgs/CompressedImage, JPEG or PNG)"),
    "frames.tf_prefix": ("sixd_", "TF child frame of an object = <tf_prefix><object name>"),
    "frames.camera_frame": ("", "override the camera frame of the outputs; empty = the colour image's frame_id"),
    "frames.output_frame": ("", "publish poses and detections in this frame (e.g. base_link), transformed through "
                                "TF at the image stamp; empty = the camera frame. TF of the objects keeps the "
                                "camera as parent"),
    "min_score": (_EST.min_detection_score,
                  "detections scoring below this (0..1) are reported absent: no pose, no TF"),
    "refine_iterations": (_EST.refine_iterations,
                          "volume refiner iterations per object (0 = codebook pose only; the shipped CPU-trained "
                          "refiner does not improve poses yet, see its model card)"),
    "use_depth": (_EST.use_depth, "subscribe to depth and align poses to it; false = RGB only"),
    "depth_proposals": (_EST.depth_proposals,
                        "with depth: segments of the depth image standing off the table that are tried per object "
                        "besides the detector's peaks (0 = the detector's peaks only; model_free: metric references "
                        "only)"),
    "rotation_search": (_EST.rotation_search,
                        "with depth: rotations of a coarse grid fitted to each depth segment, tried besides the "
                        "codebook's hits or the selector's viewpoints (0 = off; each costs one quick depth "
                        "alignment; model_free: objects whose references had depth)"),
    "feature_detection": (KnownModelConfig.feature_detection,
                          "known_model: where objects are looked for. always: the templates correlated over the "
                          "whole image (finds objects the depth does not separate); without_depth: that on frames "
                          "without depth, the trained detector and the depth segments on frames with depth "
                          "(quicker); off: the trained detector only"),
    "exclusion_max_inside": (KnownModelConfig.exclusion_max_inside,
                             "known_model, and model_free objects with a fused surface: of two objects' poses "
                             "that fill the same space (more than this fraction "
                             "(0..1) of one's surface inside the other's box) only the better-scoring is published "
                             "(0 = off: for objects that really sit inside one another, a part in a bin)"),
    "place_retries": (KnownModelConfig.place_retries,
                      "known_model, with depth and exclusion_max_inside > 0: times an object whose pose collides "
                      "with a better one, or that the camera sees through, chooses again against the depth the "
                      "kept poses leave unexplained (0 = the exclusion alone: about 1.3x quicker detection frames "
                      "with many objects, fewer objects right in clutter)"),
    "tracking.enabled": (_TRACK.enabled,
                         "after a confident pose, later frames start from the previous pose and run refinement only "
                         "(needs depth; without it every frame runs detection)"),
    "tracking.min_health": (_TRACK.min_health,
                            "a tracked pose whose depth agreement (0..1) is below this is lost: not published; a "
                            "detection needs a little more to start a track"),
    "tracking.max_lost_frames": (_TRACK.max_lost_frames,
                                 "this many lost frames in a row end a track: the next frame runs full detection"),
    "depth.min_valid_fraction": (0.05, "a depth image with fewer valid pixels (0..1 of the image; 0 or NaN = no "
                                       "measurement) is unusable: the frame runs RGB-only, its estimates marked so"),
    "depth.min_valid_in_box": (0.2, "an object whose box holds fewer valid depth pixels (0..1 of the box) gets its "
                                    "RGB-only estimate instead, marked so"),
    "depth.rgb_only_score_scale": (0.5, "RGB-only estimates (depth unusable) publish score x this (0..1), and "
                                        "min_score applies after it: never the confidence of an RGB-D estimate"),
    "max_pixels": (2_073_600, "colour images with more pixels than this (default 1920x1080) are downscaled to fit "
                              "(K scaled to match; poses are unaffected) or refused, see oversize"),
    "oversize": ("downscale", "what to do with an image above max_pixels: downscale or refuse (with a message)"),
    "max_rate_hz": (0.0, "process at most this many frames per second (0 = as fast as the estimator runs)"),
    "slop": (0.05, "approximate-time sync: max stamp difference (s) between image, depth and camera_info"),
    "queue_size": (10, "approximate-time sync: messages kept per input (the input subscriptions keep at least 30)"),
    "reliable_inputs": (False, "subscribe to the camera topics reliably (the camera must publish reliably; a slow "
                               "node then slows the camera); false = best effort, the sensor-data QoS"),
    "publish_tf": (True, "broadcast camera -> <tf_prefix><object> on /tf"),
    "publish_markers": (True, "publish ~/markers (mesh, or a box when the mesh cannot be shown)"),
    "publish_debug_image": (True, "publish ~/debug_image (boxes and axes drawn over the colour image)"),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages"),
    "warn_period": (5.0, "the same warning is logged at most once per this many seconds"),
    "backend": (_EST.backend, "inference backend: auto (TensorRT on a GPU, else the fastest CPU runtime), "
                              "tensorrt, onnxruntime or torch; a missing one falls back with a warning"),
    "precision": (_EST.precision, "TensorRT precision: fp16 or fp32"),
    "num_threads": (0, "torch CPU threads for the estimator (0 = torch's default)"),
    "autostart": (True, "sixd_pose_node configures and activates itself at start; false = wait for a "
                        "lifecycle manager (the launch files set it false and drive the transitions themselves)"),
}

# Numeric ranges [lo, hi] (inclusive), shown in the descriptors and checked by validate_params.
# slop must also be > 0 (validate_params says so; a descriptor range cannot be open).
RANGES: dict[str, tuple[float, float]] = {
    "min_score": (0.0, 1.0),
    "refine_iterations": (0, 50),
    "depth_proposals": (0, 64),
    "rotation_search": (0, 504),
    "exclusion_max_inside": (0.0, 1.0),
    "place_retries": (0, 10),
    "tracking.min_health": (0.0, 1.0),
    "tracking.max_lost_frames": (1, 1000),
    "depth.min_valid_fraction": (0.0, 1.0),
    "depth.min_valid_in_box": (0.0, 1.0),
    "depth.rgb_only_score_scale": (0.0, 1.0),
    "max_pixels": (4096, 100_000_000),
    "max_rate_hz": (0.0, 1000.0),
    "slop": (0.0, 10.0),
    "queue_size": (1, 1000),
    "diagnostics_period": (0.05, 3600.0),
    "warn_period": (0.0, 3600.0),
    "num_threads": (0, 1024),
}

# Applied to the next frame when set on a configured node; every other parameter is read-only.
LIVE = frozenset({"min_score", "exclusion_max_inside", "depth.min_valid_fraction", "depth.min_valid_in_box",
                  "depth.rgb_only_score_scale", "max_pixels", "oversize", "tracking.enabled", "tracking.min_health",
                  "tracking.max_lost_frames", "max_rate_hz", "slop", "diagnostics_period", "warn_period",
                  "frames.tf_prefix", "frames.camera_frame", "frames.output_frame"})

# Parameters that existed once: a params file that still sets them is told what replaced them.
REMOVED = {
    "topics.image": "camera topics are remapped now: -r image:=/camera/camera/color/image_raw (the launch files' "
                    "camera_namespace argument does it)",
    "topics.depth": "camera topics are remapped now: -r depth:=/camera/camera/aligned_depth_to_color/image_raw (the "
                    "launch files' camera_namespace argument does it)",
    "topics.camera_info": "camera topics are remapped now: -r camera_info:=/camera/camera/color/camera_info (the "
                          "launch files' camera_namespace argument does it)",
}

# Parameters rclpy or ROS tools set on every node; never "unknown".
_ROS_OWN = ("use_sim_time", "start_type_description_service")


class ParameterError(SixdPoseError):
    """One or more parameters are invalid; the message has one line per bad value with its fix.

    ``problems`` holds those lines again as (parameter name, line) pairs, so that code which
    cares about some parameters (the node refusing a ``ros2 param set``) picks their lines by
    name instead of reading the message.
    """

    def __init__(self, summary: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        self.problems = tuple(problems)
        super().__init__(summary + "".join(f"\n  {line}" for _, line in self.problems))

    def lines_for(self, names: Iterable[str]) -> list[str]:
        """The problem lines about any of ``names``, in the order of the message."""
        wanted = set(names)
        return [line for name, line in self.problems if name in wanted]


class _Problems(list):
    """The (parameter name, line) pairs of one validation; each line starts with its name, as
    ``ros2 param set`` users write it, and goes on with the fix."""

    def add(self, name: str, text: str) -> None:
        self.append((name, f"{name}: {text}"))


@dataclass(frozen=True)
class NodeParams:
    mode: str
    objects: tuple[str, ...]
    weights_dir: str
    image_transport: str
    tf_prefix: str
    camera_frame: str
    output_frame: str
    min_score: float
    refine_iterations: int
    use_depth: bool
    depth_proposals: int
    rotation_search: int
    feature_detection: str
    exclusion_max_inside: float
    place_retries: int
    depth_min_valid_fraction: float
    depth_min_valid_in_box: float
    rgb_only_score_scale: float
    max_pixels: int
    oversize: str
    tracking_enabled: bool
    tracking_min_health: float
    tracking_max_lost_frames: int
    max_rate_hz: float
    slop: float
    queue_size: int
    reliable_inputs: bool
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
    problems.add(name, f"{v!r} is not a boolean; use {name}:=true or {name}:=false")
    return False


def _as_float(name, v, problems, lo_open=False):
    lo, hi = RANGES.get(name, (None, None))
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        problems.add(name, f"{v!r} is not a number; e.g. {name}:={PARAMETERS[name][0]}")
        return float("nan")
    v = float(v)
    if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
        rng = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}{']' if hi is not None else ')'}"
        problems.add(name, f"{v} is out of range {rng}; the default is {PARAMETERS[name][0]}")
    return v


def _as_int(name, v, problems):
    lo, hi = RANGES.get(name, (None, None))
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        problems.add(name, f"{v!r} is not an integer; e.g. {name}:={PARAMETERS[name][0]}")
        return 0
    if lo is not None and v < lo:
        problems.add(name, f"{v} must be >= {lo}; the default is {PARAMETERS[name][0]}")
    elif hi is not None and v > hi:
        problems.add(name, f"{v} must be <= {hi}; the default is {PARAMETERS[name][0]}")
    return v


def _as_frame(name, v, problems):
    if not isinstance(v, str) or any(c.isspace() for c in v):
        problems.add(name, f"{v!r} must be a frame id without spaces (or empty)")
        return ""
    return v.lstrip("/")


def validate_params(values: Mapping[str, Any], check_paths: bool = True) -> NodeParams:
    """Check every parameter (missing ones take their defaults) and return them typed.

    Raises:
        ParameterError: one line per bad value, each naming the fix.
    """
    unknown = sorted(set(values) - set(PARAMETERS) - set(_ROS_OWN))
    if unknown:
        raise ParameterError("invalid parameters:", unknown_parameter_problems(unknown))
    v = {k: (values[k] if values.get(k) is not None else d) for k, (d, _) in PARAMETERS.items()}
    problems = _Problems()

    mode = v["mode"]
    if mode not in MODES:
        problems.add("mode", f"{mode!r} is not a mode; use mode:=known_model (or model_free)")

    objects = v["objects"]
    if isinstance(objects, str):
        objects = [objects] if objects.strip() else []
    if objects is None or (isinstance(objects, (list, tuple)) and len(objects) == 0):
        problems.add("objects", "no object given; build one with `sixd-pose build-object --mesh FILE --unit mm "
                                "--name NAME` and pass objects:=[/path/to/objects/NAME]")
        objects = []
    elif not isinstance(objects, (list, tuple)) or not all(isinstance(o, str) for o in objects):
        problems.add("objects", f"{objects!r} is not a list of folders; e.g. objects:=[/path/to/objects/drill]")
        objects = []
    else:
        objects = [str(o) for o in objects]
        if check_paths:
            for o in objects:
                p = Path(o).expanduser()
                if not p.is_dir():
                    problems.add("objects", f"{o} is not a folder; build it with `sixd-pose build-object` or fix "
                                            f"the path")
                elif not (p / "object.json").is_file():
                    problems.add("objects", f"{o} has no object.json, so it is not an object database; point at "
                                            f"the folder `sixd-pose build-object` wrote (objects/NAME)")
        dups = sorted({Path(o).name for o in objects if [Path(x).name for x in objects].count(Path(o).name) > 1})
        if dups:
            problems.add("objects", f"folder names {dups} appear twice; give each object its own name")

    weights = v["weights_dir"]
    if not isinstance(weights, str):
        problems.add("weights_dir", f"{weights!r} is not a path; e.g. weights_dir:=/path/to/weights or empty")
        weights = ""
    elif weights and check_paths:
        wp = Path(weights).expanduser()
        needed = ["detector.pt", "selector.pt" if mode == "model_free" else "autoencoder.pt"]
        if not wp.is_dir():
            problems.add("weights_dir", f"{weights} is not a folder; leave it empty for the shipped weights")
        else:
            if isinstance(v["refine_iterations"], int) and v["refine_iterations"] > 0:
                needed.append("refiner.pt")
            missing = [n for n in needed if not (wp / n).is_file()]
            if missing:
                problems.add("weights_dir", f"{weights} lacks {missing}; train them (`sixd-pose train ...`) or "
                                            f"leave weights_dir empty for the shipped weights")

    transport = v["image_transport"]
    if transport not in ("raw", "compressed"):
        problems.add("image_transport", f"{transport!r} must be raw or compressed (remap image/compressed to a "
                                        f"CompressedImage topic for the latter)")
        transport = "raw"
    prefix = v["frames.tf_prefix"]
    if not isinstance(prefix, str) or prefix.startswith("/") or any(c.isspace() for c in prefix):
        problems.add("frames.tf_prefix", f"{prefix!r} must be a string without spaces or a leading '/' "
                                         f"(TF frame ids are not rooted); e.g. frames.tf_prefix:=sixd_")
        prefix = ""
    camera_frame = _as_frame("frames.camera_frame", v["frames.camera_frame"], problems)
    output_frame = _as_frame("frames.output_frame", v["frames.output_frame"], problems)

    backend = v["backend"]
    if backend not in BACKENDS:
        problems.add("backend", f"{backend!r} is not one of {', '.join(BACKENDS)}; e.g. backend:=auto")
        backend = "auto"
    precision = v["precision"]
    if precision not in ("fp16", "fp32"):
        problems.add("precision", f"{precision!r} must be fp16 or fp32")
        precision = "fp16"

    feature_detection = v["feature_detection"]
    if feature_detection not in FEATURE_DETECTION_MODES:
        problems.add("feature_detection", f"{feature_detection!r} must be one of {', '.join(FEATURE_DETECTION_MODES)}")
        feature_detection = KnownModelConfig.feature_detection

    oversize = v["oversize"]
    if oversize not in ("downscale", "refuse"):
        problems.add("oversize", f"{oversize!r} must be downscale or refuse")
        oversize = "downscale"

    params = NodeParams(
        mode=mode if isinstance(mode, str) else "",
        objects=tuple(objects),
        weights_dir=weights,
        image_transport=transport,
        tf_prefix=prefix, camera_frame=camera_frame, output_frame=output_frame,
        min_score=_as_float("min_score", v["min_score"], problems),
        refine_iterations=_as_int("refine_iterations", v["refine_iterations"], problems),
        use_depth=_as_bool("use_depth", v["use_depth"], problems),
        depth_proposals=_as_int("depth_proposals", v["depth_proposals"], problems),
        rotation_search=_as_int("rotation_search", v["rotation_search"], problems),
        feature_detection=feature_detection,
        exclusion_max_inside=_as_float("exclusion_max_inside", v["exclusion_max_inside"], problems),
        place_retries=_as_int("place_retries", v["place_retries"], problems),
        depth_min_valid_fraction=_as_float("depth.min_valid_fraction", v["depth.min_valid_fraction"], problems),
        depth_min_valid_in_box=_as_float("depth.min_valid_in_box", v["depth.min_valid_in_box"], problems),
        rgb_only_score_scale=_as_float("depth.rgb_only_score_scale", v["depth.rgb_only_score_scale"], problems),
        max_pixels=_as_int("max_pixels", v["max_pixels"], problems),
        oversize=oversize,
        tracking_enabled=_as_bool("tracking.enabled", v["tracking.enabled"], problems),
        tracking_min_health=_as_float("tracking.min_health", v["tracking.min_health"], problems),
        tracking_max_lost_frames=_as_int("tracking.max_lost_frames", v["tracking.max_lost_frames"], problems),
        max_rate_hz=_as_float("max_rate_hz", v["max_rate_hz"], problems),
        slop=_as_float("slop", v["slop"], problems, lo_open=True),
        queue_size=_as_int("queue_size", v["queue_size"], problems),
        reliable_inputs=_as_bool("reliable_inputs", v["reliable_inputs"], problems),
        publish_tf=_as_bool("publish_tf", v["publish_tf"], problems),
        publish_markers=_as_bool("publish_markers", v["publish_markers"], problems),
        publish_debug_image=_as_bool("publish_debug_image", v["publish_debug_image"], problems),
        diagnostics_period=_as_float("diagnostics_period", v["diagnostics_period"], problems),
        warn_period=_as_float("warn_period", v["warn_period"], problems),
        num_threads=_as_int("num_threads", v["num_threads"], problems),
        backend=backend, precision=precision,
        autostart=_as_bool("autostart", v["autostart"], problems),
    )
    if problems:
        raise ParameterError("invalid parameters:", problems)
    return params


def unknown_parameter_problems(names) -> list[tuple[str, str]]:
    """One (name, line) per unknown parameter name: what replaced a removed one, else the closest
    valid name (a typo in a params file would otherwise leave the default in force without a
    word). The pairs are ParameterError's ``problems``."""
    import difflib

    lines = _Problems()
    for name in sorted(names):
        if name in REMOVED:
            lines.add(name, f"removed; {REMOVED[name]}")
            continue
        close = difflib.get_close_matches(name, list(PARAMETERS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"the parameters are: {', '.join(sorted(PARAMETERS))}"
        lines.add(name, f"not a parameter of this node; {hint}")
    return lines


# NodeParams field of each parameter that applies live.
_FIELDS = {"min_score": "min_score", "exclusion_max_inside": "exclusion_max_inside",
           "tracking.enabled": "tracking_enabled", "tracking.min_health": "tracking_min_health",
           "tracking.max_lost_frames": "tracking_max_lost_frames",
           "depth.min_valid_fraction": "depth_min_valid_fraction", "depth.min_valid_in_box": "depth_min_valid_in_box",
           "depth.rgb_only_score_scale": "rgb_only_score_scale", "max_pixels": "max_pixels", "oversize": "oversize",
           "max_rate_hz": "max_rate_hz", "slop": "slop", "diagnostics_period": "diagnostics_period",
           "warn_period": "warn_period", "frames.tf_prefix": "tf_prefix", "frames.camera_frame": "camera_frame",
           "frames.output_frame": "output_frame"}


def live_fields(old: NodeParams, new: NodeParams) -> dict[str, Any]:
    """{NodeParams field: new value} of the live parameters that differ between two validated sets."""
    return {f: getattr(new, f) for f in (_FIELDS[n] for n in LIVE) if getattr(old, f) != getattr(new, f)}


def _descriptor(name: str, text: str, default, with_range: bool = True):
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    shown = "[]" if default is None else repr(default)
    live = name in LIVE
    when = "applies to the next frame when set" if live else "read-only: give it at start (params file, -p, launch)"
    d = ParameterDescriptor(name=name, description=f"{text} (default {shown}; {when})", dynamic_typing=True,
                            read_only=not live)
    if with_range and name in RANGES:
        lo, hi = RANGES[name]
        if isinstance(default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
            d.additional_constraints = "> 0" if name == "slop" else ""
        else:
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
    return d


def declare_parameters(node) -> None:
    """Declare every parameter on ``node`` (dynamic typing, ranges, read-only; see the module
    docstring). A start-up value outside its range is declared without the range so that
    configure reports it with its fix instead of rclpy raising in the constructor."""
    from rclpy.exceptions import InvalidParameterValueException

    for name, (default, text) in PARAMETERS.items():
        try:
            node.declare_parameter(name, default, _descriptor(name, text, default))
        except InvalidParameterValueException:
            node.declare_parameter(name, default, _descriptor(name, text, default, with_range=False))


def read_parameters(node) -> dict:
    """The declared parameters' current values (None where unset)."""
    return {name: node.get_parameter(name).value for name in PARAMETERS}

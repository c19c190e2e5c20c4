"""`sixd-pose`: the package's command line.

Subcommands parse their arguments here and call one function each; user-facing errors
(SixdPoseError) print one line that names the fix and exit with status 2, no traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.pipeline.settings import FEATURE_DETECTION_MODES, EstimatorSettings, KnownModelConfig


def _cmd_synth(args: argparse.Namespace) -> None:
    from sixd_pose_ros.training.synth import PRESETS, get_preset, synthesize, with_overrides

    if args.list_presets:
        for p in PRESETS.values():
            print(f"{p.name:10s} {p.scenes} scenes x {p.frames_per_scene} frames, {len(p.objects)} "
                  f"{p.split} objects: {p.description}")
        return
    if args.out is None:
        raise SixdPoseError("--out DIR is required: the folder to create for the dataset")
    preset = with_overrides(get_preset(args.preset), args.scenes, args.frames, args.seed)
    formats = tuple(args.format.split(","))
    info = synthesize(preset, Path(args.out), formats=formats, storage=args.storage,
                      overwrite=args.overwrite, progress=not args.no_progress)
    print(f"wrote {info['frames']} frames ({info['instances']} annotated instances, "
          f"{len(info['objects'])} objects) to {args.out} as {'+'.join(formats)}: "
          f"{info['frames_per_second_render']:.2f} frames/s, {info['seconds_total']:.1f} s in all")


def _cmd_demo(args: argparse.Namespace) -> None:
    from sixd_pose_ros.demo import run_demo

    run_demo(Path(args.out), progress=not args.no_progress)


def _cmd_bench_render(args: argparse.Namespace) -> None:
    from sixd_pose_ros.evaluation.bench_render import run

    run(Path(args.out) if args.out else None, backend=args.backend, min_seconds=args.seconds)


def _cmd_train(args: argparse.Namespace) -> None:
    import json

    from sixd_pose_ros.training.trainer import WEIGHTS_DIR, TrainConfig

    config = Path(args.config) if args.config else _default_train_config(args.model)
    cfg = TrainConfig.from_yaml(config, steps=args.steps, seed=args.seed, init_from=args.init_from)
    if cfg.model != args.model:
        raise SixdPoseError(f"{config} configures a {cfg.model}, not a {args.model}: pass a "
                            f"config/train_{args.model}_*.yaml file")
    out = Path(args.out) if args.out else WEIGHTS_DIR
    if args.model == "detector":
        from sixd_pose_ros.training.train_detector import train_detector as train
    elif args.model == "refiner":
        from sixd_pose_ros.training.train_refiner import train_refiner as train
    elif args.model == "selector":
        from sixd_pose_ros.training.train_selector import train_selector as train
    elif args.model == "shape_block":
        from sixd_pose_ros.training.train_shape_block import train_shape_block as train
    else:
        from sixd_pose_ros.training.train_autoencoder import train_autoencoder as train
    result = train(cfg, out, progress=not args.no_progress)
    print(json.dumps(result, indent=1))


def _default_train_config(model: str) -> Path:
    """config/train_<model>_cpu.yaml from the source tree or the installed share/ folder."""
    name = f"train_{model}_cpu.yaml"
    candidates = [Path(__file__).resolve().parents[1] / "config" / name]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("sixd_pose_ros")) / "config" / name)
    except Exception:  # not installed through colcon: the source tree is the place
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise SixdPoseError(f"no {name} found (looked in {', '.join(map(str, candidates))}): pass --config")


def _cmd_eval_stages(args: argparse.Namespace) -> None:
    from sixd_pose_ros.evaluation.stages import eval_stages
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR

    eval_stages(Path(args.weights) if args.weights else WEIGHTS_DIR, args.objects, args.samples, args.seed,
                Path(args.out) if args.out else None, progress=not args.no_progress)


def _cmd_eval_shape_codebook(args: argparse.Namespace) -> None:
    from sixd_pose_ros.evaluation.shape_codebook_eval import run_shape_codebook_eval
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR

    run_shape_codebook_eval(Path(args.weights) if args.weights else WEIGHTS_DIR, Path(args.out) if args.out else None,
                            n_objects=args.objects, samples_per_object=args.samples, n_refs=args.refs,
                            seed=args.seed, progress=not args.no_progress)


def _cmd_bench_stages(args: argparse.Namespace) -> None:
    from sixd_pose_ros.evaluation.stages import bench_stages
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR

    bench_stages(Path(args.weights) if args.weights else WEIGHTS_DIR, args.repeats, args.threads,
                 Path(args.out) if args.out else None)


def _cmd_build_object_images(args: argparse.Namespace) -> None:
    """Object folder for the model_free mode, from posed photos (docs/model_free_inputs.md)."""
    from sixd_pose_ros.objects.model_free_database import (
        build_model_free_database,
        build_summary,
    )

    path = build_model_free_database(args.images, args.name, args.out, fmt=args.format,
                                     obj_id=args.obj_id, overwrite=args.overwrite,
                                     progress=not args.no_progress)
    print(build_summary(path))


def _cmd_build_object(args: argparse.Namespace) -> None:
    """Object folder for the known_model mode; the codebook needs the autoencoder weights."""
    if getattr(args, "images", None):
        return _cmd_build_object_images(args)
    import json

    import torch

    from sixd_pose_ros.models import checkpoint
    from sixd_pose_ros.objects.codebook import CODEBOOK_PRESETS, as_encoder
    from sixd_pose_ros.io import file_sha256
    from sixd_pose_ros.objects.database import build_object_database

    weights = Path(checkpoint.WEIGHTS_DIR) / "autoencoder.pt"
    loader = getattr(checkpoint, "load_autoencoder", None)  # looked up late: may not exist yet
    encoder = encoder_id = None
    if loader is None or not weights.is_file():
        why = "no autoencoder loader in this version" if loader is None else f"{weights} not found"
        print(f"sixd-pose build-object: warning: {why}; building the reference views only. The "
              f"known_model pose codebook needs the autoencoder weights: once they exist, rerun "
              f"this command with --overwrite.", file=sys.stderr)
    elif getattr(getattr(model := loader(weights), "cfg", None), "use_depth", False):
        print(f"sixd-pose build-object: warning: {weights} is an RGB-D autoencoder (use_depth) "
              f"but codebooks are encoded from RGB crops; building the reference views only. "
              f"Ship RGB autoencoder weights, then rerun with --overwrite.", file=sys.stderr)
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if isinstance(model, torch.nn.Module):
            model = model.to(device).eval()
        encoder, encoder_id = as_encoder(model), file_sha256(weights)
        if device == "cpu" and not args.coarse:
            n = CODEBOOK_PRESETS["full"]
            print(f"sixd-pose build-object: note: no GPU; the full codebook ({10 * 4 ** n[0] + 2} "
                  f"x {n[1]} crops) is slow on a CPU: --coarse builds a 4x smaller one",
                  file=sys.stderr)
    path = build_object_database(args.mesh, args.name, args.out, args.unit, encoder, encoder_id,
                                 coarse=args.coarse, overwrite=args.overwrite,
                                 progress=not args.no_progress, templates=True)
    info = json.loads((path / "object.json").read_text())
    sec = info["build"]["seconds"]
    cb = info["codebook"]
    print(f"built object '{info['name']}' in {path}: {info['mesh']['vertices']} vertices, "
          f"diameter {info['diameter']:.4f} m, {info['references']['n_views']} reference views")
    print("  codebook: " + (f"{cb['preset']} {cb['entries'] // cb['n_inplane']} views x "
                            f"{cb['n_inplane']} in-plane = {cb['entries']} rotations" if cb else
                            "none (no autoencoder weights)"))
    render_s = sec["render_references"] + sec.get("render_views", 0.0)
    encode = (f"encode {sec['warp'] + sec['encode']:.1f} s (in-plane warps {sec['warp']:.1f} s), "
              if cb else "")
    print(f"  timings: render {render_s:.1f} s (references {sec['render_references']:.1f} s, "
          f"codebook views {sec.get('render_views', 0.0):.1f} s), {encode}write "
          f"{sec['write']:.1f} s, total {sec['total']:.1f} s")


def _cmd_build_engines(args: argparse.Namespace) -> None:
    from sixd_pose_ros.engines.build import build_engines
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR

    from sixd_pose_ros.features.efficientnet import load_patch_backbone
    from sixd_pose_ros.pipeline.known_model import pretrained_feature_specs
    from sixd_pose_ros.pipeline.settings import KnownModelConfig

    # The pretrained backbone's graphs as the default known-model estimator runs them, at this image size.
    backbone_specs = pretrained_feature_specs(load_patch_backbone(), KnownModelConfig(image_size=tuple(args.image)))
    build_engines(args.backend, args.precision, tuple(args.image), Path(args.weights) if args.weights else WEIGHTS_DIR,
                  args.objects or (), args.cache, progress=not args.no_progress,
                  extra_specs=list(backbone_specs.values()))


def _cmd_bench(args: argparse.Namespace) -> None:
    from sixd_pose_ros.evaluation.bench import run_bench
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR

    run_bench(args.backend.split(","), [int(n) for n in str(args.objects).split(",")], tuple(args.image),
              args.repeats, args.refine_iterations, args.codebook,
              Path(args.weights) if args.weights else WEIGHTS_DIR, args.precision, args.threads,
              Path(args.out) if args.out else None, progress=not args.no_progress,
              feature_detection=args.feature_detection)


def _feature_detection_help(prefix: str = "", always: str = "") -> str:
    """--feature-detection's help, its default read from the estimator's settings."""
    return (f"{prefix}places from the templates correlated over the image on every frame (always{always}), only "
            f"on frames without depth (without_depth), or never (off: the trained detector); default "
            f"{KnownModelConfig.feature_detection}")


def build_parser() -> argparse.ArgumentParser:
    """The `sixd-pose` parser; estimator options take their defaults and help from
    pipeline/settings.py, where they are written."""
    est, known = EstimatorSettings, KnownModelConfig
    parser = argparse.ArgumentParser(prog="sixd-pose", description="6D object pose for robot grasping")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic RGB-D dataset (BOP and/or rosbag2)")
    p.add_argument("--preset", default="bench-v1", help="dataset preset (see --list-presets)")
    p.add_argument("--out", help="output folder (created atomically)")
    p.add_argument("--format", default="bop", help="bop, rosbag or bop,rosbag")
    p.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"], help="rosbag2 storage")
    p.add_argument("--scenes", type=int, help="override the preset's scene count")
    p.add_argument("--frames", type=int, help="override the preset's frames per scene")
    p.add_argument("--seed", type=int, help="override the preset's seed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--list-presets", action="store_true", help="describe the presets and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("demo", help="the README demo on the bundled object (no data needed)")
    p.add_argument("--out", default="demo_output", help="output folder (replaced)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("train", help="train the detector, refiner, autoencoder or selector from scratch (seeded)")
    p.add_argument("model", choices=["detector", "refiner", "autoencoder", "selector", "shape_block"],
                   help="shape_block: retrain only the autoencoder's conditioned block B (mesh-free "
                        "codebooks) of --init-from or the shipped autoencoder.pt")
    p.add_argument("--config", help="training YAML (default config/train_<model>_cpu.yaml; "
                                    "config/train_<model>_gpu.yaml for a GPU, with torchrun for several)")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--steps", type=int, help="override the config's step count")
    p.add_argument("--init-from", help="weights file to continue from (default: train from scratch)")
    p.add_argument("--out", help="folder for <model>.pt and its model card (default: the package's weights/)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate on a BOP dataset/scene or a rosbag2 bag: metrics.json, "
                                    "tables, per-frame CSV, plots")
    p.add_argument("dataset", help="BOP dataset root, one BOP scene folder, or a rosbag2 bag (folder/.mcap/.db3)")
    p.add_argument("--mode", choices=("known_model", "model_free"), default="known_model")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--objects", help="comma-separated BOP obj_ids (default: all with a mesh)")
    p.add_argument("--max-frames", type=int, help="evaluate the first N frames only")
    p.add_argument("--refs", type=int, default=64, help="model_free: reference frames per object")
    p.add_argument("--no-depth", action="store_true", help="RGB only (ignore depth)")
    p.add_argument("--backend", default=est.backend, help="inference backend: auto, torch, onnxruntime, tensorrt")
    p.add_argument("--split", default="test", help="split folder of a BOP dataset root")
    p.add_argument("--models", help="models folder (default: models/ beside the scenes or the bag)")
    p.add_argument("--mesh-unit", choices=("auto", "mm", "m"), default="auto",
                   help="unit of the mesh files (BOP: mm); auto checks against models_info.json")
    p.add_argument("--objects-dir", help="where object databases are built/reused (default OUT/objects)")
    p.add_argument("--weights", help="weights folder (default: the shipped weights)")
    p.add_argument("--full-codebook", action="store_true", help="the full 2562x36 codebook (GPU machines)")
    p.add_argument("--codebook-grid", metavar="SUBxANGLES", help="custom codebook grid, e.g. 2x36 "
                   "(icosphere subdivisions x in-plane angles): quicker CPU runs")
    p.add_argument("--refine-iterations", type=int, help=f"override the estimator's refinement iterations "
                   f"(default {est.refine_iterations})")
    p.add_argument("--hypotheses", metavar="PEAKSxHITS", help="known_model with depth: detector peaks x codebook "
                   f"hits tried per object and checked against depth (default {'x'.join(map(str, known.hypotheses))}; "
                   f"1x1 = off)")
    p.add_argument("--depth-proposals", type=int, metavar="N", help="with depth: depth segments tried per "
                   f"object besides the detector's peaks (default {est.depth_proposals}; 0 = off)")
    p.add_argument("--rotation-search", type=int, metavar="N", help="with depth: grid rotations fitted to "
                   "each depth segment, tried besides the codebook's hits or the selector's viewpoints (model_free: "
                   f"objects built with depth) (default {est.rotation_search}; 0 = off)")
    p.add_argument("--no-templates", action="store_true", help="known_model: rotations from the trained "
                   "codebook instead of the pretrained-feature templates; model_free: places and rotations from "
                   "the trained detector and selector instead of templates of the reference photos (for comparison)")
    p.add_argument("--feature-detection", choices=FEATURE_DETECTION_MODES, default=None,
                   help=_feature_detection_help("known_model with templates: "))
    p.add_argument("--feature-refine-iterations", type=int, default=None, metavar="N",
                   help="known_model without depth: render-and-match PnP rounds at the chosen pose "
                   f"(default {known.feature_refine_iterations}; 0 = off)")
    p.add_argument("--peers", help="comma-separated classical peers run on the same frames: "
                                   "linemod, open3d_fpfh_icp")
    p.add_argument("--workers", type=int, default=1, help="processes (units = scenes/bags fan out)")
    p.add_argument("--ray", metavar="ADDRESS", help="fan out over a Ray cluster ('auto', an address, or "
                                                   "'local' for a new local one)")
    p.add_argument("--overlays", type=int, default=0, help="write N overlay images (GT red, estimate green)")
    p.add_argument("--namespace", default="/camera", help="bag: camera namespace of the default topics")
    p.add_argument("--color-topic", help="bag: colour image topic (remapping)")
    p.add_argument("--depth-topic", help="bag: depth image topic (remapping)")
    p.add_argument("--info-topic", help="bag: camera_info topic (remapping)")
    p.add_argument("--tf-topic", default="/tf", help="bag: ground-truth TF topic")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("replay", help="play a rosbag2 bag into the live node (simulated time) and score it")
    p.add_argument("bag", help="rosbag2 folder or its .mcap/.db3 file, with ground truth on /tf")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--rate", type=float, default=1.0, help="playback rate (1.0 = as recorded)")
    p.add_argument("--objects", help="comma-separated BOP obj_ids (default: all with a mesh)")
    p.add_argument("--models", help="models folder (default: models/ beside the bag)")
    p.add_argument("--mesh-unit", choices=("auto", "mm", "m"), default="auto")
    p.add_argument("--objects-dir", help="where object databases are built/reused (default OUT/objects)")
    p.add_argument("--namespace", default="/camera", help="camera namespace of the bag's topics")
    p.add_argument("--color-topic")
    p.add_argument("--depth-topic")
    p.add_argument("--info-topic")
    p.add_argument("--tf-topic", default="/tf")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("capture-bag", help="model-free references from a recorded arm sweep: the bag (colour, "
                       "depth, camera_info, /tf, /tf_static) played into capture_references")
    p.add_argument("bag", help="rosbag2 folder")
    p.add_argument("--out", required=True, help="folder to write (format (a), for build-object --images)")
    p.add_argument("--world-frame", help="fixed frame of the camera poses (default: the parameter file's, "
                                         "else base_link)")
    p.add_argument("--namespace", default="/camera", help="camera namespace of the bag's topics")
    p.add_argument("--params-file", help="capture parameters (config/capture_references.yaml)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="one capture parameter, e.g. topics.depth=depth/image_raw (repeatable)")
    p.add_argument("--rate", type=float, default=1.0, help="playback rate (1.0 = as recorded)")
    p.set_defaults(func=_cmd_capture_bag)

    p = sub.add_parser("eval-tables", help="model-free held-out tables: accuracy vs. references and "
                                          "refinement iterations (JSON + markdown)")
    p.add_argument("dataset", help="BOP dataset root or scene, or a rosbag2 bag (as for eval)")
    p.add_argument("--out", required=True)
    p.add_argument("--refs", default="8,16,32,64,128", help="reference counts to sweep")
    p.add_argument("--iterations", default="0,1,2,3", help="refinement iterations to sweep")
    p.add_argument("--iteration-refs", type=int, default=64, help="references used in the iteration sweep")
    p.add_argument("--objects", help="comma-separated BOP obj_ids")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--no-depth", action="store_true")
    p.add_argument("--backend", default=est.backend)
    p.add_argument("--split", default="test")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_eval_tables)

    p = sub.add_parser("eval-stages", help="held-out accuracy of the detector and refiner (table + JSON)")
    p.add_argument("--weights", help="folder with detector.pt and refiner.pt (default: shipped weights)")
    p.add_argument("--objects", type=int, default=10, help="held-out objects")
    p.add_argument("--samples", type=int, default=100, help="samples per stage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file to write")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_eval_stages)

    p = sub.add_parser("eval-shape-codebook", help="held-out rotation retrieval without a mesh: B(z_o, R) "
                       "codebooks from the query's or a few photos' shape code, next to the rendered one")
    p.add_argument("--weights", help="folder with autoencoder.pt (default: shipped weights)")
    p.add_argument("--objects", type=int, default=10, help="held-out objects")
    p.add_argument("--samples", type=int, default=20, help="query crops per object")
    p.add_argument("--refs", type=int, default=8, help="photos per object for the B(refs) shape code")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file to write")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_eval_shape_codebook)

    p = sub.add_parser("bench-stages", help="CPU latency of detector and refiner at 640x480 (JSON)")
    p.add_argument("--weights", help="folder with detector.pt and refiner.pt (default: shipped weights)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", help="JSON file to write")
    p.set_defaults(func=_cmd_bench_stages)

    p = sub.add_parser("bench-render", help="renderer and synthesizer throughput (prints, writes JSON)")
    p.add_argument("--out", help="JSON file to write")
    p.add_argument("--backend", default="numba", choices=["numba", "pyrender"])
    p.add_argument("--seconds", type=float, default=3.0, help="minimum time per measurement")
    p.set_defaults(func=_cmd_bench_render)

    p = sub.add_parser("build-engines", help="export ONNX graphs / build TensorRT engines ahead of time")
    p.add_argument("--backend", default="tensorrt", choices=["tensorrt", "onnxruntime"])
    p.add_argument("--precision", default=est.precision, choices=["fp16", "fp32"], help="TensorRT precision")
    p.add_argument("--image", nargs=2, type=int, default=list(est.image_size), metavar=("W", "H"),
                   help="camera image size the engines are tuned for")
    p.add_argument("--objects", nargs="*", help="object folders whose detector heads to build too")
    p.add_argument("--weights", help="weights folder (default: shipped weights)")
    p.add_argument("--cache", help="cache folder (default: $SIXD_POSE_CACHE or ~/.cache/sixd_pose_ros/engines)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_build_engines)

    p = sub.add_parser("bench", help="per-stage and end-to-end latency of the estimator per backend (JSON)")
    p.add_argument("--backend", default=est.backend, help="auto, tensorrt, onnxruntime, torch, or several "
                                                          "comma-separated (measured side by side)")
    p.add_argument("--objects", default="1", help="objects in the frame (e.g. 1 or 1,4)")
    p.add_argument("--image", nargs=2, type=int, default=list(est.image_size), metavar=("W", "H"))
    p.add_argument("--repeats", type=int, default=10, help="timed frames per workload")
    p.add_argument("--refine-iterations", type=int, help="iterations of the 'full' run (default: the "
                                                         f"estimator's, {est.refine_iterations}); a 3-iteration "
                                                         "run is always added")
    p.add_argument("--codebook", choices=["coarse", "full", "tiny"], help="default: full on a GPU, else coarse")
    p.add_argument("--precision", default=est.precision, choices=["fp16", "fp32"], help="TensorRT precision")
    p.add_argument("--threads", type=int, help="CPU threads (torch and ONNX Runtime)")
    p.add_argument("--feature-detection", choices=FEATURE_DETECTION_MODES, default=None,
                   help=_feature_detection_help(always=": the 'backbone' stage is then the pretrained backbone at "
                                                         "every feature scale; the bench frame has depth"))
    p.add_argument("--weights", help="weights folder (default: shipped weights)")
    p.add_argument("--out", help="JSON file to write")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser("build-object", help="object folder of the known_model mode: mesh, "
                                            "reference views, pose codebook")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--mesh", help="mesh file (ply/obj/stl/off/glb): known_model mode")
    source.add_argument("--images", help="folder of posed photos: model_free mode (formats: "
                                         "docs/model_free_inputs.md)")
    p.add_argument("--format", default="auto", choices=["auto", "folder", "bop", "colmap"],
                   help="--images input format (default: detected)")
    p.add_argument("--obj-id", type=int, help="--images BOP scene: the object's id, when the "
                                              "scene shows several")
    p.add_argument("--unit", help="the mesh file's unit: mm, cm, m, um or in (default: guessed "
                                  "from the size, with a warning)")
    p.add_argument("--name", required=True, help="object name (letters, digits, _): folder, "
                                                 "topic namespace and TF frame")
    p.add_argument("--out", default="objects", help="parent folder of the object folders")
    p.add_argument("--coarse", action="store_true",
                   help="642 x 36 codebook instead of 2562 x 36 (CPU-only machines)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing object folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_build_object)
    return parser


def _pair(text: str | None, flag: str) -> tuple[int, int] | None:
    """'AxB' -> (A, B) for the options that take two counts."""
    if not text:
        return None
    try:
        a, b = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise SixdPoseError(f"{flag} {text!r}: write two integers as AxB, e.g. 3x3") from None
    if a < 0 or b < 1:
        raise SixdPoseError(f"{flag} {text!r}: counts must be positive")
    return a, b


def _grid(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    sub, angles = _pair(text, "--codebook-grid")
    if not (0 <= sub <= 5 and 1 <= angles <= 360):
        raise SixdPoseError(f"--codebook-grid {text!r}: subdivisions 0..5 and 1..360 angles")
    return sub, angles


def _cmd_eval(args: argparse.Namespace) -> None:
    """Evaluate on a BOP dataset / scene or a rosbag2 recording; report into --out."""
    from sixd_pose_ros.evaluation.eval_run import EvalOptions, run_eval
    from sixd_pose_ros.evaluation.report import format_table
    from sixd_pose_ros.evaluation.sources import BagTopics

    objects = tuple(int(x) for x in args.objects.split(",")) if args.objects else None
    options = EvalOptions(
        mode=args.mode, objects=objects, max_frames=args.max_frames, refs=args.refs,
        use_depth=not args.no_depth, backend=args.backend, mesh_unit=args.mesh_unit, split=args.split,
        models=args.models, peers=tuple(p for p in (args.peers or "").split(",") if p),
        workers=args.workers, ray_address=args.ray, full_codebook=args.full_codebook,
        codebook_grid=_grid(args.codebook_grid), hypotheses=_pair(args.hypotheses, "--hypotheses"),
        depth_proposals=args.depth_proposals, rotation_search=args.rotation_search,
        templates=False if args.no_templates else None, feature_detection=args.feature_detection,
        feature_refine_iterations=args.feature_refine_iterations,
        **({"weights": str(Path(args.weights).expanduser())} if args.weights else {}),
        refine_iterations=args.refine_iterations, overlays=args.overlays, progress=not args.no_progress,
        topics=BagTopics(namespace=args.namespace, color=args.color_topic, depth=args.depth_topic,
                         info=args.info_topic, tf=args.tf_topic))
    summary = run_eval(args.dataset, args.out, options, objects_dir=args.objects_dir)
    print(format_table(summary))
    print(f"report in {args.out} (metrics.json, metrics.md, per_frame.csv, plots)")


def _cmd_replay(args: argparse.Namespace) -> None:
    """Play a bag into the live node over DDS (simulated time), score what it publishes."""
    from sixd_pose_ros.evaluation.eval_run import EvalOptions
    from sixd_pose_ros.evaluation.live_replay import run_replay
    from sixd_pose_ros.evaluation.report import format_table
    from sixd_pose_ros.evaluation.sources import BagTopics

    objects = tuple(int(x) for x in args.objects.split(",")) if args.objects else None
    options = EvalOptions(objects=objects, mesh_unit=args.mesh_unit, models=args.models,
                          progress=not args.no_progress,
                          topics=BagTopics(namespace=args.namespace, color=args.color_topic,
                                           depth=args.depth_topic, info=args.info_topic, tf=args.tf_topic))
    summary = run_replay(args.bag, args.out, options, rate=args.rate, objects_dir=args.objects_dir)
    print(format_table(summary))
    extra = summary["extra"]
    print(f"published {extra['frames_published']} frames, answered {extra['frames_answered']}, dropped "
          f"(node busy) {extra['frames_dropped_busy']}; end-to-end latency median "
          f"{extra['end_to_end_latency_ms']['median']} ms; report in {args.out}")


def _cmd_capture_bag(args: argparse.Namespace) -> None:
    """Model-free references from a recorded sweep: the bag played into the capture node."""
    import yaml

    from sixd_pose_ros.ros.capture_bag import capture_from_bag

    params = {"world_frame": args.world_frame} if args.world_frame else {}
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SixdPoseError(f"--param {item!r}: write it as NAME=VALUE, e.g. --param topics.depth=depth/image_raw")
        params[key] = yaml.safe_load(value)  # numbers, booleans and lists as in a parameter file
    result = capture_from_bag(args.bag, args.out, namespace=args.namespace, rate=args.rate, params=params,
                              params_file=args.params_file)
    print(f"{result.message}\nframes: {result.counts}; {result.bag_seconds:.1f} s of bag in "
          f"{result.wall_seconds:.1f} s")


def _cmd_eval_tables(args: argparse.Namespace) -> None:
    """Model-free accuracy against references and refinement iterations (tables.json/.md)."""
    from sixd_pose_ros.evaluation.eval_run import EvalOptions
    from sixd_pose_ros.evaluation.sweep import format_tables, run_sweep

    def ints(text: str, flag: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in text.split(",") if x)
        except ValueError:
            raise SixdPoseError(f"{flag} {text!r}: comma-separated integers, e.g. 8,16,32") from None

    objects = ints(args.objects, "--objects") if args.objects else None
    options = EvalOptions(objects=objects, max_frames=args.max_frames, use_depth=not args.no_depth,
                          backend=args.backend, split=args.split, progress=not args.no_progress)
    result = run_sweep(args.dataset, args.out, options, refs=ints(args.refs, "--refs"),
                       iterations=ints(args.iterations, "--iterations"), refs_for_iterations=args.iteration_refs)
    print(format_tables(result))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="[%(levelname)s] %(name)s: %(message)s")
    try:
        args.func(args)
    except SixdPoseError as exc:
        print(f"sixd-pose {args.command}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"sixd-pose {args.command}: interrupted; nothing half-written was left behind",
              file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()

"""`sixd-pose eval`: run an estimator (and classical peers) over a dataset or bag, score, report.

The run is frame-exact and deterministic: units (scenes or bags) are read in order, each frame
is estimated on its own (tracking off, so a frame's result does not depend on which worker saw
the frames before it), results are sorted by (scene, image, object) before they are summarized,
and every random choice inside the estimator is seeded. Latency is the wall time of one
``estimate`` call, the only number that varies between runs.

Object databases are built once per object in the parent process (``OUT/objects`` unless
``--objects-dir`` says otherwise; an existing folder that still matches the weights is reused),
then units fan out over worker processes (``--workers``) or an existing Ray cluster (``--ray``)
and their records merge into one report.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sixd_pose_ros.datasets.types import SceneFrame
from sixd_pose_ros.errors import DatasetError, SixdPoseError
from sixd_pose_ros.evaluation.data_checks import depth_missing_reason, require_ground_truth
from sixd_pose_ros.evaluation.mesh_units import decide_mesh_unit
from sixd_pose_ros.evaluation.sources import BagTopics, EvalDataset, EvalUnit, read_unit, resolve_dataset
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR
from sixd_pose_ros.pipeline.settings import EstimatorSettings, estimator_config

log = logging.getLogger(__name__)

OURS = "sixd_pose"


@dataclass(frozen=True)
class EvalOptions:
    """Everything a worker needs to rebuild the estimators (picklable: sent to processes)."""

    mode: str = "known_model"
    objects: tuple[int, ...] | None = None
    max_frames: int | None = None
    refs: int = 64
    use_depth: bool = EstimatorSettings.use_depth
    backend: str = EstimatorSettings.backend
    weights: str = str(WEIGHTS_DIR)
    mesh_unit: str = "auto"
    split: str = "test"
    models: str | None = None
    peers: tuple[str, ...] = ()
    workers: int = 1
    ray_address: str | None = None
    topics: BagTopics = BagTopics()
    full_codebook: bool = False
    codebook_grid: tuple[int, int] | None = None  # (subdivisions, in-plane angles): tests, experiments
    refine_iterations: int | None = None
    hypotheses: tuple[int, int] | None = None  # known_model with depth: (detector peaks, codebook hits)
    depth_proposals: int | None = None  # with depth: depth segments tried per object (both modes)
    rotation_search: int | None = None  # with depth (and a surface): grid rotations tried per segment
    templates: bool | None = None  # known_model: pretrained-feature templates (False: the trained codebook)
    feature_detection: str | None = None  # known_model: KnownModelConfig.feature_detection (None: its default)
    feature_refine_iterations: int | None = None  # known_model: RGB-only render-and-match rounds (None: default)
    overlays: int = 0
    progress: bool = True


@dataclass
class ObjectModel:
    """What scoring needs of one object, and where its database is."""

    obj_id: int
    name: str
    mesh_path: str
    unit: str
    database: str | None
    diameter: float
    symmetries: Any = None  # (Rs, ts) of the BOP symmetries, None = none
    # model_free: frames given to the estimator as references (never scored), and how they came
    excluded: frozenset = frozenset()  # {(scene_id, im_id)}
    protocol: str | None = None  # "sequence" | "capture"


@dataclass
class UnitResult:
    """One unit's share of the report."""

    records: dict[str, list]  # method -> InstanceResult list
    latencies_ms: dict[str, list[float]]
    problems: list[tuple[int | None, str]]
    n_frames: int
    overlays: list[tuple[str, np.ndarray]] = field(default_factory=list)
    frames_without_depth: int = 0  # depth was asked for, the frame had none: it ran RGB-only


def object_name(obj_id: int) -> str:
    return f"obj_{int(obj_id):06d}"


# ------------------------------------------------------------------------------------------------
# Objects
# ------------------------------------------------------------------------------------------------


def _object_ids(dataset: EvalDataset, wanted: Sequence[int] | None) -> list[int]:
    if dataset.models_info:
        available = sorted(dataset.models_info)
    elif dataset.models_dir is not None:
        available = sorted(int(p.stem[4:]) for p in dataset.models_dir.glob("obj_*.ply") if p.stem[4:].isdigit())
    else:
        available = []
    if wanted:
        missing = [i for i in wanted if i not in available]
        if missing and available:
            raise DatasetError(f"--objects {missing} not in {dataset.models_dir} (it has {available})")
        return sorted(set(int(i) for i in wanted))
    if not available:
        raise DatasetError(f"no object meshes found for {dataset.path}: put BOP obj_XXXXXX.ply files in "
                           f"a models/ folder beside it or pass --models DIR")
    return available


def prepare_objects(dataset: EvalDataset, options: EvalOptions, objects_dir: Path) -> list[ObjectModel]:
    """Decide each mesh's unit and build (or reuse) its object database."""
    from sixd_pose_ros.evaluation.metrics import symmetries_from_models_info
    from sixd_pose_ros.geometry.normalization import object_diameter

    models = []
    for obj_id in _object_ids(dataset, options.objects):
        mesh_path = dataset.mesh_path(obj_id)
        info = dataset.models_info.get(obj_id)
        unit = decide_mesh_unit(mesh_path, options.mesh_unit, info)
        mesh = load_metric_mesh(str(mesh_path), unit)
        diameter = float(object_diameter(np.asarray(mesh.vertices)))
        excluded, protocol = frozenset(), None
        if options.mode == "known_model":
            database = _build_database(mesh_path, object_name(obj_id), unit, objects_dir, options)
        else:
            database, excluded, protocol = _build_model_free(dataset, obj_id, mesh, objects_dir, options)
        models.append(ObjectModel(obj_id, object_name(obj_id), str(mesh_path), unit, str(database), diameter,
                                  symmetries_from_models_info(info, unit_scale=1e-3) if info else None,
                                  excluded, protocol))
    return models


def _build_model_free(dataset: EvalDataset, obj_id: int, mesh, objects_dir: Path,
                      options: EvalOptions) -> tuple[Path, frozenset, str]:
    """The object's model-free database by the sequence or the capture protocol
    (evaluation/model_free_refs.py); returns it, the frames it used, and the protocol.

    Sequence when the object is seen in exactly one BOP scene with at least ``refs + 4`` frames
    that show it (a real video: references from its own frames); capture otherwise (objects
    spread over many short scenes, like the synthetic benchmark).
    """
    import shutil

    from sixd_pose_ros.evaluation.model_free_refs import render_capture, sequence_references
    from sixd_pose_ros.objects.model_free_database import build_model_free_database

    name = object_name(obj_id)
    parent = objects_dir / "model_free" / f"refs{options.refs}"
    scenes = _scenes_with_object(dataset, obj_id)
    if len(scenes) == 1:
        unit = scenes[0]
        refs = sequence_references(unit.path, obj_id, options.refs)
        if refs is not None:
            if refs.left_out:
                log.info("%s: %d frame(s) of scene %d do not show it and are not references: %s", name,
                         len(refs.left_out), unit.scene_id, "; ".join(f"{v.name} ({v.reason})"
                                                                       for v in refs.left_out[:5]))
            path = build_model_free_database(refs.images, name, parent, overwrite=True, progress=options.progress)
            return path, frozenset((unit.scene_id, i) for i in refs.im_ids), "sequence"
        log.warning("%s: scene %d has fewer than --refs %d + 4 frames showing it; references are rendered "
                    "from the mesh instead (capture protocol)", name, unit.scene_id, options.refs)
    capture = parent / "_capture" / name
    if capture.exists():
        shutil.rmtree(capture)
    render_capture(mesh, capture, options.refs, seed=obj_id)
    path = build_model_free_database(capture, name, parent, overwrite=True, progress=options.progress)
    return path, frozenset(), "capture"


def _scenes_with_object(dataset: EvalDataset, obj_id: int) -> list[EvalUnit]:
    """The dataset's BOP scenes whose ground truth shows ``obj_id`` (none when any unit is a bag:
    a bag's frames are not posed views of a scene folder)."""
    import json

    if any(u.kind != "bop_scene" for u in dataset.units):
        return []
    found = []
    for unit in dataset.units:
        gt = json.loads((Path(unit.path) / "scene_gt.json").read_text(encoding="utf-8"))
        if any(int(g["obj_id"]) == int(obj_id) for gts in gt.values() for g in gts):
            found.append(unit)
    return found


def _build_database(mesh_path: Path, name: str, unit: str, objects_dir: Path, options: EvalOptions) -> Path:
    """Reuse ``objects_dir/name`` when it loads with the current weights, else build it."""
    from sixd_pose_ros.models.checkpoint import load_autoencoder, weights_identity
    from sixd_pose_ros.objects.codebook import CODEBOOK_PRESETS, as_encoder
    from sixd_pose_ros.objects.database import ObjectDatabaseError, build_object_database, load_object_database

    weights = Path(options.weights)
    encoder_id = weights_identity(weights / "autoencoder.pt")
    folder = objects_dir / name
    grid = {} if options.codebook_grid is None else \
        {"subdivisions": options.codebook_grid[0], "n_inplane": options.codebook_grid[1]}
    if folder.is_dir():
        try:
            db = load_object_database(folder, expected_weights={"encoder": encoder_id})
            wanted = grid or dict(zip(("subdivisions", "n_inplane"),
                                      CODEBOOK_PRESETS["full" if options.full_codebook else "coarse"]))
            if db.codebook is not None and (db.codebook.subdivisions, db.codebook.n_inplane) == \
                    (wanted["subdivisions"], wanted["n_inplane"]):
                log.info("reusing object database %s", folder)
                return folder
            log.warning("rebuilding %s: its codebook grid differs from the one asked for", folder)
        except ObjectDatabaseError as exc:
            log.warning("rebuilding %s: %s", folder, exc)
    return build_object_database(mesh_path, name, objects_dir, unit=unit,
                                 encoder=as_encoder(load_autoencoder(weights / "autoencoder.pt")),
                                 encoder_id=encoder_id, coarse=not options.full_codebook,
                                 overwrite=True, progress=options.progress,
                                 templates=options.templates is not False, **grid)


# ------------------------------------------------------------------------------------------------
# Estimators (built once per worker process)
# ------------------------------------------------------------------------------------------------


class _PeerSet:
    """One classical peer per object behind the Estimator interface (peers are single-object)."""

    def __init__(self, peer: str, models: Sequence[ObjectModel]) -> None:
        from sixd_pose_ros.evaluation.peers import make_peer

        self.estimators = [make_peer(peer, m.mesh_path, m.name, m.unit) for m in models]

    def estimate(self, frame):
        return [pose for est in self.estimators for pose in est.estimate(frame)]


def ours_config(options: EvalOptions) -> EstimatorSettings:
    """Our estimator's settings for ``options``: the mode's defaults (pipeline/settings.py) with the
    options given over them (None = the default), through the mapping the node's loader uses too.
    Also the key of the estimators a worker keeps: any setting that differs builds new ones."""
    def given(value, cast):
        return None if value is None else cast(value)

    return estimator_config(
        options.mode, use_depth=options.use_depth, refine_iterations=given(options.refine_iterations, int),
        hypotheses=given(options.hypotheses, lambda h: tuple(int(x) for x in h)),
        depth_proposals=given(options.depth_proposals, int), rotation_search=given(options.rotation_search, int),
        templates=given(options.templates, bool), feature_detection=options.feature_detection,
        feature_refine_iterations=given(options.feature_refine_iterations, int))


def make_estimators(models: Sequence[ObjectModel], options: EvalOptions) -> dict[str, Any]:
    """``{method: Estimator}``: ours first, then the requested peers."""
    dirs = [m.database for m in models]
    from sixd_pose_ros.pipeline.estimator import estimator_class

    ours = estimator_class(options.mode).from_paths(dirs, options.weights, config=ours_config(options),
                                                    backend=options.backend)
    estimators: dict[str, Any] = {OURS: ours}
    for peer in options.peers:
        estimators[peer] = _PeerSet(peer, models)
    return estimators


# ------------------------------------------------------------------------------------------------
# One unit
# ------------------------------------------------------------------------------------------------

_WORKER_STATE: dict[str, Any] = {}


def _worker_estimators(models: Sequence[ObjectModel], options: EvalOptions) -> dict[str, Any]:
    """The estimators of this process, built on first use (a worker handles many units)."""
    import torch

    key = repr((tuple(m.database for m in models), options.peers, options.backend, options.weights, options.mode,
                ours_config(options)))
    if _WORKER_STATE.get("key") != key:
        torch.manual_seed(0)
        _WORKER_STATE.update(key=key, estimators=make_estimators(models, options))
    return _WORKER_STATE["estimators"]


def _frame_input(frame: SceneFrame, use_depth: bool):
    from sixd_pose_ros.pipeline.types import Frame

    depth = frame.depth if use_depth and np.any(frame.depth > 0) else None
    return Frame(rgb=frame.rgb, K=frame.K, depth=depth, stamp_ns=frame.stamp_ns, frame_id=frame.frame_id)


def _match(poses: list, instances: list) -> list:
    """Pair each GT instance with at most one estimate of its object.

    An estimator reports one pose per object; with several instances of one object in a frame,
    the pose goes to the instance whose centre is nearest to its translation and the others are
    misses (counted, never dropped).
    """
    pairs = []
    used: set[int] = set()
    for gt in instances:
        pose = next((p for p in poses if p.name == object_name(gt.obj_id)), None)
        if pose is None or id(pose) in used:
            pairs.append((gt, None))
            continue
        rivals = [g for g in instances if g.obj_id == gt.obj_id]
        nearest = min(rivals, key=lambda g: float(np.linalg.norm(g.t_m2c - pose.t)))
        if nearest is gt:
            used.add(id(pose))
            pairs.append((gt, pose))
        else:
            pairs.append((gt, None))
    return pairs


def evaluate_unit(dataset: EvalDataset, unit: EvalUnit, models: Sequence[ObjectModel], options: EvalOptions,
                  max_frames: int | None) -> UnitResult:
    """Run every method over one unit's frames and score each GT instance."""
    estimators = _worker_estimators(models, options)
    by_id = {m.obj_id: m for m in models}
    records: dict[str, list] = {name: [] for name in estimators}
    latencies: dict[str, list[float]] = {name: [] for name in estimators}
    problems: list[tuple[int | None, str]] = []
    overlays: list[tuple[str, np.ndarray]] = []
    n = no_depth = 0
    for frame in read_unit(dataset, unit, problems, options.topics):
        # model-free: an object is never scored on a frame that was one of its references;
        # a frame that is a reference of every object it shows is not evaluated at all
        key = (unit.scene_id, int(frame.im_id or 0))
        refs_here = {m.obj_id for m in models if key in m.excluded}
        instances = [g for g in frame.instances if g.obj_id in by_id and g.obj_id not in refs_here]
        if refs_here and not instances:
            continue
        if max_frames is not None and n >= max_frames:
            break
        n += 1
        inputs = _frame_input(frame, options.use_depth)
        no_depth += int(options.use_depth and inputs.depth is None)
        for method, estimator in estimators.items():
            t0 = time.perf_counter()
            poses = estimator.estimate(inputs)
            latency = 1000.0 * (time.perf_counter() - t0)
            latencies[method].append(latency)
            for gt, pose in _match(poses, instances):
                records[method].append(score_ground_truth(
                    unit.scene_id, frame, gt, by_id[gt.obj_id], None if pose is None else pose.R,
                    None if pose is None else pose.t, 0.0 if pose is None else float(pose.score), latency,
                    depth=inputs.depth))
            if method == OURS and len(overlays) < options.overlays:
                overlays.append((f"{unit.scene_id:06d}_{int(frame.im_id or 0):06d}.png",
                                 draw_comparison(frame, poses, models)))
    return UnitResult(records, latencies, problems, n, overlays, no_depth)


def score_ground_truth(scene_id: int, frame: SceneFrame, gt, model: ObjectModel, R_est, t_est, score: float,
                       latency_ms: float | None, depth: np.ndarray | None = None):
    """Every error of one estimate (``R_est``/``t_est`` None: missed) of one ground-truth instance;
    VSD too when the observed ``depth`` is given. What `eval` and `replay` both score with."""
    from sixd_pose_ros.evaluation.report import score_instance

    return score_instance(
        scene_id=scene_id, im_id=int(frame.im_id or 0), obj_id=str(gt.obj_id), points=_points(model),
        diameter=model.diameter, K=frame.K, R_gt=gt.R_m2c, t_gt=gt.t_m2c,
        image_size=(frame.rgb.shape[1], frame.rgb.shape[0]), R_est=R_est, t_est=t_est, score=score,
        symmetries=model.symmetries, depth=depth, mesh=_mesh(model) if depth is not None else None,
        latency_ms=latency_ms)


_POINTS: dict[str, np.ndarray] = {}
_MESHES: dict[str, Any] = {}


def load_metric_mesh(mesh_path: str, unit: str):
    """A dataset mesh in metres (``unit``: the file's, ``mm`` or ``m``), cached per process."""
    if mesh_path not in _MESHES:
        import trimesh

        mesh = trimesh.load(mesh_path, force="mesh", process=False)
        mesh.apply_scale(1e-3 if unit == "mm" else 1.0)
        _MESHES[mesh_path] = mesh
    return _MESHES[mesh_path]


def _mesh(model: ObjectModel):
    """The object's mesh in metres (VSD renders it)."""
    return load_metric_mesh(model.mesh_path, model.unit)


def _points(model: ObjectModel) -> np.ndarray:
    """2000 seeded surface samples in metres (ADD/ADD-S/projection), cached per process."""
    if model.mesh_path not in _POINTS:
        mesh = _mesh(model)
        _POINTS[model.mesh_path] = np.asarray(mesh.sample(2000, seed=0)) if len(mesh.faces) \
            else np.asarray(mesh.vertices)
    return _POINTS[model.mesh_path]


def draw_comparison(frame: SceneFrame, poses: list, models: Sequence[ObjectModel]) -> np.ndarray:
    """Ground truth (red) and estimate (green) model points over the image, for a person to look at."""
    import cv2

    from sixd_pose_ros.geometry.pinhole import project_model_points

    image = frame.rgb.copy()
    by_name = {m.name: m for m in models}
    for gt in frame.instances:
        model = next((m for m in models if m.obj_id == gt.obj_id), None)
        if model is None:
            continue
        for (u, v) in project_model_points(_points(model)[::10], gt.R_m2c, gt.t_m2c, frame.K):
            if np.isfinite(u) and np.isfinite(v):
                cv2.circle(image, (int(u), int(v)), 1, (255, 0, 0), -1)
    for pose in poses:
        if pose.name in by_name:
            for (u, v) in project_model_points(_points(by_name[pose.name])[::10], pose.R, pose.t, frame.K):
                if np.isfinite(u) and np.isfinite(v):
                    cv2.circle(image, (int(u), int(v)), 1, (0, 255, 0), -1)
    return image


# ------------------------------------------------------------------------------------------------
# Fan-out and the whole run
# ------------------------------------------------------------------------------------------------


def _unit_budgets(dataset: EvalDataset, max_frames: int | None) -> list[int | None]:
    """Frames each unit may evaluate so that ``--max-frames`` counts the first N in order."""
    if max_frames is None:
        return [None] * len(dataset.units)
    budgets, left = [], int(max_frames)
    for unit in dataset.units:
        if unit.kind == "bop_scene":
            import json

            count = len(json.loads((Path(unit.path) / "scene_camera.json").read_text()))
        else:
            count = left
        budgets.append(min(count, left))
        left -= budgets[-1]
    return budgets


def _run_units(dataset: EvalDataset, models: list[ObjectModel], options: EvalOptions) -> list[UnitResult]:
    jobs = [(u, b) for u, b in zip(dataset.units, _unit_budgets(dataset, options.max_frames)) if b != 0]
    if options.ray_address:
        try:
            import ray
        except ImportError as exc:
            raise SixdPoseError("--ray needs the ray package: pip install 'ray[default]' (or drop --ray "
                                "and use --workers N on this machine)") from exc
        ray.init(address=None if options.ray_address == "local" else options.ray_address,
                 ignore_reinit_error=True, log_to_driver=False)
        remote = ray.remote(evaluate_unit)
        return ray.get([remote.remote(dataset, u, models, options, b) for u, b in jobs])
    if options.workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: numba's and torch's thread pools are not fork-safe once started.
        with ProcessPoolExecutor(max_workers=min(options.workers, len(jobs)),
                                 mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(evaluate_unit, dataset, u, models, options, b) for u, b in jobs]
            return [f.result() for f in futures]
    results = []
    bar = _progress(len(jobs), options.progress)
    for u, b in jobs:
        results.append(evaluate_unit(dataset, u, models, options, b))
        bar.update(1)
    bar.close()
    return results


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="eval units", unit="unit", disable=not enabled or total <= 1)


def run_eval(dataset_path: str | Path, out: str | Path, options: EvalOptions = EvalOptions(),
             objects_dir: str | Path | None = None) -> dict:
    """Evaluate and write the report into ``out``; returns the metrics.json content."""
    from sixd_pose_ros.evaluation.report import summarize, write_report

    out = Path(out)
    dataset = resolve_dataset(dataset_path, options.split, options.models)
    needed = ("detector.pt", "selector.pt" if options.mode == "model_free" else "autoencoder.pt", "refiner.pt")
    missing = [n for n in needed if not (Path(options.weights) / n).is_file()]
    if missing:
        raise SixdPoseError(f"--mode {options.mode} needs {', '.join(missing)} in {options.weights}: train them "
                            f"with `sixd-pose train {missing[0][:-3]}` (or pass --weights DIR with all of "
                            f"{', '.join(needed)})")
    # Before any object is built: unusable ground truth fails now, and missing depth is decided.
    require_ground_truth(dataset, _object_ids(dataset, options.objects))
    depth_requested, no_depth_reason = options.use_depth, None
    if options.use_depth and (no_depth_reason := depth_missing_reason(dataset)):
        log.warning("depth was requested but %s: running RGB-only", no_depth_reason)
        options = replace(options, use_depth=False)
    t0 = time.perf_counter()
    models = prepare_objects(dataset, options, Path(objects_dir) if objects_dir else out / "objects")
    t_objects = time.perf_counter() - t0
    units = _run_units(dataset, models, options)
    t_eval = time.perf_counter() - t0 - t_objects
    n_frames = sum(u.n_frames for u in units)
    problems = [(p[0], p[1]) for u in units for p in u.problems]
    use_depth, depth_problem = _depth_outcome(options.use_depth, n_frames,
                                              sum(u.frames_without_depth for u in units))
    no_depth_reason = no_depth_reason or (None if use_depth else depth_problem)
    if depth_problem is not None:
        log.warning("depth was requested but %s", depth_problem)
        if use_depth:
            problems.append((None, depth_problem))
    methods = list(units[0].records) if units else [OURS]
    summaries = {}
    for method in methods:
        records = sorted((r for u in units for r in u.records[method]),
                         key=lambda r: (r.scene_id, r.im_id, int(r.obj_id)))
        if not records:
            raise DatasetError(
                f"{dataset.path}: no ground-truth instances of objects {[m.obj_id for m in models]} in "
                f"{n_frames} frames; a bag needs /tf transforms camera -> object_<id> or a "
                f"scene_gt.json beside it, a BOP scene its scene_gt.json")
        latencies = [x for u in units for x in u.latencies_ms[method]]
        summary = summarize(records, mode=options.mode, dataset=str(dataset.path), latencies_ms=latencies)
        summary["n_frames"] = n_frames  # frames evaluated, including those without any target
        summary.setdefault("extra", {}).update({
            "method": method, "partial_data": bool(problems),
            "seconds": {"objects": round(t_objects, 1), "eval": round(t_eval, 1)},
            "data_problems": [{"im_id": i, "message": m} for i, m in problems],
            "options": {"use_depth": use_depth, "use_depth_requested": depth_requested,
                        "no_depth_reason": no_depth_reason, "backend": options.backend,
                        "max_frames": options.max_frames, "objects": [m.obj_id for m in models],
                        "mesh_units": {m.name: m.unit for m in models},
                        "hypotheses": list(options.hypotheses) if options.hypotheses else None,
                        "depth_proposals": options.depth_proposals,
                        "rotation_search": options.rotation_search,
                        "refine_iterations": options.refine_iterations,
                        "refs": options.refs if options.mode == "model_free" else None,
                        "reference_protocol": {m.name: m.protocol for m in models if m.protocol},
                        "reference_frames": {m.name: sorted(i for _, i in m.excluded) for m in models
                                             if m.excluded}},
        })
        target = out if method == OURS else out / "peers" / method
        overlays = {name: image for u in units for name, image in u.overlays} if method == OURS else None
        write_report(target, summary, records, overlays=overlays)
        summaries[method] = summary
    if len(summaries) > 1:
        _write_comparison(out, summaries)
    return summaries[OURS]


def _depth_outcome(use_depth: bool, n_frames: int, frames_without_depth: int) -> tuple[bool, str | None]:
    """Whether the run used depth, and what to tell about the frames that had none.

    All frames without depth (a bag without a depth topic) is a run without depth, recorded as
    such; some frames without depth is a depth run on partial data.
    """
    if not use_depth or frames_without_depth == 0:
        return use_depth, None
    if frames_without_depth >= n_frames:
        return False, f"none of the {n_frames} frames had a depth image: the run was RGB-only"
    return True, f"{frames_without_depth} of {n_frames} frames had no depth image and ran RGB-only"


def _write_comparison(out: Path, summaries: dict[str, dict]) -> None:
    """One table of ours against the peers, same frames, same process."""
    from sixd_pose_ros.io import atomic_write_text

    keys = ("add_0.1d", "adds_0.1d", "add(-s)_0.1d", "prj_5", "rot_err_deg_median", "trans_err_cm_median")
    lines = ["| method | " + " | ".join(keys) + " | latency median ms | latency p90 ms |",
             "|---" * (len(keys) + 3) + "|"]
    for method, s in summaries.items():
        cells = [_fmt(s["mean"].get(k)) for k in keys]
        lines.append(f"| {method} | " + " | ".join(cells) +
                     f" | {_fmt(s['latency_ms']['median'])} | {_fmt(s['latency_ms']['p90'])} |")
    atomic_write_text(out / "comparison.md", "\n".join(lines) + "\n")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)

"""`sixd-pose replay BAG`: the bag played into the running node, scored like `sixd-pose eval`.

This is the check that the node on DDS does as well as the offline estimator: the same frames,
the same metrics, plus what only a live run shows (end-to-end latency from the colour image
leaving the player to the pose arriving, and frames the node dropped because it was busy).
The ROS part lives in :mod:`sixd_pose_ros.ros.replay` and is imported only when a replay runs.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from sixd_pose_ros.datasets.rosbag import TF_TOPIC, camera_topics
from sixd_pose_ros.errors import DatasetError, SixdPoseError
from sixd_pose_ros.evaluation.eval_run import EvalOptions, object_name, prepare_objects, score_ground_truth
from sixd_pose_ros.evaluation.sources import BagTopics, read_unit, resolve_dataset

log = logging.getLogger(__name__)


def bag_topics(bag: Path, topics: BagTopics) -> dict[str, str]:
    """The bag's colour, depth, camera_info and tf topics, from the options or the defaults."""
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        present = {c.topic: c.msgtype for c in reader.connections}
    defaults = camera_topics(topics.namespace)

    def pick(*candidates):
        return next((t for t in candidates if t and t in present), None)

    chosen = {"color": pick(topics.color, defaults["color"]),
              "depth": pick(topics.depth, defaults["depth"], defaults["aligned_depth"]),
              "info": pick(topics.info, defaults["info"]),
              "tf": pick(topics.tf, TF_TOPIC)}
    if chosen["color"] is None or chosen["info"] is None:
        raise DatasetError(f"{bag} has no raw colour image or camera_info topic under {topics.namespace} "
                           f"(it has {sorted(present)}); pass --namespace or --color-topic/--info-topic")
    if present[chosen["color"]].endswith("CompressedImage"):
        raise DatasetError(f"{chosen['color']} is compressed; the node takes raw images: record raw or "
                           f"republish with image_transport")
    return {k: v for k, v in chosen.items() if v}


def run_replay(bag: str | Path, out: str | Path, options: EvalOptions = EvalOptions(), *, rate: float = 1.0,
               objects_dir: str | Path | None = None) -> dict:
    """Replay, record, score; writes the same report files as `eval` into ``out``."""
    from sixd_pose_ros.evaluation.report import summarize, write_report
    from sixd_pose_ros.ros.replay import replay_bag

    out = Path(out)
    dataset = resolve_dataset(bag, models=options.models)
    if dataset.kind != "rosbag":
        raise SixdPoseError(f"{bag} is not a rosbag2 recording; live replay plays bags (use `sixd-pose eval` "
                            f"for BOP folders)")
    options = replace(options, mode="known_model")
    models = prepare_objects(dataset, options, Path(objects_dir) if objects_dir else out / "objects")
    topics = bag_topics(Path(bag), options.topics)
    result = replay_bag(bag, [m.database for m in models], options.weights, topics=topics,
                        namespace=options.topics.namespace, rate=rate)
    answers = {(p.stamp_ns, p.name): p for p in result.poses}
    by_id = {m.obj_id: m for m in models}
    records, latencies, problems = [], [], []
    frames = 0
    answered_frames = 0
    for frame in read_unit(dataset, dataset.units[0], problems, options.topics):
        frames += 1
        got_any = False
        for gt in (g for g in frame.instances if g.obj_id in by_id):
            model = by_id[gt.obj_id]
            pose = answers.get((frame.stamp_ns, object_name(gt.obj_id)))
            latency = None
            if pose is not None:
                got_any = True
                sent = result.color_published_wall.get(frame.stamp_ns)
                latency = 1000.0 * (pose.received_wall - sent) if sent is not None else None
                if latency is not None:
                    latencies.append(latency)
            records.append(score_ground_truth(0, frame, gt, model, None if pose is None else pose.R,
                                              None if pose is None else pose.t, 0.0 if pose is None else 1.0,
                                              latency))
        answered_frames += int(got_any)
    if not records:
        raise DatasetError(f"{bag}: no ground truth for objects {[m.obj_id for m in models]}: record /tf "
                           f"camera -> object_<id> or put a scene_gt.json beside the bag")
    records.sort(key=lambda r: (r.scene_id, r.im_id, int(r.obj_id)))
    summary = summarize(records, mode="known_model", dataset=str(dataset.path), latencies_ms=latencies)
    summary["n_frames"] = frames
    stats = result.node_stats
    summary.setdefault("extra", {}).update({
        "method": "live_replay", "rate": rate, "partial_data": bool(problems),
        "data_problems": [{"im_id": i, "message": m} for i, m in problems],
        "frames_published": len(result.color_published_wall),
        "frames_answered": answered_frames,
        "frames_dropped_busy": int(stats.get("dropped_busy", 0)),
        "bad_frames": int(stats.get("bad_frames", 0)),
        "end_to_end_latency_ms": {"median": _q(latencies, 50), "p90": _q(latencies, 90)},
        "wall_seconds": round(result.wall_seconds, 2), "bag_seconds": round(result.bag_seconds, 2),
        "topics": result.topics,
    })
    write_report(out, summary, records)
    return summary


def _q(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None

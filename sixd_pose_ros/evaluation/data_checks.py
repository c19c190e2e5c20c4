"""What `sixd-pose eval` checks of a dataset before it builds any object: ground truth and depth.

Why before: building the object databases takes minutes per object. A dataset whose ground
truth is unusable, or holds none of the objects asked for, must fail in seconds with the bad
entries named, not after every object is built. A few bad entries among good ones are not
fatal: the readers skip and list them (``data_problems``, ``partial_data``), and the run goes on.

Why depth here: a dataset without depth images, run with depth requested, has to run RGB-only
*and say so* (the log and ``use_depth: false`` with the reason in metrics.json), instead of
recording ``use_depth: true`` for a run that never saw a depth pixel.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sixd_pose_ros.datasets.gt_entries import BadGroundTruthError, parse_gt_entry
from sixd_pose_ros.errors import DatasetError
from sixd_pose_ros.evaluation.sources import EvalDataset

log = logging.getLogger(__name__)

__all__ = ["GroundTruthCheck", "check_ground_truth", "depth_missing_reason", "require_ground_truth"]


@dataclass
class GroundTruthCheck:
    """The ground truth of the evaluated objects, as far as it can be read without the images."""

    n_usable: int = 0
    bad: list[str] = field(default_factory=list)  # one message per unusable entry
    complete: bool = True  # False when some unit's ground truth is only in its images (a bag's /tf)


def _gt_files(dataset: EvalDataset) -> tuple[list[Path], bool]:
    """The ``scene_gt.json`` files of the units, and whether they are all of its ground truth."""
    files, complete = [], True
    for unit in dataset.units:
        if unit.kind == "bop_scene":
            files.append(Path(unit.path) / "scene_gt.json")
        elif dataset.bag_gt is not None:
            files.append(dataset.bag_gt)
        else:
            complete = False
    return files, complete


def _entries(path: Path) -> Iterable[tuple[str, int, Any]]:
    """``(image key, instance index, entry)`` of one scene_gt.json; nothing if it is absent
    (the reader lists a missing file as a data problem)."""
    if not path.is_file():
        return
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); re-create or re-download it") from exc
    if not isinstance(raw, dict):
        raise DatasetError(f"{path} must map image ids to lists of instances (BOP format)")
    for key, entries in raw.items():
        for gt_id, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            yield key, gt_id, entry


def _evaluated(entry: Any, obj_ids: set[int]) -> bool:
    """An entry of an evaluated object, or one whose object cannot even be told (counted bad)."""
    try:
        return int(entry["obj_id"]) in obj_ids
    except (TypeError, ValueError, KeyError):
        return True


def check_ground_truth(dataset: EvalDataset, obj_ids: Iterable[int]) -> GroundTruthCheck:
    """Parse every ground-truth entry of the evaluated objects (JSON only, no images)."""
    wanted = {int(i) for i in obj_ids}
    files, complete = _gt_files(dataset)
    check = GroundTruthCheck(complete=complete)
    for path in files:
        for key, gt_id, entry in _entries(path):
            if not _evaluated(entry, wanted):
                continue
            try:
                parse_gt_entry(entry, f"{path}, image {key}, instance {gt_id}")
            except BadGroundTruthError as exc:
                check.bad.append(str(exc))
                continue
            check.n_usable += 1
    return check


def require_ground_truth(dataset: EvalDataset, obj_ids: Iterable[int]) -> GroundTruthCheck:
    """:func:`check_ground_truth`, raising when nothing of it could be scored.

    Raises:
        DatasetError: all of the ground truth was read and not one instance of the objects
            is usable (bad entries, or none of these objects at all).
    """
    obj_ids = sorted(int(i) for i in obj_ids)
    check = check_ground_truth(dataset, obj_ids)
    if check.complete and check.n_usable == 0:
        if check.bad:
            shown = "; ".join(check.bad[:3]) + (f"; and {len(check.bad) - 3} more" if len(check.bad) > 3 else "")
            raise DatasetError(f"{dataset.path}: none of the {len(check.bad)} ground-truth instances of "
                               f"objects {obj_ids} is usable: {shown}")
        raise DatasetError(f"{dataset.path}: no ground-truth instances of objects {obj_ids} in its "
                           f"scene_gt.json; check --objects, or give a BOP scene its scene_gt.json")
    if check.bad:
        log.warning("%d ground-truth instance(s) are unusable and will be skipped (listed in "
                    "metrics.json data_problems); first: %s", len(check.bad), check.bad[0])
    return check


def _has_depth_images(scene: Path) -> bool:
    folder = scene / "depth"
    return folder.is_dir() and any(p.is_file() for p in folder.iterdir())


def depth_missing_reason(dataset: EvalDataset) -> str | None:
    """Why this dataset cannot give depth at all, or None when it can (or only the frames
    tell: a bag's depth topic is seen while reading it, and evaluation counts those frames)."""
    scenes = [Path(u.path) for u in dataset.units if u.kind == "bop_scene"]
    if not scenes or len(scenes) != len(dataset.units) or any(_has_depth_images(s) for s in scenes):
        return None
    names = ", ".join(str(s) for s in scenes[:3]) + (f" and {len(scenes) - 3} more" if len(scenes) > 3 else "")
    return f"the dataset has no depth images (no depth/ folder with images in {names})"

"""What `sixd-pose eval DATASET` can read, resolved into units of work and a mesh per object.

A DATASET argument is one of: a BOP dataset root (``models/`` plus split folders of scenes), one
BOP scene folder (meshes from its dataset root's ``models/``), or a rosbag2 recording (a folder
with ``metadata.yaml``, or its ``.mcap`` / ``.db3`` file; ground truth from ``/tf`` or from a
BOP ``scene_gt.json`` beside it, keyed by the frame's index in the bag). A *unit* is one scene
or one bag: the grain at which evaluation fans out over processes, because each unit is read
sequentially (bags are streams) and its frames share one estimator.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sixd_pose_ros.datasets.bop import read_bop_models_info, read_bop_scene
from sixd_pose_ros.datasets.gt_entries import BadGroundTruthError, parse_gt_entry
from sixd_pose_ros.datasets.types import GTInstance, SceneFrame
from sixd_pose_ros.errors import DatasetError

log = logging.getLogger(__name__)

BAG_SUFFIXES = (".mcap", ".db3")


@dataclass(frozen=True)
class EvalUnit:
    """One scene folder or one bag: read in order by a single worker."""

    kind: str  # "bop_scene" | "rosbag"
    path: str
    scene_id: int


@dataclass(frozen=True)
class BagTopics:
    """Topic names for bags recorded with other names (the remapping option of `eval`)."""

    namespace: str = "/camera"
    color: str | None = None
    depth: str | None = None
    info: str | None = None
    tf: str = "/tf"


@dataclass
class EvalDataset:
    """A resolved DATASET argument: its units, where the meshes are, and their unit."""

    path: Path
    kind: str  # "bop_root" | "bop_scene" | "rosbag"
    units: list[EvalUnit]
    models_dir: Path | None
    models_info: dict[int, dict[str, Any]] = field(default_factory=dict)
    bag_gt: Path | None = None  # a BOP scene_gt.json beside a bag, if any

    @property
    def name(self) -> str:
        return self.path.name

    def mesh_path(self, obj_id: int) -> Path:
        if self.models_dir is None:
            raise DatasetError(
                f"no models/ folder found for {self.path}: put the meshes (BOP obj_XXXXXX.ply) in "
                f"a models/ folder beside the scenes or the bag, or pass --models DIR")
        path = self.models_dir / f"obj_{int(obj_id):06d}.ply"
        if not path.is_file():
            raise DatasetError(f"mesh {path} is missing: object {obj_id} has ground truth but no "
                               f"model; add it or leave the object out with --objects")
        return path


def _is_bag(path: Path) -> bool:
    return (path.is_file() and path.suffix in BAG_SUFFIXES) or (path / "metadata.yaml").is_file()


def _is_scene(path: Path) -> bool:
    return (path / "scene_camera.json").is_file()


def _models_near(*candidates: Path) -> Path | None:
    return next((c for c in candidates if (c / "models").is_dir()), None)


def resolve_dataset(path: str | Path, split: str = "test", models: str | Path | None = None) -> EvalDataset:
    """Work out what DATASET is; raise DatasetError naming what was expected otherwise."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{path} does not exist; give a BOP dataset root, a BOP scene folder or "
                           f"a rosbag2 recording")
    if _is_bag(path):
        folder = path if path.is_dir() else path.parent
        root = _models_near(folder, folder.parent, folder.parent.parent)
        gt = next((p for p in (folder / "scene_gt.json", folder.parent / "scene_gt.json") if p.is_file()), None)
        dataset = EvalDataset(path, "rosbag", [EvalUnit("rosbag", str(path), 0)],
                              root / "models" if root else None, bag_gt=gt)
    elif _is_scene(path):
        root = _models_near(path.parent.parent, path.parent)
        scene_id = int(path.name) if path.name.isdigit() else 0
        dataset = EvalDataset(path, "bop_scene", [EvalUnit("bop_scene", str(path), scene_id)],
                              root / "models" if root else None)
    elif (path / "models").is_dir() or (path / split).is_dir():
        split_dir = path / split
        if not split_dir.is_dir():
            found = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name != "models")
            raise DatasetError(f"{path} has no split folder {split!r} (it has {found}); pass --split")
        scenes = sorted(p for p in split_dir.iterdir() if p.is_dir() and _is_scene(p))
        if not scenes:
            raise DatasetError(f"{split_dir} holds no BOP scene folders (with scene_camera.json)")
        units = [EvalUnit("bop_scene", str(s), int(s.name) if s.name.isdigit() else i)
                 for i, s in enumerate(scenes)]
        dataset = EvalDataset(path, "bop_root", units, path / "models" if (path / "models").is_dir() else None)
    else:
        raise DatasetError(f"{path} is neither a BOP dataset root (models/ + {split}/), a BOP scene "
                           f"folder (scene_camera.json) nor a rosbag2 recording (metadata.yaml, "
                           f".mcap or .db3)")
    if models is not None:
        dataset.models_dir = Path(models)
    if dataset.models_dir is not None and (dataset.models_dir / "models_info.json").is_file():
        dataset.models_info = read_bop_models_info(dataset.models_dir)
    return dataset


def _bag_gt_by_index(path: Path, problems: list[tuple[int | None, str]]) -> dict[int, list[GTInstance]]:
    """A BOP scene_gt.json beside a bag: ``{frame index: instances}`` (masks unknown).

    Rotations are re-orthonormalized like a BOP scene's; a bad entry is skipped and listed in
    ``problems`` rather than aborting the run.
    """
    raw = json.loads(path.read_text())
    out: dict[int, list[GTInstance]] = {}
    for key, entries in raw.items():
        index = int(key)
        out[index] = []
        for gt_id, entry in enumerate(entries):
            try:
                obj_id, R, t = parse_gt_entry(entry, f"{path}, frame {index}, instance {gt_id}")
            except BadGroundTruthError as exc:
                log.warning("%s (instance skipped)", exc)
                problems.append((index, f"{exc} (instance skipped)"))
                continue
            out[index].append(GTInstance(obj_id=obj_id, R_m2c=R, t_m2c=t, mask_visib=None))
    return out


def read_unit(dataset: EvalDataset, unit: EvalUnit, problems: list[tuple[int | None, str]],
              topics: BagTopics = BagTopics()) -> Iterator[SceneFrame]:
    """Frames of one unit in order; problems (missing frames or ground truth) are appended."""
    if unit.kind == "bop_scene":
        yield from read_bop_scene(unit.path, problems=problems)
        return
    from sixd_pose_ros.datasets.rosbag import read_rosbag

    gt = _bag_gt_by_index(dataset.bag_gt, problems) if dataset.bag_gt else None
    frames = read_rosbag(unit.path, topics.namespace, color_topic=topics.color, depth_topic=topics.depth,
                         info_topic=topics.info, tf_topic=topics.tf)
    for index, frame in enumerate(frames):
        frame.im_id = index
        if gt is not None:
            if index not in gt:
                problems.append((index, f"{dataset.bag_gt} has no entry for frame {index}"))
            frame.instances = gt.get(index, [])
        yield frame

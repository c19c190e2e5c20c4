"""`sixd-pose synth`: write ground-truthed synthetic RGB-D datasets (BOP and rosbag2).

A preset fixes everything that defines a dataset (object split and ids, scene count, frames,
seed), so `--preset bench-v1` means the same frames on every machine and later issues can
report numbers on it. Datasets appear atomically: an interrupted run leaves nothing.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from tqdm import tqdm

from sixd_pose_ros.datasets.bop import BopSceneWriter, write_bop_models
from sixd_pose_ros.datasets.rosbag import write_rosbag
from sixd_pose_ros.datasets.types import SceneFrame
from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.io import atomic_output_dir
from sixd_pose_ros.render.procedural import ProceduralObject, make_bundled_demo_object, make_object
from sixd_pose_ros.training.scenes import SceneConfig, compose_scene, scene_object

LOG = logging.getLogger(__name__)

# Distractors come from a range of the held-out split that no preset annotates, so they are
# unseen in training and never confused with benchmark targets.
DISTRACTOR_INDEX_BASE = 1_000_000


@dataclass(frozen=True)
class SynthPreset:
    """Everything that defines a synthetic dataset; `objects` are indices into `split`."""

    name: str
    split: str  # "train", "heldout" or "demo" (the bundled demo object only)
    objects: tuple[int, ...]
    scenes: int
    frames_per_scene: int
    targets_per_scene: tuple[int, int]  # min, max annotated objects per scene
    distractors_per_scene: tuple[int, int]
    seed: int
    description: str


PRESETS: dict[str, SynthPreset] = {
    p.name: p for p in (
        SynthPreset("bench-v1", "heldout", tuple(range(20)), scenes=20, frames_per_scene=10,
                    targets_per_scene=(3, 5), distractors_per_scene=(2, 4), seed=20261120,
                    description="fixed benchmark: 20 held-out objects, 20 scenes x 10 frames; "
                                "later issues report their accuracy on it"),
        SynthPreset("train-v1", "train", tuple(range(2000)), scenes=500, frames_per_scene=8,
                    targets_per_scene=(3, 6), distractors_per_scene=(1, 4), seed=1,
                    description="training scenes over 2000 training objects"),
        SynthPreset("smoke", "heldout", tuple(range(4)), scenes=2, frames_per_scene=3,
                    targets_per_scene=(2, 3), distractors_per_scene=(1, 1), seed=7,
                    description="tiny dataset for tests and quick checks"),
        SynthPreset("demo", "demo", (0,), scenes=1, frames_per_scene=12,
                    targets_per_scene=(1, 1), distractors_per_scene=(3, 3), seed=3,
                    description="the bundled demo object on a table, for the README demo"),
    )
}


def get_preset(name: str) -> SynthPreset:
    if name not in PRESETS:
        raise SixdPoseError(f"unknown preset {name!r}: choose one of {', '.join(sorted(PRESETS))} "
                            f"(`sixd-pose synth --list-presets` describes them)")
    return PRESETS[name]


def preset_objects(preset: SynthPreset) -> dict[int, ProceduralObject]:
    """BOP object id -> object: ids are 1 + position in the preset's object list."""
    if preset.split == "demo":
        return {1: make_bundled_demo_object()}
    return {i + 1: make_object(preset.split, idx) for i, idx in enumerate(preset.objects)}


def generate_frames(preset: SynthPreset, objects: dict[int, ProceduralObject],
                    cfg: SceneConfig = SceneConfig(), progress: bool = True
                    ) -> Iterable[tuple[int, list[SceneFrame]]]:
    """Yield (scene_id, frames) scene by scene; each scene draws from its own seeded stream,
    so scene k is the same whatever the scene count."""
    ids = sorted(objects)
    prepared = {i: scene_object(i, objects[i].mesh) for i in ids}
    bar = tqdm(total=preset.scenes * preset.frames_per_scene, unit="frame", desc=f"synth {preset.name}",
               disable=not progress)
    try:
        for scene_id in range(preset.scenes):
            rng = np.random.default_rng(np.random.SeedSequence((preset.seed, scene_id)))
            n_t = int(rng.integers(preset.targets_per_scene[0], preset.targets_per_scene[1] + 1))
            chosen = rng.choice(ids, size=min(n_t, len(ids)), replace=False)
            n_d = int(rng.integers(preset.distractors_per_scene[0], preset.distractors_per_scene[1] + 1))
            distractor_ids = rng.integers(0, 1_000_000, n_d) + DISTRACTOR_INDEX_BASE
            distractors = [scene_object(0, make_object("heldout", int(i)).mesh) for i in distractor_ids]
            frames = compose_scene([prepared[int(i)] for i in chosen], distractors,
                                   preset.frames_per_scene, rng, cfg,
                                   start_stamp_ns=1_700_000_000_000_000_000 + scene_id * 10**12)
            bar.update(len(frames))
            yield scene_id, frames
    finally:
        bar.close()


def synthesize(preset: SynthPreset, out: Path, *, formats: tuple[str, ...] = ("bop",),
               storage: str = "mcap", overwrite: bool = False, progress: bool = True,
               cfg: SceneConfig = SceneConfig()) -> dict:
    """Write a dataset folder: BOP layout (models/, test/<scene>/) and/or rosbag2 bags
    (bags/<scene>/), plus synth_info.json describing how it was made. Returns that summary."""
    unknown = set(formats) - {"bop", "rosbag"}
    if unknown:
        raise SixdPoseError(f"unknown format(s) {sorted(unknown)}: use bop and/or rosbag")
    if storage not in ("mcap", "sqlite3"):
        raise SixdPoseError(f"unknown rosbag storage {storage!r}: use mcap or sqlite3")
    out = Path(out)
    started = time.perf_counter()
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        objects = preset_objects(preset)
        write_bop_models(tmp / "models", {i: o.mesh for i, o in objects.items()},
                         {i: o.symmetry for i, o in objects.items()})
        n_frames = n_instances = 0
        render_seconds = 0.0
        t_scene = time.perf_counter()
        for scene_id, frames in generate_frames(preset, objects, cfg, progress):
            render_seconds += time.perf_counter() - t_scene
            n_frames += len(frames)
            n_instances += sum(len(f.instances) for f in frames)
            if "bop" in formats:
                with BopSceneWriter(tmp / "test" / f"{scene_id:06d}") as writer:
                    for im_id, frame in enumerate(frames):
                        writer.add(frame, im_id)
            if "rosbag" in formats:
                (tmp / "bags").mkdir(exist_ok=True)
                write_rosbag(tmp / "bags" / f"{scene_id:06d}", frames, storage=storage)
            t_scene = time.perf_counter()
        info = {
            "preset": asdict(preset), "formats": list(formats), "rosbag_storage": storage,
            "frames": n_frames, "instances": n_instances, "objects": {
                str(i): {"split": o.seed_key[0], "index": o.seed_key[1], "family": o.family,
                         "symmetry": o.symmetry, "textured": o.textured, "diameter_m": o.diameter,
                         "faces": int(len(o.mesh.faces))} for i, o in objects.items()},
            "seconds_total": time.perf_counter() - started,
            "frames_per_second_render": n_frames / max(render_seconds, 1e-9),
        }
        (tmp / "synth_info.json").write_text(json.dumps(info, indent=1))
    return info


def with_overrides(preset: SynthPreset, scenes: int | None = None, frames: int | None = None,
                   seed: int | None = None) -> SynthPreset:
    """A preset with fewer/more scenes or frames, or another seed (named so it cannot pass
    for the original in a report)."""
    changes = {k: v for k, v in (("scenes", scenes), ("frames_per_scene", frames), ("seed", seed))
               if v is not None}
    for key, value in changes.items():
        if key != "seed" and value < 1:
            raise SixdPoseError(f"--{key.split('_')[0]} must be at least 1, got {value}")
    if not changes:
        return preset
    suffix = ",".join(f"{k}={v}" for k, v in changes.items())
    return replace(preset, name=f"{preset.name}[{suffix}]", **changes)


ProgressCallback = Callable[[int], None]

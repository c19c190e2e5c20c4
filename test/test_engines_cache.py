"""Engine cache: keys, paths, verified atomic files (no TensorRT needed: pure functions)."""
from __future__ import annotations

import json
import logging

import pytest

from sixd_pose_ros.engines.cache import (
    CacheEntry,
    CacheError,
    cache_dir,
    cache_key,
    ensure_writable,
)
from sixd_pose_ros.engines.tensorrt_engine import (
    GpuInfo,
    TensorRTUnavailable,
    engine_entry,
    engine_facts,
    load_or_build_engine,
    tensorrt_available,
)

H200 = GpuInfo("NVIDIA H200", (9, 0))
PROFILE = {"query": ((1, 3, 240, 320), (1, 3, 480, 640), (1, 3, 480, 640))}


def test_key_ignores_spelling_and_changes_with_every_fact():
    a = {"x": (1, 2), "y": {"b": 1, "a": [3]}}
    b = {"y": {"a": (3,), "b": 1}, "x": [1, 2]}
    assert cache_key(a) == cache_key(b)
    assert cache_key(a) != cache_key({**a, "x": (1, 3)})
    assert len(cache_key(a)) == 64


def test_engine_key_depends_on_gpu_trt_precision_shapes_and_onnx():
    base = engine_facts("ab" * 32, PROFILE, "fp16", H200, "10.3.0")
    variants = [
        engine_facts("cd" * 32, PROFILE, "fp16", H200, "10.3.0"),  # other graph / weights
        engine_facts("ab" * 32, PROFILE, "fp32", H200, "10.3.0"),  # precision
        engine_facts("ab" * 32, PROFILE, "fp16", GpuInfo("NVIDIA RTX 4090", (8, 9)), "10.3.0"),  # GPU
        engine_facts("ab" * 32, PROFILE, "fp16", H200, "10.4.0"),  # TensorRT version
        engine_facts("ab" * 32, {"query": ((1, 3, 240, 320), (1, 3, 720, 1280), (1, 3, 720, 1280))},
                     "fp16", H200, "10.3.0"),  # image size
    ]
    keys = {cache_key(f) for f in [base, *variants]}
    assert len(keys) == 6
    entry = engine_entry("/cache", "encoder", base)
    assert entry.path.name.startswith("encoder-sm90-fp16-") and entry.path.suffix == ".engine"
    assert entry.path.parent.name == "tensorrt"
    with pytest.raises(ValueError, match="precision"):
        engine_facts("ab" * 32, PROFILE, "int4", H200, "10.3.0")


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SIXD_POSE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SIXD_POSE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "sixd_pose_ros" / "engines"
    assert cache_dir(tmp_path / "given") == tmp_path / "given"


def test_store_and_load_round_trip_leaves_no_temporaries(tmp_path):
    entry = CacheEntry.for_facts(tmp_path, "encoder", {"a": 1}, "onnx")
    assert entry.load() is None  # nothing yet
    data = bytes(range(256)) * 100
    entry.store(data, {"a": 1}, seconds=1.5)
    assert entry.load() == data
    manifest = json.loads(entry.manifest_path.read_text())
    assert manifest["size"] == len(data) and manifest["seconds"] == 1.5 and manifest["facts"] == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([entry.path.name, entry.manifest_path.name])


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_manifest", "other_key"])
def test_damaged_file_is_detected_removed_and_reported(tmp_path, caplog, damage):
    """A truncated engine (a copy cut short), a flipped byte, a missing manifest (write
    interrupted between the two files) or a manifest of another key: load() says None (the
    caller rebuilds), the files are gone, and the log says why."""
    entry = engine_entry(tmp_path, "detector_features", engine_facts("ab" * 32, PROFILE, "fp16", H200, "10.3.0"))
    data = b"\x01" * 5000
    entry.store(data)
    if damage == "truncate":
        entry.path.write_bytes(data[:1234])
    elif damage == "flip":
        entry.path.write_bytes(b"\x02" + data[1:])
    elif damage == "no_manifest":
        entry.manifest_path.unlink()
    else:
        m = json.loads(entry.manifest_path.read_text())
        entry.manifest_path.write_text(json.dumps({**m, "key": "0" * 64}))
    with caplog.at_level(logging.WARNING):
        assert entry.load() is None
    assert not entry.path.exists() and not entry.manifest_path.exists()
    assert "unusable" in caplog.text and str(entry.path) in caplog.text


def test_unwritable_cache_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheError, match="SIXD_POSE_CACHE"):
        ensure_writable(blocker / "engines")
    entry = CacheEntry.for_facts(blocker / "engines", "encoder", {}, "onnx")
    with pytest.raises(CacheError):
        entry.store(b"x")


def test_a_failed_build_is_remembered_for_its_key_only(tmp_path):
    facts = engine_facts("ab" * 32, PROFILE, "fp16", H200, "10.3.0")
    entry = engine_entry(tmp_path, "refiner", facts)
    assert entry.previous_failure() is None
    entry.record_failure("TensorRT cannot parse GridSample")
    assert "GridSample" in entry.previous_failure()
    other = engine_entry(tmp_path, "refiner", {**facts, "precision": "fp32"})
    assert other.previous_failure() is None
    entry.store(b"engine")  # a later success clears it
    assert entry.previous_failure() is None


def test_siblings_are_stale_keys_of_the_same_graph(tmp_path):
    a = CacheEntry.for_facts(tmp_path, "encoder", {"w": 1}, "onnx")
    b = CacheEntry.for_facts(tmp_path, "encoder", {"w": 2}, "onnx")
    c = CacheEntry.for_facts(tmp_path, "encoder_big", {"w": 1}, "onnx")
    for e in (a, b, c):
        e.store(b"x")
    assert a.siblings() == [b.path]


@pytest.mark.skipif(tensorrt_available()[0], reason="checks the message when TensorRT is missing")
def test_engine_loader_without_tensorrt_names_the_fix(tmp_path):
    with pytest.raises(TensorRTUnavailable, match="tensorrt|CUDA"):
        load_or_build_engine(b"onnx", "ab" * 32, PROFILE, "fp16", tmp_path, "encoder")
    assert not any(tmp_path.iterdir())  # nothing half-written

"""`sixd-pose build-engines`: exports every graph (and the heads of the objects given) into the
cache ahead of time; a second run finds them all; TensorRT without a GPU is a clear error."""
from __future__ import annotations

import pytest
from conftest import build_small_database, torch_single_thread

from sixd_pose_ros.cli import main
from sixd_pose_ros.engines.tensorrt_engine import tensorrt_available
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR


@pytest.fixture(autouse=True)
def one_thread():
    with torch_single_thread():
        yield


@pytest.mark.slow
def test_build_engines_exports_every_graph_once(tmp_path, capsys):
    db, _ = build_small_database(WEIGHTS_DIR, tmp_path)
    cache = tmp_path / "cache"
    args = ["build-engines", "--backend", "onnxruntime", "--objects", str(db), "--cache", str(cache), "--no-progress"]
    main(args)
    names = sorted(p.name.rsplit("-", 1)[0] for p in (cache / "onnx").glob("*.onnx"))
    assert {"detector_features", "detector_head-drill", "encoder", "refiner"} < set(names)
    first = capsys.readouterr().out
    assert "detector_head-drill" in first and str(cache) in first
    stamps = {p: p.stat().st_mtime_ns for p in (cache / "onnx").iterdir()}
    main(args)  # everything cached: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in (cache / "onnx").iterdir()} == stamps
    # The default estimator finds every graph it runs (the pretrained backbone's too) already there.
    from sixd_pose_ros.engines.backends import make_backend
    from sixd_pose_ros.pipeline.known_model import KnownModelEstimator

    KnownModelEstimator.from_paths([db], WEIGHTS_DIR, backend=make_backend("onnxruntime", cache=cache))
    assert {p: p.stat().st_mtime_ns for p in (cache / "onnx").iterdir()} == stamps


@pytest.mark.skipif(tensorrt_available()[0], reason="checks the message without TensorRT")
def test_build_engines_for_tensorrt_without_it_says_what_is_missing(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["build-engines", "--backend", "tensorrt", "--cache", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "cannot build tensorrt engines here" in err and ("pip install tensorrt" in err or "CUDA" in err)

"""Smoke test on one real RGB-D frame (LM-O scene 2, frame 3, object 5) with the shipped weights:
the known-model path runs on real data with and without depth and returns a sane answer (a
finite pose or none). Accuracy on one frame is reported by scripts/real_smoke.py, never tuned on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import torch_single_thread

SMOKE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_smoke" / "lmo_scene2_frame3"

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not SMOKE.is_dir(), reason="../shared/data/real_smoke is not beside the checkout")
def test_known_model_runs_on_the_real_frame(tmp_path):
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR

    if not (WEIGHTS_DIR / "autoencoder.pt").is_file():
        pytest.skip("no shipped weights")
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_smoke", Path(__file__).resolve().parents[1] / "scripts" / "real_smoke.py")
    real_smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real_smoke)
    with torch_single_thread():
        report = real_smoke.run(tmp_path, subdivisions=1, n_inplane=6)
    for mode in ("rgbd", "rgb"):
        r = report[mode]
        assert r["found"] in (True, False)
        if r["found"]:
            assert np.isfinite(r["rotation_error_deg"]) and np.isfinite(r["translation_error_cm"])

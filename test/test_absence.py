"""An object that is not in view gets no pose; the same object put into the same photo gets one.

The real LM-O photo of the smoke test (a cluttered table of other objects) is the scene; the
bundled demo drill is the object asked for. With the defaults (min_detection_score 0.3, the node's
min_score) the estimator must say "not here" on the RGB-D photo as it is, and find the drill once
it is rendered into the photo.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import build_small_database, put_into_photo

from sixd_pose_ros.geometry.pose_errors import add_error
from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR
from sixd_pose_ros.pipeline.types import Frame

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_smoke" / "lmo_scene2_frame3"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (REAL / "rgb.png").is_file(), reason=f"no real smoke frame at {REAL}")]


@pytest.fixture(scope="module")
def estimator_and_photo(tmp_path_factory):
    from sixd_pose_ros.datasets.bop import read_bop_single_frame
    from sixd_pose_ros.pipeline.known_model import KnownModelConfig, KnownModelEstimator

    db, obj = build_small_database(WEIGHTS_DIR, tmp_path_factory.mktemp("absence"))
    estimator = KnownModelEstimator.from_paths([db], WEIGHTS_DIR, KnownModelConfig(backend="torch"))
    return estimator, obj, read_bop_single_frame(REAL)


def test_an_object_that_is_not_in_the_photo_gets_no_pose(estimator_and_photo):
    estimator, _, photo = estimator_and_photo
    assert estimator.config.min_detection_score == 0.3  # the default the node uses
    assert estimator.estimate(Frame(photo.rgb, photo.K, photo.depth)) == []
    # Without depth it is not so: the render-and-match refiner moves the drill to where the
    # clutter looks most like it, and its contrast there passes (KnownModelConfig.contrast_gain).


def test_the_same_object_put_into_the_photo_is_found(estimator_and_photo):
    estimator, obj, photo = estimator_and_photo
    frame, R, t = put_into_photo(obj.mesh, estimator.objects[0].db.references.normalization.center, photo)
    poses = estimator.estimate(frame)
    assert len(poses) == 1 and poses[0].score >= 0.3
    points = np.asarray(obj.mesh.sample(500, seed=0))
    assert add_error(poses[0].R, poses[0].t, R, t, points) < 0.1 * obj.diameter

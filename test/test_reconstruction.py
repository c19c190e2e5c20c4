"""The surface fused from reference depth, and depth ranking with it: a model-free object built
from RGB-D photos gets a mesh close to the true one, the database checks it, and the depth picks
the right pose among wrong ones."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from test_posed_images import render_views, write_folder

from sixd_pose_ros.objects.model_free_database import (
    ModelFreeDatabaseError,
    build_model_free_database,
    load_model_free_database,
)
from sixd_pose_ros.objects.reconstruction import ReconstructionError, fuse_depth_views
from sixd_pose_ros.pipeline.depth_ranking import Hypothesis, SurfaceModel, choose_by_depth, rank_by_depth
from sixd_pose_ros.pipeline.rotation_search import search_grid
from sixd_pose_ros.pipeline.types import Frame


@pytest.fixture(scope="module")
def views():
    return render_views(20)


@pytest.fixture(scope="module")
def database(views, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recon")
    src = write_folder(views, tmp / "photos", depth=True, mask=True, units="m")
    return build_model_free_database(src, "part", tmp / "objects", size=64, n_selector=8, n_detector=8,
                                     progress=False)


def _input_frame_points(db, mesh, n=4000):
    T = np.asarray(db.info["object_frame"]["to_input"])
    return np.asarray(mesh.sample(n, seed=0)) @ T[:3, :3].T + T[:3, 3]


def test_fused_surface_is_close_to_the_true_one(views, database):
    db = load_model_free_database(database)
    info = db.info["mesh"]
    assert info["source"] == "reference_depth" and 0 < info["faces"] <= 6000
    mesh = db.surface_mesh()
    rec = _input_frame_points(db, mesh)
    true = np.asarray(views.mesh.sample(4000, seed=1))
    diameter = 2 * views.norm.scale
    to_true = cKDTree(true).query(rec)[0]
    to_rec = cKDTree(rec).query(true)[0]
    # Everything fused lies on the object (2 % of its size: about two voxels); the true surface is covered except
    # where no camera looked (5 %).
    assert np.mean(to_true) < 0.02 * diameter, np.mean(to_true) / diameter
    assert np.mean(to_rec) < 0.05 * diameter, np.mean(to_rec) / diameter


def test_a_changed_mesh_is_refused_with_the_rebuild_command(database, tmp_path):
    import shutil

    copy = tmp_path / "part"
    shutil.copytree(database, copy)
    with open(copy / "mesh.ply", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelFreeDatabaseError, match="mesh.ply.*rebuild it with `sixd-pose build-object"):
        load_model_free_database(copy)


def test_without_depth_there_is_no_surface(views, tmp_path):
    src = write_folder(views, tmp_path / "photos", depth=False, mask=True, units="m")
    db = load_model_free_database(build_model_free_database(src, "part", tmp_path / "objects", size=64,
                                                            n_selector=8, n_detector=8, progress=False))
    assert db.info["mesh"] is None and db.surface_mesh() is None


def test_depth_that_misses_the_object_is_a_clear_error(views):
    far = [(np.zeros_like(views.depth[i]), None, views.K, views.R[i], views.t[i]) for i in range(3)]
    with pytest.raises(ReconstructionError, match="depth_scale"):
        fuse_depth_views(far, views.norm.center, views.norm.scale)


def test_depth_ranking_picks_the_true_pose_among_wrong_ones(views):
    """Hypotheses: the true pose 20 deg and 1 cm off, and three far rotations at the right place;
    the depth picks the near one and its ICP brings it closer (within ADD-0.1d, a quarter closer)."""
    surface = SurfaceModel.from_mesh(views.mesh, views.norm.center, search_grid(1, 12))
    rng = np.random.default_rng(0)
    diameter = 2 * views.norm.scale
    for i in (2, 9):
        frame = Frame(rgb=views.rgb[i], K=views.K, depth=views.depth[i].astype(np.float32))
        R_true, t_true = views.R[i], views.t[i]
        near = Rotation.from_rotvec(np.radians(20) * _unit(rng)).as_matrix() @ R_true
        far = [Rotation.from_rotvec(np.radians(120) * _unit(rng)).as_matrix() @ R_true for _ in range(3)]
        hyps = [Hypothesis(R, t_true + 0.01 * _unit(rng), None, 1.0, 1.0) for R in (*far, near)]
        chosen, quick = choose_by_depth(surface, hyps, frame, None, align_top=16, similarity_power=0.0,
                                        tolerance=(0.02, 0.02))
        assert chosen is hyps[-1]
        final = surface.align(frame, quick.R, quick.t, (0.02, 0.02))
        assert _add(views.mesh, final.R, final.t, R_true, t_true) < min(
            0.1 * diameter, 0.75 * _add(views.mesh, chosen.R, chosen.t, R_true, t_true))
        assert final.agreement > 0.8
        ranked = rank_by_depth(surface, hyps, frame, None, align_top=16, similarity_power=0.0,
                               tolerance=(0.02, 0.02))
        assert len(ranked) == 4 and ranked[0].hypothesis is chosen  # all of them, best first
        assert [r.rank for r in ranked] == sorted((r.rank for r in ranked), reverse=True)


def _add(mesh, R, t, R_true, t_true):
    v = np.asarray(mesh.vertices)
    return np.linalg.norm((v @ R.T + t) - (v @ R_true.T + t_true), axis=1).mean()


def _unit(rng):
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)

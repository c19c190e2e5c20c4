"""Pretrained-feature templates: the frozen backbone loads offline from its wheel; a rendered view
of the object is retrieved near its true rotation and PnP on patch matches recovers its pose,
translation included, without depth; stale template files are rebuilt, never used."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import torch_single_thread

from sixd_pose_ros.geometry.pose_errors import add_error, rotation_error_deg
from sixd_pose_ros.render.procedural import make_bundled_demo_object
from sixd_pose_ros.render.renderer import RenderMesh, render

K = np.array([[600.0, 0, 322.0], [0, 598.0, 241.0], [0, 0, 1.0]])


@pytest.fixture(scope="module")
def setup():
    from sixd_pose_ros.features.efficientnet import load_patch_backbone
    from sixd_pose_ros.geometry.normalization import normalization_from_points
    from sixd_pose_ros.objects.templates import build_templates
    from sixd_pose_ros.pipeline.template_matching import TemplateMatcher

    obj = make_bundled_demo_object()
    with torch_single_thread():
        backbone = load_patch_backbone()
        templates = build_templates(obj.mesh, backbone, subdivisions=1, n_inplane=6, progress=False)
    norm = normalization_from_points(np.asarray(obj.mesh.vertices))
    return obj, backbone, templates, TemplateMatcher(templates, norm, backbone)


def _view(obj, R, t):
    return render([RenderMesh.from_trimesh(obj.mesh)], R, t, K, 640, 480).rgb[0]


def test_backbone_is_frozen_and_identified():
    from sixd_pose_ros.features.efficientnet import load_patch_backbone

    backbone = load_patch_backbone()
    ident = backbone.identity
    assert ident.variant == "lite0" and ident.block == 10 and len(ident.weights_sha256) == 64
    assert backbone.stride == 16 and backbone.channels == 112
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training  # batch-norm statistics can never drift
    f = backbone.encode(np.zeros((1, 64, 96, 3), np.uint8))
    assert f.shape == (1, 4, 6, 112) and np.allclose(np.linalg.norm(f, axis=-1), 1.0, atol=1e-4)


def test_templates_retrieve_a_rendered_view_and_pnp_recovers_its_pose(setup):
    obj, _, templates, matcher = setup
    assert len(templates) == 42 * 6 and templates.features.dtype == np.float16
    # A template's own rotation (exactly on the grid), seen off-centre in a 640x480 image.
    j = 100
    t_center = np.array([0.05, -0.03, 0.65])
    # Pose of the model whose centre lands at t_center, turned so that the crop there shows template j.
    from sixd_pose_ros.geometry.crop_camera import object_centred_camera

    vc = object_centred_camera(K, t_center, matcher.norm.scale, templates.size)
    R_cam = vc.R_v.T @ templates.R[j]
    t = t_center - R_cam @ matcher.norm.center
    rgb = _view(obj, R_cam, t)
    with torch_single_thread():
        query = matcher.crop(rgb, K, [t_center])[0]
        hits = matcher.retrieve(query, k=3)
        assert rotation_error_deg(hits[0].R, R_cam) < 1.0 and hits[0].score > 0.9
        # A centre 1.5 cm off and 8 % too far: PnP still finds the pose, translation included.
        off = matcher.crop(rgb, K, [t_center * 1.08 + np.array([0.015, 0.0, 0.0])])[0]
        found = matcher.retrieve(off, k=3)
        pose = matcher.pnp(off, K, [p.template for p in found])
    assert pose is not None and pose.inliers >= 10
    points = np.asarray(obj.mesh.sample(500, seed=0))
    assert add_error(pose.R, pose.t, R_cam, t, points) < 0.1 * obj.diameter
    # far from the off-centre template pose, the PnP translation is right to about a centimetre
    assert np.linalg.norm(pose.t - t) < 0.02


def test_stale_templates_are_rebuilt_not_used(setup, tmp_path):
    from sixd_pose_ros.objects.templates import TemplateFormatError, TemplateSet

    obj, backbone, templates, _ = setup
    path = templates.save(tmp_path / "templates.npz")
    loaded = TemplateSet.load(path, expected_backbone=backbone.identity.as_dict())
    assert np.array_equal(loaded.features, templates.features) and loaded.backbone == templates.backbone
    other = dict(backbone.identity.as_dict(), weights_sha256="0" * 64)
    with pytest.raises(TemplateFormatError, match="other backbone weights"):
        TemplateSet.load(path, expected_backbone=other)
    path.write_bytes(b"not an npz")
    with pytest.raises(TemplateFormatError, match="rebuild the object"):
        TemplateSet.load(path)


def test_pnp_on_degenerate_matches_gives_none_not_an_error(setup, monkeypatch):
    _, _, templates, matcher = setup
    rgb = np.zeros((480, 640, 3), np.uint8)
    with torch_single_thread():
        query = matcher.crop(rgb, K, [np.array([0.0, 0.0, 0.7])])[0]
    # Every match on one model point: SQPnP refuses such input with an OpenCV assertion.
    monkeypatch.setattr(matcher, "correspondences",
                        lambda q, j: (np.zeros((20, 3)), np.full((20, 2), 100.0)))
    assert matcher.pnp(query, K, [0, 1]) is None

"""Training samples are geometrically right: the labels describe what is in the image."""
from __future__ import annotations

import numpy as np

from sixd_pose_ros.geometry.rotations import geodesic_angle
from sixd_pose_ros.render.renderer import render
from sixd_pose_ros.training.pose_samples import (
    detector_sample, distance_for_diameter, metric_translation, perturb_pose, pose_object,
    refiner_sample, sphere_diameter_px,
)


def test_diameter_distance_inverse():
    for box in (60.0, 120.0, 170.0):
        assert abs(sphere_diameter_px(distance_for_diameter(box, 300.0), 300.0) - box) < 1e-9


def test_detector_sample_labels_match_the_rendered_object():
    obj, other = pose_object("train", 0, n_refs=8), pose_object("train", 1, n_refs=8)
    rng = np.random.default_rng(3)
    for _ in range(4):
        s = detector_sample(obj, [], rng)  # no distractors: the object alone is the foreground
        assert s.query.shape == (256, 256, 3) and s.query.dtype == np.uint8
        assert 120 * 2 ** -1 - 1e-6 <= s.box_px <= 120 * 2 ** 0.5 + 1e-6
        # Re-render the object from the label: its silhouette must lie inside the labelled circle.
        d = distance_for_diameter(s.box_px, np.sqrt(s.K[0, 0] * s.K[1, 1]))
        ray = np.linalg.solve(s.K, [*s.center_xy, 1.0])
        R = np.eye(3)
        out = render([obj.mesh], R, metric_translation(obj, R, d * ray / np.linalg.norm(ray)), s.K, 256, 256)
        ys, xs = np.nonzero(out.mask[0])
        if len(xs):
            r = np.hypot(xs - s.center_xy[0], ys - s.center_xy[1]).max()
            assert r <= s.box_px / 2 * 1.08 + 1.5
    assert detector_sample(obj, [other], rng).query.shape == (256, 256, 3)


def test_refiner_sample_crop_is_centred_on_the_input_pose():
    obj = pose_object("train", 2, n_refs=16)
    rng = np.random.default_rng(5)
    for _ in range(5):
        s = refiner_sample(obj, rng)
        assert s.crop.shape == (128, 128, 3)
        assert np.allclose(s.t_in[:2], 0.0, atol=1e-9) and s.t_in[2] > 1.0
        angle = np.degrees(geodesic_angle(s.R_in, s.R_gt))
        assert angle <= 15.0 + 1e-6
        assert abs(s.t_gt[2] / s.t_in[2] - 1.0) < 0.12
        # Ground truth projects close to the crop centre (shift <= 10 px in a 600 px-focal image).
        uv = s.K_crop @ s.t_gt
        assert np.linalg.norm(uv[:2] / uv[2] - 63.5) < 40
        assert len(s.ref_idx) == 6 and len(set(s.ref_idx.tolist())) == 6


def test_perturb_pose_bounds():
    rng = np.random.default_rng(0)
    K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
    R, t = np.eye(3), np.array([0.1, -0.05, 5.0])
    for _ in range(50):
        R_in, t_in = perturb_pose(R, t, K, rng, max_rot_deg=10, max_depth_frac=0.05, max_shift_px=4)
        assert np.degrees(geodesic_angle(R_in, R)) <= 10 + 1e-9
        assert abs(t_in[2] / t[2] - 1) <= 0.05 + 1e-9
        uv, uv0 = K @ t_in, K @ t
        assert np.abs(uv[:2] / uv[2] - uv0[:2] / uv0[2]).max() <= 4 + 1e-6

"""Depth proposals: the table is found and dropped, each object standing on it is one segment,
and the ranking term says how much of a segment a posed model accounts for."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from sixd_pose_ros.geometry.plane import fit_support_plane
from sixd_pose_ros.geometry.rotations import matrix_from_axis_angle
from sixd_pose_ros.pipeline.depth_proposals import (
    segment_depth,
    segment_explained,
    segment_proposals,
    silhouette_support,
)
from sixd_pose_ros.render.renderer import RenderMesh, render

K = np.array([[600.0, 0, 320.0], [0, 600.0, 240.0], [0, 0, 1.0]])
W, H = 640, 480
# The camera looks down at a table 30 degrees from straight on; the table normal points to it.
TILT = matrix_from_axis_angle(np.array([1.0, 0.0, 0.0]), np.radians(-30))


def _table_depth(distance: float = 0.8) -> np.ndarray:
    """Depth of the plane through (0, 0, distance) with normal TILT @ (0, 0, -1), every pixel."""
    n = TILT @ np.array([0.0, 0.0, -1.0])
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, dtype=float)], -1)
    p0 = np.array([0.0, 0.0, distance])
    return ((n @ p0) / (rays @ n)).astype(np.float32)  # z of the ray's hit (rays have z = 1)


def _on_table(mesh: trimesh.Trimesh, along_table: tuple[float, float], distance: float = 0.8):
    """Pose putting the mesh's lowest point on the table at an offset along it."""
    n = TILT @ np.array([0.0, 0.0, -1.0])
    R = TILT @ matrix_from_axis_angle(np.array([1.0, 0.0, 0.0]), np.radians(90))
    lowest = float(np.min(np.asarray(mesh.vertices) @ R.T @ n))  # height of the lowest point along n
    x_axis, y_axis = TILT @ np.array([1.0, 0, 0]), TILT @ np.array([0, 1.0, 0])
    t = np.array([0.0, 0.0, distance]) + along_table[0] * x_axis + along_table[1] * y_axis - lowest * n
    return R, t


@pytest.fixture(scope="module")
def scene():
    """A 10 cm box and a 6 cm cylinder standing 25 cm apart on a tilted table, rendered."""
    box = trimesh.creation.box((0.1, 0.08, 0.06))
    cyl = trimesh.creation.cylinder(radius=0.03, height=0.09, sections=32)
    poses = [_on_table(box, (-0.12, 0.0)), _on_table(cyl, (0.13, 0.02))]
    meshes = [RenderMesh.from_trimesh(box), RenderMesh.from_trimesh(cyl)]
    out = render(meshes, np.stack([p[0] for p in poses]), np.stack([p[1] for p in poses]), K, W, H)
    table = _table_depth()
    depth = np.where(out.depth[0] > 0, np.minimum(out.depth[0], table), table).astype(np.float32)
    return depth, (box, cyl), poses, out


def test_plane_fit_finds_the_table_and_points_it_at_the_camera():
    depth = _table_depth()
    ys, xs = np.mgrid[0:H:8, 0:W:8]
    z = depth[ys, xs]
    pts = np.stack([(xs - K[0, 2]) * z / K[0, 0], (ys - K[1, 2]) * z / K[1, 1], z], -1).reshape(-1, 3)
    plane = fit_support_plane(pts)
    assert plane is not None and plane[3] > 0  # camera (origin) on the positive side
    assert np.degrees(np.arccos(abs(plane[:3] @ (TILT @ np.array([0.0, 0.0, -1.0]))))) < 0.5
    assert np.abs(pts @ plane[:3] + plane[3]).max() < 1e-3


def test_each_object_on_the_table_is_one_segment(scene):
    depth, (box, cyl), poses, out = scene
    seg = segment_depth(depth, K)
    assert seg.plane is not None and len(seg.segments) == 2
    for i, mesh in enumerate((box, cyl)):
        visible = out.mask[0] == i + 1
        labels = seg.labels[visible]
        label = np.bincount(labels[labels > 0]).argmax()
        assert np.mean(labels == label) > 0.8  # the object's visible pixels, minus its rim
        segment = next(s for s in seg.segments if s.label == label)
        assert segment.extent < 1.2 * float(np.linalg.norm(mesh.extents))
        # The visible surface's centroid is in front of the object's centre, by less than its size.
        assert np.linalg.norm(segment.centroid - poses[i][1]) < 0.6 * float(np.linalg.norm(mesh.extents))


def test_proposals_keep_only_segments_of_a_fitting_size(scene):
    depth, (box, cyl), poses, _ = scene
    seg = segment_depth(depth, K)
    diameter = float(np.linalg.norm(box.extents))
    props = segment_proposals(seg, diameter, diameter / 2, K)
    assert props and all(0.15 * diameter <= p.segment.extent <= 1.3 * diameter for p in props)
    centre_px = (K @ poses[0][1])[:2] / poses[0][1][2]
    nearest = min(props, key=lambda p: np.linalg.norm(p.detection.center_xy - centre_px))
    assert np.linalg.norm(nearest.detection.center_xy - centre_px) < 25  # px, on the box
    assert nearest.detection.box_size > 0 and np.isfinite(nearest.centre).all()
    assert segment_proposals(seg, 5.0, 2.5, K) == []  # a 5 m object fits no segment


def test_explained_is_high_at_the_true_pose_and_low_elsewhere(scene):
    depth, (box, cyl), poses, _ = scene
    seg = segment_depth(depth, K)
    from scipy.spatial import cKDTree

    tree = cKDTree(np.asarray(box.sample(3000, seed=0)))
    diameter = float(np.linalg.norm(box.extents))
    R, t = poses[0]
    assert segment_explained(seg, tree, R, t, K, diameter) > 0.8
    # The box moved onto the cylinder: that segment is not a box.
    R_c, t_c = poses[1]
    assert segment_explained(seg, tree, R, t_c, K, diameter) < 0.5
    # Turned 90 degrees about the viewing ray, the box no longer covers its own segment.
    turned = matrix_from_axis_angle(t / np.linalg.norm(t), np.radians(90)) @ R
    assert segment_explained(seg, tree, turned, t, K, diameter) < 0.8
    assert segment_explained(seg, tree, R, t + np.array([1.0, 0, 0]), K, diameter) == 0.0  # off image
    # A model whose origin is at its base: the segment is the one under its surface all the same.
    base = np.array([0.0, 0.0, -0.03])
    tree_base = cKDTree(np.asarray(box.sample(3000, seed=0)) - base)
    t_base = t + R @ base
    assert segment_explained(seg, tree_base, R, t_base, K, diameter) > 0.8


def test_explained_finds_the_segment_of_an_object_whose_centre_is_not_on_it():
    # A ring lying on the table (a roll of tape): its centre projects into the hole, onto the table.
    ring = trimesh.creation.torus(major_radius=0.05, minor_radius=0.012)
    n = TILT @ np.array([0.0, 0.0, -1.0])
    R, t = TILT, np.array([0.0, 0.0, 0.8]) + 0.012 * n
    out = render([RenderMesh.from_trimesh(ring)], R[None], t[None], K, W, H)
    table = _table_depth()
    depth = np.where(out.depth[0] > 0, np.minimum(out.depth[0], table), table).astype(np.float32)
    seg = segment_depth(depth, K)
    centre_px = np.round((K @ t)[:2] / t[2]).astype(int)
    assert seg.labels[centre_px[1], centre_px[0]] == 0  # the centre sees the table: no segment there
    from scipy.spatial import cKDTree

    tree = cKDTree(np.asarray(ring.sample(3000, seed=0)))
    diameter = float(np.linalg.norm(ring.extents))
    assert segment_explained(seg, tree, R, t, K, diameter) > 0.8


def test_bad_depth_gives_no_segments_not_an_error():
    empty = segment_depth(np.zeros((H, W), np.float32), K)
    assert empty.plane is None and empty.segments == [] and not empty.labels.any()
    noisy = np.full((H, W), np.nan, np.float32)
    noisy[100:200, 100:200] = 0.5
    seg = segment_depth(noisy, K)
    assert np.isfinite(seg.labels).all() and all(np.isfinite(s.centroid).all() for s in seg.segments)


def test_unmasked_reference_depth_loses_the_table_and_keeps_the_objects(scene):
    """The reference fusion's cut for photos without masks (objects/reconstruction.py)."""
    from sixd_pose_ros.objects.reconstruction import cut_support_plane

    depth, _, _, out = scene
    cut = cut_support_plane(depth, K)
    objects = out.mask.max(0) > 0
    assert np.mean(cut[~objects] > 0) < 0.01  # the table is gone
    assert np.mean(cut[objects] > 0) > 0.9  # the objects stay (but a sliver at their feet)


def test_support_rules_out_a_pose_on_the_bare_table_or_out_of_view(scene):
    depth, (box, cyl), poses, _ = scene
    seg = segment_depth(depth, K)
    from scipy.spatial import cKDTree

    tree = cKDTree(np.asarray(box.sample(3000, seed=0)))
    R, t = poses[0]
    assert silhouette_support(seg, tree, R, t, K, depth) > 0.8  # its bottom rim is at table height
    # The same box moved 15 cm along the table, where nothing stands: its face would fit the
    # table's depth, but the table is all it projects onto.
    x_axis = TILT @ np.array([1.0, 0, 0])
    assert silhouette_support(seg, tree, R, t + 0.15 * x_axis + np.array([0, 0.1, 0]), K, depth) < 0.1
    # Half out of the image: the half outside confirms nothing.
    edge = np.linalg.solve(K, np.array([W - 1.0, 240.0, 1.0])) * t[2]
    half_out = silhouette_support(seg, tree, R, edge, K, depth)
    assert half_out < 0.6
    # No depth at all under it: nothing to say against it.
    assert silhouette_support(seg, tree, R, t, K, np.zeros_like(depth)) == 1.0


def test_a_correlation_peak_counts_only_on_something_off_the_table_at_its_size(scene):
    from sixd_pose_ros.pipeline.feature_detection import FeaturePeak, peak_fits_depth

    depth, (box, _), poses, _ = scene
    seg = segment_depth(depth, K)
    radius = float(np.linalg.norm(box.extents)) / 2
    t = poses[0][1]
    on_box = (K @ t)[:2] / t[2]
    assert peak_fits_depth(FeaturePeak(on_box, float(t[2]), 0.5), seg, depth, K, radius)
    # Right place, but the template's size says twice as far: another object's size, not this one.
    assert not peak_fits_depth(FeaturePeak(on_box, 2.0 * float(t[2]), 0.5), seg, depth, K, radius)
    # The bare table, where a busy texture may correlate well: nothing stands there.
    assert not peak_fits_depth(FeaturePeak(np.array([320.0, 60.0]), float(t[2]), 0.5), seg, depth, K, radius)


def test_an_object_touching_another_still_explains_its_own_part_of_their_segment():
    # Two 8 cm cubes side by side, touching: one segment. Each cube's true pose accounts for the
    # segment near it, not for its neighbour.
    cube = trimesh.creation.box((0.08, 0.08, 0.08))
    poses = [_on_table(cube, (-0.04, 0.0)), _on_table(cube, (0.04, 0.0))]
    mesh = RenderMesh.from_trimesh(cube)
    out = render([mesh, mesh], np.stack([p[0] for p in poses]), np.stack([p[1] for p in poses]), K, W, H)
    table = _table_depth()
    depth = np.where(out.depth[0] > 0, np.minimum(out.depth[0], table), table).astype(np.float32)
    seg = segment_depth(depth, K)
    labels = [np.bincount(seg.labels[out.mask[0] == i + 1]).argmax() for i in range(2)]
    assert labels[0] == labels[1] != 0  # merged
    from scipy.spatial import cKDTree

    tree = cKDTree(np.asarray(cube.sample(3000, seed=0)))
    diameter = float(np.linalg.norm(cube.extents))
    R, t = poses[0]
    assert segment_explained(seg, tree, R, t, K, diameter) > 0.7
    assert segment_explained(seg, tree, R, t, K, diameter, reach=10.0) < 0.6  # the whole segment


def test_a_row_of_touching_objects_is_split_into_a_place_per_object():
    # Four 6 cm cubes in a row, touching: one segment, 2.3 cube diameters across.
    # Split into 2 and 3 parts only, some cube has no place within 2 cm of its visible centre;
    # split into up to ceil(extent / diameter) + 1 parts, every cube has one.
    cube = trimesh.creation.box((0.06, 0.06, 0.06))
    poses = [_on_table(cube, (x, 0.0)) for x in (-0.09, -0.03, 0.03, 0.09)]
    mesh = RenderMesh.from_trimesh(cube)
    out = render([mesh] * 4, np.stack([p[0] for p in poses]), np.stack([p[1] for p in poses]), K, W, H)
    table = _table_depth()
    depth = np.where(out.depth[0] > 0, np.minimum(out.depth[0], table), table).astype(np.float32)
    seg = segment_depth(depth, K)
    assert len({np.bincount(seg.labels[out.mask[0] == i + 1]).argmax() for i in range(4)}) == 1  # merged
    diameter = float(np.linalg.norm(cube.extents))
    v, u = np.nonzero(out.depth[0] > 0)
    z = out.depth[0][v, u]
    visible = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], 1)
    centres = [visible[out.mask[0][v, u] == i + 1].mean(0) for i in range(4)]

    def nearest(max_parts: int) -> list[float]:
        parts = [p.segment.centroid for p in segment_proposals(seg, diameter, diameter / 2, K, split_up_to=3.0,
                                                              max_parts=max_parts)]
        return [min(np.linalg.norm(c - p) for p in parts) for c in centres]

    assert max(nearest(6)) < 0.02
    assert max(nearest(3)) > 0.02

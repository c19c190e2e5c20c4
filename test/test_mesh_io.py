"""load_mesh on the meshes users hand us: good ones load in meters, bad ones give a MeshError
whose message names the fix (never a raw trimesh / numpy traceback)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.render import mesh_io
from sixd_pose_ros.render.mesh_io import MeshError, infer_unit, load_mesh

LOGGER = "sixd_pose_ros.render.mesh_io"
REAL_DIR = Path("/work/shared/data/real_smoke/lmo_scene2_frame3")


def box(extents, path: Path, **export_kwargs) -> Path:
    trimesh.creation.box(extents=extents).export(path, **export_kwargs)
    return path


def max_extent(mesh: trimesh.Trimesh) -> float:
    return float(np.max(mesh.bounds[1] - mesh.bounds[0]))


def diameter(mesh: trimesh.Trimesh) -> float:
    """Largest distance between two vertices (BOP's models_info 'diameter')."""
    hull = mesh.convex_hull.vertices
    return float(np.sqrt(((hull[:, None] - hull[None]) ** 2).sum(-1)).max())


# ----------------------------------------------------------------------------- good meshes


def test_mesh_error_is_a_sixd_pose_error():
    assert issubclass(MeshError, SixdPoseError)


def test_ply_with_vertex_colors_in_mm_loads_in_meters_with_colors(tmp_path):
    mesh = trimesh.creation.box(extents=(100.0, 50.0, 20.0))
    colors = np.zeros((len(mesh.vertices), 4), np.uint8)
    colors[:, 0] = np.arange(len(mesh.vertices)) * 30
    colors[:, 1] = 200
    colors[:, 3] = 255
    mesh.visual.vertex_colors = colors
    path = tmp_path / "colored.ply"
    mesh.export(path)

    loaded = load_mesh(path, unit="mm")
    assert isinstance(loaded, trimesh.Trimesh)
    np.testing.assert_allclose(loaded.extents, [0.1, 0.05, 0.02], atol=1e-9)
    assert loaded.visual.kind == "vertex"
    np.testing.assert_array_equal(loaded.visual.vertex_colors, colors)


def test_obj_with_texture_keeps_texture_and_image(tmp_path):
    mesh = trimesh.creation.box(extents=(0.1, 0.08, 0.06))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8))
    uv = rng.random((len(mesh.vertices), 2))
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    path = tmp_path / "textured.obj"
    mesh.export(path)
    assert list(tmp_path.glob("*.mtl")) and list(tmp_path.glob("*.png"))

    loaded = load_mesh(path, unit="m")
    assert isinstance(loaded.visual, trimesh.visual.TextureVisuals)
    assert loaded.visual.uv is not None and len(loaded.visual.uv) == len(loaded.vertices)
    loaded_image = loaded.visual.material.image
    assert loaded_image is not None
    assert loaded_image.size == (8, 16)
    np.testing.assert_allclose(loaded.extents, [0.1, 0.08, 0.06], atol=1e-6)


def test_stl_loads(tmp_path):
    loaded = load_mesh(box((80.0, 40.0, 30.0), tmp_path / "part.stl"), unit="mm")
    assert len(loaded.faces) == 12
    np.testing.assert_allclose(loaded.extents, [0.08, 0.04, 0.03], atol=1e-7)


@pytest.mark.parametrize("unit,scale", [("m", 1.0), ("cm", 100.0), ("mm", 1000.0)])
def test_units_scale_to_meters(tmp_path, unit, scale):
    meters = np.array([0.12, 0.06, 0.03])
    loaded = load_mesh(box(meters * scale, tmp_path / f"box_{unit}.ply"), unit=unit)
    np.testing.assert_allclose(loaded.extents, meters, rtol=1e-6)


def test_unit_string_is_case_and_space_insensitive(tmp_path):
    loaded = load_mesh(box((120.0, 60.0, 30.0), tmp_path / "b.ply"), unit=" MM ")
    np.testing.assert_allclose(loaded.extents, [0.12, 0.06, 0.03], rtol=1e-6)


def test_multi_part_scene_is_merged(tmp_path):
    parts = [trimesh.creation.box(extents=(0.1, 0.1, 0.1)),
             trimesh.creation.icosphere(subdivisions=1, radius=0.02).apply_translation((0.2, 0, 0))]
    path = tmp_path / "two_parts.glb"
    trimesh.Scene(parts).export(path)
    loaded = load_mesh(path, unit="m")
    assert len(loaded.faces) == sum(len(p.faces) for p in parts)
    np.testing.assert_allclose(loaded.bounds, [[-0.05, -0.05, -0.05], [0.22, 0.05, 0.05]], atol=1e-6)


def test_obj_with_latin1_comments_and_mtl_loads(tmp_path):
    """CAD tools write CP1252 comments; trimesh alone then needs an optional module."""
    mesh = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    image = Image.fromarray(np.full((4, 4, 3), 128, np.uint8))
    mesh.visual = trimesh.visual.TextureVisuals(uv=np.zeros((8, 2)), image=image)
    path = tmp_path / "latin1.obj"
    mesh.export(path)
    path.write_bytes("# Créé par SolidWorks, 20°C\n".encode("latin-1") + path.read_bytes())
    for mtl in tmp_path.glob("*.mtl"):
        mtl.write_bytes("# matériau\n".encode("latin-1") + mtl.read_bytes())

    loaded = load_mesh(path, unit="m")
    assert len(loaded.faces) == 12
    assert isinstance(loaded.visual, trimesh.visual.TextureVisuals)
    assert loaded.visual.material.image is not None


def test_binary_ply_with_latin1_header_comment_loads(tmp_path):
    data = trimesh.creation.box(extents=(0.1, 0.1, 0.1)).export(file_type="ply", encoding="binary")
    data = data.replace(b"ply\n", "ply\ncomment exporté\n".encode("latin-1"), 1)
    path = tmp_path / "latin1.ply"
    path.write_bytes(data)
    loaded = load_mesh(path, unit="m")
    assert len(loaded.faces) == 12
    np.testing.assert_allclose(loaded.extents, [0.1, 0.1, 0.1], atol=1e-6)


@pytest.mark.skipif(not (REAL_DIR / "obj_000005.ply").is_file(),
                    reason="needs /work/shared/data/real_smoke (LM-O object 5)")
def test_real_lmo_mesh_in_mm_is_inferred_with_warning(caplog):
    info = json.loads((REAL_DIR / "models_info.json").read_text())["5"]
    assert info["diameter"] == pytest.approx(201.404)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        mesh = load_mesh(REAL_DIR / "obj_000005.ply")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]
    assert warnings, "inferring the unit must warn"
    message = warnings[0].getMessage()
    assert "--unit" in message and "'mm'" in message
    assert diameter(mesh) == pytest.approx(info["diameter"] / 1000.0, abs=1e-3)
    assert diameter(mesh) == pytest.approx(0.2014, abs=1e-3)
    assert mesh.visual.kind == "vertex"  # LM-O meshes carry vertex colors


# ----------------------------------------------------------------------------- unit inference


@pytest.mark.parametrize("width,unit,expected_width_m", [(0.15, "m", 0.15), (150.0, "mm", 0.15)])
def test_unit_inferred_from_size_with_warning(tmp_path, caplog, width, unit, expected_width_m):
    path = box((width, width / 2, width / 3), tmp_path / "obj.ply")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        mesh = load_mesh(path)
    assert max_extent(mesh) == pytest.approx(expected_width_m, rel=1e-6)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(f"guessed {unit!r}" in m and "--unit" in m for m in messages), messages


def test_no_warning_when_unit_given(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        load_mesh(box((150.0, 75.0, 50.0), tmp_path / "obj.ply"), unit="mm")
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_infer_unit():
    assert infer_unit(0.15) == "m"
    assert infer_unit(1.5) == "m"
    assert infer_unit(150.0) == "mm"
    assert infer_unit(2000.0) == "mm"


# ----------------------------------------------------------------------------- bad meshes


def mesh_error(path, unit="m") -> str:
    with pytest.raises(MeshError) as info:
        load_mesh(path, unit=unit)
    return str(info.value)


def test_missing_path_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "part.ply"
    message = mesh_error(path)
    assert str(path) in message and "does not exist" in message


def test_directory(tmp_path):
    assert "not a file" in mesh_error(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.ply"
    path.write_bytes(b"")
    message = mesh_error(path)
    assert "empty" in message and "re-export" in message


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".stl", ".off", ".glb"])
def test_random_bytes(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    assert "re-export" in mesh_error(path)


def test_truncated_binary_ply(tmp_path):
    data = trimesh.creation.box(extents=(0.1, 0.1, 0.1)).export(file_type="ply", encoding="binary")
    end = data.index(b"end_header\n") + len(b"end_header\n")
    path = tmp_path / "truncated.ply"
    for cut in (end, len(data) - 7):
        path.write_bytes(data[:cut])
        message = mesh_error(path)
        assert "truncated" in message and "re-export" in message


def test_truncated_binary_stl(tmp_path):
    data = trimesh.creation.box(extents=(0.1, 0.1, 0.1)).export(file_type="stl")
    path = tmp_path / "truncated.stl"
    path.write_bytes(data[: len(data) // 2])
    assert "re-export" in mesh_error(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "part.fbx"
    path.write_bytes(b"Kaydara FBX Binary  \x00" + bytes(100))
    message = mesh_error(path)
    assert "not supported" in message and ".ply" in message and ".obj" in message


PLY_HEADER = "ply\nformat ascii 1.0\nelement vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"


@pytest.mark.parametrize("with_face_element", [False, True])
def test_point_cloud_ply(tmp_path, with_face_element):
    points = np.random.default_rng(2).random((20, 3)) * 0.1
    text = PLY_HEADER.format(n=len(points))
    if with_face_element:
        text += "element face 0\nproperty list uchar int vertex_indices\n"
    text += "end_header\n" + "".join(f"{x} {y} {z}\n" for x, y, z in points)
    path = tmp_path / "cloud.ply"
    path.write_text(text)
    assert "triangle mesh" in mesh_error(path)


@pytest.mark.parametrize("bad_index", [7, -1])
def test_face_index_out_of_range(tmp_path, bad_index):
    text = (PLY_HEADER.format(n=3) + "element face 1\nproperty list uchar int vertex_indices\n"
            f"end_header\n0 0 0\n0.1 0 0\n0 0.1 0\n3 0 1 {bad_index}\n")
    path = tmp_path / "bad_faces.ply"
    path.write_text(text)
    message = mesh_error(path)
    assert "outside" in message and "re-export" in message


def test_nan_vertices(tmp_path):
    mesh = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    vertices = mesh.vertices.copy()
    vertices[3] = np.nan
    path = tmp_path / "nan.ply"
    trimesh.Trimesh(vertices, mesh.faces, process=False).export(path)
    message = mesh_error(path)
    assert "NaN" in message and "repair" in message


def test_degenerate_mesh(tmp_path):
    text = (PLY_HEADER.format(n=3) + "element face 1\nproperty list uchar int vertex_indices\n"
            "end_header\n0 0 0\n0.1 0 0\n0.2 0 0\n3 0 1 2\n")  # collinear: zero area
    path = tmp_path / "flat.ply"
    path.write_text(text)
    assert "degenerate" in mesh_error(path)


def test_absurdly_large_object_suggests_wrong_unit(tmp_path):
    message = mesh_error(box((50.0, 20.0, 10.0), tmp_path / "huge.ply"), unit="m")
    assert "unit is probably wrong" in message and "--unit mm" in message


def test_absurdly_tiny_object_suggests_wrong_unit(tmp_path):
    message = mesh_error(box((0.5, 0.3, 0.2), tmp_path / "tiny.ply"), unit="mm")
    assert "unit is probably wrong" in message and "--unit" in message


def test_unknown_unit(tmp_path):
    message = mesh_error(box((0.1, 0.1, 0.1), tmp_path / "b.ply"), unit="inch2")
    assert "inch2" in message and "'mm'" in message


def test_too_many_faces_asks_to_decimate(tmp_path, monkeypatch):
    path = box((0.1, 0.1, 0.1), tmp_path / "b.ply")  # 12 faces
    monkeypatch.setattr(mesh_io, "MAX_FACES", 10)
    message = mesh_error(path)
    assert "decimate" in message and "12 faces" in message
    monkeypatch.setattr(mesh_io, "MAX_FACES", 12)
    assert len(load_mesh(path, unit="m").faces) == 12

"""Object database folders: build (atomic), load with checks, errors naming the fix, the CLI."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import torch_single_thread
import torch
import trimesh
from torch import nn
from torch.nn import functional as F

from sixd_pose_ros import cli
from sixd_pose_ros.errors import OutputError, SixdPoseError
from sixd_pose_ros.io import file_sha256
from sixd_pose_ros.models import checkpoint
from sixd_pose_ros.objects import codebook as codebook_module
from sixd_pose_ros.objects import database
from sixd_pose_ros.objects.database import (
    OBJECT_DB_FORMAT_VERSION,
    ObjectDatabaseError,
    add_codebook,
    build_object_database,
    load_object_database,
)

REAL_MESH = Path("/work/shared/data/real_smoke/lmo_scene2_frame3/obj_000005.ply")
ENC_ID = "e" * 64
# Tiny settings: 42 views x 4 angles, 8 references of 64 px.
SMALL = dict(subdivisions=1, n_inplane=4, n_references=8, size=64, progress=False)


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_single_thread():
        yield


class TinyEncoder(nn.Module):
    """Stand-in pose encoder (deterministic random conv net, L2-normalized ``(z_o, z_p)``) for
    testing the database mechanics; see test_codebook.py."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(3, 8, 4, stride=4)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(8 * 16, 256)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        z_o, z_p = self.fc(self.pool(torch.tanh(self.c1(x - 0.5))).flatten(1)).chunk(2, dim=1)
        return F.normalize(z_o, dim=1), F.normalize(z_p, dim=1)


@pytest.fixture(scope="module")
def encoder():
    return TinyEncoder().eval()


@pytest.fixture(scope="module")
def mesh_file(tmp_path_factory) -> Path:
    """An asymmetric coloured object written as a ply in millimetres."""
    parts = []
    for extents, offset, rgb in (((100, 60, 40), (0, 0, 0), (200, 60, 40)),
                                 ((30, 30, 80), (30, 10, 50), (40, 180, 60))):
        m = trimesh.creation.box(extents)
        m.apply_translation(offset)
        m.visual = trimesh.visual.ColorVisuals(
            m, vertex_colors=np.tile([*rgb, 255], (len(m.vertices), 1)).astype(np.uint8))
        parts.append(m)
    path = tmp_path_factory.mktemp("mesh") / "part.ply"
    path.write_bytes(trimesh.util.concatenate(parts).export(file_type="ply"))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, mesh_file, encoder) -> Path:
    """One complete database (with codebook); tests copy it before damaging it."""
    with torch_single_thread():
        out = tmp_path_factory.mktemp("objects")
        return build_object_database(mesh_file, "part", out, "mm", encoder, ENC_ID, **SMALL)


def _copy(src: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "objects" / src.name
    shutil.copytree(src, dst)
    return dst


def _names_fix(exc: BaseException) -> None:
    assert isinstance(exc, SixdPoseError)
    assert "sixd-pose build-object" in str(exc), str(exc)


# ------------------------------------------------------------------------------------------------


def test_build_and_load(built, mesh_file):
    assert sorted(p.name for p in built.iterdir()) == \
        ["codebook.npz", "mesh.ply", "object.json", "references.npz"]
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")]
    info = json.loads((built / "object.json").read_text())
    assert info["format_version"] == OBJECT_DB_FORMAT_VERSION and info["name"] == "part"
    assert info["unit"] == "m" and info["source"] == {"file": "part.ply", "unit": "mm",
                                                      "sha256": file_sha256(mesh_file)}
    assert info["mesh"]["sha256"] == file_sha256(built / "mesh.ply")
    assert info["weights"]["encoder"] == ENC_ID and info["symmetry"] is None
    assert info["codebook"]["entries"] == 42 * 4 and info["codebook"]["preset"] == "custom"
    assert info["package_version"]
    assert 0.12 < info["diameter"] < 0.16  # meters: a ~100 x 60 x 130 mm object
    assert set(info["build"]["seconds"]) >= {"render_references", "render_views", "encode", "write"}

    db = load_object_database(built, expected_weights={"encoder": ENC_ID})
    assert db.name == "part" and len(db.references) == 8 and db.references.size == 64
    assert len(db.codebook) == 168 and db.codebook.encoder_id == ENC_ID
    assert db.diameter == info["diameter"]
    np.testing.assert_allclose(db.normalization.center, db.codebook.normalization.center)
    assert db.normalization.scale == db.codebook.normalization.scale
    np.testing.assert_allclose(db.normalization.center, info["normalization"]["center"])
    np.testing.assert_allclose(np.ptp(np.asarray(db.mesh.vertices), axis=0), [0.1, 0.06, 0.11], rtol=1e-6)


def test_references_only_then_add_codebook(tmp_path, mesh_file, encoder):
    path = build_object_database(mesh_file, "part", tmp_path, "mm", n_references=8, size=64,
                                 progress=False)
    assert not (path / "codebook.npz").exists()
    db = load_object_database(path)
    assert db.codebook is None and db.info["weights"]["encoder"] is None
    with pytest.raises(ObjectDatabaseError) as e:
        load_object_database(path, expected_weights={"encoder": ENC_ID})
    _names_fix(e.value)
    assert "codebook" in str(e.value)

    cb = add_codebook(path, encoder, ENC_ID, subdivisions=0, n_inplane=4, progress=False)
    assert len(cb) == 48
    db = load_object_database(path, expected_weights={"encoder": ENC_ID})
    assert len(db.codebook) == 48 and db.info["codebook"]["subdivisions"] == 0


@pytest.mark.parametrize("damage, words", [
    ("missing_folder", "does not exist"),
    ("missing_json", "object.json"),
    ("corrupt_json", "corrupt"),
    ("future_version", "version"),
    ("missing_references", "references.npz"),
    ("corrupt_references", "references"),
    ("missing_codebook", "codebook.npz"),
    ("corrupt_codebook", "corrupt"),
    ("changed_mesh", "sha256"),
    ("missing_mesh", "mesh"),
])
def test_load_errors_name_the_fix(built, tmp_path, damage, words):
    path = _copy(built, tmp_path)
    if damage == "missing_folder":
        path = tmp_path / "objects" / "nothing_here"
    elif damage == "missing_json":
        (path / "object.json").unlink()
    elif damage == "corrupt_json":
        (path / "object.json").write_text("{ not json")
    elif damage == "future_version":
        info = json.loads((path / "object.json").read_text())
        info["format_version"] = OBJECT_DB_FORMAT_VERSION + 1
        (path / "object.json").write_text(json.dumps(info))
    elif damage.startswith("missing_"):
        (path / {"references": "references.npz", "codebook": "codebook.npz",
                 "mesh": "mesh.ply"}[damage.split("_")[1]]).unlink()
    elif damage.startswith("corrupt_"):
        f = path / f"{damage.split('_')[1]}.npz"
        f.write_bytes(f.read_bytes()[:3000])
    elif damage == "changed_mesh":
        with open(path / "mesh.ply", "ab") as fh:
            fh.write(b"\0")
    with pytest.raises(ObjectDatabaseError) as e:
        load_object_database(path, expected_weights={"encoder": ENC_ID})
    _names_fix(e.value)
    assert words in str(e.value)


def test_weights_mismatch(built):
    with pytest.raises(ObjectDatabaseError) as e:
        load_object_database(built, expected_weights={"encoder": "f" * 64})
    _names_fix(e.value)
    assert "encoder weights" in str(e.value)
    info = json.loads((built / "object.json").read_text())
    if info["weights"]["detector"] is not None:
        with pytest.raises(ObjectDatabaseError):
            load_object_database(built, expected_weights={"detector": "f" * 64})
    else:  # not recorded at build time: references do not depend on it, so not checked
        load_object_database(built, expected_weights={"detector": "f" * 64})
    with pytest.raises(ValueError):
        load_object_database(built, expected_weights={"selector": "f" * 64})


def test_build_is_atomic(tmp_path, mesh_file, encoder, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("crash in the middle of the codebook")

    monkeypatch.setattr(database, "build_codebook", boom)
    with pytest.raises(RuntimeError):
        build_object_database(mesh_file, "part", tmp_path, "mm", encoder, ENC_ID, **SMALL)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary


def test_existing_folder_needs_overwrite(tmp_path, mesh_file):
    kw = dict(n_references=4, size=32, progress=False)
    path = build_object_database(mesh_file, "part", tmp_path, "mm", **kw)
    with pytest.raises(OutputError, match="--overwrite"):
        build_object_database(mesh_file, "part", tmp_path, "mm", **kw)
    before = json.loads((path / "object.json").read_text())["build"]["created"]
    build_object_database(mesh_file, "part", tmp_path, "mm", overwrite=True, symmetry="none", **kw)
    info = json.loads((path / "object.json").read_text())
    assert info["symmetry"] == "none" and info["build"]["created"] >= before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part"]


def test_bad_arguments(tmp_path, mesh_file, encoder):
    for bad in ("2fast", "has space", "", "../up"):
        with pytest.raises(ObjectDatabaseError, match="--name"):
            build_object_database(mesh_file, bad, tmp_path, "mm", progress=False)
    with pytest.raises(ObjectDatabaseError, match="encoder_id"):
        build_object_database(mesh_file, "part", tmp_path, "mm", encoder, None, progress=False)
    with pytest.raises(SixdPoseError, match="--unit"):
        build_object_database(mesh_file, "part", tmp_path, "km", progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("missing", ["loader", "weights file"])
def test_cli_without_autoencoder_builds_references(tmp_path, mesh_file, monkeypatch, capsys,
                                                   missing):
    if missing == "loader":
        monkeypatch.delattr(checkpoint, "load_autoencoder", raising=False)
    else:
        monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path / "no_weights_here")
    cli.main(["build-object", "--mesh", str(mesh_file), "--unit", "mm", "--name", "part",
              "--out", str(tmp_path / "objects"), "--no-progress"])
    out, err = capsys.readouterr()
    assert "warning" in err and "autoencoder" in err and "--overwrite" in err
    if missing == "weights file":
        assert "autoencoder.pt not found" in err
    assert "codebook: none" in out and "timings: render" in out
    db = load_object_database(tmp_path / "objects" / "part")
    assert db.codebook is None and len(db.references) == 64
    # The rebuild command an error names works as printed (from the folder's own mesh copy).
    (tmp_path / "objects" / "part" / "references.npz").unlink()
    with pytest.raises(ObjectDatabaseError) as e:
        load_object_database(tmp_path / "objects" / "part")
    command = re.search(r"`sixd-pose (build-object [^`]+)`", str(e.value)).group(1)
    cli.main(shlex.split(command) + ["--no-progress"])
    assert load_object_database(tmp_path / "objects" / "part").codebook is None


def test_cli_with_autoencoder_builds_codebook(tmp_path, mesh_file, monkeypatch, capsys):
    """Through the real weights format and loader, with a narrow untrained autoencoder."""
    if not hasattr(checkpoint, "load_autoencoder"):
        pytest.skip("models.checkpoint has no load_autoencoder yet")
    from sixd_pose_ros.models.autoencoder import AutoencoderConfig, DisentangledAutoencoder

    weights_dir = tmp_path / "weights"
    torch.manual_seed(0)
    model = DisentangledAutoencoder(AutoencoderConfig(base=4, hidden=32))
    checkpoint.save_weights(weights_dir / "autoencoder.pt", model, model.cfg)
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", weights_dir)
    monkeypatch.setitem(codebook_module.CODEBOOK_PRESETS, "coarse", (0, 4))
    cli.main(["build-object", "--mesh", str(mesh_file), "--unit", "mm", "--name", "part",
              "--out", str(tmp_path / "objects"), "--coarse", "--no-progress"])
    out, _ = capsys.readouterr()
    print(out)
    assert "coarse 12 views x 4 in-plane = 48 rotations" in out and "encode" in out
    sha = file_sha256(weights_dir / "autoencoder.pt")
    db = load_object_database(tmp_path / "objects" / "part", expected_weights={"encoder": sha})
    assert len(db.codebook) == 48
    # A bad mesh path is a one-line error with exit status 2.
    with pytest.raises(SystemExit) as e:
        cli.main(["build-object", "--mesh", str(tmp_path / "nope.ply"), "--name", "x"])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.skipif(not REAL_MESH.is_file(), reason="real LM-O mesh not available")
def test_smoke_real_mesh(tmp_path, encoder):
    path = build_object_database(REAL_MESH, "obj_000005", tmp_path, "mm", encoder, ENC_ID,
                                 subdivisions=1, n_inplane=4, n_references=16, progress=False)
    db = load_object_database(path, expected_weights={"encoder": ENC_ID})
    sec = db.info["build"]["seconds"]
    print(f"\nobj_000005 ({db.info['mesh']['faces']} faces, diameter {db.diameter:.3f} m): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in sec.items()))
    assert 0.1 < db.diameter < 0.3 and len(db.codebook) == 168
    assert db.references.masks.mean() > 0.1  # the object is visible in its references

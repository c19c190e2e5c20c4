"""All-or-nothing outputs: nothing half-written survives an error, nothing is replaced silently."""

from __future__ import annotations

import gc
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sixd_pose_ros.errors import OutputError, SixdPoseError
from sixd_pose_ros.io import (
    AtomicOutputDir,
    atomic_output_dir,
    atomic_output_path,
    atomic_write_bytes,
    atomic_write_text,
    file_sha256,
)


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_output_error_is_project_error() -> None:
    assert issubclass(OutputError, SixdPoseError)
    assert SixdPoseError.__doc__


def test_dir_appears_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with atomic_output_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
        assert not final.exists()
        (tmp / "a.txt").write_text("x")
    assert (final / "a.txt").read_text() == "x"
    assert _entries(tmp_path) == ["out"]
    # the staging folder came from mkdtemp (0700); the result must be a normal folder
    assert final.stat().st_mode & 0o055 == 0o055 & ~_umask()


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_dir_leaves_nothing_on_error(tmp_path: Path, exc_type: type[BaseException]) -> None:
    with pytest.raises(exc_type):
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "half.txt").write_text("x")
            raise exc_type()
    assert _entries(tmp_path) == []


def test_dir_refuses_existing_and_overwrites_on_request(tmp_path: Path) -> None:
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(OutputError, match="--overwrite"):
        with atomic_output_dir(final):
            pass
    assert _entries(final) == ["old.txt"]
    with atomic_output_dir(final, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _entries(final) == ["new.txt"]
    assert _entries(tmp_path) == ["out"]


def test_unwritable_parent_gives_output_error(tmp_path: Path) -> None:
    # A path below a regular file cannot be created, even by root (chmod would not stop root).
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="writable"):
        with atomic_output_dir(blocker / "sub" / "out"):
            pass
    with pytest.raises(OutputError):
        atomic_write_text(blocker / "sub.json", "{}")
    with pytest.raises(OutputError):
        with atomic_output_path(blocker / "bag"):
            pass


def test_missing_parents_are_created(tmp_path: Path) -> None:
    with atomic_output_dir(tmp_path / "a" / "b" / "out") as tmp:
        (tmp / "f").write_bytes(b"1")
    assert (tmp_path / "a" / "b" / "out" / "f").read_bytes() == b"1"


def test_output_path_for_self_creating_producers(tmp_path: Path) -> None:
    final = tmp_path / "bag"
    with atomic_output_path(final) as inner:
        assert inner.name == "bag" and not inner.exists()
        inner.mkdir()  # the producer insists on creating it itself
        (inner / "bag_0.mcap").write_bytes(b"data")
    assert _entries(tmp_path) == ["bag"] and _entries(final) == ["bag_0.mcap"]

    with pytest.raises(ValueError):
        with atomic_output_path(tmp_path / "bag2") as inner:
            inner.mkdir()
            raise ValueError("crash mid-recording")
    assert _entries(tmp_path) == ["bag"]

    with pytest.raises(OutputError, match="--overwrite"):
        with atomic_output_path(final):
            pass


def test_object_form_cleans_up_when_dropped(tmp_path: Path) -> None:
    out = AtomicOutputDir(tmp_path / "scene")
    (out.path / "x").write_text("1")
    del out
    gc.collect()
    assert _entries(tmp_path) == []


def test_write_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "info.json"
    atomic_write_text(target, '{"a": 1}')
    atomic_write_bytes(target, b'{"a": 2}')  # single files are replaced by default
    assert target.read_bytes() == b'{"a": 2}'
    assert _entries(tmp_path) == ["info.json"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with pytest.raises(OutputError, match="--overwrite"):
        atomic_write_text(target, "x", overwrite=False)


def test_io_is_light() -> None:
    """Models, engines and the node write and hash files through sixd_pose_ros.io: importing it
    must not load cv2, rosbags or torch."""
    code = ("import sys, sixd_pose_ros.io; "
            "print(sorted(m for m in ('cv2', 'rosbags', 'torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_file_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # more than one read block
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()

"""All-or-nothing outputs: a dataset, a bag or a file appears complete or not at all.

Writing a BOP scene or a rosbag2 bag takes minutes and can be interrupted (Ctrl-C, a crash,
a full disk). A half-written folder that *looks* like a dataset is worse than none: a later
evaluation would read it and report numbers on a fraction of the frames. So every writer
builds its output in a hidden temporary sibling (same folder, hence same filesystem, so the
final ``rename`` is atomic) and only renames it to the requested name when everything was
written. On any error, including ``KeyboardInterrupt``, the temporary is removed.

Existing outputs are never replaced silently: the caller must ask for it (``overwrite=True``,
which the CLI exposes as ``--overwrite``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sixd_pose_ros.errors import OutputError

__all__ = [
    "AtomicOutputDir",
    "OutputError",
    "atomic_output_dir",
    "atomic_output_path",
    "atomic_write_bytes",
    "atomic_write_text",
]


def _prepare_parent(final: Path) -> Path:
    """Create ``final``'s parent if needed and make sure we can create entries in it."""
    parent = final.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(
            f"{parent} is not a folder, so {final.name} cannot be written in it; "
            "choose an output path inside a writable folder"
        )
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(
            f"cannot create the output folder {parent} ({reason}); "
            "choose an output path inside a writable folder"
        ) from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"the folder {parent} is not writable; choose an output path inside a writable "
            "folder or fix its permissions"
        )
    return parent


def _refuse_existing(final: Path, overwrite: bool) -> None:
    if (final.exists() or final.is_symlink()) and not overwrite:
        raise OutputError(
            f"{final} exists already; pass --overwrite (overwrite=True) to replace it, "
            "or choose another output path"
        )


def _remove(path: Path) -> None:
    """Remove a file or folder tree; best effort (used on cleanup paths)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only swap it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _make_staging_dir(parent: Path, name: str) -> Path:
    """A private temporary folder; given normal permissions since it becomes the output."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    except OSError as exc:
        raise OutputError(
            f"cannot create a temporary folder in {parent} ({exc.strerror or exc}); "
            "choose an output path inside a writable folder with free space"
        ) from exc
    # mkdtemp makes it 0700; a dataset should end up readable like any folder we mkdir.
    tmp.chmod(0o777 & ~_umask())
    return tmp


def _commit(src: Path, final: Path, overwrite: bool) -> None:
    """Move the finished ``src`` to ``final``; replace an existing ``final`` if allowed.

    A non-empty folder cannot be replaced by ``os.replace``, so an existing output is first
    renamed aside, the new one renamed in, and only then the old one deleted: at every instant
    ``final`` is either the old complete output or the new complete output.
    """
    aside: Path | None = None
    if final.exists() or final.is_symlink():
        _refuse_existing(final, overwrite)  # it may have appeared while we were writing
        aside = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
        os.rename(final, aside)
    try:
        os.rename(src, final)
    except BaseException:
        if aside is not None:
            os.rename(aside, final)
        raise
    if aside is not None:
        _remove(aside)


class AtomicOutputDir:
    """A temporary folder that becomes ``final`` on :meth:`commit` and vanishes on :meth:`abort`.

    The object form of :func:`atomic_output_dir`, for writers whose lifetime is not one
    ``with`` block (a scene writer that receives frames one call at a time and is closed
    later). If the owner is dropped, or the interpreter exits, without a commit, the temporary
    is removed as well, so an interrupted run leaves no debris behind.
    """

    def __init__(self, final: Path | str, overwrite: bool = False) -> None:
        self.final = Path(final).absolute()
        self.overwrite = overwrite
        parent = _prepare_parent(self.final)
        _refuse_existing(self.final, overwrite)
        self.path = _make_staging_dir(parent, self.final.name)
        self._finished = False
        self._cleanup = weakref.finalize(self, _remove, self.path)

    @property
    def finished(self) -> bool:
        """True once committed or aborted."""
        return self._finished

    def commit(self) -> Path:
        """Rename the temporary to ``final``; returns ``final``."""
        if self._finished:
            raise RuntimeError(f"output {self.final} was already committed or aborted")
        try:
            _commit(self.path, self.final, self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._finished = True
        self._cleanup.detach()
        return self.final

    def abort(self) -> None:
        """Remove the temporary; ``final`` (old or absent) is left as it was."""
        self._finished = True
        self._cleanup()  # runs at most once


@contextmanager
def atomic_output_dir(final: Path | str, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes ``final`` when the block succeeds.

    The temporary is a hidden sibling ``.<name>.tmp-XXXX`` of ``final``. Raises
    :class:`OutputError` before the block runs when ``final`` exists and ``overwrite`` is
    false, or when its parent cannot be written.
    """
    out = AtomicOutputDir(final, overwrite)
    try:
        yield out.path
    except BaseException:
        out.abort()
        raise
    out.commit()


@contextmanager
def atomic_output_path(final: Path | str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a not-yet-existing path with ``final``'s name; it becomes ``final`` on success.

    For producers that insist on creating their output themselves and name their contents
    after it: a rosbag2 writer refuses an existing folder and names its storage file
    ``<bag name>.mcap``, so it must be given a path whose last component is already the final
    name. The path lies in a hidden staging folder next to ``final``; whatever the producer
    created there (a file or a folder) is renamed to ``final`` when the block ends without an
    exception, and the staging folder is removed in every case.
    """
    final = Path(final).absolute()
    parent = _prepare_parent(final)
    _refuse_existing(final, overwrite)
    staging = _make_staging_dir(parent, final.name)
    inner = staging / final.name
    try:
        yield inner
        if not (inner.exists() or inner.is_symlink()):
            raise OutputError(f"nothing was written for {final}; the producer created no output")
        _commit(inner, final, overwrite)
    finally:
        _remove(staging)


def atomic_write_bytes(path: Path | str, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    Readers never see a truncated file, even if the process dies mid-write. Single small files
    (JSON metadata, a model card) are usually rewritten in place, hence ``overwrite=True`` by
    default here, unlike the folder helpers.
    """
    path = Path(path).absolute()
    parent = _prepare_parent(path)
    _refuse_existing(path, overwrite)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=parent)
    except OSError as exc:
        raise OutputError(
            f"cannot create a temporary file in {parent} ({exc.strerror or exc}); "
            "choose an output path inside a writable folder with free space"
        ) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would stick
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(
    path: Path | str, text: str, *, encoding: str = "utf-8", overwrite: bool = True
) -> None:
    """Text variant of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding), overwrite=overwrite)

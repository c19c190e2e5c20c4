"""The on-disk cache of exported ONNX graphs and TensorRT engines: keys, paths, verified files.

Why a cache at all: exporting a network takes seconds and building a TensorRT engine takes
minutes, and both depend only on a handful of facts (the weights, the input shapes, the exporter
or TensorRT version, the GPU). So each artefact is stored under a key that is the sha256 of
exactly those facts; when any of them changes the key changes, the old file is simply not
found, and the artefact is rebuilt with a visible log line saying why.

Every artefact is two files written atomically (temporary file + ``os.replace``), payload first
and its manifest last: ``<stem>.<ext>`` and ``<stem>.json``. The manifest records the payload's
size and sha256 and the facts of the key, so a truncated or swapped payload (a copy cut short,
a disk that filled up, an engine copied from another machine) is detected before it is handed
to ONNX Runtime or TensorRT, removed, and rebuilt instead of crashing the process.

Everything here is plain Python (no torch, no TensorRT), so it is tested on any machine.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sixd_pose_ros.errors import OutputError, SixdPoseError
from sixd_pose_ros.io import atomic_write_bytes, atomic_write_text

__all__ = [
    "CACHE_ENV",
    "CacheEntry",
    "CacheError",
    "cache_dir",
    "cache_key",
    "ensure_writable",
    "sha256_bytes",
]

LOG = logging.getLogger(__name__)

#: Environment variable that moves the cache (a robot may want it on a data partition).
CACHE_ENV = "SIXD_POSE_CACHE"
MANIFEST_FORMAT = 1


class CacheError(SixdPoseError):
    """The cache folder cannot be used (not a folder, not writable); the message names the fix."""


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``override``, else ``$SIXD_POSE_CACHE``, else
    ``$XDG_CACHE_HOME/sixd_pose_ros/engines`` (``~/.cache/sixd_pose_ros/engines``). Not created."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "sixd_pose_ros" / "engines"


def ensure_writable(folder: Path) -> Path:
    """Create ``folder`` if needed and check that files can be created in it.

    Raises:
        CacheError: naming the folder, the reason and the fix (``SIXD_POSE_CACHE``).
    """
    folder = Path(folder)
    fix = (f"set {CACHE_ENV} to a writable folder (or fix the permissions of {folder}); "
           f"without a cache every start exports/builds again")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"cannot create the engine cache folder {folder} ({exc.strerror or exc}): {fix}") from exc
    if not folder.is_dir():
        raise CacheError(f"the engine cache path {folder} is not a folder: {fix}")
    probe = folder / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CacheError(f"the engine cache folder {folder} is not writable ({exc.strerror or exc}): {fix}") from exc
    return folder


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(value: Any) -> Any:
    """JSON-stable form: tuples become lists, mapping keys are sorted by json.dumps."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def cache_key(facts: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``facts``: equal facts, equal key, whatever the
    dict order or list/tuple spelling. Values must be JSON-serializable."""
    text = json.dumps(_canonical(facts), sort_keys=True, separators=(",", ":"))
    return sha256_bytes(text.encode())


@dataclass(frozen=True)
class CacheEntry:
    """One cached artefact: ``folder/<stem>.<ext>`` + ``folder/<stem>.json``.

    ``stem = <name>-<first 16 hex digits of the key>``: readable (which network) and unique
    enough (64 bits) inside one cache folder; the manifest holds the full key and is checked.
    """

    folder: Path
    name: str
    key: str
    ext: str

    @classmethod
    def for_facts(cls, folder: str | os.PathLike, name: str, facts: Mapping[str, Any], ext: str) -> CacheEntry:
        return cls(Path(folder), name, cache_key(facts), ext)

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.key[:16]}"

    @property
    def path(self) -> Path:
        return self.folder / f"{self.stem}.{self.ext}"

    @property
    def manifest_path(self) -> Path:
        return self.folder / f"{self.stem}.json"

    @property
    def failure_path(self) -> Path:
        return self.folder / f"{self.stem}.failed.json"

    def siblings(self) -> list[Path]:
        """Other artefacts of the same network in the folder (stale keys): what a key change
        replaces, named in the rebuild log."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob(f"{self.name}-*.{self.ext}") if p != self.path)

    # --- reading -----------------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        try:
            data = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def load(self) -> bytes | None:
        """The payload when it is present and intact, else None.

        A payload without a valid manifest, with another key, or whose size or sha256 differs
        from the manifest (truncated, overwritten, copied from elsewhere) is removed with a
        warning, so the caller rebuilds it.
        """
        if not self.path.exists():
            return None
        manifest = self.read_manifest()
        why = None
        if manifest is None:
            why = "its manifest is missing or unreadable (an interrupted write?)"
        elif manifest.get("key") != self.key or manifest.get("format") != MANIFEST_FORMAT:
            why = "its manifest belongs to another key"
        else:
            try:
                data = self.path.read_bytes()
            except OSError as exc:
                why = f"it cannot be read ({exc.strerror or exc})"
            else:
                if len(data) != manifest.get("size"):
                    why = f"it is {len(data)} bytes, the manifest says {manifest.get('size')} (truncated?)"
                elif sha256_bytes(data) != manifest.get("sha256"):
                    why = "its sha256 differs from the manifest (corrupt or replaced)"
                else:
                    return data
        LOG.warning("cached %s is unusable: %s; removing it and rebuilding", self.path, why)
        self.remove()
        return None

    # --- writing -----------------------------------------------------------------------------
    def store(self, data: bytes, facts: Mapping[str, Any] | None = None, **info: Any) -> Path:
        """Write the payload, then its manifest (both atomically); returns the payload path.

        Raises:
            CacheError: the folder cannot be written.
        """
        ensure_writable(self.folder)
        manifest = {"format": MANIFEST_FORMAT, "key": self.key, "name": self.name, "size": len(data),
                    "sha256": sha256_bytes(data), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "facts": _canonical(dict(facts or {})), **_canonical(info)}
        try:
            atomic_write_bytes(self.path, data)
            atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1))
        except OutputError as exc:
            raise CacheError(str(exc)) from exc
        self.failure_path.unlink(missing_ok=True)
        return self.path

    def record_failure(self, message: str) -> None:
        """Remember that building this artefact failed, so the next start falls back at once
        instead of failing the same slow build again (delete the file to retry)."""
        try:
            atomic_write_text(self.failure_path, json.dumps({"key": self.key, "error": message}, indent=1))
        except (OutputError, OSError):
            pass

    def previous_failure(self) -> str | None:
        try:
            data = json.loads(self.failure_path.read_text())
        except (OSError, ValueError):
            return None
        return str(data.get("error")) if isinstance(data, dict) and data.get("key") == self.key else None

    def remove(self) -> None:
        for p in (self.path, self.manifest_path):
            try:
                p.unlink(missing_ok=True)
            except OSError:
                pass

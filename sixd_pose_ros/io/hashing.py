"""File identities: the sha256 of a file's bytes.

Object databases record the sha256 of the mesh and of the weights they were built from, and
the engine cache keys its entries by them; all read the file the same way here, in 1 MiB
blocks so that a large file is never held in memory at once.
"""

from __future__ import annotations

import hashlib
import os
from typing import Union

__all__ = ["file_sha256"]


def file_sha256(path: Union[str, os.PathLike], chunk: int = 1 << 20) -> str:
    """sha256 hex digest of the bytes of the file at ``path`` (the identity of weights and meshes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()

"""Files: all-or-nothing writes and file identities (sha256).

The bottom of the package with :mod:`sixd_pose_ros.geometry`: standard library only, so that
models, engines, datasets, objects and the node can all write and hash files without pulling in
cv2, rosbags or torch.
"""

from sixd_pose_ros.io.atomic import (
    AtomicOutputDir,
    atomic_output_dir,
    atomic_output_path,
    atomic_write_bytes,
    atomic_write_text,
)
from sixd_pose_ros.io.hashing import file_sha256

__all__ = [
    "AtomicOutputDir",
    "atomic_output_dir",
    "atomic_output_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_sha256",
]

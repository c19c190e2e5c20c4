"""Entry point of `sixd_pose_node` (`ros2 run sixd_pose_ros sixd_pose_node`).

The pose node itself is built by the node issue; until then this entry point exists so the
console script, its install location and `ros2 run` wiring are in place and tested, and it
says plainly that there is no estimator to run yet instead of failing with an ImportError.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    print("sixd_pose_node: the pose estimation node is not part of this release yet; "
          "`sixd-pose demo` shows what the package does today (see README.md)", file=sys.stderr)
    raise SystemExit(2)

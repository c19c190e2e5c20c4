"""Errors that sixd_pose_ros shows to its users.

Every error that can reach a user (on the command line, in a node's log, in a test report)
derives from :class:`SixdPoseError` and carries a message that says what went wrong *and how
to fix it* (the option to pass, the file to create, the command to run). Callers can then
catch one base class at the top (the CLI prints the message and exits non-zero; the ROS node
logs it throttled and keeps running) instead of dumping a traceback on people who only need
the one line that tells them what to do.

Programming errors inside the package (a wrong shape passed between two of our own
functions) stay plain ``ValueError`` / ``TypeError``: they are bugs, not user mistakes.
"""

from __future__ import annotations

__all__ = ["SixdPoseError", "OutputError", "DatasetError"]


class SixdPoseError(Exception):
    """Base of all user-facing errors; the message names the fix."""


class OutputError(SixdPoseError):
    """An output file or folder cannot be written (exists already, parent not writable, ...)."""


class DatasetError(SixdPoseError):
    """An input dataset (BOP folder, rosbag2 bag) is missing, incomplete or malformed."""

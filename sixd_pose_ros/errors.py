"""Errors that sixd_pose_ros shows to its users.

Every error that can reach a user (on the command line, in a node's log, in a test report)
derives from :class:`SixdPoseError` and carries a message that says what went wrong *and how
to fix it* (the option to pass, the file to create, the command to run). Callers can then
catch one base class at the top (the CLI prints the message and exits non-zero; the ROS node
logs it throttled and keeps running) instead of dumping a traceback on people who only need
the one line that tells them what to do.

Programming errors inside the package (a wrong shape passed between two of our own
functions) stay plain ``ValueError`` / ``TypeError``: they are bugs, not user mistakes.

Code that treats errors differently decides by class, or by an error's :class:`ErrorKind`,
never by its message: messages are for people and get reworded when a fix is named better.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorKind", "SixdPoseError", "OutputError", "DatasetError"]


class ErrorKind(enum.Enum):
    """Which part of a camera frame a frame error (``pipeline.types.FrameError`` and its
    subclasses) is about, so that whoever handles it (the node's diagnostics) can file it, and
    tell the user which input to fix, without reading the message.

    Each value is the short name the problem is counted under; the node's ``/diagnostics``
    shows it as ``warnings/<value>``.
    """

    IMAGE = "frame"  # the colour image itself: its shape, bit depth or size
    ENCODING = "encoding"  # an image message the node cannot read: encoding, buffer, compression
    CAMERA_INFO = "camera_info"  # intrinsics missing, zero, or for another resolution
    DEPTH = "depth"  # depth not aligned to colour, or in the wrong unit
    SIZE = "size"  # a colour image above max_pixels that oversize:=refuse turns away


class SixdPoseError(Exception):
    """Base of all user-facing errors; the message names the fix."""


class OutputError(SixdPoseError):
    """An output file or folder cannot be written (exists already, parent not writable, ...)."""


class DatasetError(SixdPoseError):
    """An input dataset (BOP folder, rosbag2 bag) is missing, incomplete or malformed."""

#!/usr/bin/env python3
"""Build ROS 2 interface packages (tf2_msgs, vision_msgs) into a venv prefix with the pip rosidl toolchain.

The ROS 2 Jazzy wheels on PyPI ship rclpy and the common message packages but not tf2_msgs or
vision_msgs; their definitions are short (tools/interfaces/), so we generate and compile them here
(cmake + make, ~10 s each).

Two repairs make the wheels' exported cmake targets usable from another interpreter: they name
the wheel builder's Python include dir and numpy include dir (under /opt/python/cp311-cp311),
which we rewrite to this interpreter's paths before configuring.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

WHEEL_BUILDER_PREFIX = "/opt/python/cp311-cp311"


def _repair_cmake_exports(prefix: Path) -> int:
    """Point cmake exports at this interpreter's include dirs; returns the number of files fixed."""
    import numpy

    py_include = sysconfig.get_paths()["include"]
    replacements = [
        (re.escape(WHEEL_BUILDER_PREFIX) + r"/include/python3\.\d+", py_include),
        (re.escape(WHEEL_BUILDER_PREFIX) + r"/lib/python3\.\d+/site-packages/numpy/_core/include",
         numpy.get_include()),
    ]
    fixed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text(errors="replace")
        if WHEEL_BUILDER_PREFIX not in text:
            continue
        new = text
        for pattern, repl in replacements:
            new = re.sub(pattern, repl.replace("\\", "/"), new)
        if new != text:
            path.write_text(new)
            fixed += 1
    return fixed


def _already_built(prefix: Path, name: str, source: Path) -> bool:
    marker = prefix / "share" / name / ".built-from"
    return marker.exists() and marker.read_text() == _source_digest(source)


def _source_digest(source: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(source.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(source).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def build_package(source: Path, prefix: Path, jobs: int = 2) -> None:
    name = source.name
    if _already_built(prefix, name, source):
        print(f"[interfaces] {name}: up to date")
        return
    env = dict(os.environ)
    env["PATH"] = f"{prefix / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    with tempfile.TemporaryDirectory(prefix=f"build-{name}-") as build:
        configure = [
            "cmake", str(source), f"-DCMAKE_INSTALL_PREFIX={prefix}", f"-DCMAKE_PREFIX_PATH={prefix}",
            f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF",
        ]
        for step in (configure, ["make", f"-j{jobs}"], ["make", "install"]):
            proc = subprocess.run(step, cwd=build, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
                raise SystemExit(f"[interfaces] {name}: '{' '.join(step[:2])}' failed (log above)")
    (prefix / "share" / name / ".built-from").write_text(_source_digest(source))
    print(f"[interfaces] {name}: built and installed into {prefix}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix))
    parser.add_argument("packages", type=Path, nargs="+", help="folders with package.xml + CMakeLists.txt")
    args = parser.parse_args()
    if shutil.which("cmake") is None:
        raise SystemExit("[interfaces] cmake not found: install it (apt-get install cmake)")
    fixed = _repair_cmake_exports(args.prefix.resolve())
    if fixed:
        print(f"[interfaces] repaired {fixed} cmake export files of the ROS wheels")
    for pkg in args.packages:
        build_package(pkg.resolve(), args.prefix.resolve())


if __name__ == "__main__":
    main()

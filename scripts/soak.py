#!/usr/bin/env python3
"""Soak the pose node (issue 18 item 7): many RGB-D frames through the real node in its own
process, its resident memory sampled, and a line fitted after warm-up, because a leak of a few
kilobytes per frame never shows in a short test but fills a robot's memory in a day.

    .venv/bin/python scripts/soak.py [--frames 10000] [--warmup 1000] [--out docs/reports/soak.json]

What runs: the bundled demo object (procedural, nothing to download) built into a small object
database with the shipped weights (as test/conftest.py builds it, templates included; they are
cached per mesh), 12 frames rendered of it by the `demo` preset, and `sixd_pose_node`
(sixd_pose_ros.ros.node_main, the console script's code) started in a process of its own with
config/sixd_pose_node.yaml and the shipped Fast DDS profile, as the launch files do. Node
defaults apply, tracking included: the camera holds still on each rendered view for ``--hold``
frames and then jumps to the next, so most frames are tracked and each jump loses the track and
runs full detection again (both paths soak). This script publishes colour, depth and
camera_info from its own process and paces itself on the node's answers (at most ``--in-flight``
frames unanswered), which is the rate the CPU sustains; the node's VmRSS is read from /proc after
every frame and the lowest of every ``--sample-every`` frames is a sample (what the node keeps,
not a frame's temporaries); the line is fitted to the samples after ``--warmup``. Exit 0 when
its slope is under ``--max-slope`` MB per 1,000 frames, 1 when it is not, 2 when the soak could
not run.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NODE_NS = "/soak"
CAMERA_NS = "/soak_camera"
OBJECT = "drill"
FRAME_PERIOD_NS = 33_333_333  # stamps of a 30 Hz camera, whatever rate the node sustains


class SoakError(RuntimeError):
    """The soak could not run (the node did not start, died, or never answered)."""


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise SoakError(f"no VmRSS for process {pid}")


def fit_slope(samples: list[tuple[int, float]], warmup: int) -> float:
    """Least-squares slope of RSS (MB) over frames, in MB per 1,000 frames, from the samples at or
    after ``warmup`` frames (allocator pools, caches and DDS history fill during warm-up)."""
    kept = [(f, mb) for f, mb in samples if f >= warmup]
    if len(kept) < 3:
        raise SoakError(f"{len(kept)} RSS samples after a warm-up of {warmup} frames: too few to fit a line "
                        f"(more --frames, a smaller --warmup or --sample-every)")
    x, y = np.array(kept, dtype=float).T
    return float(np.polyfit(x / 1000.0, y, 1)[0])


def prepare(work: Path) -> tuple[list, Path]:
    """The demo object's database (shipped weights, small codebook, templates) and its rendered
    frames, under ``work``; reused when already there."""
    from sixd_pose_ros.datasets.bop import read_bop_scene
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR, load_autoencoder, weights_identity
    from sixd_pose_ros.objects.codebook import as_encoder
    from sixd_pose_ros.objects.database import build_object_database
    from sixd_pose_ros.render.procedural import make_bundled_demo_object
    from sixd_pose_ros.training.synth import get_preset, synthesize

    dataset, db = work / "dataset", work / "objects" / OBJECT
    if not (dataset / "test" / "000000").is_dir():
        synthesize(get_preset("demo"), dataset, formats=("bop",), overwrite=True, progress=False)
    if not (db / "object.json").is_file():
        mesh_path = work / f"{OBJECT}.ply"
        make_bundled_demo_object().mesh.export(mesh_path)
        weights = WEIGHTS_DIR / "autoencoder.pt"
        db = build_object_database(mesh_path, OBJECT, work / "objects", unit="m", overwrite=True,
                                   encoder=as_encoder(load_autoencoder(weights)), encoder_id=weights_identity(weights),
                                   progress=False, subdivisions=1, n_inplane=4, n_references=16, templates=True)
    return list(read_bop_scene(dataset / "test" / "000000")), db


def start_node(db: Path, log: Path) -> subprocess.Popen:
    """sixd_pose_node in a process of its own (the console script's main), output to ``log``."""
    from sixd_pose_ros.ros.launch_support import (CONFIG_FILE, DDS_PROFILE_FILE, camera_remappings, default_interrupts,
                                                   dds_profile_env)

    env = dict(os.environ, PYTHONUNBUFFERED="1", **dds_profile_env(str(ROOT / "config" / DDS_PROFILE_FILE)))
    args = [sys.executable, "-m", "sixd_pose_ros.ros.node_main", "--ros-args", "-r", f"__ns:={NODE_NS}",
            "--params-file", str(ROOT / "config" / CONFIG_FILE), "-p", f"objects:=[{db}]"]
    for src, dst in camera_remappings(CAMERA_NS):
        args += ["-r", f"{src}:={dst}"]
    with open(log, "wb") as out:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=default_interrupts)


def stop_node(node: subprocess.Popen) -> int:
    """SIGINT (Ctrl-C, the node's own shutdown path), kill after 15 s; the exit code (0 expected)."""
    if node.poll() is None:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
    return node.returncode


def _tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.is_file() else ""


class _Pacer:
    """Publishes frames at the rate the node answers them (at most ``in_flight`` unanswered) and
    samples the node's RSS after every frame. Each recorded sample is the lowest RSS of its
    ``sample_every`` frames: a frame's temporaries come and go (a few MB while one is in the
    estimator), a leak stays, so the window's minimum follows what the node keeps; the window's
    highest is recorded beside it."""

    def __init__(self, camera, node: subprocess.Popen, log: Path, args: argparse.Namespace) -> None:
        self.camera, self.node, self.log, self.args = camera, node, log, args
        self.outstanding: deque = deque()
        self.latencies: list[float] = []
        self.samples: list[tuple[int, float]] = []
        self.peaks: list[tuple[int, float]] = []
        self.superseded = self.unanswered = 0

    def settle(self, limit: int) -> None:
        """Wait until at most ``limit`` frames are unanswered."""
        while len(self.outstanding) > limit:
            stamp, sent = self.outstanding.popleft()
            fate = self.camera.wait_answer(stamp, self.args.frame_timeout)
            if fate == "answered":
                self.latencies.append(time.monotonic() - sent)
            elif fate == "superseded":
                self.superseded += 1
            else:
                self.unanswered += 1
                if self.node.poll() is not None:
                    raise SoakError(f"the node exited with {self.node.returncode}; its output:\n{_tail(self.log)}")
                if self.unanswered > max(10, self.args.frames // 100):
                    raise SoakError(f"{self.unanswered} frames without an answer within "
                                    f"{self.args.frame_timeout:g} s; node output:\n{_tail(self.log)}")

    def run(self, n_views: int) -> float:
        """Publish every frame; the seconds it took."""
        from tqdm import tqdm

        a = self.args
        window: list[float] = []
        bar = tqdm(total=a.frames, unit="frame", disable=a.no_progress, smoothing=0.05)
        t0 = time.monotonic()
        for i in range(a.frames + 1):
            self.settle(a.in_flight - 1)  # every read in the same state: in_flight - 1 frames in the node
            window.append(rss_mb(self.node.pid))
            if i % a.sample_every == 0 or i == a.frames:
                self.samples.append((i, min(window)))
                self.peaks.append((i, max(window)))
                bar.set_postfix(rss_mb=f"{window[-1]:.0f}", refresh=False)
                window = []
            if i == a.frames:
                break
            stamp = 100 * 10**9 + i * FRAME_PERIOD_NS
            self.camera.publish((i // a.hold) % n_views, stamp)
            self.outstanding.append((stamp, time.monotonic()))
            bar.update(1)
        self.settle(0)
        bar.close()
        return time.monotonic() - t0


def soak(args: argparse.Namespace, work: Path) -> dict:
    """Run the soak; the report (see main) without the verdict."""
    from soak_camera import SoakCamera

    t_prepare = time.monotonic()
    frames, db = prepare(work)
    prepare_s = time.monotonic() - t_prepare
    log = work / "node.log"
    node = start_node(db, log)
    camera = None
    try:
        camera = SoakCamera(CAMERA_NS, f"{NODE_NS}/sixd_pose_node", OBJECT, frames)
        if not camera.wait_for_node(args.start_timeout) or node.poll() is not None:
            raise SoakError(f"the node did not subscribe within {args.start_timeout:g} s (exit code "
                            f"{node.poll()}); its output:\n{_tail(log)}")
        pacer = _Pacer(camera, node, log, args)
        elapsed = pacer.run(len(frames))
        time.sleep(1.5)  # the last frame's outputs and one more /diagnostics
        diag = dict(camera.diagnostics)
        answers, poses = camera.answers, camera.poses
    finally:
        if camera is not None:
            camera.close()
        code = stop_node(node)
    samples, latencies = pacer.samples, pacer.latencies
    slope = fit_slope(samples, args.warmup)
    kept = [mb for f, mb in samples if f >= args.warmup]
    lat = np.array(latencies) * 1000.0 if latencies else np.zeros(1)
    return {
        "frames_sent": args.frames,
        "frames_received_by_node": int(diag.get("received/image", -1)),
        "frames_processed_by_node": int(diag.get("frames_processed", -1)),
        "frames_dropped_by_node": int(diag.get("frames_dropped", -1)),
        "answers": answers, "superseded": pacer.superseded, "unanswered": pacer.unanswered,
        "poses_published": poses,
        "seconds": round(elapsed, 1), "rate_hz": round(args.frames / elapsed, 2),
        "answer_latency_ms": {"median": round(float(np.median(lat)), 1),
                              "p95": round(float(np.percentile(lat, 95)), 1)},
        "rss_mb": {"first": round(samples[0][1], 1), "after_warmup": round(kept[0], 1), "end": round(kept[-1], 1),
                   "max": round(max(mb for _, mb in pacer.peaks), 1)},
        "slope_mb_per_1000_frames": round(slope, 3),
        "slope_of_window_peaks_mb_per_1000_frames": round(fit_slope(pacer.peaks, args.warmup), 3),
        "rss_samples": [[f, round(mb, 2)] for f, mb in samples],
        "rss_peaks": [[f, round(mb, 2)] for f, mb in pacer.peaks],
        "node_exit_code": code, "prepare_s": round(prepare_s, 1),
        "node_diagnostics_at_end": diag,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=10000, help="frames to publish (default 10000)")
    p.add_argument("--warmup", type=int, default=1000, help="frames left out of the fit (default 1000)")
    p.add_argument("--sample-every", type=int, default=100, help="frames between RSS samples (default 100)")
    p.add_argument("--hold", type=int, default=50, help="frames per camera view before it jumps (default 50)")
    p.add_argument("--in-flight", type=int, default=2,
                   help="frames published and not yet answered (default 2: one in the estimator, one waiting)")
    p.add_argument("--frame-timeout", type=float, default=30.0, help="seconds to wait for one frame's answer")
    p.add_argument("--start-timeout", type=float, default=180.0, help="seconds for the node to configure")
    p.add_argument("--max-slope", type=float, default=1.0, help="pass bound, MB per 1000 frames (default 1)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "reports" / "soak.json")
    p.add_argument("--work", type=Path, default=None, help="folder for the object and frames (default: temporary)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.frames < 1 or args.sample_every < 1 or args.hold < 1 or args.in_flight < 1:
        p.error("--frames, --sample-every, --hold and --in-flight must be positive")
    if args.warmup >= args.frames:
        p.error(f"--warmup {args.warmup} leaves no frames to fit out of --frames {args.frames}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # DDS stays on this machine, on a domain of its own unless the caller chose one.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
    from sixd_pose_ros.ros.launch_support import DDS_PROFILE_FILE, dds_profile_env

    os.environ.update(dds_profile_env(str(ROOT / "config" / DDS_PROFILE_FILE)))  # the camera side too
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        if args.work is not None:
            args.work.mkdir(parents=True, exist_ok=True)
            report = soak(args, args.work)
        else:
            with tempfile.TemporaryDirectory(prefix="sixd_soak_") as tmp:
                report = soak(args, Path(tmp))
    except SoakError as exc:
        print(f"soak failed: {exc}", file=sys.stderr)
        return 2
    report = {"command": " ".join(["scripts/soak.py", *(sys.argv[1:] if argv is None else argv)]),
              "setup": {"object": f"bundled demo object ({OBJECT}), shipped weights, templates on",
                        "frames": "12 rendered views (demo preset), 640x480 rgb8 + 16UC1 depth",
                        "hold_frames_per_view": args.hold, "in_flight": args.in_flight,
                        "node": "sixd_pose_node defaults (config/sixd_pose_node.yaml): tracking on, depth on",
                        "warmup_frames": args.warmup, "sample_every": args.sample_every,
                        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"},
              **report, "max_slope_mb_per_1000_frames": args.max_slope}
    report["passed"] = report["slope_mb_per_1000_frames"] < args.max_slope
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    r = report
    print(f"{r['frames_sent']} frames sent, {r['frames_received_by_node']} received by the node, "
          f"{r['frames_processed_by_node']} processed, {r['poses_published']} poses, {r['superseded']} dropped by "
          f"the node for a newer one, {r['unanswered']} unanswered; "
          f"{r['rate_hz']} Hz over {r['seconds']} s; RSS {r['rss_mb']['after_warmup']} -> {r['rss_mb']['end']} MB "
          f"after warm-up (max {r['rss_mb']['max']}); slope {r['slope_mb_per_1000_frames']:+.3f} MB/1000 frames "
          f"(bound {args.max_slope:g}): {'PASS' if r['passed'] else 'FAIL'}; written to {args.out}")
    return 0 if r["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Entry point of `sixd_pose_node` (`ros2 run sixd_pose_ros sixd_pose_node --ros-args ...`).

Starts the pose node, configures and activates it (unless ``autostart:=false``, for a lifecycle
manager), spins it with a SingleThreadedExecutor (``create_executor``: the estimator has a thread
of its own; rclpy's MultiThreadedExecutor cost three times the CPU per message and lost 720p
frames), and on Ctrl-C / SIGTERM takes it through its shutdown transition and exits 0 (a frame
still in the estimator is not waited for beyond 1.5 s). Image-sized buffers go back to the system
when freed (glibc's mmap threshold is fixed), so memory returns to its level after a burst of
large frames. A configure failure (bad parameter, missing weights or object database) exits 1
after logging the message that names the fix.
"""
from __future__ import annotations

import signal
import sys


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


# glibc's malloc raises its mmap threshold after the first large block is freed (up to 32 MB), so
# later image-sized buffers come from the heap and stay resident after a burst of large frames:
# a fixed 1 MB threshold gives every image buffer back to the system when it is freed.
_M_MMAP_THRESHOLD = -3


def return_large_buffers_to_the_system(threshold: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold (see above); False where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False


def create_executor(context=None):
    """The executor that spins the pose node: a SingleThreadedExecutor.

    The node's callbacks only count and queue messages (the estimator runs in its own worker
    thread, ros/worker.py), so one thread is enough, and it is the cheap one: rclpy's
    MultiThreadedExecutor rebuilds its wait set and hands every message to a thread pool, and with
    the inputs in one callback group dispatches one message per wait, the colour image first. With
    1280x720 RGB-D at 30 Hz from another process on 2 loaded cores it used 8.3 CPU-s per 10 s
    stream against 2.8-3.1 s for this one, depth and camera_info fell up to 1 s behind (the
    subscriptions' 30-message history) and 7-26 of 300 were lost; single-threaded they stayed
    within 41 ms and all 300 arrived (test/test_ros_transport.py, README "The node on a robot").
    """
    from rclpy.executors import SingleThreadedExecutor

    return SingleThreadedExecutor(context=context)


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    from sixd_pose_ros.ros.node import SixdPoseNode

    args = sys.argv if argv is None else argv
    return_large_buffers_to_the_system()
    # Our own SIGINT/SIGTERM handling: the node shuts down through its lifecycle while the
    # context is still valid, then rclpy goes down.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    node = None
    code = 0
    try:
        node = SixdPoseNode()
        if node.get_parameter("autostart").value in (True, "true"):
            if not node.start():
                node.get_logger().error("not started (the message above names the fix)")
                code = 1
        else:
            node.get_logger().info("autostart is false: waiting for a lifecycle manager to configure and activate")
        if code == 0:
            executor = create_executor()
            executor.add_node(node)
            try:
                while rclpy.ok():
                    executor.spin_once(timeout_sec=0.2)
            finally:
                executor.shutdown(timeout_sec=1.0)
    except (KeyboardInterrupt, ExternalShutdownException):
        if node is not None:
            node.get_logger().info("interrupted: shutting down")
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if node is not None:
            try:
                if node.state_label != "finalized":
                    node.trigger_shutdown()
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())

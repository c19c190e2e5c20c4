"""sixd_pose_ros."""
import os

# torch (Intel/GNU OpenMP) and numba's renderer (depth alignment) keep their idle threads
# spinning by default; in one process they fight for the cores and torch runs ~10x slower after
# the first render (measured: backbone 72 -> 526 ms on 2 cores). Passive waiting removes that and
# must be set before torch starts its thread pool, hence here. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

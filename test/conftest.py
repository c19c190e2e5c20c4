"""Shared test setup: DDS kept on this machine, on a domain of its own for every run."""
from __future__ import annotations

import os
import random

import pytest

# Set before any test creates an rclpy context: rcl reads these at context init. A random
# domain per run keeps parallel runs (two developers, CI) from hearing each other.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (runs on the lent device)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)

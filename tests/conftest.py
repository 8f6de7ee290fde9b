"""Shared fixtures: one session-scoped local Ray cluster, torch threads, small models."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("SALBENCH_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray cluster for the whole session (2 CPUs, no dashboard, small object store)."""
    pytest.importorskip("ray")
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 object_store_memory=200 * 1024 * 1024, log_to_driver=False,
                 configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smooth_model():
    """GELU + average-pool CNN (10 classes, 32x32): smooth, for reference cross-checks."""
    import salbench

    return salbench.models.load("tiny_smooth")


@pytest.fixture(scope="session")
def relu_model():
    """ReLU + max-pool CNN (10 classes, 32x32)."""
    import salbench

    return salbench.models.load("tiny_cnn")


@pytest.fixture(scope="session")
def lite0():
    """The embedded real ImageNet model."""
    import salbench

    return salbench.models.load("efficientnet_lite0")


@pytest.fixture()
def images32():
    """float32 [4, 3, 32, 32] in [0, 1], seeded."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g)

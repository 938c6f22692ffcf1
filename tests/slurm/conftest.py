"""One real SLURM cluster for the tests of this folder, started once and stopped at the end (see cluster.py)."""

from __future__ import annotations

import pytest

from tests.slurm.cluster import Cluster, why_unavailable


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    reason = why_unavailable()
    if reason:
        pytest.skip(f"no real SLURM here: {reason}")
    started = Cluster(tmp_path_factory.mktemp("slurm")).start(cpus=2)
    yield started
    started.stop()

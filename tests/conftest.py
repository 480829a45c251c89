from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.worker import Deployment, WorkerProcess


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A deployment of its own, dropped (topics, queues, schema) at teardown."""
    made = Deployment(tmp_path)
    yield made
    made.drop(strict=False)


@pytest.fixture
def workers(deployment: Deployment) -> Iterator[list[WorkerProcess]]:
    """Worker subprocesses started by a test; all are killed at teardown, then the
    deployments they ran in are dropped (a test may make more than `deployment`)."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.ensure_stopped()
    for d in {id(w.deployment): w.deployment for w in started}.values():
        d.drop(strict=False)

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.worker import Deployment, WorkerProcess


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return Deployment(tmp_path)


@pytest.fixture
def workers(deployment: Deployment) -> Iterator[list[WorkerProcess]]:
    """Worker subprocesses started by a test; all are killed at teardown."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.ensure_stopped()

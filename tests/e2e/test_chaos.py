"""The chaos run's short variant (bench/chaos.py --ci): 2 workers and the outputs process
as scripts/run runs them, 3,000 mixed events, one of the three SIGKILLed every 10 s in
turn, Kafka, RabbitMQ and Postgres restarted once each; the API, Postgres, the ledger,
the events and the dead letters equal the naive model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.worker import ROOT

pytestmark = pytest.mark.e2e


def test_chaos_short_run_ends_exact() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--ci"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
    )
    report = done.stdout + done.stderr[-4000:]
    print(report)
    assert done.returncode == 0, report
    assert "RESULT ok" in done.stdout
    assert "0 unasked exits" in done.stdout
    for injected in (
        "restart kafka",
        "restart rabbitmq",
        "restart postgres",
        "SIGKILL worker 0",
        "SIGKILL worker 1",
        "SIGKILL outputs 0",
    ):
        assert injected in done.stdout, report

"""Log lines an operator reads at start-up: a crash's traceback, recovery progress."""

from __future__ import annotations

import logging

import orjson
import pytest

from pm_streams import logs


def _lines(err: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_a_foreign_exception_is_logged_with_its_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("INFO")
    try:
        open("/nonexistent-dir/pm-file")  # noqa: SIM115
    except FileNotFoundError as exc:
        logging.getLogger("faust.worker").exception("Error: %r", exc)
    (line,) = _lines(capsys.readouterr().err)
    assert line["level"] == "error"
    exception = str(line["exception"])
    assert exception.startswith("Traceback (most recent call last)")
    assert "/nonexistent-dir/pm-file" in exception


def test_table_recovery_progress_is_shown_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO")
    logging.getLogger("faust.tables.recovery").info("Recovery complete")
    logging.getLogger("aiokafka.conn").info("chatty")
    events = [line["event"] for line in _lines(capsys.readouterr().err)]
    assert events == ["Recovery complete"]

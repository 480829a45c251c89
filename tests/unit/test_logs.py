"""Log lines an operator reads at start-up: a crash's traceback, recovery progress."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import orjson
import pytest
import structlog

from pm_streams import logs


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """`logs.configure` writing into a buffer; the logging set-up restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    names = ("aiokafka", "faust.transport", "faust.tables", "mode")
    levels = {n: logging.getLogger(n).level for n in names}
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    logs.configure("INFO")
    yield buffer
    structlog.reset_defaults()
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


def test_a_foreign_exception_is_logged_with_its_traceback(json_logs: io.StringIO) -> None:
    try:
        open("/nonexistent-dir/pm-file")  # noqa: SIM115
    except FileNotFoundError as exc:
        logging.getLogger("faust.worker").exception("Error: %r", exc)
    (line,) = _lines(json_logs)
    assert line["level"] == "error"
    exception = str(line["exception"])
    assert exception.startswith("Traceback (most recent call last)")
    assert "/nonexistent-dir/pm-file" in exception


def test_table_recovery_progress_is_shown_at_info(json_logs: io.StringIO) -> None:
    logging.getLogger("faust.tables.recovery").info("Recovery complete")
    logging.getLogger("aiokafka.conn").info("chatty")
    events = [line["event"] for line in _lines(json_logs)]
    assert events == ["Recovery complete"]

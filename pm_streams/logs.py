"""Structured JSON logs (structlog) with `trace_id` bound per event or request.

`configure()` is called once by the CLI; library and faust log records go through the
same JSON renderer so every line on stderr is one JSON object.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import structlog


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def configure(level: str = "INFO") -> None:
    """Route structlog and stdlib logging to one JSON line per record on stderr."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # A foreign record's exc_info (mode's "Error: ..." on a crash) becomes
                # the formatted traceback, not "<traceback object>".
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_dumps),
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka, Faust's transport and mode are chatty at INFO about every rebalance
    # step. `faust.tables` stays at the root level: its changelog-recovery progress
    # lines are what an operator watches after a restart.
    for noisy in ("aiokafka", "faust.transport", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def new_trace_id() -> str:
    return uuid.uuid4().hex


@contextmanager
def bound_trace(trace_id: str, **extra: Any) -> Iterator[None]:
    """Bind `trace_id` (and extras) to every log line emitted inside the block."""
    with structlog.contextvars.bound_contextvars(trace_id=trace_id, **extra):
        yield

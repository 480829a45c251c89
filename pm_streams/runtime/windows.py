"""Keys of a Faust windowed table's store.

Upstream: faust-streaming stores a windowed key as `(key, (start, end))`, and gives it
back as nested lists after a changelog recovery (JSON).
Delete when: faust exposes a windowed table's windows without its store's keys.
"""

from __future__ import annotations

from typing import Any


def window_key(raw: Any) -> tuple[str, float, float] | None:
    """(key, start, end) from a windowed-table store key (tuple, or list after recovery)."""
    try:
        key, (start, end) = raw
        return str(key), float(start), float(end)
    except (TypeError, ValueError):
        return None

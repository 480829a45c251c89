"""Reading a Faust table on hot paths."""

from __future__ import annotations

from typing import Any


def stored(table: Any, key: Any) -> Any:
    """What `table[key] = value` last stored for `key` (None if nothing).

    Reads the table's store directly: `Table.get` also calls Faust's per-read sensor
    hooks (`on_key_get`), which nothing here uses, and costs 1.25 µs against 0.29 µs
    (memory store, measured). The agents read once per event and the API once per
    request, so the difference shows in their profiles.
    """
    return table.data.get(key)

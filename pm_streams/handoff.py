"""What a record was encoded from, for its consumer in the same process.

The bridge encodes each validated event for the input topic and the positions agent
decodes it again; the positions agent encodes each batch's contributions for the
portfolio topic and the portfolio agent decodes them again. On one worker both ends
are usually in the same process: the producer leaves the object under the record's
bytes, and the consumer takes it when the bytes it reads are equal (the record's
content decides, so a record from another worker, a replay or a restart is decoded as
before). Decoding what `encode` made gives back an equal object (the codecs'
round-trip tests), so taking the object changes nothing but the cost.

At most `capacity` objects wait, oldest out first: records whose consumer is another
worker (its partitions) or that were never stored cost memory only until then.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    def __init__(self, capacity: int = 8192) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: OrderedDict[bytes, T] = OrderedDict()

    def put(self, raw: bytes, obj: T) -> None:
        items = self._items
        items[raw] = obj
        if len(items) > self.capacity:
            items.popitem(last=False)

    def take(self, raw: bytes) -> T | None:
        """The object `raw` was encoded from, once; None when it is not here."""
        return self._items.pop(raw, None)

    def __len__(self) -> int:
        return len(self._items)

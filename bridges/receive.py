"""aiormq's frame reader with one read per frame header and one per payload.

Every delivery the bridge consumes is three frames (method, content header, body).
aiormq's `FrameReceiver.get_frame` takes an `asyncio.Lock` per frame, reads each frame
in three `readexactly` calls into a `BytesIO`, and has pamqp parse the header again
along with the payload: about a seventh of the worker per fill in a profile of the
pipeline bench. `FrameReceiver` here reads the 7-byte header and then the payload with
its end octet, hands body frames over as they are, and lets pamqp parse the others;
its results and errors are those of aiormq's (`tests/unit/test_receive.py`). A
connection has one reader task, so the lock guarded nothing.

Upstream: aiormq's `FrameReceiver` locks and copies per frame.
Delete when: aiormq reads a frame with two reads and no lock.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import aiormq.connection
import pamqp.frame
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp.body import ContentBody
from pamqp.exceptions import PAMQPException

_HEADER = struct.Struct(">BHI")  # frame type, channel, payload size
_BODY = 3
_FRAME_END = 0xCE


class FrameReceiver(aiormq.connection.FrameReceiver):
    async def get_frame(self) -> Any:
        reader = self.reader
        if reader.at_eof():
            del self.reader
            raise StopAsyncIteration
        try:
            head = await reader.readexactly(7)
            if not self.started:
                if head.startswith(b"AMQP"):
                    raise ProtocolSyntaxError("Unexpected AMQP protocol header")
                self.started = True
            kind, channel, size = _HEADER.unpack(head)
            rest = await reader.readexactly(size + 1)
        except asyncio.IncompleteReadError as e:
            raise AMQPConnectionError(
                "Server connection unexpectedly closed. "
                f"Read {len(e.partial)} bytes but {e.expected} bytes expected"
            ) from e
        except ConnectionRefusedError as e:
            raise AMQPConnectionError(f"Server connection refused: {e!r}") from e
        except ConnectionResetError as e:
            raise AMQPConnectionError(f"Server connection reset: {e!r}") from e
        except ConnectionError as e:
            raise AMQPConnectionError(f"Server connection error: {e!r}") from e
        except OSError as e:
            raise AMQPConnectionError(f"Server communication error: {e!r}") from e
        if kind == _BODY and rest[-1] == _FRAME_END:
            return size + 8, channel, ContentBody(rest[:-1])
        try:
            return pamqp.frame.unmarshal(head + rest)
        except PAMQPException as e:
            raise InvalidFrameError(str(e)) from e


def install() -> None:
    """Make every aiormq connection opened from now on read with `FrameReceiver`
    (aiormq builds its receiver from its module's name at connect)."""
    aiormq.connection.FrameReceiver = FrameReceiver  # type: ignore[misc]

"""Line splitting and the base of the line supplies (tail, lines, the line server).

Private: the public names are re-exported by :mod:`archangel.pipes.supplies`.
No I/O here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from ..errors import InvalidArgument

__all__ = ["MAX_STREAM_LINE", "LineBuffer", "LineSupply"]

logger = logging.getLogger("archangel.pipes.supplies")  # one logger for the supplies

#: Default longest line a file or stream supply (``tail``, ``lines``, a
#: :class:`LineBuffer`) holds, in bytes (1 MiB); a longer one is passed on cut.
#: A line server's peers get a smaller default (``line_server._MAX_PEER_LINE``).
MAX_STREAM_LINE = 1 << 20


class LineBuffer:
    """Splits a byte stream into lines, holding a partial last line until completed.

    Lines lose their terminator (``\\n`` or ``\\r\\n``) and are decoded with
    ``encoding`` (``None`` keeps bytes; the encoding must be ASCII-compatible,
    as UTF-8 is). A partial line longer than ``max_line`` bytes is passed on
    as a line of its own (logged), so a stream without newlines cannot grow
    memory without bound.
    """

    __slots__ = ("_partial", "encoding", "errors", "max_line")

    def __init__(
        self,
        encoding: str | None = "utf-8",
        errors: str = "replace",
        max_line: int = MAX_STREAM_LINE,
    ) -> None:
        if max_line < 1:
            raise InvalidArgument(f"max_line must be >= 1, got {max_line}")
        self.encoding = encoding
        self.errors = errors
        self.max_line = max_line
        self._partial = b""

    @property
    def partial(self) -> bytes:
        """The bytes of the incomplete last line held now."""
        return self._partial

    def feed(self, data: bytes) -> list[Any]:
        """The complete lines ``data`` ends (possibly none)."""
        buf = self._partial + data if self._partial else data
        end = buf.rfind(b"\n")
        if end < 0:
            self._partial = buf
            return self._cut() if len(buf) > self.max_line else []
        self._partial = buf[end + 1 :]
        lines = self._split(buf[:end])
        if len(self._partial) > self.max_line:
            lines.extend(self._cut())
        return lines

    def flush(self) -> list[Any]:
        """The partial line as a line of its own (the stream ended), or nothing."""
        if not self._partial:
            return []
        rest, self._partial = self._partial, b""
        return self._split(rest)

    def clear(self) -> None:
        """Drop the partial line."""
        self._partial = b""

    def _cut(self) -> list[Any]:
        logger.warning("line longer than %d bytes: passed on cut", self.max_line)
        return self.flush()

    def _split(self, complete: bytes) -> list[Any]:
        if self.encoding is None:
            raw = complete.split(b"\n")
            if b"\r" in complete:
                raw = [line[:-1] if line.endswith(b"\r") else line for line in raw]
            return raw
        text = complete.decode(self.encoding, self.errors)
        lines = text.split("\n")
        if "\r" in text:
            lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        return lines


class LineSupply:
    """Base of the line supplies: ``async for line in supply`` or :meth:`batches`.

    A pipeline reads :meth:`batches` (every line ready, as one list); code
    that wants one line at a time iterates the supply itself.
    """

    def batches(self) -> AsyncGenerator[list[Any], None]:
        """An async generator of non-empty lists of lines."""
        raise NotImplementedError

    async def __aiter__(self) -> AsyncIterator[Any]:
        async with contextlib.aclosing(self.batches()) as batches:
            async for batch in batches:
                for line in batch:
                    yield line

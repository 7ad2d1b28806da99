"""The master console's side of a worker's console: one command over its Unix socket.

Each worker of ``app.run(workers=N)`` runs its own :class:`~archangel.console.Console`
on a Unix socket in the master's private runtime directory (mode 0700, the
socket 0600). The master's console (:mod:`archangel.console.workers`) reaches
it as ``archangel console`` would, with the line protocol: it refuses every
telnet option (:class:`~archangel.console.client.TelnetFilter`), reads up to
the prompt, sends one line, reads the answer up to the next prompt. Every
exchange is bounded by a timeout, so a worker whose console does not answer
(a stopped process, a starved thread) is reported, never waited for.

This is the client side only, on the master console's loop; nothing here
serves or formats.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
from typing import Any

from .client import TelnetFilter

__all__ = ["NotAnswering", "ask", "ask_json"]

#: The prompt a console writes when it waits for a line: where one answer ends.
_PROMPT = "archangel> "
#: The longest answer read (a worker console's ``max_output`` is 1 MiB by default).
_LIMIT = 4 << 20


class NotAnswering(Exception):
    """A worker's console could not be reached, or gave no answer in time."""


async def ask(path: str, line: str, timeout: float) -> str:
    """Send ``line`` to the console listening on ``path``; its answer (without the prompt).

    Raises:
        NotAnswering: No connection, or no full answer within ``timeout``
            seconds (the message says which).
    """
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(path, line)
    except TimeoutError:
        raise NotAnswering(f"not answering (no reply in {timeout:g} s)") from None
    except OSError as exc:
        raise NotAnswering(f"not reachable: {exc.strerror or exc}") from None


async def ask_json(path: str, line: str, timeout: float) -> Any:
    """:func:`ask`, for a command with ``--json``: the decoded answer.

    Raises:
        NotAnswering: As :func:`ask`, or the answer is an ``error:`` or not JSON.
    """
    answer = await ask(path, line, timeout)
    if answer.startswith("error:"):
        raise NotAnswering(answer.strip())
    try:
        return json.loads(answer)
    except ValueError:
        raise NotAnswering(f"answered {answer[:80]!r}, not JSON") from None


async def _exchange(path: str, line: str) -> str:
    reader, writer = await asyncio.open_unix_connection(path, limit=_LIMIT)
    telnet = TelnetFilter()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""

    async def answer() -> str:
        nonlocal buffer
        while not buffer.endswith(_PROMPT):
            data = await reader.read(1 << 16)
            if not data:
                raise ConnectionResetError(0, "the worker's console closed the session")
            shown, replies = telnet.feed(data)
            if replies:
                writer.write(replies)
            buffer += decoder.decode(shown).replace("\r\n", "\n").replace("\r", "")
            if len(buffer) > _LIMIT:
                raise ConnectionResetError(0, f"an answer over {_LIMIT} bytes")
        text, buffer = buffer[: -len(_PROMPT)], ""
        return text

    try:
        await answer()  # the banner
        writer.write(line.encode("utf-8", "replace") + b"\n")
        text = await answer()
        writer.write(b"quit\n")
        return text
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

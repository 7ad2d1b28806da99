"""Adoption: manage protocols that do not inherit :class:`~archangel.Process`.

``ProcessManager.register`` wraps the product of a foreign factory (an
aiohttp request handler, say) in a thin proxy that *is* a process. The proxy
hands the transport's data callbacks straight to the adopted protocol: they
are bound methods stored on the proxy instance, so a ``data_received`` costs
no extra call. Only ``connection_made`` and ``connection_lost`` pass through
the proxy, for the bookkeeping.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .errors import NotAProcess
from .process import Process

__all__ = ["AdoptedBufferedProtocol", "AdoptedProtocol", "adopt"]


class _Adopted(Process):
    """What both proxies share: the adopted protocol, its name, the forwarding.

    Attributes:
        protocol: The adopted protocol; the transport talks to it directly.
    """

    #: The transport's callbacks handed straight to the adopted protocol: the
    #: proxy keeps its bound methods as instance attributes, which shadow the
    #: no-op methods of the same names on asyncio's protocol classes. One the
    #: protocol lacks (a duck-typed protocol need not have ``eof_received``,
    #: say) is left to those no-ops, as ``asyncio.Protocol`` would.
    _forwarded: tuple[str, ...] = ()
    protocol: Any

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.name = type(protocol).__name__
        for name in self._forwarded:
            method = getattr(protocol, name, None)
            if method is not None:
                setattr(self, name, method)

    def connection_made(self, transport: Any) -> None:
        self.protocol.connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        lost = getattr(self.protocol, "connection_lost", None)
        if lost is not None:
            lost(exc)


class AdoptedProtocol(_Adopted, asyncio.Protocol):
    """A process standing in front of a foreign ``asyncio.Protocol``."""

    _forwarded = ("data_received", "eof_received", "pause_writing", "resume_writing")


class AdoptedBufferedProtocol(_Adopted, asyncio.BufferedProtocol):
    """A process standing in front of a foreign ``asyncio.BufferedProtocol``."""

    _forwarded = (
        "buffer_updated",
        "eof_received",
        "get_buffer",
        "pause_writing",
        "resume_writing",
    )


def adopt(protocol: Any) -> Process:
    """Wrap a foreign protocol object in a process proxy.

    ``protocol`` is an ``asyncio.BufferedProtocol``, or any object with
    ``connection_made`` and ``data_received``; the other callbacks
    (``connection_lost``, ``eof_received``, ``pause_writing``,
    ``resume_writing``) are optional, and do what ``asyncio.Protocol``'s do
    when missing.

    Raises:
        NotAProcess: ``protocol`` is not a protocol (no ``connection_made``).
    """
    if isinstance(protocol, Process):
        return protocol
    if isinstance(protocol, asyncio.BufferedProtocol):
        return AdoptedBufferedProtocol(protocol)
    if not (hasattr(protocol, "connection_made") and hasattr(protocol, "data_received")):
        raise NotAProcess(
            f"cannot adopt {protocol!r}: it is neither a Process nor an asyncio protocol"
        )
    return AdoptedProtocol(protocol)

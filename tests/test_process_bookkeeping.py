"""The mixin's bookkeeping: set in ``__new__``, read-only, and impossible to clash with.

kernel/process.py's tests, with test_process.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import tracemalloc
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from archangel import (
    ArchangelError,
    ExitReason,
    NotAProcess,
    Process,
    ProcessManager,
    ProcessState,
    ReadOnlyAttribute,
)
from archangel.console import Console
from tests.console_helpers import RawClient
from tests.helpers import serve, until

BOOKKEEPING = ("pid", "manager", "state", "started", "ended", "exit_reason", "error", "parent")


class Echo(Process, asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class FakeTransport:
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def abort(self) -> None:
        pass


# -- defaults in __new__ -------------------------------------------------------------


def test_new_sets_every_default_in_one_order_and_ignores_the_constructors_arguments() -> None:
    class Configured(Process, asyncio.Protocol):
        def __init__(self, host: str, *, port: int) -> None:  # no super().__init__()
            self.host, self.port = host, port

    proc = Configured("example.org", port=80)
    assert (proc.host, proc.port) == ("example.org", 80)
    assert (proc.pid, proc.manager, proc.state) == (None, None, ProcessState.NEW)
    assert (proc.started, proc.ended, proc.exit_reason, proc.error, proc.parent) == (None,) * 5
    assert proc.transport is None and proc.pending_hooks == 0 and proc.name == "Configured"
    # Every default is the instance's own, in the same order for every instance,
    # the user's attributes after them: one shared layout.
    keys = list(vars(proc))
    assert keys[-2:] == ["host", "port"]
    assert keys[:-2] == list(vars(Echo()))
    assert "_archangel_pid" in keys and "transport" in keys


def test_a_class_whose_setattr_raises_can_be_defined_and_works() -> None:
    class Guarded(Process, asyncio.Protocol):
        """Refuses every attribute it does not declare, with its own error."""

        allowed = frozenset({"received"})

        def __setattr__(self, name: str, value: Any) -> None:
            if name not in self.allowed:
                raise RuntimeError(f"Guarded has no attribute {name!r}")
            super().__setattr__(name, value)

        def data_received(self, data: bytes) -> None:
            self.received = data

    manager = ProcessManager()
    proc = manager.register(Guarded)()
    proc.connection_made(FakeTransport())
    proc.data_received(b"hi")
    assert proc.state is ProcessState.RUNNING and proc.received == b"hi"
    with pytest.raises(RuntimeError, match="Guarded has no attribute 'other'"):
        proc.other = 1  # the class's own rule still holds for its own names
    hooks: list[int | None] = []
    proc.at_exit(hooks.append, proc.pid)
    proc.connection_lost(None)
    assert proc.exit_reason is ExitReason.NORMAL and hooks == [1] and len(manager) == 0


def test_instances_share_one_compact_layout_even_when_built_in_a_burst() -> None:
    """Built all before their ``connection_made`` (uvloop may accept a burst per
    loop iteration), tracked connections still cost at most 300 bytes more than
    plain protocols: none fell back to a full dict."""

    class Plain(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

    class Burst(Process, asyncio.Protocol):  # a fresh class: no instance made yet
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

    n, transport = 5000, FakeTransport()

    def traced(build: Any) -> float:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        del kept
        return (after - before) / n

    def plain() -> object:
        protocols = [Plain() for _ in range(n)]
        for protocol in protocols:
            protocol.connection_made(transport)
        return protocols

    def managed() -> object:
        manager = ProcessManager()
        factory = manager.register(Burst)
        protocols = [factory() for _ in range(n)]
        for protocol in protocols:
            protocol.connection_made(transport)
        return manager, protocols

    tracemalloc.start()
    try:
        tracked = traced(managed)  # the first instances of Burst ever made
        baseline = traced(plain)
    finally:
        tracemalloc.stop()
    assert tracked - baseline <= 300, (tracked, baseline)


# -- read-only bookkeeping -----------------------------------------------------------


@pytest.mark.parametrize("name", BOOKKEEPING)
def test_assigning_the_bookkeeping_raises_naming_it(name: str) -> None:
    proc = ProcessManager().register(Echo())
    before = getattr(proc, name)
    expected = f"cannot set '{name}' on <Echo pid=1 .*archangel's bookkeeping"
    with pytest.raises(ReadOnlyAttribute, match=expected) as caught:
        setattr(proc, name, "mine")
    assert isinstance(caught.value, AttributeError) and isinstance(caught.value, ArchangelError)
    assert caught.value.name == name and caught.value.obj is proc
    deleting = f"cannot delete '{name}' of <Echo pid=1 .*archangel's bookkeeping"
    with pytest.raises(ReadOnlyAttribute, match=deleting) as caught:
        delattr(proc, name)
    assert caught.value.name == name and caught.value.obj is proc
    assert getattr(proc, name) is before
    # name, kind and transport stay the user's to set.
    proc.name, proc.kind, proc.transport = "mine", "custom", None
    assert (proc.name, proc.kind) == ("mine", "custom")


async def test_a_protocol_that_sets_its_own_manager_is_told_and_leaves_no_entry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Today such a protocol is never removed from the table: ``shutdown`` hangs
    and ``ps`` lists a connection long gone."""
    room = object()

    class Chat(Process, asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.manager = room  # the chat room that manages this member

    manager = ProcessManager()
    server, port = await serve(manager.register(Chat))
    with caplog.at_level(logging.ERROR, logger="archangel"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await until(lambda: manager.counters["exited"] == 1)
    assert await reader.read() == b""  # the failed connection was closed
    writer.close()
    assert len(manager) == 0 and manager.ps() == []
    [record] = manager.history
    assert record.exit_reason is ExitReason.ERROR and isinstance(record.error, ReadOnlyAttribute)
    assert "'manager'" in str(record.error)
    [log] = [r for r in caplog.records if "connection_made raised" in r.getMessage()]
    assert "pid 1" in log.getMessage()
    async with asyncio.timeout(10):
        assert await manager.shutdown(5) is True  # nothing left to wait for
    server.close()
    await server.wait_closed()


async def test_a_protocol_that_sets_state_does_not_break_ps() -> None:
    """Today ``self.state = "headers"`` makes the console's ``ps`` fail for every process."""

    class Http(Process, asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.state = "headers"  # where its request parser is

    manager = ProcessManager()
    echo_server, echo_port = await serve(manager.register(Echo))
    http_server, http_port = await serve(manager.register(Http))
    _, echo_writer = await asyncio.open_connection("127.0.0.1", echo_port)
    await until(lambda: len(manager) == 1)
    _, http_writer = await asyncio.open_connection("127.0.0.1", http_port)
    # Wait until the Http connection was made (and, now, failed and was closed).
    await until(lambda: manager.counters["started"] == 2 and all(p.transport for p in manager))
    with Console(manager) as console:
        async with await RawClient.open(console.address) as client:
            listing = await client.ask("ps")
            history = await client.ask("history")
    assert "Echo" in listing and "running" in listing and "Http" not in listing, listing
    assert "Http" in history and "error" in history, history
    assert "'state'" in repr(manager.history[-1].error)
    for writer in (echo_writer, http_writer):
        writer.close()
    assert await manager.shutdown(5) is True
    for server in (echo_server, http_server):
        server.close()
        await server.wait_closed()


# -- classes that cannot be processes ---------------------------------------------------


def test_a_base_that_defines_the_bookkeeping_fails_at_class_creation() -> None:
    with pytest.raises(NotAProcess) as caught:

        class Socket(Process, ServerConnection):  # websockets: has its own ``state``
            pass

    message = str(caught.value)
    assert isinstance(caught.value, TypeError)
    assert "Socket" in message and "ServerConnection" in message and "'state'" in message
    assert "manager.register(factory)" in message and "adopt" in message


def test_a_body_that_defines_the_bookkeeping_fails_at_class_creation() -> None:
    with pytest.raises(NotAProcess, match=r"its own body defines 'state', 'parent'"):

        class Parser(Process, asyncio.Protocol):
            state = "idle"
            parent = None

    class Base:
        @property
        def manager(self) -> str:
            return "theirs"

    with pytest.raises(NotAProcess, match=r"its base .*Base defines 'manager'"):

        class Other(Base, Process):
            pass


def test_a_base_new_that_process_new_would_skip_fails_at_class_creation() -> None:
    class Counted:
        made = 0

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            Counted.made += 1
            return super().__new__(cls)

    with pytest.raises(NotAProcess, match=r"list .*Counted before Process"):

        class After(Process, Counted):
            pass

    class Before(Counted, Process):  # Counted.__new__ runs, then Process.__new__
        pass

    proc = Before()
    assert Counted.made == 1 and proc.state is ProcessState.NEW

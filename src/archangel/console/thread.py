"""The operator side's thread: a server on a thread and loop of its own.

The console and the web endpoints (``archangel.web``) each run on a
thread of their own with their own event loop, so they keep answering while
the app's loop is blocked. :class:`OperatorThread` is that part, written
once: find the app's loop, start the thread, wait until the server listens
(or say why it cannot), and on :meth:`~OperatorThread.close` stop it and
join the thread. A subclass says what it serves in ``_serve()``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from types import TracebackType
from typing import Any, ClassVar

from ..errors import ArchangelError
from ..kernel.manager import ProcessManager
from .apploop import AppLoop

__all__ = ["OperatorThread"]

logger = logging.getLogger(__name__)

#: How long ``start()`` waits for the thread to listen, and ``close()`` for it to end.
_THREAD_TIMEOUT = 10.0


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class OperatorThread:
    """A server on its own thread and loop, reading an app that runs on another.

    Subclasses set :attr:`what` (``"console"``, ``"web"``: in the thread's name
    and the messages) and :attr:`error` (the error they raise), and implement
    ``_serve()``, which binds, calls ``_listening()`` or
    ``_cannot_listen()``, and returns when ``_stop`` is set (cleaning
    up on its way out). ``with server:`` from the app's loop starts and
    closes it.
    """

    #: What the thread serves, for its name and the messages.
    what: ClassVar[str] = "operator"
    #: What it is called in the message of an address it cannot listen on.
    title: ClassVar[str] = "operator server"
    #: The error :meth:`start` raises.
    error: ClassVar[type[ArchangelError]] = ArchangelError

    def __init__(self, manager: ProcessManager) -> None:
        self.manager = manager
        self._state = _State.NEW
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._apploop: AppLoop | None = None

    # -- any thread ---------------------------------------------------------------------------

    def _is_new(self) -> bool:
        """Whether :meth:`start` has not been called yet."""
        return self._state is _State.NEW

    def _app_loop(self, loop: asyncio.AbstractEventLoop | None, **options: Any) -> AppLoop:
        """The bridge to the app's loop: ``loop``, or the running one."""
        if self._state is not _State.NEW:
            raise self.error(f"{self!r} has already been started")
        in_loop_thread = False
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise self.error(
                    f"{self!r} needs the app's loop: call start() from it or pass loop="
                ) from None
            in_loop_thread = True
        else:
            try:
                in_loop_thread = asyncio.get_running_loop() is loop
            except RuntimeError:
                pass
        thread_id = threading.get_ident() if in_loop_thread else None
        return AppLoop(loop, self.manager, thread_id=thread_id, **options)

    def _launch(self, apploop: AppLoop | None, where: str) -> None:
        """Start the thread and wait until it listens.

        ``apploop`` None: there is no app loop (a master of workers); the
        subclass makes its bridge on its own thread.

        Raises:
            error: It did not listen in time, or cannot listen on ``where``.
        """
        self._apploop = apploop
        self._state = _State.RUNNING
        self._thread = threading.Thread(
            target=self._thread_main, name=f"archangel-{self.what}-{id(self):x}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_THREAD_TIMEOUT):
            self.close()
            raise self.error(f"{self!r} did not start listening in {_THREAD_TIMEOUT:g} s")
        if self._failure is not None:
            self._thread.join(_THREAD_TIMEOUT)
            self._state = _State.CLOSED
            failure, self._failure = self._failure, None
            raise self.error(f"{self.title} cannot listen on {where}: {failure}") from failure

    def close(self) -> None:
        """Stop serving and join the thread. Idempotent."""
        if self._state is _State.CLOSED:
            return
        previous, self._state = self._state, _State.CLOSED
        if previous is _State.NEW:
            return
        if self._apploop is not None:
            self._apploop.close()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # its loop has already ended
                pass
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_THREAD_TIMEOUT)
            if thread.is_alive():
                logger.error(
                    "%r: the %s thread did not end in %g s", self, self.what, _THREAD_TIMEOUT
                )

    def __enter__(self) -> Any:
        if self._state is _State.NEW:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start serving on the thread; return once it listens."""
        raise NotImplementedError

    # -- the thread ---------------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # never leave start() waiting
            logger.exception("%r: the %s thread failed", self, self.what)
            if not self._ready.is_set():
                self._failure = exc
                self._ready.set()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        await self._serve()

    async def _serve(self) -> None:
        """Bind, say so (``_listening()``), serve until ``_stop`` is set, clean up."""
        raise NotImplementedError

    def _listening(self) -> None:
        """The server listens: :meth:`start` returns."""
        self._ready.set()

    def _cannot_listen(self, exc: BaseException) -> None:
        """The server cannot listen: :meth:`start` raises :attr:`error` with ``exc``."""
        self._failure = exc
        self._ready.set()

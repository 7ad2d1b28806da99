"""``WebServer``: metrics and health probes over HTTP, on their own thread and loop.

A :class:`WebServer` owns one thread running its own event loop and an
aiohttp server on it, so ``/metrics``, ``/livez`` and ``/readyz`` answer
while the app's loop is blocked (and ``/livez`` says so). Endpoints:

==============  ===========================================================
``/``           a short text index of the endpoints
``/metrics``    Prometheus exposition (:mod:`archangel.web.metrics`)
``/livez``      200 while the app loop answers, 503 once it is stuck
``/readyz``     200 only in RUN; 503 from the first moment of a stop
==============  ===========================================================

This module wires the parts (thread, loop, routes); the metrics, the probes'
answers and the lag watch each live in their own module. It serves nothing
that changes the app: there is no action endpoint.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from types import TracebackType
from typing import Any

from ..console.apploop import AppLoop
from ..console.listen import is_loopback
from ..errors import WebError
from ..kernel.manager import ProcessManager
from . import probes
from .metrics import Collector, registry
from .target import AppLike, unwrap
from .watch import LoopWatch

try:
    from aiohttp import web
    from prometheus_client.exposition import choose_encoder
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise WebError(
        f"archangel's web endpoints need aiohttp and prometheus_client ({exc}): "
        "pip install 'archangel[web]'"
    ) from exc

__all__ = ["DEFAULT_PORT", "LIVE_THRESHOLD", "WebServer"]

logger = logging.getLogger(__name__)

#: The port the examples (Kubernetes, systemd) use: Prometheus's registry of
#: default exporter ports has 9100 for the node exporter, so most pick near it.
DEFAULT_PORT = 9100
#: Seconds the app loop may go without answering before ``/livez`` fails.
LIVE_THRESHOLD = 10.0
#: How long ``start()`` waits for the thread to listen, and ``close()`` for it to end.
_THREAD_TIMEOUT = 10.0

_INDEX = """archangel {what}
/metrics  Prometheus metrics (text exposition)
/livez    liveness: 200 while the app loop answers, 503 once it is blocked
/readyz   readiness: 200 only in RUN, 503 from the first moment of a stop
"""


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class WebServer:
    """Metrics and health probes over HTTP, on their own thread and loop.

    Args:
        target: A :class:`~archangel.ProcessManager`, or an App (anything
            with ``.manager``; see :class:`~archangel.web.target.AppLike`).
        host: Address to bind; loopback by default. Any other address needs
            a ``token``.
        port: TCP port; 0 picks a free one (see :attr:`address`).
        token: The operator's secret. The endpoints served now only read,
            and answer without it; the dashboard's actions (to come) will
            require it. Never shown in a page or a log.
        block_threshold: Seconds the app loop may go without answering
            before a warning with its stack is logged; None turns it off.
        live_threshold: Seconds without an answer after which ``/livez`` fails.
        probe_interval: Seconds between lag probes of the app loop.

    Raises:
        WebError: A bad target or setting, or a non-loopback ``host``
            without a ``token``.

    ``with WebServer(app) as server:`` from the app's loop starts and closes
    it; or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        target: ProcessManager | AppLike,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        block_threshold: float | None = 1.0,
        live_threshold: float = LIVE_THRESHOLD,
        probe_interval: float = 0.5,
    ) -> None:
        self.manager, self.app = unwrap(target)
        if token is not None and (not token or token != token.strip() or "\n" in token):
            raise WebError("web token must be a non-empty line without outer spaces")
        if not is_loopback(host) and token is None:
            raise WebError(
                f"web server on {host}:{port} would be reachable from other hosts: "
                "a token is required (or bind to 127.0.0.1)"
            )
        if not 0 <= port <= 65535:
            raise WebError(f"web server port must be 0..65535, not {port}")
        if block_threshold is not None and block_threshold <= 0:
            raise WebError(f"web block_threshold must be > 0 or None, not {block_threshold}")
        if live_threshold <= 0 or probe_interval <= 0:
            raise WebError("web live_threshold and probe_interval must be positive")
        self.host = host
        self.port = port
        self._token = token
        self.block_threshold = block_threshold
        self.live_threshold = live_threshold
        self.probe_interval = probe_interval
        self._state = _State.NEW
        self._address: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.watch: LoopWatch | None = None

    def __repr__(self) -> str:  # never the token
        host, port = self._address or (self.host, self.port)
        return f"<WebServer {host}:{port} [{self._state.value}]>"

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound ``(host, port)``; None until started."""
        return self._address

    @property
    def url(self) -> str | None:
        """``http://host:port`` of the bound address; None until started."""
        if self._address is None:
            return None
        host, port = self._address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    # -- lifecycle (any thread) ------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start serving on the server's own thread; return once it listens.

        Args:
            loop: The app's loop, the one probed. Defaults to the running loop.

        Raises:
            WebError: Already started, no loop, or the address cannot be
                bound; the message names the address.
        """
        if self._state is not _State.NEW:
            raise WebError(f"{self!r} has already been started")
        in_loop_thread = False
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise WebError(
                    f"{self!r} needs the app's loop: call start() from it or pass loop="
                ) from None
            in_loop_thread = True
        apploop = AppLoop(
            loop,
            self.manager,
            thread_id=threading.get_ident() if in_loop_thread else None,
            probe_interval=self.probe_interval,
        )
        self.watch = LoopWatch(apploop, self.block_threshold)
        self._state = _State.RUNNING
        self._thread = threading.Thread(
            target=self._thread_main, name=f"archangel-web-{id(self):x}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_THREAD_TIMEOUT):
            self.close()
            raise WebError(f"{self!r} did not start listening in {_THREAD_TIMEOUT:g} s")
        if self._error is not None:
            self._thread.join(_THREAD_TIMEOUT)
            self._state = _State.CLOSED
            error, self._error = self._error, None
            raise WebError(
                f"web server cannot listen on {self.host}:{self.port}: {error}"
            ) from error

    def close(self) -> None:
        """Stop serving and join the thread. Idempotent."""
        if self._state is _State.CLOSED:
            return
        previous, self._state = self._state, _State.CLOSED
        if previous is _State.NEW:
            return
        if self.watch is not None:
            self.watch.apploop.close()
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
                logger.error("%r: the web thread did not end in %g s", self, _THREAD_TIMEOUT)

    def __enter__(self) -> WebServer:
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

    # -- the web thread -----------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # never leave start() waiting
            logger.exception("%r: the web thread failed", self)
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        assert self.watch is not None
        collector = Collector(self.manager, self.app, self.watch)
        metrics_registry, histogram = registry(collector)
        self.watch.observe = histogram.observe
        runner = web.AppRunner(
            self._application(metrics_registry), access_log=None, handle_signals=False
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            self._error = exc
            self._ready.set()
            return
        host, port = runner.addresses[0][:2]
        self._address = (host, port)
        self._ready.set()
        watching = asyncio.create_task(self.watch.run())
        try:
            await self._stop.wait()
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            await runner.cleanup()

    def _application(self, metrics_registry: Any) -> web.Application:
        what = f"app {getattr(self.app, 'name', '')!s}".rstrip() if self.app else "manager"
        watch = self.watch
        assert watch is not None
        live_threshold = self.live_threshold
        app_target = self.app

        async def index(request: web.Request) -> web.Response:
            return web.Response(text=_INDEX.format(what=what))

        async def metrics(request: web.Request) -> web.Response:
            encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            body = encoder(metrics_registry)
            return web.Response(body=body, headers={"Content-Type": content_type})

        async def livez(request: web.Request) -> web.Response:
            ok, text = probes.live(watch, live_threshold)
            return web.Response(text=text + "\n", status=200 if ok else 503)

        async def readyz(request: web.Request) -> web.Response:
            ok, text = probes.ready(app_target)
            return web.Response(text=text + "\n", status=200 if ok else 503)

        application = web.Application()
        application.router.add_get("/", index)
        application.router.add_get("/metrics", metrics)
        application.router.add_get("/livez", livez)
        application.router.add_get("/readyz", readyz)
        return application

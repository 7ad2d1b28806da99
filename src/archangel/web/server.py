"""``WebServer``: metrics and health probes over HTTP, on their own thread and loop.

A :class:`WebServer` owns one thread running its own event loop and an
aiohttp server on it, so ``/metrics``, ``/livez`` and ``/readyz`` answer
while the app's loop is blocked (and ``/livez`` says so). Endpoints:

==============  ===========================================================
``/``           the live dashboard (:mod:`archangel.web.dashboard`)
``/api/...``    the dashboard's JSON, event stream and actions
``/metrics``    Prometheus exposition (:mod:`archangel.web.metrics`)
``/livez``      200 while the app loop answers, 503 once it is stuck
``/readyz``     200 only in RUN; 503 from the first moment of a stop
==============  ===========================================================

This module wires the parts (thread, loop, routes); the metrics, the probes'
answers, the lag watch, the dashboard and who may act through it
(:mod:`archangel.web.auth`) each live in their own module. Only the
dashboard's actions change the app, and only with the token.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..console.fairness import short_gil_slices
from ..console.listen import bind_unix, is_loopback, remove_unix
from ..console.thread import OperatorThread
from ..errors import ArchangelError, WebError
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
        "pip install 'archangel-asyncio[web]'"
    ) from exc

# These import aiohttp too: after the check above, so a missing extra is named.
from .auth import Guard
from .dashboard import Dashboard

__all__ = ["DEFAULT_PORT", "LIVE_THRESHOLD", "WebServer"]

logger = logging.getLogger(__name__)

#: The port the examples (Kubernetes, systemd) use: Prometheus's registry of
#: default exporter ports has 9100 for the node exporter, so most pick near it.
DEFAULT_PORT = 9100
#: Seconds the app loop may go without answering before ``/livez`` fails.
LIVE_THRESHOLD = 10.0
#: Seconds the server gives open requests (event streams) to end when it closes.
_SHUTDOWN_TIMEOUT = 1.0


class WebServer(OperatorThread):
    """Metrics and health probes over HTTP, on their own thread and loop.

    Args:
        target: A :class:`~archangel.ProcessManager`, or an App (anything
            with ``.manager``; see :class:`~archangel.web.target.AppLike`).
        host: Address to bind; loopback by default. Any other address needs
            a ``token``.
        port: TCP port; 0 picks a free one (see :attr:`address`).
        token: The operator's secret. Everything that reads answers
            without it; the dashboard's actions (kill, stop, reload, dump)
            exist only with it and require it (:mod:`archangel.web.auth`).
            Never shown in a page or a log.
        block_threshold: Seconds the app loop may go without answering
            before a warning with its stack is logged; None turns it off.
        live_threshold: Seconds without an answer after which ``/livez`` fails.
        probe_interval: Seconds between lag probes of the app loop.
        path: Serve on this Unix socket (mode 0600) instead of ``host`` and
            ``port``: what each worker of ``run(workers=N)`` does, for the
            master's web server alone (see :doc:`/workers`).

    Raises:
        WebError: A bad target or setting, or a non-loopback ``host``
            without a ``token``.

    ``with WebServer(app) as server:`` from the app's loop starts and closes
    it; or call :meth:`start` and :meth:`close`.
    """

    what = "web"
    title = "web server"
    error = WebError

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
        path: str | None = None,
    ) -> None:
        manager, self.app = unwrap(target)
        super().__init__(manager)
        if token is not None and (not token or token != token.strip() or "\n" in token):
            raise WebError("web token must be a non-empty line without outer spaces")
        if path is None and not is_loopback(host) and token is None:
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
        self.path = path
        self._token = token
        self.block_threshold = block_threshold
        self.live_threshold = live_threshold
        self.probe_interval = probe_interval
        self._address: tuple[str, int] | None = None
        self._unix_inode: int | None = None
        self.watch: LoopWatch | None = None
        #: Who may act through the dashboard (the token, sessions, throttle).
        self.guard = Guard(token, loopback=path is not None or is_loopback(host))
        #: The dashboard; made by :meth:`start`.
        self.dashboard: Dashboard | None = None

    def __repr__(self) -> str:  # never the token
        return f"<WebServer {self._where()} [{self._state.value}]>"

    def _where(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host, port = self._address or (self.host, self.port)
        return f"{host}:{port}"

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound ``(host, port)``; None until started (and on a Unix socket)."""
        return self._address

    @property
    def url(self) -> str | None:
        """``http://host:port`` of the bound address, ``unix:PATH``; None until started."""
        if self.path is not None:
            return None if self._unix_inode is None else f"unix:{self.path}"
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
        apploop = self._app_loop(loop, probe_interval=self.probe_interval)
        self.watch = LoopWatch(apploop, self.block_threshold)
        self.dashboard = Dashboard(
            self.manager, self.app, apploop, self.guard, block_threshold=self.block_threshold
        )
        self._launch(apploop, self._where())

    async def _serve(self) -> None:
        assert self._stop is not None and self.watch is not None
        collector = Collector(self.manager, self.app, self.watch)
        metrics_registry, histogram = registry(collector)
        self.watch.observe = histogram.observe
        runner = web.AppRunner(
            self._application(metrics_registry),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        try:
            await self._site(runner)
        except (OSError, WebError) as exc:
            await runner.cleanup()
            self._cannot_listen(exc)
            return
        self._listening()
        assert self.dashboard is not None
        tasks = [asyncio.create_task(self.watch.run()), asyncio.create_task(self.dashboard.run())]
        try:
            # The console's short GIL slices (1 ms) for as long as the server
            # serves, as for a console session that stays open: a scrape or a
            # page at 100,000 processes is tens of milliseconds of Python on
            # this thread, and the app's loop must not wait out the default
            # 5 ms interval for the GIL. Held from the start, not per request:
            # a thread already waiting for the GIL waits out the interval it
            # began with, so lowering it once a request is read is too late
            # for the first wait (``benchmarks/observe.py``). An idle server
            # competes for nothing, so the setting costs nothing then.
            with short_gil_slices():
                await self._stop.wait()
        finally:
            self.dashboard.closing()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()
            if self.path is not None and self._unix_inode is not None:
                remove_unix(self.path, self._unix_inode)

    async def _site(self, runner: web.AppRunner) -> None:
        """Listen: on ``path`` (a Unix socket made 0600 before it is bound), or on TCP."""
        if self.path is None:
            site: web.BaseSite = web.TCPSite(runner, self.host, self.port)
            await site.start()
            host, port = runner.addresses[0][:2]
            self._address = (host, port)
            return
        try:
            sock, inode = bind_unix(self.path)
        except ArchangelError as exc:
            raise WebError(str(exc)) from None
        try:
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            remove_unix(self.path, inode)
            raise
        self._unix_inode = inode

    def _application(self, metrics_registry: Any) -> web.Application:
        watch = self.watch
        assert watch is not None
        live_threshold = self.live_threshold
        app_target = self.app

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
        assert self.dashboard is not None
        self.dashboard.add_routes(application)
        application.router.add_get("/metrics", metrics)
        application.router.add_get("/livez", livez)
        application.router.add_get("/readyz", readyz)
        return application

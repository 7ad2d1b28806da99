"""``FleetWebServer``: the web side of a master of workers (``run(workers=N)``).

Under workers the App's web server runs on the **master**, on the App's
``host`` and ``port`` with its ``token`` (a non-loopback address still needs
one), on a thread and loop of its own as the master's console does. Each
worker serves its own :class:`~archangel.web.WebServer` on a private Unix
socket in the master's runtime directory (mode 0700, the socket 0600),
reached by this server alone. It serves:

================  ===========================================================
``/metrics``      every worker's ``/metrics``, scraped over its Unix socket
                  (all at once, each within ``worker_timeout``), every sample
                  labelled ``worker`` (its place) and ``worker_pid``; plus
                  ``archangel_workers{state}``, ``archangel_worker_up`` and
                  ``archangel_worker_restarts_total``, and the master's own
                  ``process_*`` (``worker="master"``)
``/livez``        200 while this thread answers and the master's own loop
                  turned within ``live_threshold`` seconds
``/readyz``       200 while the master is not stopping and every place
                  1..N has a ready worker; 503 from the first moment of a stop
``/``             a page of the workers (place, pid, state, uptime, restarts,
                  processes, whether it answered), each linked to its own
                  dashboard
``/workers/N/``   the dashboard of the worker in place N, passed through to
                  its server (:class:`~archangel.web.proxy.WorkerProxy`):
                  its actions work there with the token, as on one App's page
================  ===========================================================

The master reads nothing of a worker but its web server's answers: a worker
that does not answer in time (stopped, or its web thread starved) is
``archangel_worker_up 0`` and its families are left out of that scrape;
the others' come anyway.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from ..console.listen import is_loopback
from ..console.thread import OperatorThread
from ..errors import WebError
from ..kernel.manager import ProcessManager

try:
    import aiohttp
    from aiohttp import web
    from prometheus_client import CollectorRegistry, ProcessCollector
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise WebError(
        f"archangel's web endpoints need aiohttp and prometheus_client ({exc}): "
        "pip install 'archangel-asyncio[web]'"
    ) from exc

from .auth import Guard
from .proxy import PREFIX, WorkerProxy

__all__ = ["WORKER_TIMEOUT", "FleetLike", "FleetWebServer", "merge"]

#: Seconds each worker's web server has to answer one scrape.
WORKER_TIMEOUT = 1.5
#: The worker states counted by ``archangel_workers``.
_STATES = ("starting", "ready", "stopping")
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class FleetLike(Protocol):
    """What the master's web server reads of a master of workers.

    :class:`archangel.service.workers.Master` is one.
    """

    @property
    def name(self) -> str:
        """The App's name."""
        ...

    @property
    def count(self) -> int:
        """How many places (workers) the master keeps."""
        ...

    @property
    def stopping(self) -> bool:
        """Whether a stop (TERM, INT, QUIT, or giving up) has begun."""
        ...

    @property
    def heartbeat(self) -> float:
        """``time.monotonic()`` at the master loop's last turn."""
        ...

    def worker_table(self) -> list[dict[str, Any]]:
        """The workers now, by place: each a dict of ``place``, ``pid``, ``state``,
        ``started`` (epoch seconds), ``restarts`` and ``web`` (its web server's
        Unix socket, or None)."""
        ...


Scraped = tuple[dict[str, Any], "list[Metric] | str"]


async def scrape(path: str | None, timeout: float) -> list[Metric] | str:
    """The families of the ``/metrics`` served on Unix socket ``path``, or why not (a str)."""
    if not path:
        return "has no web server"
    try:
        async with asyncio.timeout(timeout):
            connector = aiohttp.UnixConnector(path=path)
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.get("http://worker/metrics") as response,
            ):
                if response.status != 200:
                    return f"answered {response.status}"
                text = await response.text()
    except TimeoutError:
        return f"not answering (no reply in {timeout:g} s)"
    except (OSError, aiohttp.ClientError) as exc:
        # Not the error's text, which names the private socket: the page shows this.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return f"not reachable ({reason})"
    try:
        return list(text_string_to_metric_families(text))
    except ValueError as exc:
        return f"answered metrics that do not parse: {exc}"


def merge(scraped: Iterable[Scraped], own: Iterable[Metric] = ()) -> list[Metric]:
    """One family per name from every worker's, each sample labelled with its worker.

    ``scraped`` is each worker's row (``place``, ``pid``) with its families
    (or an error: left out). ``own`` are the master's families, labelled
    ``worker="master"``. The families keep their names, help and types.
    """
    families: dict[str, Metric] = {}

    def add(metrics: Iterable[Metric], labels: dict[str, str]) -> None:
        for metric in metrics:
            family = families.get(metric.name)
            if family is None:
                family = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                families[metric.name] = family
            for sample in metric.samples:
                family.add_sample(
                    sample.name, {**sample.labels, **labels}, sample.value, sample.timestamp
                )

    for row, metrics in scraped:
        if not isinstance(metrics, str):
            add(metrics, {"worker": str(row["place"]), "worker_pid": str(row["pid"])})
    add(own, {"worker": "master"})
    return list(families.values())


def fleet_families(rows: list[dict[str, Any]], scraped: Iterable[Scraped]) -> Iterator[Metric]:
    """The master's own families: workers by state, up, restarts by place."""
    states = GaugeMetricFamily(
        "archangel_workers", "The master's workers now, by state", labels=["state"]
    )
    counts = dict.fromkeys(_STATES, 0)
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    for state, count in counts.items():
        states.add_metric([state], count)
    yield states
    up = GaugeMetricFamily(
        "archangel_worker_up",
        "1 if the worker's web server answered this scrape in time, else 0",
        labels=["worker", "worker_pid"],
    )
    for row, metrics in scraped:
        up.add_metric([str(row["place"]), str(row["pid"])], 0 if isinstance(metrics, str) else 1)
    yield up
    restarts = CounterMetricFamily(
        "archangel_worker_restarts",
        "Workers of each place respawned after a failure",
        labels=["worker"],
    )
    by_place = {row["place"]: row["restarts"] for row in rows}
    for place, count in sorted(by_place.items()):
        restarts.add_metric([str(place)], count)
    yield restarts


class _Families:
    """A collector of families already read (a registry made for one scrape)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def ready(master: FleetLike) -> tuple[bool, str]:
    """Whether the service is ready: not stopping, and each place has a ready worker.

    During a roll (HUP) a place keeps its old worker until the fresh one is
    ready, so a roll keeps the service ready; a worker that died leaves its
    place unready until its successor is.
    """
    if master.stopping:
        return False, "not ready: the master is stopping"
    rows = master.worker_table()
    ready_places = {row["place"] for row in rows if row["state"] == "ready"}
    missing = [p for p in range(1, master.count + 1) if p not in ready_places]
    if missing:
        return False, f"not ready: no ready worker in place {', '.join(map(str, missing))}"
    return True, f"ready: {master.count} workers ready"


def live(master: FleetLike, threshold: float) -> tuple[bool, str]:
    """Whether the master is alive: its web thread answers (this) and its loop turns."""
    since = time.monotonic() - master.heartbeat
    if since > threshold:
        return False, f"not live: the master's loop has not turned for {since:.1f} s"
    return True, f"live: the master's loop turned {since * 1000:.0f} ms ago"


class FleetWebServer(OperatorThread):
    """The master's web server: metrics over every worker, probes, a workers page.

    Args:
        master: What it shows (a :class:`~archangel.service.workers.Master`).
        host: Address to bind; loopback by default. Any other needs a ``token``.
        port: TCP port; 0 picks a free one (see :attr:`address`).
        token: As for :class:`~archangel.web.WebServer`: required off loopback.
            The master's own page has no actions; each worker's dashboard,
            under ``/workers/N/``, has them with this token (the workers'
            servers have it).
        worker_timeout: Seconds each worker has to answer one scrape.
        live_threshold: Seconds the master's loop may go without a turn
            before ``/livez`` fails.
        options: The rest of the App's web options (``block_threshold``,
            ``probe_interval``): the workers' servers', not this one's.

    Raises:
        WebError: A bad setting, or a non-loopback ``host`` without a ``token``.
    """

    what = "web"
    title = "web server"
    error = WebError

    def __init__(
        self,
        master: FleetLike,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        worker_timeout: float = WORKER_TIMEOUT,
        live_threshold: float = 10.0,
        **options: Any,
    ) -> None:
        super().__init__(ProcessManager(history=1, name=f"{master.name} master"))
        if token is not None and (not token or token != token.strip() or "\n" in token):
            raise WebError("web token must be a non-empty line without outer spaces")
        if not is_loopback(host) and token is None:
            raise WebError(
                f"web server on {host}:{port} would be reachable from other hosts: "
                "a token is required (or bind to 127.0.0.1)"
            )
        if not 0 <= port <= 65535:
            raise WebError(f"web server port must be 0..65535, not {port}")
        if worker_timeout <= 0 or live_threshold <= 0:
            raise WebError("web worker_timeout and live_threshold must be positive")
        self.master = master
        self.host = host
        self.port = port
        self.worker_timeout = worker_timeout
        self.live_threshold = live_threshold
        self.guard = Guard(token, loopback=is_loopback(host))
        self._address: tuple[str, int] | None = None
        self._own = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._own)

    def __repr__(self) -> str:  # never the token
        host, port = self._address or (self.host, self.port)
        return f"<FleetWebServer {host}:{port} [{self._state.value}]>"

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

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start serving on the server's own thread; return once it listens (``loop`` unused).

        Raises:
            WebError: Already started, or the address cannot be bound.
        """
        if not self._is_new():
            raise WebError(f"{self!r} has already been started")
        self._launch(None, f"{self.host}:{self.port}")

    async def scrape_all(self) -> tuple[list[dict[str, Any]], list[Scraped]]:
        """Every worker's rows and its families (or why not), asked at once."""
        rows = self.master.worker_table()
        answers = await asyncio.gather(
            *(scrape(row.get("web"), self.worker_timeout) for row in rows)
        )
        return rows, list(zip(rows, answers, strict=True))

    async def _serve(self) -> None:
        assert self._stop is not None
        runner = web.AppRunner(self._application(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            self._cannot_listen(exc)
            return
        host, port = runner.addresses[0][:2]
        self._address = (host, port)
        self._listening()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _application(self) -> web.Application:
        master, guard = self.master, self.guard

        async def metrics(request: web.Request) -> web.Response:
            rows, scraped = await self.scrape_all()
            families = merge(scraped, self._own.collect())
            families.extend(fleet_families(rows, scraped))
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Families(families))
            encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

        async def livez(request: web.Request) -> web.Response:
            ok, text = live(master, self.live_threshold)
            return web.Response(text=text + "\n", status=200 if ok else 503)

        async def readyz(request: web.Request) -> web.Response:
            ok, text = ready(master)
            return web.Response(text=text + "\n", status=200 if ok else 503)

        async def page(request: web.Request) -> web.Response:
            if not guard.host_ok(request):
                return web.Response(status=421, text="this server answers to loopback names only")
            _, scraped = await self.scrape_all()
            return web.Response(
                text=_page(master.name, scraped), content_type="text/html", headers=_HEADERS
            )

        application = web.Application()
        WorkerProxy(master, guard).add_routes(application)
        application.router.add_get("/", page)
        application.router.add_get("/metrics", metrics)
        application.router.add_get("/livez", livez)
        application.router.add_get("/readyz", readyz)
        return application


def _processes(metrics: list[Metric] | str) -> str:
    if isinstance(metrics, str):
        return "-"
    total = sum(
        s.value for m in metrics if m.name == "archangel_processes_running" for s in m.samples
    )
    return str(int(total))


def _page(name: str, scraped: list[Scraped]) -> str:
    now = time.time()
    rows = []
    for row, metrics in scraped:
        place = html.escape(str(row["place"]))
        link = f"<a href='{PREFIX}/{place}/'>dashboard</a>" if row.get("web") else "-"
        cells = (
            row["place"],
            row["pid"],
            row["state"],
            f"{max(0.0, now - row['started']):.0f} s",
            row["restarts"],
            _processes(metrics),
            "yes" if not isinstance(metrics, str) else metrics,
        )
        tds = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
        rows.append(f"<tr>{tds}<td>{link}</td></tr>")
    heads = ("place", "pid", "state", "uptime", "restarts", "processes", "answers", "")
    head = "".join(f"<th>{h}</th>" for h in heads)
    title = html.escape(f"{name}: master of {len(scraped)} workers")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='5'>"
        f"<title>{title}</title></head><body><h1>{title}</h1>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<p><a href='/metrics'>metrics</a> · <a href='/livez'>livez</a> · "
        "<a href='/readyz'>readyz</a></p></body></html>"
    )

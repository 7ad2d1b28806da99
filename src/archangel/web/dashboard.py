"""The live dashboard: its page, its JSON API, its event stream and its actions.

Everything the dashboard shows is what the console shows: the data comes
from the console's own commands (``ps --json``, ``history --json``,
``pipes --json``, ``stats --json``, ``lag --json``, ``stack``), run on the
web's thread over a :class:`~archangel.console.commands.Context` of their
own, and the actions are the console's ``kill``, ``stop``, ``reload`` and
``dump``, handed to the app's loop by the same bridge
(:class:`~archangel.console.apploop.AppLoop`). So paging, filtering and
sorting of 100,000 processes happen here, on the server, in the console's
small steps, and the page only ever holds one page of rows.

==========================  =====================================================
``GET /``                   the page (``static/index.html``; its JS and CSS below)
``GET /static/NAME``        the page's script and style sheet, from the package
``GET /api/processes``      one page of ``ps``: ``offset``, ``limit``, ``kind``,
                            ``state``, ``name``, ``sort`` (``-`` for descending)
``GET /api/history``        the newest completed processes: ``n``, ``kind``
``GET /api/pipelines``      live pipelines and their counters
``GET /api/supervisors``    live supervisors and their children
``GET /api/overview``       counters, lag, the blocked-loop report, the plots' series
``GET /api/events``         the overview and lists, as server-sent events, every second
``GET /api/session``        whether actions exist, whether this client may act
``POST /api/login``         the token (form or JSON) for a session cookie
``POST /api/logout``        end the session
``POST /api/action``        ``{"action": "kill", "pids": [3]}``, ``stop``, ``reload``,
                            ``{"action": "dump", "which": "state"}``
==========================  =====================================================

Who may POST is :mod:`archangel.web.auth`'s decision.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.resources
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from aiohttp import web

from ..console.actions import MAX_KILL, action_commands
from ..console.apploop import AppLoop
from ..console.commands import CommandTable, Context
from ..console.diagnostics import diagnostic_commands
from ..console.fairness import short_gil_slices
from ..console.listing import listing_commands
from ..console.render import to_json
from ..kernel.manager import ProcessManager
from .auth import CSRF_HEADER, Guard, Refused
from .target import lifecycle

__all__ = ["Dashboard", "Series"]

logger = logging.getLogger(__name__)

_PACKAGE = __name__.rpartition(".")[0]

#: Seconds between two events of the stream (and two samples of the rates).
_EVENT_INTERVAL = 1.0
#: Samples kept for the plots: five minutes at one a second.
_SERIES_LENGTH = 300
#: Completed processes sent with each event.
_HISTORY_ROWS = 20
#: Seconds a closing WebSocket waits for the page's answer.
_CLOSE_TIMEOUT = 1.0
#: The largest page of ``/api/processes``.
_MAX_LIMIT = 1000
#: The files under ``static/`` that are served, with their types.
_STATIC = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
#: Sent with every dashboard response: nothing loaded from elsewhere, no framing.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class _Sample:
    __slots__ = ("conns", "exited", "items_in", "items_out", "started", "when")

    def __init__(
        self, when: float, started: int, exited: int, conns: int, items_in: int, items_out: int
    ) -> None:
        self.when = when
        self.started = started
        self.exited = exited
        self.conns = conns
        self.items_in = items_in
        self.items_out = items_out


class Series:
    """The plots' data: counters sampled every second, and the lag probe's answers.

    Sampling reads the manager's counters (a snapshot) and, only while a
    pipeline runs, the pipelines' item counters; it runs on the web's thread.

    Args:
        manager: Whose counters are sampled.
        apploop: The lag probe's bridge (its ``lags``).
        length: Samples kept.
    """

    def __init__(self, manager: ProcessManager, apploop: AppLoop, length: int = _SERIES_LENGTH):
        self.manager = manager
        self.apploop = apploop
        self._samples: collections.deque[_Sample] = collections.deque(maxlen=length)
        # A pipeline's counts leave with it: add what the ended ones had counted.
        self._items_in = 0
        self._items_out = 0

    def sample(self) -> None:
        """Record the counters now."""
        counters = self.manager.counters
        kinds = counters["kinds"]
        conns = kinds.get("conn", {}).get("started", 0)
        items_in = items_out = 0
        if kinds.get("pipeline", {}).get("running", 0):
            for process in self.manager.processes():
                if process.kind == "pipeline":
                    counts = getattr(process, "counters", None) or {}
                    items_in += counts.get("in", 0)
                    items_out += counts.get("out", 0)
        self._samples.append(
            _Sample(
                time.monotonic(),
                counters["started"],
                counters["exited"],
                conns,
                items_in,
                items_out,
            )
        )

    def as_dict(self) -> dict[str, Any]:
        """``{"rates": [[t, started/s, exited/s, conns/s, in/s, out/s]...], "lag": [[t, s]...]}``.

        ``t`` is in seconds before now (negative); rates are per second
        between consecutive samples (never negative: a pipeline that ended
        takes its counts with it).
        """
        now = time.monotonic()
        samples = list(self._samples)
        rates = []
        for before, after in itertools.pairwise(samples):
            span = after.when - before.when
            if span <= 0:
                continue
            rates.append(
                [
                    round(after.when - now, 3),
                    *(
                        round(max(0.0, (getattr(after, f) - getattr(before, f)) / span), 3)
                        for f in ("started", "exited", "conns", "items_in", "items_out")
                    ),
                ]
            )
        horizon = _SERIES_LENGTH
        lag = [
            [round(sent - now, 3), round(seconds, 6)]
            for sent, seconds in list(self.apploop.lags)
            if now - sent <= horizon
        ]
        blocked = self.apploop.blocked_for
        if blocked > self.apploop.probe_interval:  # the lag growing now
            lag.append([0.0, round(blocked, 6)])
        return {"rates": rates, "lag": lag, "horizon": horizon}


class _Viewer:
    """The console's Terminal, as a dashboard request sees it: no screen, no keys."""

    more: list[str] | None = None
    width = 200

    async def show(self, text: str) -> None:
        """Nothing to show on: the reply is the response."""

    async def key(self, timeout: float) -> bool:
        """No keys: views that wait for one end at once."""
        return True

    def quit(self) -> None:
        """Nothing to end."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Dashboard:
    """The dashboard of one web server: its routes, its event stream, its sampler.

    Args:
        manager: Whose processes are shown.
        app: The App (duck-typed) or None.
        apploop: The bridge to the app's loop (the lag probe's too).
        guard: Who may act.
        block_threshold: Seconds without an answer after which the page
            says the loop is blocked (twice the lag probe's interval if None).
        action_timeout: Seconds an action waits for the app loop to pick it
            up before answering that it is queued (the console's default).
    """

    def __init__(
        self,
        manager: ProcessManager,
        app: Any,
        apploop: AppLoop,
        guard: Guard,
        *,
        block_threshold: float | None = 1.0,
        action_timeout: float = 1.0,
    ) -> None:
        self.manager = manager
        self.app = app
        self.apploop = apploop
        self.guard = guard
        self.block_threshold = block_threshold
        #: Dashboards following the event stream now.
        self.viewers = 0
        self.series = Series(manager, apploop)
        self.context = Context(manager, app, apploop, sessions=lambda: self.viewers)
        self.commands = CommandTable(
            self.context,
            [
                listing_commands(self.context),
                diagnostic_commands(self.context),
                action_commands(self.context, action_timeout),
            ],
        )
        self._closing: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<web Dashboard of {self.manager!r}, {self.viewers} viewer(s)>"

    # -- running (the web's loop) --------------------------------------------------------------

    async def run(self) -> None:
        """Sample the plots' counters every second until cancelled."""
        self._closing_event()
        while True:
            try:
                self.apploop.sample()  # for the rates ``stats`` reports
                self.series.sample()
            except Exception:  # never let one bad sample end the sampler
                logger.exception("%r: sampling the counters failed", self)
            await asyncio.sleep(_EVENT_INTERVAL)

    def _closing_event(self) -> asyncio.Event:
        if self._closing is None:
            self._closing = asyncio.Event()
        return self._closing

    def closing(self) -> None:
        """End the event streams (the server is closing)."""
        if self._closing is not None:
            self._closing.set()

    # -- the console's commands ---------------------------------------------------------------

    async def _command(self, *argv: str) -> str:
        return await self.commands.run(list(argv), _Viewer())

    async def _json_command(self, *argv: str) -> Any:
        reply = await self._command(*argv)
        if reply.startswith("error: "):
            raise Refused(400, reply.removeprefix("error: "))
        return json.loads(reply)

    # -- data ----------------------------------------------------------------------------

    async def processes(self, query: Any) -> str:
        """One page of ``ps --json`` for the query's filters (JSON text)."""
        argv = ["ps", "--json"]
        limit = _integer(query, "limit", 50)
        if not 1 <= limit <= _MAX_LIMIT:
            raise Refused(400, f"limit must be between 1 and {_MAX_LIMIT}, not {limit}")
        argv += ["--limit", str(limit), "--offset", str(_integer(query, "offset", 0))]
        for key in ("kind", "state", "name", "sort"):
            value = query.get(key, "")
            if value:
                argv += [f"--{key}", value]
        reply = await self._command(*argv)
        if reply.startswith("error: "):
            raise Refused(400, reply.removeprefix("error: "))
        return reply

    async def history(self, count: int = _HISTORY_ROWS, kind: str = "") -> Any:
        """The newest ``count`` completed processes (``history --json``)."""
        argv = ["history", str(count), "--json"]
        if kind:
            argv += ["--kind", kind]
        return await self._json_command(*argv)

    async def pipelines(self) -> Any:
        """Live pipelines with their counters and their cogs' (``pipes --json``)."""
        return (await self._json_command("pipes", "--json"))["pipelines"]

    def supervisors(self) -> list[dict[str, Any]]:
        """Live supervisors: strategy, restarts and their live children (as ``ps`` rows)."""
        found = []
        for process in self.manager.processes():
            if process.kind != "supervisor":
                continue
            children = getattr(process, "children", ())
            found.append(
                {
                    "pid": process.pid,
                    "name": process.name,
                    "state": process.state.value,
                    "started": process.started,
                    "strategy": getattr(getattr(process, "strategy", None), "value", None),
                    "restarts": getattr(process, "restarts", None),
                    "children": [
                        {
                            "pid": child.pid,
                            "kind": child.kind,
                            "name": child.name,
                            "state": child.state.value,
                            "started": child.started,
                        }
                        for child in list(children)
                    ],
                }
            )
        return found

    def blocked_threshold(self) -> float:
        """Seconds without an answer after which the page says the loop is blocked."""
        if self.block_threshold is not None:
            return self.block_threshold
        return 2 * self.apploop.probe_interval

    async def overview(self) -> dict[str, Any]:
        """Counters, lag, the blocked-loop report (with the stack) and the plots."""
        stats = await self._json_command("stats", "--json")
        lag = await self._json_command("lag", "--json")
        blocked_for = self.apploop.blocked_for
        blocked = None
        if blocked_for > self.blocked_threshold():
            blocked = {"seconds": blocked_for, "stack": await self._command("stack")}
        state, _, stopping = lifecycle(self.app)
        return {
            "app": str(getattr(self.app, "name", "")) if self.app is not None else None,
            "state": state,
            "stopping": stopping,
            "now": time.time(),
            "stats": stats,
            "lag": lag,
            "blocked": blocked,
            "series": self.series.as_dict(),
        }

    async def event(self) -> dict[str, Any]:
        """What one event of the stream carries: the overview and the short lists."""
        overview = await self.overview()
        overview["pipelines"] = await self.pipelines()
        overview["supervisors"] = self.supervisors()
        overview["history"] = await self.history()
        return overview

    # -- actions -------------------------------------------------------------------------

    async def act(self, body: Any) -> tuple[str, str]:
        """Run one action from a POST body; ``(what, the console's answer)``.

        Raises:
            Refused: A malformed or unknown action (400).
        """
        if not isinstance(body, dict):
            raise Refused(400, 'the body must be a JSON object such as {"action": "stop"}')
        action = body.get("action")
        if action == "kill":
            pids = body.get("pids")
            if (
                not isinstance(pids, list)
                or not pids
                or len(pids) > MAX_KILL
                or not all(isinstance(p, int) and not isinstance(p, bool) for p in pids)
            ):
                raise Refused(400, f'kill needs "pids": a list of 1 to {MAX_KILL} integers')
            argv = ["kill", *map(str, pids)]
        elif action in ("stop", "reload"):
            argv = [action]
        elif action == "dump":
            which = body.get("which")
            if which not in ("state", "runlog"):
                raise Refused(400, 'dump needs "which": "state" or "runlog"')
            argv = ["dump", which]
        else:
            raise Refused(400, f"unknown action {str(action)[:40]!r}: kill, stop, reload, dump")
        return " ".join(argv), await self._command(*argv)

    # -- routes --------------------------------------------------------------------------

    def add_routes(self, application: web.Application) -> None:
        """Add the page's and the API's routes, and the middleware that guards them."""
        application.middlewares.append(self._middleware)
        router = application.router
        router.add_get("/", self._page)
        router.add_get("/static/{name}", self._static)
        router.add_get("/api/processes", self._processes)
        router.add_get("/api/history", self._history)
        router.add_get("/api/pipelines", self._pipelines)
        router.add_get("/api/supervisors", self._supervisors)
        router.add_get("/api/overview", self._overview)
        router.add_get("/api/events", self._events)
        router.add_get("/api/live", self._live)
        router.add_get("/api/session", self._session)
        router.add_post("/api/login", self._login)
        router.add_post("/api/logout", self._logout)
        router.add_post("/api/action", self._action)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not (path == "/" or path.startswith(("/api/", "/static/"))):
            return await handler(request)
        if not self.guard.host_ok(request):
            return _error(421, "this server answers to loopback names only (127.0.0.1, localhost)")
        try:
            response = await handler(request)
        except Refused as refused:
            response = _error(refused.status, refused.reason)
        if not response.prepared:
            response.headers.update(_SECURITY_HEADERS)
        return response

    async def _page(self, request: web.Request) -> web.Response:
        return _file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC or name == "index.html":
            raise web.HTTPNotFound()
        return _file(name)

    async def _processes(self, request: web.Request) -> web.Response:
        text = await self.processes(request.query)
        return web.Response(text=text, content_type="application/json")

    async def _history(self, request: web.Request) -> web.Response:
        count = _integer(request.query, "n", _HISTORY_ROWS)
        return _json(await self.history(count, request.query.get("kind", "")))

    async def _pipelines(self, request: web.Request) -> web.Response:
        return _json({"pipelines": await self.pipelines()})

    async def _supervisors(self, request: web.Request) -> web.Response:
        return _json({"supervisors": self.supervisors()})

    async def _overview(self, request: web.Request) -> web.Response:
        return _json(await self.overview())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **_SECURITY_HEADERS}
        )
        try:
            await response.prepare(request)
        except (ConnectionError, RuntimeError):  # the page went away before its first byte
            return response
        closing = self._closing_event()
        self.viewers += 1
        try:
            # A dashboard open is a console session open: the GIL changes hands
            # often, so this thread's work never holds the app's loop long.
            with short_gil_slices():
                while not closing.is_set():
                    data = to_json(await self.event())
                    await response.write(f"event: overview\ndata: {data}\n\n".encode())
                    try:
                        await asyncio.wait_for(closing.wait(), _EVENT_INTERVAL)
                    except TimeoutError:
                        pass
        except (ConnectionError, RuntimeError):  # the page went away
            pass
        finally:
            self.viewers -= 1
        return response

    async def _live(self, request: web.Request) -> web.StreamResponse:
        # A WebSocket is not held to the same origin by the browser: refuse
        # another site's page, which could otherwise read what is sent here.
        self.guard.check_origin(request, required=False)
        socket = web.WebSocketResponse(heartbeat=30.0, timeout=_CLOSE_TIMEOUT)
        try:
            await socket.prepare(request)
        except (ConnectionError, RuntimeError):  # the page went away during the handshake
            return socket
        closing = self._closing_event()
        self.viewers += 1
        # The page sends nothing: a message read is its close (or an error).
        reading = asyncio.ensure_future(socket.receive())
        ending = asyncio.ensure_future(closing.wait())
        try:
            with short_gil_slices():
                while not socket.closed:
                    await socket.send_str(to_json(await self.event()))
                    done, _ = await asyncio.wait(
                        {reading, ending},
                        timeout=_EVENT_INTERVAL,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if done:
                        break
        except (ConnectionError, RuntimeError):  # the page went away
            pass
        finally:
            self.viewers -= 1
            for task in (reading, ending):
                task.cancel()
            await asyncio.gather(reading, ending, return_exceptions=True)
            await socket.close()
        return socket

    async def _session(self, request: web.Request) -> web.Response:
        csrf = self.guard.csrf_of(request) if self.guard.actions else None
        return _json(
            {
                "actions": self.guard.actions,
                "app": self.app is not None,
                "logged_in": csrf is not None,
                "csrf": csrf,
                "csrf_header": CSRF_HEADER,
            }
        )

    async def _login(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise Refused(400, "the body is not JSON") from None
            given = body.get("token", "") if isinstance(body, dict) else ""
        else:
            given = (await request.post()).get("token", "")
        if not isinstance(given, str) or not given:
            raise Refused(400, "no token given")
        response = _json({"logged_in": True})
        csrf = await self.guard.login(request, given, response)
        response.text = to_json({"logged_in": True, "csrf": csrf})
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        response = _json({"logged_in": False})
        self.guard.logout(request, response)
        return response

    async def _action(self, request: web.Request) -> web.Response:
        how = await self.guard.authorize(request)
        if request.content_type != "application/json":
            raise Refused(415, "actions are JSON: Content-Type: application/json")
        try:
            body = await request.json()
        except ValueError:
            raise Refused(400, "the body is not JSON") from None
        what, result = await self.act(body)
        ok = not result.startswith("error: ")
        logger.info(
            "web: %s (by %s, %s): %s", what, self.guard.peer(request), how, result.split("\n")[0]
        )
        return _json({"action": what, "ok": ok, "result": result}, status=200 if ok else 400)


def _integer(query: Any, key: str, default: int) -> int:
    text = query.get(key, "")
    if text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise Refused(400, f"{key} must be an integer, not {text[:40]!r}") from None


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=to_json(value), status=status, content_type="application/json")


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON ``{"error": reason}`` with the page's security headers (and ``headers``)."""
    response = _json({"error": reason}, status=status)
    response.headers.update(_SECURITY_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def _file(name: str) -> web.Response:
    data = importlib.resources.files(_PACKAGE).joinpath("static", name).read_bytes()
    kind = _STATIC[name]
    return web.Response(body=data, content_type=kind, charset="utf-8")


def static_files() -> Iterator[str]:
    """The names of the files the page is made of (for the packaging test)."""
    yield from _STATIC

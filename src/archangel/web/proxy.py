"""``/workers/N/``: each worker's own dashboard, reached through the master's web server.

Under workers only the master's web server listens where the operator can
reach it; each worker's :class:`~archangel.web.WebServer` is on a private
Unix socket. :class:`WorkerProxy` passes a request under ``/workers/N/`` to
the worker in place N, with what the page sends (its cookie, its CSRF
header, a bearer token) and back what the worker answers, streamed (the
event stream), and the page's WebSocket both ways. The worker's own guard
decides as it does for a direct request: with a token, its actions work
through the master; without one, it answers every action 403.

The checks that depend on where the browser is are made here, against the
master's address: the ``Host`` (a loopback-bound master answers to loopback
names only) and the ``Origin`` (a request another site's page sent is
refused here, whatever it asks). The worker is then asked as ``localhost``
from ``localhost``; its login cookie is given the path ``/workers/N/``, so
the workers' sessions are each their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import yarl
from aiohttp import web

from .auth import CSRF_HEADER, PEER_HEADER, Guard, Refused
from .dashboard import _error

__all__ = ["PREFIX", "WorkerProxy"]

logger = logging.getLogger(__name__)

#: The path under which the workers' dashboards are, ``/workers/<place>/``.
PREFIX = "/workers"
#: Seconds a worker has to answer a passed request (its headers: not the event
#: stream's length); the dashboard's slowest answers take some 100 ms.
_ANSWER_TIMEOUT = 10.0
#: The methods that change nothing, which a link from another page may send.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Place numbers: 1-999999, written as they are counted (no leading zero).
_PLACE = r"{place:[1-9][0-9]{0,5}}"
#: Request headers passed to the worker (the rest are the master's business).
_REQUEST_HEADERS = (
    "Accept",
    "Authorization",
    "Content-Type",
    "Cookie",
    CSRF_HEADER,
    "Last-Event-ID",
    "Sec-Fetch-Site",
)
#: Response headers passed back (``Set-Cookie`` with its path rewritten).
_RESPONSE_HEADERS = (
    "Cache-Control",
    "Content-Encoding",
    "Content-Security-Policy",
    "Content-Type",
    "Referrer-Policy",
    "Retry-After",
    "X-Content-Type-Options",
    "X-Frame-Options",
)
_LOCAL = "localhost"
#: Close codes a Close frame must not carry (RFC 6455, 7.4.1): what an end
#: without one is called.
_UNSENDABLE = frozenset({1005, 1006, 1015})


class WorkerProxy:
    """The routes ``/workers/<place>/...`` of the master's web server.

    Args:
        master: Whose workers (a :class:`~archangel.web.fleet.FleetLike`:
            its ``worker_table()`` names each worker's socket).
        guard: The master's guard (its ``Host`` and ``Origin`` checks).
        timeout: Seconds a worker has to answer (its headers: an event
            stream then lasts as long as the page follows it).
    """

    def __init__(self, master: Any, guard: Guard, timeout: float = _ANSWER_TIMEOUT) -> None:
        self.master = master
        self.guard = guard
        self.timeout = timeout

    def socket(self, place: int) -> str:
        """The Unix socket of the web server of the worker in ``place`` (the ready one, in a roll).

        Raises:
            LookupError: No worker there.
            _NotYet: Its worker is starting: its web server may not listen yet.
        """
        rows = [row for row in self.master.worker_table() if row["place"] == place]
        if not rows:
            raise LookupError(f"no worker in place {place}: the places are 1-{self.master.count}")
        for row in sorted(rows, key=lambda row: row["state"] != "ready"):
            if row.get("web") and row["state"] != "starting":
                return str(row["web"])
        if any(row["state"] == "starting" for row in rows):
            raise _NotYet(f"worker {place} (pid {rows[0]['pid']}) is starting: try again shortly")
        raise LookupError(f"worker {place} (pid {rows[0]['pid']}) has no web server")

    def add_routes(self, application: web.Application) -> None:
        """Add ``/workers/<place>`` (a redirect to the slash) and everything under it."""
        router = application.router
        router.add_get(f"{PREFIX}/{_PLACE}", self._slash)
        router.add_route("*", f"{PREFIX}/{_PLACE}/{{tail:.*}}", self._pass)

    async def _slash(self, request: web.Request) -> web.StreamResponse:
        # The page's own URLs are relative: they need the directory's slash.
        raise web.HTTPMovedPermanently(f"{PREFIX}/{request.match_info['place']}/")

    async def _pass(self, request: web.Request) -> web.StreamResponse:
        if not self.guard.host_ok(request):
            return _error(421, "this server answers to loopback names only (127.0.0.1, localhost)")
        # A link from another page (a GET) may come from anywhere, as to the
        # dashboard itself; what could act, or read a WebSocket, may not.
        websocket = _is_websocket(request)
        if websocket or request.method not in _SAFE_METHODS:
            try:
                self.guard.check_origin(request, required=False)
            except Refused as refused:
                return _error(refused.status, refused.reason)
        place = int(request.match_info["place"])
        try:
            socket = self.socket(place)
        except _NotYet as starting:
            return _error(503, str(starting), {"Retry-After": "1"})
        except LookupError as missing:
            return _error(404, str(missing))
        headers = {k: v for k in _REQUEST_HEADERS if (v := request.headers.get(k)) is not None}
        headers["Host"] = _LOCAL
        headers[PEER_HEADER] = self.guard.peer(request)
        if "Origin" in request.headers:  # checked above against the master's Host
            headers["Origin"] = f"http://{_LOCAL}"
        # The path as sent (still percent-encoded: decoded once, by the worker),
        # less "/workers/N/", with its query (the origin form even when the
        # request line gave the absolute one).
        raw = request.rel_url.raw_path_qs.split("/", 3)[3]
        target = yarl.URL(f"http://{_LOCAL}/{raw}", encoded=True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
        try:
            async with aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=socket),
                timeout=timeout,
                auto_decompress=False,
            ) as session:
                if websocket:
                    return await self._websocket(request, session, target, headers, place)
                return await self._http(request, session, target, headers, place)
        except TimeoutError:
            logger.warning(
                "web: worker %d gave no answer to %s %s in %g s",
                place,
                request.method,
                target.path,
                self.timeout,
            )
            return _error(502, f"worker {place} gave no answer in {self.timeout:g} s")
        except (OSError, aiohttp.ClientError) as exc:
            logger.warning(
                "web: worker %d cannot be asked %s %s: %s", place, request.method, target.path, exc
            )
            return _error(502, f"worker {place} cannot be reached (see the master's log)")

    async def _http(
        self,
        request: web.Request,
        session: aiohttp.ClientSession,
        target: yarl.URL,
        headers: dict[str, str],
        place: int,
    ) -> web.StreamResponse:
        body = await request.read() if request.can_read_body else None
        async with asyncio.timeout(self.timeout):
            upstream = await session.request(
                request.method, target, headers=headers, data=body, allow_redirects=False
            )
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name in _RESPONSE_HEADERS:
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            for cookie in upstream.headers.getall("Set-Cookie", ()):
                response.headers.add("Set-Cookie", _cookie_for(cookie, place))
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionError, aiohttp.ClientError) as exc:  # either side went away
                # Cut the client's connection too: a clean end would pass a
                # truncated answer for a whole one.
                logger.debug("web: worker %d's answer to %s cut short: %s", place, target, exc)
                if request.transport is not None:
                    request.transport.abort()
            return response

    async def _websocket(
        self,
        request: web.Request,
        session: aiohttp.ClientSession,
        target: yarl.URL,
        headers: dict[str, str],
        place: int,
    ) -> web.StreamResponse:
        downstream = web.WebSocketResponse()
        if not downstream.can_prepare(request).ok:  # not a whole handshake: aiohttp's 400
            await downstream.prepare(request)
        try:
            async with asyncio.timeout(self.timeout):
                # No size limit: an event of 100,000 supervised children is megabytes.
                upstream = await session.ws_connect(target, headers=headers, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as refused:  # the worker's answer, passed on
            status = refused.status if 400 <= refused.status < 600 else 502
            return _error(status, f"worker {place} refused the WebSocket ({refused.status})")
        await downstream.prepare(request)

        async def pump(source: Any, sink: Any, name: str) -> None:
            async for message in source:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await sink.send_str(message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
                elif message.type == aiohttp.WSMsgType.ERROR:
                    logger.warning(
                        "web: worker %d's WebSocket (%s): %s", place, name, message.data
                    )
                    break
                else:
                    break

        tasks = [
            asyncio.ensure_future(pump(upstream, downstream, "from the worker")),
            asyncio.ensure_future(pump(downstream, upstream, "to the worker")),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            code = upstream.close_code
            if code is None or code in _UNSENDABLE:  # it went away: an abnormal end, said so
                code = aiohttp.WSCloseCode.INTERNAL_ERROR if upstream.closed else 1000
            await upstream.close()
            await downstream.close(code=code)
        return downstream


class _NotYet(LookupError):
    """The place's worker is starting: its web server is not there yet."""


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _cookie_for(cookie: str, place: int) -> str:
    """A worker's ``Set-Cookie`` for the master's host only, under ``/workers/<place>/``."""
    parts = [part.strip() for part in cookie.split(";")]
    kept = [part for part in parts if not part.lower().startswith(("path=", "domain="))]
    return "; ".join([*kept, f"Path={PREFIX}/{place}/"])

"""Who may act through the dashboard: the token, sessions, CSRF and origin checks.

The dashboard reads without a token; every action (kill, stop, reload,
dump) is a POST that :class:`Guard` lets through only when all of these hold:

* a token is configured for the server (without one, every POST is 403);
* the request's ``Host`` names this server: on a loopback bind only a
  loopback name (``127.0.0.1``, ``localhost``, ``[::1]``) is accepted, which
  turns away DNS-rebinding pages whose own name resolves to 127.0.0.1;
* its ``Origin`` (and ``Sec-Fetch-Site``, when the browser sends it) says
  it comes from this server's own pages, so another site's page cannot
  post to it, even blindly;
* it carries the token: either ``Authorization: Bearer TOKEN`` (scripts;
  a browser never adds that header on its own, so no CSRF token is needed),
  or the session cookie set by ``POST /api/login`` (``HttpOnly``,
  ``SameSite=Strict``) *and* that session's CSRF token in the
  ``X-CSRF-Token`` header.

Token checks go through the console's :class:`~archangel.console.guard.Throttle`
(a bucket per peer address): a wrong token costs its peer a turn, and a
peer out of turns waits, then is refused with 429. Tokens are compared in
constant time and never logged or shown.

This module only decides; :mod:`archangel.web.dashboard` serves the routes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import secrets
import time
import urllib.parse

from aiohttp import web

from ..console.guard import Throttle
from ..console.listen import is_loopback

__all__ = ["CSRF_HEADER", "PEER_HEADER", "Guard", "Refused"]

logger = logging.getLogger(__name__)

#: The header that carries a session's CSRF token.
CSRF_HEADER = "X-CSRF-Token"
#: The header in which the master's proxy names the client it passes a request for
#: (believed only by a worker's server: :attr:`Guard.behind_master`).
PEER_HEADER = "X-Archangel-Peer"
#: Seconds a login session lasts.
_SESSION_TTL = 12 * 3600.0
#: Sessions kept at once (the oldest goes first).
_MAX_SESSIONS = 64
#: The longest token accepted in a login form or header (longer is wrong anyway).
_MAX_TOKEN = 4096


class Refused(Exception):
    """A request the guard turns away: ``status`` and the reason, shown to the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclasses.dataclass
class _Session:
    csrf: str
    expires: float


class Guard:
    """The dashboard's gatekeeper for one web server.

    Args:
        token: The operator's secret, or None: then the dashboard is
            read-only and every POST is refused.
        loopback: Whether the server binds a loopback address (then only
            loopback names are accepted in ``Host``).
        throttle: How fast one peer may have tokens checked.
    """

    def __init__(
        self, token: str | None, *, loopback: bool, throttle: Throttle | None = None
    ) -> None:
        self._token = token
        self.loopback = loopback
        #: Whether the server is a worker's, on a Unix socket that only the master's
        #: proxy reaches (``App.web_on`` sets it): then the client the proxy names in
        #: :data:`PEER_HEADER` is believed.
        self.behind_master = False
        #: The console's throttle of token checks (replaceable, e.g. stricter).
        self.throttle = throttle if throttle is not None else Throttle()
        self._sessions: dict[str, _Session] = {}

    def __repr__(self) -> str:  # never the token
        mode = "actions with a token" if self._token is not None else "read-only"
        return f"<web Guard [{mode}], {len(self._sessions)} session(s)>"

    @property
    def actions(self) -> bool:
        """Whether actions are possible at all (a token is configured)."""
        return self._token is not None

    # -- where a request comes from ------------------------------------------------------

    def peer(self, request: web.Request) -> str:
        """Who sent the request, for the throttle and the log: its address, or ``"?"``.

        Behind the master's proxy, the client the proxy names (else every
        client through the master would share one throttle).
        """
        if self.behind_master:
            named = request.headers.get(PEER_HEADER, "")
            if named and len(named) <= 64 and named.isprintable():
                return named
        return request.remote or "?"

    def host_ok(self, request: web.Request) -> bool:
        """Whether the ``Host`` header may name this server (see the module's notes)."""
        if not self.loopback:
            return True
        host = request.url.host or ""
        return is_loopback(host.strip("[]"))

    def check_origin(self, request: web.Request, *, required: bool) -> None:
        """Refuse (403) a request that another site's page may have sent.

        Args:
            required: Whether ``Origin`` must be present (cookie sessions:
                browsers send it on every POST).
        """
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            raise Refused(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = request.headers.get("Origin")
        if origin is None:
            if required:
                raise Refused(403, "request without an Origin header refused")
            return
        # Host and port only: behind a TLS-terminating proxy the page is https
        # while this server speaks http. "null" (a sandboxed page) has neither.
        if urllib.parse.urlsplit(origin).netloc.lower() != request.host.lower():
            raise Refused(403, "cross-origin request refused: Origin does not match Host")

    # -- the token -------------------------------------------------------------------------

    async def _check_token(self, request: web.Request, given: str) -> None:
        """Compare ``given`` with the token, throttled per peer; Refused if wrong."""
        if self._token is None:
            raise Refused(403, "read-only: no token is configured for this server")
        peer = self.peer(request)
        wait = self.throttle.reserve(peer)
        if wait is None:
            logger.warning("web: too many token attempts from %s, refused", peer)
            raise Refused(429, "too many token attempts: try again later")
        if wait:
            await asyncio.sleep(wait)
        if len(given) <= _MAX_TOKEN and hmac.compare_digest(
            given.encode("utf-8", "replace"), self._token.encode()
        ):
            self.throttle.refund(peer)
            return
        logger.warning("web: a wrong token from %s", peer)
        raise Refused(401, "wrong token")

    # -- sessions -------------------------------------------------------------------------

    @staticmethod
    def cookie_name(request: web.Request) -> str:
        """The session cookie's name: per port, as cookies do not tell ports apart."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if isinstance(sockname, tuple) else 0  # a Unix socket's is a path
        return f"archangel_session_{port}"

    def _session(self, request: web.Request) -> _Session | None:
        sid = request.cookies.get(self.cookie_name(request))
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        if session.expires < time.monotonic():
            del self._sessions[sid]
            return None
        return session

    def csrf_of(self, request: web.Request) -> str | None:
        """The CSRF token of the request's session, or None without a valid one."""
        session = self._session(request)
        return session.csrf if session is not None else None

    async def login(self, request: web.Request, given: str, response: web.Response) -> str:
        """Check ``given``; on success open a session, set its cookie on ``response``.

        Returns:
            The session's CSRF token, for the page to send back in :data:`CSRF_HEADER`.

        Raises:
            Refused: No token configured, wrong origin, wrong token, throttled.
        """
        if self._token is None:
            raise Refused(403, "read-only: no token is configured for this server")
        self.check_origin(request, required=True)
        await self._check_token(request, given)
        now = time.monotonic()
        for sid in [s for s, v in self._sessions.items() if v.expires < now]:
            del self._sessions[sid]
        while len(self._sessions) >= _MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        sid = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        self._sessions[sid] = _Session(csrf, now + _SESSION_TTL)
        response.set_cookie(
            self.cookie_name(request),
            sid,
            max_age=int(_SESSION_TTL),
            path="/",
            httponly=True,
            samesite="Strict",
        )
        logger.info("web: %s logged in to the dashboard", self.peer(request))
        return csrf

    def logout(self, request: web.Request, response: web.Response) -> None:
        """End the request's session (if any) and clear its cookie."""
        self.check_origin(request, required=True)
        sid = request.cookies.get(self.cookie_name(request))
        if sid:
            self._sessions.pop(sid, None)
        response.del_cookie(self.cookie_name(request), path="/")

    async def authorize(self, request: web.Request) -> str:
        """Let an action through, or raise :class:`Refused`.

        Returns:
            How the request was authorised (``"bearer"`` or ``"session"``), for the log.
        """
        if self._token is None:
            raise Refused(403, "read-only: no token is configured for this server")
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and given:
            self.check_origin(request, required=False)
            await self._check_token(request, given.strip())
            return "bearer"
        self.check_origin(request, required=True)
        session = self._session(request)
        if session is None:
            raise Refused(401, "not logged in: POST /api/login or send Authorization: Bearer")
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode("utf-8", "replace"), session.csrf.encode()):
            raise Refused(403, f"missing or wrong {CSRF_HEADER} header")
        return "session"

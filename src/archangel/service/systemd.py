"""systemd integration without libsystemd: notify, watchdog, socket activation.

Speaks systemd's plain protocols directly: ``sd_notify`` datagrams to
``$NOTIFY_SOCKET`` (:func:`notify` and its shorthands), watchdog pings driven
by the event loop's clock (:class:`Watchdog`), and listening sockets inherited
through ``$LISTEN_FDS`` (:func:`listen_sockets`; :func:`claim_listen_fds` hands
them to a forked daemon). It links no C library, talks
no D-Bus and starts no units. Outside systemd every call is a harmless no-op
that says so in its return value, so an application calls them
unconditionally.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from ..bus.timers import Timer, every
from ..errors import InvalidArgument

__all__ = [
    "SD_LISTEN_FDS_START",
    "Watchdog",
    "claim_listen_fds",
    "listen_fds",
    "listen_sockets",
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "under_systemd",
    "watchdog_interval",
    "watchdog_ping",
]

logger = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
"""The first descriptor systemd passes with socket activation."""


def under_systemd() -> bool:
    """Whether this process runs as (part of) a systemd unit.

    True when ``$NOTIFY_SOCKET`` or ``$INVOCATION_ID`` is set. Processes
    started from a desktop session's terminal may inherit ``INVOCATION_ID``;
    :func:`archangel.service.daemon.daemonize` takes ``detach=True`` to fork anyway.
    """
    return bool(os.environ.get("NOTIFY_SOCKET") or os.environ.get("INVOCATION_ID"))


def notify(*messages: str, unset_environment: bool = False) -> bool:
    """Send ``KEY=VALUE`` messages to systemd over ``$NOTIFY_SOCKET``, like ``sd_notify``.

    The messages go out as one datagram, one per line. The socket is a path
    or, when it starts with ``@``, a name in the abstract namespace. The send
    never blocks the event loop: a datagram that cannot be queued at once is
    dropped. Send errors are logged, never raised.

    Args:
        *messages: Lines such as ``"READY=1"``; none may contain a newline.
        unset_environment: Remove ``NOTIFY_SOCKET`` from the environment, so
            that child processes do not notify in our name.

    Returns:
        True when the datagram was sent; False when not under systemd (no
        ``$NOTIFY_SOCKET``), with nothing to send, or when sending failed.
    """
    value = os.environ.get("NOTIFY_SOCKET", "")
    if unset_environment:
        os.environ.pop("NOTIFY_SOCKET", None)
    if not value or not messages:
        return False
    if value.startswith("@"):
        address = "\0" + value[1:]
    elif value.startswith("/"):
        address = value
    else:
        logger.warning("NOTIFY_SOCKET=%r is not a Unix socket; not notifying systemd", value)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto("\n".join(messages).encode(), address)
    except OSError as exc:
        logger.warning("could not notify systemd at %s of %s: %s", value, messages, exc)
        return False
    logger.debug("notified systemd: %s", messages)
    return True


def _with_status(message: str, text: str | None) -> tuple[str, ...]:
    return (message,) if text is None else (message, _status_line(text))


def _status_line(text: str) -> str:
    return "STATUS=" + text.replace("\n", " ")


def ready(status: str | None = None) -> bool:
    """Tell systemd that start-up (or a reload) has finished: ``READY=1``.

    Args:
        status: Optional status text sent along (see :func:`status`).

    Returns:
        Whether the message was sent.
    """
    return notify(*_with_status("READY=1", status))


def stopping(status: str | None = None) -> bool:
    """Tell systemd that the service is stopping: ``STOPPING=1``.

    Args:
        status: Optional status text sent along (see :func:`status`).

    Returns:
        Whether the message was sent.
    """
    return notify(*_with_status("STOPPING=1", status))


def reloading(status: str | None = None) -> bool:
    """Tell systemd that a reload began: ``RELOADING=1`` with ``MONOTONIC_USEC``.

    Send :func:`ready` when the reload has finished; ``Type=notify-reload``
    units need both.

    Args:
        status: Optional status text sent along (see :func:`status`).

    Returns:
        Whether the message was sent.
    """
    # systemd wants CLOCK_MONOTONIC itself, not the event loop's clock.
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(*_with_status("RELOADING=1", status), f"MONOTONIC_USEC={usec}")


def status(text: str) -> bool:
    """Set the one-line status ``systemctl status`` shows: ``STATUS=text``.

    Args:
        text: The status; newlines become spaces.

    Returns:
        Whether the message was sent.
    """
    return notify(_status_line(text))


def watchdog_ping() -> bool:
    """Tell systemd's watchdog we are alive: ``WATCHDOG=1``.

    Returns:
        Whether the message was sent.
    """
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """How often to ping the watchdog: half of ``$WATCHDOG_USEC``, in seconds.

    Returns:
        The interval, or None when the unit has no watchdog, when
        ``$WATCHDOG_PID`` names another process, or when the value is invalid.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        logger.debug("WATCHDOG_PID=%s is not this process (%d); no watchdog", pid, os.getpid())
        return None
    if not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
        logger.warning("WATCHDOG_USEC=%r is not a positive integer; no watchdog", usec)
        return None
    return int(usec) / 2_000_000


class Watchdog:
    """Pings systemd's watchdog at a fixed interval, driven by the event loop.

    The pings are a :class:`~archangel.bus.timers.Timer` on the loop, not a
    thread: a loop that is blocked or stuck stops pinging, and systemd then
    acts as the unit's ``WatchdogSec=`` and ``Restart=`` say. The first ping
    is sent by :meth:`start`, the others at ``start + k * interval``; after a
    block it pings once as soon as the loop runs, then skips the pings it
    missed and goes on at the next one of that grid, never in a burst (the
    timer's rule).

    Args:
        interval: Seconds between pings; None takes :func:`watchdog_interval`
            at :meth:`start`.

    Attributes:
        interval: The interval given, or None to read it from the environment.
        pings: How many pings were sent.
    """

    def __init__(self, interval: float | None = None) -> None:
        if interval is not None and not interval > 0:
            raise InvalidArgument(f"watchdog interval must be positive, not {interval!r}")
        self.interval = interval
        self.pings = 0
        self._timer: Timer | None = None

    def __repr__(self) -> str:
        if self._timer is None:
            return f"<Watchdog pings={self.pings} [idle]>"
        return f"<Watchdog every {self._timer.interval:g}s pings={self.pings} [running]>"

    @property
    def running(self) -> bool:
        """Whether pings are scheduled."""
        return self._timer is not None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> bool:
        """Ping now and then every interval; a no-op when already running.

        Args:
            loop: The loop to ping from; the running loop when None.

        Returns:
            True when pinging (or already pinging); False when the unit has
            no watchdog and no interval was given.
        """
        if self._timer is not None:
            return True
        period = self.interval if self.interval is not None else watchdog_interval()
        if period is None:
            logger.debug("no systemd watchdog configured; not pinging")
            return False
        loop = loop if loop is not None else asyncio.get_running_loop()
        self._timer = every(loop, period, self._ping)
        self._ping()
        logger.debug("watchdog pinging every %gs", period)
        return True

    def stop(self) -> None:
        """Stop pinging; idempotent. :meth:`start` may start it again."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _ping(self) -> bool:
        if watchdog_ping():
            self.pings += 1
        return True  # the timer runs until stop()


def _inherited(unset_environment: bool) -> list[tuple[str, int]]:
    """The (name, fd) pairs systemd passed, after checking LISTEN_PID."""
    pid = os.environ.get("LISTEN_PID", "")
    count = os.environ.get("LISTEN_FDS", "")
    names = os.environ.get("LISTEN_FDNAMES")
    if unset_environment:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
    if not pid or not count:
        return []
    if pid != str(os.getpid()):
        logger.debug("LISTEN_PID=%s is not this process (%d); no sockets", pid, os.getpid())
        return []
    if not (count.isascii() and count.isdigit()):
        logger.warning("LISTEN_FDS=%r is not a count; no sockets", count)
        return []
    total = int(count)
    labels = names.split(":") if names is not None else []
    if names is not None and len(labels) != total:
        logger.warning("LISTEN_FDNAMES has %d names for %d sockets", len(labels), total)
    labels = [label or "unknown" for label in labels[:total]]
    labels += ["unknown"] * (total - len(labels))
    return [(label, SD_LISTEN_FDS_START + i) for i, label in enumerate(labels)]


def _adopt(pairs: list[tuple[str, int]]) -> list[tuple[str, socket.socket]]:
    adopted = []
    for name, fd in pairs:
        try:
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            logger.warning("inherited fd %d (%s) is not a socket; skipped: %s", fd, name, exc)
            continue
        adopted.append((name, sock))
    return adopted


def listen_fds(*, unset_environment: bool = True) -> list[socket.socket]:
    """The sockets systemd passed by socket activation, in order, like ``sd_listen_fds``.

    Reads ``$LISTEN_FDS`` descriptors from :data:`SD_LISTEN_FDS_START` (3)
    up, only when ``$LISTEN_PID`` is this process. Each becomes a
    :class:`socket.socket` (family and type read from the descriptor) marked
    close-on-exec. Descriptors that are not sockets (``ListenFIFO=``) are
    skipped with a warning. The caller owns the sockets: pass them to
    ``loop.create_server(sock=...)`` or close them. Call it once.

    Args:
        unset_environment: Remove the ``LISTEN_*`` variables, so that child
            processes do not take the sockets for their own.

    Returns:
        The sockets; empty when not socket-activated.
    """
    return [sock for _, sock in _adopt(_inherited(unset_environment))]


def listen_sockets(*, unset_environment: bool = True) -> dict[str, list[socket.socket]]:
    """The socket-activated sockets grouped by name, from ``$LISTEN_FDNAMES``.

    Names come from ``FileDescriptorName=`` in the socket unit (by default the
    socket unit's name); sockets without one are under ``"unknown"``. Pick a
    server's sockets with ``sockets.get("http", [])``. Otherwise as
    :func:`listen_fds`.

    Args:
        unset_environment: Remove the ``LISTEN_*`` variables.

    Returns:
        A mapping from name to that name's sockets, in descriptor order.
    """
    grouped: dict[str, list[socket.socket]] = {}
    for name, sock in _adopt(_inherited(unset_environment)):
        grouped.setdefault(name, []).append(sock)
    return grouped


def claim_listen_fds(passed_to: int) -> list[int]:
    """Make the sockets systemd passed to process ``passed_to`` this process's own.

    For a process forked after socket activation, a daemon say: when
    ``$LISTEN_PID`` names ``passed_to`` (the process systemd started), it is
    rewritten to this process's PID, as systemd would have set it had it
    started this process, so that :func:`listen_sockets` here takes them.
    ``$LISTEN_FDS`` and ``$LISTEN_FDNAMES`` stay as they are.

    Args:
        passed_to: The PID the sockets were passed to.

    Returns:
        The descriptors claimed (3, 4, ...); empty when ``$LISTEN_PID`` names
        another process or the variables are missing or invalid.
    """
    count = os.environ.get("LISTEN_FDS", "")
    if os.environ.get("LISTEN_PID") != str(passed_to) or not (count.isascii() and count.isdigit()):
        return []
    os.environ["LISTEN_PID"] = str(os.getpid())
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))

"""Console commands about the running app: ``stats``, ``top``, ``lag``, ``stack``.

And ``bus``. All of them read from the console's thread: counters, the lag probe's
samples, frame objects. None of them needs the app's loop to answer, which
is the point: they work while it is blocked, and ``stack`` shows where.
"""

from __future__ import annotations

import enum
import time
from typing import Any

from ..kernel.frames import thread_frames
from .commands import (
    Command,
    CommandError,
    Context,
    Terminal,
    parse_options,
    plural,
)
from .render import (
    _PROCESS_HEADERS,
    clip,
    fit,
    format_age,
    format_ms,
    format_stack,
    process_row,
    table,
    to_json,
)

__all__ = ["diagnostic_commands"]

_WINDOWS = (1.0, 10.0, 60.0)
_TOP_INTERVAL = 1.0
_TOP_ROWS = 15
#: Frames ``stack`` shows unless told (the innermost ones).
_STACK_FRAMES = 50


def _user_lines(counters: dict[str, Any]) -> list[str]:
    """The user statistics (``inc``) of the counters: the app's, then each kind's."""
    found = [("user", counters.get("user"))]
    found += [(f"user ({kind})", k.get("user")) for kind, k in sorted(counters["kinds"].items())]
    return [
        f"{label}: " + ", ".join(f"{name} {n:g}" for name, n in sorted(counts.items()))
        for label, counts in found
        if counts
    ]


class _Diagnostics:
    def __init__(self, context: Context) -> None:
        self.context = context

    # -- stats ----------------------------------------------------------------------

    def _stats(self) -> dict[str, Any]:
        counters = self.context.manager.counters
        apploop = self.context.apploop
        rates = {}
        for window in _WINDOWS:
            rate = apploop.rates(window)
            if rate is not None:
                rates[f"{window:g}s"] = {"started": rate[0], "exited": rate[1]}
        lag_max, lag_mean, _ = apploop.lag_stats(10.0)
        return {
            "counters": counters,
            "rates": rates,
            "lag": {"now": self._lag_now(), "max_10s": lag_max, "mean_10s": lag_mean},
            "console": {
                "uptime": time.monotonic() - self.context.started,
                "sessions": self.context.sessions(),
            },
        }

    def _lag_now(self) -> float:
        apploop = self.context.apploop
        blocked = apploop.blocked_for
        lags = list(apploop.lags)
        last = lags[-1][1] if lags else 0.0
        return max(blocked, last) if blocked > apploop.probe_interval else last

    def _format_stats(self, stats: dict[str, Any]) -> str:
        c = stats["counters"]
        lines = [
            f"processes: {c['running']} running; {c['started']} started, {c['exited']} exited "
            f"({c['killed']} killed, {c['failed']} failed)"
        ]
        rates = stats["rates"]
        if rates:
            header = "rates /s " + "".join(f"{w:>10}" for w in rates)
            started = "  started" + "".join(f"{r['started']:>10.1f}" for r in rates.values())
            exited = "  exited " + "".join(f"{r['exited']:>10.1f}" for r in rates.values())
            lines += [header, started, exited]
        kinds = c["kinds"]
        if kinds:
            rows = (
                (
                    kind,
                    *(str(k[f]) for f in ("running", "started", "exited", "killed", "failed")),
                )
                for kind, k in sorted(kinds.items())
            )
            headers = ("KIND", "RUNNING", "STARTED", "EXITED", "KILLED", "FAILED")
            lines.append(table(headers, rows, right=0))
        lines += _user_lines(c)
        lag = stats["lag"]
        console = stats["console"]
        lines.append(
            f"app loop lag: {format_ms(lag['now'])} now, {format_ms(lag['max_10s'])} max in 10 s"
        )
        lines.append(
            f"console: up {format_age(console['uptime'])}, "
            f"{plural(console['sessions'], 'session')} open"
        )
        return "\n".join(lines)

    async def stats(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, {"--json": bool})
        if positional:
            raise CommandError("usage: stats [--json]")
        stats = self._stats()
        return to_json(stats) if opts.get("--json") else self._format_stats(stats)

    # -- top -------------------------------------------------------------------------

    def _top_screen(self, width: int) -> str:
        stats = self._stats()
        procs = self.context.manager.processes()
        now = time.time()
        newest = procs[-_TOP_ROWS:][::-1]
        clock = time.strftime("%H:%M:%S")
        lines = [
            f"archangel top  {clock}  (any key leaves)",
            "",
            self._format_stats(stats),
            "",
            f"newest of {len(procs)} running:",
            (
                table(_PROCESS_HEADERS, fit(_PROCESS_HEADERS, rows, width))
                if (rows := [process_row(p, now) for p in newest])
                else "-"
            ),
        ]
        return "\n".join(clip(line, width) if "\n" not in line else line for line in lines)

    async def top(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, {"--interval": float}, {"-i": "--interval"})
        if positional:
            raise CommandError("usage: top [-i SECONDS]")
        interval = max(0.2, opts.get("--interval", _TOP_INTERVAL))
        while True:
            await terminal.show("\x1b[H\x1b[2J" + self._top_screen(terminal.width) + "\n")
            if await terminal.key(interval):
                return ""

    # -- lag -------------------------------------------------------------------------

    async def lag(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, {"--json": bool})
        if positional:
            raise CommandError("usage: lag [--json]")
        apploop = self.context.apploop
        windows = {f"{w:g}s": apploop.lag_stats(w) for w in (10.0, 60.0, 120.0)}
        blocked = apploop.blocked_for
        lags = list(apploop.lags)
        last = lags[-1][1] if lags else None
        if opts.get("--json"):
            return to_json(
                {
                    "last": last,
                    "blocked_for": blocked,
                    "windows": {
                        k: {"max": v[0], "mean": v[1], "samples": v[2]} for k, v in windows.items()
                    },
                    "probe_interval": apploop.probe_interval,
                }
            )
        lines = [
            f"last probe: {format_ms(last) if last is not None else '-'} "
            f"(a callback scheduled every {apploop.probe_interval:g} s)"
        ]
        if blocked > apploop.probe_interval:
            lines.append(
                f"the app loop is BLOCKED: no answer for {format_ms(blocked)}; see 'stack'"
            )
        for name, (high, mean, count) in windows.items():
            if count:
                lines.append(
                    f"last {name:>4}: max {format_ms(high)}, mean {format_ms(mean)}"
                    f" ({count} probes)"
                )
        return "\n".join(lines)

    # -- stack -------------------------------------------------------------------

    async def stack(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, {"--limit": int}, {"-l": "--limit"})
        if positional:
            raise CommandError("usage: stack [-l FRAMES]")
        limit = opts.get("--limit", _STACK_FRAMES)
        if limit < 1:
            raise CommandError(
                f"-l is how many frames to show, innermost first: 1 or more, not {limit}"
            )
        thread_id = self.context.apploop.thread_id
        if thread_id is None:
            return "the app loop's thread is not known yet (the loop has not run since start)"
        frames = thread_frames(thread_id)
        if not frames:
            return f"the app loop's thread ({thread_id}) has no stack: it has ended"
        blocked = self.context.apploop.blocked_for
        state = (
            f"BLOCKED for {format_ms(blocked)}"
            if blocked > self.context.apploop.probe_interval
            else "answering"
        )
        head = f"app loop thread {thread_id} ({state}), innermost call last:"
        return head + "\n" + format_stack(frames, limit)

    # -- bus -------------------------------------------------------------------------

    async def bus(self, args: list[str], terminal: Terminal) -> str:
        if args:
            raise CommandError("usage: bus")
        app = self.context.require_app("bus")
        bus = getattr(app, "bus", None)
        if bus is None:
            return "the app has no bus"
        # Read from this thread: ``channels`` copies the bus's table in one C
        # call, ``subscribers()`` is a dict lookup; a race shows a moment-old view.
        state = bus.state
        lines = [f"state: {getattr(state, 'name', state)}"]
        if bus.error is not None:
            lines.append(f"last failed transition: {clip(str(bus.error), 200)}")
        rows = []
        for channel in bus.channels:
            callbacks = bus.subscribers(channel)
            names = ", ".join(_callable_name(callback) for callback in callbacks)
            rows.append((_channel_name(channel), str(len(callbacks)), clip(names, 120)))
        if not rows:
            lines.append("no subscribers")
        else:
            headers = ("CHANNEL", "COUNT", "SUBSCRIBERS (in the order they run)")
            lines.append(table(headers, rows, right=0))
        return "\n".join(lines)


def _channel_name(channel: Any) -> str:
    return channel.name if isinstance(channel, enum.Enum) else clip(str(channel), 40)


def _callable_name(callback: Any) -> str:
    name = getattr(callback, "__qualname__", None)
    if isinstance(name, str):
        return name
    inner = getattr(callback, "func", None)  # functools.partial
    if inner is not None and inner is not callback:
        return f"{_callable_name(inner)} (partial)"
    return f"a {type(callback).__name__} object"


def diagnostic_commands(context: Context) -> list[Command]:
    """The diagnostic commands, bound to ``context``."""
    diagnostics = _Diagnostics(context)
    return [
        Command("stats", diagnostics.stats, "stats [--json]", "counters by kind, rates, loop lag"),
        Command(
            "top", diagnostics.top, "top [-i SECONDS]", "a refreshing overview; any key leaves"
        ),
        Command("lag", diagnostics.lag, "lag [--json]", "the app loop's current and recent lag"),
        Command(
            "stack",
            diagnostics.stack,
            "stack [-l FRAMES]",
            "where the app loop's thread is right now (works while it is blocked)",
            f"-l FRAMES: how many of the innermost frames to show (default {_STACK_FRAMES},\n"
            "1 or more); the outer ones left out are counted.",
        ),
        Command("bus", diagnostics.bus, "bus", "the app bus's state, channels and subscribers"),
    ]

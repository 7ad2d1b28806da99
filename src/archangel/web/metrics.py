"""Prometheus metrics: a collector that reads archangel's counters when scraped.

:class:`Collector` is a ``prometheus_client`` custom collector: nothing is
counted for it on the app's hot path. At each scrape it reads, from the
web's thread, what the parts already count — the manager's per-kind
counters, the history's length, each pipeline's and cog's counters, each
supervisor's restarts, the App's lifecycle state and its reload and dump
counts, the messages its bus published on each channel, the users' own
statistics (``inc``) — and the lag probe's figures. The one metric that is
fed as it goes is the lag histogram, and it is fed on the web's thread by
:class:`~archangel.web.watch.LoopWatch`, not on the app's loop.

A pipeline's counters are its own, so they would go when it ends and the
totals would drop (a counter that goes down reads as a reset). The collector
keeps, between scrapes, the pipelines it saw running; once one has ended, its
final counters are added to its name's ``pid="ended"`` series, which only
grows. A pipeline that starts and ends between two scrapes is never seen:
its items count nowhere here (the runlog has them).

:func:`registry` builds one ``CollectorRegistry`` per web server (never the
global one: two apps in a process never share a metric). The names follow
the Prometheus conventions: ``archangel_`` prefix, ``_total`` on counters,
base units (``_seconds``). ``docs/web.rst`` lists every family; a test
holds :data:`FAMILIES` and the page to each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)

from ..console.apploop import AppLoop
from ..kernel.manager import ProcessManager
from ..kernel.process import Process
from .target import app_counts, lifecycle
from .watch import LoopWatch

__all__ = ["ENDED", "FAMILIES", "LAG_BUCKETS", "Collector", "registry"]

#: Buckets of the lag histogram in seconds (a healthy loop answers in well
#: under a millisecond, a blocked one in seconds).
LAG_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip

_KIND_COUNTERS = ("started", "exited", "killed", "failed")
_PIPELINE_COUNTERS = ("in", "out", "swallowed", "failed", "dropped")
_COG_COUNTERS = ("in", "out", "swallowed", "failed", "dropped")
#: The ``pid`` label of the series that sum the final counters of ended pipelines.
ENDED = "ended"

#: Every family the web's registry exposes (besides ``process_*``): name as
#: exposed -> (type, labels). The metric docs are in :meth:`Collector.collect`.
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "archangel_app": ("info", ("app",)),
    "archangel_processes_running": ("gauge", ("kind",)),
    **{f"archangel_processes_{c}": ("counter", ("kind",)) for c in _KIND_COUNTERS},
    "archangel_processes_user": ("counter", ("kind", "name")),
    "archangel_user": ("counter", ("name",)),
    "archangel_history_records": ("gauge", ()),
    **{
        f"archangel_pipeline_items_{c}": ("counter", ("pipeline", "pid"))
        for c in _PIPELINE_COUNTERS
    },
    "archangel_pipeline_items_in_flight": ("gauge", ("pipeline", "pid")),
    **{
        f"archangel_cog_items_{c}": ("counter", ("pipeline", "pid", "cog", "position"))
        for c in _COG_COUNTERS
    },
    "archangel_cog_seconds": ("counter", ("pipeline", "pid", "cog", "position")),
    "archangel_supervisor_restarts": ("counter", ("supervisor", "pid")),
    "archangel_bus_messages": ("counter", ("channel",)),
    "archangel_loop_lag_seconds": ("gauge", ()),
    "archangel_loop_blocked_seconds": ("gauge", ()),
    "archangel_loop_blocks": ("counter", ()),
    "archangel_loop_probe_lag_seconds": ("histogram", ()),
    "archangel_lifecycle_state": ("stateset", ("archangel_lifecycle_state",)),
    "archangel_reloads": ("counter", ()),
    "archangel_dumps": ("counter", ("which",)),
}


class Collector:
    """Reads one manager's (and App's) counters at each scrape.

    Args:
        manager: The manager whose processes are counted.
        app: The App (duck-typed, see :class:`~archangel.web.target.AppLike`), or None.
        watch: The lag watch whose probe gives the loop's lag and blocks.
    """

    def __init__(self, manager: ProcessManager, app: Any, watch: LoopWatch) -> None:
        self.manager = manager
        self.app = app
        self.watch = watch
        # The pipelines running at the last scrape, by PID: kept so that the
        # final counters of one that has ended since can still be read.
        self._running: dict[int, Process] = {}
        # The final counters of ended pipelines, summed per name (and per
        # ``(name, cog, position)``): the ``pid="ended"`` series.
        self._ended: dict[str, dict[str, float]] = {}
        self._ended_cogs: dict[tuple[str, str, str], dict[str, float]] = {}

    def __repr__(self) -> str:
        return f"<web Collector of {self.manager!r}>"

    def describe(self) -> list[Metric]:
        """Nothing: the families depend on what runs, so the registry does not pre-check them."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The families, read now (a scrape calls this on the web's thread)."""
        if self.app is not None:
            info = InfoMetricFamily("archangel_app", "The App this process runs", labels=["app"])
            info.add_metric([str(getattr(self.app, "name", ""))], {})
            yield info
        counters = self.manager.counters
        yield from self._processes(counters)
        yield from self._user(counters)
        yield GaugeMetricFamily(
            "archangel_history_records",
            "Completed processes the manager's history holds now",
            value=len(self.manager.history),
        )
        yield from self._pipelines_and_supervisors()
        yield from self._bus()
        yield from self._loop(self.watch.apploop)
        yield from self._app()

    def _processes(self, counters: dict[str, Any]) -> Iterator[Metric]:
        kinds = counters["kinds"]
        running = GaugeMetricFamily(
            "archangel_processes_running", "Live processes, by kind", labels=["kind"]
        )
        families = {
            c: CounterMetricFamily(
                f"archangel_processes_{c}", f"Processes {c} since start, by kind", labels=["kind"]
            )
            for c in _KIND_COUNTERS
        }
        for kind, counts in sorted(kinds.items()):
            running.add_metric([kind], counts["running"])
            for c, family in families.items():
                family.add_metric([kind], counts[c])
        yield running
        yield from families.values()

    def _user(self, counters: dict[str, Any]) -> Iterator[Metric]:
        # What ``inc`` counted: per kind, the kind's processes' counts (live and
        # exited: the manager keeps them), and the service's own (``App.inc``).
        per_kind = CounterMetricFamily(
            "archangel_processes_user",
            "What processes counted with Process.inc, by kind and name",
            labels=["kind", "name"],
        )
        for kind, counts in sorted(counters["kinds"].items()):
            for name, count in sorted(counts.get("user", {}).items()):
                per_kind.add_metric([kind, name], count)
        own = CounterMetricFamily(
            "archangel_user",
            "What the service counted with App.inc (ProcessManager.inc), by name",
            labels=["name"],
        )
        for name, count in sorted(counters.get("user", {}).items()):
            own.add_metric([name], count)
        yield per_kind
        yield own

    def _bus(self) -> Iterator[Metric]:
        bus = getattr(self.app, "bus", None) if self.app is not None else None
        published = getattr(bus, "published", None)
        if not isinstance(published, dict):
            return
        family = CounterMetricFamily(
            "archangel_bus_messages",
            "Messages published on each channel of the App's bus (states entered included)",
            labels=["channel"],
        )
        by_label: dict[str, int] = {}
        for channel, count in published.items():  # two channels may read the same
            label = str(channel)
            by_label[label] = by_label.get(label, 0) + count
        for label, count in sorted(by_label.items()):
            family.add_metric([label], count)
        yield family

    def _seen(self, pipelines: dict[int, Process]) -> None:
        """Fold the final counters of the pipelines that ended since the last scrape."""
        for pid in self._running.keys() - pipelines.keys():
            process = self._running.pop(pid)
            totals = self._ended.setdefault(process.name, {})
            counters = getattr(process, "counters", {})
            for c in (*_PIPELINE_COUNTERS, "in_flight"):
                totals[c] = totals.get(c, 0) + counters.get(c, 0)
            for position, cog in enumerate(getattr(process, "cog_counters", ())):
                key = (process.name, str(getattr(cog, "name", "?")), str(position))
                cog_totals = self._ended_cogs.setdefault(key, {})
                for c in (*_COG_COUNTERS, "seconds"):
                    cog_totals[c] = cog_totals.get(c, 0) + cog.get(c, 0)
        self._running.update(pipelines)

    def _pipelines_and_supervisors(self) -> Iterator[Metric]:
        pipes = {
            c: CounterMetricFamily(
                f"archangel_pipeline_items_{c}",
                f"Items {c} by each pipeline's train (pid ended: the ended ones of that name)",
                labels=["pipeline", "pid"],
            )
            for c in _PIPELINE_COUNTERS
        }
        in_flight = GaugeMetricFamily(
            "archangel_pipeline_items_in_flight",
            "Items inside each live pipeline's train now",
            labels=["pipeline", "pid"],
        )
        cog_labels = ["pipeline", "pid", "cog", "position"]
        cogs = {
            c: CounterMetricFamily(
                f"archangel_cog_items_{c}",
                f"Items {c} by each cog of a pipeline (pid ended: of the ended ones)",
                labels=cog_labels,
            )
            for c in _COG_COUNTERS
        }
        cog_seconds = CounterMetricFamily(
            "archangel_cog_seconds", "Time spent in each cog of a pipeline", labels=cog_labels
        )
        restarts = CounterMetricFamily(
            "archangel_supervisor_restarts",
            "Restarts made by each live supervisor",
            labels=["supervisor", "pid"],
        )
        # One pass over a snapshot of the live processes: pipelines and
        # supervisors are found by kind, their counters read as they are now.
        pipelines: dict[int, Process] = {}
        for process in self.manager.processes():
            kind = process.kind
            if kind == "pipeline":
                if process.pid is not None:
                    pipelines[process.pid] = process
                labels = [process.name, str(process.pid)]
                counters = getattr(process, "counters", {})
                for c, family in pipes.items():
                    family.add_metric(labels, counters.get(c, 0))
                in_flight.add_metric(labels, counters.get("in_flight", 0))
                for position, cog in enumerate(getattr(process, "cog_counters", ())):
                    cog_label = [*labels, str(getattr(cog, "name", "?")), str(position)]
                    for c, family in cogs.items():
                        family.add_metric(cog_label, cog.get(c, 0))
                    cog_seconds.add_metric(cog_label, cog.get("seconds", 0.0))
            elif kind == "supervisor":
                count = getattr(process, "restarts", None)
                if isinstance(count, int):
                    restarts.add_metric([process.name, str(process.pid)], count)
        self._seen(pipelines)
        for name, totals in sorted(self._ended.items()):
            for c, family in pipes.items():
                family.add_metric([name, ENDED], totals[c])
            in_flight.add_metric([name, ENDED], totals["in_flight"])
        for (name, cog, place), totals in sorted(self._ended_cogs.items()):
            cog_label = [name, ENDED, cog, place]
            for c, family in cogs.items():
                family.add_metric(cog_label, totals[c])
            cog_seconds.add_metric(cog_label, totals["seconds"])
        yield from pipes.values()
        yield in_flight
        yield from cogs.values()
        yield cog_seconds
        yield restarts

    def _loop(self, apploop: AppLoop) -> Iterator[Metric]:
        blocked = apploop.blocked_for
        lags = list(apploop.lags)
        last = lags[-1][1] if lags else 0.0
        # A probe waiting longer than the probe interval is a lag growing now.
        now = max(blocked, last) if blocked > apploop.probe_interval else last
        yield GaugeMetricFamily(
            "archangel_loop_lag_seconds",
            "The app loop's lag now: the last probe's, or how long the waiting one has waited",
            value=now,
        )
        yield GaugeMetricFamily(
            "archangel_loop_blocked_seconds",
            "How long the outstanding lag probe has waited for the app loop (0 if none)",
            value=blocked,
        )
        yield CounterMetricFamily(
            "archangel_loop_blocks",
            "Times the app loop was reported blocked beyond the threshold",
            value=self.watch.blocks,
        )

    def _app(self) -> Iterator[Metric]:
        state, states, _ = lifecycle(self.app)
        if state is not None:
            states_family = StateSetMetricFamily(
                "archangel_lifecycle_state", "The App's lifecycle state (the bus's state)"
            )
            states_family.add_metric([], {name: name == state for name in states})
            yield states_family
        reloads, dumps = app_counts(self.app)
        if reloads is not None:
            yield CounterMetricFamily(
                "archangel_reloads", "Reloads run (SIGHUP, the console's reload)", value=reloads
            )
        if dumps:
            family = CounterMetricFamily(
                "archangel_dumps", "State and runlog dumps written", labels=["which"]
            )
            for which, count in sorted(dumps.items()):
                family.add_metric([which], count)
            yield family


def registry(collector: Collector) -> tuple[CollectorRegistry, Histogram]:
    """A new registry with ``collector``, the lag histogram and the process collector.

    Returns:
        The registry, and the lag histogram the watch feeds.
    """
    result = CollectorRegistry(auto_describe=False)
    result.register(collector)
    histogram = Histogram(
        "archangel_loop_probe_lag_seconds",
        "Lag of each answered probe of the app loop (one every probe interval)",
        buckets=LAG_BUCKETS,
        registry=result,
    )
    ProcessCollector(registry=result)
    return result, histogram

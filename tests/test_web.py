"""The web endpoints end to end: a real App, real HTTP on 127.0.0.1, both loops.

The App runs on the test's loop (asyncio or uvloop); the endpoints answer from
their own thread, so a request made from another thread gets its answer while
the test's loop is blocked on purpose.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from archangel import App, ChildSpec, Pipeline, Process, ProcessManager, State, Supervisor
from archangel.errors import ArchangelError, WebError
from archangel.web import WebServer, probes
from archangel.web.metrics import FAMILIES
from tests.helpers import until

#: How a family of :data:`FAMILIES` reads back in the text format (0.0.4).
_TEXT_TYPE = {"info": "gauge", "stateset": "gauge"}


class Echo(Process, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def get(url: str) -> tuple[int, str]:
    """GET ``url`` (blocking: call it from a thread); ``(status, body)``, errors too."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def get_until(url: str, status: int, timeout: float = 10.0) -> str:
    """GET ``url`` until it answers ``status`` (blocking); its body then."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = get(url)
        if code == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} still answers {code}: {body}")
        time.sleep(0.02)


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    result = {}
    for sample in family.samples:
        assert isinstance(sample, Sample)
        result[sample.name, frozenset(sample.labels.items())] = sample.value
    return result


def value(found: dict[str, Any], name: str, /, **labels: str) -> float:
    """One sample's value: ``name`` is the sample name (``..._total`` for counters)."""
    base = name
    for suffix in ("_total", "_count", "_sum"):
        base = base.removesuffix(suffix)
    family = found[base]
    return samples(family)[name, frozenset(labels.items())]


# -- /metrics ---------------------------------------------------------------------------


async def test_metrics_report_the_counters_after_a_known_workload(running: Any) -> None:
    app = await running(App("metered", web={"port": 0}))
    server = await app.serve(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # Three connections: one closed by its client, one killed, one left open.
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    await until(lambda: len(app.manager) == 3)
    conns[0][1].close()
    await until(lambda: app.manager.counters["exited"] == 1)
    assert app.manager.kill(max(p.pid for p in app.manager.processes() if p.pid is not None))
    await until(lambda: app.manager.counters["kinds"]["conn"]["killed"] == 1)

    attempts: list[int] = []

    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("the first run fails")
        await asyncio.Event().wait()

    supervisor = Supervisor(ChildSpec(flaky, name="flaky"), name="keeper")
    app.manager.spawn(supervisor)
    await until(lambda: supervisor.restarts == 1 and len(attempts) == 2)

    more = asyncio.Event()

    async def numbers() -> AsyncIterator[int]:
        for n in range(10):
            yield n
        await more.wait()

    pipeline = Pipeline(numbers(), lambda n: None if n % 2 else [n], name="evens")
    app.manager.spawn(pipeline)
    await until(lambda: pipeline.counters["in"] == 10 and pipeline.counters["in_flight"] == 0)
    await app.reload()
    await app.dump("runlog")

    status, text = await asyncio.to_thread(get, f"{app.web.url}/metrics")
    assert status == 200
    found = families(text)
    for name, (kind, labels) in FAMILIES.items():
        exposed = name + "_info" if kind == "info" else name
        assert exposed in found, name
        assert found[exposed].type == _TEXT_TYPE.get(kind, kind), name
        for sample in found[exposed].samples:
            if not sample.name.endswith(("_bucket", "_created")):
                assert set(sample.labels) == set(labels), (name, sample)
    counters = app.manager.counters
    for kind, counts in counters["kinds"].items():
        assert value(found, "archangel_processes_running", kind=kind) == counts["running"]
        for c in ("started", "exited", "killed", "failed"):
            assert value(found, f"archangel_processes_{c}_total", kind=kind) == counts[c]
    assert counters["kinds"]["conn"] == {
        "started": 3,
        "exited": 2,
        "killed": 1,
        "failed": 0,
        "running": 1,
    }
    assert counters["kinds"]["task"]["failed"] == 1  # the supervisor's first child
    assert value(found, "archangel_history_records") == len(app.manager.history)
    assert value(found, "archangel_history_records") >= 3
    pipe = {"pipeline": "evens", "pid": str(pipeline.pid)}
    assert value(found, "archangel_pipeline_items_in_total", **pipe) == 10
    assert value(found, "archangel_pipeline_items_out_total", **pipe) == 5
    assert value(found, "archangel_pipeline_items_swallowed_total", **pipe) == 5
    assert value(found, "archangel_pipeline_items_in_flight", **pipe) == 0
    cog = {**pipe, "cog": pipeline.cog_counters[0].name, "position": "0"}
    assert value(found, "archangel_cog_items_in_total", **cog) == 10
    assert value(found, "archangel_cog_items_swallowed_total", **cog) == 5
    seconds = pipeline.cog_counters[0]["seconds"]
    assert value(found, "archangel_cog_seconds_total", **cog) == seconds
    sup = {"supervisor": "keeper", "pid": str(supervisor.pid)}
    assert value(found, "archangel_supervisor_restarts_total", **sup) == 1
    assert value(found, "archangel_reloads_total") == 1
    assert value(found, "archangel_dumps_total", which="runlog") == 1
    assert value(found, "archangel_dumps_total", which="state") == 0
    state = {"archangel_lifecycle_state": "RUN"}
    assert value(found, "archangel_lifecycle_state", **state) == 1
    assert sum(samples(found["archangel_lifecycle_state"]).values()) == 1
    assert value(found, "archangel_app_info", app="metered") == 1
    assert value(found, "archangel_loop_lag_seconds") >= 0
    assert value(found, "archangel_loop_blocks_total") == 0
    assert "process_open_fds" in found  # the process collector, in this server's registry
    for _, writer in conns:
        writer.close()
    more.set()


class CountingEcho(Process, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self.inc("bytes", len(data))
        self.transport.write(data)


async def scrape(app: App) -> dict[str, Any]:
    status, text = await asyncio.to_thread(get, f"{app.web.url}/metrics")
    assert status == 200
    return families(text)


async def test_metrics_keep_ended_pipelines_and_report_user_statistics_and_bus_messages(
    running: Any,
) -> None:
    app = await running(App("counted", web={"port": 0}))
    server = await app.serve(CountingEcho, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for payload in (b"abc", b"defgh"):  # each connection counts its bytes, then ends
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        assert await reader.readexactly(len(payload)) == payload
        writer.close()
    await until(lambda: app.manager.counters["kinds"]["conn"]["exited"] == 2)
    app.inc("requests", 3)
    app.inc("requests")
    await app.reload()

    ends: list[asyncio.Event] = []
    seconds = 0.0

    async def batch() -> AsyncIterator[int]:
        for n in range(4):
            yield n
        ends.append(asyncio.Event())
        await ends[-1].wait()

    for run in (1, 2):
        pipeline = Pipeline(batch(), lambda n: None if n % 2 else [n], name="batch")
        app.manager.spawn(pipeline)
        counters = pipeline.counters
        await until(lambda: len(ends) == run and counters["in_flight"] == 0)  # noqa: B023
        live = {"pipeline": "batch", "pid": str(pipeline.pid)}
        found = await scrape(app)  # the pipeline is seen running
        assert value(found, "archangel_pipeline_items_in_total", **live) == 4
        ends[-1].set()
        pid = pipeline.pid
        await until(lambda: pid not in app.manager)  # noqa: B023
        found = await scrape(app)
        # Its series goes with it; its counts stay in the name's ended series.
        assert ("archangel_pipeline_items_in_total", frozenset(live.items())) not in samples(
            found["archangel_pipeline_items_in"]
        )
        ended = {"pipeline": "batch", "pid": "ended"}
        assert value(found, "archangel_pipeline_items_in_total", **ended) == 4 * run
        assert value(found, "archangel_pipeline_items_out_total", **ended) == 2 * run
        assert value(found, "archangel_pipeline_items_swallowed_total", **ended) == 2 * run
        assert value(found, "archangel_pipeline_items_in_flight", **ended) == 0
        cog = {**ended, "cog": pipeline.cog_counters[0].name, "position": "0"}
        assert value(found, "archangel_cog_items_in_total", **cog) == 4 * run
        seconds += pipeline.cog_counters[0]["seconds"]
        assert value(found, "archangel_cog_seconds_total", **cog) == seconds

    for name, (kind, labels) in FAMILIES.items():
        for sample in found[name + "_info" if kind == "info" else name].samples:
            if not sample.name.endswith(("_bucket", "_created")):
                assert set(sample.labels) == set(labels), (name, sample)
    assert value(found, "archangel_processes_user_total", kind="conn", name="bytes") == 8
    assert app.manager.counters["kinds"]["conn"]["user"] == {"bytes": 8}
    assert samples(found["archangel_user"]) == {
        ("archangel_user_total", frozenset({("name", "requests")})): 4
    }
    assert app.bus.published[State.RUN] == 1
    assert app.bus.published["reload"] == 1
    await app.bus.publish("State.RUN")  # a channel that reads as the state's: one series
    found = await scrape(app)
    published: dict[str, int] = {}
    for channel, count in app.bus.published.items():
        published[str(channel)] = published.get(str(channel), 0) + count
    assert published["State.RUN"] == 2
    for channel, count in published.items():
        assert value(found, "archangel_bus_messages_total", channel=channel) == count
    assert len(samples(found["archangel_bus_messages"])) == len(published)


async def test_the_lag_histogram_is_fed_by_the_probe(running: Any) -> None:
    app = await running(App("lagged", web={"port": 0, "probe_interval": 0.05}))
    counts: list[float] = []

    async def observed() -> bool:
        _, text = await asyncio.to_thread(get, f"{app.web.url}/metrics")
        found = families(text)
        counts.append(value(found, "archangel_loop_probe_lag_seconds_count"))
        return counts[-1] >= 3

    async with asyncio.timeout(10):
        while not await observed():
            await asyncio.sleep(0.05)
    # Every answered probe is observed once: the count only grows.
    assert counts == sorted(counts)


async def test_two_web_servers_never_share_a_metric() -> None:
    one, two = ProcessManager(), ProcessManager()
    two.spawn(asyncio.sleep(3600))
    with WebServer(one) as first, WebServer(two) as second:
        texts = await asyncio.gather(
            asyncio.to_thread(get, f"{first.url}/metrics"),
            asyncio.to_thread(get, f"{second.url}/metrics"),
        )
    found_one, found_two = (families(text) for _, text in texts)
    assert samples(found_one["archangel_processes_running"]) == {}
    assert value(found_two, "archangel_processes_running", kind="task") == 1
    assert "archangel_lifecycle_state" not in found_one  # a bare manager has no lifecycle
    two.killall()
    await until(lambda: not two)


async def test_the_index_lists_the_endpoints_and_no_token(running: Any) -> None:
    app = await running(App("indexed", web={"port": 0, "token": "s3cret-token"}))
    status, text = await asyncio.to_thread(get, f"{app.web.url}/")
    assert status == 200
    assert all(path in text for path in ("/metrics", "/livez", "/readyz"))
    _, metrics = await asyncio.to_thread(get, f"{app.web.url}/metrics")
    for shown in (text, metrics, repr(app.web), repr(app)):
        assert "s3cret-token" not in shown


async def test_the_web_thread_gives_the_gil_up_every_millisecond_while_it_serves() -> None:
    from archangel.console.fairness import _GIL_SLICE

    before = sys.getswitchinterval()
    assert before > _GIL_SLICE  # the interpreter's default, 5 ms
    with WebServer(ProcessManager()) as server:
        # Held from the start, not per request: a scrape's first wait counts too.
        assert sys.getswitchinterval() == _GIL_SLICE
        assert (await asyncio.to_thread(get, f"{server.url}/metrics"))[0] == 200
        assert sys.getswitchinterval() == _GIL_SLICE
    await until(lambda: sys.getswitchinterval() == before)


# -- /livez and the blocked-loop warning ----------------------------------------------------


def block_the_loop(released: threading.Event) -> None:
    while not released.is_set():
        time.sleep(0.01)  # the blocking line the warning must name


async def block_while(url: str, operator: Any) -> dict[str, Any]:
    """Block the test's loop until ``operator(url, results)`` (on a thread) returns."""
    released = threading.Event()
    results: dict[str, Any] = {}

    def run_operator() -> None:
        try:
            operator(url, results)
        finally:
            released.set()

    thread = threading.Thread(target=run_operator)
    thread.start()
    asyncio.get_running_loop().call_soon(block_the_loop, released)
    await asyncio.sleep(0)  # the loop blocks here until the operator is done
    await asyncio.to_thread(thread.join)
    return results


def during_the_block(url: str, results: dict[str, Any]) -> None:
    results["livez"] = get_until(f"{url}/livez", 503)
    results["metrics"] = get(f"{url}/metrics")
    results["readyz"] = get(f"{url}/readyz")


async def test_livez_fails_while_the_loop_is_blocked_and_the_block_is_logged_once(
    running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="archangel.web")
    web = {"port": 0, "block_threshold": 0.2, "live_threshold": 0.3, "probe_interval": 0.05}
    app = await running(App("blocky", web=web))
    url = app.web.url
    status, text = await asyncio.to_thread(get, f"{url}/livez")
    assert (status, text.split(":")[0]) == (200, "live")

    results = await block_while(url, during_the_block)
    assert results["livez"].startswith("not live: the app loop has been blocked for ")
    assert "(more than 0.3 s)" in results["livez"]
    status, text = results["metrics"]
    assert status == 200  # /metrics still answers while the loop is blocked
    assert value(families(text), "archangel_loop_blocked_seconds") > 0.3
    assert value(families(text), "archangel_loop_blocks_total") == 1
    assert results["readyz"][0] == 200  # blocked is not stopping

    await until(lambda: any("answers again" in r.getMessage() for r in caplog.records))
    blocked = [r for r in caplog.records if "the app loop is blocked" in r.getMessage()]
    assert len(blocked) == 1, [r.getMessage() for r in caplog.records]
    assert blocked[0].levelno == logging.WARNING
    assert "in block_the_loop" in blocked[0].getMessage()
    assert "time.sleep(0.01)  # the blocking line" in blocked[0].getMessage()
    ended = [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
    assert len(ended) == 1
    assert ended[0].startswith("the app loop answers again: it was blocked for")
    await asyncio.to_thread(get_until, f"{url}/livez", 200)


async def test_the_block_warning_can_be_switched_off(
    running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="archangel.web")
    web = {"port": 0, "block_threshold": None, "live_threshold": 0.2, "probe_interval": 0.05}
    app = await running(App("quiet", web=web))
    results = await block_while(app.web.url, during_the_block)
    assert results["livez"].startswith("not live")
    await asyncio.to_thread(get_until, f"{app.web.url}/livez", 200)
    assert [r for r in caplog.records if r.name.startswith("archangel.web")] == []


# -- /readyz ----------------------------------------------------------------------------


async def test_readyz_turns_unready_when_a_stop_begins_while_a_connection_drains() -> None:
    app = App("draining", web={"port": 0})
    arrived, released = asyncio.Event(), asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(100)
        arrived.set()
        await reader.read()  # end of file: the graceful stop
        await released.wait()
        writer.write(b"bye:" + data)
        await writer.drain()

    @app.bus.on(State.START)
    async def bind() -> None:
        await app.serve_streams(slow, "127.0.0.1", 0)

    task = asyncio.ensure_future(app.main())
    await app.bus.wait(State.RUN, State.EXITED)
    url = app.web.url
    assert await asyncio.to_thread(get, f"{url}/readyz") == (200, "ready: state RUN\n")
    reader, writer = await asyncio.open_connection(*app.addresses[0][:2])
    writer.write(b"hi")
    await arrived.wait()

    app.request_stop()
    body = await asyncio.to_thread(get_until, f"{url}/readyz", 503)
    assert body.startswith("not ready: stopping")
    await until(lambda: app.bus.state is State.STOP)
    assert not task.done()  # the connection still drains
    status, text = await asyncio.to_thread(get, f"{url}/metrics")
    assert status == 200
    assert value(families(text), "archangel_lifecycle_state", archangel_lifecycle_state="STOP")
    assert (await asyncio.to_thread(get, f"{url}/livez"))[0] == 200
    released.set()
    assert await reader.read() == b"bye:hi"  # the in-flight work completed
    writer.close()
    assert await task == 0
    assert app.web.address is not None
    with pytest.raises(OSError):  # closed with the app, at EXIT
        await asyncio.to_thread(urllib.request.urlopen, f"{url}/readyz", timeout=5)


# -- settings --------------------------------------------------------------------------------


def test_a_non_loopback_address_needs_a_token() -> None:
    with pytest.raises(WebError) as caught:
        App("open", web={"host": "0.0.0.0", "port": 9100})
    assert isinstance(caught.value, ArchangelError)
    assert "web server on 0.0.0.0:9100 would be reachable from other hosts" in str(caught.value)
    assert "a token is required" in str(caught.value)
    App("guarded", web={"host": "0.0.0.0", "port": 9100, "token": "t"})  # made, not started


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": 70000}, "web server port must be 0..65535, not 70000"),
        ({"token": " padded "}, "web token must be a non-empty line without outer spaces"),
        ({"block_threshold": 0}, "web block_threshold must be > 0 or None, not 0"),
        ({"live_threshold": -1}, "web live_threshold and probe_interval must be positive"),
    ],
)
def test_bad_settings_are_refused_when_the_app_is_made(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(WebError, match=message):
        App("bad", web=options)


def test_readiness_before_the_app_runs_and_for_a_bare_manager() -> None:
    assert probes.ready(App("idle")) == (False, "not ready: state INITIAL, ready only in RUN")
    assert probes.ready(None) == (True, "ready: a manager without a lifecycle")


def test_a_missing_extra_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['aiohttp'] = None\n"  # as if aiohttp were not installed
        "from archangel import App\n"
        "App('no-extra', web=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("archangel.errors.WebError: archangel's web endpoints need aiohttp")
    assert last.endswith("pip install 'archangel-asyncio[web]'")


async def test_a_port_in_use_is_a_loud_error_naming_the_address() -> None:
    with WebServer(ProcessManager()) as first:
        assert first.address is not None
        port = first.address[1]
        second = WebServer(ProcessManager(), port=port)
        with pytest.raises(WebError, match=f"web server cannot listen on 127.0.0.1:{port}"):
            second.start()
        with pytest.raises(WebError, match="has already been started"):
            second.start()


# -- the documentation ------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "web.rst"


def _exposed(name: str, kind: str) -> str:
    return name + {"counter": "_total", "info": "_info"}.get(kind, "")


def test_the_page_lists_every_family_with_its_type_and_labels() -> None:
    page = DOCS.read_text()
    rows = re.findall(r"   \* - ``(archangel_\w+)``\n     - (\w+)\n     -(.*)\n", page)
    documented = {
        name: (kind, tuple(re.findall(r"``(\w+)``", labels))) for name, kind, labels in rows
    }
    exposed = {_exposed(name, kind): (kind, labels) for name, (kind, labels) in FAMILIES.items()}
    assert documented == exposed


def test_the_documented_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    page = DOCS.read_text()
    blocks = re.findall(r"\.\. code-block:: (\w+)\n\n((?:(?:    .*)?\n)+)", page)
    code = next(body for kind, body in blocks if kind == "python" and "app.run()" in body)
    output = next(body for kind, body in blocks if kind == "text")
    exec(compile(textwrap.dedent(code), "docs/web.rst", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out == textwrap.dedent(output).strip() + "\n"


def test_the_page_shows_the_dashboards_screenshots_and_they_stay_small() -> None:
    images = re.findall(r"^\.\. image:: (\S+)$", DOCS.read_text(), re.M)
    assert {"_static/dashboard.png", "_static/dashboard-blocked.png"} <= set(images)
    for image in images:
        path = DOCS.parent / image
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
        assert path.stat().st_size < 200_000, image  # docs/_tools/screenshots.py's window

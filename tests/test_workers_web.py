"""``App(web=...)`` under ``archangel run --workers 2``: the web side on the master.

Each test runs the master in a child process (web on port 0), finds its
web server's address in its log and asks it over real HTTP, as Prometheus
or the kubelet would. Each worker runs one task process named ``sleeper``.
Waits are bounded polls.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import stat
import textwrap
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.browser_helpers import Browser
from workers_helpers import Master, wait_for

SERVICE = textwrap.dedent(
    """
    import asyncio
    from archangel import App, State

    app = App("web-workers", shutdown_timeout=10, web={"port": 0})

    async def sleeper():
        await asyncio.sleep(3600)

    @app.bus.on(State.START)
    async def start():
        app.manager.spawn(sleeper(), name="sleeper")

    @app.bus.on(State.STOP)
    async def slow_stop():
        await asyncio.sleep(2)
    """
)


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Callable[..., Master]]:
    made: list[Master] = []

    def make(
        workers: int = 2, loop: str = "asyncio", port: int = 0, token: str | None = None
    ) -> Master:
        web = f'"port": {port}' + (f', "token": {token!r}' if token else "")
        service = SERVICE.replace('web={"port": 0}', f"web={{{web}}}")
        made.append(Master(tmp_path, workers, loop, service))
        return made[-1]

    yield make
    for m in made:
        m.close()


def url(m: Master) -> str:
    pattern = rf"^\S+ \S+ {m.proc.pid} .*metrics and probes on (http://\S+)"
    wait_for(lambda: m.logged(pattern), 10)
    found = re.search(pattern, m.logged(pattern)[0])
    assert found is not None
    return found.group(1)


def get(address: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(address, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def ask(
    address: str, method: str = "GET", body: Any = None, **headers: str
) -> tuple[int, Message, Any]:
    """One request (header ``X_CSRF_Token`` is ``X-CSRF-Token``); a JSON body is parsed."""
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(address, data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            status, got, text = response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            status, got, text = exc.code, exc.headers, exc.read().decode()
    is_json = got.get("Content-Type", "").startswith("application/json")
    return status, got, json.loads(text) if is_json else text


def families(text: str) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    return {
        f.name: (f.type, [(s.name, s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(text)
    }


def up(text: str) -> dict[str, float]:
    samples = families(text)["archangel_worker_up"][1]
    return {labels["worker"]: value for _, labels, value in samples}


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_master_serves_every_workers_metrics(master: Callable[..., Master], loop: str) -> None:
    m = master(2, loop)
    first, second = m.ready(2)
    base = url(m)
    status, text = get(base + "/metrics")
    assert status == 200
    found = families(text)
    assert up(text) == {"1": 1.0, "2": 1.0}
    running = found["archangel_processes_running"]
    assert running[0] == "gauge"
    by_worker = {(lab["worker"], lab["worker_pid"]): v for _, lab, v in running[1]}
    assert by_worker == {("1", str(first)): 1.0, ("2", str(second)): 1.0}
    assert found["archangel_processes_started"][0] == "counter"
    assert found["archangel_loop_probe_lag_seconds"][0] == "histogram"
    assert found["archangel_workers"][0] == "gauge"
    assert {lab["state"]: v for _, lab, v in found["archangel_workers"][1]}["ready"] == 2.0
    assert found["archangel_worker_restarts"][0] == "counter"
    assert {lab["worker"] for _, lab, _ in found["process_cpu_seconds"][1]} >= {"1", "2", "master"}
    # Both workers came up once: no respawn loop on the web port.
    assert not m.logged("respawning|address already in use|giving up")
    assert get(base + "/readyz")[0] == 200
    assert get(base + "/livez")[0] == 200
    status, page = get(base + "/")
    assert status == 200 and str(first) in page and str(second) in page


def test_the_workers_web_servers_are_private_unix_sockets(master: Callable[..., Master]) -> None:
    m = master(2)
    pids = m.ready(2)
    url(m)
    pattern = r"metrics and probes on unix:(\S+)"
    wait_for(lambda: len(m.logged(pattern)) >= 2, 10)
    paths = []
    for line in m.logged(pattern):
        found = re.search(pattern, line)
        assert found is not None
        paths.append(found.group(1))
    assert sorted(os.path.basename(p) for p in paths) == sorted(f"{pid}.web.sock" for pid in pids)
    directory = os.path.dirname(paths[0])
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for path in paths:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_a_stopped_worker_is_down_and_the_scrape_still_answers(
    master: Callable[..., Master],
) -> None:
    m = master(2)
    first, _ = m.ready(2)
    base = url(m)
    assert up(get(base + "/metrics")[1]) == {"1": 1.0, "2": 1.0}
    os.kill(first, signal.SIGSTOP)
    try:
        status, text = get(base + "/metrics", timeout=5)  # within the worker timeout (1.5 s)
        assert status == 200
        assert up(text) == {"1": 0.0, "2": 1.0}
        running = families(text)["archangel_processes_running"][1]
        assert {lab["worker"] for _, lab, _ in running} == {"2"}
    finally:
        os.kill(first, signal.SIGCONT)
    wait_for(lambda: up(get(base + "/metrics")[1]) == {"1": 1.0, "2": 1.0}, 10)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_readyz_turns_unready_as_the_master_stops(
    master: Callable[..., Master], loop: str
) -> None:
    m = master(2, loop)
    m.ready(2)
    base = url(m)
    assert get(base + "/readyz") == (200, "ready: 2 workers ready\n")
    m.proc.send_signal(signal.SIGTERM)
    # The workers take 2 s to stop: the master's server answers all along, unready.
    wait_for(lambda: get(base + "/readyz")[0] == 503, 5)
    assert get(base + "/livez")[0] == 200
    assert m.proc.wait(20) == 0


def listening_inodes(port: int) -> set[str]:
    """The inodes of the sockets listening on 127.0.0.1:``port``, from ``/proc/net/tcp``."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return {row[9] for row in rows if row[1] == f"0100007F:{port:04X}" and row[3] == "0A"}


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            found.add(link[8:-1])
    return found


def test_a_fixed_web_port_is_the_masters_alone(master: Callable[..., Master]) -> None:
    with socket.socket() as probe:  # a free port, as an operator's 9100 would be
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    m = master(2, "asyncio", port)
    workers = m.ready(2)
    assert url(m) == f"http://127.0.0.1:{port}"
    assert get(f"http://127.0.0.1:{port}/readyz") == (200, "ready: 2 workers ready\n")
    assert not m.logged("respawning|address already in use|giving up")
    listening = listening_inodes(port)
    assert listening and listening <= socket_inodes(m.proc.pid)
    for pid in workers:  # the fork copied the master's socket: each worker closed it
        assert not listening & socket_inodes(pid)


def test_a_killed_worker_is_counted_and_its_successor_scraped(
    master: Callable[..., Master],
) -> None:
    m = master(2)
    first, second = m.ready(2)
    base = url(m)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: len(m.logged(r"worker \d+ \(place 1\) ready")) >= 2, 15)
    wait_for(lambda: get(base + "/readyz")[0] == 200, 10)
    wait_for(lambda: up(get(base + "/metrics")[1]) == {"1": 1.0, "2": 1.0}, 10)
    found = families(get(base + "/metrics")[1])
    restarts = {lab["worker"]: v for _, lab, v in found["archangel_worker_restarts"][1]}
    assert restarts == {"1": 1.0, "2": 0.0}
    pids = {lab["worker_pid"] for _, lab, _ in found["archangel_worker_up"][1]}
    assert str(first) not in pids and str(second) in pids


# -- each worker's dashboard, through the master -----------------------------------------------


def sleepers(base: str, place: int) -> list[dict[str, Any]]:
    status, _, page = ask(f"{base}/workers/{place}/api/processes?name=sleeper")
    assert status == 200, page
    return list(page["processes"])


async def first_live_message(address: str, origin: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(address, headers={"Origin": origin}) as socket,
    ):
        message = await asyncio.wait_for(socket.receive(), 10)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        return dict(json.loads(message.data))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_each_workers_dashboard_is_reached_through_the_master(
    master: Callable[..., Master], loop: str
) -> None:
    m = master(2, loop)
    first, second = m.ready(2)
    base = url(m)
    _, _, page = ask(base + "/")
    assert "href='/workers/1/'" in page and "href='/workers/2/'" in page
    status, headers, html = ask(base + "/workers/1/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert 'src="static/dashboard.js"' in html  # relative: served from under /workers/1/ too
    status, headers, script = ask(base + "/workers/1/static/dashboard.js")
    assert status == 200 and "api/live" in script
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert ask(base + "/workers/2")[0] == 200  # redirected to the slash (urllib follows)
    # A link from another page is a GET like any: it is let through (as to a dashboard).
    assert ask(base + "/workers/1/", Sec_Fetch_Site="cross-site")[0] == 200
    # Places as counted; the path passed as sent, decoded once (by the worker).
    assert ask(base + "/workers/01/")[0] == 404
    assert ask(base + "/workers/1/%2561pi/overview")[0] == 404
    status, _, page = ask(base + "/workers/1/api/processes?name=sleeper&limit=1")
    assert status == 200 and page["limit"] == 1
    # Each place answers with its own worker's processes.
    by_place = {place: sleepers(base, place) for place in (1, 2)}
    assert [len(rows) for rows in by_place.values()] == [1, 1]
    _, _, overview = ask(base + "/workers/2/api/overview")
    assert overview["state"] == "RUN"
    status, _, missing = ask(base + "/workers/3/api/overview")
    assert status == 404 and missing["error"] == "no worker in place 3: the places are 1-2"
    # The live WebSocket, both ways through the master; another site's page is refused.
    live = asyncio.run(first_live_message(f"{base}/workers/1/api/live", base))
    assert live["state"] == "RUN" and "history" in live
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        asyncio.run(first_live_message(f"{base}/workers/1/api/live", "http://evil.example"))
    assert refused.value.status == 403
    # No token: the workers' pages are read-only, through the master as directly.
    pid = by_place[1][0]["pid"]
    status, _, body = ask(
        f"{base}/workers/1/api/action", "POST", {"action": "kill", "pids": [pid]}, Origin=base
    )
    assert status == 403 and "read-only" in body["error"]
    assert len(sleepers(base, 1)) == 1
    # The worker's metrics, too (the master's /metrics merges them).
    status, _, text = ask(base + "/workers/2/metrics")
    assert status == 200 and "archangel_processes_running" in families(text)
    assert not m.logged(r"Traceback|did not answer")
    assert {first, second} == set(m.workers())


def test_a_workers_actions_work_through_the_master_with_the_token(
    master: Callable[..., Master],
) -> None:
    m = master(2, token="s3cret")
    m.ready(2)
    base = url(m)
    login = f"{base}/workers/1/api/login"
    status, _, body = ask(login, "POST", {"token": "wrong"}, Origin=base)
    assert status == 401 and body["error"] == "wrong token"
    status, _, body = ask(login, "POST", {"token": "s3cret"}, Origin="http://evil.example")
    assert status == 403 and "cross-origin" in body["error"]  # refused at the master
    status, headers, body = ask(login, "POST", {"token": "s3cret"}, Origin=base)
    assert status == 200 and body["logged_in"] is True
    # The worker knows who logged in through the master (and throttles by it).
    wait_for(lambda: m.logged(r"web: 127\.0\.0\.1 logged in to the dashboard"), 5)
    csrf = body["csrf"]
    cookie = headers["Set-Cookie"]
    assert "Path=/workers/1/" in cookie and "HttpOnly" in cookie  # this worker's session only
    session = cookie.split(";")[0]
    pid = sleepers(base, 1)[0]["pid"]
    other = sleepers(base, 2)[0]["pid"]
    kill = {"action": "kill", "pids": [pid]}
    action = f"{base}/workers/1/api/action"
    status, _, body = ask(action, "POST", kill, Origin=base, Cookie=session)
    assert status == 403 and "X-CSRF-Token" in body["error"]  # the session needs its CSRF token
    status, _, body = ask(action, "POST", kill, Origin=base, Cookie=session, X_CSRF_Token=csrf)
    assert status == 200 and str(pid) in body["result"], body
    wait_for(lambda: not sleepers(base, 1), 10)
    # Worker 2 is untouched, and its own session is not worker 1's.
    assert [row["pid"] for row in sleepers(base, 2)] == [other]
    status, _, body = ask(
        f"{base}/workers/2/api/action",
        "POST",
        {"action": "kill", "pids": [other]},
        Authorization="Bearer s3cret",
    )
    assert status == 200, body
    wait_for(lambda: not sleepers(base, 2), 10)
    assert "s3cret" not in "".join(m.logged(".*"))


async def test_a_browser_uses_a_workers_dashboard_through_the_master(
    master: Callable[..., Master], browser: Browser
) -> None:
    m = master(2, token="s3cret")
    m.ready(2)
    base = url(m)
    victim = sleepers(base, 2)[0]["pid"]
    await browser.call("Page.navigate", url=f"{base}/")
    await browser.wait("document.querySelectorAll('a[href=\"/workers/2/\"]').length === 1")
    # Where the link leads (followed by navigating: a click's navigation would
    # race the next evaluation, which then fails as its page goes away).
    link = await browser.run("document.querySelector('a[href=\"/workers/2/\"]').href")
    assert link == f"{base}/workers/2/"
    await browser.call("Page.navigate", url=link)
    # Worker 2's own page: its table, and its WebSocket live through the master.
    await browser.wait(f"document.querySelector('#proc-rows tr[data-pid=\"{victim}\"]')")
    await browser.wait("document.getElementById('link').textContent === 'live'")
    assert await browser.run("location.pathname") == "/workers/2/"
    await browser.run(
        "document.getElementById('login-token').value = 's3cret';"
        " document.querySelector('#login button').click()"
    )
    await browser.wait("!document.getElementById('app-actions').hidden")
    await browser.run(
        "window.confirm = () => true;"
        f" document.querySelector('button.kill[data-pid=\"{victim}\"]').click()"
    )
    result = await browser.wait(
        "document.getElementById('result-text').textContent.startsWith('pid')"
        " && document.getElementById('result-text').textContent"
    )
    assert result.startswith(f"pid {victim}: killed (sleeper"), result
    await browser.wait(f"!document.querySelector('#proc-rows tr[data-pid=\"{victim}\"]')")
    assert not sleepers(base, 2) and len(sleepers(base, 1)) == 1


class _Fleet:
    name, count, stopping, heartbeat = "fleet", 1, False, 0.0

    def worker_table(self) -> list[dict[str, object]]:
        return []


def test_the_masters_web_server_needs_a_token_off_loopback() -> None:
    from archangel.errors import WebError
    from archangel.web.fleet import FleetWebServer

    with pytest.raises(WebError, match="a token is required"):
        FleetWebServer(_Fleet(), host="0.0.0.0", port=9100)
    FleetWebServer(_Fleet(), host="0.0.0.0", port=9100, token="s3cret").close()


def test_app_web_takes_the_masters_worker_timeout() -> None:
    from archangel import App
    from archangel.errors import InvalidArgument

    app = App("timed", web={"port": 0, "worker_timeout": 0.5})
    assert app.web_options == {"port": 0, "worker_timeout": 0.5}
    with pytest.raises(InvalidArgument, match="has no option 'worker_timeot'"):
        App("typo", web={"worker_timeot": 0.5})


def test_the_proxy_picks_the_ready_worker_of_a_place_and_says_why_there_is_none() -> None:
    from archangel.web.auth import Guard
    from archangel.web.proxy import WorkerProxy

    class Rolling(_Fleet):
        count = 3

        def worker_table(self) -> list[dict[str, object]]:
            return [
                {"place": 1, "pid": 11, "state": "stopping", "web": "/run/11.web.sock"},
                {"place": 1, "pid": 12, "state": "ready", "web": "/run/12.web.sock"},
                {"place": 2, "pid": 21, "state": "starting", "web": "/run/21.web.sock"},
                {"place": 3, "pid": 31, "state": "ready", "web": None},
            ]

    proxy = WorkerProxy(Rolling(), Guard(None, loopback=True))
    assert proxy.socket(1) == "/run/12.web.sock"  # in a roll, the fresh one once ready
    with pytest.raises(LookupError, match=r"^worker 2 \(pid 21\) is starting: try again"):
        proxy.socket(2)  # its server may not listen yet: a 503, not a 502
    with pytest.raises(LookupError, match=r"^worker 3 \(pid 31\) has no web server$"):
        proxy.socket(3)
    with pytest.raises(LookupError, match=r"^no worker in place 4: the places are 1-3$"):
        proxy.socket(4)


def test_only_a_workers_server_believes_the_client_the_master_names(tmp_path: Path) -> None:
    """``X-Archangel-Peer`` is the master's proxy's word: a worker's server (``App.web_on``)
    takes it; a server on a Unix socket of its own (behind some other proxy) does not."""
    from archangel import App
    from archangel.web import WebServer

    app = App("peers", web={"token": "s3cret"})
    worker = app.web_on(str(tmp_path / "worker.web.sock"))
    alone = WebServer(app, path=str(tmp_path / "alone.web.sock"), token="s3cret")
    assert worker.guard.behind_master is True
    assert alone.guard.behind_master is False

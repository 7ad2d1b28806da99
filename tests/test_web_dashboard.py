"""The dashboard end to end: its JSON API, its actions and their guard, a real browser.

A real App on the test's loop (asyncio or uvloop), real HTTP on 127.0.0.1
from other threads (urllib), a real WebSocket (aiohttp's client) and a real
headless Chromium that loads the page, runs its script and dumps the DOM.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tomllib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from email.message import Message
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from archangel import App, ChildSpec, Pipeline, ProcessManager, State, Supervisor
from archangel.console.guard import Throttle
from archangel.web import WebServer
from archangel.web.dashboard import _STATIC
from tests.browser_helpers import BROWSER_TIMEOUT, HEADLESS, Browser, chromium, profile_dir
from tests.helpers import until
from tests.test_web import block_while

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "op3rator-s3cret"


def request(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Message, str]:
    """One HTTP request (blocking: call it from a thread); ``(status, headers, body)``."""
    data = None
    sent = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read().decode()


async def call(url: str, method: str = "GET", body: Any = None, **headers: str) -> Any:
    """:func:`request` from a thread, the body read as JSON: ``(status, headers, json)``."""
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    status, got, text = await asyncio.to_thread(request, url, method, body, sent)
    return status, got, json.loads(text) if text else None


async def sleeper() -> None:
    await asyncio.Event().wait()


async def login(url: str) -> tuple[str, str]:
    """Log in with the token as the page does; ``(cookie header, CSRF token)``."""
    status, headers, body = await call(f"{url}/api/login", "POST", {"token": TOKEN}, Origin=url)
    assert status == 200, body
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    return cookie.split(";")[0], body["csrf"]


# -- the JSON API -----------------------------------------------------------------------------


async def test_the_process_api_pages_filters_and_sorts_on_the_server(running: Any) -> None:
    app = await running(App("paged", web={"port": 0}))
    workers = [app.manager.spawn(sleeper(), name=f"worker-{n:02d}") for n in range(30)]
    others = [app.manager.spawn(sleeper(), name=f"other-{n}") for n in range(5)]
    url = app.web.url

    status, _, page = await call(
        f"{url}/api/processes?offset=5&limit=10&kind=task&name=worker-*&sort=-pid"
    )
    assert status == 200
    newest_first = sorted((w.pid for w in workers), reverse=True)
    assert (page["total"], page["offset"], page["count"], page["next_offset"]) == (30, 5, 10, 15)
    assert [p["pid"] for p in page["processes"]] == newest_first[5:15]
    assert {p["state"] for p in page["processes"]} == {"running"}

    _, _, page = await call(f"{url}/api/processes?sort=name&limit=3&offset=33")
    assert [p["name"] for p in page["processes"]] == ["worker-28", "worker-29"]
    assert page["next_offset"] is None

    status, _, error = await call(f"{url}/api/processes?sort=colour")
    assert status == 400 and error["error"].startswith("cannot sort by colour")
    status, _, error = await call(f"{url}/api/processes?limit=5000")
    assert status == 400 and "limit must be between 1 and 1000" in error["error"]
    status, _, error = await call(f"{url}/api/processes?state=asleep")
    assert status == 400 and error["error"].startswith("unknown state asleep")

    for process in others:
        process.kill()
    await until(lambda: len(app.manager.history) == 5)
    _, _, history = await call(f"{url}/api/history?n=3&kind=task")
    assert history["total"] == 5 and history["count"] == 3
    assert [r["name"] for r in history["processes"]] == ["other-2", "other-3", "other-4"]
    assert {r["exit_reason"] for r in history["processes"]} == {"killed"}


async def test_pipelines_and_supervisors_with_their_counters_and_children(running: Any) -> None:
    app = await running(App("trees", web={"port": 0}))
    supervisor = app.manager.spawn(
        Supervisor(ChildSpec(sleeper, name="left"), ChildSpec(sleeper, name="right"), name="top")
    )
    await until(lambda: len(supervisor.children) == 2)
    more = asyncio.Event()

    async def numbers() -> AsyncIterator[int]:
        for n in range(6):
            yield n
        await more.wait()

    pipeline = app.manager.spawn(Pipeline(numbers(), lambda n: [n * 2], name="doubles"))
    await until(lambda: pipeline.counters["out"] == 6)

    _, _, found = await call(f"{app.web.url}/api/supervisors")
    (entry,) = found["supervisors"]
    assert (entry["pid"], entry["name"], entry["strategy"], entry["restarts"]) == (
        supervisor.pid,
        "top",
        "one_for_one",
        0,
    )
    assert [(c["pid"], c["name"]) for c in entry["children"]] == [
        (c.pid, c.name) for c in supervisor.children
    ]
    _, _, found = await call(f"{app.web.url}/api/pipelines")
    (pipe,) = found["pipelines"]
    assert (pipe["pid"], pipe["name"]) == (pipeline.pid, "doubles")
    assert pipe["counters"]["in"] == 6 and pipe["counters"]["out"] == 6
    assert len(pipe["cogs"]) == 1
    more.set()


async def test_the_overview_and_its_event_stream(running: Any) -> None:
    app = await running(App("watched", web={"port": 0, "probe_interval": 0.05}))
    url = app.web.url
    await until(lambda: len(app.web.watch.apploop.lags) >= 3)
    _, _, overview = await call(f"{url}/api/overview")
    assert (overview["app"], overview["state"], overview["blocked"]) == ("watched", "RUN", None)
    assert overview["stats"]["counters"]["running"] == len(app.manager)
    assert overview["series"]["lag"] and all(t <= 0 for t, _ in overview["series"]["lag"])

    def first_event() -> dict[str, Any]:
        with urllib.request.urlopen(f"{url}/api/events", timeout=15) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            lines = []
            while (line := response.readline().decode().rstrip("\n")) != "":
                lines.append(line)
        assert lines[0] == "event: overview"
        data: dict[str, Any] = json.loads(lines[1].removeprefix("data: "))
        return data

    event = await asyncio.to_thread(first_event)
    assert event["state"] == "RUN"
    assert {"pipelines", "supervisors", "history", "series", "stats"} <= set(event)


async def test_the_live_socket_sends_events_and_refuses_another_site(running: Any) -> None:
    app = await running(App("socketed", web={"port": 0}))
    url = app.web.url
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(f"{url}/api/live", origin="http://evil.example")
        assert refused.value.status == 403
        async with client.ws_connect(f"{url}/api/live", origin=url) as socket:
            event = json.loads((await socket.receive(timeout=10)).data)
            assert event["app"] == "socketed" and event["stats"]["counters"]["running"] == 0
            assert app.web.dashboard.viewers == 1
    await until(lambda: app.web.dashboard.viewers == 0)


async def test_the_page_and_its_files_come_from_the_package(running: Any) -> None:
    app = await running(App("paged", web={"port": 0}))
    url = app.web.url
    status, headers, html = await asyncio.to_thread(request, f"{url}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    for path in ("metrics", "livez", "readyz", "api/processes"):  # the endpoint list
        assert f'href="{path}"' in html
    # Everything it loads is served from here: only paths relative to the page
    # (so that it works under the master's /workers/N/ too), no other host.
    for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert not ref.startswith("/") and ":" not in ref, ref
    for name, kind in _STATIC.items():
        path = "/" if name == "index.html" else f"/static/{name}"
        status, headers, text = await asyncio.to_thread(request, url + path)
        assert status == 200 and headers["Content-Type"].startswith(kind)
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
    status, _, _ = await asyncio.to_thread(request, f"{url}/static/server.py")
    assert status == 404
    status, _, _ = await asyncio.to_thread(request, f"{url}/static/..%2Fserver.py")
    assert status == 404


def test_the_page_files_ship_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["archangel"]
    static = ROOT / "src" / "archangel" / "web" / "static"
    for name in _STATIC:
        assert (static / name).is_file(), name
        assert any(fnmatch(f"web/static/{name}", pattern) for pattern in patterns), name


async def test_a_dns_rebinding_host_is_turned_away(running: Any) -> None:
    app = await running(App("rebound", web={"port": 0}))
    for path in ("/", "/api/processes", "/api/overview"):
        status, _, body = await call(f"{app.web.url}{path}", Host="attacker.example")
        assert status == 421 and "loopback names only" in body["error"]
    status, _, _ = await call(f"{app.web.url}/api/overview", Host=f"localhost:{app.web.port}")
    assert status == 200


# -- actions and their guard ------------------------------------------------------------------


async def test_without_a_token_the_page_is_read_only(running: Any) -> None:
    app = await running(App("readonly", web={"port": 0}))
    url = app.web.url
    victim = app.manager.spawn(sleeper(), name="victim")
    _, _, session = await call(f"{url}/api/session")
    assert (session["actions"], session["logged_in"], session["csrf"]) == (False, False, None)
    kill = {"action": "kill", "pids": [victim.pid]}
    for headers in ({"Origin": url}, {"Authorization": "Bearer anything", "Origin": url}):
        status, _, body = await call(f"{url}/api/action", "POST", kill, **headers)
        assert status == 403 and body["error"].startswith("read-only"), body
    status, _, body = await call(f"{url}/api/login", "POST", {"token": "x"}, Origin=url)
    assert status == 403
    assert app.manager.get(victim.pid) is victim and victim.state.value == "running"


async def test_an_operator_logs_in_and_kills_a_process(running: Any) -> None:
    app = await running(App("guarded", web={"port": 0, "token": TOKEN}))
    url = app.web.url
    victim = app.manager.spawn(sleeper(), name="victim")
    _, _, session = await call(f"{url}/api/session")
    assert (session["actions"], session["logged_in"]) == (True, False)

    status, headers, body = await call(f"{url}/api/login", "POST", {"token": "wrong"}, Origin=url)
    assert (status, body["error"]) == (401, "wrong token") and "Set-Cookie" not in headers
    cookie, csrf = await login(url)
    _, _, session = await call(f"{url}/api/session", Cookie=cookie)
    assert (session["logged_in"], session["csrf"]) == (True, csrf)

    kill = {"action": "kill", "pids": [victim.pid]}
    status, _, body = await call(
        f"{url}/api/action", "POST", kill, Origin=url, Cookie=cookie, X_CSRF_Token=csrf
    )
    assert status == 200 and body["ok"]
    assert body["result"] == f"pid {victim.pid}: killed (victim, exit: killed)"
    assert app.manager.get(victim.pid) is None

    status, _, _ = await call(f"{url}/api/logout", "POST", {}, Origin=url, Cookie=cookie)
    assert status == 200
    status, _, body = await call(
        f"{url}/api/action", "POST", kill, Origin=url, Cookie=cookie, X_CSRF_Token=csrf
    )
    assert status == 401 and body["error"].startswith("not logged in")
    for shown in (repr(app.web), repr(app.web.guard), repr(app.web.dashboard)):
        assert TOKEN not in shown


async def test_forged_and_cross_origin_posts_are_refused(running: Any) -> None:
    app = await running(App("forged", web={"port": 0, "token": TOKEN}))
    url = app.web.url
    victim = app.manager.spawn(sleeper(), name="victim")
    cookie, csrf = await login(url)
    kill = {"action": "kill", "pids": [victim.pid]}
    action = f"{url}/api/action"
    attempts: list[tuple[dict[str, str], int, str]] = [
        ({"Origin": url, "Cookie": cookie}, 403, "missing or wrong X-CSRF-Token"),
        ({"Origin": url, "Cookie": cookie, "X-CSRF-Token": csrf[::-1]}, 403, "missing or wrong"),
        ({"Cookie": cookie, "X-CSRF-Token": csrf}, 403, "without an Origin"),
        (
            {"Origin": "http://evil.example", "Cookie": cookie, "X-CSRF-Token": csrf},
            403,
            "Origin does not match Host",
        ),
        (
            {
                "Origin": url,
                "Cookie": cookie,
                "X-CSRF-Token": csrf,
                "Sec-Fetch-Site": "cross-site",
            },
            403,
            "cross-site request refused",
        ),
        (
            {"Origin": "null", "Cookie": cookie, "X-CSRF-Token": csrf},
            403,
            "Origin does not match Host",
        ),
        (
            {"Origin": "http://evil.example", "Authorization": f"Bearer {TOKEN}"},
            403,
            "Origin does not match Host",
        ),
        ({"Origin": url, "X-CSRF-Token": csrf}, 401, "not logged in"),
    ]
    for headers, status, reason in attempts:
        got, _, body = await call(action, "POST", kill, **headers)
        assert (got, reason in body["error"]) == (status, True), (headers, body)
    # A form post (what another site's page can send blindly) is not an action.
    got, _, body = await asyncio.to_thread(
        request, action, "POST", None, {"Authorization": f"Bearer {TOKEN}"}
    )
    assert got == 415
    # A login from another site's page is refused as well.
    got, _, body = await call(
        f"{url}/api/login", "POST", {"token": TOKEN}, Origin="http://evil.example"
    )
    assert got == 403
    assert app.manager.get(victim.pid) is victim and victim.state.value == "running"


async def test_scripts_act_with_the_bearer_token(running: Any) -> None:
    app = await running(App("scripted", web={"port": 0, "token": TOKEN}))
    url = app.web.url
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, _, body = await call(f"{url}/api/action", "POST", {"action": "reload"}, **bearer)
    assert (status, body["result"]) == (200, "reload done") and app.reload_count == 1
    status, _, body = await call(
        f"{url}/api/action", "POST", {"action": "dump", "which": "runlog"}, **bearer
    )
    assert status == 200 and body["result"].startswith("runlog written to ")
    assert app.dump_counts["runlog"] == 1
    for bad, reason in (
        ({"action": "kill", "pids": ["1"]}, "a list of 1 to 1000 integers"),
        ({"action": "dump", "which": "core"}, '"state" or "runlog"'),
        ({"action": "py", "code": "1"}, "unknown action 'py'"),
        ([1, 2], "must be a JSON object"),
    ):
        status, _, body = await call(f"{url}/api/action", "POST", bad, **bearer)
        assert status == 400 and reason in body["error"], body
    status, _, body = await call(
        f"{url}/api/action", "POST", {"action": "kill", "pids": [424242]}, **bearer
    )
    assert (status, body["ok"]) == (400, False)  # nothing was killed
    assert body["result"] == "error: no process with pid 424242"
    status, _, body = await call(f"{url}/api/action", "POST", {"action": "stop"}, **bearer)
    assert body["result"] == "stop requested: the app is shutting down"
    await app.bus.wait(State.EXITED)


async def test_a_bare_manager_has_no_app_actions() -> None:
    manager = ProcessManager()
    with WebServer(manager, token=TOKEN) as server:
        url = server.url
        assert url is not None
        _, _, session = await call(f"{url}/api/session")
        assert (session["actions"], session["app"]) == (True, False)
        status, _, body = await call(
            f"{url}/api/action", "POST", {"action": "stop"}, Authorization=f"Bearer {TOKEN}"
        )
        assert status == 400
        not_available = "stop: not available: console target is a bare ProcessManager"
        assert body["result"] == f"error: {not_available}"


async def test_wrong_tokens_are_throttled(running: Any) -> None:
    app = await running(App("throttled", web={"port": 0, "token": TOKEN}))
    url = app.web.url
    app.web.guard.throttle = Throttle(burst=2, rate=0.5, max_wait=0.1)
    answers = []
    for _ in range(3):
        status, _, _ = await call(f"{url}/api/login", "POST", {"token": "guess"}, Origin=url)
        answers.append(status)
    assert answers == [401, 401, 429]
    # The peer is out of turns: even the right token waits for one.
    status, _, body = await call(
        f"{url}/api/action", "POST", {"action": "reload"}, Authorization=f"Bearer {TOKEN}"
    )
    assert (status, body["error"]) == (429, "too many token attempts: try again later")
    assert app.reload_count == 0


# -- the blocked loop -------------------------------------------------------------------------


async def test_the_overview_says_the_loop_is_blocked_and_where(running: Any) -> None:
    web = {"port": 0, "token": TOKEN, "block_threshold": 0.2, "probe_interval": 0.05}
    app = await running(App("stuck", web=web))
    url = app.web.url
    victim = app.manager.spawn(sleeper(), name="victim")

    def during(url: str, results: dict[str, Any]) -> None:
        while True:
            _, _, text = request(f"{url}/api/overview")
            overview = json.loads(text)
            if overview["blocked"] is not None:
                break
        results["overview"] = overview
        # An action meanwhile is queued: the console's answer says so.
        results["kill"] = request(
            f"{url}/api/action",
            "POST",
            {"action": "kill", "pids": [victim.pid]},
            {"Authorization": f"Bearer {TOKEN}"},
        )

    results = await block_while(url, during)
    blocked = results["overview"]["blocked"]
    assert blocked["seconds"] > 0.2
    stack = blocked["stack"]
    assert re.match(r"app loop thread \d+ \(BLOCKED for .*\), innermost call last:", stack)
    assert "in block_the_loop" in stack
    assert "time.sleep(0.01)  # the blocking line" in stack
    assert results["overview"]["series"]["lag"][-1][1] > 0.2  # the plot shows the block
    status, _, text = results["kill"]
    assert status == 200
    assert json.loads(text)["result"].startswith("the app loop is blocked (no answer in 1 s)")
    await until(lambda: app.manager.get(victim.pid) is None)  # queued, then done
    _, _, overview = await call(f"{url}/api/overview")
    assert overview["blocked"] is None


# -- a real browser ---------------------------------------------------------------------------


def chromium_dom(url: str) -> str:
    """Load ``url`` in headless Chromium, let its script run, return the DOM (blocking)."""
    with profile_dir() as profile:
        done = subprocess.run(
            [
                chromium(),
                *HEADLESS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=3000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=BROWSER_TIMEOUT,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def cell(dom: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert found is not None, element_id
    return found.group(1)


async def test_a_browser_shows_the_processes_pipelines_and_supervisors(running: Any) -> None:
    app = await running(App("browsed", web={"port": 0}))
    workers = [app.manager.spawn(sleeper(), name=f"worker-{n}") for n in range(20)]
    supervisor = app.manager.spawn(Supervisor(ChildSpec(sleeper, name="kid"), name="keeper"))
    await until(lambda: len(supervisor.children) == 1)

    async def numbers() -> AsyncIterator[int]:
        for n in range(4):
            yield n
        await asyncio.Event().wait()

    pipeline = app.manager.spawn(Pipeline(numbers(), lambda n: [n], name="copies"))
    await until(lambda: pipeline.counters["out"] == 4)
    # The browser runs on a thread: the app's loop goes on serving meanwhile.
    dom = await asyncio.to_thread(chromium_dom, f"{app.web.url}/")

    rows = re.search(r'<tbody id="proc-rows">(.*?)</tbody>', dom, re.S)
    assert rows is not None
    shown = set(map(int, re.findall(r'<tr class="running" data-pid="(\d+)">', rows.group(1))))
    assert shown == {p.pid for p in app.manager.processes()}
    assert {w.pid for w in workers} <= shown
    assert ">worker-7<" in rows.group(1)
    assert cell(dom, "shown") == f"showing 1-{len(shown)} of {len(shown)}"
    assert cell(dom, "link") == "live"  # the WebSocket's first event arrived
    assert cell(dom, "app-state") == "RUN"
    assert re.search(rf'<tr data-pid="{pipeline.pid}"><td>{pipeline.pid}</td><td>copies</td>', dom)
    assert f'<li data-pid="{supervisor.pid}">pid {supervisor.pid} keeper [running]' in dom
    assert f'<li data-pid="{supervisor.children[0].pid}">' in dom
    assert re.search(r'<span id="readonly" class="muted">read-only', dom)  # not hidden
    assert '<svg id="plot-lag"' in dom and "<polyline" in dom


async def test_a_browser_shows_the_blocked_loop_and_its_stack(running: Any) -> None:
    web = {"port": 0, "block_threshold": 0.2, "probe_interval": 0.05}
    app = await running(App("frozen", web=web))
    workers = [app.manager.spawn(sleeper(), name=f"worker-{n}") for n in range(5)]

    def during(url: str, results: dict[str, Any]) -> None:
        while json.loads(request(f"{url}/api/overview")[2])["blocked"] is None:
            pass
        results["dom"] = chromium_dom(f"{url}/")

    dom = (await block_while(app.web.url, during))["dom"]
    banner = re.search(r'<section id="blocked" class="alarm">(.*?)</section>', dom, re.S)
    assert banner is not None, "the banner is hidden"
    assert "The app loop is blocked: no answer for" in banner.group(1)
    assert "in block_the_loop" in banner.group(1)
    assert "time.sleep(0.01)  # the blocking line" in banner.group(1)  # the line itself
    # The table is served by the web's thread: it fills while the loop is blocked.
    for worker in workers:
        assert f'data-pid="{worker.pid}"' in dom


async def test_a_browser_draws_the_lag_plot(running: Any, browser: Browser) -> None:
    app = await running(App("plotted", web={"port": 0, "probe_interval": 0.05}))
    await browser.call("Page.navigate", url=f"{app.web.url}/")
    # Each event a second brings the probes' answers: after a few, a line of them.
    points = await browser.wait(
        "(() => { const line = document.querySelector('#plot-lag polyline');"
        " const points = line ? line.getAttribute('points').trim().split(/\\s+/) : [];"
        " return points.length >= 2 && points; })()"
    )
    for point in points:
        x, y = map(float, point.split(","))
        assert x >= 0 and y >= 0, points


async def test_a_browser_logs_in_and_kills_a_process(running: Any, browser: Browser) -> None:
    app = await running(App("clicked", web={"port": 0, "token": TOKEN}))
    workers = [app.manager.spawn(sleeper(), name=f"worker-{n}") for n in range(3)]
    victim = workers[1]
    await browser.call("Page.navigate", url=f"{app.web.url}/")
    await browser.wait("document.querySelectorAll('#proc-rows tr').length === 3")
    assert await browser.run("!document.getElementById('login').hidden")
    assert await browser.run("[...document.querySelectorAll('button.kill')].every(b => b.hidden)")

    def log_in(token: str) -> str:
        return (
            f"document.getElementById('login-token').value = {json.dumps(token)};"
            " document.querySelector('#login button').click()"
        )

    await browser.run(log_in("not-it"))
    assert await browser.wait("document.getElementById('result-text').textContent") == (
        "wrong token"
    )
    await browser.run(log_in(TOKEN))
    await browser.wait("!document.getElementById('app-actions').hidden")
    await browser.run(
        "window.confirm = () => true;"  # the operator says yes
        f" document.querySelector('button.kill[data-pid=\"{victim.pid}\"]').click()"
    )
    result = await browser.wait(
        "document.getElementById('result-text').textContent.startsWith('pid')"
        " && document.getElementById('result-text').textContent"
    )
    assert result == f"pid {victim.pid}: killed (worker-1, exit: killed)"
    assert app.manager.get(victim.pid) is None
    assert app.manager.get(workers[0].pid) is workers[0]
    # The page updates: the killed process's row goes, the others stay.
    await browser.wait(f"!document.querySelector('#proc-rows tr[data-pid=\"{victim.pid}\"]')")
    shown = await browser.run(
        "[...document.querySelectorAll('#proc-rows tr')].map(row => Number(row.dataset.pid))"
    )
    assert sorted(shown) == [workers[0].pid, workers[2].pid]
    # The session is a cookie the page's script cannot read.
    assert await browser.run("document.cookie") == ""
    await browser.run("document.getElementById('logout').click()")
    await browser.wait("!document.getElementById('login').hidden")

"""The deployment examples agree with the code, and the service they run works.

``examples/deploy/kubernetes.yaml`` and ``examples/deploy/archangel-web.service``
run ``examples/web_service.py``; their ports, probe paths and stop timeouts are
held here to the defaults of :mod:`archangel.web.server` and :class:`archangel.App`.
A real subprocess gets a real SIGTERM: ``/readyz`` turns 503 at once while a
connection still drains.
"""

from __future__ import annotations

import inspect
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from archangel import App
from archangel.app import LEAVE_GRACE, STOP_GRACE
from archangel.console.listen import is_loopback
from archangel.web.server import DEFAULT_PORT, LIVE_THRESHOLD
from tests.test_web import get, get_until

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "examples" / "deploy"
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
SHUTDOWN_TIMEOUT = inspect.signature(App).parameters["shutdown_timeout"].default
#: What a stop may take before the process is gone: the drain, then the App's graces.
STOP_BOUND = SHUTDOWN_TIMEOUT + STOP_GRACE + LEAVE_GRACE
#: The most a platform should wait past that before it kills.
MARGIN = 10


def example_defaults() -> Any:
    """The example module's settings, imported without running it."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import web_service
    finally:
        sys.path.remove(str(ROOT / "examples"))
    return web_service


def test_the_kubernetes_manifest_matches_the_code() -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    by_kind = {doc["kind"]: doc for doc in documents}
    assert set(by_kind) == {"Deployment", "Service"}
    pod = by_kind["Deployment"]["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(DEFAULT_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"

    spec = pod["spec"]
    assert STOP_BOUND < spec["terminationGracePeriodSeconds"] <= STOP_BOUND + MARGIN
    (container,) = spec["containers"]
    assert container["command"][-1].endswith("examples/web_service.py")
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert float(env["SERVICE_SHUTDOWN_TIMEOUT"]) == SHUTDOWN_TIMEOUT
    assert int(env["WEB_PORT"]) == DEFAULT_PORT
    if not is_loopback(env["WEB_HOST"]):  # the App refuses to start without a token then
        assert env["WEB_TOKEN"]["secretKeyRef"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": DEFAULT_PORT, "echo": int(env["SERVICE_PORT"])}
    assert int(env["SERVICE_PORT"]) == example_defaults().SERVICE_PORT

    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert live["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert ready["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # A restart only after /livez has failed for longer than a blocked loop is tolerated.
    assert live["periodSeconds"] * live["failureThreshold"] > LIVE_THRESHOLD
    # Unready at the first failed probe: the pod leaves the endpoints at once.
    assert ready["failureThreshold"] == 1
    assert ready["periodSeconds"] < SHUTDOWN_TIMEOUT

    service = by_kind["Service"]["spec"]
    assert service["selector"] == by_kind["Deployment"]["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["ports"]] == ["echo"]


def unit_file(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as ``{section: [(key, value), ...]}`` (keys repeat, as in units)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not KEY=VALUE"
        current.append((key.strip(), value.strip()))
    return sections


def test_the_systemd_unit_matches_the_code() -> None:
    unit = unit_file(DEPLOY / "archangel-web.service")
    service = dict(unit["Service"])
    env = dict(v.split("=", 1) for k, v in unit["Service"] if k == "Environment")
    assert service["Type"] == "notify"
    assert service["ExecStart"].endswith("examples/web_service.py")
    assert service["KillSignal"] == "SIGTERM"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert float(env["SERVICE_SHUTDOWN_TIMEOUT"]) == SHUTDOWN_TIMEOUT
    assert STOP_BOUND < int(service["TimeoutStopSec"]) <= STOP_BOUND + MARGIN
    assert int(env["WEB_PORT"]) == DEFAULT_PORT
    assert is_loopback(env["WEB_HOST"])  # no token needed, none in the unit
    assert int(env["SERVICE_PORT"]) == example_defaults().SERVICE_PORT
    assert dict(unit["Install"])["WantedBy"] == "multi-user.target"


def read_addresses(process: subprocess.Popen[str]) -> tuple[int, str]:
    """The echo port and the web URL the service prints once it runs."""
    assert process.stdout is not None
    echo = process.stdout.readline()
    web = process.stdout.readline()
    assert echo.startswith("echo on 127.0.0.1:"), echo
    assert web.startswith("metrics and probes on http://127.0.0.1:"), web
    return int(echo.rsplit(":", 1)[1]), web.split(" on ", 1)[1].strip()


def test_the_example_service_serves_metrics_and_stops_on_sigterm() -> None:
    env = {**ENV, "SERVICE_PORT": "0", "WEB_PORT": "0"}
    service = subprocess.Popen(
        [sys.executable, "examples/web_service.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port, url = read_addresses(service)
        assert get(f"{url}/readyz") == (200, "ready: state RUN\n")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"hello\n")
            assert conn.recv(100) == b"hello\n"
            status, text = get(f"{url}/metrics")
            assert status == 200
            found = {f.name: f for f in text_string_to_metric_families(text)}
            running = {
                s.labels["kind"]: s.value for s in found["archangel_processes_running"].samples
            }
            assert running == {"conn": 1}
            service.send_signal(signal.SIGTERM)
            assert conn.makefile("rb").read() == b"bye\n"  # told at its end of input
        _, stderr = service.communicate(timeout=30)
    finally:
        if service.poll() is None:
            service.kill()
            service.communicate()
    assert service.returncode == 0, stderr


DRAINING = textwrap.dedent(
    """
    import asyncio, os, sys
    from archangel import App, State

    release = sys.argv[1]
    app = App("draining", web={"port": 0})

    async def slow(reader, writer):
        data = await reader.readline()
        writer.write(b"got " + data)
        await writer.drain()
        await reader.read()  # end of input: the graceful stop
        while not os.path.exists(release):  # in-flight work, until the test says
            await asyncio.sleep(0.01)
        writer.write(b"done " + data)
        await writer.drain()

    @app.bus.on(State.START)
    async def start():
        await app.serve_streams(slow, "127.0.0.1", 0)

    @app.bus.on(State.RUN)
    def running():
        print(f"echo on 127.0.0.1:{app.addresses[0][1]}", flush=True)
        print(f"metrics and probes on {app.web.url}", flush=True)

    raise SystemExit(app.run())
    """
)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_sigterm_turns_readyz_unready_at_once_while_work_in_flight_completes(
    tmp_path: Path, loop: str
) -> None:
    script = tmp_path / "draining.py"
    script.write_text(DRAINING.replace("app.run()", f"app.run(loop={loop!r})"))
    release = tmp_path / "release"
    service = subprocess.Popen(
        [sys.executable, str(script), str(release)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port, url = read_addresses(service)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"job-1\n")
            assert conn.recv(100) == b"got job-1\n"
            assert get(f"{url}/readyz")[0] == 200
            service.send_signal(signal.SIGTERM)
            body = get_until(f"{url}/readyz", 503)
            assert body.startswith("not ready: stopping")
            assert get(f"{url}/livez")[0] == 200  # unready, not dead
            assert service.poll() is None  # still draining the connection
            release.touch()
            reader = conn.makefile("rb")
            assert reader.read() == b"done job-1\n"  # the in-flight work completed
        _, stderr = service.communicate(timeout=30)
    finally:
        if service.poll() is None:
            service.kill()
            service.communicate()
    assert service.returncode == 0, stderr

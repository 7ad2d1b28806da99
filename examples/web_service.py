"""An echo service with Prometheus metrics and health probes, as Kubernetes and systemd run it.

Run it in the foreground::

    python examples/web_service.py              # or: archangel run examples.web_service:app
    curl -s localhost:9100/metrics | grep archangel_processes
    curl -si localhost:9100/readyz              # 200 in RUN, 503 from the first stop request

``examples/deploy/kubernetes.yaml`` and ``examples/deploy/archangel-web.service``
run this file; ``tests/test_web_examples.py`` holds their ports, paths and
timeouts to the defaults here and in :mod:`archangel.web.server`.

Settings come from the environment: ``SERVICE_HOST`` and ``SERVICE_PORT``
(the echo server: 127.0.0.1:8080), ``WEB_HOST`` and ``WEB_PORT`` (metrics and
probes: 127.0.0.1:9100; 0 picks a free port), ``WEB_TOKEN`` (required when
``WEB_HOST`` is not a loopback address, as in a pod: ``0.0.0.0``) and
``SERVICE_SHUTDOWN_TIMEOUT`` (seconds, default 30).
"""

from __future__ import annotations

import asyncio
import logging
import os

from archangel import App, State
from archangel.web.server import DEFAULT_PORT

#: The echo server's port when ``SERVICE_PORT`` is not set.
SERVICE_PORT = 8080

web: dict[str, object] = {
    "host": os.environ.get("WEB_HOST", "127.0.0.1"),
    "port": int(os.environ.get("WEB_PORT", str(DEFAULT_PORT))),
}
if os.environ.get("WEB_TOKEN"):
    web["token"] = os.environ["WEB_TOKEN"]

app = App(
    "web-service",
    shutdown_timeout=float(os.environ.get("SERVICE_SHUTDOWN_TIMEOUT", "30")),
    web=web,
)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo lines until the client (or a graceful stop) ends the input."""
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.write(b"bye\n")
    await writer.drain()


@app.bus.on(State.START)
async def start() -> None:
    host = os.environ.get("SERVICE_HOST", "127.0.0.1")
    await app.serve_streams(echo, host, int(os.environ.get("SERVICE_PORT", str(SERVICE_PORT))))


@app.bus.on(State.RUN)
def running() -> None:
    host, port = app.addresses[0][:2]
    print(f"echo on {host}:{port}", flush=True)
    print(f"metrics and probes on {app.web.url}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    raise SystemExit(app.run())

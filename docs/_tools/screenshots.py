"""Take the dashboard's screenshots for ``docs/web.rst``: ``docs/_static/dashboard*.png``.

Runs a small App with its web server (an echo service under a light load of
clients that come and go, a pipeline, a supervisor with two children), lets
the plots fill for a while, and has headless Chromium (Debian's
``chromium``) take two screenshots of ``/`` from a thread, so the app's loop
runs on meanwhile:

* ``dashboard.png``: the service running;
* ``dashboard-blocked.png``: the same while the app's loop is blocked by a
  ``time.sleep`` loop (the red banner and the blocking line).

Run from the repository's root, with the ``web`` extra installed::

    python docs/_tools/screenshots.py [--seconds 40]

The window is sized to keep each PNG under 200 kB.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import linecache
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from archangel import App, ChildSpec, Pipeline, State, Supervisor

STATIC = Path(__file__).resolve().parents[1] / "_static"
WINDOW = "1200,1100"
#: The service's own code, as the table's details show it: compiled under a file
#: name of its own, so no path of the machine that took the screenshots shows.
FILENAME = "shop/jobs.py"
SERVICE = """
import asyncio
import time


async def mailer():
    await asyncio.Event().wait()


async def indexer():
    await asyncio.Event().wait()


def reindex(done):
    while not done.is_set():
        time.sleep(0.01)  # rebuilding the index on the app's loop: the mistake to find
"""


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()


async def load(host: str, port: int) -> None:
    """Twenty clients that stay, and one that comes and goes about twenty times a second."""
    kept = [await asyncio.open_connection(host, port) for _ in range(20)]
    for n in itertools.count():
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"hello %d\n" % n)
        await reader.readline()
        writer.close()
        await asyncio.sleep(0.02 + 0.03 * (n % 50 > 25))  # a rate that changes
        kept_reader, kept_writer = kept[n % len(kept)]
        kept_writer.write(b"still here\n")
        await kept_reader.readline()


async def readings() -> AsyncIterator[dict[str, float]]:
    for n in itertools.count():
        yield {"sensor": n % 7, "value": (n * 37) % 101}
        await asyncio.sleep(0.01)


def screenshot(url: str, path: Path) -> None:
    """Headless Chromium's screenshot of ``url`` into ``path`` (blocking)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="archangel-shots-", ignore_cleanup_errors=True) as tmp:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp}",
                f"--window-size={WINDOW}",
                "--virtual-time-budget=4000",
                f"--screenshot={path}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    print(f"{path}: {path.stat().st_size / 1000:.0f} kB")


async def main(seconds: float) -> None:
    app = App("shop-frontend", web={"port": 0, "probe_interval": 0.2, "block_threshold": 0.5})
    runner = asyncio.ensure_future(app.main())
    await app.bus.wait(State.RUN, State.EXITED)
    server = await app.serve_streams(echo, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    service: dict[str, Any] = {}
    exec(compile(SERVICE, FILENAME, "exec"), service)
    # Its source for the stacks (the blocked banner shows the blocking line).
    linecache.cache[FILENAME] = (len(SERVICE), None, SERVICE.splitlines(True), FILENAME)
    jobs = [ChildSpec(service[name], name=name) for name in ("mailer", "indexer")]
    app.manager.spawn(Supervisor(*jobs, name="jobs"))
    app.manager.spawn(
        Pipeline(readings(), lambda r: [r] if r["value"] > 10 else None, name="sensors")
    )
    loader = asyncio.ensure_future(load(host, port))
    await asyncio.sleep(seconds)  # the plots fill
    url = app.web.url
    STATIC.mkdir(exist_ok=True)
    await asyncio.to_thread(screenshot, url, STATIC / "dashboard.png")

    done = threading.Event()

    def blocked_shot() -> None:  # on its own thread: the app's loop is blocked meanwhile
        try:
            time.sleep(1.5)  # past block_threshold: the page shows the banner
            screenshot(url, STATIC / "dashboard-blocked.png")
        finally:
            done.set()

    thread = threading.Thread(target=blocked_shot)
    thread.start()
    asyncio.get_running_loop().call_soon(service["reindex"], done)
    await asyncio.sleep(0)  # the loop blocks here until the screenshot is taken
    await asyncio.to_thread(thread.join)
    loader.cancel()
    app.request_stop(quick=True)
    await runner


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="before the first (40)")
    asyncio.run(main(parser.parse_args().seconds))

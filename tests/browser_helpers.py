"""A headless Chromium driven over its DevTools WebSocket: the ``browser`` fixture (conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import until

#: Seconds Chromium has for one answer (or one run); it takes about 2 s.
BROWSER_TIMEOUT = 30.0


#: Chromium's flags for a quiet headless run (with a profile of its own, added per run).
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str:
    """The Chromium to drive (Debian's); the test is skipped without one."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip(
            "chromium is not installed (apt-get install chromium; nox's tests session does)"
        )
    return found


def profile_dir() -> tempfile.TemporaryDirectory[str]:
    """A throwaway profile (Chromium's helper processes may still write it as it goes)."""
    return tempfile.TemporaryDirectory(prefix="archangel-chromium-", ignore_cleanup_errors=True)


class Browser:
    """A headless Chromium driven over the DevTools protocol (a WebSocket), one page."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self._id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        await self.socket.send_json({"id": self._id, "method": method, "params": params})
        while True:  # events of the page come in between: skip them
            message = json.loads((await self.socket.receive(timeout=BROWSER_TIMEOUT)).data)
            if message.get("id") == self._id:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    async def run(self, script: str) -> Any:
        """Evaluate ``script`` in the page (awaiting a promise); its value."""
        answer = await self.call(
            "Runtime.evaluate", expression=script, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in answer, answer["exceptionDetails"]
        return answer["result"].get("value")

    async def wait(self, condition: str) -> Any:
        """Wait in the page until the expression ``condition`` is truthy; its value."""
        return await self.run(
            "new Promise((done, fail) => { const end = Date.now() + 10000;"
            f" (function poll() {{ const value = ({condition});"
            " if (value) done(value); else if (Date.now() > end) fail(new Error('timed out'));"
            " else setTimeout(poll, 20); })(); })"
        )


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium with a blank page, driven over its DevTools WebSocket."""
    with profile_dir() as profile:
        process = await asyncio.create_subprocess_exec(
            chromium(),
            *HEADLESS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helpers in its group, stopped with it
        )
        try:
            active = Path(profile) / "DevToolsActivePort"
            await until(lambda: len(active.read_text().split()) >= 2 if active.exists() else False)
            port = active.read_text().split()[0]
            async with aiohttp.ClientSession() as client:
                async with client.get(f"http://127.0.0.1:{port}/json/list") as response:
                    pages = [p for p in await response.json() if p["type"] == "page"]
                async with client.ws_connect(pages[0]["webSocketDebuggerUrl"]) as socket:
                    yield Browser(socket)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            await process.wait()

"""Tests for archangel.service.dumps: the state dump's contents and the Writer's atomic writes."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from archangel import App, Process, ProcessManager, State
from archangel.service import dumps
from tests.test_statistics import Job

# -- the state dump: settings, history, what the app adds ------------------------------------


async def test_the_state_dump_holds_settings_history_and_the_state_subscribers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(
        "stateful",
        shutdown_timeout=7,
        state_file=tmp_path / "state.json",
        pidfile=tmp_path / "svc.pid",
        signals={"HUP": "state", "ALRM": "my-channel"},
        console={"token": "s3cret"},
        history=2,
        stats_interval=60,
    )

    @app.bus.on("state")
    def cache() -> dict[str, int]:
        return {"entries": 12}

    @app.bus.on("state", priority=60)
    async def queue() -> list[str]:
        await asyncio.sleep(0)
        return ["a", "b"]

    @app.bus.on("state", priority=70)
    def broken() -> None:
        raise RuntimeError("no state today")

    task = asyncio.ensure_future(app.main())
    await app.bus.wait(State.RUN)
    try:
        for n in range(3):
            job = app.manager.register(Job())
            job.name = f"job-{n}"
            job.inc("done")
            job._exit(None)
        live = app.manager.register(Job())
        live.inc("done", 2)
        path = await app.dump("state")
        state = json.loads(Path(path).read_text())
    finally:
        app.request_stop()
        await task
    settings = state["settings"]
    assert settings["name"] == "stateful" and settings["shutdown_timeout"] == 7
    assert settings["signals"]["SIGHUP"] == ["state"]
    assert settings["signals"]["SIGALRM"] == ["channel 'my-channel'"]
    assert settings["signals"]["SIGINT"] == ["graceful", "quick", "immediate"]
    assert settings["pidfile"] == str(tmp_path / "svc.pid")
    assert settings["stats_interval"] == 60 and settings["runlog_interval"] is None
    assert settings["console"]["address"][0] == "127.0.0.1" and settings["console"]["token"]
    assert "s3cret" not in json.dumps(state)  # the console's token is a secret
    assert settings["history"] == 2
    assert [r["name"] for r in state["history"]] == ["job-1", "job-2"]  # bounded, oldest first
    assert state["app"] == {
        "test_the_state_dump_holds_settings_history_and_the_state_subscribers.<locals>.cache": {
            "entries": 12
        },
        "test_the_state_dump_holds_settings_history_and_the_state_subscribers.<locals>.queue": [
            "a",
            "b",
        ],
        "test_the_state_dump_holds_settings_history_and_the_state_subscribers.<locals>.broken": {
            "error": "RuntimeError: no state today"
        },
    }
    assert "state subscriber" in caplog.text and "no state today" in caplog.text
    row = next(p for p in state["processes"] if p["pid"] == live.pid)
    assert row["user"] == {"done": 2}
    assert state["counters"]["kinds"]["job"]["user"] == {"done": 5}


class Busy(Process):
    """A process that uses the name ``statistics`` for its own data."""

    kind = "busy"

    def __init__(self) -> None:
        self.statistics = {"mine": True}  # type: ignore[assignment,method-assign]


async def test_the_dumps_read_the_mixins_counts_whatever_a_class_calls_statistics() -> None:
    manager = ProcessManager()
    busy = manager.register(Busy())
    busy.inc("n")
    state = dumps.state(manager, name="busy")
    assert state["processes"][0]["user"] == {"n": 1}
    assert json.loads("".join(await dumps.state_text(manager, name="busy")))["processes"][0][
        "user"
    ] == {"n": 1}


async def test_state_text_with_history_and_user_counts_is_the_state() -> None:
    manager = ProcessManager(history=50)
    for n in range(40):
        job = manager.register(Job())
        job.inc("n", n)
        if n % 2:
            job._exit(None)
    options: dict[str, Any] = {"name": "h", "settings": {"a": 1}, "app": {"b": [2]}}
    text = "".join(await dumps.state_text(manager, **options))
    whole = dumps.state(manager, **options)
    got = json.loads(text)
    for key in ("time", "tasks"):
        got.pop(key), whole.pop(key)
    assert got == json.loads(json.dumps(whole, default=str))
    assert len(got["history"]) == 20 and got["processes"][0]["user"] == {"n": 0}


# -- the Writer: one temporary file per write, finished even if its caller is cancelled ---


async def test_write_json_from_many_writers_at_once(tmp_path: Path) -> None:
    """Each write has a temporary file of its own: none fails, none is seen half-written."""
    target = tmp_path / "shared.json"
    invalid: list[int] = []
    done = threading.Event()

    def read_while_writing() -> None:
        while not done.is_set():
            try:
                text = target.read_text()
            except FileNotFoundError:
                continue
            try:
                json.loads(text)
            except ValueError:
                invalid.append(len(text))

    writer = dumps.Writer()
    reader = threading.Thread(target=read_while_writing)
    reader.start()
    try:
        for _ in range(10):
            writes = [
                writer.write_json(target, {"n": n, "pad": "x" * 100_000 * n}) for n in range(4)
            ]
            assert await asyncio.gather(*writes) == [str(target)] * 4
    finally:
        done.set()
        await asyncio.to_thread(reader.join)
    assert invalid == []
    assert json.loads(target.read_text())["n"] in range(4)
    assert os.listdir(tmp_path) == ["shared.json"]
    assert writer.pending == 0


async def test_a_write_whose_caller_is_cancelled_is_finished_and_held_by_its_writer(
    tmp_path: Path,
) -> None:
    writer = dumps.Writer()
    target = tmp_path / "state.json"
    caller = asyncio.ensure_future(writer.write_text(target, ['{"a": ', "1}"]))
    await asyncio.sleep(0)  # the write has begun
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert writer.pending == 1  # the writer holds it, not a module-level set
    while writer.pending:
        await asyncio.sleep(0.01)
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["state.json"]

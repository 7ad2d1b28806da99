"""tail() against the real logrotate, and the edges an operator hits.

A writer *process* appends numbered lines at full speed (one ``write`` per
line, no pause; about two million lines a second) while ``logrotate -f -s
state conf`` rotates its file ten times, in each mode operators use:
``create`` (rename, new file; ``postrotate`` sends the writer SIGHUP and it
reopens), ``compress`` + ``delaycompress``, ``nocreate`` (rename, no new file
until the writer reopens: it first goes on writing to the renamed file, and
those lines must arrive before any new file exists), ``nocreate`` +
``compress`` (the renamed file is also gzipped and deleted while written) and
``copytruncate``. The writer's line count is bounded, not its time: the test
lets it write ``QUOTA`` more lines just before each logrotate run, so the two
race. Every line must come out of the tail once, in order; with copytruncate
no line twice, in order, and a missing line only inside logrotate's own
copy/truncate window, measured from the copies.

A slow pipeline (a sink slower than the writer) lags several copy-truncate
rotations behind, ten run back to back: every line still comes once, in order,
from the copies; what only compressed copies held is missing and counted to
the byte in ``Tail.lost_bytes``.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from archangel import ExitReason
from archangel.pipes import _copies
from archangel.pipes.pipeline import Pipeline
from archangel.pipes.supplies import Tail, tail
from archangel.pipes.watch import Change, Watcher, inotify_available
from tests.helpers import until

INTERVAL = 0.005
ROTATIONS = 10
QUOTA = 10000  # lines the writer may write per rotation, at full speed
SLOW_QUOTA = 50000  # lines per rotation with the slow pipeline
HEAD = 100  # lines it writes after each rotation, past its quota
WAIT = 20.0  # generous: a loaded 2-core machine

LOGROTATE = shutil.which("logrotate", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")

MODES = {
    "create": "create",
    "copytruncate": "copytruncate",
    "delaycompress": "create\n    compress\n    delaycompress",
    "nocreate": "nocreate",
    "compress": "nocreate\n    compress",  # renamed, gzipped, deleted: written on all the same
}

WRITER = r"""
import os, signal, sys, threading, time

path, quota, head, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cap = hups = 0
ended = False
reopen = threading.Event()


def on_hup(signo, frame):
    global hups
    hups += 1


def commands():
    global cap, ended
    for line in sys.stdin:
        if line == "go\n":
            cap += quota
        elif line == "reopen\n":
            reopen.set()
    ended = True


signal.signal(signal.SIGHUP, on_hup)
threading.Thread(target=commands, daemon=True).start()
flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
fd = os.open(path, flags, 0o644)
print("ready", flush=True)
seen = n = idle = 0
while True:
    if seen < hups:  # logrotate's postrotate: a rotation happened
        seen += 1
        idle += n >= cap  # it came while the writer had nothing left to write
        if mode in ("nocreate", "compress"):
            # No file at the path now: go on writing to the renamed one, say how
            # far, and reopen (creating the file) only when the test says so.
            while mode == "compress" and os.fstat(fd).st_nlink:
                time.sleep(0.0002)  # until logrotate gzipped it and deleted it
            for _ in range(quota // 4):
                os.write(fd, b"%d\n" % n)
                n += 1
            print("old", n, flush=True)
            reopen.wait()
            reopen.clear()
        if mode != "copytruncate":  # reopen the log, as a daemon does on SIGHUP
            os.close(fd)
            fd = os.open(path, flags, 0o644)
        print("at", n, flush=True)
        for _ in range(head):  # a few lines the test waits for in the new file
            os.write(fd, b"%d\n" % n)
            n += 1
    if n >= cap:
        if ended:
            break
        time.sleep(0.0002)
        continue
    os.write(fd, b"%d\n" % n)
    n += 1
print("done", n, idle, flush=True)
"""


def _logrotate() -> str:
    if LOGROTATE is None:
        pytest.fail(
            "logrotate is not installed: these tests drive the real tool "
            "(apt-get install logrotate; the nox tests session installs it)"
        )
    return LOGROTATE


@pytest.fixture(params=["inotify", "polling"])
async def watcher(request: pytest.FixtureRequest) -> AsyncIterator[Watcher]:
    if request.param == "inotify" and not inotify_available():
        pytest.fail("no inotify here: these tests run on Linux")
    async with Watcher(polling=request.param == "polling", interval=INTERVAL) as w:
        yield w


class Collect:
    """A pipeline over a tail that collects the numbered lines it delivers."""

    def __init__(self, supply: Tail) -> None:
        self.supply = supply
        self.got: list[int] = []
        self.pipeline = Pipeline(supply, sink=self._sink, name="collect")

    def _sink(self, line: str) -> None:
        self.got.append(int(line))

    async def __aenter__(self) -> Collect:
        self.pipeline.start()
        await until(lambda: self.pipeline._reading)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pipeline.stop()
        assert self.pipeline.exit_reason is ExitReason.SHUTDOWN

    async def reached(self, count: int) -> None:
        """Wait until ``count`` lines came (fails after WAIT seconds)."""
        await until(lambda: len(self.got) >= count, WAIT)

    async def line(self, number: int) -> None:
        """Wait until line ``number`` came."""
        await until(lambda: bool(self.got) and self.got[-1] >= number, WAIT)


async def rotate(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        _logrotate(),
        "-f",
        "-s",
        str(tmp_path / "state"),
        str(tmp_path / "conf"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


async def read_line(stream: asyncio.StreamReader) -> str:
    async with asyncio.timeout(WAIT):
        return (await stream.readline()).decode().strip()


def lines_of(path: Path) -> list[int]:
    """The complete numbered lines of a file (a copy may end inside a line)."""
    data = path.read_bytes()
    return [int(line) for line in data[: data.rfind(b"\n") + 1].split()]


@pytest.mark.parametrize("mode", list(MODES))
async def test_every_line_once_in_order_through_ten_logrotate_rotations(
    mode: str, watcher: Watcher, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    collect = Collect(tail(log, watcher=watcher))
    async with collect:
        writer = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", WRITER, str(log), str(QUOTA), str(HEAD), mode),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert writer.stdin is not None and writer.stdout is not None
        command, said = writer.stdin.write, writer.stdout
        try:
            assert await read_line(said) == "ready"
            (tmp_path / "conf").write_text(
                f"{log} {{\n    rotate 20\n    {MODES[mode]}\n"
                f"    postrotate\n        kill -HUP {writer.pid}\n    endscript\n}}\n"
            )
            command(b"go\n")
            await collect.reached(1)  # the tail has the first file open
            for _ in range(ROTATIONS):
                command(b"go\n")  # the writer's next QUOTA lines, while logrotate runs
                await rotate(tmp_path)
                if mode in ("nocreate", "compress"):
                    # No file at the path: what the writer appends to the renamed
                    # one must come all the same, before any new file exists.
                    old, written = (await read_line(said)).split()
                    assert old == "old" and not log.exists()
                    await collect.reached(int(written))
                    command(b"reopen\n")
                # Rotate again only once the tail read from the new file (or from
                # the truncated one): a tail that does not look at a file between
                # two rotations of it cannot know what it held (see the docs).
                at, first = (await read_line(said)).split()
                assert at == "at"
                await collect.line(int(first))
            writer.stdin.close()
            done, total, idle = (await read_line(said)).split()
            assert done == "done"
            async with asyncio.timeout(WAIT):
                await writer.wait()
            await collect.line(int(total) - 1)
        finally:
            if writer.returncode is None:
                writer.kill()
                await writer.wait()
    print(f"{mode}: {total} lines, {idle} of {ROTATIONS} rotations while the writer waited")
    assert (collect.supply.truncations, collect.supply.rotations) == (
        (ROTATIONS, 0) if mode == "copytruncate" else (0, ROTATIONS)
    )
    got, total = collect.got, int(total)
    if mode != "copytruncate":
        assert len(got) == total and got == list(range(total)), _first_difference(got, total)
        return
    # copytruncate: no duplicates, in order, and every line missing lies in a
    # window between one copy's last line and the first line after its truncation.
    assert all(a < b for a, b in itertools.pairwise(got)), "duplicated or reordered"
    # Each copy holds one generation of the file (the last one is the file itself);
    # a generation the writer wrote nothing to is empty.
    generations = sorted(
        (ns for ns in map(lines_of, tmp_path.glob("app.log*")) if ns), key=lambda ns: ns[0]
    )
    assert len(generations) >= 2
    windows = [(older[-1], newer[0]) for older, newer in itertools.pairwise(generations)]
    missing = sorted(set(range(total)) - set(got))
    outside = [n for n in missing if not any(last < n < first for last, first in windows)]
    sizes = [first - last - 1 for last, first in windows]
    print(f"copy/truncate windows (lines): {sizes}; missing: {len(missing)}")
    assert not outside, f"lost outside logrotate's copy/truncate windows {windows}: {outside[:20]}"
    assert len(missing) <= sum(sizes), (missing, windows)


SLOW_MODES = {
    "copytruncate": "copytruncate",
    "delaycompress": "copytruncate\n    compress\n    delaycompress",
    "compress": "copytruncate\n    compress",  # each copy gzipped at once: not readable
}


def copy_lines(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


@pytest.mark.parametrize("mode", list(SLOW_MODES))
async def test_a_slow_pipeline_through_ten_copytruncate_rotations_in_a_row(
    mode: str, watcher: Watcher, tmp_path: Path
) -> None:
    """The audit's case: the pipeline is slower than the writer, so the tail's
    position lags several copy-truncate rotations behind the file."""
    log = tmp_path / "app.log"
    supply = tail(log, watcher=watcher)
    got: list[int] = []

    async def slow(line: str) -> None:  # about 100,000 lines a second: slower than the writer
        got.append(int(line))
        if len(got) % 1000 == 0:
            await asyncio.sleep(0.01)

    pipeline = Pipeline(supply, sink=slow, buffer=16, name="slow")
    pipeline.start()
    await until(lambda: pipeline._reading)
    writer = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", WRITER, str(log), str(SLOW_QUOTA), str(HEAD), "copytruncate"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert writer.stdin is not None and writer.stdout is not None
    command, said = writer.stdin.write, writer.stdout
    try:
        assert await read_line(said) == "ready"
        (tmp_path / "conf").write_text(
            f"{log} {{\n    rotate 20\n    {SLOW_MODES[mode]}\n"
            f"    postrotate\n        kill -HUP {writer.pid}\n    endscript\n}}\n"
        )
        command(b"go\n")
        await until(lambda: bool(got), WAIT)  # the tail has the file open
        for _ in range(ROTATIONS):  # back to back: the tail is not waited for
            command(b"go\n")
            await rotate(tmp_path)
            assert (await read_line(said)).split()[0] == "at"
        writer.stdin.close()
        done, total, _ = (await read_line(said)).split()
        assert done == "done"
        async with asyncio.timeout(WAIT):
            await writer.wait()
        last = int(total) - 1  # in the file itself: never lost
        await until(lambda: bool(got) and got[-1] >= last, 3 * WAIT)
    finally:
        if writer.returncode is None:
            writer.kill()
            await writer.wait()
        await pipeline.stop()
    bad = next((i for i, (a, b) in enumerate(itertools.pairwise(got)) if a >= b), None)
    assert bad is None, f"duplicated or reordered at {bad}: {got[bad - 3 : bad + 4]}"
    assert supply.truncations >= 1
    # The generations of the file, oldest first (the copies, then the file).
    datas = sorted(
        (d for d in map(copy_lines, tmp_path.glob("app.log*")) if d.strip()),
        key=lambda d: int(d.split(maxsplit=1)[0]),
    )
    generations = [[int(n) for n in d[: d.rfind(b"\n") + 1].split()] for d in datas]
    windows = [(older[-1], newer[0]) for older, newer in itertools.pairwise(generations)]
    missing = set(range(int(total))) - set(got)
    in_copies = missing & {n for ns in generations for n in ns}
    outside = [n for n in missing - in_copies if not any(a < n < b for a, b in windows)]
    assert not outside, f"lost outside logrotate's copy/truncate windows {windows}: {outside[:20]}"
    # What a copy held and the tail could not read (compressed before it got
    # there) is counted, to the byte: from the first line missing to the copy's end.
    lost = 0
    for data, numbers in zip(datas, generations, strict=True):
        gone = [n for n in numbers if n in in_copies]
        if gone:
            first = b"%d\n" % gone[0]
            lost += len(data) - (0 if data.startswith(first) else data.index(b"\n" + first) + 1)
    print(
        f"{mode}: {total} lines, {supply.truncations} truncations noticed, "
        f"{len(missing - in_copies)} in copy/truncate windows, {len(in_copies)} in "
        f"compressed copies ({supply.lost_bytes} bytes counted lost)"
    )
    assert supply.lost_bytes == lost
    if mode == "copytruncate":  # every copy readable: nothing but the windows lost
        assert not in_copies


def _first_difference(got: list[int], total: int) -> str:
    for index, (a, b) in enumerate(zip(got, range(total), strict=False)):
        if a != b:
            return f"{len(got)} of {total} lines; at index {index}: got {got[index : index + 5]}"
    return f"{len(got)} of {total} lines"


# -- the edges --------------------------------------------------------------------------


class Follow:
    """A pipeline over a tail; lines arrive on a queue the test awaits."""

    def __init__(self, supply: Tail) -> None:
        self.supply = supply
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.pipeline = Pipeline(supply, sink=self.queue.put_nowait, name="follow")

    async def __aenter__(self) -> Follow:
        self.pipeline.start()
        await until(lambda: self.pipeline._reading)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pipeline.stop()
        assert self.pipeline.exit_reason is ExitReason.SHUTDOWN

    async def expect(self, *expected: str) -> None:
        async with asyncio.timeout(5):
            got = [await self.queue.get() for _ in expected]
        assert got == list(expected)
        assert self.queue.empty()


def fixed(numbers: range) -> bytes:
    """Lines of one width, as timestamped logs have: a truncation keeps a newline
    at the old position, so only a longer look at the bytes notices it."""
    return b"".join(b"line %06d\n" % n for n in numbers)


@pytest.mark.parametrize("mode", ["copytruncate", "create"])
async def test_a_rotation_while_a_slow_pipeline_holds_the_tail_back(
    mode: str, watcher: Watcher, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    (tmp_path / "conf").write_text(f"{log} {{\n    rotate 5\n    {mode}\n}}\n")
    gate, entered, got = asyncio.Event(), asyncio.Event(), []

    async def slow(line: str) -> None:
        entered.set()
        await gate.wait()
        got.append(line)

    supply = tail(log, watcher=watcher)
    pipeline = Pipeline(supply, sink=slow, buffer=1, name="slow")
    pipeline.start()
    await until(lambda: pipeline._reading)
    writer = log.open("ab", buffering=0)  # O_APPEND, one write per call
    try:
        writer.write(fixed(range(100)))
        async with asyncio.timeout(5):
            await entered.wait()
        await until(lambda: not pipeline._reading)  # the tail waits for the sink
        writer.write(fixed(range(100, 200)))  # not read yet when logrotate acts
        await rotate(tmp_path)
        writer.write(fixed(range(200, 250)))  # create: into the renamed file still
        if mode == "create":
            writer.close()
            writer = log.open("ab", buffering=0)  # the daemon reopens its log
        writer.write(fixed(range(250, 400)))  # copytruncate: past where the tail read
    finally:
        writer.close()
    gate.set()
    await until(lambda: len(got) >= 400)
    await pipeline.stop()
    assert got == [f"line {n:06d}" for n in range(400)]
    assert (supply.truncations, supply.rotations) == ((1, 0) if mode == "copytruncate" else (0, 1))


@pytest.mark.parametrize("names", ["dateext", "compressed"])
async def test_copies_made_while_a_slow_pipeline_holds_the_tail_back(
    names: str, watcher: Watcher, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three copy-truncates by hand while the tail waits on its sink: named by
    date (ordered by modification time, a look-alike that is no copy beside
    them), or numbered with the middle one gzipped (counted lost, once)."""
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    (tmp_path / "app.log.pos").write_bytes(fixed(range(900, 910)))  # no copy: never read
    gate, entered, got = asyncio.Event(), asyncio.Event(), []

    async def slow(line: str) -> None:
        entered.set()
        await gate.wait()
        got.append(line)

    supply = tail(log, watcher=watcher)
    pipeline = Pipeline(supply, sink=slow, buffer=1, name="slow")
    pipeline.start()
    await until(lambda: pipeline._reading)
    writer = log.open("ab", buffering=0)
    try:
        writer.write(fixed(range(100)))
        async with asyncio.timeout(5):
            await entered.wait()
        await until(lambda: not pipeline._reading)  # the tail waits for the sink
        for n, first in enumerate((100, 200, 300), 1):
            writer.write(fixed(range(first, first + 100)))
            copy = tmp_path / (f"app.log-2026010{n}" if names == "dateext" else f"app.log.{4 - n}")
            shutil.copyfile(log, copy)
            os.truncate(log, 0)
        if names == "compressed":
            gz = await asyncio.create_subprocess_exec("gzip", str(tmp_path / "app.log.2"))
            assert await gz.wait() == 0
        writer.write(fixed(range(400, 450)))
    finally:
        writer.close()
    gate.set()
    await until(lambda: bool(got) and got[-1] == "line 000449")
    await pipeline.stop()
    lost = range(200, 300) if names == "compressed" else range(0)
    assert got == [f"line {n:06d}" for n in range(450) if n not in lost]
    assert supply.lost_bytes == len(fixed(lost))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if names == "compressed":
        (warning,) = warnings  # one per truncation
        assert f"{len(fixed(lost))} bytes" in warning and "app.log.2.gz" in warning
    else:
        assert not warnings


async def test_a_copy_truncate_while_the_tail_looks_at_the_copies_of_the_last_one(
    watcher: Watcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """logrotate run back to back: the file is copied and truncated again while
    the tail is looking for the copy of the previous truncation (a loaded
    machine, many copies to look at). The file's new content is not the one
    the tail saw at that truncation: the second one is noticed too, its copy
    read, and nothing read twice at the next one. The second copy-truncate is
    done by hand at that moment: inside the tail's look at the copies."""
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    real_scan, rotations = _copies.scan, []

    def copy_truncate(then: bytes) -> None:  # logrotate: rename, copy, truncate
        for n in range(3, 0, -1):
            if (tmp_path / f"app.log.{n}").exists():
                os.rename(tmp_path / f"app.log.{n}", tmp_path / f"app.log.{n + 1}")
        shutil.copyfile(log, tmp_path / "app.log.1")
        os.truncate(log, 0)
        writer.write(then)

    def scan(path: str, held: set[tuple[int, int]]) -> list[_copies.Copy]:
        if rotations:  # the next logrotate run, while the tail looks
            copy_truncate(rotations.pop())
        return real_scan(path, held)

    async def up_to(last: int) -> list[int]:  # the lines that came, up to line ``last``
        got = [-1]
        async with asyncio.timeout(5):
            while got[-1] != last:
                got.append(int((await follow.queue.get()).split()[1]))
        return got[1:]

    monkeypatch.setattr(_copies, "scan", scan)
    async with Follow(tail(log, watcher=watcher)) as follow:
        with log.open("ab", buffering=0) as writer:
            writer.write(fixed(range(100)))
            assert await up_to(99) == list(range(100))
            rotations.append(fixed(range(150, 300)))  # longer than the last one
            copy_truncate(fixed(range(100, 150)))
            assert await up_to(299) == list(range(100, 300))
            copy_truncate(fixed(range(300, 310)))
            assert await up_to(309) == list(range(300, 310))
        assert not rotations and follow.queue.empty()
        assert (follow.supply.truncations, follow.supply.lost_bytes) == (3, 0)


async def test_a_copy_deleted_before_a_slow_pipeline_got_there(
    watcher: Watcher, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the tail had measured of the file and not read, its copy gone
    (``rotate 0``), is counted lost and said in one warning."""
    log = tmp_path / "app.log"
    old = fixed(range(200_000))  # about 2.3 MiB: more than one READ_AHEAD
    log.write_bytes(b"")
    gate, entered, got = asyncio.Event(), asyncio.Event(), []

    async def slow(line: str) -> None:
        entered.set()
        await gate.wait()
        got.append(line)

    supply = tail(log, watcher=watcher)
    pipeline = Pipeline(supply, sink=slow, buffer=1, name="slow")
    pipeline.start()
    await until(lambda: pipeline._reading)
    with log.open("ab", buffering=0) as writer:
        writer.write(old)  # read up to READ_AHEAD, its size measured
        async with asyncio.timeout(5):
            await entered.wait()
        await until(lambda: not pipeline._reading)  # the tail waits for the sink
        os.truncate(log, 0)  # a copy-truncate whose copy is deleted at once
        writer.write(fixed(range(500_000, 500_010)))
    gate.set()
    await until(lambda: bool(got) and got[-1] == "line 500009")
    await pipeline.stop()
    delivered = [line for line in got if line < "line 500000"]
    assert delivered == [f"line {n:06d}" for n in range(len(delivered))]
    assert 0 < len(delivered) < 200_000
    assert supply.lost_bytes == len(old) - len(fixed(range(len(delivered))))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"{supply.lost_bytes} bytes" in warning and "no copy" in warning


async def test_a_rotated_file_truncated_then_written_again(
    watcher: Watcher, tmp_path: Path
) -> None:
    log, old = tmp_path / "app.log", tmp_path / "app.log.1"
    log.write_text("")
    async with Follow(tail(log, watcher=watcher)) as follow:
        with log.open("a", buffering=1) as writer:
            writer.write("a1\n")
            await follow.expect("a1")
            os.rename(log, old)
            log.write_text("n1\n")
            await follow.expect("n1")
            os.truncate(old, 0)  # someone empties the rotated file; its writer goes on
            writer.write("a2\n")
            await follow.expect("a2")
            writer.write("a3 longer\n")
            await follow.expect("a3 longer")
        assert (follow.supply.rotations, follow.supply.truncations) == (1, 1)


async def test_a_symlink_swapped_to_another_file_and_back(
    watcher: Watcher, tmp_path: Path
) -> None:
    releases = tmp_path / "releases"
    releases.mkdir()
    a, b, log = releases / "a.log", releases / "b.log", tmp_path / "app.log"
    a.write_text("")
    b.write_text("")

    def point_to(target: Path) -> None:  # ln -sfn, atomically
        os.symlink(target, tmp_path / "app.log.new")
        os.rename(tmp_path / "app.log.new", log)

    point_to(a)
    async with Follow(tail(log, watcher=watcher)) as follow:
        with a.open("a", buffering=1) as to_a, b.open("a", buffering=1) as to_b:
            to_a.write("a1\n")  # written through no name the directory watch knows
            await follow.expect("a1")
            point_to(b)
            to_b.write("b1\n")
            await follow.expect("b1")
            to_a.write("a2\n")  # a writer still on the old target
            await follow.expect("a2")
            point_to(a)  # swapped back: a.log is not read again from its start
            to_a.write("a3\n")
            await follow.expect("a3")
            to_b.write("b2\n")
            await follow.expect("b2")
        assert follow.supply.rotations == 2


async def test_an_unterminated_last_line_of_a_rotated_file_comes_when_the_tail_stops(
    watcher: Watcher, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    follow = Follow(tail(log, watcher=watcher))
    async with follow:
        with log.open("a", buffering=1) as writer:
            writer.write("whole\npart")
            await follow.expect("whole")
            os.rename(log, tmp_path / "app.log.1")
        log.write_text("new\n")
        await follow.expect("new")
        await until(lambda: follow.pipeline._reading)  # waiting, within the grace
    assert follow.queue.get_nowait() == "part"  # handed over as the tail stopped


async def test_an_inotify_queue_overflow_loses_nothing(tmp_path: Path) -> None:
    if not inotify_available():
        pytest.fail("no inotify here: this test runs on Linux")
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    log, other = tmp_path / "app.log", tmp_path / "other.log"
    log.write_text("")
    (tmp_path / "quiet").mkdir()
    async with Watcher() as watcher, Follow(tail(log, watcher=watcher)) as follow:
        quiet = watcher.add(tmp_path / "quiet")  # sees only what all watches see
        # The loop does not run while this writes: the kernel's queue fills
        # (two files written in turn: no two events in a row are alike) and
        # overflows, the rotation in the middle with it.
        expected, fd = [], os.open(log, os.O_WRONLY | os.O_APPEND)
        noise = os.open(other, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for n in range(limit // 2 + 1000):
            os.write(fd, b"%d\n" % n)
            expected.append(str(n))
            os.write(noise, b"x")
            if n == limit // 4:
                os.rename(log, tmp_path / "app.log.1")
                os.close(fd)
                fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.close(fd)
        os.close(noise)
        async with asyncio.timeout(10):
            got = [await follow.queue.get() for _ in expected]
        assert got == expected
        assert Change.OVERFLOW in {e.change for e in quiet.pending()}  # it did overflow
        assert follow.supply.rotations == 1

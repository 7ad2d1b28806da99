"""``archangel console ADDRESS``: a plain line client for the console.

It needs no telnet client and works wherever Python does. It politely
refuses every telnet option the console offers (so the console treats it
like ``nc``: whole lines, no server echo) and strips the negotiation bytes
from the output. With a token, the token is sent as the first line, and the
console's ``token:`` prompt is never shown.

Two ways to run:

* at a terminal: the socket's output is copied to stdout on the calling
  thread and the lines typed (with ``readline``) are sent from a daemon
  thread; the terminal's settings are saved first and put back on every
  way out (``quit``, Ctrl-C, Ctrl-D, the console closing the session);
* scripting (``-c COMMAND``, or stdin not a terminal): one command at a
  time, and only the answers are printed (no banner, no prompts, no
  ``bye``); the exit status is 1 if an answer was an ``error:``, and a
  closed stdout (``| head``) ends it quietly.

This is the client side only: nothing here imports the server.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

from ..errors import ConsoleError

__all__ = ["main", "parse_address", "run_client", "run_script"]

#: Environment variable read for the token when ``--token`` is not given.
_TOKEN_ENV = "ARCHANGEL_CONSOLE_TOKEN"

_IAC, _DONT, _DO, _WONT, _WILL, _SB, _SE = 255, 254, 253, 252, 251, 250, 240


def parse_address(text: str) -> tuple[str, int] | str:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``PORT`` (on 127.0.0.1) or ``unix:PATH``.

    Anything with a ``/`` and no port is taken as a Unix socket path too.

    Raises:
        ConsoleError: The text is none of these.
    """
    if text.startswith("unix:"):
        if not text[5:]:
            raise ConsoleError(f"console address {text!r} has no path")
        return text[5:]
    host, sep, port = text.rpartition(":")
    if not sep:
        if "/" in text:
            return text
        host, port = "127.0.0.1", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise ConsoleError(
            f"console address {text!r} is not HOST:PORT or unix:PATH (bad port {port!r})"
        ) from None
    if not 0 < number < 65536 or not host:
        raise ConsoleError(f"console address {text!r} is not HOST:PORT or unix:PATH")
    return host, number


def connect(address: tuple[str, int] | str, timeout: float = 10.0) -> socket.socket:
    """A connected blocking socket (no timeout once connected).

    Raises:
        ConsoleError: The console cannot be reached; the message names the address.
    """
    try:
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        where = f"unix:{address}" if isinstance(address, str) else f"{address[0]}:{address[1]}"
        raise ConsoleError(f"cannot connect to the console at {where}: {exc}") from exc
    sock.settimeout(None)
    return sock


class TelnetFilter:
    """Removes telnet commands from a byte stream and refuses every option.

    :meth:`feed` returns (data for the screen, replies to send back).
    """

    def __init__(self) -> None:
        self._state = "data"
        self._command = 0

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Filter one chunk received from the console."""
        out = bytearray()
        replies = bytearray()
        i, n = 0, len(data)
        while i < n:
            if self._state == "data":
                j = data.find(_IAC, i)
                if j < 0:
                    out += data[i:]
                    break
                out += data[i:j]
                self._state = "iac"
                i = j + 1
                continue
            byte = data[i]
            i += 1
            if self._state == "iac":
                if byte == _IAC:
                    out.append(_IAC)
                    self._state = "data"
                elif byte in (_DO, _DONT, _WILL, _WONT):
                    self._command = byte
                    self._state = "option"
                elif byte == _SB:
                    self._state = "sb"
                else:
                    self._state = "data"  # a two-byte command (GA, NOP...): ignored
            elif self._state == "option":
                if self._command == _DO:
                    replies += bytes((_IAC, _WONT, byte))
                elif self._command == _WILL:
                    replies += bytes((_IAC, _DONT, byte))
                self._state = "data"
            elif self._state == "sb":
                if byte == _IAC:
                    self._state = "sb-iac"
            else:  # "sb-iac"
                self._state = "data" if byte == _SE else "sb"
        return bytes(out), bytes(replies)


#: What the console asks a session for first when it has a token.
_TOKEN_PROMPT = "token: "
#: The console's prompt: in scripting mode, where one answer ends.
_PROMPT = "archangel> "


class PromptEater:
    """Drops the console's ``token:`` prompt from the start of the output.

    The client sends the token itself, so the operator never has to answer
    the prompt and should not see it (a script's output starts with the
    banner). Output is held back only until it is clear whether it begins
    with the prompt; after it, the newline the console writes before an
    answer to the token (``bad token: disconnected``) goes too.
    """

    def __init__(self) -> None:
        self._held = ""
        self._state = "prompt"  # then "newline", then "done"

    def feed(self, text: str, final: bool = False) -> str:
        """The part of ``text`` to show (``final``: no more output follows)."""
        if self._state == "done":
            return text
        self._held += text
        if self._state == "prompt":
            if _TOKEN_PROMPT.startswith(self._held) and not final:
                return ""  # could still be the prompt
            if self._held.startswith(_TOKEN_PROMPT):
                self._held = self._held[len(_TOKEN_PROMPT) :]
                self._state = "newline"
            else:
                self._state = "done"
        if self._state == "newline":
            if not self._held and not final:
                return ""
            self._held = self._held.removeprefix("\n")
            self._state = "done"
        shown, self._held = self._held, ""
        return shown


def _tty_lines() -> Iterator[str]:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover - Windows
        pass
    while True:
        try:
            yield input() + "\n"
        except EOFError:
            return


def _send_lines(
    sock: socket.socket, stdin: TextIO, token: str | None, quitting: list[bool]
) -> None:
    lines: Iterable[str] = _tty_lines() if stdin is sys.stdin and stdin.isatty() else stdin
    try:
        if token is not None:
            sock.sendall(token.encode() + b"\n")
        for line in lines:
            if line.strip() in ("quit", "exit"):
                quitting.append(True)
            sock.sendall(line.rstrip("\r\n").encode("utf-8", "replace") + b"\n")
            if quitting:
                return
        quitting.append(True)
        sock.sendall(b"quit\n")
    except OSError:
        pass  # the console closed the connection: the reading side reports it


def run_client(
    address: str | tuple[str, int],
    token: str | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Talk to a console until it closes the connection.

    Args:
        address: ``"HOST:PORT"``, ``"unix:PATH"`` (see :func:`parse_address`)
            or a ``(host, port)`` tuple.
        token: Sent as the first line, when given; the console's ``token:``
            prompt is then not shown.
        stdin: Lines to send (default ``sys.stdin``); at its end ``quit`` is sent.
        stdout: Where the console's output goes (default ``sys.stdout``).

    Returns:
        0 when the session ended with ``quit`` (the console answers ``bye``);
        1 when the console closed it otherwise (a bad token, too many
        sessions, the app going away).

    Raises:
        ConsoleError: The address is malformed or cannot be reached.
    """
    target = parse_address(address) if isinstance(address, str) else address
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    sock = connect(target)
    with _terminal_kept(stdin):
        return _interact(sock, stdin, stdout, token)


@contextlib.contextmanager
def _terminal_kept(stream: TextIO) -> Iterator[None]:
    """Put the terminal's settings back as they were, however the block ends.

    ``readline`` turns echo off while it waits for a line; when the console
    ends the session under it (``stop``, shutdown) or Ctrl-C arrives, the
    thread in ``input()`` never gets to restore it: this does, for it.
    """
    saved: Any = None
    fd = -1
    try:
        import termios

        fd = stream.fileno()
        if os.isatty(fd):
            saved = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError, AttributeError):  # not a terminal
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            _restore(termios, fd, saved)


#: Seconds the client keeps watching its terminal after putting it back.
_LATE_PREP = 0.2


def _restore(termios: Any, fd: int, saved: Any) -> None:
    """Put ``saved`` back, and again if ``readline`` changes it meanwhile.

    The thread in ``input()`` may only now be starting its next line (a
    loaded machine), and ``readline`` then turns echo off again after the
    settings were put back; it does so once, at the start of a line, so
    watching for :data:`_LATE_PREP` seconds is enough to undo it.
    """
    deadline = time.monotonic() + _LATE_PREP
    with contextlib.suppress(OSError):
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        while time.monotonic() < deadline:
            time.sleep(0.01)
            if termios.tcgetattr(fd) != saved:
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _interact(sock: socket.socket, stdin: TextIO, stdout: TextIO, token: str | None) -> int:
    quitting: list[bool] = []
    sender = threading.Thread(
        target=_send_lines, args=(sock, stdin, token, quitting), name="console-stdin", daemon=True
    )
    telnet = TelnetFilter()
    prompt = PromptEater() if token is not None else None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = ""  # the end of the output, to see how the session ended
    try:
        sender.start()
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            text, replies = telnet.feed(data)
            if replies:
                try:
                    sock.sendall(replies)
                except OSError:
                    pass
            shown = decoder.decode(text, final=not data).replace("\r\n", "\n")
            if prompt is not None:
                shown = prompt.feed(shown, final=not data)
            if shown:
                shown = shown.replace("\r", "")
                stdout.write(shown)
                stdout.flush()
                tail = (tail + shown)[-64:]
            if not data:
                break
    except KeyboardInterrupt:
        stdout.write("\n")
        return 130
    finally:
        sock.close()
    return 0 if quitting and tail.rstrip().endswith("bye") else 1


class _Answers:
    """The console's output in scripting mode, read one answer (up to a prompt) at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.telnet = TelnetFilter()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.buffer = ""

    def next(self, token_prompt: bool = False) -> tuple[str, bool]:
        """The text up to the next prompt (without it), and whether a prompt came.

        With ``token_prompt``, the console's ``token:`` prompt ends the text
        too (not a prompt: the caller has no token to answer it with).
        """
        while not self.buffer.endswith(_PROMPT):
            if token_prompt and self.buffer.endswith(_TOKEN_PROMPT):
                text, self.buffer = self.buffer, ""
                return text, False
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            shown, replies = self.telnet.feed(data)
            if replies:
                with contextlib.suppress(OSError):
                    self.sock.sendall(replies)
            decoded = self.decoder.decode(shown, final=not data)
            self.buffer += decoded.replace("\r\n", "\n").replace("\r", "")
            if not data:
                rest, self.buffer = self.buffer, ""
                return rest, False
        text, self.buffer = self.buffer[: -len(_PROMPT)], ""
        return text, True


def run_script(
    address: str | tuple[str, int],
    commands: Iterable[str],
    token: str | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``commands`` one at a time and print only their answers.

    No banner, prompt, ``token:`` or ``bye`` is printed: ``archangel
    console ADDRESS -c 'ps --json'`` prints one line of JSON. Each command
    is sent once the answer to the one before has come.

    Returns:
        0 when every command was answered and none with ``error: ...``; 1
        when one was, or the console ended the session early (a bad token,
        too many sessions: what it said goes to ``stderr``).

    Raises:
        ConsoleError: The address is malformed or cannot be reached.
        BrokenPipeError: ``stdout`` was closed (:func:`main` ends quietly then).
    """
    target = parse_address(address) if isinstance(address, str) else address
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    sock = connect(target)
    status = 0
    try:
        answers = _Answers(sock)
        if token is not None:
            sock.sendall(token.encode() + b"\n")
        said, prompted = answers.next(token_prompt=token is None)  # the banner
        if not prompted and token is None and said.endswith(_TOKEN_PROMPT):
            stderr.write(
                f"the console at {address} asks for a token: give --token or set ${_TOKEN_ENV}\n"
            )
            stderr.flush()
            return 1
        if not prompted:
            stderr.write(PromptEater().feed(said, final=True))
            stderr.flush()
            return 1
        for command in commands:
            line = command.rstrip("\r\n")
            try:
                sock.sendall(line.encode("utf-8", "replace") + b"\n")
            except OSError:
                return 1
            answer, prompted = answers.next()
            if line.strip() in ("quit", "exit"):
                return status  # its 'bye' is not an answer
            if answer.startswith("error:"):
                status = 1
            stdout.write(answer)
            stdout.flush()
            if not prompted:  # the console ended the session (stop, shutdown...)
                return status if answer else 1
        with contextlib.suppress(OSError):
            sock.sendall(b"quit\n")
    finally:
        sock.close()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``archangel console ADDRESS [--token T]``: returns the exit status.

    The token may also come from the ``ARCHANGEL_CONSOLE_TOKEN`` environment
    variable, which keeps it out of the process list.
    """
    parser = argparse.ArgumentParser(
        prog="archangel console",
        description="Talk to an archangel management console.",
    )
    parser.add_argument("address", help="HOST:PORT, PORT (on 127.0.0.1) or unix:PATH")
    parser.add_argument("--token", help=f"the console's token (default: ${_TOKEN_ENV})")
    parser.add_argument(
        "-c",
        "--command",
        action="append",
        dest="commands",
        metavar="COMMAND",
        help="run COMMAND, print only its answer, and leave (may be repeated)",
    )
    args = parser.parse_args(argv)
    token = args.token if args.token is not None else os.environ.get(_TOKEN_ENV)
    try:
        if args.commands:
            return run_script(args.address, args.commands, token)
        if not sys.stdin.isatty():
            return run_script(args.address, sys.stdin, token)
        return run_client(args.address, token)
    except ConsoleError as exc:
        print(f"archangel console: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed (| head): stop quietly, with nothing more to say
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130

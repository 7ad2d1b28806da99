"""A line editor with history for console sessions: pure, no I/O, no asyncio.

Telnet clients that accept the console's ``WILL ECHO``/``WILL SGA`` send one
character at a time and expect the server to echo and edit; plain clients
(``nc``, the ``archangel console`` client, telnet before negotiation) send
whole lines and echo themselves. :class:`LineEditor` serves both: it is fed
the decoded text as it arrives and returns what to echo (only when
:attr:`LineEditor.echo` is on) and the events completed so far.

Keys: printable text inserts at the cursor; Backspace/Delete; arrows, Home
and End (ANSI/VT100 escape sequences); Up/Down and Ctrl-P/Ctrl-N walk the
history; Ctrl-A/E home/end, Ctrl-B/F left/right, Ctrl-K/U/W kill to end, to
start, a word back; Ctrl-L redraws; Tab completes a word with the
``complete`` callback; Ctrl-C abandons the line; Ctrl-D on an empty line
ends the session. Lines longer than ``max_length`` are refused whole.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence

__all__ = ["Key", "LineEditor"]

_CSI_MAX = 16
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
_BELL = "\a"
_ERASE_TO_END = "\x1b[K"


class Key(enum.Enum):
    """Events other than an entered line."""

    INTERRUPT = "interrupt"
    """Ctrl-C (or telnet IP): the line was abandoned."""
    EOF = "eof"
    """Ctrl-D on an empty line: the user wants to leave."""
    TOO_LONG = "too long"
    """A line longer than the limit was entered and dropped."""


class _Esc(enum.Enum):
    NONE = 0
    ESC = 1
    CSI = 2
    SS3 = 3


Event = str | Key


class LineEditor:
    """Turns typed text into lines, with editing and a bounded history.

    Args:
        max_length: Longest accepted line, in characters.
        history: How many entered lines to keep.
        complete: Given the word before the cursor (the first word only),
            the candidates for Tab completion.
    """

    def __init__(
        self,
        max_length: int = 4096,
        history: int = 100,
        complete: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self.max_length = max_length
        self.history_size = history
        self.complete = complete
        #: Echo input and redraw edits (the client agreed that the server echoes).
        self.echo = False
        #: Text shown before the line when it is redrawn.
        self.prompt = ""
        #: Do not echo or remember the line (a token being typed).
        self.secret = False
        self.history: list[str] = []
        self._buf: list[str] = []
        self._cursor = 0
        self._overflow = False
        self._last = ""
        self._esc = _Esc.NONE
        self._csi = ""
        self._hist_pos = 0
        self._stash = ""

    @property
    def text(self) -> str:
        """The line typed so far."""
        return "".join(self._buf)

    def clear(self) -> None:
        """Forget the partly typed line (not the history)."""
        self._buf.clear()
        self._cursor = 0
        self._overflow = False
        self._hist_pos = len(self.history)

    def feed(self, text: str) -> tuple[str, list[Event]]:
        """Process typed ``text``; return (what to echo, lines and keys completed)."""
        out: list[str] = []
        events: list[Event] = []
        pos, end = 0, len(text)
        while pos < end:
            if self._esc is _Esc.NONE:
                run = _PRINTABLE.match(text, pos)
                if run is not None:  # fast path: a run of plain text
                    self._insert(run.group(), out)
                    pos = run.end()
                    self._last = text[pos - 1]
                    continue
            self._feed_char(text[pos], out, events)
            pos += 1
        return "".join(out) if self.echo else "", events

    # -- one character --------------------------------------------------------

    def _feed_char(self, char: str, out: list[str], events: list[Event]) -> None:
        last, self._last = self._last, char
        if self._esc is not _Esc.NONE:
            self._escape(char, out)
            return
        if char in "\n\0" and last == "\r":
            return  # CR LF and CR NUL are one Enter
        if char in "\r\n":
            self._enter(out, events)
        elif char in "\x7f\b":
            self._backspace(out)
        elif char == "\x1b":
            self._esc = _Esc.ESC
        elif char == "\x03":
            out.append("^C\r\n")
            self.clear()
            events.append(Key.INTERRUPT)
        elif char == "\x04":
            if not self._buf:
                events.append(Key.EOF)
            else:
                self._delete(out)
        elif char < " ":
            self._control(char, out)
        else:
            self._insert(char, out)

    def _enter(self, out: list[str], events: list[Event]) -> None:
        out.append("\r\n")
        line = self.text
        overflow = self._overflow
        self.clear()
        if overflow:
            events.append(Key.TOO_LONG)
            return
        if not self.secret and line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[: -self.history_size or None]
        self._hist_pos = len(self.history)
        events.append(line)

    def _control(self, char: str, out: list[str]) -> None:
        if char == "\x01":
            self._move(0, out)
        elif char == "\x05":
            self._move(len(self._buf), out)
        elif char == "\x02":
            self._move(self._cursor - 1, out)
        elif char == "\x06":
            self._move(self._cursor + 1, out)
        elif char == "\x0b":
            del self._buf[self._cursor :]
            self._redraw(out)
        elif char == "\x15":
            del self._buf[: self._cursor]
            self._cursor = 0
            self._redraw(out)
        elif char == "\x17":
            self._kill_word(out)
        elif char == "\x0c":
            out.append("\x1b[H\x1b[2J")
            self._redraw(out)
        elif char == "\x10":
            self._walk_history(-1, out)
        elif char == "\x0e":
            self._walk_history(1, out)
        elif char == "\t":
            self._complete(out)
        # other control characters are ignored

    def _escape(self, char: str, out: list[str]) -> None:
        if self._esc is _Esc.ESC:
            if char == "[":
                self._esc, self._csi = _Esc.CSI, ""
            elif char == "O":
                self._esc = _Esc.SS3
            else:
                self._esc = _Esc.NONE  # Alt-<key>: ignored
            return
        if self._esc is _Esc.SS3:
            self._esc = _Esc.NONE
            self._cursor_key(char, "", out)
            return
        # CSI: parameters, then a final byte in @..~
        if "@" <= char <= "~":
            self._esc = _Esc.NONE
            self._cursor_key(char, self._csi, out)
        elif len(self._csi) < _CSI_MAX:
            self._csi += char
        else:
            self._esc = _Esc.NONE

    def _cursor_key(self, final: str, params: str, out: list[str]) -> None:
        if final == "A":
            self._walk_history(-1, out)
        elif final == "B":
            self._walk_history(1, out)
        elif final == "C":
            self._move(self._cursor + 1, out)
        elif final == "D":
            self._move(self._cursor - 1, out)
        elif final == "H" or (final == "~" and params in ("1", "7")):
            self._move(0, out)
        elif final == "F" or (final == "~" and params in ("4", "8")):
            self._move(len(self._buf), out)
        elif final == "~" and params == "3":
            self._delete(out)

    # -- edits --------------------------------------------------------------------

    def _insert(self, text: str, out: list[str]) -> None:
        room = self.max_length - len(self._buf)
        if self._overflow or len(text) > room:
            # With echo the user sees the line stop growing (and a bell); without
            # it, the whole line is refused when it is entered.
            if not self._overflow:
                out.append(_BELL)
            if not self.echo:
                self._overflow = True
                return
            text = text[:room]
            if not text:
                return
        at_end = self._cursor == len(self._buf)
        self._buf[self._cursor : self._cursor] = text
        self._cursor += len(text)
        if self.secret:
            return
        if at_end:
            out.append(text)
        else:
            self._redraw(out)

    def _backspace(self, out: list[str]) -> None:
        if self._cursor == 0:
            return
        self._cursor -= 1
        del self._buf[self._cursor]
        if self.secret:
            return
        if self._cursor == len(self._buf):
            out.append("\b \b")
        else:
            self._redraw(out)

    def _delete(self, out: list[str]) -> None:
        if self._cursor < len(self._buf):
            del self._buf[self._cursor]
            self._redraw(out)

    def _kill_word(self, out: list[str]) -> None:
        start = self._cursor
        while start and self._buf[start - 1] == " ":
            start -= 1
        while start and self._buf[start - 1] != " ":
            start -= 1
        del self._buf[start : self._cursor]
        self._cursor = start
        self._redraw(out)

    def _move(self, cursor: int, out: list[str]) -> None:
        cursor = max(0, min(cursor, len(self._buf)))
        if cursor == self._cursor or self.secret:
            self._cursor = cursor
            return
        if cursor < self._cursor:
            out.append(f"\x1b[{self._cursor - cursor}D")
        else:
            out.append(f"\x1b[{cursor - self._cursor}C")
        self._cursor = cursor

    def _walk_history(self, step: int, out: list[str]) -> None:
        if self.secret:
            return
        pos = self._hist_pos + step
        if pos < 0 or pos > len(self.history):
            out.append(_BELL)
            return
        if self._hist_pos == len(self.history):
            self._stash = self.text
        self._hist_pos = pos
        text = self.history[pos] if pos < len(self.history) else self._stash
        self._buf = list(text[: self.max_length])
        self._cursor = len(self._buf)
        self._overflow = False
        self._redraw(out)

    def _complete(self, out: list[str]) -> None:
        if self.complete is None or self.secret:
            return
        word = self.text[: self._cursor]
        if " " in word:
            return
        candidates = sorted(self.complete(word))
        if len(candidates) == 1:
            self._insert(candidates[0][len(word) :] + " ", out)
        elif candidates:
            common = _common_prefix(candidates)
            if len(common) > len(word):
                self._insert(common[len(word) :], out)
            else:
                out.append("\r\n" + "  ".join(candidates) + "\r\n")
                self._redraw(out)
        else:
            out.append(_BELL)

    def _redraw(self, out: list[str]) -> None:
        """Rewrite the prompt and line, and put the cursor back."""
        if self.secret:
            return
        out.append("\r" + self.prompt + self.text + _ERASE_TO_END)
        back = len(self._buf) - self._cursor
        if back:
            out.append(f"\x1b[{back}D")

    def redraw(self) -> str:
        """What to write to show the prompt and the partly typed line again."""
        out: list[str] = []
        self._redraw(out)
        return "".join(out) if self.echo else ""


def _common_prefix(words: Sequence[str]) -> str:
    first, last = min(words), max(words)
    n = 0
    while n < len(first) and n < len(last) and first[n] == last[n]:
        n += 1
    return first[:n]

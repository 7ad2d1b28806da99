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
ends the session. A line that grew past ``max_length`` is refused whole
when it is entered (it stops growing at the limit, with a bell).

Echo costs at most a few times what was typed: an edit that needs the line
redrawn only marks it, and the line is redrawn once, when something has to
be shown after it (an Enter, the end of the text fed). Nothing is built when
echo is off. :meth:`LineEditor.step` feeds text a bounded piece at a time,
so a session can write and drain the echo of one piece before the next.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence

from .fairness import _EDIT_STEP, _EDIT_STEP_ECHO

__all__ = ["Key", "LineEditor"]

_CSI_MAX = 16
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
#: Control characters that do nothing (NUL, the bell, Ctrl-O, Ctrl-Q...): a run is skipped whole.
_IGNORED = re.compile(r"[\x00\x07\x0f\x11-\x14\x16\x18-\x1a\x1c-\x1f]+")
#: Ctrl-L: a run redraws once.
_REDRAWS = re.compile(r"\x0c+")
_BELL = "\a"
_ERASE_TO_END = "\x1b[K"
_CLEAR_SCREEN = "\x1b[H\x1b[2J"


class Key(enum.Enum):
    """Events other than an entered line."""

    INTERRUPT = "interrupt"
    """Ctrl-C (or telnet IP) abandoned the line."""
    EOF = "eof"
    """Ctrl-D on an empty line; the user wants to leave."""
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
        complete: Given the line before the cursor, the candidates for
            its last word (the word the cursor ends), for Tab completion.
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
        self._out: list[str] = []
        self._out_size = 0
        self._stale = False  # the line on screen is out of date: redraw before more echo
        self._clear = False  # clear the screen before that redraw (Ctrl-L)

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
        events: list[Event] = []
        self._run(text, 0, len(text), events, stop=False)
        return self._take(), events

    def step(self, text: str, start: int = 0) -> tuple[str, list[Event], int]:
        """Process a bounded piece of ``text`` from ``start``.

        It stops after the first line or key completed, after ``_EDIT_STEP``
        characters, or once about ``_EDIT_STEP_ECHO`` characters are to be
        echoed, whichever comes first.

        Returns:
            What to echo, the events completed (at most one), and where to
            go on from.
        """
        events: list[Event] = []
        end = self._run(text, start, min(len(text), start + _EDIT_STEP), events, stop=True)
        return self._take(), events, end

    def redraw(self) -> str:
        """What to write to show the prompt and the partly typed line again."""
        self._redraw()
        return self._take()

    # -- output ---------------------------------------------------------------

    def _take(self) -> str:
        self._flush()
        out = "".join(self._out) if self.echo else ""
        self._out.clear()
        self._out_size = 0
        return out

    def _show(self, text: str) -> None:
        """Echo ``text`` at the cursor (not needed while a redraw is due)."""
        if self.echo and not self.secret and not self._stale:
            self._out.append(text)
            self._out_size += len(text)

    def _say(self, text: str) -> None:
        """Write ``text`` after the line, brought up to date first (Enter, ^C, a list)."""
        if self.echo:
            self._flush()
            self._out.append(text)
            self._out_size += len(text)

    def _bell(self) -> None:
        if self.echo:
            self._out.append(_BELL)
            self._out_size += 1

    def _redraw(self, clear_screen: bool = False) -> None:
        """Mark the prompt and line to be rewritten (once, when next shown)."""
        if self.echo and not self.secret:
            self._stale = True
            self._clear = self._clear or clear_screen

    def _flush(self) -> None:
        if not self._stale:
            return
        self._stale = False
        if self._clear:
            self._clear = False
            self._out.append(_CLEAR_SCREEN)
        line = "\r" + self.prompt + self.text + _ERASE_TO_END
        back = len(self._buf) - self._cursor
        if back:
            line += f"\x1b[{back}D"
        self._out.append(line)
        self._out_size += len(line)

    # -- input ----------------------------------------------------------------

    def _run(self, text: str, pos: int, end: int, events: list[Event], stop: bool) -> int:
        while pos < end:
            if self._esc is _Esc.NONE:
                # Fast paths, one regex call for a run of characters instead of a
                # Python step for each: a flood of them is handled at C speed.
                run = _PRINTABLE.match(text, pos, end)
                if run is not None:  # a run of plain text
                    self._insert(run.group())
                    pos = run.end()
                    self._last = text[pos - 1]
                    continue
                run = _IGNORED.match(text, pos, end) or _REDRAWS.match(text, pos, end)
                if run is not None:  # keys that do nothing, or Ctrl-L (once is as good)
                    if text[pos] == "\x0c":
                        self._control("\x0c")
                    pos = run.end()
                    self._last = text[pos - 1]  # (a NUL after CR is swallowed either way)
                    continue
            self._feed_char(text[pos], events)
            pos += 1
            if stop and (events or self._out_size >= _EDIT_STEP_ECHO):
                break
        return pos

    @property
    def after_cr(self) -> bool:
        """Whether the last character fed was a CR (an LF or NUL next ends the same line)."""
        return self._last == "\r"

    @after_cr.setter
    def after_cr(self, value: bool) -> None:
        # Set by whoever reads the input instead of the editor for a while
        # (a key that leaves ``top``), so the next line starts right.
        self._last = "\r" if value else ""

    def _feed_char(self, char: str, events: list[Event]) -> None:
        last, self._last = self._last, char
        if self._esc is not _Esc.NONE:
            self._escape(char)
            return
        if char in "\n\0" and last == "\r":
            return  # CR LF and CR NUL are one Enter
        if char in "\r\n":
            self._enter(events)
        elif char in "\x7f\b":
            self._backspace()
        elif char == "\x1b":
            self._esc = _Esc.ESC
        elif char == "\x03":
            self._say("^C\r\n")
            self.clear()
            events.append(Key.INTERRUPT)
        elif char == "\x04":
            if not self._buf:
                events.append(Key.EOF)
            else:
                self._delete()
        elif char < " ":
            self._control(char)
        else:
            self._insert(char)

    def _enter(self, events: list[Event]) -> None:
        self._say("\r\n")
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

    def _control(self, char: str) -> None:
        if char == "\x01":
            self._move(0)
        elif char == "\x05":
            self._move(len(self._buf))
        elif char == "\x02":
            self._move(self._cursor - 1)
        elif char == "\x06":
            self._move(self._cursor + 1)
        elif char == "\x0b":
            del self._buf[self._cursor :]
            self._redraw()
        elif char == "\x15":
            del self._buf[: self._cursor]
            self._cursor = 0
            if not self._buf:
                self._overflow = False  # the whole line is gone
            self._redraw()
        elif char == "\x17":
            self._kill_word()
        elif char == "\x0c":
            self._redraw(clear_screen=True)
        elif char == "\x10":
            self._walk_history(-1)
        elif char == "\x0e":
            self._walk_history(1)
        elif char == "\t":
            self._complete()
        # other control characters are ignored

    def _escape(self, char: str) -> None:
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
            self._cursor_key(char, "")
            return
        # CSI: parameters, then a final byte in @..~
        if "@" <= char <= "~":
            self._esc = _Esc.NONE
            self._cursor_key(char, self._csi)
        elif len(self._csi) < _CSI_MAX:
            self._csi += char
        else:
            self._esc = _Esc.NONE

    def _cursor_key(self, final: str, params: str) -> None:
        if final == "A":
            self._walk_history(-1)
        elif final == "B":
            self._walk_history(1)
        elif final == "C":
            self._move(self._cursor + 1)
        elif final == "D":
            self._move(self._cursor - 1)
        elif final == "H" or (final == "~" and params in ("1", "7")):
            self._move(0)
        elif final == "F" or (final == "~" and params in ("4", "8")):
            self._move(len(self._buf))
        elif final == "~" and params == "3":
            self._delete()

    # -- edits --------------------------------------------------------------------

    def _insert(self, text: str) -> None:
        room = self.max_length - len(self._buf)
        if len(text) > room:
            # The line stops growing at the limit (with a bell) and is refused
            # whole when it is entered: never cut short and run.
            if not self._overflow:
                self._bell()
            self._overflow = True
            text = text[:room]
            if not text:
                return
        at_end = self._cursor == len(self._buf)
        self._buf[self._cursor : self._cursor] = text
        self._cursor += len(text)
        if at_end:
            self._show(text)
        else:
            self._redraw()

    def _backspace(self) -> None:
        if self._cursor == 0:
            return
        self._cursor -= 1
        del self._buf[self._cursor]
        if self._cursor == len(self._buf):
            self._show("\b \b")
        else:
            self._redraw()

    def _delete(self) -> None:
        if self._cursor < len(self._buf):
            del self._buf[self._cursor]
            self._redraw()

    def _kill_word(self) -> None:
        start = self._cursor
        while start and self._buf[start - 1] == " ":
            start -= 1
        while start and self._buf[start - 1] != " ":
            start -= 1
        del self._buf[start : self._cursor]
        self._cursor = start
        self._redraw()

    def _move(self, cursor: int) -> None:
        cursor = max(0, min(cursor, len(self._buf)))
        if cursor < self._cursor:
            self._show(f"\x1b[{self._cursor - cursor}D")
        elif cursor > self._cursor:
            self._show(f"\x1b[{cursor - self._cursor}C")
        self._cursor = cursor

    def _walk_history(self, step: int) -> None:
        if self.secret:
            return
        pos = self._hist_pos + step
        if pos < 0 or pos > len(self.history):
            self._bell()
            return
        if self._hist_pos == len(self.history):
            self._stash = self.text
        self._hist_pos = pos
        text = self.history[pos] if pos < len(self.history) else self._stash
        self._buf = list(text[: self.max_length])
        self._cursor = len(self._buf)
        self._overflow = False
        self._redraw()

    def _complete(self) -> None:
        if self.secret:
            return
        if not self.echo:
            # The client echoes what it sends (line mode): its screen shows the
            # Tab as blank space, so that is what it is, never a completion
            # the operator cannot see.
            self._insert(" ")
            return
        if self.complete is None:
            return
        before = self.text[: self._cursor]
        word = before.rpartition(" ")[2]
        candidates = sorted(set(self.complete(before)))
        if len(candidates) == 1:
            self._insert(candidates[0][len(word) :] + " ")
        elif candidates:
            common = _common_prefix(candidates)
            if len(common) > len(word):
                self._insert(common[len(word) :])
            else:
                self._say("\r\n" + "  ".join(candidates) + "\r\n")
                self._redraw()
        else:
            self._bell()


def _common_prefix(words: Sequence[str]) -> str:
    first, last = min(words), max(words)
    n = 0
    while n < len(first) and n < len(last) and first[n] == last[n]:
        n += 1
    return first[:n]

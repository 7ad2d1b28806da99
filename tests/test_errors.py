"""The error family's helper and the argument checks that use the family."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any

import pytest

from archangel import InvalidArgument, ProcessManager
from archangel.errors import coerce_enum
from archangel.pipes import LineServer, Watcher, every, tail
from archangel.pipes._lines import LineBuffer


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


def test_coerce_enum_takes_a_member_or_its_value() -> None:
    assert coerce_enum(Colour, "red", "paint") is Colour.RED
    assert coerce_enum(Colour, Colour.BLUE, "paint") is Colour.BLUE


def test_coerce_enum_names_the_argument_and_the_choices() -> None:
    with pytest.raises(InvalidArgument) as caught:
        coerce_enum(Colour, "green", "Brush 'big': colour")
    assert str(caught.value) == "Brush 'big': colour must be one of 'red', 'blue', got 'green'"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ProcessManager(history=-1), "history must be >= 0, got -1"),
        (lambda: Watcher(interval=0), "Watcher interval must be > 0, got 0"),
        (lambda: tail("x.log", rotated_grace=-1), "rotated_grace must be >= 0, got -1"),
        (lambda: every(0), "every(): seconds must be > 0, got 0"),
        (lambda: LineBuffer(max_line=0), "max_line must be >= 1, got 0"),
        (lambda: LineServer(None, buffer=0), "LineServer buffer must be >= 1, got 0"),
    ],
)
def test_bad_numbers_are_invalid_arguments(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        call()

"""``printable``: the one escape of what a person reads (ids, field names, messages)."""

from __future__ import annotations

import logging
import sys
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from novita_async._cli._display import PrintableFormatter, printable, printable_lines

# What a terminal acts on or reorders, and what ends a line.
ACTED_ON = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


@given(st.text())
def test_nothing_a_terminal_acts_on_survives_and_the_rest_is_kept(text: str) -> None:
    shown = printable(text)
    assert all(unicodedata.category(c) not in ACTED_ON or c in "\u200c\u200d" for c in shown), shown
    assert printable(shown) == shown  # escaping twice changes nothing
    if text.isprintable():
        assert shown is text


def test_escapes_read_as_in_python_and_letters_and_emoji_stay() -> None:
    assert printable("a\nb") == "a\\nb"
    assert printable("\x1b[2J") == "\\x1b[2J"
    assert printable("x\u202ey\r\t\x7f") == "x\\u202ey\\r\\t\\x7f"
    kept = "Zoë 北京 \u00a0 👩\u200d👩\u200d👧 \\n 'quoted'"
    assert printable(kept) == kept
    assert printable_lines(["one\ntwo", "three"]) == "one\\ntwo\nthree"


def test_log_lines_are_printable_and_a_traceback_keeps_its_lines() -> None:
    formatter = PrintableFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "n", logging.WARNING, __file__, 1, "job %s: %s", ("a\nb", "\x1b[2J"), sys.exc_info()
        )
    first, *rest = formatter.format(record).splitlines()
    assert first == "WARNING job a\\nb: \\x1b[2J"
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"

"""What a person reads: text from a job file or an answer, with what a terminal would act on
escaped.

A job id, a field name or a message can hold a newline (which would let a job file forge lines
of the output), an escape sequence (which a terminal obeys: clear the screen, change colours) or
a bidirectional override (which reorders what is shown). Every line the command prints passes
through :func:`printable` once, as a whole line: such characters show as they would in Python
(``a\\nb``, ``\\x1b[2J``, ``\\u202e``); everything else, including letters of any script and
emoji, is left as it is. Files (results.jsonl, the journal, JSON reports) keep the text itself.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable

__all__ = ["PrintableFormatter", "printable", "printable_lines"]

# Format characters that join emoji and shape scripts, and do nothing else on a terminal.
_JOINERS = frozenset("\u200c\u200d")


def _shown(char: str) -> str:
    if char.isprintable() or char in _JOINERS or unicodedata.category(char) == "Zs":
        return char
    # repr's own escape for it: \n, \t, \x1b, \u202e (never a quote: those are printable).
    return repr(char)[1:-1]


def printable(text: str) -> str:
    """``text`` as one line a terminal shows as it is: control, format and separator characters
    escaped (see the module's docstring)."""
    if text.isprintable():  # nearly always: no copy
        return text
    return "".join(_shown(char) for char in text)


def printable_lines(lines: Iterable[str]) -> str:
    """``lines``, each made :func:`printable`, joined by newlines: a block of output whose line
    breaks are only its own."""
    return "\n".join(printable(line) for line in lines)


class PrintableFormatter(logging.Formatter):
    """Log lines through :func:`printable` (a traceback, with ``--debug``, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

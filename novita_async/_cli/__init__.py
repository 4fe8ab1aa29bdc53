"""The ``novita-async`` command (also ``python -m novita_async``).

Exit status: 0 success; 1 some job or call failed (``status``: the journal is damaged); 2 bad
usage (an out-of-range request flag, caught before anything is uploaded; a damaged journal, named
with its repair command; a folder in use by a run); 3 a run-level cause stopped the work (a batch
run's :class:`RunStoppedError`, or this machine refused a file: disk full, read-only, permission
denied, name too long); 130 interrupted; 141 the reader of the output went away (``... | head -1``),
ended quietly. Errors print one line on stderr, never an exception group
(the most telling error inside it is shown); ``--debug`` adds the traceback and debug logging. The
API key is never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import socket
import ssl
import sys
import traceback
from collections.abc import Sequence

import aiohttp
import anyio

from .._config import ENV_API_KEY
from .._exceptions import (
    ConfigurationError,
    LocalIOError,
    NovitaError,
    RunStoppedError,
    StorageError,
    ValidationError,
)
from .._redact import scrub
from ..batch import JournalDamagedError
from . import _commands, _demo, _journal_cmd, _run, _status
from ._parser import parse_args
from ._printable import PrintableFormatter, printable
from ._run import (
    EXIT_BUDGET,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_STOPPED,
    EXIT_USAGE,
)
from ._run_report import ReportTo
from ._signals import real_error

__all__ = ["command", "main"]

# OSErrors that are the network's, not this machine's file system.
_NETWORK_ERRORS = (
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    ssl.SSLError,
    aiohttp.ClientError,
)


async def _dispatch(ns: argparse.Namespace) -> int:
    commands = {
        "run": _run.run,
        "generate": _commands.generate,
        "upload": _commands.upload,
        "result": _commands.result,
        "models": _commands.models,
        "demo": _demo.demo,
        "status": _status.status,
        "journal": _journal_cmd.journal,
    }
    return await commands[ns.command](ns)


def _shown_as_events(record: logging.LogRecord) -> bool:
    # What the batch runner logs about the run (a pause, a stop) is also an event, which the
    # progress display shows and the run's last line repeats: once is enough. A record with a
    # traceback (a progress hook that raised) is not an event: keep it.
    return record.levelno >= logging.CRITICAL or record.exc_info is not None


def _local_io(exc: OSError) -> LocalIOError | None:
    """``exc`` as the file-system error it is, or None if it is the network's."""
    if isinstance(exc, _NETWORK_ERRORS):
        return None
    return LocalIOError.from_os_error(exc, "a file operation")


def _describe(exc: BaseException) -> tuple[str, int]:
    """What went wrong, in one line, and the command's exit status for it."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(exc, OSError):
        exc = _local_io(exc) or exc
    if isinstance(exc, ValidationError):
        return f"{exc.field}: {exc.value!r} is not allowed: {exc.allowed}", EXIT_USAGE
    if isinstance(exc, ConfigurationError | JournalDamagedError):
        return str(exc), EXIT_USAGE  # a damaged journal's message names the repair command
    if isinstance(exc, RunStoppedError):
        status = EXIT_BUDGET if exc.reason == "BUDGET_REACHED" else EXIT_STOPPED
        return f"run stopped: {exc}", status
    if isinstance(exc, LocalIOError | StorageError):
        # The run's own place (this disk, the bucket) failed: a plain rerun continues.
        return f"{exc.reason}: {exc}", EXIT_STOPPED
    if isinstance(exc, NovitaError | OSError | aiohttp.ClientError):
        return f"{type(exc).__name__}: {exc}", EXIT_FAILED
    return f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILED


def _report(exc: BaseException, ns: argparse.Namespace, raised: BaseException) -> int:
    """Print ``exc`` in one line (``raised``, the group it came in if any, for --debug); a run
    that ended before it could report its own end says so in its JSON report too."""
    message, status = _describe(exc)
    if ns.debug:
        traceback.print_exception(raised)
    elif status == EXIT_FAILED and not isinstance(exc, NovitaError | OSError):
        message += " (rerun with --debug for the traceback)"
    # The key never reaches a message on purpose; scrub anyway, it costs nothing.
    message = scrub(message, ns.api_key or "", os.environ.get(ENV_API_KEY, ""))
    if isinstance(exc, KeyboardInterrupt):
        print("novita-async: interrupted", file=sys.stderr)
    else:
        print(f"novita-async: error: {printable(message)}", file=sys.stderr)
    if ns.command == "run" and not isinstance(exc, RunStoppedError):
        ReportTo.from_args(ns).write_error(status, message)
    return status


# The reader of our output went away (``novita-async result T --json | head -1``): end as a Unix
# tool killed by SIGPIPE does, quietly (no traceback, no error line: nobody is wrong) with the
# status a shell shows for it, 128 + SIGPIPE = 141 (``yes | head -1``'s ``yes``; git exits so
# too). Not 0: the output was cut short, and a script with ``set -o pipefail`` that cares can tell,
# exactly as it can for cat or grep in the same place.
EXIT_READER_GONE = 141


def _reader_gone() -> bool:
    """Whether stdout's or stderr's reader went away (a pipe with no reader left); each such
    stream is pointed at devnull, so that the interpreter's final flush of what is still
    buffered does not raise again (the recipe of Python's ``signal`` documentation)."""
    gone = False
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            continue  # not a file (a test's capture): not a pipe whose reader left
        if not hasattr(select, "poll"):
            widowed = stream is sys.stdout  # no poll (Windows): the usual culprit
        else:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            # A pipe's writing end polls POLLERR once no reader is left.
            widowed = any(events & select.POLLERR for _, events in poller.poll(0))
        if widowed:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
            gone = True
    return gone


def _emulator(argv: list[str]) -> int:
    # Imported here, not at the top: the emulator needs Pillow, an optional dependency (the
    # [emulator] extra) that the rest of the command does not.
    from ..emulator import _cli as emulator_cli

    # The emulator parses its own options; --debug is ours (and changes nothing there).
    rest = [arg for arg in argv[argv.index("emulator") + 1 :] if arg != "--debug"]
    status: int = emulator_cli.main(rest)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        ns = parse_args(args)
    except SystemExit as exc:  # --help, or bad usage (argparse has printed why)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not hasattr(ns, "api_key"):
        ns.api_key = None
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if ns.debug else logging.WARNING, handlers=[handler])
    if ns.command == "emulator":
        return _emulator(args)
    batch_log = logging.getLogger("novita_async.batch")
    if not ns.debug:
        batch_log.addFilter(_shown_as_events)
    try:
        status = anyio.run(_dispatch, ns, backend="asyncio")
        # Now, not at the interpreter's exit: a reader gone before the last bytes is told below.
        sys.stdout.flush()
        return status
    except BaseException as exc:
        inner = real_error(exc)
        if isinstance(inner, BrokenPipeError) and _reader_gone():
            return EXIT_READER_GONE
        if isinstance(inner, SystemExit):
            raise inner from None
        if not isinstance(inner, Exception | KeyboardInterrupt):
            raise
        return _report(inner, ns, exc)
    finally:
        batch_log.removeFilter(_shown_as_events)  # main() may be called again in one process


def command() -> None:
    """The ``novita-async`` executable: :func:`main`, then the process's exit.

    With obstore loaded (an object-store ``--out``) the process ends without the interpreter's
    finalisation: obstore's Rust runtime keeps worker threads that, racing ``Py_Finalize``,
    abort the process now and then (status 134 instead of the run's own, after everything was
    written and said). Nothing is lost by skipping it: the run has ended, its files are closed,
    and the streams and the logging handlers are flushed here first."""
    status = main()
    if "obstore" not in sys.modules:
        sys.exit(status)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A reader gone (status 141 says so) or a closed stream: nothing more to say there.
        with contextlib.suppress(BrokenPipeError, ValueError):
            stream.flush()
    os._exit(status)

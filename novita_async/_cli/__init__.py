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

import contextlib
import logging
import os
import select
import sys
import traceback
from collections.abc import Sequence

import anyio

from .. import ExitStatus, NovitaError, RunStoppedError
from .._config import scrub
from . import _commands, _run
from ._display import (
    EXIT_READER_GONE,
    PrintableFormatter,
    describe_error,
    printable,
)
from ._run import real_error
from ._settings import (
    Command,
    DemoSettings,
    EmulatorSettings,
    GenerateSettings,
    ModelsSettings,
    RepairSettings,
    ResultSettings,
    RunSettings,
    StatusSettings,
    UploadSettings,
    parse,
)

__all__ = ["command", "main"]


async def _dispatch(command: Command) -> int:
    match command:
        case RunSettings():
            return await _run.run(command)
        case GenerateSettings():
            return await _commands.generate(command)
        case UploadSettings():
            return await _commands.upload(command)
        case ResultSettings():
            return await _commands.result(command)
        case ModelsSettings():
            return await _commands.models(command)
        case DemoSettings():
            return await _commands.demo(command)
        case StatusSettings():
            return await _commands.status(command)
        case RepairSettings():
            return await _commands.repair_journal(command)
    raise AssertionError(f"no command for {command!r}")


def _shown_as_events(record: logging.LogRecord) -> bool:
    # What the batch runner logs about the run (a pause, a stop) is also an event, which the
    # progress display shows and the run's last line repeats: once is enough. A record with a
    # traceback (a progress hook that raised) is not an event: keep it.
    return record.levelno >= logging.CRITICAL or record.exc_info is not None


class _OncePerValue(logging.Filter):
    """A request model's warning (a sampler name off the documented list) said once per value,
    not once per job line of a file of thousands."""

    def __init__(self) -> None:
        super().__init__()
        self._said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.module != "_models":
            return True
        said = record.getMessage()
        if said in self._said:
            return False
        self._said.add(said)
        return True


def _report(exc: BaseException, command: Command, raised: BaseException) -> int:
    """Print ``exc`` in one line (``raised``, the group it came in if any, for --debug); a run
    that ended before it could report its own end says so in its JSON report too."""
    message, status = describe_error(exc)
    if command.debug:
        traceback.print_exception(raised)
    elif status == ExitStatus.FAILED and not isinstance(exc, NovitaError | OSError):
        message += " (rerun with --debug for the traceback)"
    # The key never reaches a message on purpose; scrub anyway, it costs nothing.
    message = scrub(message, *command.secrets)
    if isinstance(exc, KeyboardInterrupt):
        print("novita-async: interrupted", file=sys.stderr)
    else:
        print(f"novita-async: error: {printable(message)}", file=sys.stderr)
    if isinstance(command, RunSettings) and not isinstance(exc, RunStoppedError):
        _run.report_error(command.report, status, message)
    return status


def _reader_gone() -> bool:
    """Whether stdout's or stderr's reader went away; each such stream is pointed at devnull, so
    that the final flush does not raise again (the recipe of Python's ``signal`` documentation)."""
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = parse(args)
    except SystemExit as exc:  # --help, or bad usage (argparse has printed why)
        return exc.code if isinstance(exc.code, int) else ExitStatus.USAGE
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.WARNING, handlers=[handler]
    )
    if isinstance(settings, EmulatorSettings):
        from ..emulator import _cli as emulator_cli  # needs Pillow, the [emulator] extra

        status: int = emulator_cli.main(list(settings.args))
        return status
    batch_log = logging.getLogger("novita_async.batch")
    if not settings.debug:
        batch_log.addFilter(_shown_as_events)
    models_log, once = logging.getLogger("novita_async"), _OncePerValue()
    models_log.addFilter(once)
    try:
        status = anyio.run(_dispatch, settings, backend="asyncio")
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
        return _report(inner, settings, exc)
    finally:
        batch_log.removeFilter(_shown_as_events)  # main() may be called again in one process
        models_log.removeFilter(once)


def command() -> None:
    """The ``novita-async`` executable: :func:`main`, then the process's exit.

    With obstore loaded, without the interpreter's finalisation: obstore's Rust worker threads,
    racing ``Py_Finalize``, abort the process now and then (134, after everything was written).
    The run has ended and its files are closed; the streams and log handlers are flushed here."""
    status = main()
    if "obstore" not in sys.modules:
        sys.exit(status)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A reader gone (status 141 says so) or a closed stream: nothing more to say there.
        with contextlib.suppress(BrokenPipeError, ValueError):
            stream.flush()
    os._exit(status)

"""The ``novita-async`` command (also ``python -m novita_async``).

Exit status: 0 success, 1 some job or call failed, 2 bad usage (including an out-of-range request
flag, caught before anything is uploaded), 130 interrupted. Errors print one line on stderr;
``--debug`` adds the traceback and debug logging. The API key is never printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

import aiohttp
import anyio

from .._config import ENV_API_KEY
from .._exceptions import ConfigurationError, NovitaError, ValidationError
from .._redact import scrub
from . import _commands, _demo, _run
from ._parser import parse_args

__all__ = ["main"]

_USAGE = 2
_FAILED = 1
_INTERRUPTED = 130


async def _dispatch(ns: argparse.Namespace) -> int:
    commands = {
        "run": _run.run,
        "generate": _commands.generate,
        "upload": _commands.upload,
        "result": _commands.result,
        "models": _commands.models,
        "demo": _demo.demo,
    }
    return await commands[ns.command](ns)


def _innermost(exc: BaseException) -> BaseException:
    # Task groups wrap what one task raised; report that, not the wrapper.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _report(exc: BaseException, ns: argparse.Namespace) -> int:
    if isinstance(exc, KeyboardInterrupt):
        print("novita-async: interrupted", file=sys.stderr)
        return _INTERRUPTED
    if isinstance(exc, ValidationError):
        message, status = f"{exc.field}: {exc.value!r} is not allowed: {exc.allowed}", _USAGE
    elif isinstance(exc, ConfigurationError):
        message, status = str(exc), _USAGE
    elif isinstance(exc, NovitaError | OSError | aiohttp.ClientError):
        message, status = f"{type(exc).__name__}: {exc}", _FAILED
    else:
        message, status = f"unexpected {type(exc).__name__}: {exc}", _FAILED
    if ns.debug:
        traceback.print_exception(exc)
    elif status == _FAILED and not isinstance(exc, NovitaError | OSError):
        message += " (rerun with --debug for the traceback)"
    # The key never reaches a message on purpose; scrub anyway, it costs nothing.
    secrets = (ns.api_key or "", os.environ.get(ENV_API_KEY, ""))
    print(f"novita-async: error: {scrub(message, *secrets)}", file=sys.stderr)
    return status


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
        return exc.code if isinstance(exc.code, int) else _USAGE
    if not hasattr(ns, "api_key"):
        ns.api_key = None
    logging.basicConfig(
        level=logging.DEBUG if ns.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if ns.command == "emulator":
        return _emulator(args)
    try:
        return anyio.run(_dispatch, ns, backend="asyncio")
    except BaseException as exc:
        inner = _innermost(exc)
        if isinstance(inner, SystemExit):
            raise inner from None
        if not isinstance(inner, Exception | KeyboardInterrupt):
            raise
        return _report(inner, ns)

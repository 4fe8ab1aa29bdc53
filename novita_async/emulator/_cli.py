"""The emulator as a process: ``python -m novita_async.emulator`` / ``novita-async emulator``.

Its options are :class:`EmulatorConfig`'s fields, named, typed and defaulted by the fields
themselves (each field's ``Flag``): an option left out keeps the field's default.

It prints, as soon as it listens and each on its own line, ``NOVITA_BASE_URL=...``,
``NOVITA_ASSETS_URL=...`` and ``NOVITA_API_KEY=...`` (ready to paste into a shell), then
``NOVITA_EMULATOR_IMAGES_ORIGIN=...`` and ``NOVITA_EMULATOR_STATS_URL=...``, and runs until SIGINT
or SIGTERM, then shuts down cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import attrs

from ._config import EmulatorConfig, Flag
from ._server import Emulator

__all__ = ["add_arguments", "config_from_args", "main"]

_FLAGGED = [
    field for field in attrs.fields(attrs.resolve_types(EmulatorConfig)) if "flag" in field.metadata
]
_METAVARS: dict[object, str] = {int: "N", float: "X", str: "TEXT"}


def _value_type(hint: Any) -> Any:
    """``X`` of ``X | None``."""
    if isinstance(hint, types.UnionType):
        (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (TypeError, ValueError) as problem:
            raise argparse.ArgumentTypeError(str(problem)) from None

    convert.__name__ = getattr(parse, "__name__", "value")  # argparse names it in its errors
    return convert


def _is_mapping(field: attrs.Attribute[Any]) -> bool:
    return typing.get_origin(field.type) is Mapping


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser`` (shared with ``novita-async emulator``)."""
    for field in _FLAGGED:
        flag: Flag = field.metadata["flag"]
        name = flag.name or "--" + field.name.replace("_", "-")
        shown = field.default
        default = f" (default: {shown})" if isinstance(shown, int | float | str) else ""
        options: dict[str, Any] = {"dest": field.name, "default": None}
        kind = _value_type(field.type)
        if kind is bool:
            parser.add_argument(
                name, action="store_const", const=not shown, help=flag.help, **options
            )
            continue
        collection = typing.get_origin(kind) in (frozenset, Mapping)
        if typing.get_origin(kind) is typing.Literal:
            options["choices"] = typing.get_args(kind)
        else:
            element = typing.get_args(kind)[0] if typing.get_origin(kind) is frozenset else kind
            options["type"] = _argument_type(flag.parse or element)
            options["metavar"] = flag.metavar or _METAVARS.get(element, "VALUE")
        parser.add_argument(
            name,
            action="append" if collection else "store",
            help=flag.help + ("" if collection else default),
            **options,
        )


def config_from_args(ns: argparse.Namespace) -> EmulatorConfig:
    """The configuration the options set; an option left out keeps the field's default."""
    given: dict[str, Any] = {}
    for field in _FLAGGED:
        value = getattr(ns, field.name)
        if value is None:
            continue
        if _is_mapping(field):
            # Repeated for one key: sequences (scripts) add up, anything else replaces; a flag
            # that names several keys at once (ROUTE=N,...) gives them as a mapping.
            default: Any = field.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = default.factory()
            merged: dict[str, Any] = dict(default or {})  # a key not named keeps its default
            for pairs in value:
                for key, item in pairs.items() if isinstance(pairs, Mapping) else (pairs,):
                    merged[key] = merged.get(key, ()) + item if isinstance(item, tuple) else item
            value = merged
        given[field.name] = value
    return EmulatorConfig(**given)


async def serve(config: EmulatorConfig) -> None:
    """Run until SIGINT or SIGTERM, printing the environment lines once listening."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with Emulator(config) as emu:
            print(f"NOVITA_BASE_URL={emu.base_url}", flush=True)
            print(f"NOVITA_ASSETS_URL={emu.assets_url}", flush=True)
            print(f"NOVITA_API_KEY={emu.api_key}", flush=True)
            print(f"NOVITA_EMULATOR_IMAGES_ORIGIN={emu.images_origin}", flush=True)
            print(f"NOVITA_EMULATOR_STATS_URL={emu.base_url}/__emulator/stats", flush=True)
            print("emulator running; press Ctrl-C to stop", file=sys.stderr, flush=True)
            async for _ in signals:
                break


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m novita_async.emulator",
        description="Run a local emulator of the Novita image API.",
    )
    add_arguments(parser)
    ns = parser.parse_args(argv)
    try:
        config = config_from_args(ns)
    except (TypeError, ValueError) as problem:
        parser.error(str(problem))
    try:
        anyio.run(serve, config)
    except OSError as problem:
        print(f"error: cannot listen: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # interrupted before the signal receiver was installed
        return 130
    return 0

"""The emulator as a process: ``python -m novita_async.emulator`` / ``novita-async emulator``.

It prints, as soon as it listens and each on its own line, ``NOVITA_BASE_URL=...``,
``NOVITA_ASSETS_URL=...`` and ``NOVITA_API_KEY=...`` (ready to paste into a shell), then runs
until SIGINT or SIGTERM and shuts down cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import anyio

from ._config import EmulatorConfig
from ._faults import ROUTES, FaultSpec
from ._server import Emulator

__all__ = ["add_arguments", "config_from_args", "main"]


def _route_value(text: str) -> tuple[str, str]:
    route, sep, value = text.partition(":")
    if not sep or route not in ROUTES:
        raise argparse.ArgumentTypeError(
            f"expected ROUTE:..., with ROUTE one of {', '.join(ROUTES)}; got {text!r}"
        )
    return route, value


def _fault(text: str) -> tuple[str, FaultSpec]:
    route, spec = _route_value(text)
    try:
        return route, FaultSpec.parse(spec)
    except (TypeError, ValueError) as problem:
        raise argparse.ArgumentTypeError(str(problem)) from None


def _script(text: str) -> tuple[str, tuple[str, ...]]:
    route, outcomes = _route_value(text)
    return route, tuple(token for token in outcomes.split(",") if token.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser`` (shared with ``novita-async emulator``)."""
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    add(
        "--port",
        type=int,
        default=0,
        help="the API's port; assets and images take the next two (default: free ports)",
    )
    add("--seed", type=int, default=None, help="seed every random choice, for reproducible runs")
    add("--workers", type=int, default=64, help="tasks processed at once (default: %(default)s)")
    add("--task-seconds", type=float, default=1.0, help="base duration of a task in seconds")
    add(
        "--step-seconds",
        type=float,
        default=0.0,
        help="extra seconds per step per megapixel per image",
    )
    add("--speed-factor", type=float, default=1.0, help="divide every task duration by this")
    add("--task-jitter", type=float, default=0.0, help="relative jitter of durations, 0..1")
    add("--failure-rate", type=float, default=0.0, help="fraction of tasks that fail, 0..1")
    add("--dishonest-eta", action="store_true", help="report random etas instead of true ones")
    add("--image-url-ttl", type=int, default=3600, help="lifetime of image URLs in seconds")
    add(
        "--image-mode",
        choices=("full", "tiny"),
        default="full",
        help="full: pictures showing face, ref and prompt; tiny: flat, cached (benchmarks)",
    )
    add(
        "--image-size-bytes",
        type=int,
        default=None,
        help="pad every image to this many bytes, streamed",
    )
    add(
        "--rate-limit",
        type=float,
        default=None,
        metavar="PER_SECOND",
        help="submissions per second per key before 429",
    )
    add("--images-per-minute", type=int, default=None, help="images per minute per key before 429")
    add(
        "--api-key",
        action="append",
        dest="api_keys",
        default=None,
        metavar="KEY",
        help="accept only this key (repeatable; default: any bearer key)",
    )
    add(
        "--allow-auth-on-assets",
        action="store_true",
        help="accept asset uploads that carry Authorization",
    )
    add(
        "--fault",
        action="append",
        type=_fault,
        default=[],
        metavar="ROUTE:NAME=VALUE,...",
        help="fault spec of a route, e.g. submit:error_5xx=0.05,reset_before=0.02 (routes: "
        + ", ".join(ROUTES)
        + "; names: error_5xx, html_5xx, rate_429, retry_after, "
        "retry_after_http_date, reset, reset_before, reset_after, truncate, expire, latency, "
        "jitter, bandwidth)",
    )
    add(
        "--script",
        action="append",
        type=_script,
        default=[],
        metavar="ROUTE:OUTCOME,...",
        help="outcomes of the next requests to a route, e.g. submit:500,429,reset_after,ok",
    )


def config_from_args(ns: argparse.Namespace) -> EmulatorConfig:
    scripts: dict[str, tuple[str, ...]] = {}
    for route, outcomes in ns.script:
        scripts[route] = scripts.get(route, ()) + outcomes
    return EmulatorConfig(
        host=ns.host,
        port=ns.port,
        seed=ns.seed,
        workers=ns.workers,
        task_base_seconds=ns.task_seconds,
        step_seconds=ns.step_seconds,
        speed_factor=ns.speed_factor,
        task_jitter=ns.task_jitter,
        task_failure_rate=ns.failure_rate,
        eta_honest=not ns.dishonest_eta,
        image_url_ttl=ns.image_url_ttl,
        image_mode=ns.image_mode,
        image_size_bytes=ns.image_size_bytes,
        rate_limit_per_second=ns.rate_limit,
        rate_limit_images_per_minute=ns.images_per_minute,
        api_keys=ns.api_keys,
        allow_auth_on_assets=ns.allow_auth_on_assets,
        faults=dict(ns.fault),
        fault_scripts=scripts,
    )


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
        description="Run a local emulator of the Novita InstantID API.",
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

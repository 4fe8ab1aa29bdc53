"""The benchmark scenarios, at full and at ``--quick`` scale, and how the emulator is set up for
each (its own process, tiny images unless image size is the point); the contenders, and what sets
one apart (its script, webhooks, its emulator's own faults)."""

from __future__ import annotations

import attrs

ALL_CONTENDERS = ("novita-async", "official-sdk", "naive-asyncio", "floor")
THIS_PACKAGE = ("novita-async",)
WEBHOOKS = "novita-async-webhooks"
WEBHOOKS_DROPPED = "novita-async-webhooks-drop"
OBJECT_STORE = "novita-async-s3"
RAY_2, RAY_4 = "ray-2-shards", "ray-4-shards"
MIB = 1024 * 1024

# Quick runs shrink spreads of task times by this factor (2..20 s to 0.05..0.5 s), base task times
# to at most QUICK_TASK_SECONDS, and jobs to ``quick_jobs``: seconds, not minutes.
QUICK_TIME_SCALE = 0.025
QUICK_TASK_SECONDS = 0.05


def _faults(spec: str) -> tuple[str, ...]:
    """The same fault spec on every route a batch uses."""
    routes = ("upload", "submit", "result", "image")
    return tuple(arg for route in routes for arg in ("--fault", f"{route}:{spec}"))


@attrs.frozen
class Contender:
    """What runs as a contender: a script, told whether to take tasks' ends by webhook, against
    an emulator given ``emulator_args`` on top of the scenario's."""

    module: str
    webhooks: bool = False
    emulator_args: tuple[str, ...] = ()
    shards: int = 0


CONTENDERS: dict[str, Contender] = {
    "novita-async": Contender("benchmarks.contenders.ours"),
    "official-sdk": Contender("benchmarks.contenders.sdk"),
    "naive-asyncio": Contender("benchmarks.contenders.naive"),
    "floor": Contender("benchmarks.contenders.floor"),
    WEBHOOKS: Contender("benchmarks.contenders.ours", webhooks=True),
    WEBHOOKS_DROPPED: Contender(
        "benchmarks.contenders.ours", webhooks=True, emulator_args=("--webhook-faults", "drop=0.1")
    ),
    OBJECT_STORE: Contender("benchmarks.contenders.object_store"),
    RAY_2: Contender("benchmarks.contenders.sharded", shards=2),
    RAY_4: Contender("benchmarks.contenders.sharded", shards=4),
}


@attrs.frozen
class Scenario:
    name: str
    description: str
    jobs: int
    quick_jobs: int
    concurrency: int
    task_seconds: float
    """Base duration of every task (the emulator's ``--task-seconds``)."""
    emulator_args: tuple[str, ...] = ()
    contenders: tuple[str, ...] = ALL_CONTENDERS
    rate: float | None = None
    """Submissions per second the emulator allows; this package is told the same."""
    faces: int = 20
    refs: int = 10
    steps_range: tuple[int, int] | None = None
    """Each job gets its own ``steps`` in this range (see ``RunSpec.steps_for``)..."""
    spread_seconds: tuple[float, float] | None = None
    """...which the emulator's ``--step-seconds`` maps onto task times in this range."""
    image_size_bytes: int | None = None
    module: str | None = None
    """A dedicated contender script run instead of the usual one (e.g. the big-image download)."""
    modules: tuple[tuple[str, str], ...] = ()
    """(contender, script) pairs: a script of the scenario's own for that contender (the mixed
    tasks), instead of :attr:`module` or the contender's usual one."""
    masks: int = 0
    """Inpainting masks made for the jobs; a scenario with masks runs the mixed tasks, and the
    harness checks each run's images and submissions (``benchmarks._mixed``)."""
    width: int = 128
    height: int = 128
    repeats: int = 1
    """Runs of each contender in ``repeated``, interleaved (A, B, A, B...), each against a fresh
    emulator; each figure is reported as its median over the runs. Shared machines drift from
    one minute to the next (file-system work costs several times more at times), so a ratio of
    two single runs minutes apart measures the drift as much as the code."""
    repeated: tuple[str, ...] = ("novita-async", "floor")
    quick_contenders: tuple[str, ...] | None = None
    """The contenders of a quick run, when not all (one Ray size shows the harness works)."""
    end_to_disk: bool = False
    """Contenders report when each task's image was on disk, and the harness measures each from
    the moment the emulator ended the task (the latency a webhook exists to cut)."""

    def __attrs_post_init__(self) -> None:
        if self._raw_base() < -1e-9:
            raise ValueError(
                f"{self.name}: steps {self.steps_range} cannot spread tasks over"
                f" {self.spread_seconds} s (most/fewest steps must be >= slowest/fastest)"
            )

    def scaled(self, quick: bool) -> Scenario:
        if not quick:
            return self
        spread = self.spread_seconds
        return attrs.evolve(
            self,
            contenders=self.quick_contenders or self.contenders,
            repeats=1,
            jobs=self.quick_jobs,
            # One wave: a quick run shows the harness works, not how waves queue.
            concurrency=min(self.concurrency, self.quick_jobs),
            task_seconds=min(self.task_seconds, QUICK_TASK_SECONDS),
            spread_seconds=spread and (spread[0] * QUICK_TIME_SCALE, spread[1] * QUICK_TIME_SCALE),
        )

    def module_of(self, contender: str) -> str:
        """The script ``contender`` runs in this scenario."""
        own = dict(self.modules).get(contender)
        return own or self.module or CONTENDERS[contender].module

    @property
    def mixed(self) -> bool:
        return self.masks > 0

    def step_seconds(self) -> float:
        """Seconds per step per megapixel that spread ``steps_range`` onto ``spread_seconds``:
        ``task_seconds + step_seconds * steps * megapixels`` is the emulator's task time."""
        if self.spread_seconds is None or self.steps_range is None:
            return 0.0
        (fastest, slowest), (fewest, most) = self.spread_seconds, self.steps_range
        per_step = (slowest - fastest) / (most - fewest)
        return per_step / (self.width * self.height / 1_000_000)

    def base_seconds(self) -> float:
        """The emulator's ``--task-seconds``: the plain base, or what the spread leaves of it."""
        return max(0.0, self._raw_base())

    def _raw_base(self) -> float:
        if self.spread_seconds is None or self.steps_range is None:
            return self.task_seconds
        (fastest, slowest), (fewest, most) = self.spread_seconds, self.steps_range
        return fastest - (slowest - fastest) / (most - fewest) * fewest

    def fastest_task(self) -> float:
        return self.spread_seconds[0] if self.spread_seconds else self.task_seconds

    def ideal_wall(self) -> float:
        """N*T/C + T for equal tasks; the slowest task when a spread fits in one wave; never
        under N/R when submissions are rate-limited."""
        if self.spread_seconds:
            fastest, slowest = self.spread_seconds
            waves = self.jobs / self.concurrency
            ideal = slowest if waves <= 1 else waves * (fastest + slowest) / 2 + slowest
        else:
            ideal = self.jobs * self.task_seconds / self.concurrency + self.task_seconds
        if self.rate:
            ideal = max(ideal, self.jobs / self.rate)
        return ideal

    def emulator_command(self, contender: str | None = None) -> list[str]:
        """Arguments of ``python -m novita_async.emulator`` after ``--port``: the scenario's, and
        ``contender``'s own (see :attr:`Contender.emulator_args`)."""
        # The service runs as many tasks at once as the scenario's concurrency: a contender that
        # sends more at once (the naive loop) finds them queued, as it would on the real service.
        args = ["--image-mode", "tiny", "--workers", str(self.concurrency)]
        args += ["--task-seconds", f"{self.base_seconds():g}"]
        if step_seconds := self.step_seconds():
            args += ["--step-seconds", f"{step_seconds:.6g}"]
        if self.rate:
            args += ["--rate-limit", f"{self.rate:g}"]
        if self.image_size_bytes:
            args += ["--image-size-bytes", str(self.image_size_bytes)]
        own = CONTENDERS[contender].emulator_args if contender else ()
        return [*args, *self.emulator_args, *own]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="throughput",
            description="2,000 single-image jobs, 20 faces x 10 refs, 1 s tasks, 200 in flight",
            jobs=2000,
            quick_jobs=12,
            concurrency=200,
            task_seconds=1.0,
            repeats=5,
        ),
        Scenario(
            name="rate-limited",
            description="400 jobs against a limit of 20 submissions/s (this package told rate=20)",
            jobs=400,
            quick_jobs=25,
            concurrency=100,
            task_seconds=0.5,
            rate=20.0,
        ),
        Scenario(
            name="polling",
            description="task times spread from 2 to 20 s (steps 10..100) with honest eta hints",
            jobs=200,
            quick_jobs=8,
            concurrency=200,
            task_seconds=0.0,
            steps_range=(10, 100),
            spread_seconds=(2.0, 20.0),
        ),
        Scenario(
            name="scale-10k",
            description="10,000 jobs with near-zero task time, from a generator",
            jobs=10_000,
            quick_jobs=50,
            concurrency=200,
            task_seconds=0.0,
            contenders=THIS_PACKAGE,
        ),
        Scenario(
            name="scale-100k",
            description="100,000 jobs with near-zero task time, from a generator",
            jobs=100_000,
            quick_jobs=100,
            concurrency=200,
            task_seconds=0.0,
            contenders=THIS_PACKAGE,
        ),
        Scenario(
            name="big-image",
            description="one 64 MiB image downloaded with NovitaClient.download_image",
            jobs=1,
            quick_jobs=1,
            concurrency=1,
            task_seconds=0.0,
            image_size_bytes=64 * MIB,
            contenders=THIS_PACKAGE,
            module="benchmarks.contenders.big_image",
        ),
        Scenario(
            name="faults",
            description="throughput with 5% 5xx, 5% 429 (Retry-After: 0) and 2% connection resets"
            " on every route",
            jobs=2000,
            quick_jobs=30,
            concurrency=200,
            task_seconds=1.0,
            emulator_args=_faults("error_5xx=0.05,rate_429=0.05,reset_before=0.02,retry_after=0"),
        ),
        Scenario(
            name="webhooks",
            description="1,000 of throughput's jobs, 1 s tasks, 200 in flight, each task's end"
            " learnt by polling, by webhook, and by webhook with 10% of the events dropped",
            jobs=1000,
            quick_jobs=12,
            concurrency=200,
            task_seconds=1.0,
            contenders=("novita-async", WEBHOOKS, WEBHOOKS_DROPPED, "floor"),
            repeated=("novita-async", WEBHOOKS, WEBHOOKS_DROPPED, "floor"),
            repeats=5,
            end_to_disk=True,
        ),
        Scenario(
            name="scale-out",
            description="600 jobs, 1 s tasks, 100 in flight in all, against a limit of 20"
            " submissions/s (told rate=20): one process into a folder, one into s3:// (a local"
            " S3 server), and 2 and 4 shards on a local Ray instance",
            jobs=600,
            quick_jobs=10,
            concurrency=100,
            task_seconds=1.0,
            rate=20.0,
            contenders=("novita-async", OBJECT_STORE, RAY_2, RAY_4),
            repeated=("novita-async", OBJECT_STORE, RAY_2, RAY_4),
            repeats=3,
            quick_contenders=("novita-async", OBJECT_STORE, RAY_2),
        ),
        Scenario(
            name="mixed",
            description="400 jobs mixing txt2img (one in eight of two images), img2img,"
            " inpainting, upscale and InstantID (4:3:1:1:1), 1 s tasks, 100 in flight: this"
            " package's runner against the official SDK's methods in a thread pool",
            jobs=400,
            quick_jobs=20,
            concurrency=100,
            task_seconds=1.0,
            contenders=("novita-async", "official-sdk"),
            repeated=("novita-async", "official-sdk"),
            repeats=5,
            modules=(
                ("novita-async", "benchmarks.contenders.mixed_ours"),
                ("official-sdk", "benchmarks.contenders.mixed_sdk"),
            ),
            faces=40,  # each of the 40 upscale jobs has its own picture (benchmarks._mixed)
            masks=10,
        ),
    )
}

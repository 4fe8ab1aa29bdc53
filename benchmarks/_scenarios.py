"""The benchmark scenarios, at full and at ``--quick`` scale, and the figures each must show."""

from __future__ import annotations

import attrs

ALL_CONTENDERS = ("novita-async", "official-sdk", "naive-asyncio", "floor")


@attrs.frozen
class Scenario:
    name: str
    description: str
    jobs: int
    quick_jobs: int
    concurrency: int
    task_seconds: float
    emulator_args: tuple[str, ...] = ()
    contenders: tuple[str, ...] = ALL_CONTENDERS
    rate: float | None = None
    faces: int = 20
    refs: int = 10
    # Spread of task durations: steps vary per job and the emulator charges per step.
    steps_range: tuple[int, int] | None = None

    def scaled(self, quick: bool) -> Scenario:
        if not quick:
            return self
        return attrs.evolve(
            self,
            jobs=self.quick_jobs,
            concurrency=min(self.concurrency, max(10, self.quick_jobs // 4)),
            task_seconds=min(self.task_seconds, 0.2),
        )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="throughput",
            description="2,000 single-image jobs, 20 faces x 10 refs, 1 s tasks, 200 in flight",
            jobs=2000,
            quick_jobs=60,
            concurrency=200,
            task_seconds=1.0,
        ),
        Scenario(
            name="rate-limited",
            description="400 jobs against a limit of 20 submissions/s",
            jobs=400,
            quick_jobs=40,
            concurrency=100,
            task_seconds=0.5,
            rate=20.0,
            emulator_args=("--rate-limit", "20"),
        ),
        Scenario(
            name="polling",
            description="task times spread from 2 to 20 s with honest eta hints",
            jobs=200,
            quick_jobs=20,
            concurrency=200,
            task_seconds=2.0,
            steps_range=(10, 100),
        ),
        Scenario(
            name="scale-10k",
            description="10,000 jobs with near-zero task time, from a generator",
            jobs=10_000,
            quick_jobs=300,
            concurrency=200,
            task_seconds=0.0,
            contenders=("novita-async",),
        ),
        Scenario(
            name="scale-100k",
            description="100,000 jobs with near-zero task time, from a generator",
            jobs=100_000,
            quick_jobs=600,
            concurrency=200,
            task_seconds=0.0,
            contenders=("novita-async",),
        ),
        Scenario(
            name="faults",
            description="throughput with 5% 5xx, 5% 429 and 2% connection resets",
            jobs=2000,
            quick_jobs=60,
            concurrency=200,
            task_seconds=1.0,
            emulator_args=(
                "--fault",
                "submit:error_5xx=0.05,rate_429=0.05,reset_before=0.02",
                "--fault",
                "result:error_5xx=0.05,rate_429=0.05,reset_before=0.02",
                "--fault",
                "upload:error_5xx=0.05,rate_429=0.05,reset_before=0.02",
                "--fault",
                "image:error_5xx=0.05,rate_429=0.05,reset_before=0.02",
            ),
        ),
    )
}

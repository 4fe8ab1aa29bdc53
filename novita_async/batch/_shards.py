"""Shards: one run's jobs split among K runners by a stable hash of each job's id.

A job belongs to shard ``shard_of(job.id, K)``: the sha256 of the id's UTF-8 bytes, as an
integer, modulo K; the same in every process and on every machine (Python's ``hash`` of a str is
salted per process). A runner whose ``options.shard`` is ``Shard(k, K)`` reads every job and runs
only its own. Its journal, ``results.jsonl`` and lock live in ``OUT/.novita-shards/<k>-of-<K>/``;
its images go straight into OUT (their names are unique by job id, so shards never collide).
:func:`merge_shard_results` writes ``OUT/results.jsonl`` from the shards' files: the lines a
single run over the same jobs writes, shard after shard. For an object-store OUT the same layout
is a key prefix (``PREFIX/.novita-shards/<k>-of-<K>/``, its journal segments under
``.novita-journal/`` there), and :func:`merge_stored_shard_results` reads the shards' results
from the store.

An output folder keeps one layout: a folder run in K shards refuses a run in another number of
shards and an unsharded run, and a folder run unsharded refuses a sharded one, naming both. For
an object-store OUT the store's keys say (:func:`check_stored_layout`), not only the local
staging folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import anyio
import attrs
from attrs import validators as v

from .._atomic import local_io, write_atomically
from .._exceptions import ConfigurationError
from ._destination import Destination, LocalOutput, ObjectOutput
from ._journal import JOURNAL_NAME
from ._journal_segments import JOURNAL_KEY
from ._results import RESULTS_NAME, ResultLine

try:  # pragma: no cover - always present on POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: merges are not serialised
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SHARDS_FOLDER",
    "Shard",
    "check_layout",
    "check_stored_layout",
    "merge_shard_results",
    "merge_stored_shard_results",
    "shard_of",
    "shard_results",
]

SHARDS_FOLDER = ".novita-shards"
_FOLDER_NAME = re.compile(r"(\d+)-of-(\d+)")
_MERGE_LOCK = ".merge-lock"


def shard_of(job_id: str, count: int) -> int:
    """The shard (0 to ``count - 1``) that runs the job ``job_id``, the same in every process."""
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def _whole(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be an integer, got {value!r}")


def _below_count(instance: Shard, attribute: attrs.Attribute[int], index: int) -> None:
    if not 0 <= index < instance.count:
        raise ValueError(f"{attribute.name} must be 0 to count - 1, got {index!r}")


@attrs.frozen
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count): the jobs whose id hashes to it."""

    # Validators run once both are set, so the index's may read the count.
    index: int = attrs.field(validator=v.and_(_whole, _below_count))
    count: int = attrs.field(validator=v.and_(_whole, v.ge(1)))

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"INDEX/COUNT"`` (``"0/4"``); ``ValueError`` otherwise."""
        index, sep, count = text.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise ValueError(f"{text!r} is not INDEX/COUNT")
        try:
            return cls(int(index), int(count))
        except (TypeError, ValueError):
            raise ValueError(f"{text!r}: INDEX must be below COUNT and COUNT >= 1") from None

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        """Its folder's name: ``<index>-of-<count>``."""
        return f"{self.index}-of-{self.count}"

    def folder(self, out_dir: Path) -> Path:
        """Where its journal, results and lock live."""
        return out_dir / SHARDS_FOLDER / self.name

    def owns(self, job_id: str) -> bool:
        return shard_of(job_id, self.count) == self.index


def _shard_counts(out_dir: Path) -> set[int]:
    """The shard counts of the shard folders in ``out_dir``."""
    try:
        names = os.listdir(out_dir / SHARDS_FOLDER)
    except (FileNotFoundError, NotADirectoryError):
        return set()
    return {int(m[2]) for name in names if (m := _FOLDER_NAME.fullmatch(name))}


def check_layout(out_dir: Path, shard: Shard | None) -> None:
    """:class:`ConfigurationError` unless a run as ``shard`` (None: unsharded) fits the runs
    ``out_dir`` has held: the same number of shards, or unsharded, as before."""
    _refuse_other_layout(
        str(out_dir), _shard_counts(out_dir), (out_dir / JOURNAL_NAME).exists(), shard
    )


async def check_stored_layout(output: Destination, shard: Shard | None) -> None:
    """:func:`check_layout` for an object-store OUT, from its keys: ``.novita-shards/<k>-of-<K>/``
    for a sharded run, ``.novita-journal/`` for an unsharded one (a LocalOutput: nothing to do).
    Its staging folder may be new (another machine): the store tells what OUT has held."""
    if isinstance(output, LocalOutput):
        return
    counts = {
        int(m[2])
        for key in await output.list_keys(SHARDS_FOLDER + "/")
        if (m := _FOLDER_NAME.fullmatch(key.split("/")[1]))
    }
    unsharded = bool(await output.list_keys(JOURNAL_KEY + "/"))
    _refuse_other_layout(output.url, counts, unsharded, shard)


def _refuse_other_layout(
    where: str, counts: set[int], unsharded: bool, shard: Shard | None
) -> None:
    if shard is None:
        if counts:
            earlier = _in_shards(counts)
            raise ConfigurationError(
                f"{where} holds a run in {earlier}; this run is unsharded: run it in "
                f"{earlier} as well (novita-async run --ray --shards {max(counts)}), or use "
                "another output folder"
            )
        return
    others = counts - {shard.count}
    if others or unsharded:
        earlier = _in_shards(others) if others else "one process (unsharded)"
        raise ConfigurationError(
            f"{where} holds a run in {earlier}; this run asks for {_in_shards({shard.count})}: "
            "rerun with the folder's layout, or use another output folder"
        )


def _in_shards(counts: set[int]) -> str:
    return " and ".join(f"{n} shard{'s' if n != 1 else ''}" for n in sorted(counts))


def shard_results(out_dir: Path, count: int) -> list[Path]:
    """The results files of the ``count`` shards of ``out_dir``, in shard order."""
    return [Shard(k, count).folder(out_dir) / RESULTS_NAME for k in range(count)]


def _whole_lines(lines: Iterable[bytes]) -> Iterator[bytes]:
    for line in lines:
        try:
            ResultLine.decode(line)
        except ValueError:
            continue  # a torn last line: that shard's rerun rebuilds its file
        yield line


def merge_shard_results(out_dir: Path, count: int) -> Path:
    """Write ``OUT/results.jsonl`` (atomically) from the results of the ``count`` shards; its path.

    Each shard's file already lists each of its jobs once (its runner rebuilt it as it ended);
    lines are copied as they are, shard after shard, so memory does not grow with the run. Two
    merges at once (shards run by hand, ending together) take turns, so the last one to write
    has read every shard's final file.
    """
    target = out_dir / RESULTS_NAME

    def lines() -> Iterator[bytes]:
        for path in shard_results(out_dir, count):
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                continue  # a shard that never started
            with handle:
                yield from _whole_lines(handle)

    lock_path = out_dir / SHARDS_FOLDER / _MERGE_LOCK
    with local_io("merging the shards' results", lock_path):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        write_atomically(target, lines())
    finally:
        os.close(fd)
    return target


async def merge_stored_shard_results(output: ObjectOutput, count: int) -> Path:
    """:func:`merge_shard_results` for an object-store OUT: the shards' ``results.jsonl`` read
    from the store (wherever each shard ran), written to the staging folder and uploaded as
    ``results.jsonl``; the staging copy's path."""
    target = output.staging / RESULTS_NAME
    parts = []
    for k in range(count):
        key = f"{SHARDS_FOLDER}/{Shard(k, count).name}/{RESULTS_NAME}"
        data = await output.get_bytes(key)  # None: a shard that never started
        parts.append(b"" if data is None else data)

    def write() -> None:
        with local_io("creating the staging folder", output.staging):
            output.staging.mkdir(parents=True, exist_ok=True)
        write_atomically(
            target, _whole_lines(line for part in parts for line in part.splitlines(True))
        )

    await anyio.to_thread.run_sync(write)
    await output.publish_file(target, RESULTS_NAME)
    return target

"""Shards: one run's jobs split among K runners by a stable hash of each job's id.

A job belongs to shard ``shard_of(job.id, K)``: the sha256 of the id's UTF-8 bytes, as an
integer, modulo K; the same in every process and on every machine (Python's ``hash`` of a str is
salted per process). A runner whose ``options.shard`` is ``Shard(k, K)`` reads every job and runs
only its own. Its journal, ``results.jsonl`` and lock live in ``OUT/.novita-shards/<k>-of-<K>/``;
its images go straight into OUT (their names are unique by job id, so shards never collide). The
layout checks and the merge of the shards' results are the output's (:mod:`._outputs`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs
from attrs import validators as v

from ._outputs import SHARDS_FOLDER, ObjectOutput, Output, shard_name
from ._outputs import check_folder_layout as check_layout
from ._outputs import merge_shard_files as merge_shard_results

__all__ = [
    "SHARDS_FOLDER",
    "Shard",
    "check_layout",  # (this and the other three below: shims, removed in Phase B)
    "check_stored_layout",
    "merge_shard_results",
    "merge_stored_shard_results",
    "shard_of",
]

merge_stored_shard_results = ObjectOutput.merge_shard_results


async def check_stored_layout(output: Output, shard: Shard | None) -> None:  # (shim, Phase B)
    await output.check_layout(shard)


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
        return shard_name(self.index, self.count)

    def folder(self, out_dir: Path) -> Path:
        """Where its journal, results and lock live."""
        return out_dir / SHARDS_FOLDER / self.name

    def owns(self, job_id: str) -> bool:
        return shard_of(job_id, self.count) == self.index

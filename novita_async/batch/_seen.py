"""The job ids seen in one run, in about 16 bytes each whatever the ids look like.

A run must refuse a job id it has already seen (a second job under the same id would pay for a
second task and overwrite the first one's images), so it remembers every id, and a set of strings
would make memory grow by ~120 bytes per job of the input. This keeps a 64-bit digest per id in an
open-addressing table backed by an :class:`array.array`. The digest is Python's own string hash
(SipHash, keyed at random per process, computed once per string and cached in it): the table lives
for one run, so it needs no digest that is stable across processes. Two different ids share a
digest with probability about n^2 / 2^65 (3e-10 for 100,000 jobs); the second would then be
refused as a duplicate, which is reported, never silent.
"""

from __future__ import annotations

import hashlib
import sys
from array import array

__all__ = ["SeenIds"]

_EMPTY = 0


_MASK = (1 << 64) - 1


if sys.hash_info.width >= 64:

    def _digest(job_id: str) -> int:
        return (hash(job_id) & _MASK) or 1  # 0 marks an empty slot

else:  # pragma: no cover - a 32-bit build, whose string hash is too short

    def _digest(job_id: str) -> int:
        data = job_id.encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") or 1


class SeenIds:
    def __init__(self, capacity: int = 1024) -> None:
        size = 1
        while size < 2 * capacity:
            size *= 2
        self._table = array("Q", bytes(8 * size))
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, job_id: str) -> bool:
        """Record ``job_id``; False if it was already there."""
        digest = _digest(job_id)
        if not self._insert(self._table, digest):
            return False
        self._count += 1
        if 2 * self._count > len(self._table):  # keep the table at most half full
            bigger = array("Q", bytes(16 * len(self._table)))
            for value in self._table:
                if value != _EMPTY:
                    self._insert(bigger, value)
            self._table = bigger
        return True

    @staticmethod
    def _insert(table: array[int], digest: int) -> bool:
        mask = len(table) - 1
        slot = digest & mask
        while (value := table[slot]) != _EMPTY:
            if value == digest:
                return False
            slot = (slot + 1) & mask
        table[slot] = digest
        return True

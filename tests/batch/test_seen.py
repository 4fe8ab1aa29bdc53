"""The compact set of job ids a run has seen."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from novita_async.batch._seen import SeenIds


@given(st.lists(st.text(min_size=0, max_size=12), max_size=300))
def test_each_id_is_new_once_and_a_duplicate_after(ids: list[str]) -> None:
    seen = SeenIds(capacity=4)  # small, so the table grows several times
    expected: set[str] = set()
    for job_id in ids:
        assert seen.add(job_id) is (job_id not in expected)
        expected.add(job_id)
    assert len(seen) == len(expected)
    assert all(not seen.add(job_id) for job_id in expected)


def test_many_ids_cost_about_sixteen_bytes_each() -> None:
    seen = SeenIds()
    for n in range(100_000):
        assert seen.add(str(n))
    assert not seen.add("99999")
    assert seen._table.itemsize * len(seen._table) <= 32 * 100_000

"""What is in OUT is the truth: a rerun checks the images of the jobs the journal calls succeeded,
fetches a missing or damaged one again from its task (free), reports a job whose task the service
no longer has as lost (paid again only with ``--retry-failed``), and ``status --verify`` re-hashes
the images against the journal's SHA-256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from novita_async.batch._journal import JOURNAL_NAME

from .conftest import EmulatorProcess, cli
from .test_run import job, results, write_jobs

JOBS = 5


def five_jobs(tmp_path: Path) -> Path:
    faces, scenes = ("ada", "grace"), ("beach", "forest")
    lines = [job(faces[n % 2], scenes[n // 2 % 2], id=f"j{n}") for n in range(JOBS)]
    return write_jobs(tmp_path, lines)


def run(jobs: Path, out: Path, emulator: EmulatorProcess, *flags: str) -> Any:
    return cli("run", str(jobs), "--out", str(out), "--no-progress", *flags, env=emulator.env,
               cwd=jobs.parent)  # fmt: skip


def submissions(emulator: EmulatorProcess) -> int:
    count: int = emulator.stats()["submissions"]
    return count


def journal_records(out: Path) -> list[dict[str, Any]]:
    lines = (out / JOURNAL_NAME).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def first_run(tmp_path: Path, emulator: EmulatorProcess) -> tuple[Path, Path]:
    jobs = five_jobs(tmp_path)
    out = tmp_path / "out"
    done = run(jobs, out, emulator)
    assert done.returncode == 0, done.stderr
    assert all(r["status"] == "succeeded" for r in results(out).values())
    return jobs, out


def test_the_journal_records_each_image_size_and_sha256(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    _, out = first_run(tmp_path, emulator)
    succeeded = [r for r in journal_records(out) if r["type"] == "succeeded"]
    assert len(succeeded) == JOBS
    for record in succeeded:
        data = [(out / name).read_bytes() for name in record["files"]]
        assert record["sizes"] == [len(d) for d in data]
        assert record["digests"] == [hashlib.sha256(d).hexdigest() for d in data]


def test_a_deleted_image_is_fetched_again_from_its_task_and_nothing_is_paid(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs, out = first_run(tmp_path, emulator)
    image = out / "j2_0.png"
    original = image.read_bytes()
    image.unlink()
    before = submissions(emulator)

    rerun = run(jobs, out, emulator)
    assert rerun.returncode == 0, rerun.stderr
    assert submissions(emulator) == before  # fetched from the task's result, not paid again
    assert image.read_bytes() == original
    said = f"{JOBS} jobs: {JOBS} succeeded, 0 failed, {JOBS - 1} from an earlier run, 1 restored"
    assert said in rerun.stdout
    lines = results(out)
    assert all(r["status"] == "succeeded" for r in lines.values())
    assert lines["j2"]["files"] == ["j2_0.png"]
    # The journal says what was verified: j2's last record is its success again.
    last = [r for r in journal_records(out) if r.get("id") == "j2"][-1]
    assert last["type"] == "succeeded" and last["sizes"] == [len(original)]


def test_a_truncated_image_is_fetched_again(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs, out = first_run(tmp_path, emulator)
    image = out / "j0_0.png"
    original = image.read_bytes()
    image.write_bytes(original[: len(original) // 2])
    before = submissions(emulator)

    rerun = run(jobs, out, emulator)
    assert rerun.returncode == 0, rerun.stderr
    assert submissions(emulator) == before
    assert image.read_bytes() == original
    assert "1 restored from their tasks" in rerun.stdout


def test_an_image_whose_task_the_service_forgot_is_lost_and_paid_again_only_when_asked(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs, out = first_run(tmp_path, emulator)
    task_id = results(out)["j3"]["task_id"]
    (out / "j3_0.png").unlink()
    emulator.control("POST", "/__emulator/forget", {"tasks": [task_id]})
    before = submissions(emulator)

    rerun = run(jobs, out, emulator)
    assert rerun.returncode == 1, rerun.stderr
    assert submissions(emulator) == before  # never paid again by a plain rerun
    lost = results(out)["j3"]
    assert lost["status"] == "failed"
    assert lost["error"]["reason"] == "OUTPUT_LOST"
    assert task_id in lost["error"]["message"] and "--retry-failed" in lost["error"]["message"]
    assert f"{JOBS} jobs: {JOBS - 1} succeeded, 1 failed (OUTPUT_LOST: 1)" in rerun.stdout
    assert "1 OUTPUT_LOST (" in rerun.stdout

    again = run(jobs, out, emulator)  # a plain rerun again: still lost, still nothing paid
    assert again.returncode == 1, again.stderr
    assert submissions(emulator) == before
    assert results(out)["j3"]["error"]["reason"] == "OUTPUT_LOST"

    paid = run(jobs, out, emulator, "--retry-failed")
    assert paid.returncode == 0, paid.stderr
    assert submissions(emulator) == before + 1  # paid for once, knowingly
    assert results(out)["j3"]["status"] == "succeeded"
    assert results(out)["j3"]["task_id"] != task_id
    assert (out / "j3_0.png").is_file()


def test_status_verify_finds_a_damaged_image_of_the_same_size(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    _, out = first_run(tmp_path, emulator)
    clean = cli("status", str(out), "--verify")
    assert clean.returncode == 0, clean.stderr
    assert f"{JOBS} images verified" in clean.stdout

    image = out / "j1_0.png"
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    image.write_bytes(bytes(data))
    plain = cli("status", str(out))  # sizes only: the flip is not seen without --verify
    assert plain.returncode == 0, plain.stderr

    damaged = cli("status", str(out), "--verify")
    assert damaged.returncode == 1, damaged.stderr
    assert "1 damaged" in damaged.stdout
    parsed = json.loads(cli("status", str(out), "--verify", "--json").stdout)
    assert (parsed["succeeded"], parsed["outputs_missing"]) == (JOBS - 1, 1)
    assert (parsed["images_damaged"], parsed["verified"]) == (1, True)


def test_status_does_not_call_succeeded_a_job_whose_image_is_gone(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    _, out = first_run(tmp_path, emulator)
    (out / "j4_0.png").unlink()
    said = cli("status", str(out))
    assert said.returncode == 0, said.stderr
    parsed = json.loads(cli("status", str(out), "--json").stdout)
    assert (parsed["succeeded"], parsed["outputs_missing"], parsed["images_missing"]) == (
        JOBS - 1, 1, 1,
    )  # fmt: skip
    assert "images missing" in said.stdout
    assert cli("status", str(out), "--verify").returncode == 1


def test_a_journal_from_before_sizes_were_kept_loads_and_its_images_are_checked_there(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs, out = first_run(tmp_path, emulator)
    old = []
    for record in journal_records(out):
        for key in ("c", "sizes", "digests"):  # as an earlier version wrote its lines
            record.pop(key, None)
        old.append(json.dumps(record) + "\n")
    (out / JOURNAL_NAME).write_text("".join(old), encoding="utf-8")
    said = cli("status", str(out), "--verify")
    assert said.returncode == 0, said.stderr
    assert f"{JOBS} with no size or SHA-256 recorded (checked there only)" in said.stdout

    original = (out / "j1_0.png").read_bytes()
    (out / "j1_0.png").unlink()
    before = submissions(emulator)
    rerun = run(jobs, out, emulator)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 restored from their tasks" in rerun.stdout
    assert submissions(emulator) == before
    assert (out / "j1_0.png").read_bytes() == original


def test_a_dry_run_says_a_missing_image_is_fetched_again_not_done(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs, out = first_run(tmp_path, emulator)
    (out / "j2_0.png").unlink()
    planned = cli("run", str(jobs), "--out", str(out), "--dry-run", "--json", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert (plan["done"], plan["to_restore"], plan["to_submit"]) == (JOBS - 1, 1, 0)
    said = cli("run", str(jobs), "--out", str(out), "--dry-run", cwd=tmp_path)
    assert "1 with images missing to fetch again from their tasks (free)" in said.stdout


def test_a_job_changed_since_its_image_went_missing_is_not_paid_for_silently(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs, out = first_run(tmp_path, emulator)
    (out / "j2_0.png").unlink()
    lines = [json.loads(line) for line in jobs.read_text(encoding="utf-8").splitlines()]
    lines[2]["prompt"] = "another request"
    write_jobs(tmp_path, lines)
    before = submissions(emulator)
    rerun = run(jobs, out, emulator)
    assert rerun.returncode == 1, rerun.stderr
    assert submissions(emulator) == before
    assert results(out)["j2"]["error"]["reason"] == "JOB_CHANGED"

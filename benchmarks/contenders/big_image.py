"""One big image through ``NovitaClient.download_image``: how much memory the download adds.

The task is submitted and awaited first; then the resident set is read, the kernel's peak
(``VmHWM``) is reset to it through ``/proc/self/clear_refs`` (Linux), the image is downloaded, and
the peak read again. Growth = peak during the download - resident before it. Where the peak cannot
be reset, the peak since start-up is used: the growth is then an upper bound.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from benchmarks._spec import RunReport, RunSpec, emit, load_spec, status_kib
from novita_async import Extra, InstantIDRequest, NovitaClient

_MIB = 1024 * 1024


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def download(spec: RunSpec, report: RunReport) -> tuple[Path, int, int, bool]:
    """Make the big image, then download it: (path, RSS before, peak during in KiB, reset?)."""
    async with NovitaClient() as client:
        face, ref = await client.upload_assets([spec.faces[0], spec.refs[0]])
        request = InstantIDRequest(
            prompt="benchmark big image",
            face_image_assets_ids=[face],
            ref_image_assets_ids=[ref],
            width=spec.width,
            height=spec.height,
            steps=spec.steps,
            seed=1,
            extra=Extra(response_image_type=spec.image_type),
        )
        result = await client.wait_for_task(await client.submit_instant_id(request))
        dest = Path(spec.out_dir) / f"big.{result.images[0].image_type}"
        rss_before = status_kib("VmRSS")
        report.peak_rss_kib = status_kib("VmHWM")  # the process's peak so far, before the reset
        peak_reset = _reset_peak()
        await client.download_image(result.images[0], dest)
        return dest, rss_before, status_kib("VmHWM"), peak_reset


def main() -> None:
    spec = load_spec()
    report = RunReport()
    try:
        dest, rss_before, peak_during, peak_reset = asyncio.run(download(spec, report))
    except Exception as exc:
        report.failure(exc)
    else:
        report.success()
        report.figures.update(
            image_mb=round(dest.stat().st_size / _MIB, 1),
            rss_before_mb=round(rss_before / 1024, 1),
            peak_during_mb=round(peak_during / 1024, 1),
            rss_growth_mb=round((peak_during - rss_before) / 1024, 1),
            peak_reset=float(peak_reset),
        )
    emit(report)


if __name__ == "__main__":
    main()

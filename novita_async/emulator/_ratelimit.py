"""Per-key, per-route submission limits over sliding windows, as the service's 429
RATE_LIMIT_EXCEEDED: each endpoint has its own limits, as the service documents."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping

import anyio

__all__ = ["SubmissionLimiter"]


class SubmissionLimiter:
    """At most ``per_second`` submissions per second and ``images_per_minute`` images per minute
    (``route_images_per_minute[route]`` on the routes it names), per API key and per submission
    route. ``admit`` records an admitted submission or says how long to wait."""

    def __init__(
        self,
        per_second: float | None,
        images_per_minute: int | None,
        route_images_per_minute: Mapping[str, int] | None = None,
    ) -> None:
        self._per_second = per_second
        # N submissions per window of W seconds: N = floor(rate) per second, or 1 per 1/rate
        # seconds for rates below one.
        if per_second is None:
            self._count, self._window = 0, 1.0
        elif per_second >= 1:
            self._count, self._window = int(per_second), 1.0
        else:
            self._count, self._window = 1, 1.0 / per_second
        self._images_per_minute = images_per_minute
        self._route_images = dict(route_images_per_minute or {})
        self._recent: defaultdict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._images: defaultdict[tuple[str, str], deque[tuple[float, int]]] = defaultdict(deque)

    def admit(self, key: str, images: int, route: str = "submit") -> float | None:
        """None if the submission may go ahead (it is recorded), else seconds until it may."""
        now = anyio.current_time()
        waits: list[float] = []
        images_per_minute = self._route_images.get(route, self._images_per_minute)
        recent = self._recent[key, route]
        while recent and recent[0] <= now - self._window:
            recent.popleft()
        if self._per_second is not None and len(recent) >= self._count:
            # A slot frees when the oldest admission in the window ages out.
            waits.append(recent[len(recent) - self._count] + self._window - now)
        window = self._images[key, route]
        while window and window[0][0] <= now - 60.0:
            window.popleft()
        if images_per_minute is not None:
            used = sum(n for _, n in window)
            if used + images > images_per_minute:
                freed, wait = used + images - images_per_minute, 60.0
                for stamp, n in window:
                    freed -= n
                    if freed <= 0:
                        wait = stamp + 60.0 - now
                        break
                waits.append(wait)
        if waits:
            return max(max(waits), 0.001)
        if self._per_second is not None:
            recent.append(now)
        if images_per_minute is not None:
            window.append((now, images))
        return None

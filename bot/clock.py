"""The only source of "now": real time in production, a virtual clock for tests and the demo."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current instant, timezone-aware UTC."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class VirtualClock:
    """A clock that starts at `start` and runs `speed` times faster than real time.

    `speed=0` freezes it; `advance()` jumps forward. Thread-safe, so the service's jobs
    and the demo's script can share one.
    """

    def __init__(self, start: datetime, speed: float = 0.0) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs an aware start time")
        self._lock = threading.Lock()
        self._base = start.astimezone(timezone.utc)
        self._real_base = time.monotonic()
        self._speed = speed

    def now(self) -> datetime:
        with self._lock:
            elapsed = (time.monotonic() - self._real_base) * self._speed
            return self._base + timedelta(seconds=elapsed)

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._base += delta

"""Progress lines for long runs: done / total, percent, elapsed and estimated time left."""

from __future__ import annotations

import logging
import time
from typing import Optional

__all__ = ["Progress"]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Progress:
    """Call with the number of items done; logs a line at every ``step_percent`` percent
    (and at the end) to ``logger``, e.g. "accuracy: 50/200 images (25%), 41 s, about 2 min
    03 s left"."""

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "images",
        logger: Optional[logging.Logger] = None,
        step_percent: float = 5.0,
    ):
        self.label, self.total, self.unit = label, max(int(total), 1), unit
        self.logger = logger or logging.getLogger("turbo")
        self.step = step_percent
        self.start = time.perf_counter()
        self.next_percent = step_percent

    def __call__(self, done: int) -> None:
        percent = 100.0 * done / self.total
        if percent + 1e-9 < self.next_percent and done < self.total:
            return
        while self.next_percent <= percent + 1e-9:
            self.next_percent += self.step
        elapsed = time.perf_counter() - self.start
        left = elapsed * (self.total - done) / max(done, 1)
        self.logger.info(
            "%s: %d/%d %s (%.0f%%), %s, about %s left",
            self.label,
            done,
            self.total,
            self.unit,
            percent,
            _duration(elapsed),
            _duration(left),
        )

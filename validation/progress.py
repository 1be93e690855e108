"""Plain progress reporting for long runs (stderr, one line per update, no extra dependency)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(items: Iterable[T], label: str, total: int | None = None, every: float = 2.0,
             enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while printing ``label: i/total (elapsed, eta)`` at most every ``every`` s.

    The first and last items are always reported, so a short run still shows one line.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    start = last = time.monotonic()
    count = 0
    for count, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if enabled and (count == 1 or now - last >= every or count == total):
            last = now
            elapsed = now - start
            if total:
                eta = elapsed / count * (total - count)
                msg = f"{label}: {count}/{total} ({elapsed:.1f}s elapsed, ~{eta:.0f}s left)"
            else:
                msg = f"{label}: {count} ({elapsed:.1f}s elapsed)"
            print(msg, file=sys.stderr, flush=True)

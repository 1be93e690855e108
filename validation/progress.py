"""Progress reporting for long runs: tqdm bars on stderr, plus one-line notes.

- :func:`progress` wraps an iterable (grid points, data sets, N values) in a tqdm bar;
- :func:`training_progress` gives a bar for a training loop, counting steps, showing the loss
  in its postfix and tqdm's own rate (steps/s) and ETA; ``initial`` starts it at the step a
  resumed checkpoint reached;
- :func:`note` prints one line above any open bar (e.g. "resumed: 3/10 points read from
  cache", "reused checkpoint ..."), and :func:`resumed` / :func:`reused_checkpoint` word the
  two cases the same way everywhere.

The ETA is tqdm's exponential moving average of the recent rate (``SMOOTHING``), restarted
after the first item: the time to the first result is mostly start-up (imports, pool start,
JIT), which would otherwise inflate the first estimates many times over; it is shown in the
postfix as "first after X s".
Bars refresh at most every ``every`` seconds (default 1 s) and also appear when stderr is not
a terminal (logs, CI), where each refresh is one carriage-return-separated line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

__all__ = ["note", "progress", "resumed", "reused_checkpoint", "training_progress",
           "TrainingBar"]

T = TypeVar("T")

#: weight of the latest rate in tqdm's moving-average ETA (tqdm's default is 0.3)
SMOOTHING = 0.3


def progress(items: Iterable[T], label: str, total: int | None = None, every: float = 1.0,
             enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while a tqdm bar ``label: i/total [elapsed<eta, rate]`` runs on stderr.

    ``total`` defaults to ``len(items)`` where defined; ``enabled=False`` shows nothing.
    The bar is closed when the loop ends or is interrupted.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = tqdm(desc=label, total=total, disable=not enabled, file=sys.stderr,
               mininterval=every, smoothing=SMOOTHING, dynamic_ncols=True, leave=True)
    try:
        for count, item in enumerate(items, 1):
            if count == 1:
                _restart_after_first(bar)
            else:
                bar.update(1)
            yield item
    finally:
        bar.close()


def _restart_after_first(bar: tqdm) -> None:
    """Count the first item without letting its latency set the rate: the time to the first
    result is mostly start-up (imports, worker pools, JIT compilation), so the clock and the
    rate estimate restart here and the start-up time is shown in the postfix instead."""
    if bar.disable:
        return
    startup = bar.format_dict["elapsed"]
    bar.reset(total=bar.total)
    bar.n = bar.last_print_n = 1
    bar.set_postfix_str(f"first after {startup:.1f}s", refresh=True)


class TrainingBar(tqdm):
    """A tqdm bar over training steps; :meth:`step` advances it and shows the loss."""

    def step(self, n: int = 1, loss: float | None = None) -> None:
        """Advance by ``n`` steps; show ``loss`` (when given) in the postfix."""
        if loss is not None:
            self.set_postfix_str(f"loss={float(loss):.4g}", refresh=False)
        self.update(n)


def training_progress(total_steps: int, label: str, *, initial: int = 0,
                      enabled: bool = True, every: float = 1.0) -> TrainingBar:
    """A bar for ``total_steps`` training steps (unit "step"; rate in steps/s; loss postfix).

    ``initial``: steps already done (a resumed checkpoint), shown as such in the description.
    Use as a context manager or call ``close()``.
    """
    if initial:
        label = f"{label} (resumed at step {initial})"
    return TrainingBar(total=total_steps, initial=initial, desc=label, unit="step",
                       disable=not enabled, file=sys.stderr, mininterval=every,
                       smoothing=SMOOTHING, dynamic_ncols=True, leave=True)


def note(message: str) -> None:
    """Print one line on stderr without breaking an open progress bar."""
    tqdm.write(message, file=sys.stderr)


def resumed(label: str, done: int, total: int) -> None:
    """Report that ``done`` of ``total`` points were read from the cache (a resumed run)."""
    note(f"{label}: resumed, {done}/{total} points read from cache")


def reused_checkpoint(label: str, where: object) -> None:
    """Report that a trained network was loaded from the checkpoint at ``where``."""
    note(f"{label}: reused checkpoint {where}")

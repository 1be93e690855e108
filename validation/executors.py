"""One interface for running a grid of independent Monte-Carlo points, locally or on Dask.

A sweep is a list of grid points (JSON-able dicts) and a module-level task function
``task(point, seed_sequence) -> result`` (picklable, so it can run in another process or on a
Dask worker). :func:`run_grid` maps the task over the points through an :class:`Executor`,
caches every finished point through :class:`~geomem.validation.records.RunOutput` (so an
interrupted sweep resumes and loses nothing finished) and returns the results in grid order.

Reproducibility: the seed of grid point ``i`` is ``SeedSequence(seed).spawn(...)[i]``, i.e.
``SeedSequence(seed, spawn_key=(i,))`` -- keyed by the grid-point index, never by the worker --
and every result goes through a JSON round trip, so the same seed gives the same numbers (bit
for bit) whichever executor ran the point and whether it came from the cache or not.

Executors:

- :class:`SerialExecutor` -- in this process, in grid order (tests, debugging, ``--workers 1``);
- :class:`ProcessExecutor` -- a local process pool (default: both cores), one BLAS/numba
  thread per worker so that workers do not oversubscribe the cores;
- :class:`DaskExecutor` -- a Dask distributed client, either connecting to a running scheduler
  (``--scheduler tcp://host:port``) or starting a ``LocalCluster`` (``--dask-workers N``).

Interrupts: pool workers ignore SIGINT (only the parent handles Ctrl-C), and
:func:`interrupts_raise` (used by the ``geomem`` entry point) turns SIGINT and SIGTERM in the
parent into a ``KeyboardInterrupt``. When
a sweep stops early for any reason, :class:`ProcessExecutor` terminates its workers (SIGTERM,
then SIGKILL after :data:`TERMINATE_GRACE` s) instead of waiting for the running points, so a
command stops within seconds and leaves no worker behind; every point finished before the
interrupt is already cached, so the next run resumes from there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from .options import (
    DaskWorkersOption,
    SchedulerOption,
    WorkersOption,
    check_scheduler_address,
    probe_scheduler,
)
from .progress import progress, resumed
from .records import RunOutput, dumps, from_jsonable

__all__ = [
    "DaskExecutor",
    "Executor",
    "Interrupts",
    "ProcessExecutor",
    "SerialExecutor",
    "TERMINATE_GRACE",
    "interrupts_raise",
    "make_executor",
    "point_seed",
    "run_grid",
    "DaskWorkersOption",
    "SchedulerOption",
    "WorkersOption",
]

#: seconds a terminated pool worker gets to exit before it is killed
TERMINATE_GRACE = 2.0

Task = Callable[[Mapping[str, Any], np.random.SeedSequence], Any]


def point_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed sequence of grid point ``index``: child ``index`` of ``SeedSequence(seed)``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return np.random.SeedSequence(int(seed), spawn_key=(int(index),))


def _json_round_trip(result: Any) -> Any:
    """The result exactly as it will be read back from the cache (lists, floats, str keys)."""
    return from_jsonable(json.loads(dumps(result, sort_keys=True)))


def _run_point(task: Task, point: Mapping[str, Any], seed: int, index: int) -> Any:
    return _json_round_trip(task(point, point_seed(seed, index)))


def _limit_worker_threads() -> None:
    """Worker initializer: one BLAS and one numba thread per worker process."""
    with contextlib.suppress(ValueError):  # not the main thread (threaded Dask workers)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass


class Executor(Protocol):
    """Runs ``_run_point`` calls; yields ``(index, result)`` as they finish (any order)."""

    name: str

    def run(self, task: Task, jobs: Sequence[tuple[int, Mapping[str, Any]]], seed: int
            ) -> Iterator[tuple[int, Any]]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Everything in this process, in grid order."""

    name = "serial"

    def run(self, task, jobs, seed):
        for index, point in jobs:
            yield index, _run_point(task, point, seed, index)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> dict:
        return {"executor": self.name}


class ProcessExecutor:
    """A local pool of ``workers`` processes (forkserver start: safe with torch/numba loaded)."""

    name = "processes"

    def __init__(self, workers: int = 2):
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"workers out of range: allowed workers >= 1, got {workers!r}")
        self.workers = int(workers)
        self._pool = None

    def _ensure_pool(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("forkserver"),
                initializer=_limit_worker_threads)
        return self._pool

    def run(self, task, jobs, seed):
        from concurrent.futures import as_completed

        jobs = list(jobs)
        if not jobs:
            return
        pool = self._ensure_pool()
        futures = {pool.submit(_run_point, task, point, seed, index): index
                   for index, point in jobs}
        finished = False
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
            finished = True
        finally:
            for fut in futures:
                fut.cancel()
            if not finished:  # interrupted, failed or abandoned: do not wait for the workers
                self.terminate()

    def terminate(self) -> None:
        """Stop every worker now (SIGTERM, SIGKILL after ``TERMINATE_GRACE`` s); a later
        :meth:`run` starts a fresh pool."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for proc in processes:
            with contextlib.suppress(OSError, ValueError):
                proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            with contextlib.suppress(OSError, ValueError, AssertionError):
                proc.join(TERMINATE_GRACE)
                if proc.is_alive():
                    proc.kill()
                    proc.join(TERMINATE_GRACE)

    def close(self) -> None:
        """Shut the pool down, waiting for running points (after a finished sweep)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            self.terminate()
        self.close()

    def describe(self) -> dict:
        return {"executor": self.name, "workers": self.workers}


class DaskExecutor:
    """A Dask distributed client: ``scheduler`` address, or a LocalCluster of ``n_workers``.

    ``processes=False`` runs the LocalCluster's workers as threads of this process (fast to
    start; used by the tests); the default gives each worker its own process.
    """

    name = "dask"

    def __init__(self, scheduler: str | None = None, n_workers: int | None = None,
                 processes: bool = True):
        if (scheduler is None) == (n_workers is None):
            raise ValueError("DaskExecutor needs exactly one of scheduler= (an address such as "
                             "tcp://host:8786) or n_workers= (a LocalCluster size >= 1)")
        if scheduler is not None:
            check_scheduler_address(scheduler)
        if n_workers is not None and (isinstance(n_workers, bool) or n_workers < 1):
            raise ValueError(f"dask_workers out of range: allowed >= 1, got {n_workers!r}")
        self.scheduler = scheduler
        self.n_workers = n_workers
        self.processes = bool(processes)
        self._client = None
        self._cluster = None

    def _ensure_client(self):
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.scheduler is not None:
                probe_scheduler(self.scheduler)  # one-line ConnectionError, not a 20 s wait
                self._client = Client(self.scheduler, timeout="20s")
            else:
                self._cluster = LocalCluster(
                    n_workers=self.n_workers, threads_per_worker=1, processes=self.processes,
                    dashboard_address=None)
                self._client = Client(self._cluster)
            if self.processes or self.scheduler is not None:
                self._client.run(_limit_worker_threads)
        return self._client

    def run(self, task, jobs, seed):
        from distributed import as_completed

        jobs = list(jobs)
        if not jobs:
            return
        client = self._ensure_client()
        futures = [client.submit(_run_point, task, point, seed, index, pure=False)
                   for index, point in jobs]
        index_of = {fut.key: index for fut, (index, _) in zip(futures, jobs, strict=True)}
        try:
            for fut in as_completed(futures):
                yield index_of[fut.key], fut.result()
        finally:
            client.cancel(futures)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> dict:
        return {"executor": self.name, "scheduler": self.scheduler,
                "dask_workers": self.n_workers}


def make_executor(workers: int = 2, scheduler: str | None = None,
                  dask_workers: int | None = None
                  ) -> SerialExecutor | ProcessExecutor | DaskExecutor:
    """The executor the CLI options ask for (validated before anything starts).

    ``scheduler`` -> Dask client on that scheduler; ``dask_workers`` -> Dask LocalCluster;
    otherwise ``workers`` local processes (1 = serial, in this process).
    """
    if scheduler is not None and dask_workers is not None:
        raise ValueError("give at most one of --scheduler and --dask-workers")
    if scheduler is not None:
        return DaskExecutor(scheduler=scheduler)
    if dask_workers is not None:
        return DaskExecutor(n_workers=dask_workers)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers out of range: allowed workers >= 1, got {workers!r}")
    return SerialExecutor() if workers == 1 else ProcessExecutor(workers)


def run_grid(task: Task, points: Sequence[Mapping[str, Any]], *, seed: int,
             run: RunOutput | None = None, executor: Any = None, label: str = "grid",
             key_extra: Mapping[str, Any] | None = None,
             on_result: Callable[[int, Any], None] | None = None,
             show_progress: bool = True) -> list[Any]:
    """Results of ``task(points[i], point_seed(seed, i))`` for every ``i``, in grid order.

    Finished points are read from ``run``'s cache (keyed by ``label``, the point, its index,
    the seed and ``key_extra``) and not recomputed; new results are cached as soon as they
    arrive, so an interruption (including an exception raised by ``on_result``) keeps them.
    ``executor`` defaults to :class:`SerialExecutor`.
    """
    point_seed(seed, 0)  # validates the seed before any work
    points = [dict(p) for p in points]
    executor = executor if executor is not None else SerialExecutor()
    extra = dict(key_extra or {})

    def key(i: int) -> dict:
        return {"label": label, "index": i, "seed": int(seed), "point": points[i], **extra}

    results: list[Any] = [None] * len(points)
    pending = []
    for i in range(len(points)):
        if run is not None and run.is_cached(key(i)):
            results[i] = run.cached(key(i), _never)
        else:
            pending.append((i, points[i]))
    done = len(points) - len(pending)
    if done and show_progress:
        resumed(label, done, len(points))
    stream = executor.run(task, pending, int(seed))
    try:
        for index, result in progress(stream, label, total=len(pending),
                                      enabled=show_progress and bool(pending)):
            results[index] = run.cached(key(index), lambda r=result: r) if run else result
            if on_result is not None:
                on_result(index, results[index])
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return results


def _never() -> Any:  # pragma: no cover - only called when the cache file vanished mid-run
    raise RuntimeError("cache entry disappeared while reading it")


class Interrupts:
    """The state of :func:`interrupts_raise`: ``signum`` of the first signal (None if none)."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextlib.contextmanager
def interrupts_raise() -> Iterator[Interrupts]:
    """While active (main thread only), SIGINT and SIGTERM both raise ``KeyboardInterrupt``
    once, so ``finally`` blocks and executor clean-up run on either; further signals during
    that clean-up are ignored (it is bounded by ``TERMINATE_GRACE``). Restores the old
    handlers on exit; yields an :class:`Interrupts` recording which signal came."""
    state = Interrupts()

    def _raise(signum, frame):
        if state.signum is None:
            state.signum = signum
            raise KeyboardInterrupt(signal.Signals(signum).name)

    handled = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {sig: signal.signal(sig, _raise) for sig in handled}
    except ValueError:  # not the main thread: leave signals alone
        yield state
        return
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

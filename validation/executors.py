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
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Protocol

import numpy as np
import typer

from .progress import progress
from .records import RunOutput, to_jsonable

__all__ = [
    "DaskExecutor",
    "Executor",
    "ProcessExecutor",
    "SerialExecutor",
    "make_executor",
    "point_seed",
    "run_grid",
    "DaskWorkersOption",
    "SchedulerOption",
    "WorkersOption",
]

#: URL schemes a Dask scheduler address may use
_SCHEDULER_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")

Task = Callable[[Mapping[str, Any], np.random.SeedSequence], Any]


def point_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed sequence of grid point ``index``: child ``index`` of ``SeedSequence(seed)``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return np.random.SeedSequence(int(seed), spawn_key=(int(index),))


def _json_round_trip(result: Any) -> Any:
    """The result exactly as it will be read back from the cache (lists, floats, str keys)."""
    return json.loads(json.dumps(to_jsonable(result), sort_keys=True))


def _run_point(task: Task, point: Mapping[str, Any], seed: int, index: int) -> Any:
    return _json_round_trip(task(point, point_seed(seed, index)))


def _limit_worker_threads() -> None:
    """Worker initializer: one BLAS and one numba thread per worker process."""
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
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
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
            _check_scheduler(scheduler)
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


def _check_scheduler(scheduler: str) -> None:
    if not isinstance(scheduler, str) or not scheduler.startswith(_SCHEDULER_SCHEMES) or (
            len(scheduler.split("://", 1)[1]) == 0):
        raise ValueError(f"scheduler must be a Dask scheduler address such as tcp://host:8786 "
                         f"(schemes {', '.join(_SCHEDULER_SCHEMES)}), got {scheduler!r}")


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
        print(f"{label}: {done}/{len(points)} points read from cache", file=sys.stderr,
              flush=True)
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


# Reusable typer options: every sweeping command takes the same three.
WorkersOption = Annotated[int, typer.Option(
    "--workers", min=1, help="Local worker processes (1 = run serially in this process).")]
SchedulerOption = Annotated[str | None, typer.Option(
    "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (overrides --workers).")]
DaskWorkersOption = Annotated[int | None, typer.Option(
    "--dask-workers", min=1, help="Start a Dask LocalCluster with this many workers.")]

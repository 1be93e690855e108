"""Command-line options shared by the ``geomem`` commands, and their up-front checks.

One declaration per option (typer ``Annotated`` aliases), so every command spells, documents
and validates ``--out``, ``--seed``, ``--quick``, ``--workers``, ``--scheduler``,
``--dask-workers`` and ``--cache-dir`` the same way. Every check here runs before any work
and fails with a one-line message naming the option and what is allowed (exit status 2):

- :func:`check_out_path`: ``--out`` must be a folder that can be created or written (not under
  /proc, /sys or /dev, not an existing file, not below a file, not read-only);
- :func:`cli_executor`: the executor options, including a short TCP probe of a
  ``--scheduler`` address (:func:`probe_scheduler`, :data:`SCHEDULER_PROBE_TIMEOUT`);
- :func:`check_memory`: a run whose estimated memory exceeds :func:`memory_limit`;
- :func:`quick_sizes`: ``--quick`` picks test sizes, but sizes given explicitly on the
  command line win over it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import psutil
import typer

from ._common import EXECUTOR_OPTIONS, bad_option

__all__ = [
    "CacheDirOption",
    "DaskWorkersOption",
    "EXECUTOR_OPTIONS",
    "MEMORY_FRACTION",
    "OutOption",
    "QUICK_HELP",
    "QuickOption",
    "SCHEDULER_PROBE_TIMEOUT",
    "SchedulerOption",
    "SeedOption",
    "WorkersOption",
    "check_memory",
    "check_out_path",
    "check_scheduler_address",
    "cli_executor",
    "format_bytes",
    "memory_limit",
    "probe_scheduler",
    "quick_sizes",
]

#: kernel pseudo-filesystems: never an output folder
PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
#: seconds allowed for the TCP connect to a --scheduler address (a reachable scheduler
#: answers in milliseconds; Dask's own default waits 30 s and then prints a long traceback)
SCHEDULER_PROBE_TIMEOUT = 2.0
#: URL schemes a Dask scheduler address may use
SCHEDULER_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")
#: schemes that run over TCP (probed); inproc/ucx are not
_TCP_SCHEMES = ("tcp", "tls", "ws", "wss")
DEFAULT_SCHEDULER_PORT = 8786
#: fraction of the memory available at start-up that one run may plan to use (the rest is
#: left to the operating system, other programs and allocator overhead)
MEMORY_FRACTION = 0.8
QUICK_HELP = ("Test-sized run (a smoke test: no verdicts). Sizes given explicitly on the "
              "command line win over --quick.")


# ----------------------------------------------------------------------------- --out
def check_out_path(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` if it can be used as an output folder; else ValueError saying why.

    Allowed: a new or existing folder whose nearest existing ancestor is a writable folder on
    an ordinary (not read-only, not kernel pseudo-) filesystem.
    """
    given = Path(path).expanduser()
    allowed = "allowed: a new or existing folder in a writable location"
    resolved = given.resolve()
    for root in PSEUDO_FILESYSTEMS:
        if resolved == root or root in resolved.parents:
            raise ValueError(f"{str(path)!r} is under {root}, a kernel pseudo-filesystem; "
                             f"{allowed}")
    if resolved.exists() and not resolved.is_dir():
        raise ValueError(f"{str(path)!r} is an existing file, not a folder; {allowed}")
    ancestor = resolved
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{str(path)!r} lies below the file {str(ancestor)!r}; {allowed}")
    read_only = bool(os.statvfs(ancestor).f_flag & os.ST_RDONLY)
    if read_only or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{str(path)!r} cannot be created or written: {str(ancestor)!r} is "
                         f"{'on a read-only filesystem' if read_only else 'not writable'}; "
                         f"{allowed}")
    return given


def _folder_callback(option: str):
    """A typer callback that checks a folder option with :func:`check_out_path`."""

    def callback(value: Path | None) -> Path | None:
        if value is None:
            return None
        try:
            return check_out_path(value, option)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from err

    return callback


# ----------------------------------------------------------------------------- scheduler
def check_scheduler_address(scheduler: str) -> None:
    """ValueError unless ``scheduler`` looks like a Dask scheduler address."""
    if not isinstance(scheduler, str) or not scheduler.startswith(SCHEDULER_SCHEMES) or (
            len(scheduler.split("://", 1)[1]) == 0):
        raise ValueError(f"scheduler must be a Dask scheduler address such as tcp://host:8786 "
                         f"(schemes {', '.join(SCHEDULER_SCHEMES)}), got {scheduler!r}")


def probe_scheduler(scheduler: str, timeout: float = SCHEDULER_PROBE_TIMEOUT) -> None:
    """ConnectionError (one line: address, timeout, reason) unless a TCP connection to the
    scheduler's host and port opens within ``timeout`` seconds; non-TCP schemes pass."""
    check_scheduler_address(scheduler)
    parts = urlsplit(scheduler)
    if parts.scheme not in _TCP_SCHEMES:
        return
    try:
        host, port = parts.hostname, parts.port or DEFAULT_SCHEDULER_PORT
    except ValueError as err:  # a port that is not a number
        raise ConnectionError(f"cannot parse the port of {scheduler!r}: {err}") from None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConnectionError(f"no Dask scheduler reachable at {scheduler} within {timeout:g} s "
                              f"({reason}); start one (dask scheduler) or drop --scheduler"
                              ) from None


def cli_executor(workers: int, scheduler: str | None, dask_workers: int | None):
    """The executor for the command-line options, every option checked before it starts."""
    from .executors import make_executor

    try:
        executor = make_executor(workers, scheduler, dask_workers)
    except ValueError as err:
        raise bad_option(EXECUTOR_OPTIONS, str(err)) from err
    if scheduler is not None:
        try:
            probe_scheduler(scheduler)
        except ConnectionError as err:
            raise bad_option("--scheduler", str(err)) from err
    return executor


# ----------------------------------------------------------------------------- memory
def memory_limit() -> int:
    """Bytes a run may plan to use: ``MEMORY_FRACTION`` of the memory available now."""
    return int(MEMORY_FRACTION * psutil.virtual_memory().available)


def format_bytes(n: float) -> str:
    """``n`` bytes in readable units (binary prefixes)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover - the loop returns at TiB


def check_memory(option: str, estimate: float, what: str, limit: int | None = None) -> None:
    """A typer error naming ``option`` when ``estimate`` bytes exceed the memory limit."""
    limit = memory_limit() if limit is None else int(limit)
    if estimate > limit:
        raise bad_option(option, f"{what} needs about {format_bytes(estimate)} of memory, more "
                                 f"than the limit {format_bytes(limit)} ({MEMORY_FRACTION:.0%} "
                                 f"of the memory available); allowed: sizes needing at most "
                                 f"{format_bytes(limit)}")


# ----------------------------------------------------------------------------- --quick
def quick_sizes(ctx: typer.Context, quick: bool, sizes: Mapping[str, Any]) -> dict[str, Any]:
    """The size parameters to use: under ``--quick``, ``sizes[name]`` for every parameter the
    user did not give on the command line (or in the environment), else the given value."""
    out = {}
    for name, quick_value in sizes.items():
        source = ctx.get_parameter_source(name)
        explicit = getattr(source, "name", None) in ("COMMANDLINE", "ENVIRONMENT")
        out[name] = quick_value if quick and not explicit else ctx.params[name]
    return out


# ----------------------------------------------------------------------------- declarations
OutOption = Annotated[Path | None, typer.Option(
    "--out", callback=_folder_callback("--out"), help="Output folder (default results/<command>).")]
SeedOption = Annotated[int, typer.Option("--seed", min=0, help="Base random seed (>= 0).")]
QuickOption = Annotated[bool, typer.Option("--quick", help=QUICK_HELP)]
WorkersOption = Annotated[int, typer.Option(
    "--workers", min=1, help="Local worker processes (1 = run serially in this process).")]
SchedulerOption = Annotated[str | None, typer.Option(
    "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (overrides --workers; "
                        f"probed for {SCHEDULER_PROBE_TIMEOUT:g} s before the run).")]
DaskWorkersOption = Annotated[int | None, typer.Option(
    "--dask-workers", min=1, help="Start a Dask LocalCluster with this many workers.")]
CacheDirOption = Annotated[Path | None, typer.Option(
    "--cache-dir", callback=_folder_callback("--cache-dir"),
    help="Checkpoint folder for trained networks, shareable between commands (default: "
         "$GEOMEM_CACHE if set, else <out>/checkpoints).")]

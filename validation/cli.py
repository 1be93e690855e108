"""The ``geomem`` command line (typer). Each command lives in its own module under
``geomem.validation`` and registers itself with ``register(app)``.

:func:`main` (the console entry point) adds what a user at a terminal needs:

- a usage error (bad option value) is one line, ``geomem <command>: error: ...``, exit 2;
- Ctrl-C (SIGINT) or SIGTERM stops the command within seconds (pool workers are terminated,
  see :mod:`geomem.validation.executors`), prints one line saying that finished work is cached
  and a re-run resumes, and exits with status 128 + signal number (130, 143).
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Sequence

import typer

from .executors import interrupts_raise

__all__ = ["app", "main"]

#: click's exception base class, whichever click typer uses (typer >= 0.16 vendors its own)
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(
    name="geomem",
    help="Memorization in generative diffusion: theory, Monte Carlo and figures.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per command; each defines register(app). Add new commands here (one line each).
COMMAND_MODULES = [
    # COMMANDS-BEGIN
    "generalization",
    "gahb",
    "image_dimensions",
    "score_field",
    "rem_check",
    "spectra",
    "report",
    "phase_diagram",
    "trained_spectra",
    "memorization",
    "finite_n",
    "lid_benchmark",
    "speciation",
    "analytic_comparison",
    "large_d",
    # COMMANDS-END
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"geomem.validation.{_name}").register(app)


def _usage_error(err: Exception) -> int:
    """Print a click error as one line (help text for a bare group call); its exit code."""
    ctx = getattr(err, "ctx", None)
    where = ctx.command_path if ctx is not None else "geomem"
    if type(err).__name__ == "NoArgsIsHelpError":
        typer.echo(err.format_message(), err=True)
    else:
        message = " ".join(err.format_message().split())
        typer.echo(f"{where}: error: {message} (see '{where} --help')", err=True)
    return err.exit_code


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point: run the command, with one-line usage errors and clean interrupts."""
    command = typer.main.get_command(app)
    with interrupts_raise() as interrupts:
        try:
            code = command.main(args=args, prog_name="geomem", standalone_mode=False)
        except typer.Abort:
            code = 130
        except ClickException as err:
            sys.exit(_usage_error(err))
    if interrupts.signum is not None or code == 130:
        signum = interrupts.signum or signal.SIGINT
        name = signal.Signals(signum).name
        typer.echo(f"geomem: stopped by {name}; finished points and checkpoints are kept, "
                   "run the same command again to resume", err=True)
        sys.exit(128 + int(signum))
    sys.exit(code if isinstance(code, int) else 0)

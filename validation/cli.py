"""The ``geomem`` command line (typer). Each command lives in its own module under
``geomem.validation`` and registers itself with ``register(app)``."""

from __future__ import annotations

import importlib

import typer

__all__ = ["app", "main"]

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
    "finite_n",
    # COMMANDS-END
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"geomem.validation.{_name}").register(app)


def main() -> None:
    """Console entry point."""
    app()

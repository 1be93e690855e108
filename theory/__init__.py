"""geomem.theory: closed-form and numerical theory of memorization in diffusion (no torch)."""

from .manifold import LinearManifold
from .population import (
    bulk_gap_value,
    effective_direction_variances,
    largest_gap_time,
    marchenko_pastur_density,
    marchenko_pastur_edges,
    population_singular_values,
)
from .published import direction_condensation_times, paper_figure_curve, paper_singular_values
from .schedules import DDPM, VE, VP, GeometricVE, Schedule, get_schedule

__all__ = [
    "DDPM",
    "VE",
    "VP",
    "GeometricVE",
    "LinearManifold",
    "Schedule",
    "get_schedule",
    "bulk_gap_value",
    "direction_condensation_times",
    "effective_direction_variances",
    "largest_gap_time",
    "marchenko_pastur_density",
    "marchenko_pastur_edges",
    "paper_figure_curve",
    "paper_singular_values",
    "population_singular_values",
]

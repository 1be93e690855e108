"""geomem.theory: closed-form and numerical theory of memorization in diffusion (no torch).

Modules: ``schedules`` (VE, VP, DDPM), ``manifold`` (LinearManifold), ``population``
(N = infinity spectra), ``published`` (the losing-dimensions closed form, THEORY §5a),
``rem`` (large-deviation REM, §5b), ``predictions`` (singular values per method), ``phase``
(phase diagrams), ``finite_n`` (exact finite-N, finite-d expectations), ``symbolic`` (sympy
derivations).
"""

from .finite_n import FiniteNExpectations, finite_n_expectations
from .manifold import LinearManifold
from .phase import PHASE_METHODS, PhaseDiagram, phase_diagram
from .population import (
    bulk_gap_value,
    effective_direction_variances,
    largest_gap_time,
    marchenko_pastur_density,
    marchenko_pastur_edges,
    population_singular_values,
)
from .predictions import METHODS, predicted_singular_values, rem_singular_values
from .published import direction_condensation_times, paper_figure_curve, paper_singular_values
from .rem import (
    annealed_freezing_parameter,
    annealed_tilted_kl,
    collapse_log_snr,
    collapse_time,
    condensation_threshold,
    freezing_parameter,
    tilted_kl,
)
from .schedules import DDPM, VE, VP, GeometricVE, Schedule, get_schedule

__all__ = [
    "DDPM",
    "METHODS",
    "PHASE_METHODS",
    "VE",
    "VP",
    "FiniteNExpectations",
    "GeometricVE",
    "LinearManifold",
    "PhaseDiagram",
    "Schedule",
    "annealed_freezing_parameter",
    "annealed_tilted_kl",
    "bulk_gap_value",
    "collapse_log_snr",
    "collapse_time",
    "condensation_threshold",
    "direction_condensation_times",
    "effective_direction_variances",
    "finite_n_expectations",
    "freezing_parameter",
    "get_schedule",
    "largest_gap_time",
    "marchenko_pastur_density",
    "marchenko_pastur_edges",
    "paper_figure_curve",
    "paper_singular_values",
    "phase_diagram",
    "population_singular_values",
    "predicted_singular_values",
    "rem_singular_values",
    "tilted_kl",
]

# FLIPD: population score, exact finite N at fresh points, training points (issue 12)
from .flipd import (  # noqa: E402
    expected_population_flipd,
    finite_n_flipd,
    population_flipd,
    population_flipd_std,
    training_point_flipd,
)

__all__ += ["expected_population_flipd", "finite_n_flipd", "population_flipd",
            "population_flipd_std", "training_point_flipd"]

# Gaussian mixtures and the speciation time (issue 12)
from .mixture import GaussianMixture  # noqa: E402
from .speciation import (  # noqa: E402
    cloning_probability,
    largest_covariance_eigenvalue,
    mixture_collapse_time,
    mixture_mutual_information,
    speciation_time,
    two_class_direction,
)

__all__ += ["GaussianMixture", "cloning_probability", "largest_covariance_eigenvalue",
            "mixture_collapse_time", "mixture_mutual_information", "speciation_time",
            "two_class_direction"]

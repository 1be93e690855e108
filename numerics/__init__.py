"""geomem.numerics: fast empirical-score Jacobians, estimators, training (numpy/numba/torch)."""

__all__: list[str] = []

# image experiments (H6)
from .denoiser_training import TrainConfig, train_denoiser, train_or_load  # noqa: E402
from .denoisers import (  # noqa: E402
    BlindDenoiser,
    EmpiricalDenoiser,
    build_denoiser,
    denoiser_jacobian,
)
from .images import c_alpha_images, disk_images, load_dataset, load_digits_images  # noqa: E402
from .sampler import cosine_similarity, sample  # noqa: E402

__all__ += ["BlindDenoiser", "EmpiricalDenoiser", "TrainConfig", "build_denoiser",
            "c_alpha_images", "cosine_similarity", "denoiser_jacobian", "disk_images",
            "load_dataset", "load_digits_images", "sample", "train_denoiser", "train_or_load"]

# exact empirical-score Jacobians (H2)
from .empirical import (  # noqa: E402
    JacobianSpectrum,
    WeightStatistics,
    empirical_jacobian,
    empirical_score,
    jacobian_eigenvalues,
    jacobian_spectrum,
    weight_statistics,
)

__all__ += ["JacobianSpectrum", "WeightStatistics", "empirical_jacobian", "empirical_score",
            "jacobian_eigenvalues", "jacobian_spectrum", "weight_statistics"]

# spectral-gap dimension estimators (H5)
from .dimension import DimensionEstimate, estimate_dimension  # noqa: E402

__all__ += ["DimensionEstimate", "estimate_dimension"]

# denoising-score-matching networks on linear manifolds (H5)
from .score_mlp import MLPConfig, ScoreMLP  # noqa: E402
from .training import (  # noqa: E402
    TrainedScore,
    TrainingConfig,
    load_score_model,
    train_score_model,
)
from .training import train_or_load as train_or_load_score  # noqa: E402

__all__ += ["MLPConfig", "ScoreMLP", "TrainedScore", "TrainingConfig", "load_score_model",
            "train_or_load_score", "train_score_model"]

# autodiff Jacobians and spectral estimators (H3)
from .jacobians import (  # noqa: E402
    extreme_singular_values,
    haar_orthogonal,
    normalize_spectrum,
    orthogonal_group_singular_values,
    paper_protocol_spectra,
    score_jacobian,
    symmetric_difference_singular_values,
)

__all__ += ["extreme_singular_values", "haar_orthogonal", "normalize_spectrum",
            "orthogonal_group_singular_values", "paper_protocol_spectra", "score_jacobian",
            "symmetric_difference_singular_values"]

# per-subspace retained dimension, one definition for every protocol (issue 17)
from .retained import (  # noqa: E402
    DEFAULT_DEFINITION,
    RETAINED_DEFINITIONS,
    estimator_retained_dimension,
    projected_retained_dimension,
    subspace_retained_dimension,
)

__all__ += ["DEFAULT_DEFINITION", "RETAINED_DEFINITIONS", "estimator_retained_dimension",
            "projected_retained_dimension", "subspace_retained_dimension"]

# FLIPD: exact for the empirical score, autodiff/Hutchinson for networks (issue 12)
from .flipd import empirical_flipd  # noqa: E402
from .flipd_network import EXACT_TRACE_MAX_DIM, FlipdEstimate, network_flipd  # noqa: E402

__all__ += ["EXACT_TRACE_MAX_DIM", "FlipdEstimate", "empirical_flipd", "network_flipd"]

# score-based LID estimators, skdim-style API (issue 12, items 2 and 3)
from .lid_estimators import (  # noqa: E402
    ClosedFormEstimator,
    FlipdEstimator,
    NormalBundleEstimate,
    NormalBundleEstimator,
    SpectralGapEstimator,
    closed_form_lid,
    empirical_score_callable,
    normal_bundle_dimension,
)

__all__ += ["ClosedFormEstimator", "FlipdEstimator", "NormalBundleEstimate",
            "NormalBundleEstimator", "SpectralGapEstimator", "closed_form_lid",
            "empirical_score_callable", "normal_bundle_dimension"]

# reverse SDE and the cloning experiment of Biroli et al. 2024 (issue 12, item 5)
from .cloning import CloningResult, cloning_experiment, log_snr_grid, reverse_sde  # noqa: E402

__all__ += ["CloningResult", "cloning_experiment", "log_snr_grid", "reverse_sde"]

# analytic (closed-form) denoisers of a training set (issue 13)
from .analytic_denoisers import (  # noqa: E402
    AnalyticDenoiser,
    EmpiricalPosteriorMean,
    EquivariantPatchPosteriorMean,
    GaussianPosteriorMean,
    MaskedPosteriorMean,
    WienerMaskedPosteriorMean,
    square_patch_masks,
    wiener_locality_masks,
)

__all__ += ["AnalyticDenoiser", "EmpiricalPosteriorMean", "EquivariantPatchPosteriorMean",
            "GaussianPosteriorMean", "MaskedPosteriorMean", "WienerMaskedPosteriorMean",
            "square_patch_masks", "wiener_locality_masks"]

# per-point Monte Carlo of the empirical score at any N, head drawn, tail integrated (issue 14)
from .large_n import MAX_N_TRAIN, EmpiricalJacobianDraws, sample_empirical_jacobians  # noqa: E402

__all__ += ["EmpiricalJacobianDraws", "MAX_N_TRAIN", "sample_empirical_jacobians"]

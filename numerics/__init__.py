"""geomem.numerics: fast empirical-score Jacobians, estimators, training (numpy/numba/torch)."""

__all__: list[str] = []

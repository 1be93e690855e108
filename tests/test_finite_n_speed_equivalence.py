"""The fused numba contour kernels (theory/_finite_n_kernels.py) reproduce the numbers of the
implementation they replaced: references computed with the numpy Newton solves and the
full tau rule (git revision 00739d8, theory/_finite_n_bromwich.py) at points that use the
contours (fresh-point averages) and one that uses the moment series only (the origin)."""

from __future__ import annotations

import numpy as np
import pytest

from geomem.theory import LinearManifold
from geomem.theory.finite_n import finite_n_expectations

#: the kernels change only rounding, Newton stopping (1e-12 in xi) and tau sums below 1e-13
#: of their magnitudes: measured <= 5e-13 relative on the benchmark grid, so 1e-10
RTOL = 1e-10

# (d, dims, t, N, schedule, x) -> E[sum w^2], E[sum w |P_k y|^2] (K,), E[|P_k ybar|^2] (K,)
REFERENCES = [
    ((30, (2, 5), 1.0, 1000, "vp", "fresh"),
     0.0014327574986455931, [1.9992283945144051, 0.44998213349166843],
     [0.27237232173914755, 0.006868781037481339]),
    ((30, (2, 5), 0.1, 1000, "ve", "origin"),
     0.01081637044780019, [0.18276597054510071, 0.2376730018149759],
     [0.0010425675996108376, 0.001754114942726795]),
    ((100, (6, 16), 0.01, 10**6, "vp", "fresh"),
     0.758363985306594, [5.601082420360526, 1.1454027866665493],
     [5.489795037619696, 0.9785642025907518]),
]


@pytest.mark.parametrize(("case", "sum_w2", "weighted", "mean"), REFERENCES)
def test_matches_previous_implementation(case, sum_w2, weighted, mean):
    d, dims, t, n, schedule, x = case
    res = finite_n_expectations(LinearManifold(d, dims, stds=(1.0, 0.3)), t, n, schedule, x=x)
    np.testing.assert_allclose(res.sum_w2, sum_w2, rtol=RTOL)
    np.testing.assert_allclose(res.weighted_sq_norm, weighted, rtol=RTOL)
    np.testing.assert_allclose(res.mean_sq_norm, mean, rtol=RTOL)

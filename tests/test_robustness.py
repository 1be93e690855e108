"""The robustness tables: gap-loss rows per definition x threshold and the first-lost verdict."""

import numpy as np

from geomem.numerics.retained import RETAINED_DEFINITIONS
from geomem.validation.measurements import ROBUSTNESS_THRESHOLDS
from geomem.validation.robustness import first_lost_rows, gap_loss_rows, summary_markdown


def _curves(ts, crossings, dims):
    """(R, T, D, L, K) curves linear in ln t crossing m_k/2 at ``crossings[r, k]``."""
    R, K = crossings.shape
    out = np.zeros((R, ts.size, len(RETAINED_DEFINITIONS), len(ROBUSTNESS_THRESHOLDS), K))
    for r in range(R):
        for k in range(K):
            curve = dims[k] / 2 + (np.log(ts) - np.log(crossings[r, k]))
            out[r, :, :, :, k] = np.clip(curve, 0, dims[k])[:, None, None]
    return out


def test_first_lost_verdicts_follow_the_paired_ratio():
    ts = np.geomspace(1e-3, 1.0, 40)
    dims = (2, 5)
    rng = np.random.default_rng(0)
    base = np.exp(rng.normal(np.log(0.02), 0.3, 6))  # training-set effect shared by both
    separated = np.stack([base * 3.0, base], axis=1)  # subspace 1 lost 3x earlier (larger t)
    tied = np.stack([base * np.exp(rng.normal(0, 0.05, 6)), base], axis=1)
    pooled = _curves(ts, separated[:1], dims)[0]
    for crossings, want in ((separated, "1"), (tied, "tie")):
        per_rep = {"origin": _curves(ts, crossings, dims), "fresh": _curves(ts, crossings, dims)}
        rows, logs = gap_loss_rows(ts, per_rep, pooled, dims)
        assert len(rows) == 3 * len(RETAINED_DEFINITIONS) * len(ROBUSTNESS_THRESHOLDS) * 2
        first = first_lost_rows(rows, logs, resolution=float(ts[1] / ts[0]))
        verdicts = {r["first_lost"] for r in first if r["source"] != "fresh_mean"}
        assert verdicts == {want}
        assert {r["first_lost"] for r in first if r["source"] == "fresh_mean"} == {"1 (no CI)"}
        if want == "1":
            ratios = [r["ratio"] for r in first if r["source"] == "origin"]
            np.testing.assert_allclose(ratios, 3.0, rtol=1e-6)  # log interpolation is exact
    text = summary_markdown([{"run": "toy VE", **r} for r in first])
    assert text.count("\n") == 2 + 3  # header, rule, one row per protocol


def test_never_lost_replicates_are_censored_not_dropped():
    ts = np.geomspace(1e-3, 1.0, 20)
    crossings = np.array([[0.1, 0.01]] * 4)
    per_rep = {s: _curves(ts, crossings, (2, 5)) for s in ("origin", "fresh")}
    per_rep["fresh"][:2, :, :, :, 1] = 5.0  # two training sets never lose subspace 2
    rows, _ = gap_loss_rows(ts, per_rep, per_rep["origin"][0], (2, 5))
    row = next(r for r in rows if (r["source"], r["subspace"], r["threshold"]) ==
               ("fresh", 2, "1/2"))
    assert row["n_replicates"] == 4 and row["n_crossed"] == 2 and row["n_not_lost"] == 2

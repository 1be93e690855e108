"""Documentation is complete and agrees with the code (issue 15, items 22 and 23)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md",
               *(ROOT / "docs").glob("*.md")])
#: an HTML comment that marks missing text: an all-caps tag (<!-- REM-SECTION -->) or a to-do word
PLACEHOLDER = re.compile(r"<!--\s*([A-Z0-9_-]+|[^>]*\b(?:TODO|TBD|FIXME|PLACEHOLDER|XXX)\b[^>]*)"
                         r"\s*-->")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_unfilled_placeholder(path):
    found = PLACEHOLDER.findall(path.read_text())
    assert not found, f"{path.name} has unfilled placeholders: {found}"


def test_placeholder_pattern_catches_the_known_forms():
    for text in ("<!-- REM-SECTION -->", "<!--ESTIMATORS-SECTION-->", "<!-- TODO: timings -->"):
        assert PLACEHOLDER.search(text), text
    assert not PLACEHOLDER.search("<!-- figure made by geomem spectra --quick -->")


def test_theory_doc_has_the_rem_and_phase_sections():
    text = (ROOT / "docs" / "theory.md").read_text()
    for needle in ("The large-deviation REM", "freezing parameter", "collapse time",
                   "Phase diagrams", "1/(2 + r)", "1/(1 + sqrt(1 + r))"):
        assert needle in text, needle


def test_numerics_doc_has_the_estimator_section():
    text = (ROOT / "docs" / "numerics.md").read_text()
    for name in ("orthogonal_group_singular_values", "symmetric_difference_singular_values",
                 "extreme_singular_values", "score_jacobian", "haar_orthogonal",
                 "normalize_spectrum", "paper_protocol_spectra"):
        assert f"`{name}" in text, name


def test_finite_n_docstring_quotes_the_tested_small_n_accuracy():
    """The module docstring quoted ~1e-4 for N <= 2, long after the finer tau step made it
    ~5e-6; it must quote the tolerance the tests enforce."""
    import geomem.theory.finite_n as fn

    tests = (ROOT / "tests" / "test_finite_n.py").read_text()
    tol = re.search(r"^SMALL_N_TAIL_RTOL = (\S+)", tests, re.M).group(1)
    assert "1e-4" not in fn.__doc__
    assert tol in fn.__doc__


def test_jacobians_docstring_formula_is_the_computed_one():
    """Rows of the orthogonal-group stack for s(x) = -A x are -(A z_k)^T - (A x0)^T / sigma,
    i.e. S = -Z A^T - 1 (A x0)^T / sigma (not -Z A), as the module docstring must say."""
    import geomem.numerics.jacobians as jac

    rng = np.random.default_rng(0)
    d, sigma = 5, 0.3
    A, x0 = rng.standard_normal((d, d)), rng.standard_normal(d)
    Z = jac.haar_orthogonal(d, rng)
    S = np.stack([-(A @ (x0 + sigma * z)) / sigma for z in Z])
    np.testing.assert_allclose(S, -Z @ A.T - np.outer(np.ones(d), A @ x0) / sigma, atol=1e-12)
    assert "S = -Z A^T - 1 (A x0)^T / sigma" in jac.__doc__


def test_images_doc_scale_down_matches_the_configs():
    """docs/images.md states the CPU scale-down of every configuration the commands use."""
    from geomem.validation import generalization as gen

    text = " ".join((ROOT / "docs" / "images.md").read_text().split())
    for cfg in (gen.DEFAULT_CONFIG, gen.SYNTHETIC_CONFIG, gen.QUICK_CONFIG):
        assert f"{cfg.width} channels" in text and f"{cfg.steps}" in text, cfg
        assert f"batch {cfg.batch_size}" in text, cfg
    assert f"pools of {gen.SYNTHETIC_POOL} images" in text
    assert "stays* at or above 0.9" in text or "stays at or above 0.9" in text

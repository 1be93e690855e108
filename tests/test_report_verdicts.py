"""Report verdicts: a verdict needs a CI no wider than MAX_CI_FRACTION of the MC value."""

import math

import pytest

from geomem.validation._common import MAX_CI_FRACTION, REL_TOL, verdict
from geomem.validation.report import agreement_row


def test_wide_interval_is_inconclusive_not_agree():
    # the example: "agree" on [0.000131, 68.2]
    rel, v = verdict(1.0, 3.0, 0.000131, 68.2)
    assert v == "inconclusive" and rel == pytest.approx(-2 / 3)
    # the same theory against a narrow CI is a real verdict
    assert verdict(1.0, 3.0, 2.9, 3.1)[1] == "disagree"
    assert verdict(3.05, 3.0, 2.9, 3.1)[1] == "agree"


@pytest.mark.parametrize("width_fraction, expected", [
    (0.99 * MAX_CI_FRACTION, "agree"), (1.01 * MAX_CI_FRACTION, "inconclusive")])
def test_ci_width_threshold(width_fraction, expected):
    mc = 2.0
    half = 0.5 * width_fraction * mc
    assert verdict(mc + 0.9 * half, mc, mc - half, mc + half)[1] == expected


def test_rel_tol_and_missing_values():
    mc = 10.0
    assert verdict(mc * (1 + 0.9 * REL_TOL), mc, 9.99, 10.01)[1] == "agree"
    assert verdict(mc * (1 + 1.1 * REL_TOL), mc, 9.99, 10.01)[1] == "disagree"
    assert verdict(None, mc, 9, 11)[1] == "n/a"
    assert verdict(1.0, float("nan"), 9, 11)[1] == "n/a"
    assert verdict(1.0, mc, float("nan"), float("nan"))[1] == "inconclusive"
    row = agreement_row("p", "rem", None, mc, 9.0, 11.0)
    assert row["verdict"] == "n/a" and math.isnan(row["theory_value"])

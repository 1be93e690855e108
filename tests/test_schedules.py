"""Schedules: closed forms, inverse of log-SNR, domains, bad input."""

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.theory import DDPM, VE, VP, GeometricVE, get_schedule

# inverse of log-SNR composed with log-SNR: float64 round-off through exp/log only
ROUNDTRIP_RTOL = 1e-10

SCHEDULES = [VE(), VP(), DDPM(), GeometricVE()]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
@given(u=st.floats(min_value=1e-4, max_value=1.0))
@settings(max_examples=40, deadline=None)
def test_time_at_log_snr_inverts_log_snr(schedule, u):
    t = u * min(schedule.t_max, 10.0)
    back = schedule.time_at_log_snr(schedule.log_snr(t))
    assert back == pytest.approx(t, rel=ROUNDTRIP_RTOL)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_log_snr_matches_a_and_delta_and_decreases(schedule):
    t = np.linspace(0.01, min(schedule.t_max, 5.0), 200)
    a, delta = schedule.a(t), schedule.delta(t)
    np.testing.assert_allclose(schedule.log_snr(t), np.log(a**2 / delta), rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(schedule.log_snr(t)) < 0)
    assert schedule.a(t.reshape(20, 10)).shape == (20, 10)


def test_closed_forms():
    t = np.array([0.1, 1.0, 3.0])
    np.testing.assert_allclose(VE().delta(t), t)
    np.testing.assert_allclose(VP().a(t), np.exp(-t))
    np.testing.assert_allclose(VP().delta(t), 1 - np.exp(-2 * t), rtol=1e-14)
    ddpm = DDPM(1e-4, 2e-2, 1000)
    abar = np.cumprod(1 - np.linspace(1e-4, 2e-2, 1000))
    np.testing.assert_allclose(ddpm.a(np.array([1.0, 500.0, 1000.0])) ** 2,
                               abar[[0, 499, 999]], rtol=1e-12)
    geo = GeometricVE()
    np.testing.assert_allclose(geo.sigma(np.array([0.0 + 1e-12, 1.0])), [0.01, 50.0], rtol=1e-9)


def test_mpmath_inverse_beyond_float_range():
    # VE time e^{-2000} underflows float64; the mpf route keeps it
    t = VE().time_at_log_snr(mpmath.mpf(2000))
    assert isinstance(t, mpmath.mpf) and mpmath.log(t) == pytest.approx(-2000)
    t_vp = VP().time_at_log_snr(mpmath.mpf(2000))
    assert mpmath.log(2 * t_vp) == pytest.approx(-2000, rel=1e-12)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_bad_times_rejected(bad):
    with pytest.raises(ValueError, match="t out of range"):
        VE().delta(bad)


def test_ddpm_domain_and_parameters():
    with pytest.raises(ValueError, match="t out of range"):
        DDPM(steps=10).a(11.0)
    with pytest.raises(ValueError, match="beta_min"):
        DDPM(beta_min=0.1, beta_max=0.01)
    with pytest.raises(ValueError, match="steps"):
        DDPM(steps=0)


def test_get_schedule():
    assert isinstance(get_schedule("vp"), VP)
    assert get_schedule(VE()) == VE()
    with pytest.raises(ValueError, match="schedule"):
        get_schedule("cosine")

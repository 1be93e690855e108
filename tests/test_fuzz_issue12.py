"""Fuzz the issue-12 public functions (FLIPD, mixtures, speciation, cloning) with the harness
of `test_fuzz_api` (same property: finite results or a ValueError naming a wild argument);
`test_fuzz_api.test_every_public_function_is_fuzzed` counts these cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_api import _X, _Y, FUZZ, SCHEDULES, SMALL, TIMES, TWO, Case, _run

import geomem.numerics as numerics
import geomem.theory as theory
from geomem.theory import VE, VP

G = theory.GaussianMixture(np.zeros((2, 3)), 1.0)
GM = [G, theory.GaussianMixture.symmetric(3, 2.0, 0.5)]
UN = [SMALL, TWO]


def tscore(z):
    return -torch.tanh(z) - 0.1 * z


CASES = {
    "empirical_flipd": Case(
        numerics.empirical_flipd,
        {"X": [_X], "Y": [_Y], "a": [1.0, 0.5], "delta": [0.1, 1.0],
         "backend": ["numpy", "numba", "torch"]},
        lambda kw, out: out.shape == (4,) and np.all(out >= 0)),
    "network_flipd": Case(
        numerics.network_flipd,
        {"score_fn": [tscore], "X": [_X], "a": [1.0], "delta": [0.1],
         "method": ["auto", "exact", "hutchinson"], "n_probes": [4], "seed": [0]},
        lambda kw, out: out.flipd.shape == (4,), fixed=("score_fn",)),
    "expected_population_flipd": Case(
        theory.expected_population_flipd, {"model": UN, "t": TIMES, "schedule": SCHEDULES},
        lambda kw, out: np.shape(out) == np.shape(kw["t"]) and np.all(out >= 0)),
    "population_flipd_std": Case(
        theory.population_flipd_std, {"model": UN, "t": TIMES, "schedule": SCHEDULES},
        lambda kw, out: np.shape(out) == np.shape(kw["t"])),
    "population_flipd": Case(
        theory.population_flipd,
        {"model": [SMALL], "X": [_X], "t": [0.1, 0.5], "schedule": SCHEDULES},
        lambda kw, out: np.shape(out) == (4,)),
    "training_point_flipd": Case(
        theory.training_point_flipd,
        {"model": UN, "t": TIMES, "n_train": [2, 100], "schedule": SCHEDULES,
         "method": ["exact", "pair"]},
        lambda kw, out: np.shape(out) == np.shape(kw["t"]) and np.all(out >= 0), slow=True),
    "finite_n_flipd": Case(
        theory.finite_n_flipd,
        {"model": [SMALL], "t": [0.3], "n_train": [2, 50], "schedule": [VP(), VE()],
         "x": ["fresh", _X[:2]], "n_nodes": [None, 3]}, slow=True),
    "GaussianMixture": Case(
        theory.GaussianMixture,
        {"means": [np.zeros((2, 3))], "covariances": [1.0, np.ones((2, 3))],
         "weights": [None, [1.0, 2.0]]}),
    "speciation_time": Case(
        theory.speciation_time,
        {"model": GM + UN, "schedule": SCHEDULES, "form": ["snr", "published"]},
        lambda kw, out: out > 0),
    "largest_covariance_eigenvalue": Case(theory.largest_covariance_eigenvalue,
                                          {"model": GM + UN}, lambda kw, out: out > 0),
    "mixture_collapse_time": Case(
        theory.mixture_collapse_time,
        {"model": GM, "n_train": [10, 1000], "schedule": SCHEDULES, "n_samples": [64],
         "rng": [0]}),
    "two_class_direction": Case(theory.two_class_direction, {"model": GM[1:]},
                                lambda kw, out: abs(np.linalg.norm(out[0]) - 1) < 1e-12),
    "cloning_probability": Case(
        theory.cloning_probability, {"model": GM[1:], "t": TIMES, "schedule": SCHEDULES},
        lambda kw, out: np.shape(out) == np.shape(kw["t"])
        and np.all((out >= 0.5 - 1e-12) & (out <= 1 + 1e-12))),
    "log_snr_grid": Case(
        numerics.log_snr_grid,
        {"schedule": SCHEDULES, "t_start": [0.9], "t_end": [0.01], "steps": [4]},
        lambda kw, out: out.shape == (5,) and np.all(np.diff(out) < 0)),
    "reverse_sde": Case(
        numerics.reverse_sde,
        {"score": [lambda x, t: -x], "schedule": SCHEDULES, "x": [_X],
         "times": [[0.9, 0.5, 0.1]], "rng": [np.random.default_rng(0)]},
        lambda kw, out: out.shape == _X.shape, fixed=("score", "rng")),
    "cloning_experiment": Case(
        numerics.cloning_experiment,
        {"score": [lambda x, t: -x], "schedule": SCHEDULES, "start": [_X], "t_start": [0.9],
         "t_end": [0.01], "clone_times": [[0.5, 0.1]], "label": [lambda y: y[:, 0] > 0],
         "steps": [4], "seed": [0]},
        lambda kw, out: np.all(out.n_same <= out.n_pairs), fixed=("score", "label")),
    "mixture_mutual_information": Case(
        theory.mixture_mutual_information,
        {"model": GM, "t": [0.1, 1.0], "schedule": SCHEDULES, "n_samples": [64], "rng": [0]}),
}


@pytest.mark.parametrize("name", sorted(CASES))
@FUZZ
@given(data=st.data())
def test_fuzz(name, data):
    _run(CASES[name], data)

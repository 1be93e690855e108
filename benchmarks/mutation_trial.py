"""Mutation trial: does the default test suite catch plausible bugs? (issue 15, item 16)

Run: ``python benchmarks/mutation_trial.py [--only NAME ...] [--list]``.

Each mutation replaces one exact snippet in one function's source, recompiles that function in
memory (in its module's namespace, so nothing on disk changes) and rebinds every reference to
the original function object in loaded ``geomem`` modules (``from x import f`` copies too).
The relevant default-suite tests (``-m 'not slow'``) then run in a fresh subprocess; the
mutation is *killed* when they fail.  The score is killed / total.  ``ISSUE_MUTATIONS`` are the
nine survivors listed in issue 15 (plus the ``mean_ci`` one); ``OWN_MUTATIONS`` are further
plausible bugs of this trial.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: seconds allowed per mutation's test run (a hung mutant counts as killed: it would time out CI)
TIMEOUT_S = 900


@dataclass(frozen=True)
class Mutation:
    name: str
    module: str          # e.g. "geomem.theory.finite_n"
    target: str          # "function" or "Class.attribute" (a property or method)
    old: str             # exact snippet in the target's source (must occur exactly once)
    new: str
    tests: tuple[str, ...]


#: the finite-N tests that read the mutated quantities (the whole file takes minutes: its
#: quadrature references and CLI tests); a kill here is a kill by the default suite
FINITE_N_TESTS = ("tests/test_finite_n.py", "-k",
                  "fresh_average or tend_to_the_population or acts_like or large_n or "
                  "single_training_point or bad_input")

ISSUE_MUTATIONS = [
    Mutation("fresh_nodes (1 + r)", "geomem.theory.finite_n", "_fresh_nodes",
             "(1.0 + 1.0 / np.asarray(r_snr))", "(1.0 + np.asarray(r_snr))",
             FINITE_N_TESTS),
    Mutation("fresh_nodes no noise term", "geomem.theory.finite_n", "_fresh_nodes",
             "(1.0 + 1.0 / np.asarray(r_snr))", "1.0", FINITE_N_TESTS),
    Mutation("jacobian_eigenvalues a^2 -> a", "geomem.theory.finite_n",
             "FiniteNExpectations.jacobian_eigenvalues", "self.a**2", "self.a",
             FINITE_N_TESTS),
    Mutation("jacobian_eigenvalues m_k + 1", "geomem.theory.finite_n",
             "FiniteNExpectations.jacobian_eigenvalues", "(self.dims * self.delta**2)",
             "((self.dims + 1) * self.delta**2)", FINITE_N_TESTS),
    Mutation("groups ignore residual_std", "geomem.theory.finite_n", "_groups",
             "if model.residual_std > 0 and model.d > model.m:", "if False:",
             FINITE_N_TESTS),
    Mutation("paper phase diagram s not s^2", "geomem.theory.phase", "phase_diagram",
             "sigma_inf = 1.0 / (t[None, :, None] + stds**2)",
             "sigma_inf = 1.0 / (t[None, :, None] + stds)", ("tests/test_phase.py",)),
    Mutation("paper subspace values 1.05 min", "geomem.theory.phase", "_paper_subspace_values",
             ".mean(axis=-1)", ".min(axis=-1) * 1.05", ("tests/test_phase.py",)),
    Mutation("predicted paper ignores n_train", "geomem.theory.predictions",
             "predicted_singular_values",
             "n = np.broadcast_to(np.asarray(n_train, dtype=np.float64), shape)",
             "n = np.broadcast_to(1000.0, shape)", ("tests/test_predictions.py",)),
    Mutation("haar without sign fix", "geomem.numerics.jacobians", "haar_orthogonal",
             "return q * signs", "return q", ("tests/test_jacobians.py",)),
    Mutation("mean_ci sqrt(n) too wide", "geomem.validation._common", "mean_ci",
             "/ np.sqrt(x.size))", ")", ("tests/test_common_stats.py",)),
]

OWN_MUTATIONS = [
    Mutation("KL slope factor 2 dropped", "geomem.theory._rem_kernels", "_group_kl",
             "2.0 * mean_part / p", "mean_part / p", ("tests/test_rem.py",)),
    Mutation("collapse log-SNR half dropped", "geomem.theory.rem", "collapse_log_snr",
             "f = 0.5 * np.sum(m * np.logaddexp(0.0, z), axis=-1) - ln[:, 0]",
             "f = np.sum(m * np.logaddexp(0.0, z), axis=-1) - ln[:, 0]", ("tests/test_rem.py",)),
    Mutation("rem singular values lam dropped", "geomem.theory.predictions",
             "rem_singular_values", "(lam * a2)[..., None]", "a2[..., None]",
             ("tests/test_predictions.py",)),
    Mutation("empirical eigenvalues a^2 -> a", "geomem.numerics.empirical",
             "_jacobian_from_cov", "(a * a * lam / delta - 1.0)", "(a * lam / delta - 1.0)",
             ("tests/test_empirical.py",)),
    Mutation("numpy entropy sign", "geomem.numerics._empirical_common", "stats_from_moments",
             '"entropy": np.log(Z) - T / Z', '"entropy": np.log(Z) + T / Z',
             ("tests/test_empirical.py",)),
    Mutation("symmetric difference rescale K/d", "geomem.numerics.jacobians",
             "symmetric_difference_singular_values", "np.sqrt(K / d)", "(K / d)",
             ("tests/test_jacobians.py",)),
    Mutation("retained fraction rem log -> linear", "geomem.theory.phase", "_rem_retained",
             "np.log1p(lam * r) / np.log1p(r)", "lam * (1.0 + r) / (1.0 + lam * r)",
             ("tests/test_phase.py",)),
    Mutation("effective variances ignore normalisation", "geomem.theory.population",
             "effective_direction_variances",
             "return np.asarray(model.normalized_direction_variances(), dtype=np.float64)",
             "return np.array(model.direction_variances, dtype=np.float64)",
             ("tests/test_population.py",)),
    # the normalised generator's moments (issue 15: the old test compared this quadrature
    # with itself through effective_direction_variances)
    Mutation("normalised moments exponent -1/2 -> -1", "geomem.theory.manifold",
             "LinearManifold.normalized_direction_variances",
             "-0.5 * np.sum(counts * np.log1p(2.0 * u * distinct))",
             "-1.0 * np.sum(counts * np.log1p(2.0 * u * distinct))",
             ("tests/test_population.py", "tests/test_manifold.py")),
    Mutation("normalised moments drop 1/(1 + 2 u s^2)", "geomem.theory.manifold",
             "LinearManifold.normalized_direction_variances",
             "u * v / (1.0 + 2.0 * u * v) * np.exp", "u * v * np.exp",
             ("tests/test_population.py", "tests/test_manifold.py")),
    # the agreement verdicts (issue 15: CLI tests passed when every verdict said "disagree")
    Mutation("verdict always disagree", "geomem.validation._common", "verdict",
             'return rel, "agree" if inside or abs(rel) <= rel_tol else "disagree"',
             'return rel, "disagree"',
             ("tests/test_cli_validation.py", "-k", "rem_check_quick")),
]

ALL = ISSUE_MUTATIONS + OWN_MUTATIONS

_RUNNER = r'''
import importlib, inspect, sys, textwrap, types
import pytest
mod = importlib.import_module({module!r})
target, old, new = {target!r}, {old!r}, {new!r}
owner, attr = (target.split(".") + [None])[:2] if "." in target else (None, target)
if owner is None:
    original = getattr(mod, attr)
    func = original
else:
    cls = getattr(mod, owner)
    original = inspect.getattr_static(cls, attr)
    func = original.fget if isinstance(original, property) else original
source = textwrap.dedent(inspect.getsource(func))
assert source.count(old) == 1, f"snippet occurs {{source.count(old)}} times in {{target}}"
namespace = dict(vars(mod))
lines = source.splitlines(True)
while lines[0].lstrip().startswith("@"):
    lines.pop(0)                    # drop decorators (property) before recompiling
exec(compile("".join(lines).replace(old, new), mod.__file__, "exec"), namespace)
mutant = namespace[func.__name__]
if owner is None:
    for m in list(sys.modules.values()):
        if m is not None and getattr(m, "__name__", "").startswith("geomem"):
            for k, v in list(vars(m).items()):
                if v is original:
                    setattr(m, k, mutant)
else:
    setattr(cls, attr, property(mutant) if isinstance(original, property) else mutant)
sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly",
                      *{tests!r}]))
'''


def run(mutation: Mutation) -> dict:
    code = _RUNNER.format(module=mutation.module, target=mutation.target, old=mutation.old,
                          new=mutation.new, tests=list(mutation.tests))
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=TIMEOUT_S)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    except subprocess.TimeoutExpired:
        rc, tail = -1, ["timeout"]
    if rc in (2, 3, 4) or any("snippet occurs" in line for line in tail):
        status = "error"          # collection error or a stale snippet: fix the trial
    else:
        status = "survived" if rc == 0 else "killed"
    return {"name": mutation.name, "status": status, "rc": rc,
            "seconds": round(time.perf_counter() - start, 1), "tail": tail}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="names (substrings) of mutations to run")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    chosen = [m for m in ALL if not args.only or any(s in m.name for s in args.only)]
    if args.list:
        for m in chosen:
            print(f"{m.name:40} {m.module}.{m.target}  {' '.join(m.tests)}")
        return 0
    results = []
    for m in chosen:
        res = run(m)
        results.append(res)
        print(f"{res['status']:9} {res['seconds']:7.1f}s  {m.name}", flush=True)
    for label, group in (("issue", ISSUE_MUTATIONS), ("own", OWN_MUTATIONS)):
        names = {m.name for m in group}
        mine = [r for r in results if r["name"] in names]
        if mine:
            killed = sum(r["status"] == "killed" for r in mine)
            print(f"{label}: {killed}/{len(mine)} killed")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(r["status"] != "error" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""``geomem memorization``: quick run outputs, resume after an interrupt, bad options."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
from typer.testing import CliRunner

from geomem.validation.cli import app
from geomem.validation.memorization import QUICK

runner = CliRunner()

OUTPUTS = ("memorization.png", "memorization.pdf", "memorization.csv", "samples.csv",
           "score_distance.csv", "tau_mem.csv", "tau_mem_seeds.csv", "tau_subspace.csv",
           "record.json")
#: seconds a command may take to stop after SIGINT/SIGTERM (issue contract)
STOP_SECONDS = 5.0


def _rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_quick_run_writes_every_output_and_resumes_from_cache(tmp_path):
    out = tmp_path / "run"
    first = runner.invoke(app, ["memorization", "--quick", "--out", str(out), "--workers", "1"])
    assert first.exit_code == 0, first.output
    for name in OUTPUTS:
        assert (out / name).exists(), name
    record = json.loads((out / "record.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert record["smoke_test"] is True
    rows = _rows(out / "memorization.csv")
    assert {"n_train", "step", "sigma", "points", "subspace", "retained"} <= set(rows[0])
    assert {r["source"] for r in rows} == {"network", "empirical", "population"}
    assert {r["points"] for r in rows if r["source"] == "network"} == {"train", "fresh"}
    assert {int(r["n_train"]) for r in rows} == set(QUICK["n_values"])
    # population limit: the full subspace dimensions (2 and 5) and 7 in all
    pop = {r["subspace"]: float(r["retained"]) for r in rows if r["source"] == "population"}
    assert pop == {"0": 2.0, "1": 5.0, "all": 7.0}
    taus = _rows(out / "tau_mem.csv")
    assert [int(r["n_train"]) for r in taus] == list(QUICK["n_values"])
    assert list(taus[0]) == ["n_train", "tau_mem", "ci_low", "ci_high", "n_seeds",
                             "n_censored", "budget"]
    before = (out / "memorization.csv").read_bytes()
    second = runner.invoke(app, ["memorization", "--quick", "--out", str(out), "--workers",
                                 "1"])
    assert second.exit_code == 0, second.output
    assert "resumed" in second.output or "resumed" in (second.stderr or "")
    assert (out / "memorization.csv").read_bytes() == before


def _children_alive(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [c for c in proc.children(recursive=True) if c.is_running()
                and c.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


# SIGTERM is slow-marked here: test_interrupts covers it for process pools in the default suite
@pytest.mark.parametrize("signum", [signal.SIGINT,
                                    pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_interrupt_stops_workers_and_the_rerun_resumes_training(tmp_path, signum):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "geomem.validation.cli", "memorization", "--quick",
            "--out", str(out), "--workers", "2", "--max-steps", "1500",
            "--steps-per-point", "1000", "--n-values", "8,16"]
    code = "from geomem.validation.cli import main; import sys; sys.argv[0]='geomem'; main()"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.Popen([sys.executable, "-c", code, *args[3:]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    states = []
    while time.monotonic() < deadline and len(states) < 2:
        states = list((out / "checkpoints").glob("score-ensembles/*/state.pt"))
        time.sleep(0.2)
    assert len(states) == 2, "training did not start"
    children = ps.children(recursive=True)
    proc.send_signal(signum)
    start = time.monotonic()
    proc.wait(timeout=30)
    assert time.monotonic() - start < STOP_SECONDS
    assert proc.returncode != 0
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    # the resume state is the truth: a worker killed between writing state.pt and run.json
    # (SIGKILL after the grace period) leaves run.json one save behind (seen once in CI)
    runs = [json.loads((s.parent / "run.json").read_text()) for s in states]
    steps_before = {r["members"][0]["n_train"]: int(torch.load(s, weights_only=False)["step"])
                    for r, s in zip(runs, states, strict=True)}
    assert all(0 < s < 1500 for s in steps_before.values())
    rerun = subprocess.run([sys.executable, "-c", code, *args[3:]], env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    record = json.loads((out / "record.json").read_text())
    trained = {t["n_train"]: t["trained_steps"] for t in record["summary"]["training"]}
    # each ensemble trained only what was missing (resumed from its state, nothing redone)
    assert trained == {n: 1500 - s for n, s in steps_before.items()}


@pytest.mark.parametrize("args, option", [
    (["--n-values", "1,10"], "--n-values"), (["--sigmas", "5"], "--sigmas"),
    (["--geometry", "sphere"], "--geometry"), (["--seeds", "0"], "--seeds"),
    (["--max-steps", "10"], "--max-steps"), (["--device", "tpu"], "--device")])
def test_bad_options(tmp_path, args, option):
    result = runner.invoke(app, ["memorization", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert option in result.output

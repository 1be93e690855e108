"""Run records: JSON record contents, CSV round-trip precision, resumable cache."""

import csv
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from geomem.validation.records import RunOutput, package_versions  # noqa: E402


def test_outputs_and_record(tmp_path):
    run = RunOutput(tmp_path / "out", "demo")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    run.save_figure(fig, "fig")
    plt.close(fig)
    run.write_csv("data", [{"x": 0.1, "y": 1}, {"x": 1 / 3, "y": 2}])
    run.write_record({"n_train": 10}, seeds=[1, 2])
    out = tmp_path / "out"
    assert (out / "fig.png").stat().st_size > 0 and (out / "fig.pdf").stat().st_size > 0
    rows = list(csv.DictReader((out / "data.csv").open()))
    assert float(rows[1]["x"]) == 1 / 3  # repr precision round-trips exactly
    record = json.loads((out / "record.json").read_text())
    assert record["parameters"] == {"n_train": 10} and record["seeds"] == [1, 2]
    assert record["versions"]["numpy"] and "git_revision" in record
    assert set(record["files"]) == {"fig.png", "fig.pdf", "data.csv"}


def test_cache_skips_finished_points(tmp_path):
    run = RunOutput(tmp_path, "demo")
    calls = []

    def compute(v):
        calls.append(v)
        return {"value": v * 2}

    for v in (1, 2):
        run.cached({"v": v}, lambda v=v: compute(v))
    again = RunOutput(tmp_path, "demo")
    assert again.cached({"v": 1}, lambda: compute(99)) == {"value": 2}
    assert calls == [1, 2]


def test_versions_lists_stack():
    versions = package_versions()
    assert versions["numpy"] and versions["python"]


def _strict(text):
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_record_and_cache_are_strict_json_and_round_trip(tmp_path):
    import numpy as np

    run = RunOutput(tmp_path, "demo")
    values = {"np_nan": np.float64("nan"), "np_inf": np.float32("inf"), "py_nan": float("nan"),
              "neg_inf": -np.inf, "array": np.array([1.0, np.nan, np.inf]), "ok": 0.5}
    run.write_record({"values": values}, extra={"summary": {"t_loss": np.float64("inf")}})
    record = _strict((tmp_path / "record.json").read_text())
    assert record["parameters"]["values"] == {
        "np_nan": "nan", "np_inf": "inf", "py_nan": "nan", "neg_inf": "-inf",
        "array": [1.0, "nan", "inf"], "ok": 0.5}
    assert record["summary"]["t_loss"] == "inf"
    first = run.cached({"k": 1}, lambda: values)
    (entry,) = run.cache_dir.glob("*.json")
    _strict(entry.read_text())
    again = RunOutput(tmp_path, "demo").cached({"k": 1}, lambda: None)
    for got in (first, again):  # floats come back as floats, the same ones
        assert np.isnan(got["np_nan"]) and got["np_inf"] == np.inf and got["neg_inf"] == -np.inf
        assert got["array"][0] == 1.0 and np.isnan(got["array"][1]) and got["ok"] == 0.5

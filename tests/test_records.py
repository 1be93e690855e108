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

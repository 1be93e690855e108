"""Shared command-line options: bad input fails in one line with exit status 2 before any
work (--out, sizes and memory, --n-train, --scheduler), --quick yields to explicit sizes,
one checkpoint folder, one declaration per shared option, progress ETA."""

import json
import re
import time

import pytest
import typer
from typer.testing import CliRunner

from geomem.validation import cli
from geomem.validation._common import CACHE_ENV, checkpoint_dir
from geomem.validation.cli import app
from geomem.validation.options import SCHEDULER_PROBE_TIMEOUT, check_memory, check_out_path

runner = CliRunner()

#: the commands of this lane that take --out
OUT_COMMANDS = ["spectra", "score-field", "rem-check", "report", "phase-diagram", "finite-n",
                "generalization", "gahb", "image-dimensions"]


def _main_error(capsys, *args) -> tuple[int, list[str]]:
    """Run the console entry point in-process; (exit status, non-empty stderr lines)."""
    with pytest.raises(SystemExit) as exc:
        cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    return exc.value.code, [line for line in err.splitlines() if line.strip()]


def _bad_out_paths(tmp_path):
    file = tmp_path / "a_file.txt"
    file.write_text("x")
    return {"proc": "/proc/geomem_x", "sys": "/sys/geomem_x", "file": str(file),
            "under-file": str(file / "sub" / "dir")}


@pytest.mark.parametrize("command", OUT_COMMANDS)
@pytest.mark.parametrize("kind", ["proc", "sys", "file", "under-file"])
def test_bad_out_is_one_line_exit_2(tmp_path, capsys, command, kind):
    path = _bad_out_paths(tmp_path)[kind]
    code, lines = _main_error(capsys, command, "--out", path)
    assert code == 2
    assert len(lines) == 1, lines
    assert "'--out'" in lines[0] and "allowed: a new or existing folder" in lines[0]
    assert "Traceback" not in lines[0]


def test_check_out_path_accepts_new_and_existing_folders(tmp_path):
    assert check_out_path(tmp_path) == tmp_path
    assert check_out_path(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"
    with pytest.raises(ValueError, match="pseudo-filesystem"):
        check_out_path("/proc/self/x")


@pytest.mark.parametrize("args, option", [
    (["spectra", "--d", "1000000"], "--d/--n-train/--n-test"),
    (["phase-diagram", "--n-grid", "100000", "--t-grid", "100000"], "--n-grid/--t-grid"),
])
def test_oversized_runs_refused_with_estimate_and_limit(tmp_path, capsys, args, option):
    start = time.monotonic()
    code, lines = _main_error(capsys, *args, "--out", tmp_path / "x")
    assert code == 2 and len(lines) == 1, lines
    assert f"'{option}'" in lines[0]
    assert re.search(r"needs about [\d.e+]+ TiB of memory, more than the limit", lines[0])
    assert time.monotonic() - start < 5 and not (tmp_path / "x").exists()


def test_check_memory_names_option_and_limit():
    check_memory("--n", 10.0, "a run", limit=100)
    with pytest.raises(typer.BadParameter, match=r"needs about 1\.95 KiB.*limit 1000 B"):
        check_memory("--n", 2000.0, "a run", limit=1000)


def test_explicit_sizes_win_over_quick(tmp_path):
    out = tmp_path / "pd"
    result = runner.invoke(app, ["phase-diagram", "--quick", "--n-grid", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    params = json.loads((out / "record.json").read_text())["parameters"]
    assert params["n_grid"] == 5  # given explicitly: wins over --quick
    assert params["t_grid"] == 16  # not given: the --quick size
    assert "explicitly" in runner.invoke(app, ["spectra", "--help"]).output


def test_finite_n_rejects_n_train_1_up_front(tmp_path, capsys):
    start = time.monotonic()
    code, lines = _main_error(capsys, "finite-n", "--n-train", "1", "--out", tmp_path / "x")
    assert code == 2 and len(lines) == 1, lines
    assert "'--n-train'" in lines[0] and "2" in lines[0]
    assert time.monotonic() - start < 5 and not (tmp_path / "x").exists()


def test_unreachable_scheduler_is_one_line_with_address_and_timeout(tmp_path, capsys):
    start = time.monotonic()
    code, lines = _main_error(capsys, "rem-check", "--scheduler", "tcp://127.0.0.1:1",
                              "--out", tmp_path / "x")
    assert time.monotonic() - start < SCHEDULER_PROBE_TIMEOUT + 3
    assert code == 2 and len(lines) == 1, lines
    assert "tcp://127.0.0.1:1" in lines[0] and f"within {SCHEDULER_PROBE_TIMEOUT:g} s" in lines[0]
    assert not (tmp_path / "x").exists()


def test_checkpoint_dir_order(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert checkpoint_dir(out) == out / "checkpoints"
    monkeypatch.setenv(CACHE_ENV, "")  # empty: unset, never the working directory
    assert checkpoint_dir(out) == out / "checkpoints"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "shared"))
    assert checkpoint_dir(out) == tmp_path / "shared"
    assert checkpoint_dir(out, tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.setenv(CACHE_ENV, "/proc/nope")
    with pytest.raises(ValueError, match="pseudo-filesystem"):
        checkpoint_dir(out)


def test_image_command_checkpoints_go_under_out_not_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CACHE_ENV, raising=False)
    out = tmp_path / "g"
    result = runner.invoke(app, ["gahb", "--quick", "--datasets", "calpha2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert any((out / "checkpoints").iterdir())
    assert not (tmp_path / "results").exists()
    record = json.loads((out / "record.json").read_text())
    assert record["parameters"]["cache_dir"] == str(out / "checkpoints")


SHARED = ("--out", "--seed", "--workers", "--scheduler", "--dask-workers", "--cache-dir")


def test_shared_options_have_one_declaration():
    group = typer.main.get_command(app)
    seen: dict[str, set] = {}
    for name in OUT_COMMANDS:
        for param in group.commands[name].params:
            for opt in set(param.opts) & set(SHARED):
                seen.setdefault(opt, set()).add(param.help)
    assert set(seen) == set(SHARED)
    for opt, declarations in seen.items():
        assert len(declarations) == 1, (opt, declarations)


def test_progress_eta_ignores_start_up(capsys):
    from geomem.validation.progress import progress

    def items():
        time.sleep(0.6)  # start-up: imports, pool, JIT
        yield 0
        for i in range(1, 20):
            time.sleep(0.01)
            yield i

    assert list(progress(items(), "demo", total=20, every=0)) == list(range(20))
    err = capsys.readouterr().err
    rates = re.findall(r" 2/20 \[[^,]+, ([\d.]+)it/s", err)
    assert rates, err
    # the true rate is ~100 it/s; a rate averaged with the 0.6 s start-up would be < 5 it/s
    assert float(rates[-1]) > 20, err
    assert "first after 0.6s" in err


def test_training_progress_shows_step_loss_rate_and_resume(capsys):
    from geomem.validation.progress import resumed, reused_checkpoint, training_progress

    with training_progress(100, "train N=250", initial=40, every=0) as bar:
        bar.step(10, loss=0.123456)
        assert bar.n == 50
        text = str(bar)
    assert "train N=250 (resumed at step 40)" in text and "50/100" in text
    assert "loss=0.1235" in text and "step/s" in text
    reused_checkpoint("train N=500", "/tmp/ckpt/abc")
    resumed("grid", 3, 10)
    err = capsys.readouterr().err
    assert "train N=500: reused checkpoint /tmp/ckpt/abc" in err
    assert "grid: resumed, 3/10 points read from cache" in err

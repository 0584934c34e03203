"""``python -m tfsmooth demo``: help, one-line errors, and the demo end to end at a reduced size."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pandas as pd
import pytest

from tfsmooth import cli
from tfsmooth.data import synthetic_ratings

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_module(*args: str, cwd: pathlib.Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m tfsmooth ...`` in a fresh process, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "tfsmooth", *args],
        capture_output=True,
        text=True,
        cwd=str(cwd),
        env=env,
        timeout=timeout,
        check=False,
    )


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    demo = next(
        action
        for action in cli.build_parser()._actions
        if getattr(action, "choices", None) and "demo" in action.choices
    ).choices["demo"]
    for action in demo._actions:
        for option in action.option_strings:
            assert option in text, option
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 10, action.dest
    assert "tfds:movielens/100k-ratings" in text and "--output-dir" in text


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "required: COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--activations", "relu,elu"], "unknown activation 'elu'"),
        (["--activations", "smelu:-1"], "smelu's beta must be > 0"),
        (["--activations", "gelu:2"], "gelu takes no parameter"),
        (["--activations", "relu,relu"], "activations repeat"),
        (["--hidden-units", "64,x"], "expected comma-separated layer widths"),
        (["--replicas", "0"], "expected an integer >= 2, got '0'"),
        (["--epochs", "0"], "expected a positive integer"),
        (["--vary", "data"], "invalid choice: 'data'"),
        (["--data", "a", "--dataset", "b"], "not allowed with argument"),
    ],
)
def test_bad_options_are_usage_errors(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _one_line_error(capsys, args) -> str:
    assert cli.main(["demo", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("python -m tfsmooth demo: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


def test_bad_data_gets_a_one_line_error_naming_the_problem(capsys, tmp_path):
    missing = tmp_path / "nowhere" / "ratings.csv"
    assert str(missing) in _one_line_error(capsys, ["--data", str(missing)])
    assert "holds no ratings file" in _one_line_error(capsys, ["--data", str(tmp_path)])
    odd = tmp_path / "notes.txt"
    odd.write_text("Dear diary,\ntoday I rated movies.\n")
    assert "not a ratings file" in _one_line_error(capsys, ["--data", str(odd)])
    bad = tmp_path / "ratings.csv"
    bad.write_text("userId,movieId,rating,timestamp\n1,2,great,5\n")
    assert "rating 'great' on data row 1" in _one_line_error(capsys, ["--data", str(bad)])
    (tmp_path / "empty.csv").write_text("")
    assert "is empty" in _one_line_error(capsys, ["--data", str(tmp_path / "empty.csv")])


def test_tfds_without_the_package_is_a_one_line_error(capsys):
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorflow-datasets is installed: only the missing-package path is tested")
    line = _one_line_error(capsys, ["--dataset", "tfds:movielens/100k-ratings"])
    assert "pip install tensorflow-datasets" in line
    assert "must be one of" in _one_line_error(capsys, ["--dataset", "tfds:imdb_reviews"])


def _check_outputs(directory: pathlib.Path, configurations: list[str], replicas: int):
    summary = pd.read_csv(directory / "reproducibility_summary.csv")
    assert list(summary["configuration"]) == configurations
    assert (summary["replicas"] == replicas).all() and (summary["failed"] == 0).all()
    assert (summary["pd_relative"] > 0).all() and summary["auc"].between(0.5, 1).all()
    assert len(pd.read_csv(directory / "reproducibility_replicas.csv")) == replicas * len(
        configurations
    )
    assert (directory / "reproducibility.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_demo_end_to_end_in_a_fresh_process(tmp_path):
    result = run_module(
        "demo", "--quick", "--replicas", "2", "--epochs", "1", "--synthetic-ratings", "3000",
        "--activations", "relu,smelu:2", "--output-dir", "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "synthetic: 3,000 ratings" in out
    assert "PD (relative)" in out and "smelu(beta=2)" in out and "Against ReLU" in out
    assert f"Saved to {(tmp_path / 'out').resolve()}" in out
    assert "[4/4] smelu(beta=2) replica 2" in result.stderr  # progress is visible
    _check_outputs(tmp_path / "out", ["relu", "smelu(beta=2)"], 2)


@pytest.mark.slow
def test_demo_reads_a_ratings_file(tmp_path, capsys):
    ratings = synthetic_ratings(n_users=150, n_items=80, n_ratings=2500, seed=1).ratings
    path = tmp_path / "u.data"  # the ml-100k layout: tab separated, no header
    ratings.to_csv(path, sep="\t", header=False, index=False)
    code = cli.main(
        ["demo", "--data", str(path), "--replicas", "2", "--epochs", "1", "--quiet",
         "--activations", "gelu", "--max-ratings", "2000", "--output-dir", str(tmp_path / "o")]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "2,000 ratings" in out and "1 genres" in out  # u.data alone: no genre file
    _check_outputs(tmp_path / "o", ["gelu"], 2)


# ---------------------------------------------------------------------------------------------
# Issue 11: every bad value is a usage error at parse time; small sizes work; nothing left behind.


@pytest.mark.parametrize(
    "args, message",
    [
        (["--learning-rate", "-1"], "argument --learning-rate: expected a number > 0, got '-1'"),
        (["--learning-rate", "0"], "argument --learning-rate: expected a number > 0"),
        (["--learning-rate", "nan"], "argument --learning-rate: expected a finite number"),
        (["--learning-rate", "1e-50"], "argument --learning-rate: expected a number repr"),
        (["--activations", "smelu:inf"], "argument --activations: smelu's beta: expected a finite"),
        (["--activations", "relu,smelu:1e39"], "smelu's beta: expected a number representable"),
        (["--activations", "generalized_smelu:nan"], "negative slope: expected a finite number"),
        (["--synthetic-ratings", "1"], "argument --synthetic-ratings: expected an integer >= 100"),
        (["--synthetic-ratings", "99"], "argument --synthetic-ratings: expected an integer >= 100"),
        (["--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
        (["--replicas", "1"], "argument --replicas: expected an integer >= 2, got '1'"),
        (["--positive-threshold", "nan"], "argument --positive-threshold: expected a finite"),
    ],
)
def test_bad_values_are_usage_errors_that_leave_nothing_behind(
    capsys, monkeypatch, tmp_path, args, message
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n_ratings", [100, 101, 999, 2000, 2499, 2500, 8000, 40_000])
def test_every_accepted_synthetic_size_fits_its_users_and_items(n_ratings):
    n_users, n_items = cli.synthetic_shape(n_ratings)
    assert n_users <= n_ratings <= n_users * (n_items // 2)
    assert len(synthetic_ratings(n_users, n_items, n_ratings, seed=0).ratings) == n_ratings


def test_defaults_keep_their_documented_shape():
    assert cli.synthetic_shape(40_000) == (1600, 800)  # the help's "1,600 users and 800 items"


def test_a_data_file_too_small_to_test_on_is_a_one_line_error_leaving_nothing(
    capsys, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,10,4.0,100\n1,20,2.5,200\n2,10,5,300\n")
    line = _one_line_error(capsys, ["--data", str(path)])
    assert f"--data {path}: 3 ratings leave 1 for the test split" in line
    assert "needs at least 8 ratings" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ratings.csv"]  # no ./tfsmooth-demo


def test_a_failing_data_run_leaves_no_output_directory(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    _one_line_error(capsys, ["--data", str(tmp_path / "missing.csv")])
    _one_line_error(capsys, ["--data", str(tmp_path), "--output-dir", "deep/er"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_smallest_synthetic_size_runs(tmp_path, capsys):
    code = cli.main(
        ["demo", "--synthetic-ratings", "100", "--replicas", "2", "--epochs", "1", "--quiet",
         "--activations", "relu", "--output-dir", str(tmp_path / "o")]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "synthetic: 100 ratings, 20 users, 10 items" in out
    summary = pd.read_csv(tmp_path / "o" / "reproducibility_summary.csv")
    assert (summary["failed"] == 0).all() and (summary["replicas"] == 2).all()

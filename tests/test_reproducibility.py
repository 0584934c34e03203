"""Replica training: determinism, PD and its error, accuracy metrics, failures, the report."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfsmooth import metrics
from tfsmooth._keras import keras
from tfsmooth.data import encode_ranking, synthetic_ratings
from tfsmooth.models import build_ranking_model, ranking_losses
from tfsmooth.reproducibility import (
    ReproducibilityReport,
    auc_score,
    log_loss,
    op_determinism,
    pairwise_prediction_difference,
    rmse,
    train_replicas,
)

# ----------------------------------------------------------------------------------------------------
# Accuracy metrics and the pairwise PD against brute-force numpy.


def test_auc_counts_ordered_pairs_with_ties_half():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.uniform(size=60), 1)  # many ties
    positives, negatives = scores[labels == 1], scores[labels == 0]
    pairs = [(p > n) + 0.5 * (p == n) for p in positives for n in negatives]
    assert auc_score(labels, scores) == pytest.approx(np.mean(pairs))
    assert math.isnan(auc_score(np.ones(5), np.arange(5)))


def test_log_loss_and_rmse_formulas():
    labels, p = np.array([1, 0, 1]), np.array([0.9, 0.2, 0.0])
    expected = -(np.log(0.9) + np.log(0.8) + np.log(1e-7)) / 3
    assert log_loss(labels, p) == pytest.approx(expected)
    assert rmse([1.0, 2.0], [2.0, 4.0]) == pytest.approx(np.sqrt(2.5))


def test_pairwise_pd_and_jackknife_error_by_hand():
    rng = np.random.default_rng(1)
    predictions = rng.uniform(0.1, 0.9, (4, 30))
    mean, error, matrix = pairwise_prediction_difference(predictions, "absolute")
    pd_ = {
        (i, j): np.mean(np.abs(predictions[i] - predictions[j]))
        for i, j in itertools.combinations(range(4), 2)
    }
    assert mean == pytest.approx(np.mean(list(pd_.values())), rel=1e-6)
    assert matrix[1, 3] == pytest.approx(pd_[(1, 3)], rel=1e-6) and matrix[3, 1] == matrix[1, 3]
    leave_out = [np.mean([v for (i, j), v in pd_.items() if k not in (i, j)]) for k in range(4)]
    jackknife = np.sqrt(3 / 4 * np.sum((np.array(leave_out) - np.mean(leave_out)) ** 2))
    assert error == pytest.approx(jackknife, rel=1e-5)
    assert math.isnan(pairwise_prediction_difference(predictions[:2])[1])  # 2 replicas: no error


# ----------------------------------------------------------------------------------------------------
# Silent faults (issue 12): each of these returned a number, or an error naming nothing passed.


def test_exact_metrics_are_the_ones_in_tfsmooth_metrics():
    assert metrics.auc_score is auc_score
    assert metrics.log_loss is log_loss
    assert metrics.rmse is rmse


def test_auc_of_a_nan_score_is_nan_not_a_ranking_of_the_rest():
    labels = np.array([0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.8, 0.3, 0.6, 0.9])
    # numpy reference on the finite scores: every positive above every negative.
    pairs = [(p > n) + 0.5 * (p == n) for p in scores[labels == 1] for n in scores[labels == 0]]
    assert auc_score(labels, scores) == pytest.approx(np.mean(pairs)) == 1.0
    for bad in (np.nan, np.inf, -np.inf):
        scores_with_bad = scores.copy()
        scores_with_bad[0] = bad
        assert math.isnan(auc_score(labels, scores_with_bad)), bad


@pytest.mark.parametrize("bad", [np.nan, 0.7, 2.0, -1.0])
def test_auc_rejects_labels_that_are_not_0_or_1(bad):
    labels = np.array([0.0, 1.0, 0.0, 1.0])
    labels[2] = bad
    with pytest.raises(ValueError, match=r"`labels` must each be 0 or 1. Received: labels with 1"):
        auc_score(labels, np.array([0.1, 0.8, 0.3, 0.6]))


@pytest.mark.parametrize("epsilon", [-1.0, 0.0, 0.5, 0.7, np.nan, np.inf])
def test_log_loss_checks_epsilon(epsilon):
    with pytest.raises(ValueError, match=r"`epsilon` must be"):
        log_loss([1, 0], [0.9, 0.2], epsilon=epsilon)
    with pytest.raises(TypeError, match=r"`epsilon` must be a number"):
        log_loss([1, 0], [0.9, 0.2], epsilon="small")
    # An accepted epsilon is the clipping margin: p = 0 counts as epsilon.
    assert log_loss([1], [0.0], epsilon=np.float32(0.25)) == pytest.approx(-np.log(0.25))


def test_nan_in_log_loss_or_rmse_gives_nan():
    assert math.isnan(log_loss([1, 0], [np.nan, 0.2]))
    assert math.isnan(log_loss([np.nan, 0], [0.9, 0.2]))
    assert math.isnan(rmse([1.0, 2.0], [np.nan, 2.0]))


def test_exact_metrics_name_both_arrays_when_lengths_differ():
    lengths = r"must have the same length. Received: "
    with pytest.raises(
        ValueError,
        match=rf"`predictions` and `targets` {lengths}len\(predictions\)=3, len\(targets\)=5",
    ):
        rmse(np.zeros(5), np.zeros(3))
    with pytest.raises(
        ValueError, match=rf"`labels` and `scores` {lengths}len\(labels\)=5, len\(scores\)=3"
    ):
        auc_score(np.zeros(5), np.zeros(3))
    with pytest.raises(ValueError, match=rf"`labels` and `probabilities` {lengths}len\(labels\)=2"):
        log_loss(np.zeros(2), np.zeros(4))


def test_pairwise_pd_needs_two_replicas():
    predictions = np.array([[0.1, 0.8, 0.3]])
    with pytest.raises(ValueError, match=r"`predictions` needs at least 2 replicas.*\(1, 3\)"):
        pairwise_prediction_difference(predictions)
    with pytest.raises(ValueError, match=r"`predictions` needs at least 2 replicas"):
        pairwise_prediction_difference(np.zeros((0, 3)))


def test_pairwise_pd_names_the_replica_with_nan():
    predictions = np.array([[0.1, 0.8, 0.3], [0.2, 0.7, 0.3], [0.2, 0.7, np.nan]])
    with pytest.raises(ValueError, match=r"`predictions` must be finite.*replica 2 with 1 NaN"):
        pairwise_prediction_difference(predictions)
    with pytest.raises(ValueError, match=r"`kind` must be one of"):
        pairwise_prediction_difference(predictions[:1], kind="nope")


@pytest.mark.parametrize("enabled", ["yes", 1, None])
def test_op_determinism_takes_only_a_bool(enabled):
    from tensorflow.python.framework import config

    with pytest.raises(TypeError, match=r"`enabled` must be True or False"):
        op_determinism(enabled)
    assert not config.is_op_determinism_enabled()
    with op_determinism(np.False_):  # numpy bools are bools
        assert not config.is_op_determinism_enabled()


def test_op_determinism_is_restored():
    from tensorflow.python.framework import config

    assert not config.is_op_determinism_enabled()
    with op_determinism():
        assert config.is_op_determinism_enabled()
    assert not config.is_op_determinism_enabled()


# ----------------------------------------------------------------------------------------------------
# Replica training on tiny data.


@pytest.fixture(scope="module")
def data():
    return encode_ranking(synthetic_ratings(n_users=120, n_items=60, n_ratings=1500, seed=3))


def _builder(data, activation="relu", tasks=("binary",)):
    def build(seed):
        model = build_ranking_model(
            data.n_users,
            data.n_items,
            data.n_genres,
            activation=activation,
            hidden_units=(8,),
            embedding_dim=4,
            tasks=tasks,
            seed=seed,
        )
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=ranking_losses(tasks))
        return model

    return build


def _splits(data, tasks=("binary",)):
    return (
        (data.features("train"), data.targets("train", tasks)),
        (data.features("test"), data.targets("test", tasks)),
    )


def _run(data, builders, **kwargs):
    train, test = _splits(data, kwargs.pop("tasks", ("binary",)))
    options = {"replicas": 2, "epochs": 1, "batch_size": 128, "progress": False}
    return train_replicas(builders, train, test, **{**options, **kwargs})


@pytest.mark.slow
def test_same_seeds_give_bit_identical_predictions_and_different_seeds_do_not(data):
    first = _run(data, {"relu": _builder(data)}, vary="both")
    second = _run(data, {"relu": _builder(data)}, vary="both")
    a, b = first.configurations["relu"].predictions, second.configurations["relu"].predictions
    np.testing.assert_array_equal(a, b)
    result = first.configurations["relu"]
    assert result.prediction_difference > 0 and result.absolute_difference > 0
    assert [(r.init_seed, r.order_seed) for r in result.replicas] == [(0, 0), (1, 1)]
    # vary="none": identical replicas, PD exactly 0.
    same = _run(data, {"relu": _builder(data)}, vary="none", seed=7).configurations["relu"]
    np.testing.assert_array_equal(same.predictions[0], same.predictions[1])
    assert same.prediction_difference == 0.0
    assert {(r.init_seed, r.order_seed) for r in same.replicas} == {(7, 7)}


@pytest.mark.slow
def test_validation_chooses_the_epochs_and_reports_that_epochs_predictions(data):
    train, test = _splits(data)
    rows = np.arange(len(train[1]["binary"]))
    fit_rows, validation_rows = rows[200:], rows[:200]
    take = lambda part, r: {k: v[r] for k, v in part.items()}  # noqa: E731
    fit = (take(train[0], fit_rows), take(train[1], fit_rows))
    validation = (take(train[0], validation_rows), take(train[1], validation_rows))
    options = {"replicas": 2, "batch_size": 128, "progress": False}
    chosen = train_replicas(
        _builder(data), fit, test, epochs=3, validation=validation, **options
    ).configurations["model"]
    assert len(chosen.validation_curve) == 3
    assert chosen.epochs == int(np.argmax(chosen.validation_curve)) + 1
    # Bit-identical to a run stopped at the chosen epoch (op determinism makes this exact).
    direct = train_replicas(_builder(data), fit, test, epochs=chosen.epochs, **options)
    np.testing.assert_array_equal(chosen.predictions, direct.configurations["model"].predictions)
    assert chosen.replicas[0].metrics == direct.configurations["model"].replicas[0].metrics


@pytest.mark.slow
def test_vary_order_or_init_alone_still_differs(data):
    order = _run(data, _builder(data), vary="order").configurations["model"]
    init = _run(data, _builder(data), vary="init").configurations["model"]
    assert [r.init_seed for r in order.replicas] == [0, 0]
    assert [r.order_seed for r in order.replicas] == [0, 1]
    assert [r.order_seed for r in init.replicas] == [0, 0]
    assert order.prediction_difference > 0 and init.prediction_difference > 0


def _nan_model(data):
    def build():  # a zero-argument builder: seeded through the global seed
        model = build_ranking_model(data.n_users, data.n_items, data.n_genres, hidden_units=(4,))
        model.compile(optimizer="adam", loss=ranking_losses())
        weights = model.get_layer("binary").get_weights()
        model.get_layer("binary").set_weights([np.full_like(weights[0], np.nan), weights[1]])
        return model

    return build


@pytest.mark.slow
def test_failed_replicas_are_reported_not_dropped(data):
    def flaky(seed):
        if seed == 1:
            raise RuntimeError("out of memory\nsecond line")
        return _builder(data)(seed)

    def uncompiled(seed):
        return build_ranking_model(data.n_users, data.n_items, data.n_genres, hidden_units=(4,))

    report = _run(data, {"flaky": flaky}, replicas=3, vary="init")
    broken = _run(data, {"nan": _nan_model(data), "uncompiled": uncompiled})
    flaky_result = report.configurations["flaky"]
    assert [r.failed for r in flaky_result.replicas] == [False, True, False]
    assert flaky_result.replicas[1].error == "RuntimeError: out of memory"
    assert flaky_result.predictions.shape[0] == 2 and flaky_result.prediction_difference > 0
    assert "2 (1 failed)" in report.table() and "failed: flaky replica 1" in report.table()
    assert report.to_dataframe().set_index("configuration").loc["flaky", "failed"] == 1
    nan_errors = {r.error for r in broken.configurations["nan"].replicas}
    assert len(nan_errors) == 1 and "NaN or Inf" in nan_errors.pop()
    assert math.isnan(broken.configurations["nan"].prediction_difference)
    uncompiled_error = broken.configurations["uncompiled"].replicas[0].error
    assert "must return a compiled keras.Model" in uncompiled_error
    assert "0 (2 failed)" in broken.table() and "n/a" in broken.table()
    assert broken.to_dataframe().set_index("configuration").loc["nan", "replicas"] == 0
    assert len(broken.failures) == 4


@pytest.mark.slow
def test_report_table_dataframes_plot_and_files(data, tmp_path):
    events = []
    report = _run(
        data,
        {"relu": _builder(data), "smelu": _builder(data, "smelu")},
        replicas=3,
        progress=events.append,
        data_name="tiny",
    )
    assert isinstance(report, ReproducibilityReport)
    assert [e["event"] for e in events].count("replica_end") == 6
    summary = report.to_dataframe()
    assert list(summary["configuration"]) == ["relu", "smelu"]
    for column in ("pd_relative", "pd_relative_se", "auc", "auc_se", "log_loss", "ensemble_auc"):
        assert summary[column].notna().all(), column
    replicas = report.replicas_dataframe()
    assert len(replicas) == 6 and set(replicas["error"]) == {""}
    # The table quotes the same numbers the DataFrame holds.
    row = summary.iloc[0]
    assert f"{row['pd_relative']:.4f} ± {row['pd_relative_se']:.4f}" in report.table()
    # The ensemble is the mean prediction of the replicas.
    relu = report.configurations["relu"]
    labels = data.test["label"]
    assert relu.ensemble["auc"] == pytest.approx(auc_score(labels, relu.predictions.mean(axis=0)))
    figure = report.plot(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert figure.axes[0].get_xlabel().startswith("prediction difference")
    paths = report.save(tmp_path / "out")
    assert pd.read_csv(paths["summary"]).shape[0] == 2
    assert pd.read_csv(paths["replicas"]).shape[0] == 6
    assert paths["plot"].stat().st_size > 1000


@pytest.mark.slow
def test_regression_task_with_multi_output_models(data):
    tasks = ("binary", "regression")
    report = _run(
        data,
        {"relu": _builder(data, tasks=tasks)},
        tasks=tasks,
        output="regression",
    )
    assert report.task == "regression"
    summary = report.to_dataframe()
    assert "rmse" in summary and "auc" not in summary
    result = report.configurations["relu"]
    expected = np.sqrt(np.mean((result.predictions[0] - data.test["rating"]) ** 2))
    assert result.replicas[0].metrics["rmse"] == pytest.approx(expected, rel=1e-6)
    assert "RMSE" in report.table()


def test_bad_arguments(data):
    train, test = _splits(data)
    build = _builder(data)
    with pytest.raises(
        ValueError, match=r"`replicas` must be an integer >= 2. Received: replicas=1"
    ):
        train_replicas(build, train, test, replicas=1)
    with pytest.raises(ValueError, match=r"`vary` must be one of"):
        train_replicas(build, train, test, vary="data")
    with pytest.raises(ValueError, match=r"`task` must be one of"):
        train_replicas(build, train, test, task="ranking")
    with pytest.raises(TypeError, match=r"`train` must be a tuple \(features, targets\)"):
        train_replicas(build, data.features("train"), test)
    with pytest.raises(ValueError, match=r"same number of rows"):
        train_replicas(build, (train[0], {"binary": train[1]["binary"][:5]}), test)
    with pytest.raises(TypeError, match=r"must be callable"):
        train_replicas({"x": 3}, train, test)
    two_outputs = (test[0], {"binary": test[1]["binary"], "regression": data.test["rating"]})
    with pytest.raises(ValueError, match=r"pass `output` to pick"):
        train_replicas(build, train, two_outputs)
    assert not tf.config.list_logical_devices("GPU")  # the tests run on CPU only


def test_empty_train_or_test_data_is_rejected_before_any_replica_trains(data):
    """Keras' predict on no rows failed every replica with UnboundLocalError (issue 11)."""
    train, test = _splits(data)

    def no_rows(split):
        features, targets = split
        return (
            {key: value[:0] for key, value in features.items()},
            {key: value[:0] for key, value in targets.items()},
        )

    with pytest.raises(ValueError, match=r"`test` has no rows. Received: test with 0 examples"):
        train_replicas(_builder(data), train, no_rows(test), replicas=2)
    with pytest.raises(ValueError, match=r"`train` has no rows"):
        train_replicas(_builder(data), no_rows(train), test, replicas=2)


def test_targets_that_cannot_be_scored_are_rejected_before_any_replica_trains(data):
    """NaN test targets made every replica's metrics NaN; soft labels were ranked as > 0.5."""
    train, test = _splits(data)
    features, targets = test
    nan_targets = {"binary": np.where(np.arange(len(targets["binary"])) == 3, np.nan, 1.0)}
    with pytest.raises(ValueError, match=r"`test` targets must be finite.*1 NaN or Inf"):
        train_replicas(_builder(data), train, (features, nan_targets), progress=False)
    soft = {"binary": np.full(len(targets["binary"]), 0.7)}
    with pytest.raises(ValueError, match=r"`test` targets must be 0 or 1 for task='binary'"):
        train_replicas(_builder(data), train, (features, soft), task="binary", progress=False)
    with pytest.raises(ValueError, match=r"`validation` targets must be finite"):
        train_replicas(_builder(data), train, test, validation=(features, nan_targets))
    with pytest.raises(TypeError, match=r"`deterministic` must be True or False"):
        train_replicas(_builder(data), train, test, deterministic="yes")

"""prediction_difference, topk_churn and the PredictionDifference metric against numpy formulas."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_config_roundtrip
from references import churn_reference, prediction_difference_reference

from tfsmooth._keras import keras
from tfsmooth.metrics import PredictionDifference, prediction_difference, topk_churn

RNG = np.random.default_rng(0)
A = RNG.uniform(0, 1, 50).astype("float32")
B = np.clip(A + RNG.normal(0, 0.1, 50), 0, 1).astype("float32")
B[:3] = A[:3]  # some identical pairs
A[3], B[3] = 0.0, 0.0  # a pair that is exactly zero
W = RNG.uniform(0, 2, 50).astype("float32")
PA = RNG.dirichlet(np.ones(4), 40).astype("float32")
PB = RNG.dirichlet(np.ones(4), 40).astype("float32")


@pytest.mark.parametrize("kind", ["absolute", "relative", "l2"])
@pytest.mark.parametrize("shape", [(50,), (50, 1), (25, 2)])
@pytest.mark.parametrize("weighted", [False, True])
def test_scalar_kinds_match_numpy(kind, shape, weighted):
    a, b = A.reshape(shape), B.reshape(shape)
    w = W[: shape[0]] if weighted else None
    got = float(prediction_difference(a, b, kind, sample_weight=w))
    assert got == pytest.approx(prediction_difference_reference(a, b, kind, w), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("kind", ["l1", "top1"])
@pytest.mark.parametrize("weighted", [False, True])
def test_class_kinds_match_numpy(kind, weighted):
    w = W[:40] if weighted else None
    got = float(prediction_difference(PA, PB, kind, sample_weight=w))
    assert got == pytest.approx(
        prediction_difference_reference(PA, PB, kind, w), rel=1e-5, abs=1e-7
    )


def test_known_values():
    assert float(prediction_difference([0.2, 0.5, 0.0], [0.3, 0.5, 0.0])) == pytest.approx(
        (2 * 0.1 / 0.5) / 3, rel=1e-6
    )
    assert float(prediction_difference([1.0, 3.0], [2.0, 3.0], "absolute")) == 0.5
    assert float(prediction_difference([[0.0], [0.0]], [[3.0], [4.0]], "l2")) == pytest.approx(
        np.sqrt(12.5)
    )
    # TFMA's rule: both (numerator and denominator) below 1e-7 counts 0.
    assert float(prediction_difference([1e-9], [0.0])) == 0.0
    # A denominator of 0 with a real difference stays finite (floored at epsilon).
    assert np.isfinite(float(prediction_difference([1.0], [-1.0])))
    # Top-1 ties go to the lower index: [0.5, 0.5] and [0.6, 0.4] agree.
    assert float(prediction_difference([[0.5, 0.5]], [[0.6, 0.4]], "top1")) == 0.0
    assert float(prediction_difference([[1.0, 0.0]], [[0.0, 1.0]], "l1")) == 1.0


def test_identical_predictions_have_zero_difference():
    for kind in ("absolute", "relative", "l2"):
        assert float(prediction_difference(A, A, kind)) == 0.0
    for kind in ("l1", "top1"):
        assert float(prediction_difference(PA, PA, kind)) == 0.0


@pytest.mark.parametrize("jit", [False, True])
def test_same_values_in_a_graph_and_under_xla(jit):
    function = tf.function(
        lambda a, b, w: prediction_difference(a, b, "relative", w), jit_compile=jit
    )
    assert float(function(A, B, W)) == pytest.approx(
        prediction_difference_reference(A, B, "relative", W), rel=1e-5
    )


def test_half_precision_and_integer_inputs():
    got = float(prediction_difference(tf.constant(A, tf.float16), tf.constant(B, tf.float16)))
    assert got == pytest.approx(
        prediction_difference_reference(A.astype(np.float16), B.astype(np.float16), "relative"),
        rel=1e-3,
    )
    assert float(prediction_difference([1, 2], [1, 4], "absolute")) == 1.0


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: prediction_difference(A, B, "median"), ValueError, r"`kind` must be one of"),
        (
            lambda: prediction_difference(A, B[:10]),
            ValueError,
            r"`a` and `b` must have the same shape. Received: a.shape=\(50,\), b.shape=\(10,\)",
        ),
        (
            lambda: prediction_difference(np.where(A > 0.5, np.nan, A), B),
            ValueError,
            r"`a` must be finite. Received: a with \d+ NaN or Inf value\(s\) of 50",
        ),
        (
            lambda: prediction_difference(A, np.full(50, np.inf)),
            ValueError,
            r"`b` must be finite",
        ),
        (
            lambda: prediction_difference(A, B, sample_weight=W[:5]),
            ValueError,
            r"`sample_weight` needs one weight per example",
        ),
        (
            lambda: prediction_difference(A, B, sample_weight=-W),
            ValueError,
            r"`sample_weight` must be >= 0",
        ),
        (lambda: prediction_difference(0.3, 0.4, "top1"), ValueError, r"needs rank >= 1"),
        (lambda: prediction_difference(["x"], ["y"]), TypeError, r"`a` must hold numbers"),
    ],
)
def test_bad_input_gets_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_bad_input_inside_a_graph_raises_at_run_time():
    function = tf.function(
        lambda a, b: prediction_difference(a, b),
        input_signature=[tf.TensorSpec([None]), tf.TensorSpec([None])],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have the same shape"):
        function(A, B[:10])
    with pytest.raises(tf.errors.InvalidArgumentError, match="`a` must be finite"):
        function(np.where(A > 0.5, np.nan, A).astype("float32"), B)


# ----------------------------------------------------------------------------------------------------
# Top-k churn.


@pytest.mark.parametrize("k", [1, 3, 7, 20])  # 7 and 20: k*k > C uses the mask path
def test_topk_churn_matches_sets(k):
    scores_a = RNG.normal(size=(30, 25)).astype("float32")
    scores_b = (scores_a + RNG.normal(0, 0.5, (30, 25))).astype("float32")
    weights = RNG.uniform(0, 1, 30)
    assert float(topk_churn(scores_a, scores_b, k)) == pytest.approx(
        churn_reference(scores_a, scores_b, k), abs=1e-6
    )
    assert float(topk_churn(scores_a, scores_b, k, sample_weight=weights)) == pytest.approx(
        churn_reference(scores_a, scores_b, k, weights), abs=1e-6
    )


def test_topk_churn_known_values_and_ties():
    assert float(topk_churn([0.9, 0.8, 0.1, 0.0], [0.9, 0.0, 0.8, 0.1], k=2)) == 0.5
    assert float(topk_churn([[1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0]], k=2)) == 0.0  # ties: no churn
    assert float(topk_churn([[3.0, 2.0, 1.0]], [[1.0, 2.0, 3.0]], k=3)) == 0.0  # same set


def test_topk_churn_bad_input():
    scores = np.zeros((2, 5), np.float32)
    with pytest.raises(
        ValueError, match=r"`k` must be <= the number of candidates \(5\). Received: k=6"
    ):
        topk_churn(scores, scores, 6)
    with pytest.raises(ValueError, match=r"`k` must be an integer >= 1. Received: k=0"):
        topk_churn(scores, scores, 0)
    with pytest.raises(ValueError, match=r"`scores_a` and `scores_b` must have the same shape"):
        topk_churn(scores, scores[:, :4], 2)
    with pytest.raises(ValueError, match=r"must be \[queries, candidates\]"):
        topk_churn(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), 2)
    with pytest.raises(ValueError, match=r"`scores_b` must be finite"):
        topk_churn(scores, np.full((2, 5), np.nan), 2)


# ----------------------------------------------------------------------------------------------------
# The Keras metric.


@pytest.mark.parametrize("kind", ["absolute", "relative", "l2"])
def test_metric_streams_to_the_whole_set_value(kind):
    metric = PredictionDifference(kind=kind)
    for start in range(0, 50, 16):  # uneven batches, with weights
        rows = slice(start, start + 16)
        metric.update_state(A[rows], B[rows, None], sample_weight=W[rows])
    assert float(metric.result()) == pytest.approx(
        prediction_difference_reference(B, A, kind, W), rel=1e-5
    )
    metric.reset_state()
    assert float(metric.result()) == 0.0


@pytest.mark.parametrize("kind", ["l1", "top1"])
def test_metric_class_kinds(kind):
    metric = PredictionDifference(kind=kind)
    metric.update_state(PA[:25], PB[:25])
    metric.update_state(PA[25:], PB[25:])
    assert float(metric.result()) == pytest.approx(
        prediction_difference_reference(PA, PB, kind), rel=1e-5
    )


def _model_and_data():
    x = RNG.normal(size=(100, 3)).astype("float32")
    labels = (x[:, 0] > 0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    return x, labels, model, other


def test_evaluate_against_stored_reference_predictions_with_labels_as_targets():
    x, labels, model, other = _model_and_data()
    reference_predictions = other.predict(x, verbose=0)
    model.compile(
        loss="binary_crossentropy",
        metrics=[PredictionDifference(reference=reference_predictions)],
    )
    expected = prediction_difference_reference(
        model.predict(x, verbose=0), reference_predictions, "relative"
    )
    for _ in range(2):  # evaluate resets the position each time
        logs = model.evaluate(x, labels, batch_size=32, verbose=0, return_dict=True)
        assert logs["prediction_difference"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more predictions than stored"):
        model.evaluate(np.concatenate([x, x]), np.concatenate([labels, labels]), verbose=0)


def test_evaluate_against_a_reference_model_through_the_targets():
    x, _, model, other = _model_and_data()
    model.compile(loss="mse", metrics=[PredictionDifference(kind="absolute")])
    logs = model.evaluate(
        x, other.predict(x, verbose=0), batch_size=32, verbose=0, return_dict=True
    )
    expected = prediction_difference_reference(
        model.predict(x, verbose=0), other.predict(x, verbose=0), "absolute"
    )
    assert logs["prediction_difference"] == pytest.approx(expected, rel=1e-5)


def test_metric_under_mirrored_strategy(mirrored_strategy):
    x, _, _, other = _model_and_data()
    targets = other.predict(x, verbose=0)
    with mirrored_strategy.scope():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
        model.compile(loss="mse", metrics=[PredictionDifference()])
    logs = model.evaluate(x, targets, batch_size=20, verbose=0, return_dict=True)
    expected = prediction_difference_reference(model.predict(x, verbose=0), targets, "relative")
    assert logs["prediction_difference"] == pytest.approx(expected, rel=1e-5)
    with mirrored_strategy.scope():
        model.compile(loss="mse", metrics=[PredictionDifference(reference=targets)])
    with pytest.raises(ValueError, match="cannot follow batches split across replicas"):
        model.evaluate(x, targets, batch_size=20, verbose=0)


def test_metric_config_round_trips_whole():
    assert_config_roundtrip(PredictionDifference())
    assert_config_roundtrip(
        PredictionDifference(kind="l2", reference=[[0.1], [0.2]], epsilon=1e-6, name="pd")
    )


def test_metric_survives_keras_file_round_trip(tmp_path):
    x, labels, model, _ = _model_and_data()
    model.compile(loss="binary_crossentropy", metrics=[PredictionDifference(kind="absolute")])
    model.fit(x, labels, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    targets = np.full((100, 1), 0.5, np.float32)
    a = model.evaluate(x, targets, verbose=0, return_dict=True)
    b = restored.evaluate(x, targets, verbose=0, return_dict=True)
    assert b["prediction_difference"] == pytest.approx(a["prediction_difference"], rel=1e-6)


def test_metric_bad_arguments():
    with pytest.raises(ValueError, match=r"`kind` must be one of"):
        PredictionDifference(kind="kl")
    with pytest.raises(ValueError, match=r"`reference` must be a finite array"):
        PredictionDifference(reference=[0.1, np.nan])
    with pytest.raises(ValueError, match=r"`epsilon` must be > 0. Received: epsilon=-1.0"):
        PredictionDifference(epsilon=-1.0)
    with pytest.raises(ValueError, match=r"`epsilon` must be > 0"):
        PredictionDifference(epsilon=0)
    with pytest.raises(TypeError, match=r"`epsilon` must be a number"):
        PredictionDifference(epsilon="small")
    assert PredictionDifference(epsilon=np.float32(0.5)).get_config()["epsilon"] == 0.5


def test_metric_nan_predictions_show_as_nan_not_silently_dropped():
    metric = PredictionDifference()
    metric.update_state(np.array([0.2, 0.3]), np.array([np.nan, 0.3]))
    assert np.isnan(float(metric.result()))


# ---------------------------------------------------------------------------------------------
# Issue 11: arguments that overflow, empty inputs, weights, numpy scalars.


@pytest.mark.parametrize("epsilon", [-1, 0.0, float("nan"), 1e-46])
def test_epsilon_must_be_a_positive_float32_number(epsilon):
    with pytest.raises(ValueError, match=r"`epsilon`"):
        prediction_difference([0.0, 0.2], [0.0, 0.3], epsilon=epsilon)


def test_epsilon_floors_the_denominator_and_zero_pairs_count_zero():
    # (0, 0) counts 0 (both below epsilon); (0.2, 0): 2 * 0.2 / max(0.2, epsilon).
    assert float(prediction_difference([0.0, 0.2], [0.0, 0.0])) == pytest.approx(1.0, rel=1e-6)
    floored = prediction_difference([0.0, 0.2], [0.0, 0.0], epsilon=0.3)
    assert float(floored) == pytest.approx((0.4 / 0.3) / 2, rel=1e-6)


@pytest.mark.parametrize("kind", ["absolute", "l2"])
def test_large_finite_predictions_do_not_overflow(kind):
    # (a - b)^2 overflows float32 beyond 1.8e19; the root-mean-square itself is finite here.
    a = np.array([1e20, -1e20, 1.0], np.float32)
    assert float(prediction_difference(a, -a, kind)) == pytest.approx(
        prediction_difference_reference(a, -a, kind), rel=1e-5
    )


def test_l2_near_the_largest_float32_is_finite_when_the_result_is():
    a = np.array([1e20, -1e20, 1.7e38, 1.0], np.float32)
    b = np.array([-1e20, 1e20, -1.7e38, 3.0], np.float32)  # a - b = 3.4e38 is still finite
    assert float(prediction_difference(a, b, "l2")) == pytest.approx(
        prediction_difference_reference(a, b, "l2"), rel=1e-5
    )
    huge = np.array([3e38, -3e38], np.float32)  # the true value 6e38 exceeds float32: inf, not NaN
    assert float(prediction_difference(huge, -huge, "l2")) == np.inf


def test_relative_of_large_non_negative_predictions_is_finite():
    a = np.array([1e20, 3e38, 1.0], np.float32)
    b = np.array([5e19, 1.5e38, 1.5], np.float32)  # a + b = 4.5e38 overflows float32
    assert float(prediction_difference(a, b)) == pytest.approx(
        prediction_difference_reference(a, b, "relative"), rel=1e-5
    )


def test_l2_metric_streams_without_overflow():
    metric = PredictionDifference(kind="l2")
    metric.update_state(np.array([0.5, 1.0]), np.array([0.25, 2.0]))
    metric.update_state(np.array([1e20, -1e20]), np.array([-1e20, 1e20]))
    a = np.array([0.5, 1.0, 1e20, -1e20])
    b = np.array([0.25, 2.0, -1e20, 1e20])
    assert float(metric.result()) == pytest.approx(
        prediction_difference_reference(b, a, "l2"), rel=1e-5
    )
    metric.reset_state()
    metric.update_state(np.array([0.5, 1.0]), np.array([0.25, 2.0]))
    assert float(metric.result()) == pytest.approx(
        prediction_difference_reference([0.25, 2.0], [0.5, 1.0], "l2"), rel=1e-6
    )


def test_no_examples_give_zero_for_both_functions():
    assert float(prediction_difference(np.zeros([0]), np.zeros([0]))) == 0.0
    assert float(prediction_difference(np.zeros([0]), np.zeros([0]), "l2")) == 0.0
    assert float(topk_churn(np.zeros([0, 4]), np.zeros([0, 4]), k=2)) == 0.0


@pytest.mark.parametrize(
    "weights, message",
    [
        ([-1.0, 2.0], r"`sample_weight` must be >= 0"),
        ([1.0, 2.0, 3.0], r"`sample_weight` needs one weight per example"),
        ([1.0, np.nan], r"`sample_weight` must be finite"),
    ],
)
def test_topk_churn_and_the_metric_check_weights_as_the_function_does(weights, message):
    scores = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], np.float32)
    with pytest.raises(ValueError, match=message):
        prediction_difference([0.1, 0.2], [0.2, 0.2], sample_weight=weights)
    with pytest.raises(ValueError, match=message):
        topk_churn(scores, scores[::-1], k=1, sample_weight=weights)
    with pytest.raises(ValueError, match=message):
        PredictionDifference().update_state(
            np.array([0.1, 0.2]), np.array([0.2, 0.2]), sample_weight=weights
        )


def test_negative_weights_fail_inside_a_graph_too():
    @tf.function
    def churn(weights):
        scores = tf.constant([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
        return topk_churn(scores, scores[::-1], k=1, sample_weight=weights)

    with pytest.raises(tf.errors.InvalidArgumentError, match="sample_weight"):
        churn(tf.constant([-1.0, 2.0]))
    assert float(churn(tf.constant([1.0, 3.0]))) == pytest.approx(1.0)  # top-1 differs in both


def test_metric_weights_one_per_example_or_one_for_the_batch():
    metric = PredictionDifference(kind="absolute")
    metric.update_state(np.array([0.2, 0.4]), np.array([0.3, 0.4]), sample_weight=[3.0, 1.0])
    assert float(metric.result()) == pytest.approx(0.3 / 4, rel=1e-6)
    metric.update_state(np.array([0.0]), np.array([1.0]), sample_weight=2.0)
    assert float(metric.result()) == pytest.approx((0.3 + 2.0) / 6, rel=1e-6)


def test_numpy_integers_are_accepted_as_k():
    scores_a = [[0.9, 0.8, 0.1, 0.0]]
    scores_b = [[0.9, 0.0, 0.8, 0.1]]
    assert float(topk_churn(scores_a, scores_b, k=np.int64(2))) == pytest.approx(0.5)
    with pytest.raises(TypeError, match=r"`k` must be an integer"):
        topk_churn(scores_a, scores_b, k=2.0)

"""sampled_softmax_cross_entropy against tf.nn.sampled_softmax_loss and a numpy formula."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import make_inputs
from references import proposal_reference, sampled_softmax_reference

from tfsmooth.losses import sampled_softmax_cross_entropy
from tfsmooth.losses.sampled_softmax import draw_candidates

N, C, D, S = 64, 500, 16, 50
SEED = (5, 6)


def sampling_options(rng):
    return ["uniform", "log_uniform", rng.integers(1, 50, size=C).astype(np.float64)]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_equals_tf_nn_sampled_softmax_loss_on_the_same_samples(rng, which):
    queries, items, labels = make_inputs(rng)
    sampling = sampling_options(rng)[which]
    weights = sampling if isinstance(sampling, str) else sampling / sampling.sum()
    ids, _ = draw_candidates(weights if not isinstance(sampling, str) else sampling, C, S, SEED)
    q = proposal_reference(sampling, C)
    expected = tf.nn.sampled_softmax_loss(
        weights=items,
        biases=tf.zeros([C]),
        labels=labels[:, None].astype(np.int64),
        inputs=queries,
        num_sampled=S,
        num_classes=C,
        sampled_values=(
            tf.cast(ids, tf.int64),
            tf.constant(S * q[labels][:, None], tf.float32),
            tf.constant(S * q[ids.numpy()], tf.float32),
        ),
        remove_accidental_hits=True,
    )
    loss = sampled_softmax_cross_entropy(
        queries, items, labels, num_sampled=S, sampling=sampling, seed=SEED
    )
    np.testing.assert_allclose(float(loss), float(tf.reduce_mean(expected)), rtol=1e-5)


def test_without_log_q_and_hits_matches_numpy(rng):
    queries, items, labels = make_inputs(rng)
    mask = rng.random(N) > 0.3
    ids = draw_candidates("log_uniform", C, S, SEED)[0].numpy()
    labels[:3] = ids[:3]  # make sure some accidental hits exist
    loss = sampled_softmax_cross_entropy(
        queries,
        items,
        labels,
        num_sampled=S,
        log_q_correction=False,
        remove_accidental_hits=False,
        mask=mask,
        seed=SEED,
    )
    q, w = queries.astype(np.float64), items.astype(np.float64)
    logits = np.concatenate([np.sum(q * w[labels], 1)[:, None], q @ w[ids].T], axis=1)
    top = logits.max(1, keepdims=True)
    losses = top[:, 0] + np.log(np.exp(logits - top).sum(1)) - logits[:, 0]
    np.testing.assert_allclose(float(loss), losses[mask].mean(), rtol=1e-5)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_sampler_draws_from_the_proposal_reference(rng, which):
    c = 20
    sampling = ["uniform", "log_uniform", np.arange(c, dtype=np.float64) + 1.0][which]
    weights = sampling if isinstance(sampling, str) else sampling / sampling.sum()
    ids, log_probability = draw_candidates(weights, c, 200_000, (1, 2))
    frequencies = np.bincount(ids.numpy(), minlength=c) / 200_000
    expected = proposal_reference(sampling, c)
    np.testing.assert_allclose(frequencies, expected, atol=4e-3)
    np.testing.assert_allclose(np.exp(log_probability(tf.range(c))), expected, rtol=1e-9)


def test_gradients_are_sparse_and_right(rng):
    queries, items, labels = make_inputs(rng, dtype=np.float64)
    q, w = tf.constant(queries), tf.Variable(items)
    with tf.GradientTape() as tape:
        tape.watch(q)
        loss = sampled_softmax_cross_entropy(q, w, labels, num_sampled=S, seed=SEED)
    grad_q, grad_w = tape.gradient(loss, [q, w])
    assert isinstance(grad_w, tf.IndexedSlices)
    ids = draw_candidates("log_uniform", C, S, SEED)[0].numpy()
    assert set(grad_w.indices.numpy().tolist()) <= set(ids.tolist()) | set(labels.tolist())
    # Directional derivative of the numpy formula with the same samples.
    p = proposal_reference("log_uniform", C)

    def reference(qq, ww):
        return sampled_softmax_reference(qq, ww, labels, ids, p)

    np.testing.assert_allclose(float(loss), reference(queries, items), rtol=1e-10)
    dq, dw = rng.normal(size=queries.shape), rng.normal(size=items.shape)
    eps = 1e-6
    numeric = (
        reference(queries + eps * dq, items + eps * dw)
        - reference(queries - eps * dq, items - eps * dw)
    ) / (2 * eps)
    analytic = np.sum(grad_q * dq) + np.sum(tf.convert_to_tensor(grad_w) * dw)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_half_precision_and_xla(rng):
    queries, items, labels = make_inputs(rng)
    half = sampled_softmax_cross_entropy(
        tf.cast(queries, tf.bfloat16), tf.cast(items, tf.bfloat16), labels, num_sampled=S, seed=SEED
    )
    assert half.dtype == tf.float32 and np.isfinite(float(half))
    xla = tf.function(
        lambda q, w, y: sampled_softmax_cross_entropy(q, w, y, num_sampled=S, seed=SEED),
        jit_compile=True,
    )
    eager = sampled_softmax_cross_entropy(queries, items, labels, num_sampled=S, seed=SEED)
    np.testing.assert_allclose(float(xla(queries, items, labels)), float(eager), rtol=1e-5)


def test_a_label_the_proposal_never_draws_is_finite(rng):
    queries, items, labels = make_inputs(rng)
    weights = np.ones(C)
    weights[labels[0]] = 0.0
    loss = sampled_softmax_cross_entropy(queries, items, labels, num_sampled=S, sampling=weights)
    assert np.isfinite(float(loss))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"num_sampled": 0},
            ValueError,
            "`num_sampled` must be an integer >= 1. Received: num_sampled=0",
        ),
        ({"num_sampled": 2.0}, TypeError, "`num_sampled` must be an integer"),
        ({"sampling": "zipf"}, ValueError, "`sampling` must be one of"),
        ({"sampling": np.ones((2, 2))}, ValueError, "must be a non-empty 1-D array"),
        ({"sampling": -np.ones(C)}, ValueError, "must be finite, >= 0 and not all 0"),
        ({"sampling": np.ones(C + 1)}, ValueError, "one entry per item. Received: 501 weights"),
        ({"log_q_correction": "yes"}, TypeError, "`log_q_correction` must be True or False"),
        ({"seed": 1.5}, TypeError, "`seed` must be None, an int"),
        ({"seed": -1}, ValueError, "`seed` must be an integer >= 0.*Received: seed=-1"),
    ],
)
def test_bad_options(rng, kwargs, error, message):
    queries, items, labels = make_inputs(rng)
    with pytest.raises(error, match=message):
        sampled_softmax_cross_entropy(queries, items, labels, **kwargs)

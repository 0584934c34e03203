"""scalable_cross_entropy against a direct numpy implementation of the SCE algorithm.

With a stateless seed pair the bucket centres are, by contract, ``tf.random.stateless_normal`` of a
documented shape, so the reference draws the same centres and then does everything else -- the
selection by inner product, the bucket logits, the masking of positives, the max over buckets and
the mean -- in float64 numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from helpers import make_inputs
from references import SCE_SEED, full_ce_reference, sce_reference

from tfsmooth.losses import scalable_cross_entropy

N, C, D = 64, 500, 16
SEED = SCE_SEED  # the reference's default seed


def test_default_sizes_match_the_reference(rng):
    queries, items, labels = make_inputs(rng)
    loss = scalable_cross_entropy(queries, items, labels, bucket_size_y=32, seed=SEED)
    expected, (x_sets, _, counted) = sce_reference(queries, items, labels, bucket_size_y=32)
    assert len(x_sets) == 16 and all(len(s) == 16 for s in x_sets)  # 2 sqrt(64)
    assert counted.sum() > N // 2
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.parametrize("mix_x", [False, True])
def test_masked_defaults_and_mix_match_the_reference(rng, mix_x):
    queries, items, labels = make_inputs(rng)
    mask = rng.random(N) > 0.4
    loss = scalable_cross_entropy(
        queries, items, labels, bucket_size_y=40, mask=mask, mix_x=mix_x, seed=SEED
    )
    expected, (x_sets, _, counted) = sce_reference(
        queries, items, labels, bucket_size_y=40, mask=mask, mix_x=mix_x
    )
    assert len(x_sets) == math.floor(2 * math.sqrt(mask.sum()))
    assert not np.any(counted & ~mask)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_explicit_sizes_match_the_reference(rng):
    queries, items, labels = make_inputs(rng)
    kwargs = dict(n_buckets=5, bucket_size_x=9, bucket_size_y=17)
    loss = scalable_cross_entropy(queries, items, labels, seed=SEED, **kwargs)
    expected, (_, _, counted) = sce_reference(queries, items, labels, **kwargs)
    assert counted.sum() < 45  # 5 x 9 slots, some queries in several buckets, the rest dropped
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_sizes_beyond_what_exists_are_clipped(rng):
    queries, items, labels = make_inputs(rng, n=10, c=30)
    loss = scalable_cross_entropy(
        queries, items, labels, n_buckets=3, bucket_size_x=500, bucket_size_y=4096, seed=SEED
    )
    # Every bucket then holds every query and every item: the full cross-entropy.
    np.testing.assert_allclose(float(loss), full_ce_reference(queries, items, labels)[0], rtol=1e-5)


def test_buckets_covering_everything_equal_full_cross_entropy(rng):
    queries, items, labels = make_inputs(rng, dtype=np.float64)
    mask = rng.random(N) > 0.3
    q, w = tf.constant(queries), tf.Variable(items)
    with tf.GradientTape() as tape:
        tape.watch(q)
        loss = scalable_cross_entropy(
            q, w, labels, n_buckets=1, bucket_size_x=N, bucket_size_y=C, mask=mask, seed=SEED
        )
    grad_q, grad_w = tape.gradient(loss, [q, w])
    expected, expected_q, expected_w = full_ce_reference(queries, items, labels, mask)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-10)
    np.testing.assert_allclose(grad_q, expected_q, atol=1e-12)
    np.testing.assert_allclose(tf.convert_to_tensor(grad_w), expected_w, atol=1e-12)


def test_gradients_match_finite_differences_of_the_reference(rng):
    """Directional derivatives of the numpy reference with the selection held fixed (float64)."""
    queries, items, labels = make_inputs(rng, dtype=np.float64)
    kwargs = dict(n_buckets=6, bucket_size_x=12, bucket_size_y=24)
    q, w = tf.constant(queries), tf.Variable(items)
    with tf.GradientTape() as tape:
        tape.watch(q)
        loss = scalable_cross_entropy(q, w, labels, seed=SEED, **kwargs)
    grad_q, grad_w = tape.gradient(loss, [q, w])
    assert isinstance(grad_w, tf.IndexedSlices)
    grad_w = tf.convert_to_tensor(grad_w).numpy()
    _, (x_sets, y_sets, counted) = sce_reference(queries, items, labels, **kwargs)

    def fixed_selection_loss(qq, ww):
        best = np.full(N, -np.inf)
        for chosen_x, chosen_y in zip(x_sets, y_sets):
            for i in chosen_x:
                negatives = [j for j in sorted(chosen_y) if j != labels[i]]
                logits = np.concatenate([qq[i] @ ww[negatives].T, [qq[i] @ ww[labels[i]]]])
                top = logits.max()
                best[i] = max(best[i], top + np.log(np.exp(logits - top).sum()) - logits[-1])
        return best[counted].mean()

    eps = 1e-6
    for _ in range(4):
        dq, dw = rng.normal(size=queries.shape), rng.normal(size=items.shape)
        numeric = (
            fixed_selection_loss(queries + eps * dq, items + eps * dw)
            - fixed_selection_loss(queries - eps * dq, items - eps * dw)
        ) / (2 * eps)
        analytic = np.sum(grad_q * dq) + np.sum(grad_w * dw)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_item_gradient_is_sparse_and_touches_only_used_rows(rng):
    queries, items, labels = make_inputs(rng)
    w = tf.Variable(items)

    @tf.function
    def graph_gradient():
        with tf.GradientTape() as tape:
            loss = scalable_cross_entropy(queries, w, labels, bucket_size_y=8)
        grad = tape.gradient(loss, w)
        assert isinstance(grad, tf.IndexedSlices)
        return tf.convert_to_tensor(grad)

    with tf.GradientTape() as tape:
        loss = scalable_cross_entropy(queries, w, labels, bucket_size_y=8, seed=SEED)
    grad = tape.gradient(loss, w)
    assert isinstance(grad, tf.IndexedSlices)
    _, (_, y_sets, _) = sce_reference(queries, items, labels, bucket_size_y=8)
    allowed = set().union(*y_sets) | set(labels.tolist())
    assert set(grad.indices.numpy().tolist()) <= allowed
    touched = np.flatnonzero(np.abs(tf.convert_to_tensor(grad).numpy()).sum(axis=1))
    assert len(touched) < C // 2
    assert np.all(np.isfinite(graph_gradient()))


def test_inside_xla_with_a_dynamic_batch(rng):
    queries, items, labels = make_inputs(rng)
    w = tf.Variable(items)

    @tf.function(
        jit_compile=True,
        input_signature=[tf.TensorSpec([None, D]), tf.TensorSpec([None], tf.int32)],
    )
    def step(q, y):
        with tf.GradientTape() as tape:
            loss = scalable_cross_entropy(q, w, y, bucket_size_y=32, seed=SEED)
        return loss, tf.convert_to_tensor(tape.gradient(loss, w))

    for n in (64, 40):
        loss, grad = step(queries[:n], labels[:n])
        expected = sce_reference(queries[:n], items, labels[:n], bucket_size_y=32)[0]
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
        assert np.all(np.isfinite(grad))


def test_seeds(rng):
    queries, items, labels = make_inputs(rng)
    args = (queries, items, labels)
    pair = [float(scalable_cross_entropy(*args, bucket_size_y=8, seed=SEED)) for _ in range(2)]
    assert pair[0] == pair[1]
    tf.random.set_seed(1)
    first = [float(scalable_cross_entropy(*args, bucket_size_y=8, seed=7)) for _ in range(3)]
    tf.random.set_seed(1)
    again = [float(scalable_cross_entropy(*args, bucket_size_y=8, seed=7)) for _ in range(3)]
    assert first == again  # reproducible under the global seed
    assert len(set(first)) == 3  # fresh centres at every call


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_inputs(rng, dtype):
    queries, items, labels = make_inputs(rng)
    q, w = tf.cast(queries, dtype), tf.Variable(tf.cast(items, dtype))
    with tf.GradientTape() as tape:
        tape.watch(q)
        loss = scalable_cross_entropy(q, w, labels, bucket_size_y=32, seed=SEED)
    grad_q, grad_w = tape.gradient(loss, [q, w])
    assert loss.dtype == tf.float32
    assert grad_q.dtype == dtype and grad_w.values.dtype == dtype
    rounded = [tf.cast(t, tf.float32).numpy() for t in (q, w)]
    expected = sce_reference(*rounded, labels, bucket_size_y=32)[0]
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


def test_no_nan_for_huge_inputs_empty_masks_or_garbage_padding(rng):
    queries, items, labels = make_inputs(rng, scale=1e4)
    w = tf.Variable(items)
    with tf.GradientTape() as tape:
        loss = scalable_cross_entropy(queries, w, labels, bucket_size_y=32, seed=SEED)
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(tf.convert_to_tensor(tape.gradient(loss, w))))
    garbage = np.full_like(queries, np.nan)
    mask = np.zeros(N, bool)
    assert float(scalable_cross_entropy(garbage, items, labels, mask=mask)) == 0.0
    mask[:5] = True
    garbage[:5] = queries[:5] / 1e4
    loss = scalable_cross_entropy(garbage, items, labels, mask=mask, bucket_size_y=32, seed=SEED)
    expected = sce_reference(garbage, items, labels, bucket_size_y=32, mask=mask)[0]
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_bad_labels(rng):
    queries, items, labels = make_inputs(rng)
    wrong = labels.copy()
    wrong[0] = C
    with pytest.raises(ValueError, match=rf"in \[0, {C}\)\. Received: labels containing {C}"):
        scalable_cross_entropy(queries, items, wrong)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`labels` must be item indices"):
        tf.function(scalable_cross_entropy)(queries, items, wrong)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"n_buckets": 0},
            ValueError,
            "`n_buckets` must be an integer >= 1. Received: n_buckets=0",
        ),
        ({"bucket_size_x": -3}, ValueError, "Received: bucket_size_x=-3"),
        ({"bucket_size_y": 2.0}, TypeError, "`bucket_size_y` must be an integer"),
        ({"bucket_size_y": None}, TypeError, "Received: bucket_size_y=None"),
        ({"seed": -1}, ValueError, "`seed` must be an integer >= 0.*Received: seed=-1"),
        ({"mix_x": 1}, TypeError, "`mix_x` must be True or False. Received: mix_x=1"),
        ({"seed": "a"}, TypeError, "`seed` must be None, an int"),
        ({"seed": (1, 2, 3)}, TypeError, "`seed` must be None, an int"),
    ],
)
def test_bad_options(rng, kwargs, error, message):
    queries, items, labels = make_inputs(rng)
    with pytest.raises(error, match=message):
        scalable_cross_entropy(queries, items, labels, **kwargs)

"""catalog_cross_entropy: chunked and materialised against a float64 numpy softmax cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import make_inputs
from references import full_ce_reference

from tfsmooth.losses import catalog_cross_entropy

N, C, D = 64, 500, 16


def loss_and_grads(fn, queries, items, labels, **kwargs):
    q, w = tf.constant(queries), tf.Variable(items)
    with tf.GradientTape() as tape:
        tape.watch(q)
        loss = fn(q, w, labels, **kwargs)
    grad_q, grad_w = tape.gradient(loss, [q, w])
    return loss, grad_q, tf.convert_to_tensor(grad_w)


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64, 499, 500, 4096])
def test_loss_and_gradients_equal_the_materialised_reference(rng, chunk_size):
    queries, items, labels = make_inputs(rng)
    mask = rng.random(N) > 0.2
    loss, grad_q, grad_w = loss_and_grads(
        catalog_cross_entropy,
        queries,
        items,
        labels,
        chunk_size=chunk_size,
        mask=mask,
        temperature=0.7,
    )
    expected, expected_q, expected_w = full_ce_reference(queries, items, labels, mask, 0.7)
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # 1e-5 relative to the gradient's scale (entries near 0 are compared at that scale).
    np.testing.assert_allclose(grad_q, expected_q, rtol=1e-5, atol=1e-5 * np.abs(expected_q).max())
    np.testing.assert_allclose(grad_w, expected_w, rtol=1e-5, atol=1e-5 * np.abs(expected_w).max())


def test_eager_graph_and_xla_agree(rng):
    queries, items, labels = make_inputs(rng)
    expected, expected_q, expected_w = full_ce_reference(queries, items, labels)

    def step(q, w, y):
        with tf.GradientTape() as tape:
            tape.watch([q, w])
            loss = catalog_cross_entropy(q, w, y, chunk_size=64)
        return (loss, *tape.gradient(loss, [q, w]))

    for fn in (step, tf.function(step), tf.function(step, jit_compile=True)):
        loss, grad_q, grad_w = fn(tf.constant(queries), tf.constant(items), tf.constant(labels))
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
        np.testing.assert_allclose(grad_q, expected_q, atol=1e-5 * np.abs(expected_q).max())
        np.testing.assert_allclose(grad_w, expected_w, atol=1e-5 * np.abs(expected_w).max())


def test_dynamic_batch_size_inside_a_function(rng):
    queries, items, labels = make_inputs(rng)
    fn = tf.function(
        lambda q, y: catalog_cross_entropy(q, tf.constant(items), y, chunk_size=64),
        input_signature=[tf.TensorSpec([None, D]), tf.TensorSpec([None], tf.int32)],
    )
    for n in (64, 10):
        np.testing.assert_allclose(
            float(fn(queries[:n], labels[:n])),
            full_ce_reference(queries[:n], items, labels[:n])[0],
            rtol=1e-5,
        )


def test_leading_dimensions_and_trailing_label_axis(rng):
    queries, items, labels = make_inputs(rng)
    mask = rng.random(N) > 0.5
    loss = catalog_cross_entropy(
        queries.reshape(4, 16, D),
        items,
        labels.reshape(4, 16, 1),
        chunk_size=100,
        mask=mask.reshape(4, 16).astype(np.float32),
    )
    np.testing.assert_allclose(
        float(loss), full_ce_reference(queries, items, labels, mask)[0], rtol=1e-5
    )


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_inputs_use_float32_logits(rng, dtype):
    queries, items, labels = make_inputs(rng)
    q16, w16 = tf.cast(queries, dtype), tf.Variable(tf.cast(items, dtype))
    with tf.GradientTape() as tape:
        tape.watch(q16)
        loss = catalog_cross_entropy(q16, w16, labels, chunk_size=64)
    grad_q, grad_w = tape.gradient(loss, [q16, w16])
    assert loss.dtype == tf.float32
    assert grad_q.dtype == dtype and grad_w.dtype == dtype
    # The reference sees the same rounded inputs; only the float32 arithmetic differs.
    rounded_q = tf.cast(q16, tf.float32).numpy()
    rounded_w = tf.cast(w16, tf.float32).numpy()
    expected, expected_q, _ = full_ce_reference(rounded_q, rounded_w, labels)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(
        tf.cast(grad_q, tf.float32), expected_q, atol=2e-2 * np.abs(expected_q).max()
    )


def test_float64_stays_float64(rng):
    queries, items, labels = make_inputs(rng, dtype=np.float64)
    loss = catalog_cross_entropy(queries, items, labels, chunk_size=64)
    assert loss.dtype == tf.float64
    np.testing.assert_allclose(
        float(loss), full_ce_reference(queries, items, labels)[0], rtol=1e-12
    )


def test_huge_logits_and_empty_masks_are_finite(rng):
    queries, items, labels = make_inputs(rng, scale=1e4)
    for chunk_size in (None, 64):
        loss, grad_q, grad_w = loss_and_grads(
            catalog_cross_entropy, queries, items, labels, chunk_size=chunk_size
        )
        assert np.isfinite(float(loss))
        assert np.all(np.isfinite(grad_q)) and np.all(np.isfinite(grad_w))
        np.testing.assert_allclose(
            float(loss), full_ce_reference(queries, items, labels)[0], rtol=1e-5
        )
        # Nothing valid: 0 and zero gradients, not NaN -- even with garbage in the masked rows.
        garbage = np.full_like(queries, np.nan)
        loss, grad_q, grad_w = loss_and_grads(
            catalog_cross_entropy,
            garbage,
            items,
            labels,
            chunk_size=chunk_size,
            mask=np.zeros(N, bool),
        )
        assert float(loss) == 0.0
        assert not np.any(grad_q) and not np.any(grad_w)


def test_bad_labels_raise_eagerly_and_in_graphs(rng):
    queries, items, labels = make_inputs(rng)
    for bad in (C, -1):
        wrong = labels.copy()
        wrong[3] = bad
        with pytest.raises(
            ValueError, match=rf"`labels` must be item indices in \[0, {C}\).*{bad}"
        ):
            catalog_cross_entropy(queries, items, wrong, chunk_size=64)
        graph = tf.function(lambda q, w, y: catalog_cross_entropy(q, w, y, chunk_size=64))
        with pytest.raises(tf.errors.InvalidArgumentError, match="`labels` must be item indices"):
            graph(queries, items, wrong)
    # A bad label at a masked position does not count.
    wrong = labels.copy()
    wrong[3] = C + 5
    mask = np.ones(N, bool)
    mask[3] = False
    np.testing.assert_allclose(
        float(catalog_cross_entropy(queries, items, wrong, mask=mask)),
        full_ce_reference(queries, items, labels, mask)[0],
        rtol=1e-5,
    )


def test_inside_xla_bad_labels_are_left_out_not_nan(rng):
    queries, items, labels = make_inputs(rng)
    wrong = labels.copy()
    wrong[:5] = [C, C + 1, -1, -7, 10**6]
    xla = tf.function(
        lambda q, w, y: catalog_cross_entropy(q, w, y, chunk_size=64), jit_compile=True
    )
    mask = np.arange(N) >= 5
    np.testing.assert_allclose(
        float(xla(queries, items, wrong)),
        full_ce_reference(queries, items, labels, mask)[0],
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"chunk_size": 0},
            ValueError,
            "`chunk_size` must be an integer >= 1. Received: chunk_size=0",
        ),
        ({"chunk_size": 2.5}, TypeError, "`chunk_size` must be an integer or None"),
        ({"chunk_size": "8"}, TypeError, "Received: chunk_size='8'"),
        ({"temperature": 0.0}, ValueError, "`temperature` must be > 0. Received: temperature=0.0"),
        ({"temperature": float("nan")}, ValueError, "Received: temperature=nan"),
        ({"temperature": "1"}, TypeError, "`temperature` must be a number"),
        # Below the smallest normal float32, 1 / temperature overflows: refused, not computed.
        ({"temperature": 1e-45}, ValueError, "`temperature` must be representable in float32"),
        (
            {"temperature": 1e-39},
            ValueError,
            "representable in float32 .*Received: temperature=1e-39",
        ),
    ],
)
def test_bad_options(rng, kwargs, error, message):
    queries, items, labels = make_inputs(rng)
    with pytest.raises(error, match=message):
        catalog_cross_entropy(queries, items, labels, **kwargs)


def test_bad_shapes_and_dtypes(rng):
    queries, items, labels = make_inputs(rng)
    with pytest.raises(ValueError, match=r"same last dimension d.*queries.shape=\(64, 16\)"):
        catalog_cross_entropy(queries, items[:, :8], labels)
    with pytest.raises(ValueError, match="`labels` must have the shape of `queries`"):
        catalog_cross_entropy(queries, items, labels[:10])
    with pytest.raises(ValueError, match="`mask` must have the shape of `labels`"):
        catalog_cross_entropy(queries, items, labels, mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="`item_embeddings` must have shape \\[num_items, d\\]"):
        catalog_cross_entropy(queries, items[None], labels)
    with pytest.raises(TypeError, match="`labels` must be integer item indices"):
        catalog_cross_entropy(queries, items, labels.astype(str))
    with pytest.raises(TypeError, match="Received: labels=None"):
        catalog_cross_entropy(queries, items, None)
    with pytest.raises(TypeError, match="floating-point `queries`"):
        catalog_cross_entropy(queries.astype(np.int32), items, labels)

"""The catalog losses' contract at the edges: NaN/Inf inputs, float labels, empty batches, bad args.

- A valid query or an item row the loss reads that is NaN or infinite gives a NaN loss, never a
  finite one while the gradients are not (issue 11): functions, classes and ``fit``.
- Float labels are accepted only with whole values; 2.7 raises naming ``labels`` / ``y_true``.
- An empty batch gives 0 and zero gradients.
- Bad arguments raise ``TypeError``/``ValueError`` naming the argument; numpy scalars are accepted.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import make_inputs
from references import full_ce_reference

from tfsmooth._keras import keras
from tfsmooth.losses import (
    CatalogCrossEntropy,
    SampledSoftmaxCrossEntropy,
    ScalableCrossEntropy,
    catalog_cross_entropy,
    sampled_softmax_cross_entropy,
    scalable_cross_entropy,
)

N, C, D = 32, 120, 8

FUNCTIONS = {
    "catalog": (catalog_cross_entropy, {}),
    "catalog_chunked": (catalog_cross_entropy, {"chunk_size": 16}),
    "scalable": (scalable_cross_entropy, {"seed": (1, 2)}),
    # Two small buckets: most queries are chosen by none (the case: a finite 3.96).
    "scalable_small": (
        scalable_cross_entropy,
        {"n_buckets": 2, "bucket_size_x": 4, "bucket_size_y": 8, "seed": (1, 2)},
    ),
    "scalable_mix": (scalable_cross_entropy, {"mix_x": True, "seed": (1, 2)}),
    "sampled": (sampled_softmax_cross_entropy, {"num_sampled": 16, "seed": (1, 2)}),
}

CLASSES = {
    "catalog": lambda table: CatalogCrossEntropy(table),
    "catalog_chunked": lambda table: CatalogCrossEntropy(table, chunk_size=16),
    "scalable": lambda table: ScalableCrossEntropy(table, seed=1),
    "scalable_small": lambda table: ScalableCrossEntropy(
        table, n_buckets=2, bucket_size_x=4, bucket_size_y=8, seed=1
    ),
    "sampled": lambda table: SampledSoftmaxCrossEntropy(table, num_sampled=16, seed=1),
}


def inputs(rng):
    return make_inputs(rng, n=N, c=C, d=D)


def corrupt(queries, items, labels, where, value):
    """A non-finite value in query 3, or in the row of query 3's label (every loss reads it)."""
    queries, items = queries.copy(), items.copy()
    if where == "query":
        queries[3, 1] = value
    else:
        items[labels[3], 1] = value
    return queries, items


def gradients(loss_fn, queries, items):
    q, w = tf.Variable(queries), tf.Variable(items)
    with tf.GradientTape() as tape:
        loss = loss_fn(q, w)
    grad_q, grad_w = tape.gradient(loss, [q, w])
    return float(loss), grad_q.numpy(), tf.convert_to_tensor(grad_w).numpy()


def assert_consistent(loss, *grads):
    """A finite loss has finite gradients: a loss never hides a NaN update."""
    if np.isfinite(loss):
        for grad in grads:
            assert np.all(np.isfinite(grad)), (loss, grad)


@pytest.mark.parametrize("where", ["query", "item"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_a_non_finite_input_gives_a_nan_loss(rng, name, where, value):
    fn, kwargs = FUNCTIONS[name]
    queries, items, labels = inputs(rng)
    bad_q, bad_w = corrupt(queries, items, labels, where, value)
    loss, grad_q, grad_w = gradients(lambda q, w: fn(q, w, labels, **kwargs), bad_q, bad_w)
    assert np.isnan(loss), (name, where, value, loss)
    # The clean inputs give a finite loss with finite gradients.
    loss, grad_q, grad_w = gradients(lambda q, w: fn(q, w, labels, **kwargs), queries, items)
    assert np.isfinite(loss)
    assert_consistent(loss, grad_q, grad_w)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_non_finite_inputs_give_nan_inside_tf_function(rng, name):
    fn, kwargs = FUNCTIONS[name]
    queries, items, labels = inputs(rng)
    graph = tf.function(lambda q, w: fn(q, w, labels, **kwargs))
    bad_q, bad_w = corrupt(queries, items, labels, "query", np.nan)
    assert np.isnan(float(graph(bad_q, items)))
    bad_q, bad_w = corrupt(queries, items, labels, "item", np.nan)
    assert np.isnan(float(graph(queries, bad_w)))


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_a_masked_nan_query_reaches_neither_loss_nor_gradients(rng, name):
    fn, kwargs = FUNCTIONS[name]
    queries, items, labels = inputs(rng)
    bad_q, _ = corrupt(queries, items, labels, "query", np.nan)
    mask = np.arange(N) != 3
    loss, grad_q, grad_w = gradients(
        lambda q, w: fn(q, w, labels, mask=mask, **kwargs), bad_q, items
    )
    assert np.isfinite(loss)
    assert_consistent(loss, grad_q, grad_w)


def test_sampled_softmax_ignores_a_nan_row_it_never_reads(rng):
    """Sparse: rows neither a label nor drawn cannot reach the loss or the gradients."""
    queries, items, labels = inputs(rng)
    sampled = np.arange(0, C, 2)
    weights = np.zeros(C)
    weights[sampled] = 1.0
    unread = 1 + 2 * np.setdiff1d(np.arange(C // 2), labels // 2)[0]
    assert unread not in labels and unread % 2 == 1
    items[unread] = np.nan
    loss, grad_q, grad_w = gradients(
        lambda q, w: sampled_softmax_cross_entropy(
            q, w, labels, num_sampled=16, sampling=weights, seed=(1, 2)
        ),
        queries,
        items,
    )
    assert np.isfinite(loss)
    assert_consistent(loss, grad_q, grad_w)


@pytest.mark.parametrize("where", ["query", "item"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_loss_classes_give_nan_for_non_finite_inputs(rng, name, where):
    queries, items, labels = inputs(rng)
    bad_q, bad_w = corrupt(queries, items, labels, where, np.nan)
    variable = tf.Variable(bad_w)
    loss = CLASSES[name](variable)
    with tf.GradientTape() as tape:
        q = tf.constant(bad_q)
        tape.watch(q)
        value = loss(labels, q)
    assert np.isnan(float(value))
    none = CLASSES[name](variable)
    none.reduction = "none"
    per_query = none(labels, bad_q).numpy()
    assert np.isnan(per_query[3])


class TwoTower(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.user_embedding = keras.layers.Embedding(N, D)
        self.item_embedding = keras.layers.Embedding(C, D)
        self.item_embedding.build((None,))

    def call(self, user_ids):
        return self.user_embedding(user_ids)


def one_epoch(make_loss, where, labels=None):
    keras.utils.set_random_seed(0)
    model = TwoTower()
    model(tf.zeros([1], tf.int32))
    users = np.arange(N, dtype=np.int32)
    items = labels if labels is not None else (np.arange(N) * 3 % C).astype(np.int32)
    if where is not None:
        layer = model.user_embedding if where == "query" else model.item_embedding
        values = layer.embeddings.numpy()
        values[5 if where == "query" else int(items[5]), 0] = np.nan
        layer.embeddings.assign(values)
    model.compile(keras.optimizers.SGD(0.1), loss=make_loss(model.item_embedding))
    history = model.fit(users, items, batch_size=N, epochs=1, shuffle=False, verbose=0)
    return history.history["loss"][0], model


@pytest.mark.parametrize("where", ["query", "item"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_fit_reports_nan_when_an_input_is_nan(name, where):
    """The issue: fit reported 1.62 with ScalableCrossEntropy while every weight went NaN."""
    clean, _ = one_epoch(CLASSES[name], None)
    assert np.isfinite(clean)
    loss, _ = one_epoch(CLASSES[name], where)
    assert np.isnan(loss), loss


# ----------------------------------------------------------------------------------------------------
# Labels.


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_whole_float_labels_equal_integer_labels_and_others_raise(rng, name):
    fn, kwargs = FUNCTIONS[name]
    queries, items, labels = inputs(rng)
    as_int = float(fn(queries, items, labels, **kwargs))
    as_float = float(fn(queries, items, labels.astype(np.float32), **kwargs))
    np.testing.assert_allclose(as_float, as_int, rtol=1e-6)
    broken = labels.astype(np.float32)
    broken[4] = 2.7
    with pytest.raises(ValueError, match=r"`labels` must be integer.*Received: labels containing"):
        fn(queries, items, broken, **kwargs)
    with pytest.raises(tf.errors.InvalidArgumentError, match="float labels are accepted only"):
        tf.function(lambda y: fn(queries, items, y, **kwargs))(tf.constant(broken))


@pytest.mark.parametrize("name", list(CLASSES))
def test_loss_classes_refuse_non_integral_labels_naming_y_true(rng, name):
    queries, items, labels = inputs(rng)
    loss = CLASSES[name](tf.constant(items))
    broken = labels.astype(np.float32)
    broken[0] = 2.7
    with pytest.raises(ValueError, match=r"`y_true` must be integer.*2\.7"):
        loss(broken, queries)
    with pytest.raises(TypeError, match="Received: y_true=None"):
        loss(None, queries)


@pytest.mark.parametrize("name", ["catalog", "sampled"])
def test_fit_refuses_non_integral_float_labels(name):
    """fit hands the labels over as floats (tf-keras always): 2.7 must not train as item 2."""
    labels = (np.arange(N) * 3 % C).astype(np.float32)
    whole, _ = one_epoch(CLASSES[name], None, labels=labels)
    assert np.isfinite(whole)
    labels[7] = 2.7
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="y_true"):
        one_epoch(CLASSES[name], None, labels=labels)


# ----------------------------------------------------------------------------------------------------
# Empty batches.


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_an_empty_batch_gives_zero_and_zero_gradients(rng, name, graph):
    fn, kwargs = FUNCTIONS[name]
    _, items, _ = inputs(rng)

    def compute(q, w):
        return fn(q, w, tf.zeros([0], tf.int32), **kwargs)

    loss, grad_q, grad_w = gradients(
        tf.function(compute) if graph else compute, np.zeros((0, D), np.float32), items
    )
    assert loss == 0.0
    assert grad_q.shape == (0, D)
    np.testing.assert_array_equal(grad_w, np.zeros_like(items))


def test_loss_classes_on_an_empty_batch(rng):
    _, items, _ = inputs(rng)
    for make in CLASSES.values():
        value = make(tf.constant(items))(np.zeros(0, np.int32), np.zeros((0, D), np.float32))
        assert float(value) == 0.0


# ----------------------------------------------------------------------------------------------------
# Arguments.


@pytest.mark.parametrize("name", list(CLASSES))
def test_sample_weight_of_the_wrong_shape_names_it(rng, name):
    queries, items, labels = inputs(rng)
    loss = CLASSES[name](tf.constant(items))
    with pytest.raises(
        ValueError,
        match=r"`sample_weight` must broadcast.*sample_weight.shape=\(3,\), labels.shape=\(32,\)",
    ):
        loss(labels, queries, sample_weight=np.ones(3, np.float32))
    # A scalar and a [N, 1] column still broadcast.
    scalar = float(loss(labels, queries, sample_weight=2.0))
    column = float(loss(labels, queries, sample_weight=np.full((N, 1), 2.0, np.float32)))
    assert np.isfinite(scalar) and np.isfinite(column)
    if name.startswith("catalog"):  # the others draw afresh at every call
        np.testing.assert_allclose(scalar, column, rtol=1e-6)


def test_numpy_scalars_are_accepted_as_python_ones():
    scalable = ScalableCrossEntropy(
        seed=np.int64(2), n_buckets=np.int64(3), bucket_size_y=np.int32(16), mix_x=np.True_
    )
    config = scalable.get_config()
    assert (config["seed"], config["n_buckets"], config["bucket_size_y"]) == (2, 3, 16)
    assert config["mix_x"] is True and type(config["seed"]) is int
    sampled = SampledSoftmaxCrossEntropy(
        num_sampled=np.int64(8), seed=np.int64(1), remove_accidental_hits=np.False_
    )
    assert sampled.get_config()["num_sampled"] == 8 and sampled.get_config()["seed"] == 1
    catalog = CatalogCrossEntropy(chunk_size=np.int64(8), temperature=np.float32(0.5))
    assert catalog.get_config()["chunk_size"] == 8 and catalog.get_config()["temperature"] == 0.5


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: ScalableCrossEntropy(seed=-1), ValueError, "`seed` must be an integer >= 0"),
        (lambda: ScalableCrossEntropy(seed=1.0), TypeError, "Received: seed=1.0"),
        (lambda: SampledSoftmaxCrossEntropy(seed=-1), ValueError, "Received: seed=-1"),
        (lambda: ScalableCrossEntropy(mix_x=1), TypeError, "`mix_x` must be True or False"),
        (lambda: CatalogCrossEntropy(temperature=1e-45), ValueError, "representable in float32"),
        (lambda: CatalogCrossEntropy(temperature=True), TypeError, "`temperature` must be a num"),
        (lambda: CatalogCrossEntropy(reduction="mean"), ValueError, "`reduction` must be one of"),
    ],
)
def test_bad_arguments_name_themselves(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("chunk_size", [None, 16])
@pytest.mark.parametrize("temperature", [1e-3, 1e-20, 2e-38])
def test_tiny_temperatures_match_the_float64_reference(rng, chunk_size, temperature):
    """Large logits: both paths equal the float64 loss (the chunked one used to be NaN or -inf)."""
    queries, items, labels = inputs(rng)
    loss = float(
        catalog_cross_entropy(
            queries, items, labels, chunk_size=chunk_size, temperature=temperature
        )
    )
    expected = full_ce_reference(queries, items, labels, temperature=temperature)[0]
    if np.isfinite(expected) and abs(expected) < 3e38 / 10:
        np.testing.assert_allclose(loss, expected, rtol=1e-4)
    else:  # the float32 logits overflow: NaN or infinite, never a finite wrong value
        assert not np.isfinite(loss)

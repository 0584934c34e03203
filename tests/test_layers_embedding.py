"""tfsmooth.layers.Embedding: Keras's Embedding, bit for bit, without reading the whole table."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    assert_config_roundtrip,
    export_saved_model,
    serve_in_clean_process,
    shard_splitter,
)

from tfsmooth._keras import IS_KERAS_3, keras, native_variable
from tfsmooth.layers import Embedding
from tfsmooth.optimizers import ClippyAdagrad, LazyAdam

ROWS, DIM = 1009, 3  # a shape no per-row tensor of a step can have


def _model(layer_class, jit_compile=None, optimizer=None):
    ids = keras.Input((2,), dtype="int32")
    x = layer_class(
        ROWS, DIM, embeddings_initializer=keras.initializers.RandomUniform(seed=1), name="table"
    )(ids)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed=2))(x)
    model = keras.Model(ids, out)
    options = {} if jit_compile is None else {"jit_compile": jit_compile}
    model.compile(
        optimizer=optimizer or ClippyAdagrad(0.1, granularity="row"), loss="mse", **options
    )
    return model


@pytest.mark.parametrize("jit_compile", ["auto", False] if IS_KERAS_3 else [None])
@pytest.mark.parametrize("optimizer", ["clippy_adagrad", "lazy_adam"])
def test_trains_exactly_like_keras_embedding(jit_compile, optimizer, rng):
    ids = rng.integers(0, ROWS, size=(64, 2)).astype("int32")
    ids[:, 1] = ids[:, 0]  # repeated rows in a batch
    targets = rng.normal(size=(64, 1)).astype("float32")
    weights = []
    for layer_class in (keras.layers.Embedding, Embedding):
        make = {"clippy_adagrad": lambda: ClippyAdagrad(0.1), "lazy_adam": lambda: LazyAdam(0.01)}
        model = _model(layer_class, jit_compile, make[optimizer]())
        model.fit(ids, targets, batch_size=16, epochs=2, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for ours, theirs in zip(*weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    table = weights[1][0]
    untouched = np.setdiff1d(np.arange(ROWS), ids)
    initial = np.asarray(_model(Embedding).get_layer("table").embeddings)
    np.testing.assert_array_equal(table[untouched], initial[untouched])


def _whole_table_tensors(layer_class):
    """Ops of a traced forward + gradient + optimizer step that hold a whole-table tensor."""
    layer = layer_class(ROWS, DIM)
    layer.build((None,))
    optimizer = ClippyAdagrad(0.1, granularity="row")
    optimizer.build([layer.embeddings])

    @tf.function
    def step(ids):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(ids)))
        gradients = tape.gradient(loss, [layer.embeddings])
        optimizer.apply_gradients(zip(gradients, [layer.embeddings]))

    graph = step.get_concrete_function(tf.TensorSpec([None], tf.int32)).graph
    return [
        f"{op.type} {tensor.shape}"
        for op in graph.get_operations()
        for tensor in list(op.inputs) + list(op.outputs)
        if tensor.shape.rank and (tensor.shape.num_elements() or 0) >= ROWS
    ]


def test_a_training_step_never_reads_the_whole_table():
    assert not _whole_table_tensors(Embedding)
    if IS_KERAS_3:  # what it goes around: Keras 3's layer reads the table into a tensor
        assert _whole_table_tensors(keras.layers.Embedding)


def test_mask_dtype_and_mixed_precision():
    layer = Embedding(10, 4, mask_zero=True)
    ids = tf.constant([[0, 3, 5]])
    np.testing.assert_array_equal(layer.compute_mask(ids).numpy(), [[False, True, True]])
    np.testing.assert_array_equal(
        layer(tf.cast(ids, tf.float32)).numpy(), tf.gather(layer.embeddings, ids).numpy()
    )
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = Embedding(10, 4)
        assert mixed(ids).dtype == tf.float16 and mixed.embeddings.dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_config_saving_and_serving(rng, tmp_path):
    layer = Embedding(50, 3, mask_zero=True, embeddings_initializer="ones", name="e")
    assert_config_roundtrip(layer)
    model = _model(Embedding)
    ids = rng.integers(0, ROWS, size=(8, 2)).astype("int32")
    model.fit(ids, np.ones((8, 1), "float32"), verbose=0)
    expected = np.asarray(model(ids))
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.get_layer("table"), Embedding)
    np.testing.assert_array_equal(np.asarray(loaded(ids)), expected)
    served = serve_in_clean_process(export_saved_model(model, tmp_path), ids)
    np.testing.assert_allclose(next(iter(served.values())), expected, rtol=1e-6)


def test_a_sharded_table_is_looked_up_shard_by_shard_in_id_order():
    """Uneven shards, 2-D ids, ids out of shard order (tf.gather on a ShardedVariable would
    return the rows grouped by shard, and refuses 2-D ids and uneven shards)."""
    sizes = (6, 4)
    layer = Embedding(
        sum(sizes), 3, embeddings_initializer=keras.initializers.RandomUniform(seed=3)
    )
    with tf.variable_creator_scope(shard_splitter(sizes)):
        layer.build((None,))
    shards = native_variable(layer.embeddings).variables  # Keras 3 wraps the ShardedVariable
    table = np.concatenate([v.numpy() for v in shards])
    ids = np.array([[7, 2, 9], [0, 6, 5]], "int32")
    np.testing.assert_array_equal(layer(ids).numpy(), table[ids])


def test_ragged_ids_fall_back_to_keras():
    layer = Embedding(10, 2, embeddings_initializer="ones")
    ragged = tf.ragged.constant([[1, 2], [3]])
    assert layer(ragged).to_list() == [[[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0]]]

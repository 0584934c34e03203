"""Sparse gradients cost O(rows touched): no whole-table tensor in the traced step, no table copy
under XLA, and Keras's ``fit`` hands embedding gradients to the optimizer as ``IndexedSlices``."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import whole_tensors

from tfsmooth._keras import IS_KERAS_3, keras
from tfsmooth.optimizers import Clippy, ClippyAdagrad, LazyAdam

ROWS, DIM = 1009, 3  # a shape no per-row tensor of a step can have

SPARSE_OPTIMIZERS = {
    "clippy_adagrad_variable": lambda: ClippyAdagrad(0.1),
    "clippy_adagrad_row": lambda: ClippyAdagrad(0.1, granularity="row"),
    "clippy_adagrad_no_statistics": lambda: ClippyAdagrad(0.1, export_clipping_factors=False),
    "lazy_adam": lambda: LazyAdam(0.1),
    "clippy_lazy_adam_variable": lambda: Clippy(LazyAdam(0.1)),
    "clippy_lazy_adam_row": lambda: Clippy(LazyAdam(0.1), granularity="row"),
    "clippy_clippy_adagrad": lambda: Clippy(ClippyAdagrad(0.1), granularity="row"),
}
if IS_KERAS_3:  # tf-keras's SGD keeps a momentum even at 0 and adds it to the whole table
    SPARSE_OPTIMIZERS["clippy_sgd"] = lambda: Clippy(
        keras.optimizers.SGD(0.1), export_clipping_factors=False
    )


def _sparse_step(optimizer, table, jit_compile=False):
    @tf.function(jit_compile=jit_compile)
    def step(values, indices):
        gradient = tf.IndexedSlices(values, indices, tf.constant([ROWS, DIM], tf.int64))
        optimizer.apply_gradients([(gradient, table)])

    return step


def _assert_only_rows_moved(table):
    assert np.all(table.numpy()[[0, 1, 2, 4]] == 1.0)
    assert np.all(table.numpy()[[3, 5]] < 1.0)


@pytest.mark.parametrize("name", sorted(SPARSE_OPTIMIZERS))
def test_sparse_step_does_no_work_proportional_to_the_table(name):
    """No op of a sparse step reads, computes or writes a whole-table tensor, and no conditional
    hides one. (tf-keras's base weight decay of 0 used to read and rewrite the table; Clippy
    used to copy the whole variable around its inner step.)"""
    table = tf.Variable(np.ones((ROWS, DIM), np.float32))
    step = _sparse_step(SPARSE_OPTIMIZERS[name](), table)
    specs = (tf.TensorSpec([None, DIM], tf.float32), tf.TensorSpec([None], tf.int32))
    whole = whole_tensors(step.get_concrete_function(*specs).graph, ROWS)
    assert not whole, whole
    step(tf.ones([2, DIM]), tf.constant([3, 5]))  # and the traced step runs
    _assert_only_rows_moved(table)


@pytest.mark.parametrize("name", sorted(SPARSE_OPTIMIZERS))
def test_sparse_step_sums_repeated_rows_with_static_shapes(name):
    """Repeated rows are summed by one sort, with static shapes, in both flavours: tf-keras's own
    deduplication (``tf.unique``, whose output shape depends on the data) compiles into four
    sorts under XLA."""
    table = tf.Variable(np.ones((ROWS, DIM), np.float32))
    step = _sparse_step(SPARSE_OPTIMIZERS[name](), table)
    specs = (tf.TensorSpec([None, DIM], tf.float32), tf.TensorSpec([None], tf.int32))
    graph = step.get_concrete_function(*specs).graph
    unique = [op.type for op in graph.get_operations() if op.type.startswith("Unique")]
    assert not unique, unique
    step(tf.ones([3, DIM]), tf.constant([3, 5, 3]))
    _assert_only_rows_moved(table)


@pytest.mark.parametrize("name", sorted(SPARSE_OPTIMIZERS))
def test_sparse_step_under_xla_updates_the_table_in_place(name):
    """XLA copies a variable it both reads and writes in place unless the write depends on the
    read (or the write sits in a conditional); the compiled step holds no whole-table copy."""
    table = tf.Variable(np.ones((ROWS, DIM), np.float32))
    step = _sparse_step(SPARSE_OPTIMIZERS[name](), table, jit_compile=True)
    values, indices = tf.ones([2, DIM]), tf.constant([3, 5])
    step(values, indices)
    hlo = step.experimental_get_compiler_ir(values, indices)(stage="optimized_hlo")
    copies = [line for line in hlo.splitlines() if f"[{ROWS},{DIM}]" in line and " copy(" in line]
    assert not copies, copies
    _assert_only_rows_moved(table)


@pytest.mark.parametrize("granularity", ["variable", "row"])
@pytest.mark.parametrize("inner", ["lazy_adam", "clippy_adagrad"])
def test_clippy_reads_and_writes_the_rows_once_around_a_tfsmooth_optimizer(inner, granularity):
    """The inner optimizer hands its write over: one read of the table's rows (the inner
    optimizer's, or Clippy's where the inner one reads none) and one write, as without Clippy."""
    make = {"lazy_adam": lambda: LazyAdam(0.1), "clippy_adagrad": lambda: ClippyAdagrad(0.1)}

    def table_ops(optimizer):
        table = tf.Variable(np.ones((ROWS, DIM), np.float32))
        step = _sparse_step(optimizer, table)
        specs = (tf.TensorSpec([None, DIM], tf.float32), tf.TensorSpec([None], tf.int32))
        graph = step.get_concrete_function(*specs).graph
        handle = next(c for v, c in graph.captures if v is table.handle)
        return sorted(
            op.type
            for op in graph.get_operations()
            if any(t is handle for t in op.inputs)
            and op.type.startswith(("ResourceGather", "ResourceScatter", "ReadVariable"))
        )

    alone = table_ops(make[inner]())
    wrapped = table_ops(Clippy(make[inner](), granularity=granularity))
    assert wrapped.count("ResourceGather") == 1 and "ReadVariableOp" not in wrapped, wrapped
    assert [t for t in wrapped if t != "ResourceGather"] == [
        t for t in alone if t != "ResourceGather"
    ], (alone, wrapped)


JIT = ["auto", False] if IS_KERAS_3 else [None]


@pytest.mark.parametrize("jit_compile", JIT)
@pytest.mark.parametrize("wrapped", [False, True])
def test_fit_hands_embedding_gradients_over_sparse(jit_compile, wrapped):
    """A row looked up once, then never again, keeps its weights and Adam moments through
    ``fit``: LazyAdam changes them only if the gradient reaches it dense (a dense zero gradient
    decays the moments and moves the row on its momentum)."""
    rows, stale = 50, 7
    model = keras.Sequential(
        [
            keras.Input((), dtype="int32"),
            keras.layers.Embedding(rows, 4, name="table"),
            keras.layers.Dense(1),
        ]
    )
    optimizer = Clippy(LazyAdam(0.01), absolute_threshold=1.0) if wrapped else LazyAdam(0.01)
    options = {} if jit_compile is None else {"jit_compile": jit_compile}
    model.compile(optimizer=optimizer, loss="mse", **options)
    model.fit(np.array([stale] * 8, "int32"), np.ones(8, "float32"), batch_size=8, verbose=0)
    table = model.get_layer("table").embeddings
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    state = [v for v in inner.variables if tuple(v.shape) == (rows, 4)]
    assert len(state) == 2  # the table's first and second moments
    weights, moments = table.numpy()[stale].copy(), [np.asarray(v)[stale].copy() for v in state]
    assert np.all(moments[0] != 0)
    others = np.array([i for i in range(rows) if i != stale] * 2, "int32")
    model.fit(others, np.ones(others.size, "float32"), batch_size=16, verbose=0)
    np.testing.assert_array_equal(table.numpy()[stale], weights)
    for before, variable in zip(moments, state):
        np.testing.assert_array_equal(np.asarray(variable)[stale], before)

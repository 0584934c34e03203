"""Clippy optimizers on a sharded table: the shards of one ``ShardedVariable`` are one variable.

Two shards of uneven sizes on the two logical CPUs, wrapped as a ``ShardedVariable``, get the
gradients a sharded lookup produces (dense rows, or one ``IndexedSlices`` per shard with local
indices); a plain variable holding the whole table gets the whole gradient. The table's clipping
factor is the smallest of its shards' (bit for bit the plain variable's), a non-finite gradient
in one shard skips the whole table and counts once, and the numpy references say what one table
(and, to show the difference, a clipping factor per shard) gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import LOGICAL_CPUS
from helpers import whole_tensors
from references import (
    lazy_adam_reference,
    numpy_clipped,
    numpy_clippy_adagrad,
    per_shard_reference,
    split_rows,
)

from tfsmooth._keras import IS_KERAS_3, keras
from tfsmooth.optimizers import (
    Clippy,
    ClippyAdagrad,
    LazyAdam,
    clipping_statistics,
    nonfinite_gradient_count,
)

SIZES = (9, 6)  # uneven shards
DIM = 16  # rows of 16 floats: no tensor here has a scalar tail where CPU rsqrt rounds differently
ROWS = sum(SIZES)
OUTLIER = 11  # a row of the second shard whose gradient is 50 times the others'
SPARSE_ROWS = np.array([0, 3, 3, 8, 9, OUTLIER, 14, 9])  # repeats, both sides of the boundary

OPTIMIZERS = {
    "clippy_adagrad_variable": lambda: ClippyAdagrad(0.1),
    "clippy_adagrad_row": lambda: ClippyAdagrad(0.1, granularity="row"),
    "clippy_lazy_adam": lambda: Clippy(LazyAdam(0.05), variable_relative_threshold=0.1),
    "clippy_sgd": lambda: Clippy(keras.optimizers.SGD(0.5), variable_relative_threshold=0.1),
}


def numpy_weights(name, variables, steps):
    """The numpy reference of optimizer ``name``: the weights after ``steps`` (per step, one
    gradient per variable)."""
    if name.startswith("clippy_adagrad"):
        granularity = name.rsplit("_", 1)[1]
        weights, _, _ = numpy_clippy_adagrad(
            variables, steps, learning_rate=0.1, granularity=granularity
        )
        return weights
    inner = lazy_adam_reference(0.05)[0] if name == "clippy_lazy_adam" else _sgd_step
    weights, _ = numpy_clipped(inner, variables, steps, relative=0.1, absolute=1e-3)
    return weights


def _sgd_step(t, i, w, g):
    return w - 0.5 * g


def make_gradients(rng, kind, count=3):
    """``count`` table gradients, the outlier row 50 times larger: dense, or ``(rows, values)``."""
    gradients = []
    for _ in range(count):
        if kind == "dense":
            gradient = rng.normal(size=(ROWS, DIM))
            gradient[OUTLIER] *= 50
        else:
            values = rng.normal(size=(SPARSE_ROWS.size, DIM))
            values[SPARSE_ROWS == OUTLIER] *= 50
            gradient = (SPARSE_ROWS, values)
        gradients.append(gradient)
    return gradients


def make_tables(initial, devices=LOGICAL_CPUS):
    """The shards (one per device: the two logical CPUs) as a ``ShardedVariable``, and a plain
    variable."""
    parts = split_rows(np.asarray(initial, np.float32), SIZES)
    shards = []
    for n, (part, device) in enumerate(zip(parts, devices)):
        with tf.device(device):
            shards.append(tf.Variable(part, name=f"table/part_{n}"))  # as PSS names them
    sharded = tf.__internal__.distribute.ShardedVariable(shards)
    return sharded, tf.Variable(np.asarray(initial, np.float32), name="table")


def to_tensor(gradient, rows):
    if isinstance(gradient, tuple):
        return tf.IndexedSlices(
            tf.constant(gradient[1], tf.float32),
            tf.constant(gradient[0], tf.int32),
            tf.constant([rows, DIM], tf.int64),
        )
    return tf.constant(gradient, tf.float32)


def make_apply(optimizer, variables, mode):
    """``apply(gradients)``: one ``apply_gradients`` call, eager, in a tf.function or in XLA."""

    def apply(gradients):
        optimizer.apply_gradients(zip(gradients, variables))

    if mode == "eager":
        return apply
    return tf.function(apply, jit_compile=mode == "xla")


def train(name, initial, gradients, mode="graph"):
    """Applies ``gradients`` to the shards (split as a sharded lookup splits them) and to the
    plain table; returns both optimizers, the shards' weights concatenated and the table's."""
    # XLA cannot reach a variable on another device: under XLA both shards sit on one CPU.
    sharded, plain = make_tables(initial, [LOGICAL_CPUS[0]] * 2 if mode == "xla" else LOGICAL_CPUS)
    shards = list(sharded.variables)
    on_shards, on_table = OPTIMIZERS[name](), OPTIMIZERS[name]()
    apply_shards = make_apply(on_shards, shards, mode)
    apply_table = make_apply(on_table, [plain], mode)
    for gradient in gradients:
        apply_shards([to_tensor(g, n) for g, n in zip(split_rows(gradient, SIZES), SIZES)])
        apply_table([to_tensor(gradient, ROWS)])
    got = np.concatenate([s.numpy() for s in sharded.variables], axis=0)
    del sharded  # kept alive until here: the shards find their table through a weak reference
    return on_shards, on_table, got, plain.numpy()


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_sharded_table_equals_the_unsharded_table_bit_for_bit(name, kind, rng):
    initial = rng.normal(size=(ROWS, DIM)) * 0.5
    gradients = make_gradients(rng, kind)
    on_shards, on_table, got, table = train(name, initial, gradients)

    np.testing.assert_array_equal(got, table)
    expected = numpy_weights(name, [initial], [[g] for g in gradients])[0]
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)

    # The test can fail: one factor per shard (the old tf-keras behaviour) gives other weights.
    per_shard = per_shard_reference(
        lambda variables, steps: numpy_weights(name, variables, steps), initial, gradients, SIZES
    )
    if name == "clippy_adagrad_row" and kind == "sparse":  # one factor per row: no difference
        np.testing.assert_allclose(per_shard, expected, rtol=1e-12)
    else:
        assert np.max(np.abs(per_shard - expected)) > 1e-3
        assert not np.allclose(got, per_shard, rtol=2e-5, atol=2e-6)

    # Each shard records the table's factor and ratio (the smallest factor, the largest ratio
    # per row) and its own gradient norm.
    shards, (whole,) = clipping_statistics(on_shards), clipping_statistics(on_table).values()
    assert len(shards) == 2
    factors = [s["clipping_factor"] for s in shards.values()]
    ratios = [s["update_ratio"] for s in shards.values()]
    assert min(factors) == whole["clipping_factor"] < 1.0
    assert max(ratios) == whole["update_ratio"]
    if not (name == "clippy_adagrad_row" and kind == "sparse"):
        assert factors == [whole["clipping_factor"]] * 2
        assert ratios == [whole["update_ratio"]] * 2
    squares = sum(s["gradient_norm"] ** 2 for s in shards.values())
    np.testing.assert_allclose(squares, whole["gradient_norm"] ** 2, rtol=1e-5)


@pytest.mark.parametrize("mode", ["eager", "xla"])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_sharded_table_in_eager_and_xla(mode, kind, rng):
    initial = rng.normal(size=(ROWS, DIM)) * 0.5
    gradients = make_gradients(rng, kind)
    *_, got, table = train("clippy_adagrad_variable", initial, gradients, mode)
    np.testing.assert_array_equal(got, table)
    expected = numpy_weights("clippy_adagrad_variable", [initial], [[g] for g in gradients])[0]
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)


NONFINITE = {
    **OPTIMIZERS,
    "lazy_adam": lambda: LazyAdam(0.05),
    "clippy_adam": lambda: Clippy(keras.optimizers.Adam(0.05)),  # the inner update in a tf.cond
}


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("name", sorted(NONFINITE))
def test_nonfinite_gradient_in_one_shard_skips_the_whole_table(name, kind, rng):
    initial = rng.normal(size=(ROWS, DIM)) * 0.5
    first, second = make_gradients(rng, kind, count=2)
    bad = split_rows(second, SIZES)
    if kind == "dense":
        bad[0][2, 1] = np.nan
    else:
        bad[0][1][1, 3] = np.inf
    sharded, _ = make_tables(initial)
    shards = list(sharded.variables)
    optimizer = NONFINITE[name]()
    apply = make_apply(optimizer, shards, "graph")
    apply([to_tensor(g, n) for g, n in zip(split_rows(first, SIZES), SIZES)])
    assert int(nonfinite_gradient_count(optimizer)) == 0
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    shapes = {(n, DIM) for n in (*SIZES, ROWS)}  # tf-keras regroups the shards' state

    def state():
        if name == "clippy_sgd":  # no state it reads (tf-keras keeps an unused momentum)
            return []
        return [
            tf.convert_to_tensor(v).numpy() for v in inner.variables if tuple(v.shape) in shapes
        ]

    weights, state_before = [s.numpy() for s in shards], state()
    assert state_before or name == "clippy_sgd"  # accumulators or moments of both shards
    apply([to_tensor(g, n) for g, n in zip(bad, SIZES)])

    assert int(nonfinite_gradient_count(optimizer)) == 1
    for shard, before in zip(shards, weights):
        np.testing.assert_array_equal(shard.numpy(), before)
    for after, before in zip(state(), state_before):
        np.testing.assert_array_equal(after, before)


BIG = (1009, 1013)  # shapes no per-row tensor of a step can have
# tf-keras's SGD keeps a momentum even at 0 and adds it to the whole table.
SPARSE = sorted(n for n in OPTIMIZERS if IS_KERAS_3 or n != "clippy_sgd")


@pytest.mark.parametrize("name", SPARSE)
def test_sharded_sparse_step_does_no_work_proportional_to_the_shards(name):
    shards = []
    for n, (rows, device) in enumerate(zip(BIG, LOGICAL_CPUS)):
        with tf.device(device):
            shards.append(tf.Variable(np.ones((rows, DIM), np.float32), name=f"big/part_{n}"))
    sharded = tf.__internal__.distribute.ShardedVariable(shards)
    optimizer = OPTIMIZERS[name]()

    @tf.function
    def step(v0, i0, v1, i1):
        gradients = [
            tf.IndexedSlices(v, i, tf.constant([rows, DIM], tf.int64))
            for v, i, rows in ((v0, i0, BIG[0]), (v1, i1, BIG[1]))
        ]
        optimizer.apply_gradients(zip(gradients, shards))

    specs = [tf.TensorSpec([None, DIM], tf.float32), tf.TensorSpec([None], tf.int32)] * 2
    whole = whole_tensors(step.get_concrete_function(*specs).graph, BIG)
    assert not whole, whole
    step(tf.ones([2, DIM]), tf.constant([3, 5]), tf.ones([1, DIM]), tf.constant([7]))
    for shard, moved in zip(sharded.variables, ([3, 5], [7])):
        values = shard.numpy()
        assert np.all(values[moved] < 1.0)
        assert np.all(np.delete(values, moved, axis=0) == 1.0)

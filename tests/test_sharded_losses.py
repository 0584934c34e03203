"""The catalog losses on a sharded item table: read shard by shard, never concatenated.

The table's shards (uneven sizes) live on the two logical CPU devices of ``conftest`` and are
wrapped as ``tf.__internal__.distribute.ShardedVariable`` (what parameter-server training creates
under a ``variable_partitioner``) or passed as a list. Every loss and gradient is compared with the
same loss on one plain variable holding the concatenation (and with the numpy references):

- Sampled softmax: equal, bit for bit (the same rows through the same kernel).
- Scalable Cross-Entropy: the same rows selected for every bucket, and loss and gradients equal up
  to rounding (rtol 1e-6). The selection runs a top-k per shard and merges by (score, index), the
  order of the unsharded top-k, but XLA's CPU dot rounds a centre-row score differently in blocks of
  different row counts (157 or 144 rows instead of 301), so rows whose scores are within an ulp may
  come in another order, and a bucket's log-sum-exp then sums in another order.
- Exact chunked cross-entropy: equal up to rounding (each shard's log-sum-exp is merged).

The selection merge is checked on dyadic data (every score exact) with ties across the shard and
chunk boundaries; a traced loss-and-gradient step is checked to hold no ``[C, d]`` tensor.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import tensorflow as tf
from conftest import LOGICAL_CPUS
from helpers import logical_shards, shard_splitter
from references import SCE_SEED, full_ce_reference, sce_reference, top_k_by_score_then_index
from tensorflow.python.framework import function_def_to_graph

from tfsmooth import losses, ops
from tfsmooth._keras import keras
from tfsmooth.ops.shards import sharded_top_k

SIZES = (157, 144)  # uneven, as a partitioner may leave them
N, D = 64, 16
C = sum(SIZES)  # 301: no other tensor of the tests has C rows


def _tables(rng, sizes=SIZES, duplicates=True):
    """``(values, shards, sharded variable, plain variable)``; rows repeat across the boundary."""
    values = (rng.normal(size=(sum(sizes), D)) * 0.5).astype(np.float32)
    if duplicates:
        boundary = sizes[0]
        values[boundary] = values[boundary - 1]  # a tie across the shard boundary
        values[boundary + 5] = values[3]
    shards = logical_shards(values, sizes)
    return values, shards, tf.__internal__.distribute.ShardedVariable(shards), tf.Variable(values)


def _inputs(rng, c=C):
    queries = rng.normal(size=(N, D)).astype(np.float32)
    labels = rng.integers(0, c, size=N).astype(np.int32)
    return queries, labels


def _dense(gradient):
    return tf.convert_to_tensor(gradient).numpy()


def _loss_and_gradients(loss_fn, queries, table, variables):
    """``(loss, d/d queries, [d/d variable, ...])``, table gradients densified."""
    q = tf.Variable(queries)
    with tf.GradientTape() as tape:
        loss = loss_fn(q, table)
    grad_q, *grad_w = tape.gradient(loss, [q, *variables])
    return loss.numpy(), grad_q.numpy(), [_dense(g) for g in grad_w]


def _compare(loss_fn, rng, *, exact, sizes=SIZES, as_list=False, rtol=1e-5):
    values, shards, sharded, plain = _tables(rng, sizes)
    queries, labels = _inputs(rng)
    table = list(shards) if as_list else sharded

    def run(t, variables):
        return _loss_and_gradients(lambda q, w: loss_fn(q, w, labels), queries, t, variables)

    loss_s, gq_s, gw_s = run(table, shards)
    loss_p, gq_p, (gw_p,) = run(plain, [plain])
    gw_s = np.concatenate(gw_s)
    if exact:
        np.testing.assert_array_equal(loss_s, loss_p)
        np.testing.assert_array_equal(gq_s, gq_p)
        np.testing.assert_array_equal(gw_s, gw_p)
    else:
        np.testing.assert_allclose(loss_s, loss_p, rtol=1e-6)
        np.testing.assert_allclose(gq_s, gq_p, rtol=rtol, atol=rtol * 1e-2)
        np.testing.assert_allclose(gw_s, gw_p, rtol=rtol, atol=rtol * 1e-2)
    return values, queries, labels, float(loss_s)


# ------------------------------------------------------------------------------------------------
# The shard helpers.


def test_table_shards_recognises_each_form(rng):
    values, shards, sharded, plain = _tables(rng)
    for form in (sharded, shards, tuple(shards)):
        table = ops.table_shards(form)
        assert table.sharded and table.num_items == C and table.dim == D
        assert [offset for _, offset in table.parts] == [0, SIZES[0]]
        assert all(part is shard for (part, _), shard in zip(table.parts, shards))
    one = ops.table_shards(plain)
    assert not one.sharded and one.parts[0][0] is plain and one.num_items == C
    array = ops.table_shards(values)
    assert not array.sharded and isinstance(array.parts[0][0], tf.Tensor)
    assert ops.table_shards(one) is one


def test_table_shards_refuses_what_is_no_table(rng):
    with pytest.raises(TypeError, match="Received: item_embeddings=None"):
        ops.table_shards(None)
    with pytest.raises(ValueError, match=r"item_embeddings.shape=\(2, 3, 4\)"):
        ops.table_shards(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"same last dimension d.*item_embeddings"):
        ops.table_shards([tf.Variable(tf.zeros([3, 4])), tf.Variable(tf.zeros([2, 5]))])
    with pytest.raises(ValueError, match=r"share one dtype.*float64"):
        ops.table_shards([tf.Variable(tf.zeros([3, 4])), tf.Variable(tf.zeros([2, 4], tf.float64))])
    with pytest.raises(TypeError, match="item_embeddings=<object"):
        ops.table_shards(object())
    with pytest.raises(ValueError, match="built Embedding layer"):
        ops.table_shards(keras.layers.Embedding(10, 4))


def test_gather_rows_keeps_the_order_and_gives_each_shard_its_rows(rng):
    values, shards, sharded, plain = _tables(rng, sizes=(100, 57, 144))
    ids = np.array([[156, 157, 0], [300, 99, 100], [156, 5, 156]], np.int32)
    weights = rng.normal(size=(*ids.shape, D)).astype(np.float32)
    with tf.GradientTape() as tape:
        rows = ops.gather_rows(sharded, ids)
        loss = tf.reduce_sum(rows * weights)
    np.testing.assert_array_equal(rows.numpy(), values[ids])
    gradients = tape.gradient(loss, shards)
    expected = np.zeros_like(values, np.float64)
    np.add.at(expected, ids.ravel(), weights.reshape(-1, D))
    start = 0
    for shard, gradient in zip(shards, gradients):
        rows_here = shard.shape[0]
        assert isinstance(gradient, tf.IndexedSlices)
        local = gradient.indices.numpy()
        assert local.min() >= 0 and local.max() < rows_here  # shard-local rows only
        np.testing.assert_allclose(_dense(gradient), expected[start : start + rows_here], rtol=1e-6)
        start += rows_here
    traced = tf.function(lambda i: ops.gather_rows(sharded, i))(tf.constant(ids, tf.int64))
    np.testing.assert_array_equal(traced.numpy(), values[ids])
    np.testing.assert_array_equal(ops.gather_rows(plain, ids).numpy(), values[ids])
    with pytest.raises(ValueError, match=f"`ids` must be row indices in \\[0, {C}\\).*{C}"):
        ops.gather_rows(sharded, [0, C])
    with pytest.raises(TypeError, match=r"ids\.dtype=float32"):
        ops.gather_rows(sharded, np.zeros(2, np.float32))


def test_all_finite_checks_every_shard(rng):
    _, shards, sharded, _ = _tables(rng)
    assert bool(ops.all_finite(sharded))
    shards[1].scatter_nd_update([[3, 2]], [np.nan])
    assert not bool(ops.all_finite(sharded)) and bool(ops.all_finite(shards[0]))


def test_on_device_of_places_ops_on_the_shard():
    with tf.device(LOGICAL_CPUS[1]):
        shard = tf.Variable(tf.ones([3, 2]))
    with ops.on_device_of(shard):
        total = tf.reduce_sum(shard)
    assert total.device.endswith("CPU:1")
    with ops.on_device_of(object()):  # nothing to place by: a no-op
        assert float(tf.constant(1.0)) == 1.0


@pytest.mark.parametrize("sizes, chunk", [((157, 144), 8192), ((100, 57, 144), 50)])
def test_sharded_top_k_merges_ties_by_global_index(rng, sizes, chunk):
    """Dyadic centres and rows (every score exact): many equal scores, some across the shard and
    chunk boundaries; the rows and their order are the reference's, as over one table."""
    values = rng.integers(-2, 3, size=(sum(sizes), D)).astype(np.float32) / 4
    values[sizes[0]] = values[sizes[0] - 1]
    values[50] = values[49]  # across a chunk boundary
    centres = (rng.integers(-8, 9, size=(12, D)) / 8).astype(np.float32)
    expected_scores, expected = top_k_by_score_then_index(centres, values, 40)
    assert any(len(set(row)) < len(row) for row in expected_scores)  # ties inside the top 40
    sharded = ops.table_shards(
        tf.__internal__.distribute.ShardedVariable(logical_shards(values, sizes))
    )
    for table in (sharded, ops.table_shards(tf.constant(values))):
        scores, indices = sharded_top_k(tf.constant(centres), table, 40, chunk)
        np.testing.assert_array_equal(indices.numpy(), expected)
        np.testing.assert_array_equal(scores.numpy(), expected_scores)


# ------------------------------------------------------------------------------------------------
# The losses: sharded equals plain.


@pytest.mark.parametrize(
    "options",
    [
        dict(bucket_size_y=32),
        dict(n_buckets=5, bucket_size_x=9, bucket_size_y=17),
        dict(bucket_size_y=40, mix_x=True),
    ],
    ids=["defaults", "explicit", "mix_x"],
)
def test_scalable_cross_entropy_equals_the_plain_table(rng, options):
    def loss_fn(q, w, labels):
        return losses.scalable_cross_entropy(q, w, labels, seed=SCE_SEED, **options)

    values, queries, labels, loss = _compare(loss_fn, rng, exact=False, rtol=1e-6)
    expected, _ = sce_reference(queries, values, labels, **options)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_scalable_cross_entropy_on_three_shards_and_a_list(rng):
    def loss_fn(q, w, labels):
        return losses.scalable_cross_entropy(q, w, labels, bucket_size_y=150, seed=SCE_SEED)

    _compare(loss_fn, rng, exact=False, rtol=1e-6, sizes=(100, 57, 144), as_list=True)


def test_scalable_cross_entropy_selection_chunks_per_shard(rng, monkeypatch):
    module = importlib.import_module("tfsmooth.losses.scalable_cross_entropy")
    monkeypatch.setattr(module, "SELECTION_CHUNK", 40)

    def loss_fn(q, w, labels):
        return losses.scalable_cross_entropy(q, w, labels, bucket_size_y=24, seed=SCE_SEED)

    _compare(loss_fn, rng, exact=False, rtol=1e-6)


@pytest.mark.parametrize("mix_x", [False, True])
def test_scalable_cross_entropy_selects_the_rows_of_the_plain_table(rng, mix_x):
    module = importlib.import_module("tfsmooth.losses.scalable_cross_entropy")
    values, _, sharded, _ = _tables(rng, sizes=(100, 57, 144))
    queries, _ = _inputs(rng)
    options = (tf.ones([N], tf.bool), 8, 16, 40, mix_x, SCE_SEED)
    selections = [
        module.select_buckets(tf.constant(queries), ops.table_shards(table), *options)
        for table in (sharded, values)
    ]
    for sharded_part, plain_part in zip(*selections):  # queries, their counts, items
        np.testing.assert_array_equal(np.sort(sharded_part, 1), np.sort(plain_part, 1))


@pytest.mark.parametrize("chunk_size, temperature", [(None, 1.0), (64, 0.5)])
def test_catalog_cross_entropy_matches_the_plain_table(rng, chunk_size, temperature):
    def loss_fn(q, w, labels):
        return losses.catalog_cross_entropy(
            q, w, labels, chunk_size=chunk_size, temperature=temperature
        )

    values, queries, labels, loss = _compare(loss_fn, rng, exact=False)
    expected, _, _ = full_ce_reference(queries, values, labels, temperature=temperature)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_catalog_cross_entropy_gives_each_shard_its_gradient_on_its_device(rng):
    values, shards, sharded, _ = _tables(rng)
    queries, labels = _inputs(rng)
    mask = rng.random(N) > 0.3
    q = tf.Variable(queries)
    with tf.GradientTape() as tape:
        loss = losses.catalog_cross_entropy(q, sharded, labels, chunk_size=50, mask=mask)
    grad_q, *grads = tape.gradient(loss, [q, *shards])
    expected, expected_q, expected_w = full_ce_reference(queries, values, labels, mask=mask)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(grad_q.numpy(), expected_q, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.concatenate(grads), expected_w, rtol=1e-4, atol=1e-7)
    for gradient, device in zip(grads, LOGICAL_CPUS):
        assert isinstance(gradient, tf.Tensor) and gradient.device.endswith(device[-5:].upper())


@pytest.mark.parametrize("sampling", ["uniform", "log_uniform", "weights"])
def test_sampled_softmax_equals_the_plain_table(rng, sampling):
    if sampling == "weights":
        sampling = rng.integers(1, 50, size=C)

    def loss_fn(q, w, labels):
        return losses.sampled_softmax_cross_entropy(
            q, w, labels, num_sampled=80, sampling=sampling, seed=SCE_SEED
        )

    _compare(loss_fn, rng, exact=True)


@pytest.mark.parametrize("name", ["catalog", "scalable", "sampled", "bce"])
def test_keras_losses_bind_a_sharded_table(rng, name):
    _, shards, sharded, plain = _tables(rng)
    queries, labels = _inputs(rng)
    options = {"catalog": {"chunk_size": 64}, "bce": {"num_negatives": 3}}.get(name, {})
    results = []
    for table in (sharded, list(shards), plain):
        tf.random.set_seed(11)  # the op-level seeds draw alike for each table
        seeded = {} if name == "catalog" else {"seed": 5}
        loss = losses.get(name, **seeded, **options)
        results.append(float(loss(labels, queries, item_embeddings=table)))
        bound = loss.__class__.from_config(loss.get_config())
        bound.item_embeddings = table
        tf.random.set_seed(11)
        assert float(bound(labels, queries)) == pytest.approx(results[-1], rel=1e-6)
    np.testing.assert_allclose(results[:2], results[2], rtol=1e-6)


def test_an_embedding_built_under_a_partitioner_is_read_in_shards(rng):
    """A variable creator that splits the table (as a partitioner does) under either Keras."""

    layer = keras.layers.Embedding(C, D)
    with tf.variable_creator_scope(shard_splitter(SIZES)):
        layer.build((None,))
    table = ops.table_shards(layer)
    assert table.sharded and [p.shape[0] for p, _ in table.parts] == list(SIZES)
    values = np.concatenate([p.numpy() for p, _ in table.parts])
    queries, labels = _inputs(rng)
    sharded = losses.scalable_cross_entropy(queries, layer, labels, bucket_size_y=32, seed=SCE_SEED)
    plain = losses.scalable_cross_entropy(queries, values, labels, bucket_size_y=32, seed=SCE_SEED)
    np.testing.assert_allclose(sharded.numpy(), plain.numpy(), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# No full table: the traced step never holds a [C, d] tensor.


def _graphs(graph):
    """``graph`` and every function graph it calls (kernels, loop bodies), recursively."""
    seen, stack, graphs = set(), [graph.as_graph_def()], [graph]
    library = {f.signature.name: f for f in stack[0].library.function}
    names = list(library)
    while names:
        name = names.pop()
        if name in seen:
            continue
        seen.add(name)
        graphs.append(function_def_to_graph.function_def_to_graph(library[name]))
    return graphs


def _shapes_and_concats(graph):
    shapes, concats = [], []
    for g in _graphs(graph):
        for op in g.get_operations():
            for output in op.outputs:
                if output.shape.rank is not None:
                    shapes.append((op.type, tuple(output.shape.as_list())))
            if op.type == "ConcatV2":
                concats.append(op)
    return shapes, concats


@pytest.mark.parametrize(
    "name, loss_fn",
    [
        ("scalable", lambda q, w, y: losses.scalable_cross_entropy(q, w, y, bucket_size_y=32)),
        ("catalog", lambda q, w, y: losses.catalog_cross_entropy(q, w, y, chunk_size=64)),
        ("catalog_unchunked", lambda q, w, y: losses.catalog_cross_entropy(q, w, y)),
        ("sampled", lambda q, w, y: losses.sampled_softmax_cross_entropy(q, w, y, num_sampled=40)),
    ],
)
def test_no_full_table_in_the_traced_step(rng, name, loss_fn):
    _, shards, sharded, _ = _tables(rng)
    queries, labels = _inputs(rng)

    @tf.function
    def step(q, y):
        with tf.GradientTape() as tape:
            tape.watch(q)
            loss = loss_fn(q, sharded, y)
        return loss, tape.gradient(loss, [q, *shards])

    concrete = step.get_concrete_function(tf.constant(queries), tf.constant(labels))
    shapes, concats = _shapes_and_concats(concrete.graph)
    full = [s for s in shapes if s[1] in ((C, D), (D, C))]
    assert not full, f"{name}: tensors of the whole table's shape: {full[:5]}"
    assert all(op.outputs[0].shape.rank is None or op.outputs[0].shape[0] != C for op in concats)
    # Whatever reads a whole shard (the selection, the log-sum-exp, the finiteness check) runs on
    # that shard's device; sampled softmax reads rows only.
    devices = {internal.name: external.device for external, internal in concrete.graph.captures}
    reads = [
        op
        for op in concrete.graph.get_operations()
        if op.type == "ReadVariableOp" and op.outputs[0].shape.as_list() in ([r, D] for r in SIZES)
    ]
    assert bool(reads) == (name != "sampled")
    for op in reads:
        shard = tf.DeviceSpec.from_string(devices[op.inputs[0].name]).device_index
        values = list(op.outputs)  # the shard's value, and its identities (stop_gradient, ...)
        while values:
            for consumer in values.pop().consumers():
                assert consumer.device, f"{name}: {consumer.name} uses a whole shard, no device"
                assert tf.DeviceSpec.from_string(consumer.device).device_index == shard
                if consumer.type in ("Identity", "IdentityN", "StopGradient"):
                    values += [v for v in consumer.outputs if v.shape == op.outputs[0].shape]
    loss, _ = step(tf.constant(queries), tf.constant(labels))
    assert np.isfinite(float(loss))

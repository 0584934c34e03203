"""Ranking metrics, CatalogRetrieval and export_retrieval on a sharded item table.

The table's shards (uneven sizes) live on the two logical CPU devices of ``conftest`` and are
wrapped as ``tf.__internal__.distribute.ShardedVariable`` (what parameter-server training creates
under a ``variable_partitioner``), passed as a list, or held by an ``Embedding`` layer built under a
variable creator that splits it. Everything is compared with the same call on one plain variable
holding the concatenation, and with the numpy references:

- ``catalog_rank`` / ``catalog_ranking_metrics``: equal (integer counts per shard, summed).
- ``export_retrieval``: one variable per shard in the SavedModel; the served top-k equals the
  unsharded export's (ids and scores), also when served by a process without tfsmooth.
- ``CatalogRetrieval`` (TFRS, tf-keras only): loss, metrics and a few training steps equal.

The traced rank and top-k functions are checked to hold no tensor of the whole table's shape.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import LOGICAL_CPUS, requires_tfrs
from helpers import assert_exact_top_k, logical_shards, serve_in_clean_process
from references import brute_force_scores, reference_ranks
from tensorflow.python.framework import function_def_to_graph

from tfsmooth._keras import keras
from tfsmooth.metrics import catalog_rank, catalog_ranking_metrics
from tfsmooth.ops import table_shards
from tfsmooth.serving import export_retrieval

SIZES = (157, 144)  # uneven, as a partitioner may leave them
B, D = 48, 16
C = sum(SIZES)  # 301: no other tensor of the tests has C rows
USERS = 40


def _tables(values, sizes=SIZES):
    """``(shards, sharded variable, plain variable)`` of ``values``."""
    shards = logical_shards(values, sizes)
    return shards, tf.__internal__.distribute.ShardedVariable(shards), tf.Variable(values)


def _values(rng, dyadic=False):
    """A ``[C, d]`` table; dyadic: every score exact, with rows repeated across the shard boundary.

    A score is one matrix product, whose rounding may depend on the block's shape (XLA picks its
    dot kernel per shape), so two equal rows tie for sure only where every score is exact: the
    Gaussian table has no repeated rows (no tie decided by rounding).
    """
    if not dyadic:
        return (rng.normal(size=(C, D)) * 0.5).astype(np.float32)
    values = rng.integers(-2, 3, size=(C, D)).astype(np.float32) / 4
    values[SIZES[0]] = values[SIZES[0] - 1]
    values[SIZES[0] + 5] = values[3]
    return values


def _queries(rng, dyadic=False):
    if dyadic:
        return (rng.integers(-8, 9, size=(B, D)) / 8).astype(np.float32)
    return rng.normal(size=(B, D)).astype(np.float32)


def _split(next_creator, **kwargs):
    """A variable creator that splits a ``[C, d]`` table into SIZES shards, as a partitioner does."""
    initial = kwargs.pop("initial_value")
    value = tf.convert_to_tensor(initial() if callable(initial) else initial)
    kwargs.pop("shape", None)
    if value.shape.rank != 2 or value.shape[0] != C:
        return next_creator(initial_value=value, **kwargs)
    parts = []
    for i, block in enumerate(tf.split(value, list(SIZES))):
        with tf.device(LOGICAL_CPUS[i]):
            parts.append(next_creator(initial_value=block, **{**kwargs, "name": f"part_{i}"}))
    return tf.__internal__.distribute.ShardedVariable(parts)


def _sharded_embedding():
    layer = keras.layers.Embedding(C, D)
    with tf.variable_creator_scope(_split):
        layer.build((None,))
    return layer


# ------------------------------------------------------------------------------------------------
# catalog_rank and catalog_ranking_metrics.


@pytest.mark.parametrize("dyadic", [False, True], ids=["gaussian", "dyadic"])
@pytest.mark.parametrize("chunk_size", [8192, 50])
def test_catalog_rank_equals_the_plain_table(rng, dyadic, chunk_size):
    values = _values(rng, dyadic)
    queries = _queries(rng, dyadic)
    labels = rng.integers(0, C, size=B).astype(np.int32)
    labels[:4] = [
        SIZES[0] - 1,
        SIZES[0],
        3,
        SIZES[0] + 5,
    ]  # true items with a twin in the other shard
    exclude = rng.integers(-1, C, size=(B, 12)).astype(np.int32)
    exclude[:, 0] = exclude[:, 1]
    exclude[:, 2] = labels
    exclude[:4, 3] = [SIZES[0], SIZES[0] - 1, SIZES[0] + 5, 3]  # the twin, in the other shard
    shards, sharded, plain = _tables(values)
    for exclusions in (None, exclude):
        expected = reference_ranks(queries, values, labels, exclusions)
        want = catalog_rank(queries, plain, labels, exclude=exclusions, chunk_size=chunk_size)
        np.testing.assert_array_equal(want, expected)
        for table in (sharded, shards):
            got = catalog_rank(queries, table, labels, exclude=exclusions, chunk_size=chunk_size)
            np.testing.assert_array_equal(got, expected)
    if dyadic:
        assert np.any(reference_ranks(queries, values, labels)[:4] > 0)


def test_catalog_ranking_metrics_and_a_sharded_embedding_layer(rng):
    layer = _sharded_embedding()
    shards = table_shards(layer)
    assert shards.sharded and [part.shape[0] for part, _ in shards.parts] == list(SIZES)
    values = np.concatenate([part.numpy() for part, _ in shards.parts])
    queries = _queries(rng)
    labels = rng.integers(0, C, size=B).astype(np.int32)
    queries[:10] = values[labels[:10]] * 5  # some hits
    got = catalog_ranking_metrics(queries, layer, labels, k=10)
    want = catalog_ranking_metrics(queries, values, labels, k=10)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    assert 0 < float(np.mean(got["hit_rate"])) < 1


def test_catalog_rank_of_nan_rows_and_bad_arguments(rng):
    values = _values(rng)
    values[SIZES[0] + 2, 0] = np.nan  # a NaN row in the second shard
    queries = _queries(rng)
    labels = np.full(B, SIZES[0] + 2, np.int32)
    labels[1:] = np.arange(1, B)
    _, sharded, plain = _tables(values)
    ranks = catalog_rank(queries, sharded, labels)
    np.testing.assert_array_equal(ranks, catalog_rank(queries, plain, labels))
    assert int(ranks[0]) == C  # the true item scores NaN: after every item
    with pytest.raises(ValueError, match=rf"`labels` must be item indices in \[0, {C}\).*{C}"):
        catalog_rank(queries, sharded, np.full(B, C))
    with pytest.raises(
        ValueError, match=rf"same last dimension d.*queries.shape=\(48, 3\).*\({C}, {D}\)"
    ):
        catalog_rank(queries[:, :3], sharded, labels)
    with pytest.raises(ValueError, match=r"`queries` must have shape \[B, d\]"):
        catalog_rank(queries[None], sharded, labels)


# ------------------------------------------------------------------------------------------------
# No full table: the traced rank and top-k never hold a [C, d] tensor.


def _graphs(graph):
    """``graph`` and every function of its library, as graphs (kernels, loop bodies)."""
    library = graph.as_graph_def().library.function
    return [graph, *(function_def_to_graph.function_def_to_graph(f) for f in library)]


def _shapes(graph):
    shapes = []
    for g in _graphs(graph):
        for op in g.get_operations():
            for output in op.outputs:
                if output.shape.rank is not None:
                    shapes.append((op.type, tuple(output.shape.as_list())))
    return shapes


def _assert_no_full_table(graph):
    shapes = _shapes(graph)
    assert (SIZES[0], D) in [shape for _, shape in shapes]  # the walk sees the shards' reads
    full = [s for s in shapes if s[1] in ((C, D), (D, C))]
    assert not full, f"tensors of the whole table's shape: {full[:5]}"


def test_no_full_table_in_the_traced_rank_and_each_shard_is_read_on_its_device(rng):
    values = _values(rng)
    queries = _queries(rng)
    labels = rng.integers(0, C, size=B).astype(np.int32)
    exclude = rng.integers(-1, C, size=(B, 6)).astype(np.int32)
    _, sharded, _ = _tables(values)
    rank = tf.function(lambda q, y, e: catalog_rank(q, sharded, y, exclude=e, chunk_size=64))
    concrete = rank.get_concrete_function(
        tf.constant(queries), tf.constant(labels), tf.constant(exclude)
    )
    _assert_no_full_table(concrete.graph)
    devices = {internal.name: external.device for external, internal in concrete.graph.captures}
    reads = [
        op
        for op in concrete.graph.get_operations()
        if op.type == "ReadVariableOp" and op.outputs[0].shape.as_list() in ([r, D] for r in SIZES)
    ]
    assert len(reads) == len(SIZES)
    for op in reads:  # read (and counted) where the shard lives
        shard_device = tf.DeviceSpec.from_string(devices[op.inputs[0].name])
        assert tf.DeviceSpec.from_string(op.device).device_index == shard_device.device_index
    np.testing.assert_array_equal(
        rank(queries, labels, exclude), reference_ranks(queries, values, labels, exclude)
    )


# ------------------------------------------------------------------------------------------------
# export_retrieval.


def _tower(seed=0):
    keras.utils.set_random_seed(seed)
    users = keras.Input((), dtype="int32", name="user_id")
    return keras.Model(users, keras.layers.Embedding(USERS, D)(users))


def _exclusions(rng, rows):
    exclude = rng.integers(0, C, size=(rows, 20))
    for row in range(rows):
        exclude[row, rng.integers(0, 21) :] = -1
    exclude[0, :] = -1
    return exclude.astype(np.int64)


@pytest.mark.parametrize("chunk_size", [65536, 40])
def test_export_retrieval_of_a_sharded_table_serves_the_unsharded_top_k(rng, tmp_path, chunk_size):
    tower = _tower()
    values = _values(rng)
    shards, sharded, plain = _tables(values)
    users = np.arange(USERS, dtype=np.int32)
    queries = np.asarray(tower(users))
    exclude = _exclusions(rng, USERS)
    exclude[1, :15] = np.argsort(-brute_force_scores(queries[1:2], values))[0, :15]
    options = dict(k=5, max_k=60, chunk_size=chunk_size)
    want = tf.saved_model.load(export_retrieval(tower, plain, tmp_path / "plain", **options))
    for name, table in (("sharded", sharded), ("list", shards)):
        path = export_retrieval(tower, table, tmp_path / name, **options)
        got = tf.saved_model.load(path)
        stored = tf.train.list_variables(str(tmp_path / name / "variables" / "variables"))
        shapes = sorted(tuple(shape) for _, shape in stored if len(shape) == 2)
        assert shapes == sorted([(USERS, D), *((r, D) for r in SIZES)])  # one variable per shard
        requests = [
            ("serving_default", {}, None, 5),
            ("top_k", {"k": tf.constant(60), "exclude_ids": tf.constant(exclude)}, exclude, 60),
            ("top_k", {"k": tf.constant(7), "exclude_ids": tf.constant(exclude)}, exclude, 7),
        ]
        for signature, extra, exclusions, k in requests:
            inputs = {"user_id": tf.constant(users), **extra}
            top = got.signatures[signature](**inputs)
            ref = want.signatures[signature](**inputs)
            np.testing.assert_array_equal(top["item_ids"], ref["item_ids"])
            # XLA's dot may round a score differently for another block shape: not bit for bit.
            np.testing.assert_allclose(top["scores"], ref["scores"], rtol=1e-6, atol=1e-7)
            reference = brute_force_scores(queries, values, exclusions)
            assert_exact_top_k(top["item_ids"], top["scores"], reference, k)


def test_export_retrieval_of_a_sharded_table_fills_free_slots_last(tmp_path):
    """More exclusions than candidates in a shard: free slots (-1, -inf) come after every one."""
    values = np.arange(C * D, dtype=np.float32).reshape(C, D) / (C * D)
    _, sharded, plain = _tables(values, (4, C - 4))
    tower = _tower()
    exclude = np.full((USERS, C - 2), -1, np.int64)
    exclude[:, : C - 2] = np.arange(C - 2)  # only the last two candidates remain
    inputs = {"user_id": tf.constant(np.arange(USERS, dtype=np.int32))}
    inputs.update(k=tf.constant(6), exclude_ids=tf.constant(exclude))
    results = []
    for name, table in (("sharded", sharded), ("plain", plain)):
        served = tf.saved_model.load(export_retrieval(tower, table, tmp_path / name, k=6, max_k=6))
        results.append(served.signatures["top_k"](**inputs))
    np.testing.assert_array_equal(results[0]["item_ids"], results[1]["item_ids"])
    np.testing.assert_array_equal(results[0]["scores"], results[1]["scores"])
    ids = results[0]["item_ids"].numpy()
    assert set(ids[:, :2].ravel()) <= {C - 2, C - 1} and np.all(ids[:, 2:] == -1)
    assert np.all(np.isneginf(results[0]["scores"].numpy()[:, 2:]))


@pytest.mark.slow
def test_sharded_export_serves_without_tfsmooth(rng, tmp_path):
    tower = _tower(seed=1)
    values = _values(rng)
    _, sharded, plain = _tables(values)
    names = np.array([f"item-{i}" for i in range(C)])
    path = export_retrieval(tower, sharded, tmp_path / "sharded", candidate_ids=names, k=10)
    users = np.arange(0, USERS, 3, dtype=np.int32)
    served = serve_in_clean_process(path, {"user_id": users}, signature="serving_default")
    want = tf.saved_model.load(
        export_retrieval(tower, plain, tmp_path / "plain", candidate_ids=names, k=10)
    ).signatures["serving_default"](user_id=tf.constant(users))
    np.testing.assert_array_equal(
        served["item_ids"].astype(str), want["item_ids"].numpy().astype(str)
    )
    np.testing.assert_allclose(served["scores"], want["scores"], rtol=1e-6, atol=1e-7)


def test_no_full_table_in_the_exported_top_k(rng, tmp_path):
    values = _values(rng)
    _, sharded, _ = _tables(values)
    path = export_retrieval(_tower(), sharded, tmp_path / "r", k=5, max_k=20, chunk_size=64)
    loaded = tf.saved_model.load(path)
    for signature in ("serving_default", "top_k"):
        graph = loaded.signatures[signature].graph
        _assert_no_full_table(graph)
        graph_def = graph.as_graph_def()
        nodes = [n for f in graph_def.library.function for n in f.node_def] + list(graph_def.node)
        assert not [n.device for n in nodes if n.device]  # nothing pinned to a training device


def test_export_retrieval_refuses_a_sharded_table_inside_a_strategy_scope(
    rng, tmp_path, mirrored_strategy
):
    _, sharded, plain = _tables(_values(rng))
    tower = _tower()
    with mirrored_strategy.scope():
        with pytest.raises(ValueError, match=r"`candidates` is a sharded table.*strategy.scope"):
            export_retrieval(tower, sharded, tmp_path / "r")
        assert export_retrieval(tower, plain, tmp_path / "plain")  # unsharded: as before
    assert export_retrieval(tower, sharded, tmp_path / "ok")  # outside the scope
    bad = _tables(np.where(np.eye(C, D) > 0, np.nan, _values(rng)).astype(np.float32))[1]
    with pytest.raises(ValueError, match="NaN or Inf"):
        export_retrieval(tower, bad, tmp_path / "nan")


# ------------------------------------------------------------------------------------------------
# CatalogRetrieval (TFRS, tf-keras only).


def _two_tower(loss, sharded, values, users_values):
    import tensorflow_recommenders as tfrs

    from tfsmooth.tasks import CatalogRetrieval

    class TwoTower(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.users = keras.layers.Embedding(USERS, D)
            self.items = _sharded_embedding() if sharded else keras.layers.Embedding(C, D)
            self.task = CatalogRetrieval(self.items, loss=loss, top_k=(5, 20))

        def compute_loss(self, features, training=False):
            queries = self.users(features["user"])
            return self.task(queries, features["item"], compute_metrics=not training)

    model = TwoTower()
    model.users.build((None,))
    if not sharded:  # the sharded table is built already (building again would replace it)
        model.items.build((None,))
    model.users.embeddings.assign(users_values)
    table = model.items.embeddings
    if sharded:
        for part, block in zip(table.variables, np.split(values, [SIZES[0]])):
            part.assign(block)
    else:
        table.assign(values)
    return model


def _item_table(model):
    table = model.items.embeddings
    parts = table.variables if getattr(table, "is_sharded_variable", False) else [table]
    return np.concatenate([np.asarray(part) for part in parts])


@requires_tfrs
@pytest.mark.parametrize("loss_name", ["scalable", "catalog"])
def test_catalog_retrieval_trains_and_evaluates_on_a_sharded_table(rng, loss_name):
    from tfsmooth.losses import CatalogCrossEntropy, ScalableCrossEntropy

    values = _values(rng)
    users_values = rng.normal(size=(USERS, D)).astype(np.float32)
    users = rng.integers(0, USERS, size=128).astype(np.int32)
    data = {"user": users, "item": ((users * 7) % C).astype(np.int32)}
    results = {}
    for sharded in (True, False):
        loss = (
            ScalableCrossEntropy(bucket_size_y=32, seed=3)
            if loss_name == "scalable"
            else CatalogCrossEntropy(chunk_size=64)
        )
        model = _two_tower(loss, sharded, values, users_values)
        if sharded:
            assert hasattr(model.items.embeddings, "is_sharded_variable")
            assert sorted(v.shape[0] for v in model.trainable_variables) == sorted([USERS, *SIZES])
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(64)
        model.compile(keras.optimizers.SGD(0.5))
        keras.utils.set_random_seed(4)
        before = model.evaluate(dataset, return_dict=True, verbose=0)
        keras.utils.set_random_seed(5)
        history = model.fit(dataset, epochs=2, verbose=0).history["loss"]
        results[sharded] = before, history, _item_table(model), model.users.embeddings.numpy()
    (before, history, table, user_table), (want_before, want_history, want_table, want_users) = (
        results[True],
        results[False],
    )
    queries = users_values[data["user"]]
    ranks = reference_ranks(queries, values, data["item"])
    assert before["hit_rate_at_20"] == pytest.approx(np.mean(ranks < 20), abs=1e-6)
    for name in ("hit_rate_at_5", "ndcg_at_5", "hit_rate_at_20", "ndcg_at_20"):
        assert before[name] == want_before[name], name
    if loss_name == "scalable":  # the same selection, bucket losses and gradients, bit for bit
        assert before["loss"] == want_before["loss"]
        np.testing.assert_allclose(history, want_history, rtol=1e-6)
    else:  # each shard's log-sum-exp merged: equal up to rounding
        assert before["loss"] == pytest.approx(want_before["loss"], rel=1e-6)
        np.testing.assert_allclose(history, want_history, rtol=1e-5)
    assert history[-1] < history[0]
    np.testing.assert_allclose(table, want_table, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(user_table, want_users, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(table, values)  # the shards were trained


@requires_tfrs
def test_catalog_retrieval_hands_the_sharded_table_over_unconcatenated(rng):
    from tfsmooth.tasks import CatalogRetrieval

    values = _values(rng)
    shards, sharded, _ = _tables(values)
    for items in (sharded, shards):
        task = CatalogRetrieval(items, loss="catalog", top_k=3)
        table = task.item_embeddings()
        assert table is items or all(a is b for a, b in zip(table, items, strict=True))
    task = CatalogRetrieval(sharded, loss="catalog", top_k=3)
    queries = _queries(rng)
    labels = rng.integers(0, C, size=B).astype(np.int32)
    step = tf.function(lambda q, y: task(q, y))
    concrete = step.get_concrete_function(tf.constant(queries), tf.constant(labels))
    _assert_no_full_table(concrete.graph)

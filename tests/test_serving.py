"""SavedModel serving: retrieval top-k and ranking models, served by plain TensorFlow in a clean process."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_exact_top_k, serve_in_clean_process
from references import brute_force_scores, reference_top_k, sasrec_reference

from tfsmooth._keras import keras
from tfsmooth.activations import smelu
from tfsmooth.losses import scalable_cross_entropy
from tfsmooth.serving import export_model, export_retrieval, export_sasrec, input_signature_of

N_USERS, N_ITEMS, DIM = 40, 2500, 8


def two_tower(seed: int = 0):
    keras.utils.set_random_seed(seed)
    users = keras.Input((), dtype="int32", name="user_id")
    hidden = keras.layers.Dense(16, activation=smelu)(keras.layers.Embedding(N_USERS, 16)(users))
    tower = keras.Model(users, keras.layers.Dense(DIM)(hidden))
    items = keras.layers.Embedding(N_ITEMS, DIM)
    items.build((None,))
    return tower, items


def train_with_sce(tower, items, steps: int = 5):
    """A few steps of Scalable Cross-Entropy on synthetic (user, item) pairs."""
    rng = np.random.default_rng(1)
    optimizer = keras.optimizers.Adam(0.05)
    variables = tower.trainable_variables + items.trainable_variables
    for step in range(steps):
        users = rng.integers(0, N_USERS, size=128).astype("int32")
        labels = ((users * 37) % N_ITEMS).astype("int32")
        with tf.GradientTape() as tape:
            loss = scalable_cross_entropy(
                tower(users), items.embeddings, labels, bucket_size_y=64, seed=step
            )
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
    assert np.isfinite(float(loss))


@pytest.mark.slow
def test_retrieval_trained_with_sce_serves_the_same_top_k_without_tfsmooth(tmp_path):
    tower, items = two_tower()
    train_with_sce(tower, items)
    ids = np.array([f"movie-{i}" for i in range(N_ITEMS)])
    path = export_retrieval(tower, items, tmp_path / "retrieval", candidate_ids=ids, k=10)
    users = np.arange(0, N_USERS, 3, dtype="int32")
    served = serve_in_clean_process(path, {"user_id": users}, signature="serving_default")
    order, scores = reference_top_k(tower, items.embeddings, users, 10)
    np.testing.assert_array_equal(served["item_ids"], ids[order])
    np.testing.assert_allclose(served["scores"], scores, rtol=1e-5, atol=1e-5)


def test_chunked_top_k_equals_the_full_ranking(tmp_path):
    tower, items = two_tower(seed=2)
    table = np.asarray(items.embeddings)
    users = np.arange(N_USERS, dtype="int32")
    for chunk in (N_ITEMS, 777, 64):
        path = export_retrieval(tower, table, tmp_path / f"r{chunk}", k=25, chunk_size=chunk)
        loaded = tf.saved_model.load(path)  # keep it alive while its function runs
        top = loaded.serve(tf.constant(users))
        order, scores = reference_top_k(tower, table, users, 25)
        np.testing.assert_array_equal(top["item_ids"], order)
        np.testing.assert_allclose(top["scores"], scores, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_ranking_model_with_smelu_serves_identically_without_tfsmooth(tmp_path):
    from tfsmooth.models import build_ranking_model

    model = build_ranking_model(
        30,
        50,
        5,
        activation="smelu",
        hidden_units=(16, 8),
        cross=True,
        tasks=("binary", "regression"),
        seed=0,
    )
    rng = np.random.default_rng(0)
    features = {
        "user": rng.integers(0, 30, size=16).astype("int32"),
        "item": rng.integers(0, 50, size=16).astype("int32"),
        "genres": (rng.random((16, 5)) < 0.3).astype("float32"),
    }
    path = export_model(model, tmp_path / "ranker")
    served = serve_in_clean_process(path, features, signature="serving_default")
    expected = model(features, training=False)
    assert set(served) == {"binary", "regression"}
    for task in served:  # graph vs eager execution: equal up to float rounding
        np.testing.assert_allclose(served[task], np.asarray(expected[task]), rtol=1e-6, atol=1e-7)


def test_sequential_model_exports_without_an_explicit_signature(tmp_path):
    # Keras 3 Sequential models have `.inputs` but raise on `.input`.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation=smelu), keras.layers.Dense(1)]
    )
    assert input_signature_of(model).shape.as_list() == [None, 6]
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    served = serve_in_clean_process(export_model(model, tmp_path / "seq"), x)
    (output,) = served.values()
    np.testing.assert_allclose(output, np.asarray(model(x)), rtol=1e-6, atol=1e-7)


def test_bad_arguments(tmp_path):
    tower, items = two_tower()
    table = np.asarray(items.embeddings)
    with pytest.raises(ValueError, match=r"`k` must be an integer >= 1\. Received: k=0"):
        export_retrieval(tower, table, tmp_path / "a", k=0)
    with pytest.raises(TypeError, match=r"`k` must be an integer\. Received: k=2\.5"):
        export_retrieval(tower, table, tmp_path / "a", k=2.5)
    with pytest.raises(ValueError, match=r"`k` must be <= num_candidates=2500\. Received: k=2501"):
        export_retrieval(tower, table, tmp_path / "a", k=2501)
    with pytest.raises(ValueError, match=r"`max_k` must be <= num_candidates=2500"):
        export_retrieval(tower, table, tmp_path / "a", max_k=3000)
    with pytest.raises(ValueError, match=r"`k` must be <= max_k=5\. Received: k=10"):
        export_retrieval(tower, table, tmp_path / "a", k=10, max_k=5)
    with pytest.raises(
        TypeError, match=r"`max_k` must be an integer or None\. Received: max_k=True"
    ):
        export_retrieval(tower, table, tmp_path / "a", max_k=True)
    with pytest.raises(ValueError, match="one id per candidate"):
        export_retrieval(tower, table, tmp_path / "b", candidate_ids=np.arange(3))
    with pytest.raises(ValueError, match=r"`candidate_ids` must be unique\. .* repeating 0"):
        export_retrieval(tower, table, tmp_path / "b", candidate_ids=np.arange(N_ITEMS) % 2493)
    with pytest.raises(ValueError, match=r"must not contain -1: it means 'no item'"):
        export_retrieval(tower, table, tmp_path / "b", candidate_ids=np.arange(N_ITEMS) - 1)
    with pytest.raises(ValueError, match=r"must not contain ''"):
        export_retrieval(tower, table[:2], tmp_path / "b", k=1, candidate_ids=["a", ""])
    with pytest.raises(TypeError, match="`candidate_ids` must be integers or strings"):
        export_retrieval(tower, table, tmp_path / "b", candidate_ids=np.arange(N_ITEMS) * 0.5)
    with pytest.raises(ValueError, match="NaN or Inf"):
        export_retrieval(tower, np.full((4, DIM), np.nan, "float32"), tmp_path / "c", k=1)
    with pytest.raises(ValueError, match=r"float matrix \[num_candidates, d\]"):
        export_retrieval(tower, np.arange(5), tmp_path / "d", k=1)
    with pytest.raises(ValueError, match=r"`chunk_size` must be an integer >= 1\. Received: chunk"):
        export_retrieval(tower, table, tmp_path / "e", chunk_size=0)
    with pytest.raises(TypeError, match=r"Received: chunk_size='8'"):
        export_retrieval(tower, table, tmp_path / "e", chunk_size="8")
    k_feature = keras.Input((), dtype="int32", name="k")
    k_tower = keras.Model(k_feature, keras.layers.Embedding(4, DIM)(k_feature))
    with pytest.raises(ValueError, match=r"may not be named `k` or `exclude_ids`.*\['k'\]"):
        export_retrieval(k_tower, table, tmp_path / "f")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="Pass `input_signature`"):
        input_signature_of(Subclassed())


# ----------------------------------------------------------------------------------------------------
# Per-request k and exclusions (TFRS issues 298 and 744).


def padded_exclusions(rng, rows: int, width: int, num_items: int) -> np.ndarray:
    """Random ids to exclude per query, some rows short (padded with -1), repeats included."""
    exclude = rng.integers(0, num_items, size=(rows, width))
    for row in range(rows):
        exclude[row, rng.integers(0, width + 1) :] = -1
    exclude[0, :] = -1  # a query that excludes nothing
    return exclude


def test_per_request_k_and_exclusions_are_exact(tmp_path):
    tower, items = two_tower(seed=3)
    table = np.asarray(items.embeddings)
    users = np.arange(0, N_USERS, 2, dtype="int32")
    queries = np.asarray(tower(users))
    rng = np.random.default_rng(5)
    exclude = padded_exclusions(rng, len(users), 30, N_ITEMS)
    # The query's own best items: exclusions that matter.
    exclude[1, :10] = np.argsort(-brute_force_scores(queries[1:2], table))[0, :10]
    reference = brute_force_scores(queries, table, exclude)
    for chunk in (N_ITEMS, 333):
        path = export_retrieval(
            tower, items, tmp_path / f"r{chunk}", k=5, max_k=40, chunk_size=chunk
        )
        served = tf.saved_model.load(path)
        default = served.signatures["serving_default"](user_id=tf.constant(users))
        assert_exact_top_k(
            default["item_ids"], default["scores"], brute_force_scores(queries, table), 5
        )
        for k in (1, 17, 40):
            top = served.signatures["top_k"](
                user_id=tf.constant(users), k=tf.constant(k), exclude_ids=tf.constant(exclude)
            )
            assert_exact_top_k(top["item_ids"], top["scores"], reference, k)
        # The Python function takes either input alone.
        only_k = served.serve(tf.constant(users), k=tf.constant(12))
        assert_exact_top_k(
            only_k["item_ids"], only_k["scores"], brute_force_scores(queries, table), 12
        )
        only_excluded = served.serve(tf.constant(users), exclude_ids=tf.constant(exclude))
        assert_exact_top_k(only_excluded["item_ids"], only_excluded["scores"], reference, 5)
        nothing = served.signatures["top_k"](
            user_id=tf.constant(users),
            k=tf.constant(3),
            exclude_ids=tf.zeros([len(users), 0], tf.int64),
        )
        assert_exact_top_k(
            nothing["item_ids"], nothing["scores"], brute_force_scores(queries, table), 3
        )


def test_string_ids_exclusions_and_free_slots(tmp_path):
    """Fewer than k items left: id "" / -1 and score -inf, after every real item."""
    tower, items = two_tower(seed=4)
    table = np.asarray(items.embeddings)[:6]
    names = np.array([f"movie-{i}" for i in range(6)])
    users = np.array([1, 2], "int32")
    exclude = np.array([["movie-0", "movie-1", "movie-2", "movie-3"], ["movie-5", "", "", ""]])
    path = export_retrieval(tower, table, tmp_path / "r", candidate_ids=names, k=2, max_k=6)
    served = tf.saved_model.load(path)  # kept alive while its functions run
    top = served.serve(tf.constant(users), k=6, exclude_ids=tf.constant(exclude))
    ids = np.char.decode(np.asarray(top["item_ids"]).astype(bytes), "utf-8")
    scores = np.asarray(top["scores"])
    reference = brute_force_scores(np.asarray(tower(users)), table, [[0, 1, 2, 3], [5, -1, -1, -1]])
    positions = np.array([[int(i.split("-")[1]) if i else -1 for i in row] for row in ids])
    assert_exact_top_k(positions[:1, :2], scores[:1, :2], reference[:1], 2)
    assert_exact_top_k(positions[1:, :5], scores[1:, :5], reference[1:], 5)
    assert ids[0, 2:].tolist() == ["", "", "", ""] and ids[1, 5] == ""
    assert np.all(scores[0, 2:] == -np.inf) and scores[1, 5] == -np.inf
    # Integer ids: the free slots hold -1.
    path = export_retrieval(tower, table, tmp_path / "i", candidate_ids=np.arange(6) + 100, k=6)
    served = tf.saved_model.load(path)
    top = served.serve(tf.constant(users), exclude_ids=tf.constant([[100, 101]] * 2, tf.int64))
    assert np.asarray(top["item_ids"])[:, 4:].tolist() == [[-1, -1], [-1, -1]]
    assert not np.isin(np.asarray(top["item_ids"]), [100, 101]).any()


def test_bad_requests_fail_in_the_served_model_naming_the_input(tmp_path):
    tower, items = two_tower()
    path = export_retrieval(tower, items, tmp_path / "r", k=5, max_k=30)
    served = tf.saved_model.load(path)
    users = tf.constant([1, 2])
    no_exclusion = tf.fill([2, 1], tf.constant(-1, tf.int64))
    top_k = served.signatures["top_k"]
    for k in (31, 0, -3):
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=rf"`k` must be an integer in \[1, max_k=30\]\. Received: k=\] \[{k}\]",
        ):
            top_k(user_id=users, k=tf.constant(k), exclude_ids=no_exclusion)
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"`exclude_ids` must hold ids in \[0, 2500\), or -1 for no item.*\[2500 -7\]",
    ):
        top_k(
            user_id=users,
            k=tf.constant(3),
            exclude_ids=tf.constant([[1, 2500], [-7, -1]], tf.int64),
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"one row per query.*\] \[3\] \[2\]"):
        top_k(user_id=users, k=tf.constant(3), exclude_ids=tf.zeros([3, 1], tf.int64))
    names = np.array([f"m{i}" for i in range(N_ITEMS)])
    path = export_retrieval(tower, items, tmp_path / "s", candidate_ids=names, max_k=20)
    served = tf.saved_model.load(path)
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"`exclude_ids` must hold ids of the exported candidates, or the empty string for no item.*\[nope\]",
    ):
        served.serve(users, exclude_ids=tf.constant([["m1", ""], ["nope", "m2"]]))


def test_export_without_max_k_keeps_k_fixed(tmp_path):
    """Backward compatible: serving_default as before; a request may ask for up to k, no more."""
    tower, items = two_tower()
    served = tf.saved_model.load(export_retrieval(tower, items, tmp_path / "r", k=7))
    users = tf.constant([0, 5])
    assert served.signatures["serving_default"](user_id=users)["item_ids"].shape == (2, 7)
    assert served.serve(users, k=tf.constant(7))["scores"].shape == (2, 7)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"max_k=7\]\. Received: k=\] \[8\]"):
        served.serve(users, k=tf.constant(8))


@pytest.mark.slow
def test_top_k_signature_serves_without_tfsmooth(tmp_path):
    tower, items = two_tower(seed=6)
    table = np.asarray(items.embeddings)
    users = np.arange(0, N_USERS, 4, dtype="int32")
    exclude = padded_exclusions(np.random.default_rng(7), len(users), 12, N_ITEMS)
    path = export_retrieval(tower, items, tmp_path / "r", k=10, max_k=50, chunk_size=500)
    served = serve_in_clean_process(
        path,
        {"user_id": users, "k": np.int32(25), "exclude_ids": exclude.astype("int64")},
        signature="top_k",
    )
    reference = brute_force_scores(np.asarray(tower(users)), table, exclude)
    assert_exact_top_k(served["item_ids"], served["scores"], reference, 25)


# ----------------------------------------------------------------------------------------------------
# SASRec.


def small_sasrec():
    from tfsmooth.models import SASRec

    keras.utils.set_random_seed(0)
    model = SASRec(60, max_length=8, embedding_dim=8, num_blocks=1, dropout_rate=0.0)
    history = np.random.default_rng(8).integers(1, 61, size=(6, 8)).astype("int32")
    history[0, :5] = 0  # left padding
    history[1, :] = 0  # no history at all
    model(history)
    return model, history


def test_sasrec_export_excludes_history_and_takes_k_and_exclusions(tmp_path):
    model, history = small_sasrec()
    path = export_sasrec(model, tmp_path / "next", k=5, max_k=20, chunk_size=16)
    served = tf.saved_model.load(path)
    top = served.signatures["serving_default"](history=tf.constant(history))
    assert top["item_ids"].dtype == tf.int32
    assert_exact_top_k(top["item_ids"], top["scores"], sasrec_reference(model, history), 5)
    indices, _ = model.recommend(history, k=5)  # the model's own dense recommendation
    np.testing.assert_array_equal(np.sort(top["item_ids"], 1), np.sort(indices, 1))
    exclude = np.full((6, 4), -1, "int32")
    exclude[2] = [np.asarray(top["item_ids"])[2, 0], 0, 7, 7]
    more = served.signatures["top_k"](
        history=tf.constant(history), k=tf.constant(20), exclude_ids=tf.constant(exclude)
    )
    assert_exact_top_k(
        more["item_ids"], more["scores"], sasrec_reference(model, history, exclude), 20
    )
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"`history` must hold item ids in \[1, 60\]"
    ):
        served.serve(tf.constant([[0, 61]], tf.int32))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"max_length=8 long\. Received: length=\] \[9\]"
    ):
        served.serve(tf.ones([1, 9], tf.int32))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"`exclude_ids` must hold item ids in \[1, 60\]"
    ):
        served.serve(tf.constant(history[:1]), exclude_ids=tf.constant([[61]], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"max_k=20\]\. Received: k=\] \[21\]"):
        served.serve(tf.constant(history[:1]), k=tf.constant(21))


def test_sasrec_export_free_slots_and_no_history_exclusion(tmp_path):
    from tfsmooth.models import SASRec

    model = SASRec(4, max_length=5, embedding_dim=4, num_blocks=1, dropout_rate=0.0)
    history = np.array([[0, 0, 1, 2, 3], [0, 0, 0, 0, 1]], "int32")
    model(history)
    served = tf.saved_model.load(export_sasrec(model, tmp_path / "a", k=4))
    top = served.serve(tf.constant(history))
    np.testing.assert_array_equal(np.asarray(top["item_ids"])[0], [4, -1, -1, -1])
    assert np.all(np.asarray(top["scores"])[0, 1:] == -np.inf)
    assert sorted(np.asarray(top["item_ids"])[1, :3]) == [2, 3, 4] and top["item_ids"][1, 3] == -1
    kept = tf.saved_model.load(export_sasrec(model, tmp_path / "b", k=4, exclude_history=False))
    top = kept.serve(tf.constant(history))
    assert sorted(np.asarray(top["item_ids"])[0]) == [1, 2, 3, 4]
    assert_exact_top_k(
        np.asarray(top["item_ids"]),
        top["scores"],
        sasrec_reference(model, history, exclude_history=False),
        4,
    )


def test_sasrec_export_bad_arguments(tmp_path):
    from tfsmooth.models import SASRec

    model = SASRec(10, max_length=4, embedding_dim=4, num_blocks=1)
    with pytest.raises(ValueError, match="must be built"):
        export_sasrec(model, tmp_path / "a")
    model(np.ones((1, 4), "int32"))
    with pytest.raises(ValueError, match=r"`k` must be <= num_items=10\. Received: k=11"):
        export_sasrec(model, tmp_path / "a", k=11)
    with pytest.raises(TypeError, match=r"Received: exclude_history=1"):
        export_sasrec(model, tmp_path / "a", exclude_history=1)
    with pytest.raises(TypeError, match=r"must be a tfsmooth\.models\.SASRec"):
        export_sasrec(keras.Sequential([keras.layers.Dense(1)]), tmp_path / "a")


@pytest.mark.slow
def test_sasrec_export_serves_without_tfsmooth(tmp_path):
    model, history = small_sasrec()
    path = export_sasrec(model, tmp_path / "next", k=3, max_k=10)
    exclude = np.array([[5, -1]] * 6, "int32")
    served = serve_in_clean_process(
        path, {"history": history, "k": np.int32(10), "exclude_ids": exclude}, signature="top_k"
    )
    reference = sasrec_reference(model, history, exclude)
    assert_exact_top_k(served["item_ids"], served["scores"], reference, 10)

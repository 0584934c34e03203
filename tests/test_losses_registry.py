"""tfsmooth.losses.get: one registry of catalog losses by name, shared by SASRec and CatalogRetrieval;
tfsmooth.ops.compute_dtype: the one half-precision rule."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import requires_tfrs
from references import full_ce_reference

from tfsmooth import losses, ops
from tfsmooth._keras import keras
from tfsmooth.losses import (
    CatalogCrossEntropy,
    SampledSoftmaxCrossEntropy,
    ScalableCrossEntropy,
)
from tfsmooth.models import SASRec

rng = np.random.default_rng(7)
N, C, D = 12, 9, 4
QUERIES = rng.normal(size=(N, D)).astype("float32")
TABLE = rng.normal(size=(C, D)).astype("float32")
LABELS = rng.integers(0, C, size=N)

#: What each name must build: its class and the options that make its meaning.
MEANINGS = {
    "catalog": (CatalogCrossEntropy, {}),
    "scalable": (ScalableCrossEntropy, {}),
    "sampled": (SampledSoftmaxCrossEntropy, {"sampling": "uniform"}),
    "sampled_log_uniform": (SampledSoftmaxCrossEntropy, {"sampling": "log_uniform"}),
}


def _without_name(config: dict) -> dict:
    return {key: value for key, value in config.items() if key != "name"}


def test_names_are_the_documented_set():
    assert losses.LOSSES == ("catalog", "scalable", "sampled", "sampled_log_uniform", "bce")


@pytest.mark.parametrize("name", list(MEANINGS))
def test_each_name_builds_its_loss(name):
    cls, options = MEANINGS[name]
    loss = losses.get(name)
    assert type(loss) is cls
    assert _without_name(loss.get_config()) == _without_name(cls(**options).get_config())


def test_options_reach_the_constructor():
    loss = losses.get("sampled", num_sampled=7, seed=3)
    assert (loss.sampling, loss.num_sampled, loss.seed) == ("uniform", 7, 3)
    assert losses.get("catalog", chunk_size=5).get_config()["chunk_size"] == 5


def test_catalog_by_name_is_the_full_softmax_cross_entropy():
    got = float(losses.get("catalog")(LABELS, QUERIES, item_embeddings=TABLE))
    np.testing.assert_allclose(got, full_ce_reference(QUERIES, TABLE, LABELS)[0], rtol=1e-5)


def test_bce_matches_numpy_with_a_single_possible_negative():
    # Rows: 0 padding, 1 and 2 items. The only negative of item 1 is item 2 and vice versa, so
    # every draw is known: loss = softplus(-q.w_y) + k softplus(q.w_other).
    table = rng.normal(size=(3, D))
    queries = rng.normal(size=(6, D))
    labels = np.array([1, 2, 1, 2, 2, 1])
    loss = losses.get("bce", num_negatives=3)
    got = float(loss(labels, queries.astype("float32"), item_embeddings=table.astype("float32")))
    positive = np.sum(queries * table[labels], axis=1)
    negative = np.sum(queries * table[3 - labels], axis=1)
    expected = np.mean(np.logaddexp(0, -positive) + 3 * np.logaddexp(0, negative))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bce_config_round_trips_whole():
    loss = losses.get("bce", num_negatives=4, seed=11)
    config = json.loads(json.dumps(keras.utils.serialize_keras_object(loss)))
    revived = losses.get(config)
    assert type(revived) is type(loss)
    assert revived.get_config() == loss.get_config()
    assert loss.get_config()["num_negatives"] == 4


def test_instance_is_returned_and_serialized_loss_is_revived():
    loss = ScalableCrossEntropy(bucket_size_y=8, seed=2)
    assert losses.get(loss) is loss
    config = json.loads(json.dumps(keras.utils.serialize_keras_object(loss)))
    revived = losses.get(config)
    assert type(revived) is ScalableCrossEntropy
    assert revived.get_config() == loss.get_config()


def test_bad_identifiers():
    with pytest.raises(ValueError, match=re.escape(f"`loss` must be one of {losses.LOSSES}")):
        losses.get("softmax")
    for bad in (3, None, ["catalog"], keras.losses.MeanSquaredError()):
        with pytest.raises(TypeError, match="`loss` must be one of"):
            losses.get(bad)
    with pytest.raises(TypeError, match="`loss` must be one of"):
        losses.get(keras.utils.serialize_keras_object(keras.losses.MeanSquaredError()))
    with pytest.raises(ValueError, match="Options apply only to a loss given by name"):
        losses.get(CatalogCrossEntropy(), chunk_size=4)
    with pytest.raises(ValueError, match=re.escape("`num_negatives` must be")):
        losses.get("bce", num_negatives=0)
    with pytest.raises(TypeError, match="num_sampled"):
        losses.get("sampled", num_sampled="8")


@pytest.mark.parametrize("name", list(losses.LOSSES))
def test_sasrec_gives_each_name_the_registry_meaning(name):
    model = SASRec(C, max_length=4, embedding_dim=4, num_blocks=0, loss=name, num_negatives=2)
    expected = losses.get(name, **({"num_negatives": 2} if name == "bce" else {}))
    assert type(model.retrieval_loss) is type(expected)
    assert _without_name(model.retrieval_loss.get_config()) == _without_name(expected.get_config())
    assert model.get_config()["loss"] == name


@requires_tfrs
@pytest.mark.parametrize("name", list(losses.LOSSES))
def test_catalog_retrieval_gives_each_name_the_registry_meaning(name):
    from tfsmooth.tasks import CatalogRetrieval

    task = CatalogRetrieval(TABLE, loss=name)
    expected = losses.get(name)
    assert type(task.catalog_loss) is type(expected)
    assert _without_name(task.catalog_loss.get_config()) == _without_name(expected.get_config())
    assert task.get_config()["loss"] == name


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (tf.float16, tf.float32),
        (tf.bfloat16, tf.float32),
        (tf.float32, tf.float32),
        (tf.float64, tf.float64),
        ("float16", tf.float32),
        (np.float64, tf.float64),
        (tf.int32, tf.int32),
    ],
)
def test_compute_dtype_widens_only_half_precision(dtype, expected):
    assert ops.compute_dtype(dtype) == expected


def test_compute_dtype_rejects_what_is_not_a_dtype():
    for bad in ("nope", 3.5, None):
        with pytest.raises(TypeError, match=re.escape(f"Received: dtype={bad!r}")):
            ops.compute_dtype(bad)

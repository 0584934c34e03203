"""``CatalogRetrieval``: a ``tfrs.tasks.Task`` whose loss ranges over the whole item catalog.

This module imports TensorFlow Recommenders, which needs tf-keras: importing it under Keras 3 or
without TFRS raises an ``ImportError`` saying what to install and set. Use it through
``tfsmooth.tasks.CatalogRetrieval``, which imports it on first use.
"""

from __future__ import annotations

from typing import Any

from tfsmooth import _keras

_TFRS_HINT = (
    "tfsmooth.tasks.CatalogRetrieval is a tfrs.tasks.Task and needs TensorFlow Recommenders, which "
    'needs tf-keras: pip install "tfsmooth[tfrs]".'
)

_keras.require_tf_keras(_TFRS_HINT)
try:
    import tensorflow_recommenders as tfrs
except ImportError as error:
    raise ImportError(f"{_TFRS_HINT} ({error})") from error

import tensorflow as tf  # noqa: E402

from tfsmooth import losses as catalog_losses  # noqa: E402
from tfsmooth._keras import keras, register_serializable, replica_count  # noqa: E402
from tfsmooth._validation import check_int, is_integer  # noqa: E402
from tfsmooth.metrics.ranking import _sharded_table, catalog_rank, hit_rate_and_ndcg  # noqa: E402
from tfsmooth.ops.checks import integer_labels  # noqa: E402

__all__ = ["CatalogRetrieval"]


@register_serializable
class CatalogRetrieval(keras.layers.Layer, tfrs.tasks.Task):
    """A TFRS retrieval task whose loss ranges over the whole item catalog.

    The task holds the item table ``W [C, d]`` -- an ``Embedding`` layer, a variable, or an item
    tower applied to the features of all items -- and a catalog loss. Called with query
    embeddings ``[B, d]`` and the indices of their true items ``[B]``, it returns the loss of
    the queries against all ``C`` items, e.g. for SCE:

    .. math::

        \\mathcal{L} = \\frac{1}{|V|}\\sum_{i \\in V} \\max_{b \\ni i}\\Big[\\log\\Big(
            e^{x_i^\\top w_{y_i}} + \\sum_{j \\in Y_b \\setminus\\{y_i\\}} e^{x_i^\\top w_j}
            \\Big) - x_i^\\top w_{y_i}\\Big]

    Under a ``tf.distribute`` strategy the returned loss is divided by the number of replicas,
    so the replicas' summed gradients (``tfrs.Model`` sums them) are those of the mean of the
    replicas' losses: the global batch mean for ``CatalogCrossEntropy``; SCE and sampled
    softmax select per replica. With ``top_k`` it also tracks HR@k and NDCG@k of the true
    items against the whole catalog (:func:`tfsmooth.metrics.ranking.catalog_rank` and
    ``hit_rate_and_ndcg``: ranked chunk by chunk, ties counted against the true item, a query
    whose true item scores NaN a miss).
    Labels may be floats with whole values (as Keras data adapters hand them over); a
    non-integral label raises a ``ValueError`` naming ``labels``, never truncated.

    A sharded item table -- an ``Embedding`` layer built under a parameter-server strategy's
    ``variable_partitioner`` (its ``embeddings`` a ``ShardedVariable``), a ``ShardedVariable`` or a
    list of shard variables -- is never concatenated: the loss and the metrics read it shard by
    shard where each shard lives, and train and evaluate as on the concatenated table.

    Args:
        items: the item table: an ``Embedding`` layer, a tf.Variable / tensor ``[C, d]``, a
            sharded table (see above), or a Keras layer (item tower) that ``item_features`` is
            passed through at every call.
        loss: a name from :data:`tfsmooth.losses.LOSSES` (``"catalog"``, ``"scalable"``,
            ``"sampled"`` (uniform proposal), ``"sampled_log_uniform"``, ``"bce"``; see
            :func:`tfsmooth.losses.get`), a tfsmooth catalog loss
            (``CatalogCrossEntropy(chunk_size=...)``, ``ScalableCrossEntropy(...)``, ...) or its
            serialized config.
        top_k: an int or ints ``>= 1``: cut-offs for the HR@k / NDCG@k metrics (none by
            default: they score every item).
        item_features: the inputs of an item tower for all ``C`` items (a tensor or dict).
            State, like weights: not part of the config.
        metric_chunk_size: int ``>= 1``. Items scored per step by the metrics.
        **kwargs: ``Layer`` arguments (``name``, ...).

    Example:

    >>> import tensorflow as tf, tensorflow_recommenders as tfrs
    >>> from tfsmooth.tasks import CatalogRetrieval
    >>> class TwoTower(tfrs.Model):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.users = tf.keras.layers.Embedding(1000, 32)
    ...         self.items = tf.keras.layers.Embedding(50_000, 32)
    ...         self.task = CatalogRetrieval(self.items, loss="scalable", top_k=[10])
    ...     def compute_loss(self, features, training=False):
    ...         return self.task(self.users(features["user"]), features["item"],
    ...                          compute_metrics=not training)

    References:
        - [Mezentsev et al. (2024)](https://arxiv.org/abs/2409.18721)
        - [Wijmans et al. (2024)](https://arxiv.org/abs/2411.09009)
    """

    def __init__(
        self,
        items: Any = None,
        *,
        loss: Any = "scalable",
        top_k: Any = (),
        item_features: Any = None,
        metric_chunk_size: int = 8192,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(items, dict):
            items = keras.layers.deserialize(items)
        if items is None:
            raise ValueError(
                "`items` must be the item table: an Embedding layer, a variable or tensor "
                "[num_items, d], or an item tower (with `item_features`). Received: items=None"
            )
        tower = isinstance(items, keras.layers.Layer) and not isinstance(
            items, keras.layers.Embedding
        )
        if tower and item_features is None:
            raise ValueError(
                "An item tower given as `items` needs `item_features`, the inputs of all "
                f"items. Received: items={items.name!r}, item_features=None"
            )
        self.items = items
        self.item_features = item_features
        self._loss_spec = loss if isinstance(loss, str) else None
        self.catalog_loss = catalog_losses.get(loss)
        if is_integer(top_k):
            cutoffs = [top_k]
        elif hasattr(top_k, "__iter__") and not isinstance(top_k, (str, bytes, dict)):
            cutoffs = list(top_k)
        else:
            raise TypeError(
                f"`top_k` must be an int or a list of ints >= 1. Received: top_k={top_k!r}"
            )
        for cutoff in cutoffs:
            if not is_integer(cutoff):
                raise TypeError(f"`top_k` must hold integers >= 1. Received: top_k={top_k!r}")
            if cutoff < 1:
                raise ValueError(f"`top_k` must hold integers >= 1. Received: top_k={top_k!r}")
        self.top_k = sorted({int(cutoff) for cutoff in cutoffs})
        self.metric_chunk_size = check_int("metric_chunk_size", metric_chunk_size, 1)
        metrics = {}
        for k in self.top_k:
            metrics[f"hit_rate_at_{k}"] = keras.metrics.Mean(f"hit_rate_at_{k}")
            metrics[f"ndcg_at_{k}"] = keras.metrics.Mean(f"ndcg_at_{k}")
        # Assigned whole, so Keras tracks the metrics (and tfrs.Model reports them).
        self.ranking_metrics = metrics

    def item_embeddings(self) -> Any:
        """The current item table ``[C, d]``.

        A tensor, except for a sharded table (an ``Embedding`` layer or variable holding a
        ``ShardedVariable``, a list of shard variables): that is returned as it is, never
        concatenated, and the loss and the metrics read it shard by shard.
        """
        if isinstance(self.items, keras.layers.Layer):
            if isinstance(self.items, keras.layers.Embedding):
                if not self.items.built:
                    self.items.build((None,))
                table = self.items.embeddings
                return table if _sharded_table(table) is not None else tf.convert_to_tensor(table)
            return tf.convert_to_tensor(self.items(self.item_features))
        if _sharded_table(self.items) is not None:
            return self.items
        return tf.convert_to_tensor(self.items)

    def call(
        self,
        query_embeddings: tf.Tensor,
        labels: tf.Tensor,
        sample_weight: tf.Tensor | None = None,
        mask: tf.Tensor | None = None,
        compute_metrics: bool = True,
        training: bool = False,
    ) -> tf.Tensor:
        """The catalog loss of ``query_embeddings [B, d]`` for true items ``labels [B]``."""
        table = self.item_embeddings()
        labels = integer_labels(labels, "labels")
        loss = self.catalog_loss.unscaled(
            labels, query_embeddings, sample_weight, item_embeddings=table, mask=mask
        )
        # tfrs.Model sums the replicas' gradients: each returns its mean over the replicas.
        replicas = replica_count()
        if replicas > 1:
            loss = loss * (1.0 / replicas)
        if compute_metrics and self.top_k:
            sharded = _sharded_table(table)
            ranks = catalog_rank(
                tf.stop_gradient(query_embeddings),
                # Integer ranks have no gradient; a sharded table is handed over as it is.
                tf.stop_gradient(table) if sharded is None else table,
                labels,
                chunk_size=self.metric_chunk_size,
            )
            num_items = tf.shape(table)[0] if sharded is None else sharded.num_items
            for k in self.top_k:
                hit, ndcg = hit_rate_and_ndcg(ranks, k, num_items)
                self.ranking_metrics[f"hit_rate_at_{k}"].update_state(hit, sample_weight)
                self.ranking_metrics[f"ndcg_at_{k}"].update_state(ndcg, sample_weight)
        return loss

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            items=keras.layers.serialize(self.items)
            if isinstance(self.items, keras.layers.Layer)
            else None,
            loss=self._loss_spec
            if self._loss_spec is not None
            else keras.utils.serialize_keras_object(self.catalog_loss),
            top_k=list(self.top_k),
            metric_chunk_size=self.metric_chunk_size,
        )
        return config

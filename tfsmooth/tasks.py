"""TensorFlow Recommenders integration: a retrieval task that trains against the whole item catalog.

``tfrs.tasks.Retrieval`` scores each query against the candidates of its batch. :class:`CatalogRetrieval`
holds the item table (or the layer that makes it) and one of tfsmooth's catalog losses instead, so a
``tfrs.Model.compute_loss`` trains a two-tower or sequential model against every item -- exactly
(:class:`~tfsmooth.losses.CatalogCrossEntropy`, chunked or not), or approximately at a fraction of
the memory (:class:`~tfsmooth.losses.ScalableCrossEntropy`, sampled softmax).

TensorFlow Recommenders is imported when the class is first used, not when this module is: ``import
tfsmooth.tasks`` works without TFRS and under Keras 3. TFRS 0.7 needs tf-keras
(``pip install "tfsmooth[tfrs]"`` and ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported);
using ``CatalogRetrieval`` without it raises an ``ImportError`` saying so.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CatalogRetrieval"]  # noqa: F822 (defined on first use, by __getattr__)

_CLASS = None

_TFRS_HINT = (
    "tfsmooth.tasks.CatalogRetrieval is a tfrs.tasks.Task and needs TensorFlow Recommenders, which "
    'needs tf-keras: pip install "tfsmooth[tfrs]" and set TF_USE_LEGACY_KERAS=1 before importing '
    "TensorFlow."
)


def _build_class():
    from tfsmooth import _keras

    if _keras.IS_KERAS_3:
        raise ImportError(
            f"{_TFRS_HINT} This process uses Keras 3 (TF_USE_LEGACY_KERAS is not set)."
        )
    try:
        import tensorflow_recommenders as tfrs
    except ImportError as error:
        raise ImportError(f"{_TFRS_HINT} ({error})") from error

    import tensorflow as tf

    from tfsmooth._keras import keras, register_serializable
    from tfsmooth.losses import (
        CatalogCrossEntropy,
        SampledSoftmaxCrossEntropy,
        ScalableCrossEntropy,
    )
    from tfsmooth.losses._base import CatalogLoss
    from tfsmooth.metrics.ranking import catalog_rank

    losses = {
        "catalog": CatalogCrossEntropy,
        "scalable": ScalableCrossEntropy,
        "sampled": SampledSoftmaxCrossEntropy,
    }

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
        so the replicas' summed gradients are those of the global batch mean (``tfrs.Model``
        sums them). With ``top_k`` it also tracks HR@k and NDCG@k of the true items against the
        whole catalog (ranked chunk by chunk, ties counted against the true item).

        Args:
            items: the item table: an ``Embedding`` layer, a tf.Variable / tensor ``[C, d]``, or a
                Keras layer (item tower) that ``item_features`` is passed through at every call.
            loss: ``"catalog"``, ``"scalable"``, ``"sampled"`` or a tfsmooth catalog loss
                (``CatalogCrossEntropy(chunk_size=...)``, ``ScalableCrossEntropy(...)``, ...).
            top_k: cut-offs for the HR@k / NDCG@k metrics (none by default: they score every item).
            item_features: the inputs of an item tower for all ``C`` items (a tensor or dict).
                State, like weights: not part of the config.
            metric_chunk_size: items scored per step by the metrics.
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
            if isinstance(loss, dict):
                loss = keras.utils.deserialize_keras_object(loss)
            if isinstance(loss, str):
                if loss not in losses:
                    raise ValueError(
                        f"`loss` must be one of {tuple(losses)} or a tfsmooth catalog loss. "
                        f"Received: loss={loss!r}"
                    )
                self._loss_spec, loss = loss, losses[loss]()
            elif isinstance(loss, CatalogLoss):
                self._loss_spec = None
            else:
                raise TypeError(
                    f"`loss` must be one of {tuple(losses)} or a tfsmooth catalog loss. "
                    f"Received: loss={loss!r}"
                )
            self.catalog_loss = loss
            cutoffs = [top_k] if isinstance(top_k, int) else list(top_k)
            if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in cutoffs):
                raise ValueError(f"`top_k` must hold integers >= 1. Received: top_k={top_k!r}")
            self.top_k = sorted(set(cutoffs))
            self.metric_chunk_size = int(metric_chunk_size)
            metrics = {}
            for k in self.top_k:
                metrics[f"hit_rate_at_{k}"] = keras.metrics.Mean(f"hit_rate_at_{k}")
                metrics[f"ndcg_at_{k}"] = keras.metrics.Mean(f"ndcg_at_{k}")
            # Assigned whole, so Keras tracks the metrics (and tfrs.Model reports them).
            self.ranking_metrics = metrics

        def item_embeddings(self) -> tf.Tensor:
            """The current item table ``[C, d]``."""
            if isinstance(self.items, keras.layers.Layer):
                if isinstance(self.items, keras.layers.Embedding):
                    if not self.items.built:
                        self.items.build((None,))
                    return tf.convert_to_tensor(self.items.embeddings)
                return tf.convert_to_tensor(self.items(self.item_features))
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
            loss = self.catalog_loss(
                labels, query_embeddings, sample_weight, item_embeddings=table, mask=mask
            )
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            if replicas > 1 and not _keras.IS_KERAS_3:  # Keras 3 losses scale themselves.
                loss = loss * (1.0 / replicas)
            if compute_metrics and self.top_k:
                ranks = catalog_rank(
                    query_embeddings,
                    tf.stop_gradient(table),
                    labels,
                    chunk_size=self.metric_chunk_size,
                )
                rank_f = tf.cast(ranks, tf.float32)
                for k in self.top_k:
                    hit = tf.cast(ranks < k, tf.float32)
                    ndcg = hit / (tf.math.log(rank_f + 2.0) / tf.math.log(2.0))
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

    return CatalogRetrieval


def __getattr__(name: str) -> Any:
    global _CLASS
    if name == "CatalogRetrieval":
        if _CLASS is None:
            _CLASS = _build_class()
        return _CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "CatalogRetrieval"])

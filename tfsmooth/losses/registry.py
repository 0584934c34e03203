"""The catalog losses by name: one registry, one meaning per name, for SASRec and CatalogRetrieval.

:func:`get` turns what a user passes as ``loss=`` -- a name, a tfsmooth catalog loss, or a
serialized one -- into a catalog loss. :class:`~tfsmooth.models.SASRec` and
:class:`~tfsmooth.tasks.CatalogRetrieval` both resolve their ``loss`` argument with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tfsmooth._keras import keras
from tfsmooth.losses._base import CatalogLoss
from tfsmooth.losses.catalog_cross_entropy import CatalogCrossEntropy
from tfsmooth.losses.negative_sampling import _NegativeSamplingBinaryCrossEntropy
from tfsmooth.losses.sampled_softmax import SampledSoftmaxCrossEntropy
from tfsmooth.losses.scalable_cross_entropy import ScalableCrossEntropy

__all__ = ["LOSSES", "get"]


def _sampled(sampling: str) -> Callable[..., CatalogLoss]:
    def make(**options: Any) -> CatalogLoss:
        return SampledSoftmaxCrossEntropy(sampling=sampling, **options)

    return make


_FACTORIES: dict[str, Callable[..., CatalogLoss]] = {
    "catalog": CatalogCrossEntropy,
    "scalable": ScalableCrossEntropy,
    "sampled": _sampled("uniform"),
    "sampled_log_uniform": _sampled("log_uniform"),
    "bce": _NegativeSamplingBinaryCrossEntropy,
}

#: Loss names :func:`get` knows: full softmax cross-entropy over the catalog, Scalable
#: Cross-Entropy, sampled softmax with log-Q correction under a uniform proposal (``"sampled"``)
#: or a log-uniform (Zipfian) one (``"sampled_log_uniform"``), and binary cross-entropy against
#: uniform negatives drawn from rows ``1..C`` (``"bce"``, SASRec's original; row 0 is padding).
LOSSES = tuple(_FACTORIES)


def get(identifier: Any, **options: Any) -> CatalogLoss:
    """A catalog loss from a name, a loss instance or a serialized loss.

    The names and what they build (``options`` are passed to the constructor):

    - ``"catalog"``: :class:`~tfsmooth.losses.CatalogCrossEntropy` (exact softmax cross-entropy).
    - ``"scalable"``: :class:`~tfsmooth.losses.ScalableCrossEntropy` (SCE).
    - ``"sampled"``: :class:`~tfsmooth.losses.SampledSoftmaxCrossEntropy` with
      ``sampling="uniform"``: no assumption on how items are numbered.
    - ``"sampled_log_uniform"``: the same with ``sampling="log_uniform"`` (Zipfian proposal
      ``P(k) = log((k + 2) / (k + 1)) / log(C + 1)``), right when item ``k`` is the ``k``-th most
      frequent.
    - ``"bce"``: ``-log s(x.w_pos) - sum_k log(1 - s(x.w_neg_k))`` with ``num_negatives`` (1)
      negatives drawn uniformly from rows ``1..C`` without the positive: row 0 is padding, as in
      SASRec and :func:`tfsmooth.data.build_sequences`.

    Args:
        identifier: a name from :data:`LOSSES`, a tfsmooth catalog loss (returned as is), or the
            dict ``keras.utils.serialize_keras_object`` made of one.
        **options: constructor arguments for a name (``chunk_size=``, ``num_sampled=``,
            ``num_negatives=``, ``seed=``, ...); none are allowed with an instance or a dict.

    Returns:
        A catalog loss (a ``CatalogLoss``: ``y_pred`` are queries ``[..., d]``, ``y_true`` labels).

    Raises:
        ValueError: for an unknown name (the message lists :data:`LOSSES`), or options given with
            an instance or a dict.
        TypeError: for anything else, or a dict that is not a serialized catalog loss.

    Example:

    >>> from tfsmooth import losses
    >>> losses.get("sampled", num_sampled=64).sampling
    'uniform'
    >>> loss = losses.get("catalog", chunk_size=1024)
    >>> losses.get(loss) is loss
    True
    >>> import tensorflow as tf
    >>> config = tf.keras.utils.serialize_keras_object(losses.get("scalable", bucket_size_y=64))
    >>> losses.get(config).bucket_size_y
    64
    >>> losses.get("softmax")
    Traceback (most recent call last):
    ...
    ValueError: `loss` must be one of ('catalog', 'scalable', ... Received: loss='softmax'

    References:
        - [Mezentsev et al. (2024)](https://arxiv.org/abs/2409.18721) (SCE)
        - [Kang, McAuley (2018)](https://arxiv.org/abs/1808.09781) (SASRec's BCE)
    """
    kind = (
        f"`loss` must be one of {LOSSES}, a tfsmooth catalog loss or a serialized one. "
        f"Received: loss={identifier!r}"
    )
    if isinstance(identifier, str):
        if identifier not in _FACTORIES:
            raise ValueError(kind)
        return _FACTORIES[identifier](**options)
    if options:
        raise ValueError(
            "Options apply only to a loss given by name. "
            f"Received: loss={identifier!r} with {sorted(options)}"
        )
    if isinstance(identifier, CatalogLoss):
        return identifier
    if isinstance(identifier, dict):
        try:
            loss = keras.utils.deserialize_keras_object(identifier)
        except (TypeError, ValueError) as error:
            raise TypeError(kind) from error
        if isinstance(loss, CatalogLoss):
            return loss
    raise TypeError(kind)

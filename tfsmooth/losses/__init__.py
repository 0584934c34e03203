"""Catalog-wide retrieval losses: pure functions and thin Keras classes.

- :func:`catalog_cross_entropy` / :class:`CatalogCrossEntropy`: the exact softmax cross-entropy over
  the whole catalog, optionally chunked so the ``[N, C]`` logits never exist (Cut Cross-Entropy).
- :func:`scalable_cross_entropy` / :class:`ScalableCrossEntropy`: Scalable Cross-Entropy (SCE),
  cross-entropy over buckets of hard negatives found by random projections.
- :func:`sampled_softmax_cross_entropy` / :class:`SampledSoftmaxCrossEntropy`: the sampled-softmax
  baseline with log-Q correction.
- :func:`get`: a catalog loss by name (:data:`LOSSES`), the registry SASRec and CatalogRetrieval
  share.
"""

from tfsmooth.losses.catalog_cross_entropy import CatalogCrossEntropy, catalog_cross_entropy
from tfsmooth.losses.registry import LOSSES, get
from tfsmooth.losses.sampled_softmax import (
    SampledSoftmaxCrossEntropy,
    sampled_softmax_cross_entropy,
)
from tfsmooth.losses.scalable_cross_entropy import ScalableCrossEntropy, scalable_cross_entropy

__all__ = [
    "LOSSES",
    "CatalogCrossEntropy",
    "SampledSoftmaxCrossEntropy",
    "ScalableCrossEntropy",
    "catalog_cross_entropy",
    "get",
    "sampled_softmax_cross_entropy",
    "scalable_cross_entropy",
]

"""Metrics: how much two models disagree (prediction difference, top-k churn), and ranking metrics.

- :func:`prediction_difference`: absolute, relative (symmetric), L2, L1 and top-1 prediction
  difference between two models' predictions on the same examples.
- :class:`PredictionDifference`: the same as a streaming Keras metric for ``evaluate``.
- :func:`topk_churn`: the share of top-k recommendations two retrieval models do not share.
"""

from tfsmooth.metrics.prediction_difference import KINDS, prediction_difference
from tfsmooth.metrics.prediction_difference_metric import PredictionDifference
from tfsmooth.metrics.topk_churn import topk_churn

__all__ = [
    "KINDS",
    "PredictionDifference",
    "prediction_difference",
    "topk_churn",
]

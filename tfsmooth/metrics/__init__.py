"""Metrics: how much two models disagree (prediction difference, top-k churn), and ranking metrics.

- :func:`prediction_difference`: absolute, relative (symmetric), L2, L1 and top-1 prediction
  difference between two models' predictions on the same examples.
- :class:`PredictionDifference`: the same as a streaming Keras metric for ``evaluate``.
- :func:`topk_churn`: the share of top-k recommendations two retrieval models do not share.
- :func:`catalog_rank`, :func:`hit_rate_and_ndcg`, :func:`catalog_ranking_metrics`: the rank of each
  true item among the whole catalog (chunk by chunk), and HR@k / NDCG@k from it.
- :func:`auc_score`, :func:`log_loss`, :func:`rmse`: exact accuracy over a whole held-out set
  (numpy float64, no binning).
"""

from tfsmooth.metrics.exact import auc_score, log_loss, rmse
from tfsmooth.metrics.prediction_difference import KINDS, prediction_difference
from tfsmooth.metrics.prediction_difference_metric import PredictionDifference
from tfsmooth.metrics.ranking import catalog_rank, catalog_ranking_metrics, hit_rate_and_ndcg
from tfsmooth.metrics.topk_churn import topk_churn

__all__ = [
    "KINDS",
    "PredictionDifference",
    "auc_score",
    "catalog_rank",
    "catalog_ranking_metrics",
    "hit_rate_and_ndcg",
    "log_loss",
    "prediction_difference",
    "rmse",
    "topk_churn",
]

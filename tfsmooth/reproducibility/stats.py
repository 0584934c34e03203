"""Statistics of replica predictions: the mean pairwise PD with a jackknife error, and accuracy.

References:
    - [Shamir, Lin, Coviello. Smooth activations and reproducibility in deep networks (2020)](
      https://arxiv.org/abs/2010.09931)
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from tfsmooth._validation import check_choice
from tfsmooth.metrics.exact import auc_score, log_loss, rmse
from tfsmooth.metrics.prediction_difference import KINDS, prediction_difference

__all__ = ["pairwise_prediction_difference"]


def pairwise_prediction_difference(
    predictions: np.ndarray, kind: str = "relative"
) -> tuple[float, float, np.ndarray]:
    """Mean PD over all pairs of replicas, its jackknife standard error, and the pair matrix.

    Pairs share replicas, so their PDs are not independent and the naive standard error of the pair
    mean is too small. The error here is the jackknife over replicas: with :math:`\\bar{d}_{-i}` the
    mean over pairs without replica ``i`` and :math:`R` replicas,
    :math:`SE = \\sqrt{\\tfrac{R-1}{R} \\sum_i (\\bar{d}_{-i} - \\bar{d}_{\\cdot})^2}`.

    Args:
        predictions: ``[R, N]`` (or ``[R, N, C]`` for class kinds) finite predictions of
            ``R >= 2`` replicas.
        kind: a kind of :func:`tfsmooth.metrics.prediction_difference`.

    Returns:
        ``(mean, standard_error, matrix)``: the error is NaN for 2 replicas (the jackknife needs
        3); ``matrix[i, j]`` is the PD of replicas i and j.

    Raises:
        ValueError: for an unknown ``kind``, fewer than 2 replicas, or a replica whose predictions
            hold NaN or Inf (the message names the replica).
        TypeError: for predictions that are not numbers.

    Example:

    >>> import numpy as np
    >>> from tfsmooth.reproducibility import pairwise_prediction_difference
    >>> predictions = np.array([[0.2, 0.8], [0.3, 0.7], [0.2, 0.4]])  # 3 replicas, 2 examples
    >>> mean, error, matrix = pairwise_prediction_difference(predictions, kind="absolute")
    >>> matrix.round(2).tolist()  # mean |p_i - p_j| of each pair
    [[0.0, 0.1, 0.2], [0.1, 0.0, 0.2], [0.2, 0.2, 0.0]]
    >>> round(mean, 4), round(error, 4)
    (0.1667, 0.0667)

    References:
        - [Shamir, Lin, Coviello (2020)](https://arxiv.org/abs/2010.09931) (prediction difference)
        - [Efron, Stein. The jackknife estimate of variance (1981)](
          https://doi.org/10.1214/aos/1176345462)
    """
    check_choice("kind", kind, KINDS)
    predictions = np.asarray(predictions)
    if predictions.dtype.kind not in "biuf":
        raise TypeError(
            "`predictions` must hold numbers. Received: predictions of dtype "
            f"{predictions.dtype.name}"
        )
    count = len(predictions) if predictions.ndim else 0
    if count < 2:
        raise ValueError(
            "`predictions` needs at least 2 replicas (rows) to compare. Received: predictions "
            f"with shape {predictions.shape}"
        )
    for index, replica in enumerate(predictions):
        bad = int(np.size(replica) - np.isfinite(replica).sum())
        if bad:
            raise ValueError(
                f"`predictions` must be finite. Received: predictions of replica {index} with "
                f"{bad} NaN or Inf value(s) of {np.size(replica)}"
            )
    matrix = np.zeros((count, count))
    pairs = list(itertools.combinations(range(count), 2))
    for i, j in pairs:
        value = float(prediction_difference(predictions[i], predictions[j], kind))
        matrix[i, j] = matrix[j, i] = value
    mean = float(np.mean([matrix[i, j] for i, j in pairs]))
    if count < 3:
        return mean, math.nan, matrix
    leave_out = np.array(
        [np.mean([matrix[i, j] for i, j in pairs if k not in (i, j)]) for k in range(count)]
    )
    error = math.sqrt((count - 1) / count * np.sum((leave_out - leave_out.mean()) ** 2))
    return mean, error, matrix


def _difference_or_nan(predictions: np.ndarray, kind: str) -> tuple[float, float, np.ndarray]:
    """:func:`pairwise_prediction_difference`, or NaN with a zero matrix for fewer than 2 replicas
    (when failed replicas leave too few to compare: the report shows "n/a")."""
    count = len(predictions)
    if count < 2:
        return math.nan, math.nan, np.zeros((count, count))
    return pairwise_prediction_difference(predictions, kind)


def _main_metric(task: str) -> str:
    """The metric that chooses epochs and is plotted against PD."""
    return "auc" if task == "binary" else "rmse"


def _accuracy(task: str, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """AUC and log loss (``"binary"``) or RMSE (``"regression"``) of one set of predictions."""
    if task == "binary":
        return {"auc": auc_score(labels, predictions), "log_loss": log_loss(labels, predictions)}
    return {"rmse": rmse(labels, predictions)}

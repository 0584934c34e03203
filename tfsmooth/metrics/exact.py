"""Exact accuracy metrics over a whole held-out set, in numpy float64 (no binning, no streaming).

- :func:`auc_score`: ROC AUC by the rank (Mann-Whitney U) formula, ties counted half.
- :func:`log_loss`: mean binary cross-entropy with clipped probabilities.
- :func:`rmse`: root mean squared error.

They score the test predictions of :func:`tfsmooth.reproducibility.train_replicas`; the streaming
Keras metrics of :func:`tfsmooth.models.ranking_metrics` approximate them during training.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tfsmooth._validation import check_float

__all__ = ["auc_score", "log_loss", "rmse"]


def _paired(first_name: str, first, second_name: str, second) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays flattened to float64; ``ValueError`` naming both when their lengths differ."""
    arrays = []
    for name, value in ((first_name, first), (second_name, second)):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"`{name}` must hold numbers. Received: {name} of dtype {array.dtype.name}"
            )
        arrays.append(array.astype(np.float64).reshape(-1))
    if len(arrays[0]) != len(arrays[1]):
        raise ValueError(
            f"`{first_name}` and `{second_name}` must have the same length. Received: "
            f"len({first_name})={len(arrays[0])}, len({second_name})={len(arrays[1])}"
        )
    return arrays[0], arrays[1]


def auc_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC by the rank (Mann-Whitney U) formula, ties counted half.

    With :math:`P` positives, :math:`N` negatives and :math:`\\rho_i` the rank of score :math:`i`
    among all scores (1 = lowest; tied scores share their mean rank):

    .. math::

        \\mathrm{AUC} = \\frac{\\sum_{i: y_i = 1} \\rho_i - P (P + 1) / 2}{P N}
        = P(s_i > s_j) + \\tfrac{1}{2} P(s_i = s_j), \\quad y_i = 1,\\ y_j = 0

    No thresholds or binning (unlike the streaming ``keras.metrics.AUC``).

    Args:
        labels: ``[N]`` labels, each 0 or 1 (any shape, flattened).
        scores: ``[N]`` scores or probabilities, higher meaning more likely positive.

    Returns:
        The AUC in ``[0, 1]`` as a float; NaN when one class is absent or when a score is NaN or
        infinite (NaN in, NaN out: such scores have no place in the ranking).

    Raises:
        ValueError: a label other than 0 or 1 (NaN included), or ``labels`` and ``scores`` of
            different lengths.
        TypeError: labels or scores that are not numbers.

    Example:

    >>> from tfsmooth.metrics import auc_score
    >>> auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])  # 3 of the 4 pairs in order
    0.75
    >>> auc_score([0, 1], [0.5, 0.5])  # a tie counts half
    0.5
    >>> auc_score([0, 1], [0.5, float("nan")])
    nan

    References:
        - [Hanley, McNeil. The meaning and use of the area under a ROC curve (1982)](
          https://doi.org/10.1148/radiology.143.1.7063747)
    """
    labels, scores = _paired("labels", labels, "scores", scores)
    binary = (labels == 0) | (labels == 1)
    if not binary.all():
        bad = labels[~binary]
        raise ValueError(
            f"`labels` must each be 0 or 1. Received: labels with {len(bad)} other value(s), "
            f"e.g. {bad[0]!r}"
        )
    positive = labels == 1
    positives, negatives = int(positive.sum()), int((~positive).sum())
    if positives == 0 or negatives == 0 or not np.isfinite(scores).all():
        return math.nan
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float(
        (ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


def log_loss(labels: np.ndarray, probabilities: np.ndarray, epsilon: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to ``[epsilon, 1 - epsilon]``.

    .. math::

        \\mathrm{LogLoss} = -\\frac{1}{N} \\sum_i \\left[y_i \\log \\hat{p}_i
            + (1 - y_i) \\log(1 - \\hat{p}_i)\\right],
        \\qquad \\hat{p}_i = \\mathrm{clip}(p_i, \\epsilon, 1 - \\epsilon)

    Computed in float64 (``log1p`` for the negative term), so it stays finite for probabilities of
    exactly 0 or 1. A NaN label or probability gives NaN (NaN in, NaN out).

    Args:
        labels: ``[N]`` labels in ``[0, 1]`` (any shape, flattened).
        probabilities: ``[N]`` predicted probabilities of the positive class.
        epsilon: clipping margin in ``(0, 0.5)``, keeps the loss finite.

    Returns:
        The mean log loss as a float (natural logarithm).

    Raises:
        ValueError: ``epsilon`` outside ``(0, 0.5)``, or ``labels`` and ``probabilities`` of
            different lengths.
        TypeError: a non-number ``epsilon``, labels or probabilities.

    Example:

    >>> from tfsmooth.metrics import log_loss
    >>> round(log_loss([1, 0], [0.9, 0.2]), 4)  # -(log 0.9 + log 0.8) / 2
    0.1643
    """
    epsilon = check_float("epsilon", epsilon, 0.0, 0.5, min_inclusive=False, max_inclusive=False)
    labels, probabilities = _paired("labels", labels, "probabilities", probabilities)
    p = np.clip(probabilities, epsilon, 1 - epsilon)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p)))


def rmse(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Root mean squared error.

    .. math::

        \\mathrm{RMSE} = \\sqrt{\\frac{1}{N} \\sum_i (y_i - \\hat{y}_i)^2}

    A NaN target or prediction gives NaN (NaN in, NaN out).

    Args:
        targets: ``[N]`` true values (any shape, flattened).
        predictions: ``[N]`` predicted values.

    Returns:
        The RMSE as a float (computed in float64).

    Raises:
        ValueError: ``targets`` and ``predictions`` of different lengths.
        TypeError: targets or predictions that are not numbers.

    Example:

    >>> from tfsmooth.metrics import rmse
    >>> round(rmse([3.0, 4.0], [3.5, 3.0]), 4)  # sqrt((0.25 + 1) / 2)
    0.7906
    """
    predictions, targets = _paired("predictions", predictions, "targets", targets)
    return float(np.sqrt(np.mean((targets - predictions) ** 2)))

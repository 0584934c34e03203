"""Replica training: measure how much identically trained models disagree, per configuration.

Train ``N`` replicas of a model-building function on the same data, differing only in the seed of
their initialisation, of their data order, or both; evaluate them on held-out data; report the mean
pairwise prediction difference (PD) with its standard error next to each replica's accuracy and the
ensemble's -- for several configurations side by side (ReLU vs SmeLU, with or without a cross
layer, ...). This is the experiment of the smooth-activation papers: accuracy against PD.

- :func:`train_replicas` runs it and returns a :class:`ReproducibilityReport`.
- :class:`ReproducibilityReport` gives a text table (:meth:`~ReproducibilityReport.table`), pandas
  DataFrames (:meth:`~ReproducibilityReport.to_dataframe`,
  :meth:`~ReproducibilityReport.replicas_dataframe`), the accuracy-vs-PD plot
  (:meth:`~ReproducibilityReport.plot`) and :meth:`~ReproducibilityReport.save`.

Seeds. Replica ``i`` of every configuration gets the same pair of seeds, so configurations are
compared on the same initialisation and data-order draws::

    init seed  = seed + i     if vary in ("init", "both")   else seed
    order seed = seed + i     if vary in ("order", "both")  else seed

``vary="none"`` trains identical replicas: with op determinism on (the default) their predictions
are bit-identical, a check that the pipeline itself adds no noise.

References:
    - [Shamir, Lin, Coviello. Smooth activations and reproducibility in deep networks (2020)](
      https://arxiv.org/abs/2010.09931)
    - [Lin, Shamir. Real world large scale recommendation systems reproducibility and smooth
      activations (2022)](https://arxiv.org/abs/2202.06499)
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import itertools
import math
import pathlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from tfsmooth._keras import keras
from tfsmooth._validation import check_int
from tfsmooth.metrics.prediction_difference import prediction_difference

__all__ = [
    "ConfigurationResult",
    "ReplicaRun",
    "ReproducibilityReport",
    "auc_score",
    "log_loss",
    "op_determinism",
    "pairwise_prediction_difference",
    "rmse",
    "train_replicas",
]

#: What may differ between replicas (``vary`` of :func:`train_replicas`).
VARY = ("init", "order", "both", "none")
#: Matplotlib's "tab10" colours and a few markers: configuration i gets colour i % 10, marker i // 10.
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")  # fmt: skip
_MARKERS = ("o", "s", "^", "D")
#: The tasks :func:`train_replicas` scores: ``"binary"`` (AUC, log loss), ``"regression"`` (RMSE).
TASKS = ("binary", "regression")


# ----------------------------------------------------------------------------------------------------
# Accuracy metrics (numpy, exact: no binning).


def auc_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC by the rank (Mann-Whitney U) formula, ties counted half.

    With :math:`P` positives, :math:`N` negatives and :math:`\\rho_i` the rank of score :math:`i`
    among all scores (1 = lowest; tied scores share their mean rank):

    .. math::

        \\mathrm{AUC} = \\frac{\\sum_{i: y_i = 1} \\rho_i - P (P + 1) / 2}{P N}
        = P(s_i > s_j) + \\tfrac{1}{2} P(s_i = s_j), \\quad y_i = 1,\\ y_j = 0

    No thresholds or binning (unlike the streaming ``keras.metrics.AUC``).

    Args:
        labels: ``[N]`` labels; values ``> 0.5`` are positives (any shape, flattened).
        scores: ``[N]`` scores or probabilities, higher meaning more likely positive.

    Returns:
        The AUC in ``[0, 1]`` as a float, or NaN when one class is absent.

    Example:

    >>> from tfsmooth.reproducibility import auc_score
    >>> auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])  # 3 of the 4 pairs in order
    0.75
    >>> auc_score([0, 1], [0.5, 0.5])  # a tie counts half
    0.5

    References:
        - [Hanley, McNeil. The meaning and use of the area under a ROC curve (1982)](
          https://doi.org/10.1148/radiology.143.1.7063747)
    """
    labels = np.asarray(labels).reshape(-1) > 0.5
    scores = np.asarray(scores, np.float64).reshape(-1)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(labels: np.ndarray, probabilities: np.ndarray, epsilon: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to ``[epsilon, 1 - epsilon]``.

    .. math::

        \\mathrm{LogLoss} = -\\frac{1}{N} \\sum_i \\left[y_i \\log \\hat{p}_i
            + (1 - y_i) \\log(1 - \\hat{p}_i)\\right],
        \\qquad \\hat{p}_i = \\mathrm{clip}(p_i, \\epsilon, 1 - \\epsilon)

    Computed in float64 (``log1p`` for the negative term), so it stays finite for probabilities of
    exactly 0 or 1.

    Args:
        labels: ``[N]`` labels in ``[0, 1]`` (any shape, flattened).
        probabilities: ``[N]`` predicted probabilities of the positive class.
        epsilon: clipping margin, keeps the loss finite.

    Returns:
        The mean log loss as a float (natural logarithm).

    Example:

    >>> from tfsmooth.reproducibility import log_loss
    >>> round(log_loss([1, 0], [0.9, 0.2]), 4)  # -(log 0.9 + log 0.8) / 2
    0.1643
    """
    labels = np.asarray(labels, np.float64).reshape(-1)
    p = np.clip(np.asarray(probabilities, np.float64).reshape(-1), epsilon, 1 - epsilon)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p)))


def rmse(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Root mean squared error.

    .. math::

        \\mathrm{RMSE} = \\sqrt{\\frac{1}{N} \\sum_i (y_i - \\hat{y}_i)^2}

    Args:
        targets: ``[N]`` true values (any shape, flattened).
        predictions: ``[N]`` predicted values.

    Returns:
        The RMSE as a float (computed in float64).

    Example:

    >>> from tfsmooth.reproducibility import rmse
    >>> round(rmse([3.0, 4.0], [3.5, 3.0]), 4)  # sqrt((0.25 + 1) / 2)
    0.7906
    """
    targets = np.asarray(targets, np.float64).reshape(-1)
    predictions = np.asarray(predictions, np.float64).reshape(-1)
    return float(np.sqrt(np.mean((targets - predictions) ** 2)))


def _accuracy(task: str, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    if task == "binary":
        return {"auc": auc_score(labels, predictions), "log_loss": log_loss(labels, predictions)}
    return {"rmse": rmse(labels, predictions)}


# ----------------------------------------------------------------------------------------------------
# Pairwise PD with a jackknife standard error.


def pairwise_prediction_difference(
    predictions: np.ndarray, kind: str = "relative"
) -> tuple[float, float, np.ndarray]:
    """Mean PD over all pairs of replicas, its jackknife standard error, and the pair matrix.

    Pairs share replicas, so their PDs are not independent and the naive standard error of the pair
    mean is too small. The error here is the jackknife over replicas: with :math:`\\bar{d}_{-i}` the
    mean over pairs without replica ``i`` and :math:`R` replicas,
    :math:`SE = \\sqrt{\\tfrac{R-1}{R} \\sum_i (\\bar{d}_{-i} - \\bar{d}_{\\cdot})^2}`.

    Args:
        predictions: ``[R, N]`` (or ``[R, N, C]`` for class kinds) predictions of R replicas.
        kind: a kind of :func:`tfsmooth.metrics.prediction_difference`.

    Returns:
        ``(mean, standard_error, matrix)``: NaN mean for fewer than 2 replicas, NaN error for fewer
        than 3; ``matrix[i, j]`` is the PD of replicas i and j.

    Raises:
        ValueError: for an unknown ``kind`` (as :func:`tfsmooth.metrics.prediction_difference`).

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
    predictions = np.asarray(predictions)
    count = len(predictions)
    matrix = np.zeros((count, count))
    for i, j in itertools.combinations(range(count), 2):
        value = float(prediction_difference(predictions[i], predictions[j], kind))
        matrix[i, j] = matrix[j, i] = value
    if count < 2:
        return math.nan, math.nan, matrix
    pairs = list(itertools.combinations(range(count), 2))
    mean = float(np.mean([matrix[i, j] for i, j in pairs]))
    if count < 3:
        return mean, math.nan, matrix
    leave_out = np.array(
        [np.mean([matrix[i, j] for i, j in pairs if k not in (i, j)]) for k in range(count)]
    )
    error = math.sqrt((count - 1) / count * np.sum((leave_out - leave_out.mean()) ** 2))
    return mean, error, matrix


# ----------------------------------------------------------------------------------------------------
# Results.


@dataclasses.dataclass
class ReplicaRun:
    """One trained replica: its seeds, held-out metrics and time, or the error that stopped it.

    Attributes:
        configuration: the configuration's name.
        index: replica number, from 0.
        init_seed, order_seed: the seeds of its initialisation and data order.
        metrics: ``{"auc", "log_loss"}`` (binary) or ``{"rmse"}`` (regression) on the test data;
            empty for a failed replica.
        seconds: wall time of build + training + prediction.
        error: ``None``, or why the replica failed (its predictions are then not used).

    :func:`train_replicas` creates them; read them from :attr:`ConfigurationResult.replicas` or
    :meth:`ReproducibilityReport.replicas_dataframe`.

    Example:

    >>> from tfsmooth.reproducibility import ReplicaRun
    >>> run = ReplicaRun("smelu", 0, init_seed=0, order_seed=0, metrics={"auc": 0.71}, seconds=2.5)
    >>> run.failed
    False
    >>> ReplicaRun("relu", 1, 1, 1, metrics={}, seconds=0.4, error="FloatingPointError: NaN").failed
    True
    """

    configuration: str
    index: int
    init_seed: int
    order_seed: int
    metrics: dict[str, float]
    seconds: float
    error: str | None = None

    @property
    def failed(self) -> bool:
        """Whether the replica failed (``error`` is set)."""
        return self.error is not None


@dataclasses.dataclass
class ConfigurationResult:
    """All replicas of one configuration, their pairwise PD and the ensemble.

    Attributes:
        name: the configuration's name.
        task: ``"binary"`` or ``"regression"``.
        replicas: every :class:`ReplicaRun`, failed ones included.
        predictions: ``[R_ok, N]`` test predictions of the replicas that succeeded.
        prediction_difference: mean pairwise relative PD (NaN with fewer than 2 replicas).
        prediction_difference_se: its jackknife standard error.
        absolute_difference, absolute_difference_se: the same for absolute PD.
        pair_matrix: ``[R_ok, R_ok]`` relative PD of each pair.
        ensemble: metrics of the mean prediction of the successful replicas.
        epochs: the epochs of training behind the predictions (chosen by validation, if given).
        validation_curve: mean validation AUC (or RMSE) over replicas after each epoch; empty
            without validation data.

    :func:`train_replicas` creates one per configuration, with
    :func:`pairwise_prediction_difference` for the PD fields; the example builds one by hand.

    Example:

    >>> import numpy as np
    >>> from tfsmooth.reproducibility import (
    ...     ConfigurationResult, ReplicaRun, pairwise_prediction_difference)
    >>> predictions = np.array([[0.2, 0.8, 0.6], [0.3, 0.7, 0.6]])  # 2 replicas, 3 examples
    >>> relative, relative_se, matrix = pairwise_prediction_difference(predictions)
    >>> absolute, absolute_se, _ = pairwise_prediction_difference(predictions, "absolute")
    >>> runs = [ReplicaRun("smelu", i, i, i, {"auc": auc, "log_loss": 0.6}, seconds=1.0)
    ...         for i, auc in enumerate((0.70, 0.74))]
    >>> result = ConfigurationResult("smelu", "binary", runs, predictions, relative, relative_se,
    ...                              absolute, absolute_se, matrix, ensemble={"auc": 0.73})
    >>> round(result.absolute_difference, 4)  # (0.1 + 0.1 + 0) / 3
    0.0667
    >>> [round(value, 4) for value in result.metric("auc")]  # mean, std / sqrt(2)
    [0.72, 0.02]

    References:
        - [Shamir, Lin, Coviello (2020)](https://arxiv.org/abs/2010.09931)
    """

    name: str
    task: str
    replicas: list[ReplicaRun]
    predictions: np.ndarray
    prediction_difference: float
    prediction_difference_se: float
    absolute_difference: float
    absolute_difference_se: float
    pair_matrix: np.ndarray
    ensemble: dict[str, float]
    epochs: int = 0
    validation_curve: list[float] = dataclasses.field(default_factory=list)

    @property
    def succeeded(self) -> list[ReplicaRun]:
        """The replicas that trained and predicted without error."""
        return [r for r in self.replicas if not r.failed]

    @property
    def failures(self) -> list[ReplicaRun]:
        """The replicas that failed."""
        return [r for r in self.replicas if r.failed]

    def metric(self, name: str) -> tuple[float, float]:
        """Mean and standard error (``std / sqrt(n)``) of a replica metric over successful replicas.

        Args:
            name: a key of the replicas' ``metrics`` (``"auc"``, ``"log_loss"`` or ``"rmse"``).

        Returns:
            ``(mean, standard_error)``: both NaN without successful replicas, the error NaN with
            one (``std`` with ``ddof=1``).

        Raises:
            KeyError: if a successful replica has no metric ``name``.
        """
        values = np.array([r.metrics[name] for r in self.succeeded], np.float64)
        if len(values) == 0:
            return math.nan, math.nan
        error = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
        return float(values.mean()), error


def _format(mean: float, error: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(error):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {error:.{digits}f}"


@dataclasses.dataclass
class ReproducibilityReport:
    """The results of :func:`train_replicas`: one :class:`ConfigurationResult` per configuration.

    Attributes:
        configurations: results by configuration name, in the order they were given.
        settings: how the replicas were trained (replicas, vary, epochs, batch size, seed, ...).

    :func:`train_replicas` returns one. It reads as a text table (:meth:`table`, also ``str``), as
    pandas DataFrames (:meth:`to_dataframe`, :meth:`replicas_dataframe`), as the accuracy-vs-PD
    figure (:meth:`plot`) and as files (:meth:`save`). The example builds one by hand.

    Example:

    >>> import numpy as np
    >>> from tfsmooth.reproducibility import (
    ...     ConfigurationResult, ReplicaRun, ReproducibilityReport, pairwise_prediction_difference)
    >>> def result(name, predictions):
    ...     relative, relative_se, matrix = pairwise_prediction_difference(predictions)
    ...     absolute, absolute_se, _ = pairwise_prediction_difference(predictions, "absolute")
    ...     runs = [ReplicaRun(name, i, i, i, {"auc": 0.7, "log_loss": 0.6}, 1.0)
    ...             for i in range(len(predictions))]
    ...     return ConfigurationResult(name, "binary", runs, predictions, relative, relative_se,
    ...                                absolute, absolute_se, matrix, {"auc": 0.72})
    >>> report = ReproducibilityReport(
    ...     {"relu": result("relu", np.array([[0.2, 0.9], [0.4, 0.6], [0.3, 0.8]])),
    ...      "smelu": result("smelu", np.array([[0.3, 0.8], [0.3, 0.7], [0.3, 0.8]]))},
    ...     settings={"replicas": 3, "vary": "both"})
    >>> frame = report.to_dataframe()
    >>> frame["configuration"].tolist(), frame["pd_absolute"].round(4).tolist()
    (['relu', 'smelu'], [0.1667, 0.0333])
    >>> print(report.table().splitlines()[0])  # doctest: +NORMALIZE_WHITESPACE
    configuration  replicas  PD (relative)  PD (absolute)  AUC  log loss  ensemble AUC

    References:
        - [Shamir, Lin, Coviello (2020)](https://arxiv.org/abs/2010.09931)
        - [Lin, Shamir (2022)](https://arxiv.org/abs/2202.06499)
    """

    configurations: dict[str, ConfigurationResult]
    settings: dict[str, Any]

    @property
    def task(self) -> str:
        """``"binary"`` or ``"regression"``: the task of the configurations."""
        return next(iter(self.configurations.values())).task

    @property
    def accuracy_metric(self) -> str:
        """The metric plotted against PD: ``"auc"`` (binary) or ``"rmse"`` (regression)."""
        return "auc" if self.task == "binary" else "rmse"

    @property
    def failures(self) -> list[ReplicaRun]:
        """The failed replicas of every configuration."""
        return [r for c in self.configurations.values() for r in c.failures]

    def to_dataframe(self) -> pd.DataFrame:
        """One row per configuration: replicas, PD (relative, absolute) with errors, accuracy."""
        rows = []
        for result in self.configurations.values():
            row = {
                "configuration": result.name,
                "replicas": len(result.succeeded),
                "failed": len(result.failures),
                "epochs": result.epochs,
                "pd_relative": result.prediction_difference,
                "pd_relative_se": result.prediction_difference_se,
                "pd_absolute": result.absolute_difference,
                "pd_absolute_se": result.absolute_difference_se,
            }
            for name in ("auc", "log_loss") if result.task == "binary" else ("rmse",):
                row[name], row[f"{name}_se"] = result.metric(name)
                row[f"ensemble_{name}"] = result.ensemble.get(name, math.nan)
            row["seconds_per_replica"] = (
                float(np.mean([r.seconds for r in result.succeeded]))
                if result.succeeded
                else math.nan
            )
            rows.append(row)
        return pd.DataFrame(rows)

    def replicas_dataframe(self) -> pd.DataFrame:
        """One row per replica: configuration, seeds, metrics, seconds, error."""
        rows = []
        for result in self.configurations.values():
            for run in result.replicas:
                rows.append(
                    {
                        "configuration": run.configuration,
                        "replica": run.index,
                        "init_seed": run.init_seed,
                        "order_seed": run.order_seed,
                        **run.metrics,
                        "seconds": run.seconds,
                        "error": run.error or "",
                    }
                )
        return pd.DataFrame(rows)

    def table(self) -> str:
        """A fixed-width text table: PD (relative and absolute) and accuracy, ``mean ± SE``."""
        binary = self.task == "binary"
        chosen = any(r.validation_curve for r in self.configurations.values())
        header = ["configuration", "replicas"] + (["epochs"] if chosen else [])
        header += ["PD (relative)", "PD (absolute)"]
        header += ["AUC", "log loss", "ensemble AUC"] if binary else ["RMSE", "ensemble RMSE"]
        rows = []
        for result in self.configurations.values():
            replicas = f"{len(result.succeeded)}"
            if result.failures:
                replicas += f" ({len(result.failures)} failed)"
            row = [result.name, replicas] + ([str(result.epochs)] if chosen else [])
            row += [
                _format(result.prediction_difference, result.prediction_difference_se, 4),
                _format(result.absolute_difference, result.absolute_difference_se, 4),
            ]
            names = ("auc", "log_loss") if binary else ("rmse",)
            row += [_format(*result.metric(name), 4) for name in names]
            row.append(_format(result.ensemble.get(names[0], math.nan), math.nan, 4))
            rows.append(row)
        widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in rows]
        for run in self.failures:
            lines.append(
                f"failed: {run.configuration} replica {run.index} (init seed {run.init_seed}, "
                f"order seed {run.order_seed}): {run.error}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(
        self,
        path: str | pathlib.Path | None = None,
        *,
        ax=None,
        title: str | None = None,
        annotate: bool = True,
    ):
        """Accuracy against relative PD per configuration, with standard-error bars.

        The papers' main picture: better configurations sit towards lower PD and higher AUC (lower
        RMSE). Uses matplotlib's object API (no display needed).

        Args:
            path: where to save the figure (PNG, SVG, PDF by suffix); not saved when ``None``.
            ax: a matplotlib ``Axes`` to draw into; a new figure when ``None``.
            title: the title; a description of the run when ``None``.
            annotate: write each configuration's name next to its point (besides the legend).

        Returns:
            The matplotlib ``Figure``.
        """
        from matplotlib.figure import Figure

        figure = ax.figure if ax is not None else Figure(figsize=(7.0, 4.8), dpi=110)
        ax = ax if ax is not None else figure.add_subplot()
        metric = self.accuracy_metric
        for index, result in enumerate(self.configurations.values()):
            color = _COLORS[index % len(_COLORS)]
            marker = _MARKERS[(index // len(_COLORS)) % len(_MARKERS)]
            y, y_error = result.metric(metric)
            x, x_error = result.prediction_difference, result.prediction_difference_se
            if math.isnan(x) or math.isnan(y):
                continue
            ax.errorbar(
                x,
                y,
                xerr=None if math.isnan(x_error) else x_error,
                yerr=None if math.isnan(y_error) else y_error,
                fmt=marker,
                color=color,
                capsize=3,
                label=result.name,
            )
            if annotate:
                ax.annotate(
                    result.name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8
                )
        ax.set_xlabel("prediction difference between replicas (relative, lower is better)")
        better = "higher" if metric == "auc" else "lower"
        ax.set_ylabel(f"test {metric.upper()} ({better} is better)")
        if title is None:
            settings = self.settings
            title = (
                f"{settings.get('data', 'data')}: {settings.get('replicas')} replicas per "
                f"configuration, vary {settings.get('vary')}"
            )
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if len(self.configurations) > 1:
            ax.legend(fontsize=8, loc="best")
        figure.tight_layout()
        if path is not None:
            figure.savefig(str(path))
        return figure

    def save(self, directory: str | pathlib.Path, prefix: str = "reproducibility") -> dict:
        """Writes ``<prefix>_summary.csv``, ``<prefix>_replicas.csv`` and ``<prefix>.png``.

        Returns:
            ``{"summary": path, "replicas": path, "plot": path}``.
        """
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "summary": directory / f"{prefix}_summary.csv",
            "replicas": directory / f"{prefix}_replicas.csv",
            "plot": directory / f"{prefix}.png",
        }
        self.to_dataframe().to_csv(paths["summary"], index=False)
        self.replicas_dataframe().to_csv(paths["replicas"], index=False)
        self.plot(paths["plot"])
        return paths


# ----------------------------------------------------------------------------------------------------
# Training.


def _determinism_switches():
    """(is_enabled, disable) from TensorFlow; the public API only has ``enable_op_determinism``."""
    try:
        from tensorflow.python.framework import config as tf_config

        return tf_config.is_op_determinism_enabled, tf_config.disable_op_determinism
    except (ImportError, AttributeError):  # pragma: no cover -- other TensorFlow versions
        return (lambda: False), None


@contextlib.contextmanager
def op_determinism(enabled: bool = True) -> Iterator[None]:
    """Turns TensorFlow op determinism on inside the block and restores the previous state after.

    With it, the same seeds give bit-identical results (TensorFlow picks deterministic kernels and
    raises for ops that have none). Where TensorFlow cannot turn it off again, it stays on. Inside
    the block, TensorFlow requires a seed for random ops (``tf.random.set_seed`` or
    ``keras.utils.set_random_seed``): an unseeded one raises ``RuntimeError``.

    Args:
        enabled: turn determinism on; ``False`` leaves TensorFlow's state as it is (a no-op block,
            for callers with a ``deterministic`` switch such as :func:`train_replicas`).

    Returns:
        A context manager (use it in a ``with`` statement); it yields nothing.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.reproducibility import op_determinism
    >>> with op_determinism():
    ...     tf.random.set_seed(7)
    ...     first = tf.random.uniform([3])
    ...     tf.random.set_seed(7)
    ...     second = tf.random.uniform([3])
    >>> bool(tf.reduce_all(first == second))
    True
    """
    is_enabled, disable = _determinism_switches()
    before = is_enabled()
    if enabled and not before:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not before and disable is not None:
            disable()


def _length(structure: Any, name: str) -> int:
    leaves = tf.nest.flatten(structure)
    if not leaves:
        raise ValueError(f"`{name}` holds no arrays. Received: {name}={structure!r}")
    lengths = {len(np.asarray(leaf)) for leaf in leaves}
    if len(lengths) != 1:
        raise ValueError(
            f"All arrays of `{name}` must have the same length. Received lengths {sorted(lengths)}"
        )
    return lengths.pop()


def _take(structure: Any, rows: np.ndarray) -> Any:
    return tf.nest.map_structure(lambda leaf: np.asarray(leaf)[rows], structure)


def _split_xy(data: Any, name: str) -> tuple[Any, Any]:
    if isinstance(data, tuple) and len(data) == 2:
        return data
    raise TypeError(
        f"`{name}` must be a tuple (features, targets) of numpy arrays or dicts of them. "
        f"Received: {name} of type {type(data).__name__}"
    )


def _select(structure: Any, output: str | None, what: str) -> np.ndarray:
    if isinstance(structure, Mapping):
        if output is None:
            if len(structure) != 1:
                raise ValueError(
                    f"The {what} have several outputs {sorted(structure)}: pass `output` to pick "
                    f"the one to compare. Received: output=None"
                )
            output = next(iter(structure))
        if output not in structure:
            raise ValueError(
                f"`output` must be one of the {what}' keys {sorted(structure)}. "
                f"Received: output={output!r}"
            )
        structure = structure[output]
    elif isinstance(structure, (list, tuple)):
        raise TypeError(
            f"The {what} are a list; return a dict of named outputs (or one array) instead."
        )
    array = np.asarray(structure)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    return array


def _call_builder(build_model: Callable, init_seed: int):
    try:
        parameters = [
            p
            for p in inspect.signature(build_model).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        parameters = [None]
    model = build_model(init_seed) if parameters else build_model()
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`build_model` must return a compiled keras.Model. Received: {type(model).__name__}"
        )
    if getattr(model, "optimizer", None) is None:
        raise TypeError(
            "`build_model` must return a compiled keras.Model (call model.compile(...) in it). "
            "Received: a model that is not compiled"
        )
    return model


def _short_error(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    message = lines[0] if lines else ""
    return f"{type(error).__name__}: {message[:300]}".rstrip(": ")


class _Progress:
    def __init__(self, progress: bool | Callable[[dict], None], total: int):
        self.progress, self.total, self.done, self.began = progress, total, 0, time.perf_counter()

    def __call__(self, event: dict) -> None:
        if event.get("event") == "replica_end":
            self.done += 1
        if callable(self.progress):
            self.progress(event)
            return
        if not self.progress or event.get("event") != "replica_end":
            return
        elapsed = time.perf_counter() - self.began
        left = elapsed / self.done * (self.total - self.done)
        run: ReplicaRun = event["run"]
        head = f"[{self.done}/{self.total}] {run.configuration} replica {run.index + 1}"
        if run.failed:
            body = f"FAILED: {run.error}"
        else:
            body = ", ".join(f"{k} {v:.4f}" for k, v in run.metrics.items())
            if event.get("validation_curve"):
                body += " after the last epoch; validation by epoch " + " ".join(
                    f"{v:.4f}" for v in event["validation_curve"]
                )
        eta = f"; about {left:.0f} s left" if self.done < self.total else ""
        print(f"{head}: {body} ({run.seconds:.1f} s{eta})", file=sys.stderr, flush=True)


def _train_one(
    build_model, x, y, evaluation_inputs, init_seed, order_seed, epochs, batch_size, fit_kwargs,
    output, every_epoch,
) -> list[list[np.ndarray]]:  # fmt: skip
    """Trains one replica; returns ``predictions[epoch][evaluation set]`` (only the last epoch
    unless ``every_epoch``)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(init_seed)
    model = _call_builder(build_model, init_seed)
    order = np.random.default_rng(order_seed)
    size = _length(x, "train features")
    snapshots = []
    for epoch in range(epochs):
        rows = order.permutation(size)
        model.fit(
            _take(x, rows),
            _take(y, rows),
            batch_size=batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
            **fit_kwargs,
        )
        if every_epoch or epoch == epochs - 1:
            snapshots.append(
                [
                    _select(
                        model.predict(inputs, batch_size=max(batch_size, 4096), verbose=0),
                        output,
                        "model's predictions",
                    )
                    for inputs in evaluation_inputs
                ]
            )
    return snapshots


def train_replicas(
    build_model: Callable[..., Any] | Mapping[str, Callable[..., Any]],
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    *,
    replicas: int = 5,
    vary: str = "both",
    epochs: int = 3,
    batch_size: int = 256,
    seed: int = 0,
    output: str | None = None,
    task: str | None = None,
    deterministic: bool = True,
    progress: bool | Callable[[dict], None] = True,
    validation: tuple[Any, Any] | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    data_name: str | None = None,
) -> ReproducibilityReport:
    """Trains replicas of one or several model-building functions and measures their disagreement.

    For each configuration and each replica ``i``: clear the Keras session, seed everything with the
    replica's init seed, call ``build_model(init_seed)`` (or ``build_model()``), train ``epochs``
    epochs on ``train`` in an order drawn from the replica's order seed, predict ``test``. Then
    per configuration: the mean pairwise relative and absolute PD of the test predictions with
    jackknife standard errors (:func:`pairwise_prediction_difference`), each replica's AUC and log
    loss (binary) or RMSE (regression), and the same for the ensemble (the mean prediction).

    With ``validation`` data, each configuration is trained for the number of epochs (``1 ..
    epochs``) that gives the best mean validation AUC (lowest RMSE) over its replicas: every replica
    predicts the validation and test data after each epoch, and the test predictions of the chosen
    epoch are the ones reported -- a fair comparison of activations that peak at different times,
    with the test data never used for the choice.

    A replica that raises, or whose predictions hold NaN/Inf, is recorded as failed (with the error)
    and left out of PD and accuracy; the table lists it. ``KeyboardInterrupt`` stops the run.

    Args:
        build_model: a function returning a *compiled* ``keras.Model``, taking the init seed as its
            only argument or no argument; or a mapping ``{name: function}`` of configurations.
        train: ``(features, targets)``: arrays or dicts of arrays, as ``model.fit`` takes them.
        test: ``(features, targets)`` held out for evaluation.
        replicas: replicas per configuration, ``>= 2``.
        vary: what differs between replicas: ``"init"``, ``"order"``, ``"both"`` or ``"none"``.
        epochs: training epochs (the maximum, with ``validation``).
        batch_size: training batch size.
        seed: the first seed; replica ``i`` uses ``seed + i`` (see the module docstring).
        output: for models and targets with several named outputs, the one to compare and score.
        task: ``"binary"`` (AUC, log loss; predictions in [0, 1]) or ``"regression"`` (RMSE);
            inferred from the test targets when ``None`` (all 0/1: binary).
        deterministic: run with TensorFlow op determinism (restored afterwards), so equal seeds give
            bit-identical predictions.
        progress: ``True`` prints one line per replica to stderr (metrics, time, time left);
            ``False`` is silent; a callable receives event dicts (``"replica_start"``,
            ``"replica_end"`` with the :class:`ReplicaRun`).
        validation: optional ``(features, targets)`` to choose each configuration's number of
            epochs (see above); never the test data.
        fit_kwargs: extra arguments of ``model.fit`` (e.g. ``callbacks``).
        data_name: a label of the data for the report and plot.

    Returns:
        A :class:`ReproducibilityReport`.

    Raises:
        ValueError: for bad counts, ``vary`` or ``task``, or mismatched array lengths.
        TypeError: for data not given as ``(features, targets)``.

    Example:

    >>> from tfsmooth.data import encode_ranking, synthetic_ratings
    >>> from tfsmooth.models import build_ranking_model, ranking_losses
    >>> from tfsmooth.reproducibility import train_replicas
    >>> data = encode_ranking(synthetic_ratings(n_users=500, n_items=200, n_ratings=10000))
    >>> def builder(activation):
    ...     def build(seed):
    ...         model = build_ranking_model(data.n_users, data.n_items, data.n_genres,
    ...                                     activation=activation, hidden_units=(64, 32), seed=seed)
    ...         model.compile("adam", loss=ranking_losses())
    ...         return model
    ...     return build
    >>> report = train_replicas(  # doctest: +SKIP
    ...     {"relu": builder("relu"), "smelu": builder("smelu")},
    ...     (data.features("train"), data.targets("train")),
    ...     (data.features("test"), data.targets("test")),
    ...     replicas=3, epochs=2)
    >>> print(report.table())  # doctest: +SKIP
    """
    configurations = (
        dict(build_model) if isinstance(build_model, Mapping) else {"model": build_model}
    )
    if not configurations:
        raise ValueError("`build_model` must name at least one configuration. Received: {}")
    for name, builder in configurations.items():
        if not callable(builder):
            raise TypeError(
                f"`build_model` must be callable (or a mapping of callables). Received: "
                f"{name}={builder!r}"
            )
    replicas = check_int("replicas", replicas, 2)
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    if vary not in VARY:
        raise ValueError(f"`vary` must be one of {list(VARY)}. Received: vary={vary!r}")
    x_train, y_train = _split_xy(train, "train")
    x_test, y_test = _split_xy(test, "test")
    if _length(x_train, "train features") != _length(y_train, "train targets"):
        raise ValueError("`train` features and targets must have the same number of rows")
    labels = _select(y_test, output, "test targets")
    if len(labels) != _length(x_test, "test features"):
        raise ValueError("`test` features and targets must have the same number of rows")
    if task is None:
        task = "binary" if np.isin(np.unique(labels), (0, 1)).all() else "regression"
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {list(TASKS)}. Received: task={task!r}")
    fit_kwargs = dict(fit_kwargs or {})
    if validation is not None:
        x_validation, y_validation = _split_xy(validation, "validation")
        validation = (x_validation, _select(y_validation, output, "validation targets"))
        if len(validation[1]) != _length(x_validation, "validation features"):
            raise ValueError("`validation` features and targets must have the same number of rows")

    total = replicas * len(configurations)
    # Every replica builds new models, so Keras' "retracing" warning is expected: keep it quiet.
    logger = tf.get_logger()
    level = logger.level
    report_progress = _Progress(progress, total)
    with op_determinism(deterministic):
        logger.setLevel("ERROR")
        try:
            results = _train_all(
                configurations, x_train, y_train, (x_test, labels), validation, replicas, vary,
                epochs, batch_size, seed, output, task, fit_kwargs, report_progress,
            )  # fmt: skip
        finally:
            logger.setLevel(level)
    keras.backend.clear_session()
    settings = {
        "replicas": replicas,
        "vary": vary,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "task": task,
        "deterministic": deterministic,
        "data": data_name or "data",
        "train_rows": _length(x_train, "train features"),
        "test_rows": len(labels),
        "validation_rows": 0 if validation is None else len(validation[1]),
    }
    return ReproducibilityReport(configurations=results, settings=settings)


def _check_predictions(snapshots, sizes) -> None:
    for epoch, predictions in enumerate(snapshots, 1):
        for predicted, size in zip(predictions, sizes):
            if predicted.shape[0] != size:
                raise ValueError(
                    f"the model predicted {predicted.shape[0]} rows for {size} examples"
                )
            bad = int(np.size(predicted) - np.isfinite(predicted).sum())
            if bad:
                raise FloatingPointError(
                    f"{bad} of {np.size(predicted)} predictions are NaN or Inf after epoch "
                    f"{epoch} (training diverged?)"
                )


def _train_all(
    configurations, x_train, y_train, test, validation, replicas, vary, epochs, batch_size,
    seed, output, task, fit_kwargs, report_progress,
) -> dict[str, ConfigurationResult]:  # fmt: skip
    x_test, labels = test
    evaluation_inputs = [x_test] if validation is None else [x_test, validation[0]]
    sizes = [len(labels)] if validation is None else [len(labels), len(validation[1])]
    results = {}
    for name, builder in configurations.items():
        runs, snapshots = [], []
        for index in range(replicas):
            init_seed = seed + index if vary in ("init", "both") else seed
            order_seed = seed + index if vary in ("order", "both") else seed
            report_progress({"event": "replica_start", "configuration": name, "replica": index})
            began = time.perf_counter()
            try:
                replica_snapshots = _train_one(
                    builder, x_train, y_train, evaluation_inputs, init_seed, order_seed,
                    epochs, batch_size, fit_kwargs, output, validation is not None,
                )  # fmt: skip
                _check_predictions(replica_snapshots, sizes)
                metrics = _accuracy(task, labels, replica_snapshots[-1][0])
                error = None
                snapshots.append(replica_snapshots)
            except Exception as failure:  # a failed replica is reported, never dropped silently
                metrics, error = {}, _short_error(failure)
            run = ReplicaRun(
                name, index, init_seed, order_seed, metrics, time.perf_counter() - began, error
            )
            runs.append(run)
            event = {"event": "replica_end", "run": run}
            if validation is not None and error is None:
                event["validation_curve"] = [
                    _accuracy(task, validation[1], epoch_predictions[1])[_main_metric(task)]
                    for epoch_predictions in replica_snapshots
                ]
            report_progress(event)
        curve, chosen = [], -1
        if validation is not None and snapshots:
            metric = _main_metric(task)
            curve = [
                float(np.mean([_accuracy(task, validation[1], s[e][1])[metric] for s in snapshots]))
                for e in range(epochs)
            ]
            chosen = int(np.argmax(curve) if metric == "auc" else np.argmin(curve))
            successful = [run for run in runs if not run.failed]
            for run, replica_snapshots in zip(successful, snapshots):
                run.metrics = _accuracy(task, labels, replica_snapshots[chosen][0])
        predictions = [s[chosen][0] for s in snapshots]
        result = _summarise(name, task, runs, predictions, labels)
        result.epochs = epochs if chosen == -1 else chosen + 1
        result.validation_curve = curve
        results[name] = result
    return results


def _main_metric(task: str) -> str:
    return "auc" if task == "binary" else "rmse"


def _summarise(name, task, runs, predictions, labels) -> ConfigurationResult:
    stacked = np.stack(predictions) if predictions else np.zeros((0, len(labels)), np.float32)
    relative, relative_se, matrix = pairwise_prediction_difference(stacked, "relative")
    absolute, absolute_se, _ = pairwise_prediction_difference(stacked, "absolute")
    ensemble = _accuracy(task, labels, stacked.mean(axis=0)) if predictions else {}
    return ConfigurationResult(
        name=name,
        task=task,
        replicas=runs,
        predictions=stacked,
        prediction_difference=relative,
        prediction_difference_se=relative_se,
        absolute_difference=absolute,
        absolute_difference_se=absolute_se,
        pair_matrix=matrix,
        ensemble=ensemble,
    )

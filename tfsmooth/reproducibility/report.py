"""The results of replica training: each replica, each configuration, and the report over them.

A :class:`ReproducibilityReport` reads as a text table, as pandas DataFrames, as the accuracy-vs-PD
figure of the smooth-activation papers and as files.

References:
    - [Shamir, Lin, Coviello. Smooth activations and reproducibility in deep networks (2020)](
      https://arxiv.org/abs/2010.09931)
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ConfigurationResult", "ReplicaRun", "ReproducibilityReport"]

#: Matplotlib's "tab10" colours and a few markers: configuration i gets colour i % 10, marker i // 10.
_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_MARKERS = ("o", "s", "^", "D")


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

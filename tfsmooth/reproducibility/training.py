"""Replica training: train replicas of each configuration, then score and compare them.

:func:`train_replicas` checks its arguments once into a :class:`_TrainingPlan` (what every replica
shares), trains the replicas of each configuration from it and summarises each configuration into a
:class:`~tfsmooth.reproducibility.ConfigurationResult`.

References:
    - [Shamir, Lin, Coviello. Smooth activations and reproducibility in deep networks (2020)](
      https://arxiv.org/abs/2010.09931)
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth._keras import keras
from tfsmooth._validation import check_bool, check_choice, check_int
from tfsmooth.reproducibility._inputs import (
    _call_builder,
    _length,
    _select,
    _short_error,
    _split_xy,
    _take,
)
from tfsmooth.reproducibility.determinism import op_determinism
from tfsmooth.reproducibility.report import ConfigurationResult, ReplicaRun, ReproducibilityReport
from tfsmooth.reproducibility.stats import _accuracy, _difference_or_nan, _main_metric

__all__ = ["train_replicas"]

#: What may differ between replicas (``vary`` of :func:`train_replicas`).
VARY = ("init", "order", "both", "none")
#: The tasks :func:`train_replicas` scores: ``"binary"`` (AUC, log loss), ``"regression"`` (RMSE).
TASKS = ("binary", "regression")


@dataclasses.dataclass(frozen=True, eq=False)
class _TrainingPlan:
    """What every replica of one :func:`train_replicas` run shares, checked once.

    Attributes:
        x_train, y_train: the training features and targets (arrays or dicts of arrays).
        x_test: the test features.
        labels: ``[N]`` test targets of the compared output.
        validation: ``(features, [M] targets)`` to choose the epochs, or ``None``.
        replicas, vary, epochs, batch_size, seed, output, task: as in :func:`train_replicas`.
        fit_kwargs: extra arguments of ``model.fit``.
    """

    x_train: Any
    y_train: Any
    x_test: Any
    labels: np.ndarray
    validation: tuple[Any, np.ndarray] | None
    replicas: int
    vary: str
    epochs: int
    batch_size: int
    seed: int
    output: str | None
    task: str
    fit_kwargs: Mapping[str, Any]

    def seeds(self, index: int) -> tuple[int, int]:
        """``(init_seed, order_seed)`` of replica ``index`` (the same in every configuration)."""
        init_seed = self.seed + index if self.vary in ("init", "both") else self.seed
        order_seed = self.seed + index if self.vary in ("order", "both") else self.seed
        return init_seed, order_seed

    @property
    def evaluation_inputs(self) -> list[Any]:
        """The features each replica predicts: test, then validation if given."""
        return [self.x_test] + ([] if self.validation is None else [self.validation[0]])

    @property
    def evaluation_sizes(self) -> list[int]:
        """The number of rows of each of :attr:`evaluation_inputs`."""
        return [len(self.labels)] + ([] if self.validation is None else [len(self.validation[1])])


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
    build_model: Callable[..., Any], plan: _TrainingPlan, init_seed: int, order_seed: int
) -> list[list[np.ndarray]]:
    """Trains one replica; returns ``predictions[epoch][evaluation set]`` (only the last epoch
    unless the plan has validation data)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(init_seed)
    model = _call_builder(build_model, init_seed)
    order = np.random.default_rng(order_seed)
    size = _length(plan.x_train, "train features")
    every_epoch = plan.validation is not None
    snapshots = []
    for epoch in range(plan.epochs):
        rows = order.permutation(size)
        model.fit(
            _take(plan.x_train, rows),
            _take(plan.y_train, rows),
            batch_size=plan.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
            **plan.fit_kwargs,
        )
        if every_epoch or epoch == plan.epochs - 1:
            snapshots.append(
                [
                    _select(
                        model.predict(inputs, batch_size=max(plan.batch_size, 4096), verbose=0),
                        plan.output,
                        "model's predictions",
                    )
                    for inputs in plan.evaluation_inputs
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
        seed: the first seed; replica ``i`` uses ``seed + i`` (see :mod:`tfsmooth.reproducibility`).
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
        ValueError: for bad counts, ``vary`` or ``task``, mismatched array lengths, empty
            ``train`` or ``test`` data, test or validation targets holding NaN or Inf, or (for
            ``task="binary"``) values other than 0 and 1.
        TypeError: for data not given as ``(features, targets)``, or a ``deterministic`` that is
            not a bool.

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
    check_choice("vary", vary, VARY)
    deterministic = check_bool("deterministic", deterministic)
    x_train, y_train = _split_xy(train, "train")
    x_test, y_test = _split_xy(test, "test")
    if _length(x_train, "train features") != _length(y_train, "train targets"):
        raise ValueError("`train` features and targets must have the same number of rows")
    labels = _select(y_test, output, "test targets")
    if len(labels) != _length(x_test, "test features"):
        raise ValueError("`test` features and targets must have the same number of rows")
    for what, rows in (("train", _length(x_train, "train features")), ("test", len(labels))):
        if rows == 0:  # Keras' predict on no rows fails in every replica with UnboundLocalError
            raise ValueError(f"`{what}` has no rows. Received: {what} with 0 examples")
    if task is None:
        task = "binary" if np.isin(np.unique(labels), (0, 1)).all() else "regression"
    check_choice("task", task, TASKS)
    _check_targets("test", labels, task)
    if validation is not None:
        x_validation, y_validation = _split_xy(validation, "validation")
        validation = (x_validation, _select(y_validation, output, "validation targets"))
        if len(validation[1]) != _length(x_validation, "validation features"):
            raise ValueError("`validation` features and targets must have the same number of rows")
        _check_targets("validation", validation[1], task)
    plan = _TrainingPlan(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        labels=labels,
        validation=validation,
        replicas=replicas,
        vary=vary,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        output=output,
        task=task,
        fit_kwargs=dict(fit_kwargs or {}),
    )

    total = replicas * len(configurations)
    # Every replica builds new models, so Keras' "retracing" warning is expected: keep it quiet.
    logger = tf.get_logger()
    level = logger.level
    report_progress = _Progress(progress, total)
    with op_determinism(deterministic):
        logger.setLevel("ERROR")
        try:
            results = {
                name: _train_configuration(name, builder, plan, report_progress)
                for name, builder in configurations.items()
            }
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


def _check_targets(what: str, targets: np.ndarray, task: str | None) -> None:
    """Scored targets must be finite numbers, and 0 or 1 for ``task="binary"``."""
    if targets.dtype.kind not in "biuf":
        raise TypeError(
            f"`{what}` targets must be numbers. Received: {what} targets of dtype "
            f"{targets.dtype.name}"
        )
    bad = int(np.size(targets) - np.isfinite(targets).sum())
    if bad:
        raise ValueError(
            f"`{what}` targets must be finite. Received: {what} targets with {bad} NaN or Inf "
            f"value(s) of {np.size(targets)}"
        )
    if task == "binary" and not np.isin(targets, (0, 1)).all():
        raise ValueError(
            f"`{what}` targets must be 0 or 1 for task='binary'. Received: {what} targets with "
            f"the values {np.unique(targets)[:5].tolist()} (at most 5 shown)"
        )


def _check_predictions(snapshots: list, sizes: list[int]) -> None:
    """Raises for a replica that predicted the wrong number of rows, or NaN/Inf."""
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


def _train_configuration(
    name: str, builder: Callable[..., Any], plan: _TrainingPlan, report_progress: _Progress
) -> ConfigurationResult:
    """Trains every replica of one configuration and summarises them."""
    runs, snapshots = [], []
    for index in range(plan.replicas):
        init_seed, order_seed = plan.seeds(index)
        report_progress({"event": "replica_start", "configuration": name, "replica": index})
        began = time.perf_counter()
        try:
            replica_snapshots = _train_one(builder, plan, init_seed, order_seed)
            _check_predictions(replica_snapshots, plan.evaluation_sizes)
            metrics = _accuracy(plan.task, plan.labels, replica_snapshots[-1][0])
            error = None
            snapshots.append(replica_snapshots)
        except Exception as failure:  # a failed replica is reported, never dropped silently
            metrics, error = {}, _short_error(failure)
        run = ReplicaRun(
            name, index, init_seed, order_seed, metrics, time.perf_counter() - began, error
        )
        runs.append(run)
        event = {"event": "replica_end", "run": run}
        if plan.validation is not None and error is None:
            event["validation_curve"] = [
                _accuracy(plan.task, plan.validation[1], epoch_predictions[1])[
                    _main_metric(plan.task)
                ]
                for epoch_predictions in replica_snapshots
            ]
        report_progress(event)
    curve, chosen = [], -1
    if plan.validation is not None and snapshots:
        curve, chosen = _choose_epoch(plan, snapshots)
        successful = [run for run in runs if not run.failed]
        for run, replica_snapshots in zip(successful, snapshots):
            run.metrics = _accuracy(plan.task, plan.labels, replica_snapshots[chosen][0])
    predictions = [s[chosen][0] for s in snapshots]
    result = _summarise(name, plan.task, runs, predictions, plan.labels)
    result.epochs = plan.epochs if chosen == -1 else chosen + 1
    result.validation_curve = curve
    return result


def _choose_epoch(plan: _TrainingPlan, snapshots: list) -> tuple[list[float], int]:
    """The mean validation metric after each epoch over the replicas, and the best epoch (from 0)."""
    metric = _main_metric(plan.task)
    validation_labels = plan.validation[1]
    curve = [
        float(
            np.mean([_accuracy(plan.task, validation_labels, s[e][1])[metric] for s in snapshots])
        )
        for e in range(plan.epochs)
    ]
    chosen = int(np.argmax(curve) if metric == "auc" else np.argmin(curve))
    return curve, chosen


def _summarise(
    name: str,
    task: str,
    runs: list[ReplicaRun],
    predictions: list[np.ndarray],
    labels: np.ndarray,
) -> ConfigurationResult:
    """One configuration's result; PD is NaN when fewer than 2 replicas succeeded."""
    stacked = np.stack(predictions) if predictions else np.zeros((0, len(labels)), np.float32)
    relative, relative_se, matrix = _difference_or_nan(stacked, "relative")
    absolute, absolute_se, _ = _difference_or_nan(stacked, "absolute")
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

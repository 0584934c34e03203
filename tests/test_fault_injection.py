"""Fault injection over the whole public API: every bad input gets a clear error or a documented result.

Every name in the ``__all__`` of every tfsmooth subpackage is either driven here or listed in
``NOT_DRIVEN`` with the reason (constants, types). Each entry point gets NaN, ±Inf, empty, huge,
tiny, wrong-dtype and wrong-type values for its arguments, one at a time, and every case ends in
one of two outcomes:

- **clear error**: a ``ValueError``/``TypeError`` (or TensorFlow's ``InvalidArgumentError`` from an
  assertion; ``FileNotFoundError`` for a missing file) whose message names the argument;
- **documented result**: what the entry point's docstring promises for that input, checked here
  (NaN in, NaN out; an empty batch gives 0; a NaN score is a miss; numpy scalars work exactly like
  Python ones; ...).

Anything else -- a finite number from a NaN, a NaN from finite arguments, an error that names
nothing the caller passed -- is *silent* and fails. ``python tests/test_fault_injection.py``
prints the count of cases by outcome.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfsmooth import (
    activations,
    callbacks,
    data,
    layers,
    losses,
    metrics,
    models,
    ops,
    optimizers,
    reproducibility,
    serving,
)
from tfsmooth._keras import keras

CLEAR = "clear error"
DOCUMENTED = "documented result"
ERRORS = (ValueError, TypeError, FileNotFoundError, tf.errors.InvalidArgumentError)

#: Public names that take no input to inject faults into.
NOT_DRIVEN = {
    "data.FEATURES": "a constant (feature names)",
    "metrics.KINDS": "a constant (the kinds of prediction difference)",
    "models.ACTIVATIONS": "a constant (activation names)",
    "losses.LOSSES": "a constant (loss names)",
    "models.TASKS": "a constant (task names)",
    "optimizers.STATISTICS": "a constant (statistic names)",
    "optimizers.ShrunkUpdate": "a result type (named tuple) returned by shrink_update",
    "ops.NO_ITEM": "a constant (the index of an empty top-k slot)",
    "ops.TableShards": "a result type (named tuple) returned by table_shards",
    "data.RankingData": "a result type returned by encode_ranking",
    "data.SequenceSplits": "a result type returned by build_sequences",
    "reproducibility.ConfigurationResult": "a result type inside ReproducibilityReport",
    "reproducibility.ReplicaRun": "a result type inside ReproducibilityReport",
    "reproducibility.ReproducibilityReport": "a result type returned by train_replicas",
    "reproducibility.op_determinism": "a context manager with one flag (driven as a bool)",
    "metrics.auc_score": "the same function as reproducibility.auc_score, driven there",
    "metrics.log_loss": "the same function as reproducibility.log_loss, driven there",
    "metrics.rmse": "the same function as reproducibility.rmse, driven there",
    "data.default_data_path": "takes no argument",
    "data.load_tfds": "needs tensorflow-datasets and a download",
    "serving.export_model": "driven through export_retrieval's shared checks and test_serving",
    "serving.input_signature_of": "takes a model; driven in test_serving",
}


@dataclasses.dataclass
class Case:
    """One fault: ``run()`` calls the entry point with one argument replaced."""

    entry: str
    argument: str
    fault: str
    run: Callable[[], Any]
    #: ``None``: only a clear error is acceptable. Else a predicate on the result that says it is
    #: the documented one.
    documented: Callable[[Any], bool] | None = None
    #: Names an error message may use for this argument (the argument itself by default).
    names: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.entry}[{self.argument}={self.fault}]"


def outcome(case: Case) -> str:
    """``CLEAR``, ``DOCUMENTED`` or a sentence saying why the case is silent."""
    names = case.names or (case.argument,)
    try:
        result = case.run()
    except ERRORS as error:
        message = str(error)
        if any(name in message for name in names):
            return CLEAR
        return f"silent: {type(error).__name__} names none of {names}: {message[:300]}"
    except Exception as error:
        return f"silent: {type(error).__name__}: {str(error)[:300]}"
    if case.documented is not None:
        try:
            if case.documented(result):
                return DOCUMENTED
        except Exception as error:
            return f"silent: the result could not be checked ({error!r})"
    return f"silent: returned {_describe(result)}"


def _describe(result: Any) -> str:
    try:
        array = np.asarray(result)
        if array.dtype.kind in "fc":
            return f"{array.dtype} {array.shape}, finite={bool(np.all(np.isfinite(array)))}"
        return f"{array.dtype} {array.shape}"
    except Exception:
        return type(result).__name__


# ------------------------------------------------------------------------------------------------
# Result predicates.


def _numpy(value: Any) -> np.ndarray:
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


def non_finite(result: Any) -> bool:
    """NaN in, NaN out: the result shows the fault (the documented propagation)."""
    return not np.all(np.isfinite(_numpy(result).astype(np.float64)))


def is_zero(result: Any) -> bool:
    return _numpy(result).size == 1 and float(_numpy(result)) == 0.0


def is_empty(result: Any) -> bool:
    return _numpy(result).size == 0


def same_as(reference: Callable[[], Any]) -> Callable[[Any], bool]:
    """The result equals the one for the Python-typed argument (numpy scalars work alike)."""

    def check(result: Any) -> bool:
        return _same(result, reference())

    return check


def _unnamed(config: Any) -> Any:
    """A config without its (and its nested objects') names: Keras numbers each new object's."""
    if isinstance(config, dict):
        return {k: _unnamed(v) for k, v in config.items() if k != "name"}
    return config


def _same(a: Any, b: Any) -> bool:
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return type(a) is type(b) and _same(dataclasses.asdict(a), dataclasses.asdict(b))
    if hasattr(a, "get_config") and hasattr(b, "get_config"):
        # Keras numbers every new layer's name: the rest of the config must match.
        return type(a) is type(b) and _same(_unnamed(a.get_config()), _unnamed(b.get_config()))
    if isinstance(a, dict) and isinstance(b, dict):
        a, b = _unnamed(a), _unnamed(b)
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
        return a.equals(b)
    if hasattr(a, "ratings") and hasattr(b, "ratings"):
        return a.ratings.equals(b.ratings)
    try:
        x, y = _numpy(a), _numpy(b)
    except Exception:
        return a == b
    if x.dtype.kind in "fciub" and y.dtype.kind in "fciub":
        return x.shape == y.shape and np.allclose(x, y, equal_nan=True)
    return bool(np.all(x == y))


# ------------------------------------------------------------------------------------------------
# Faults by kind of argument.

NAN, INF = math.nan, math.inf


def _bad_numbers(kind: str) -> list[tuple[str, Any]]:
    """The faults of a scalar argument of ``kind``."""
    # "+t": the argument may also be a tensor (a per-channel parameter), so a list is not a fault.
    common = [("string", "1"), ("bool", True)] + ([] if kind.endswith("+t") else [("list", [1.0])])
    kind = kind.removesuffix("+t")
    if kind.startswith("int"):
        faults = [("float", 2.5), ("nan", NAN), *common]
        minimum = int(kind.split(">=")[1].rstrip("?")) if ">=" in kind else None
        if minimum is not None:
            faults.append(("below minimum", minimum - 1))
            faults.append(("negative", -5))
        if not kind.endswith("?"):
            faults.append(("None", None))
        return faults
    if kind == "bool":
        return [("string", "yes"), ("int", 1), ("None", None)]
    if kind == "seed":
        return [("negative", -1), ("float", 2.5), ("string", "1"), ("bool", True)]
    faults = [("nan", NAN), ("inf", INF), ("-inf", -INF), *common, ("None", None)]
    if "32" in kind:
        faults.append(("overflows float32", 1e39))
    if kind.startswith("positive"):
        faults += [("zero", 0.0), ("negative", -1.0)]
        if "32" in kind:
            faults.append(("underflows float32", 1e-46))
    if kind.startswith("nonnegative"):
        faults.append(("negative", -1.0))
    return faults


def _numpy_scalars(kind: str, value: Any) -> list[tuple[str, Any]]:
    kind = kind.removesuffix("+t")
    if kind.startswith("int") or kind == "seed":
        return [("np.int64", np.int64(value)), ("np.int32", np.int32(value))]
    if kind == "bool":
        return [("np.bool_", np.bool_(value))]
    return [("np.float64", np.float64(value)), ("np.float32", np.float32(value))]


def scalar_cases(
    entry: str,
    call: Callable[..., Any],
    arguments: dict[str, tuple[str, Any]],
    *,
    random: bool = False,
):
    """Faults for each scalar argument (``name -> (kind, valid value)``), and numpy scalars that
    must work like the Python value. ``random``: the call draws with an op-level seed (a fresh
    draw at every call), so a numpy ``seed`` is only required to give a finite result."""
    for name, (kind, valid) in arguments.items():
        for fault, value in _bad_numbers(kind):
            yield Case(entry, name, fault, lambda n=name, v=value: call(**{n: v}))
        for fault, value in _numpy_scalars(kind, valid):
            if random and kind == "seed":
                yield Case(
                    entry,
                    name,
                    fault,
                    lambda n=name, v=value: call(**{n: v}),
                    documented=lambda r: not non_finite(r),
                )
                continue
            yield Case(
                entry,
                name,
                fault,
                lambda n=name, v=value: call(**{n: v}),
                # The same as the Python number of the same value (np.float32(0.1) is not 0.1).
                documented=same_as(lambda n=name, v=value: call(**{n: v.item()})),
            )


# ------------------------------------------------------------------------------------------------
# The entry points.

rng = np.random.default_rng(0)
QUERIES = rng.normal(size=(6, 4)).astype("float32")
TABLE = rng.normal(size=(20, 4)).astype("float32")
LABELS = np.array([0, 3, 5, 7, 11, 19], np.int64)


def _with(array: np.ndarray, value: float, index=(0, 0)) -> np.ndarray:
    array = np.array(array, copy=True)
    array[index] = value
    return array


def activation_cases():
    x = np.linspace(-3, 3, 13).astype("float32")
    for entry, fn, params in (
        ("activations.smelu", activations.smelu, {"beta": ("positive32+t", 1.0)}),
        (
            "activations.generalized_smelu",
            activations.generalized_smelu,
            {
                "alpha": ("nonnegative32+t", 1.0),
                "beta": ("nonnegative32+t", 1.0),
                "negative_slope": ("real32+t", 0.0),
                "positive_slope": ("real32+t", 1.0),
                "offset": ("real32+t", 0.0),
            },
        ),
    ):
        yield from scalar_cases(entry, lambda f=fn, **kw: f(x, **kw), params)
        yield Case(entry, "x", "nan", lambda f=fn: f(_with(x, NAN, 3)), documented=non_finite)
        yield Case(
            entry,
            "x",
            "±inf",
            lambda f=fn: f(np.array([-INF, INF], "float32")),
            documented=lambda r: np.array_equal(_numpy(r), [0.0, INF]),
        )
        yield Case(
            entry, "x", "empty", lambda f=fn: f(np.zeros((0, 3), "float32")), documented=is_empty
        )
        yield Case(entry, "x", "string", lambda f=fn: f("abc"))
        yield Case(entry, "x", "None", lambda f=fn: f(None))
        yield Case(entry, "x", "string tensor", lambda f=fn: f(tf.constant(["a"])))
    yield Case(
        "activations.generalized_smelu",
        "alpha",
        "zero width",
        lambda: activations.generalized_smelu(x, alpha=0.0, beta=1e-40),
        names=("alpha", "beta"),
    )


def layer_cases():
    x = rng.normal(size=(3, 4)).astype("float32")
    yield from scalar_cases(
        "layers.SmeLU",
        lambda **kw: layers.SmeLU(**kw),
        {
            "beta": ("positive32", 1.0),
            "learnable": ("bool", True),
            "per_channel": ("bool", True),
            "min_beta": ("positive32", 1e-3),
        },
    )
    yield from scalar_cases(
        "layers.GeneralizedSmeLU",
        lambda **kw: layers.GeneralizedSmeLU(**kw),
        {
            "alpha": ("nonnegative32", 1.0),
            "beta": ("nonnegative32", 1.0),
            "negative_slope": ("real32", 0.0),
            "positive_slope": ("real32", 1.0),
            "offset": ("real32", 0.0),
        },
    )
    yield from scalar_cases(
        "layers.Cross",
        lambda **kw: layers.Cross(**kw),
        {
            "projection_dim": ("int>=1?", 2),
            "diag_scale": ("nonnegative32", 0.5),
            "use_bias": ("bool", True),
        },
    )
    yield Case(
        "layers.SmeLU",
        "inputs",
        "nan",
        lambda: layers.SmeLU()(_with(x, NAN)),
        documented=non_finite,
    )
    yield Case(
        "activations.smelu",
        "beta",
        "per-channel width of the wrong size",
        lambda: activations.smelu(x, beta=np.ones(3, "float32")),
    )
    yield Case(
        "layers.Cross",
        "inputs",
        "int",
        lambda: layers.Cross()(np.arange(12).reshape(3, 4)),
        documented=lambda r: _numpy(r).dtype.kind == "f",
    )
    yield Case(
        "layers.Cross",
        "inputs",
        "nan",
        lambda: layers.Cross()(_with(x, NAN)),
        documented=non_finite,
    )
    yield Case("layers.Embedding", "input_dim", "0", lambda: layers.Embedding(0, 4))
    yield Case("layers.Embedding", "output_dim", "-1", lambda: layers.Embedding(10, -1))
    yield Case(
        "layers.Embedding",
        "inputs",
        "out of range",
        lambda: layers.Embedding(10, 4)(np.array([3, 10])),
        names=("indices", "10"),  # TensorFlow's gather names the index and the range
    )
    yield Case(
        "layers.Embedding",
        "inputs",
        "non-integral float",
        lambda: layers.Embedding(10, 4)(np.array([2.7])),
        # Cast to int32 like Keras's Embedding (which truncates too): row 2.
        documented=lambda r: _numpy(r).shape == (1, 4),
    )


def _loss_documented_nan(result: Any) -> bool:
    return non_finite(result)


def _gradient_agrees(fn: Callable[[tf.Variable, tf.Variable], Any]) -> Callable[[], Any]:
    """Runs a loss and returns the loss if the loss and its gradients agree: a finite loss must
    have finite gradients (a finite loss with a NaN gradient is the silent case)."""

    def run():
        q, t = tf.Variable(_with(QUERIES, NAN)), tf.Variable(TABLE)
        with tf.GradientTape() as tape:
            loss = fn(q, t)
        grads = tape.gradient(loss, [q, t])
        finite = bool(np.isfinite(float(loss)))
        grads_finite = all(
            g is None or np.all(np.isfinite(_numpy(tf.convert_to_tensor(g)))) for g in grads
        )
        if finite and not grads_finite:
            raise AssertionError("finite loss with non-finite gradients")
        return loss

    return run


LOSS_FUNCTIONS = {
    "losses.catalog_cross_entropy": (
        losses.catalog_cross_entropy,
        {"chunk_size": ("int>=1?", 8), "temperature": ("positive32", 1.0)},
    ),
    "losses.scalable_cross_entropy": (
        lambda q, t, y, **kw: losses.scalable_cross_entropy(
            q,
            t,
            y,
            **{"n_buckets": 2, "bucket_size_x": 4, "bucket_size_y": 4, "seed": (1, 2), **kw},
        ),
        {
            "n_buckets": ("int>=1?", 2),
            "bucket_size_x": ("int>=1?", 4),
            "bucket_size_y": ("int>=1", 4),
            "mix_x": ("bool", False),
            "seed": ("seed", 1),
        },
    ),
    "losses.sampled_softmax_cross_entropy": (
        lambda q, t, y, **kw: losses.sampled_softmax_cross_entropy(
            q, t, y, **{"num_sampled": 5, "seed": (1, 2), **kw}
        ),
        {
            "num_sampled": ("int>=1", 5),
            "log_q_correction": ("bool", True),
            "remove_accidental_hits": ("bool", True),
            "seed": ("seed", 1),
        },
    ),
}

LOSS_CLASSES = {
    "losses.CatalogCrossEntropy": (losses.CatalogCrossEntropy, {}),
    "losses.ScalableCrossEntropy": (
        losses.ScalableCrossEntropy,
        {"n_buckets": 2, "bucket_size_x": 4, "bucket_size_y": 4, "seed": 1},
    ),
    "losses.SampledSoftmaxCrossEntropy": (
        losses.SampledSoftmaxCrossEntropy,
        {"num_sampled": 5, "seed": 1},
    ),
}


def loss_cases():
    for entry, (fn, scalars) in LOSS_FUNCTIONS.items():
        yield from scalar_cases(
            entry, lambda f=fn, **kw: f(QUERIES, TABLE, LABELS, **kw), scalars, random=True
        )
        label_names = ("labels",)
        yield Case(
            entry,
            "queries",
            "nan",
            _gradient_agrees(lambda q, t, f=fn: f(q, t, LABELS)),
            documented=_loss_documented_nan,
        )
        yield Case(
            entry,
            "item_embeddings",
            "nan row",
            lambda f=fn: f(QUERIES, _with(TABLE, NAN, (5, 1)), LABELS),
            documented=non_finite,
        )
        yield Case(
            entry,
            "queries",
            "inf",
            lambda f=fn: f(_with(QUERIES, INF), TABLE, LABELS),
            documented=non_finite,
        )
        yield Case(
            entry,
            "queries",
            "empty batch",
            lambda f=fn: f(np.zeros((0, 4), "float32"), TABLE, np.zeros((0,), "int64")),
            documented=is_zero,
        )
        yield Case(
            entry,
            "labels",
            "non-integral float",
            lambda f=fn: f(QUERIES, TABLE, LABELS.astype("float32") + 0.7),
            names=label_names,
        )
        yield Case(
            entry,
            "labels",
            "out of range",
            lambda f=fn: f(QUERIES, TABLE, LABELS + 20),
            names=label_names,
        )
        yield Case(entry, "labels", "None", lambda f=fn: f(QUERIES, TABLE, None), names=label_names)
        yield Case(entry, "queries", "string", lambda f=fn: f("abc", TABLE, LABELS))
        yield Case(
            entry,
            "queries",
            "dimension mismatch",
            lambda f=fn: f(QUERIES[:, :3], TABLE, LABELS),
            names=("queries", "item_embeddings"),
        )
    for entry, (cls, options) in LOSS_CLASSES.items():
        yield Case(
            entry,
            "y_true",
            "non-integral float",
            lambda c=cls, o=options: c(TABLE, **o)(LABELS.astype("float32") + 0.7, QUERIES),
            names=("y_true", "labels"),
        )
        yield Case(
            entry,
            "sample_weight",
            "wrong shape",
            lambda c=cls, o=options: c(TABLE, **o)(LABELS, QUERIES, sample_weight=np.ones(3)),
        )
        yield Case(
            entry,
            "y_pred",
            "nan",
            lambda c=cls, o=options: c(TABLE, **o)(LABELS, _with(QUERIES, NAN)),
            documented=non_finite,
        )
        yield Case(
            entry,
            "reduction",
            "unknown",
            lambda c=cls, o=options: c(TABLE, reduction="average", **o),
        )


def ranking_cases():
    def nan_query_is_a_miss(result):
        hits = _numpy(result["hit_rate"]) if isinstance(result, dict) else None
        ndcg = _numpy(result["ndcg"]) if isinstance(result, dict) else None
        return hits is not None and hits[0] == 0 and ndcg[0] == 0

    yield Case(
        "metrics.catalog_ranking_metrics",
        "queries",
        "nan",
        lambda: metrics.catalog_ranking_metrics(
            _with(QUERIES, NAN, (0, slice(None))), TABLE, LABELS, k=5
        ),
        documented=nan_query_is_a_miss,
    )
    yield Case(
        "metrics.catalog_ranking_metrics",
        "item_embeddings",
        "nan table",
        lambda: metrics.catalog_ranking_metrics(QUERIES, np.full_like(TABLE, NAN), LABELS, k=5),
        documented=lambda r: float(np.max(_numpy(r["hit_rate"]))) == 0.0,
    )
    yield Case(
        "metrics.catalog_rank",
        "labels",
        "non-integral float",
        lambda: metrics.catalog_rank(QUERIES, TABLE, LABELS.astype("float32") + 0.7),
    )
    yield Case(
        "metrics.catalog_rank",
        "queries",
        "dimension mismatch",
        lambda: metrics.catalog_rank(QUERIES[:, :3], TABLE, LABELS),
        names=("queries", "item_embeddings"),
    )
    yield from scalar_cases(
        "metrics.catalog_ranking_metrics",
        lambda **kw: metrics.catalog_ranking_metrics(QUERIES, TABLE, LABELS, **kw),
        {"k": ("int>=1", 5), "chunk_size": ("int>=1", 8)},
    )


def hit_rate_cases():
    ranks = np.array([0, 1, 5], "int32")
    yield from scalar_cases(
        "metrics.hit_rate_and_ndcg",
        lambda **kw: metrics.hit_rate_and_ndcg(ranks, **kw),
        {"k": ("int>=1", 2)},
    )
    yield Case(
        "metrics.hit_rate_and_ndcg",
        "ranks",
        "rank of a NaN-scored item (>= num_items)",
        lambda: metrics.hit_rate_and_ndcg(np.array([7], "int32"), k=10, num_items=5),
        documented=lambda r: float(_numpy(r[0])[0]) == 0.0 and float(_numpy(r[1])[0]) == 0.0,
    )


def registry_cases():
    yield Case("losses.get", "loss", "unknown name", lambda: losses.get("softmax"))
    yield Case("losses.get", "loss", "number", lambda: losses.get(3))
    yield Case("losses.get", "loss", "None", lambda: losses.get(None))
    yield Case(
        "losses.get", "loss", "not a loss config", lambda: losses.get({"class_name": "Nope"})
    )
    yield Case(
        "losses.get",
        "loss",
        "options with an instance",
        lambda: losses.get(losses.CatalogCrossEntropy(), chunk_size=4),
    )
    yield from scalar_cases(
        "losses.get",
        lambda **kw: losses.get("bce", **kw).get_config()["num_negatives"],
        {"num_negatives": ("int>=1", 2)},
    )
    yield from scalar_cases(
        "losses.get",
        lambda **kw: losses.get("bce", **kw).get_config()["seed"],
        {"seed": ("seed", 3)},
    )


def ops_dtype_cases():
    for fault, value in (("string", "nope"), ("number", 3.5), ("None", None)):
        yield Case("ops.compute_dtype", "dtype", fault, lambda v=value: ops.compute_dtype(v))
    yield Case(
        "ops.compute_dtype",
        "dtype",
        "numpy dtype",
        lambda: ops.compute_dtype(np.float16),
        documented=lambda r: r == tf.float32,
    )


def metric_cases():
    a = rng.uniform(0.1, 0.9, size=8).astype("float32")
    b = rng.uniform(0.1, 0.9, size=8).astype("float32")
    yield from scalar_cases(
        "metrics.prediction_difference",
        lambda **kw: metrics.prediction_difference(a, b, **kw),
        {"epsilon": ("positive", 1e-7)},
    )
    yield Case(
        "metrics.prediction_difference",
        "kind",
        "unknown",
        lambda: metrics.prediction_difference(a, b, "nope"),
    )
    yield Case(
        "metrics.prediction_difference",
        "a",
        "nan",
        lambda: metrics.prediction_difference(_with(a, NAN, 0), b),
    )
    yield Case(
        "metrics.prediction_difference",
        "a",
        "huge (l2)",
        lambda: metrics.prediction_difference(
            np.full(4, 1e20, "float32"), np.full(4, -1e20, "float32"), "l2"
        ),
        documented=lambda r: np.isfinite(float(r)) and math.isclose(float(r), 2e20, rel_tol=1e-5),
    )
    yield Case(
        "metrics.prediction_difference",
        "a",
        "empty",
        lambda: metrics.prediction_difference(np.zeros(0, "float32"), np.zeros(0, "float32")),
        documented=is_zero,
    )
    yield Case(
        "metrics.prediction_difference",
        "sample_weight",
        "negative",
        lambda: metrics.prediction_difference(a, b, sample_weight=-np.ones(8)),
    )
    scores_a = rng.normal(size=(4, 10)).astype("float32")
    scores_b = rng.normal(size=(4, 10)).astype("float32")
    yield from scalar_cases(
        "metrics.topk_churn",
        lambda **kw: metrics.topk_churn(scores_a, scores_b, **kw),
        {"k": ("int>=1", 3)},
    )
    yield Case(
        "metrics.topk_churn",
        "scores_a",
        "empty",
        lambda: metrics.topk_churn(np.zeros((0, 10), "float32"), np.zeros((0, 10), "float32"), 3),
        documented=is_zero,
    )
    for fault, weight in (("negative", -np.ones(4)), ("wrong shape", np.ones(3))):
        yield Case(
            "metrics.topk_churn",
            "sample_weight",
            fault,
            lambda w=weight: metrics.topk_churn(scores_a, scores_b, 3, sample_weight=w),
        )
    yield Case(
        "metrics.topk_churn",
        "scores_a",
        "nan",
        lambda: metrics.topk_churn(_with(scores_a, NAN), scores_b, 3),
    )
    yield from scalar_cases(
        "metrics.PredictionDifference",
        lambda **kw: metrics.PredictionDifference(**kw),
        {"epsilon": ("positive", 1e-7)},
    )
    yield Case(
        "metrics.PredictionDifference",
        "kind",
        "unknown",
        lambda: metrics.PredictionDifference(kind="nope"),
    )
    for fault, weight in (("negative", -np.ones(8)), ("wrong shape", np.ones(3))):

        def update(w=weight):
            metric = metrics.PredictionDifference()
            metric.update_state(a, b, sample_weight=w)
            return metric.result()

        yield Case("metrics.PredictionDifference", "sample_weight", fault, update)


def callback_cases():
    yield from scalar_cases(
        "callbacks.StabilityMonitor",
        lambda **kw: callbacks.StabilityMonitor(**kw),
        {
            "spike_factor": ("positive", 3.0),
            "spike_patience": ("int>=1", 5),
            "warmup_steps": ("int>=0", 20),
            "layer_factor": ("positive", 10.0),
            "stop_on_divergence": ("bool", True),
            "restore_on_divergence": ("bool", True),
            "snapshot_every": ("int>=1", 50),
            "log_every": ("int>=1", 1),
            "history_size": ("int>=1", 100),
            "verbose": ("int>=0", 0),
        },
    )
    yield Case(
        "callbacks.StabilityMonitor",
        "loss_in_logs",
        "unknown",
        lambda: callbacks.StabilityMonitor(loss_in_logs="mean"),
    )


def optimizer_cases():
    yield from scalar_cases(
        "optimizers.ClippyAdagrad",
        lambda **kw: optimizers.ClippyAdagrad(**kw),
        {
            "learning_rate": ("positive32", 0.05),
            "initial_accumulator_value": ("nonnegative32", 0.1),
            "variable_relative_threshold": ("nonnegative32", 0.5),
            "absolute_threshold": ("nonnegative32", 1e-3),
        },
    )
    yield Case(
        "optimizers.ClippyAdagrad",
        "granularity",
        "unknown",
        lambda: optimizers.ClippyAdagrad(granularity="x"),
    )
    yield from scalar_cases(
        "optimizers.Clippy",
        lambda **kw: optimizers.Clippy(keras.optimizers.SGD(0.1), **kw),
        {
            "variable_relative_threshold": ("nonnegative32", 0.1),
            "absolute_threshold": ("nonnegative32", 1e-3),
            "export_clipping_factors": ("bool", True),
        },
    )
    yield from scalar_cases(
        "optimizers.LazyAdam",
        lambda **kw: optimizers.LazyAdam(**kw),
        {"learning_rate": ("positive32", 1e-3), "epsilon": ("nonnegative32", 1e-7)},
    )
    for beta in ("beta_1", "beta_2"):
        yield Case(
            "optimizers.LazyAdam",
            beta,
            "1.0",
            lambda beta=beta: optimizers.LazyAdam(**{beta: 1.0}),
        )
    yield Case(
        "optimizers.Clippy", "optimizer", "string", lambda: optimizers.Clippy("not an optimizer")
    )
    yield Case("optimizers.Clippy", "optimizer", "None", lambda: optimizers.Clippy(None))
    yield Case(
        "optimizers.Clippy",
        "optimizer",
        "config dict",
        lambda: optimizers.Clippy({"class_name": "SGD", "config": {"learning_rate": 0.1}}),
        documented=lambda r: isinstance(r, optimizers.Clippy),
    )
    for entry, make in (
        ("optimizers.ClippyAdagrad", lambda: optimizers.ClippyAdagrad(0.1)),
        ("optimizers.Clippy", lambda: optimizers.Clippy(keras.optimizers.Adam(0.1))),
        ("optimizers.LazyAdam", lambda: optimizers.LazyAdam(0.1)),
    ):

        def nan_gradient(make=make):
            variable = tf.Variable(np.ones((3, 2), "float32"))
            other = tf.Variable(np.ones(2, "float32"))
            optimizer = make()
            gradient = tf.constant(_with(np.full((3, 2), 0.5, "float32"), NAN))
            optimizer.apply_gradients([(gradient, variable), (tf.fill([2], 0.5), other)])
            return variable.numpy(), other.numpy()

        yield Case(
            entry,
            "gradient",
            "one nan coordinate",
            nan_gradient,
            # The policy: a variable with a non-finite gradient is left as it was; the others move.
            documented=lambda r: np.array_equal(r[0], np.ones((3, 2))) and np.all(r[1] < 1.0),
        )
    yield Case(
        "optimizers.shrink_update",
        "absolute_threshold",
        "nan",
        lambda: optimizers.shrink_update(tf.ones(3), [tf.ones(3)], [0.1], NAN),
    )
    yield Case(
        "optimizers.shrink_update",
        "relative_thresholds",
        "length mismatch",
        lambda: optimizers.shrink_update(tf.ones(3), [tf.ones(3)], [0.1, 0.2], 0.1),
    )
    yield Case(
        "optimizers.clippy_adagrad_step",
        "learning_rate",
        "nan",
        lambda: optimizers.clippy_adagrad_step(
            tf.ones(3),
            tf.ones(3),
            tf.ones(3),
            NAN,
            variable_relative_threshold=0.5,
            accumulator_relative_threshold=0.0,
            absolute_threshold=1e-3,
            epsilon=1e-7,
        ),
        documented=lambda r: non_finite(r.update),  # NaN in, NaN out: a pure function
    )
    yield Case(
        "optimizers.clipping_statistics",
        "optimizer",
        "string",
        lambda: optimizers.clipping_statistics("x"),
    )
    yield Case(
        "optimizers.clipping_statistics",
        "optimizer",
        "plain optimizer",
        lambda: optimizers.clipping_statistics(keras.optimizers.SGD()),
        documented=lambda r: r == {},
    )
    yield Case(
        "optimizers.find_clippy",
        "optimizer",
        "not an optimizer",
        lambda: optimizers.find_clippy("x"),
    )
    yield Case(
        "optimizers.nonfinite_gradient_count",
        "optimizer",
        "not an optimizer",
        lambda: optimizers.nonfinite_gradient_count("x"),
    )
    yield Case(
        "optimizers.nonfinite_gradient_count",
        "optimizer",
        "plain optimizer",
        lambda: optimizers.nonfinite_gradient_count(keras.optimizers.SGD()),
        documented=lambda r: r is None,
    )


def model_cases():
    yield from scalar_cases(
        "models.SASRec",
        lambda **kw: models.SASRec(**{"num_items": 30, **kw}),
        {
            "num_items": ("int>=1", 30),
            "max_length": ("int>=1", 8),
            "embedding_dim": ("int>=1", 8),
            "num_blocks": ("int>=0", 1),  # 0 blocks: embeddings only
            "num_heads": ("int>=1", 1),
            "dropout_rate": ("nonnegative", 0.1),
        },
    )
    yield Case("models.SASRec", "loss", "unknown", lambda: models.SASRec(30, loss="nope"))

    def small_sasrec():
        model = models.SASRec(30, max_length=5, embedding_dim=8, num_blocks=1)
        model(np.zeros((1, 5), "int32"))
        return model

    yield Case(
        "models.SASRec",
        "k",
        "k > num_items",
        lambda: small_sasrec().recommend(np.ones((2, 5), "int32"), k=31),
    )
    yield Case(
        "models.SASRec",
        "inputs",
        "longer than max_length",
        lambda: small_sasrec().recommend(np.ones((2, 9), "int32"), k=3),
        names=("inputs", "max_length", "sequences"),
    )
    yield Case(
        "models.SASRec",
        "batch_size",
        "zero",
        lambda: small_sasrec().evaluate_ranking(
            np.ones((2, 5), "int32"), np.ones(2, "int32"), batch_size=0
        ),
    )
    yield Case(
        "models.SASRec",
        "inputs",
        "empty",
        lambda: small_sasrec().evaluate_ranking(np.zeros((0, 5), "int32"), np.zeros(0, "int32")),
        names=("inputs", "labels", "empty"),
    )
    yield from scalar_cases(
        "models.build_ranking_model",
        lambda **kw: models.build_ranking_model(
            **{"n_users": 5, "n_items": 6, "n_genres": 2, **kw}
        ),
        {"n_users": ("int>=1", 5), "n_items": ("int>=1", 6), "n_genres": ("int>=1", 2)},
    )
    yield Case(
        "models.build_ranking_model",
        "activation",
        "unknown",
        lambda: models.build_ranking_model(5, 6, 2, activation="nope"),
    )
    yield Case(
        "models.build_ranking_model",
        "hidden_units",
        "zero",
        lambda: models.build_ranking_model(5, 6, 2, hidden_units=(0,)),
    )
    yield Case(
        "models.make_activation", "activation", "unknown", lambda: models.make_activation("nope")
    )
    yield Case(
        "models.make_activation",
        "activation",
        "smelu:inf",
        lambda: models.make_activation("smelu:inf"),
        names=("activation", "beta"),
    )
    yield Case(
        "models.ranking_losses", "tasks", "unknown", lambda: models.ranking_losses(("nope",))
    )
    yield Case(
        "models.ranking_metrics", "tasks", "unknown", lambda: models.ranking_metrics(("nope",))
    )


def _ratings_frame(**overrides):
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(6), 5),
            "item_id": np.tile(np.arange(5), 6),
            "rating": np.tile([1.0, 2.0, 3.0, 4.0, 5.0], 6),
            "timestamp": np.arange(30, dtype=np.int64),
        }
    )
    for column, (row, value) in overrides.items():
        frame[column] = frame[column].astype(object if isinstance(value, str) else float)
        frame.loc[row, column] = value
    return frame


def data_cases(tmp: pathlib.Path):
    header = "userId,movieId,rating,timestamp\n"
    rows = "".join(
        f"{u},{i},{(u + i) % 5 + 1}.0,{1000 + u * 10 + i}\n" for u in range(6) for i in range(5)
    )

    def load(text: str, name: str):
        folder = tmp / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ratings.csv").write_text(text, encoding="utf-8")
        return data.load_ratings(folder / "ratings.csv")

    reference = lambda: load(header + rows, "clean")  # noqa: E731
    yield Case(
        "data.load_ratings",
        "path",
        "UTF-8 BOM header",
        lambda: load("\ufeff" + header + rows, "bom"),
        documented=lambda r: r.ratings.equals(reference().ratings),
    )
    yield Case(
        "data.load_ratings",
        "rating",
        "nan",
        lambda: load(header + rows + "9,1,,1\n", "nan_rating"),
        names=("rating",),
    )
    yield Case(
        "data.load_ratings",
        "timestamp",
        "1e30",
        lambda: load(header + rows + "9,1,3.0,1e30\n", "huge_timestamp"),
        names=("timestamp",),
    )
    yield Case(
        "data.load_ratings",
        "timestamp",
        "fractional",
        lambda: load(header + rows + "9,1,3.0,1000.5\n", "fractional_timestamp"),
        names=("timestamp",),
        documented=lambda r: 1000.5 in set(np.asarray(r.ratings["timestamp"], dtype=np.float64)),
    )
    yield Case(
        "data.load_ratings",
        "path",
        "missing",
        lambda: data.load_ratings(tmp / "nowhere.csv"),
        names=("path", "nowhere.csv"),
    )
    yield Case("data.load_ratings", "path", "None", lambda: data.load_ratings(None))
    yield from scalar_cases(
        "data.synthetic_ratings",
        lambda **kw: data.synthetic_ratings(
            **{"n_users": 50, "n_items": 40, "n_ratings": 400, **kw}
        ),
        {
            "n_users": ("int>=1", 50),
            "n_items": ("int>=1", 40),
            "n_ratings": ("int>=1", 400),
        },
    )
    yield Case(
        "data.synthetic_ratings",
        "n_ratings",
        "one",
        lambda: data.synthetic_ratings(n_ratings=1),
        documented=lambda r: len(r.ratings) == 1,
    )
    yield Case(
        "data.Ratings",
        "ratings",
        "nan rating",
        lambda: data.Ratings(_ratings_frame(rating=(3, NAN))),
    )
    yield Case("data.Ratings", "ratings", "not a frame", lambda: data.Ratings("x"))
    ratings = data.Ratings(_ratings_frame())
    yield from scalar_cases(
        "data.encode_ranking",
        lambda **kw: data.encode_ranking(ratings, **kw),
        {
            "test_fraction": ("nonnegative", 0.2),
            "seed": ("seed", 0),
            "positive_threshold": ("real", 4.0),
        },
    )
    yield Case(
        "data.encode_ranking",
        "test_fraction",
        "one",
        lambda: data.encode_ranking(ratings, test_fraction=1.0),
    )
    yield from scalar_cases(
        "data.build_sequences",
        lambda **kw: data.build_sequences(ratings, **kw),
        {"max_length": ("int>=1", 4), "min_interactions": ("int>=1", 3)},
    )


def reproducibility_cases():
    labels = np.array([0, 1, 0, 1, 1], np.float32)
    scores = np.array([0.1, 0.8, 0.3, 0.6, 0.9], np.float32)
    yield Case(
        "reproducibility.auc_score",
        "scores",
        "nan",
        lambda: reproducibility.auc_score(labels, _with(scores, NAN, 0)),
        documented=non_finite,
    )
    yield Case(
        "reproducibility.auc_score",
        "labels",
        "one class",
        lambda: reproducibility.auc_score(np.ones(5), scores),
        documented=non_finite,
    )
    yield Case(
        "reproducibility.log_loss",
        "probabilities",
        "nan",
        lambda: reproducibility.log_loss(labels, _with(scores, NAN, 0)),
        documented=non_finite,
    )
    yield Case(
        "reproducibility.log_loss",
        "epsilon",
        "negative",
        lambda: reproducibility.log_loss(labels, scores, epsilon=-1.0),
    )
    yield Case(
        "reproducibility.rmse",
        "predictions",
        "nan",
        lambda: reproducibility.rmse(labels, _with(scores, NAN, 0)),
        documented=non_finite,
    )
    yield Case(
        "reproducibility.rmse",
        "predictions",
        "length mismatch",
        lambda: reproducibility.rmse(labels, scores[:3]),
        names=("predictions", "targets"),
    )
    yield Case(
        "reproducibility.pairwise_prediction_difference",
        "predictions",
        "one replica",
        lambda: reproducibility.pairwise_prediction_difference(scores[None, :]),
    )
    yield Case(
        "reproducibility.pairwise_prediction_difference",
        "kind",
        "unknown",
        lambda: reproducibility.pairwise_prediction_difference(
            np.stack([scores, scores]), kind="nope"
        ),
    )
    yield Case(
        "reproducibility.pairwise_prediction_difference",
        "predictions",
        "nan",
        lambda: reproducibility.pairwise_prediction_difference(
            np.stack([_with(scores, NAN, 0), scores])
        ),
        documented=lambda r: not np.isfinite(r[0]),
    )
    yield Case(
        "reproducibility.op_determinism",
        "enabled",
        "string",
        lambda: reproducibility.op_determinism("yes").__enter__(),
    )
    x = rng.normal(size=(8, 3)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")

    def build(seed=None):
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])

    for name, value in (("replicas", 0), ("replicas", 2.5), ("epochs", 0), ("batch_size", -1)):
        yield Case(
            "reproducibility.train_replicas",
            name,
            repr(value),
            lambda n=name, v=value: reproducibility.train_replicas(
                build,
                (x, y),
                (x, y),
                **{"replicas": 2, "epochs": 1, "batch_size": 4, "progress": False, n: v},
            ),
        )


def serving_cases(tmp: pathlib.Path):
    query_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    table = rng.normal(size=(10, 4)).astype("float32")
    for name, value in (("k", 0), ("k", 11), ("k", 2.5), ("chunk_size", 0)):
        yield Case(
            "serving.export_retrieval",
            name,
            repr(value),
            lambda n=name, v=value: serving.export_retrieval(
                query_model, table, tmp / f"export_{n}_{v}", **{n: v}
            ),
        )

    def sasrec():
        model = models.SASRec(30, max_length=5, embedding_dim=8, num_blocks=1)
        model(np.zeros((1, 5), "int32"))
        return model

    for name, value in (("k", 0), ("k", 31), ("max_k", 2), ("chunk_size", 0)):
        yield Case(
            "serving.export_sasrec",
            name,
            repr(value),
            lambda n=name, v=value: serving.export_sasrec(
                sasrec(), tmp / f"sasrec_{n}_{v}", **{"k": 3, n: v}
            ),
        )
    yield Case(
        "serving.export_sasrec",
        "model",
        "not a SASRec",
        lambda: serving.export_sasrec(query_model, tmp / "sasrec_model"),
    )
    yield Case(
        "serving.export_retrieval",
        "candidates",
        "nan",
        lambda: serving.export_retrieval(query_model, _with(table, NAN), tmp / "export_nan"),
    )


def ops_cases():
    from tfsmooth import ops

    yield from scalar_cases(
        "ops.exact_top_k",
        lambda **kw: ops.exact_top_k(QUERIES, TABLE, **{"k": 3, **kw}),
        {"k": ("int>=1", 3), "chunk_size": ("int>=1", 8)},
    )
    yield Case(
        "ops.exact_top_k",
        "k",
        "more than the candidates",
        lambda: ops.exact_top_k(QUERIES, TABLE, 21),
    )
    yield Case(
        "ops.exact_top_k",
        "queries",
        "nan",
        lambda: ops.exact_top_k(_with(QUERIES, NAN, (0, slice(None))), TABLE, 3),
        # A NaN query's scores are all NaN: they show, and never outrank a number.
        documented=lambda r: non_finite(_numpy(r[0])[0]) and not non_finite(_numpy(r[0])[1:]),
    )
    yield Case(
        "ops.exact_top_k",
        "queries",
        "dimension mismatch",
        lambda: ops.exact_top_k(QUERIES[:, :3], TABLE, 3),
        names=("queries", "candidates"),
    )
    yield Case(
        "ops.exact_top_k",
        "exclude",
        "out of range",
        lambda: ops.exact_top_k(QUERIES, TABLE, 3, exclude=np.full((6, 1), 99)),
        names=("exclude",),
        documented=lambda r: _same(r, ops.exact_top_k(QUERIES, TABLE, 3)),
    )
    shards = [tf.Variable(TABLE[:12]), tf.Variable(TABLE[12:])]
    with_nan = _with(TABLE, NAN, (13, 1))
    nan_shards = [tf.Variable(with_nan[:12]), tf.Variable(with_nan[12:])]
    yield Case("ops.table_shards", "item_embeddings", "None", lambda: ops.table_shards(None))
    yield Case("ops.trainable_shards", "variables", "string", lambda: ops.trainable_shards("x"))
    yield Case("ops.trainable_shards", "variables", "None", lambda: ops.trainable_shards(None))
    yield Case(
        "ops.table_shards",
        "item_embeddings",
        "3-D",
        lambda: ops.table_shards(TABLE[None]),
    )
    yield Case(
        "ops.table_shards",
        "item_embeddings",
        "shards of different d",
        lambda: ops.table_shards([tf.Variable(TABLE[:3]), tf.Variable(TABLE[3:, :2])]),
    )
    yield Case("ops.gather_rows", "table", "None", lambda: ops.gather_rows(None, [0]))
    yield Case(
        "ops.gather_rows",
        "ids",
        "out of range",
        lambda: ops.gather_rows(shards, [0, len(TABLE)]),
    )
    yield Case(
        "ops.gather_rows",
        "ids",
        "float",
        lambda: ops.gather_rows(shards, np.array([0.5], "float32")),
    )
    yield Case(
        "ops.gather_rows",
        "table",
        "nan row",
        lambda: ops.gather_rows(nan_shards, [13, 0]),
        # Rows are copied as they are: the NaN shows in the row read, not in the others.
        documented=lambda r: non_finite(_numpy(r)[0]) and not non_finite(_numpy(r)[1]),
    )
    yield Case(
        "ops.all_finite",
        "table",
        "nan row",
        lambda: ops.all_finite(nan_shards),
        documented=lambda r: not bool(r),
    )
    yield Case("ops.all_finite", "table", "None", lambda: ops.all_finite(None))
    yield Case(
        "ops.on_device_of",
        "part",
        "no device",
        lambda: ops.on_device_of(object()),
        # Nothing to place by: a context that does nothing.
        documented=lambda r: hasattr(r, "__enter__") and hasattr(r, "__exit__"),
    )
    yield Case("ops.compute_dtype", "dtype", "string", lambda: ops.compute_dtype("no-such-type"))
    yield Case(
        "ops.compute_dtype",
        "dtype",
        "bfloat16",
        lambda: ops.compute_dtype(tf.bfloat16),
        documented=lambda r: r == tf.float32,
    )


def task_cases():
    try:
        from tfsmooth.tasks import CatalogRetrieval
    except ImportError:  # TFRS imports only under tf-keras
        return
    yield from scalar_cases(
        "tasks.CatalogRetrieval",
        lambda **kw: CatalogRetrieval(TABLE, **kw),
        {"top_k": ("int>=1", 5), "metric_chunk_size": ("int>=1", 8)},
    )
    yield Case(
        "tasks.CatalogRetrieval",
        "labels",
        "non-integral float",
        lambda: CatalogRetrieval(TABLE)(QUERIES, LABELS.astype("float32") + 0.7),
        names=("labels", "y_true"),
    )
    yield Case(
        "tasks.CatalogRetrieval",
        "loss",
        "unknown",
        lambda: CatalogRetrieval(TABLE, loss="nope"),
    )


def all_cases(tmp: pathlib.Path) -> list[Case]:
    groups = (
        activation_cases(),
        layer_cases(),
        loss_cases(),
        ranking_cases(),
        hit_rate_cases(),
        registry_cases(),
        ops_dtype_cases(),
        metric_cases(),
        callback_cases(),
        optimizer_cases(),
        model_cases(),
        data_cases(tmp),
        reproducibility_cases(),
        serving_cases(tmp),
        ops_cases(),
        task_cases(),
    )
    return [case for group in groups for case in group]


_TMP = pathlib.Path(__import__("tempfile").mkdtemp(prefix="tfsmooth-faults-"))
CASES = all_cases(_TMP)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fault_gets_a_clear_error_or_the_documented_result(case):
    result = outcome(case)
    assert result in (CLEAR, DOCUMENTED), f"{case.id}: {result}"


def test_every_public_name_is_driven_or_says_why_not():
    import sys as _sys

    _sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from helpers import public_objects

    driven = {case.entry for case in CASES}
    missing = [
        name for name, _ in public_objects() if name not in NOT_DRIVEN and name not in driven
    ]
    assert not missing, f"public names with no fault cases: {missing}"


def main() -> int:
    counts: dict[str, int] = {}
    silent = []
    for case in CASES:
        result = outcome(case)
        key = result if result in (CLEAR, DOCUMENTED) else "silent"
        counts[key] = counts.get(key, 0) + 1
        if key == "silent":
            silent.append(f"  {case.id}: {result}")
    print(f"{len(CASES)} cases over {len({c.entry for c in CASES})} entry points:")
    for key in (CLEAR, DOCUMENTED, "silent"):
        print(f"  {key}: {counts.get(key, 0)}")
    print("\n".join(silent))
    return 1 if silent else 0


if __name__ == "__main__":
    sys.exit(main())

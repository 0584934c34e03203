"""Per-layer signals of the StabilityMonitor: per-variable readings grouped by layer and summed up.

A layer's variables are the ones whose path (``"dense/kernel"``) starts with the layer's path
(``"dense"``). Norms combine as the norm of the layer's variables taken together
(``sqrt(sum ||v||^2)``), ratios as their worst case: the max of Clippy's update-to-bound ratio, the
min of its clipping factor.

- :func:`clippy_signals`: from a Clippy optimizer's per-variable statistics (recorded in the step).
- :func:`update_signals`: from the weights before and after a step (any optimizer).
- :func:`batch_summary` / :func:`epoch_summary`: one value per signal over the layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth import _keras

__all__ = [
    "batch_summary",
    "clippy_signals",
    "epoch_summary",
    "layer_of",
    "reduce_signal",
    "signal_name",
    "update_signals",
]

LayerSignals = dict[str, dict[str, float]]


def layer_of(path: str) -> str:
    """The layer part of a variable path: ``"model/dense/kernel"`` -> ``"model/dense"``.

    Args:
        path: a variable path (``"/"``-separated); a bare name is its own layer.

    Returns:
        ``path`` without its last component.

    Example:

    >>> layer_of("dense/kernel"), layer_of("bias")
    ('dense', 'bias')
    """
    return path.rsplit("/", 1)[0] if "/" in path else path


def clippy_signals(statistics: Mapping[str, Mapping[str, float]]) -> LayerSignals:
    """Per-layer signals from a Clippy optimizer's per-variable statistics.

    Args:
        statistics: ``{variable path: {"gradient_norm", "variable_norm", "update_ratio",
            "clipping_factor"}}``, as ``clipping_statistics()`` of a Clippy optimizer returns.

    Returns:
        ``{layer: {"gradient_norm", "grad_to_weight", "update_ratio", "clipping_factor"}}``:
        the layer's gradient norm ``||g||``, ``||g|| / ||w||`` (``inf`` for all-zero weights), the
        max update-to-bound ratio and the min clipping factor over its variables.

    Example:

    >>> stats = {
    ...     "dense/kernel": {"gradient_norm": 3.0, "variable_norm": 1.0,
    ...                      "update_ratio": 0.5, "clipping_factor": 1.0},
    ...     "dense/bias": {"gradient_norm": 4.0, "variable_norm": 0.0,
    ...                    "update_ratio": 2.0, "clipping_factor": 0.5},
    ... }
    >>> clippy_signals(stats)["dense"]
    {'gradient_norm': 5.0, 'grad_to_weight': 5.0, 'update_ratio': 2.0, 'clipping_factor': 0.5}
    """
    sums: dict[str, list[float]] = {}
    for path, values in statistics.items():
        entry = sums.setdefault(layer_of(path), [0.0, 0.0, 0.0, math.inf])
        entry[0] += values["gradient_norm"] ** 2
        entry[1] += values["variable_norm"] ** 2
        entry[2] = max(entry[2], values["update_ratio"])
        entry[3] = min(entry[3], values["clipping_factor"])
    layers: LayerSignals = {}
    for layer, (gradient, weight, ratio, factor) in sums.items():
        gradient, weight = math.sqrt(gradient), math.sqrt(weight)
        layers[layer] = {
            "gradient_norm": gradient,
            "grad_to_weight": gradient / weight if weight > 0 else math.inf,
            "update_ratio": ratio,
            "clipping_factor": factor,
        }
    return layers


def update_signals(variables: Sequence[Any], before: Sequence[tf.Tensor]) -> LayerSignals:
    """Per-layer update norms from the weights before a step and the variables after it.

    One read from the device for all variables. For SGD ``||dw|| = lr ||g||``.

    Args:
        variables: the model's trainable variables (Keras or ``tf.Variable``), after the step.
        before: their values before the step, in the same order.

    Returns:
        ``{layer: {"update_norm", "update_to_weight"}}``: ``||dw||`` over the layer's variables and
        ``||dw|| / ||w_before||`` (``inf`` for all-zero weights).

    Example:

    >>> import tensorflow as tf
    >>> kernel = tf.Variable([[3.0, 5.0]], name="dense/kernel")
    >>> before = [tf.constant([[0.0, 1.0]])]
    >>> update_signals([kernel], before)["dense"]
    {'update_norm': 5.0, 'update_to_weight': 5.0}
    """
    moves = [
        tf.reduce_sum(tf.square(_keras.native_variable(v) - b)) for v, b in zip(variables, before)
    ]
    norms = [tf.reduce_sum(tf.square(b)) for b in before]
    values = np.asarray(tf.stack(moves + norms), dtype=np.float64) if moves else np.zeros(0)
    count = len(moves)
    sums: dict[str, list[float]] = {}
    for i, variable in enumerate(variables):
        entry = sums.setdefault(layer_of(_keras.variable_path(variable)), [0.0, 0.0])
        entry[0] += values[i]
        entry[1] += values[count + i]
    layers: LayerSignals = {}
    for layer, (move, weight) in sums.items():
        move, weight = math.sqrt(move), math.sqrt(weight)
        layers[layer] = {
            "update_norm": move,
            "update_to_weight": move / weight if weight > 0 else math.inf,
        }
    return layers


def signal_name(signals: Mapping[str, float]) -> str:
    """The signal that tells when a layer starts to move: Clippy's ratio, else ``||dw|| / ||w||``.

    Args:
        signals: one layer's signals (from :func:`clippy_signals` or :func:`update_signals`).

    Returns:
        ``"update_ratio"`` or ``"update_to_weight"``.

    Example:

    >>> signal_name({"update_norm": 1.0, "update_to_weight": 0.1})
    'update_to_weight'
    """
    return "update_ratio" if "update_ratio" in signals else "update_to_weight"


def reduce_signal(name: str, values: Sequence[float]) -> float:
    """The worst of several readings of one signal: the min clipping factor, else the max.

    Args:
        name: the signal's name.
        values: its readings (at least one).

    Returns:
        ``min(values)`` for ``"clipping_factor"``, ``max(values)`` otherwise, as a float.

    Example:

    >>> reduce_signal("clipping_factor", [1.0, 0.25]), reduce_signal("update_ratio", [1.0, 3.0])
    (0.25, 3.0)
    """
    return float(min(values) if name == "clipping_factor" else max(values))


def batch_summary(layers: LayerSignals) -> dict[str, float]:
    """One batch's signals over all layers: norms combined, ratios at their worst.

    Args:
        layers: ``{layer: {signal: value}}`` of one batch.

    Returns:
        ``{signal: value}``: the norm over all layers of ``gradient_norm`` and ``update_norm``, the
        min ``clipping_factor`` and the max of every other signal.

    Example:

    >>> batch_summary({"a": {"update_norm": 3.0, "update_to_weight": 0.1},
    ...                "b": {"update_norm": 4.0, "update_to_weight": 0.5}})
    {'update_norm': 5.0, 'update_to_weight': 0.5}
    """
    summary: dict[str, float] = {}
    for values in layers.values():
        for name, value in values.items():
            if name == "clipping_factor":
                summary[name] = min(summary.get(name, math.inf), value)
            elif name in ("gradient_norm", "update_norm"):
                summary[name] = math.sqrt(summary.get(name, 0.0) ** 2 + value**2)
            else:
                summary[name] = max(summary.get(name, -math.inf), value)
    return summary


def epoch_summary(layers: Mapping[str, Mapping[str, Sequence[float]]]) -> dict[str, float]:
    """Each signal over an epoch's logged batches and all layers, at its worst.

    Args:
        layers: ``{layer: {signal: [readings]}}`` collected over the epoch.

    Returns:
        ``{signal: value}``, signals in sorted order (see :func:`reduce_signal`).

    Example:

    >>> epoch_summary({"a": {"update_ratio": [1.0, 4.0]}, "b": {"update_ratio": [2.0]}})
    {'update_ratio': 4.0}
    """
    names = {name for signals in layers.values() for name in signals}
    return {
        name: reduce_signal(name, [v for signals in layers.values() for v in signals.get(name, [])])
        for name in sorted(names)
    }

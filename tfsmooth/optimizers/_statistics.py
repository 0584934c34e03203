"""What the Clippy optimizers record in each step, for metrics and the StabilityMonitor.

With ``export_clipping_factors=True`` each model variable gets one small optimizer variable of
four numbers, written in the training step itself (no extra forward or backward pass):

- ``clipping_factor``: ``sigma`` of the last step (the smallest, with one factor per row);
- ``update_ratio``: ``max_i |u_i| / b_i``, the update-to-bound ratio (``1 / sigma`` when clipping);
- ``gradient_norm``: ``||g||`` of the gradient the step applied (over the looked-up rows for a
  sparse gradient);
- ``variable_norm``: ``||w||`` before the step (over the same rows for a sparse gradient).

They are optimizer variables, so checkpoints and ``.keras`` files keep them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth import _keras

#: The statistics each Clippy optimizer records per variable, in storage order.
STATISTICS = ("clipping_factor", "update_ratio", "gradient_norm", "variable_norm")

GRANULARITIES = ("variable", "row")


def check_threshold(name: str, value: Any) -> float:
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return value


def check_granularity(value: Any) -> str:
    if value not in GRANULARITIES:
        raise ValueError(
            f"`granularity` must be one of {list(GRANULARITIES)}. Received: granularity={value!r}"
        )
    return value


def check_bound(variable_relative_threshold: float, absolute_threshold: float, *others: float):
    if variable_relative_threshold == 0 and absolute_threshold == 0 and not any(others):
        raise ValueError(
            "At least one clipping threshold must be > 0, or no variable could ever move. "
            "Received: variable_relative_threshold=0.0, absolute_threshold=0.0"
        )


class ClippingStatisticsMixin:
    """Creates, writes and reads the per-variable statistics (see the module docstring)."""

    export_clipping_factors: bool

    def build_statistics(self, variables: list) -> None:
        paths, seen = [], {}
        for variable in variables:  # unique keys, even for unnamed tf.Variables
            path = _keras.variable_path(variable)
            seen[path] = seen.get(path, 0) + 1
            paths.append(path if seen[path] == 1 else f"{path}_{seen[path] - 1}")
        self._statistic_paths = tuple(paths)
        self._statistics = [
            self.add_state(v, "clippy_statistics", shape=(len(STATISTICS),)) for v in variables
        ]

    def record_statistics(self, index, factor, ratio, gradient_square, variable_square) -> None:
        """Writes one variable's statistics (in the update context of that variable)."""
        statistics = _keras.native_variable(self._statistics[index])
        dtype = statistics.dtype
        values = tf.stack(
            [
                tf.cast(tf.reduce_min(factor), dtype),
                tf.cast(tf.reduce_max(ratio), dtype),
                tf.cast(tf.sqrt(gradient_square), dtype),
                tf.cast(tf.sqrt(variable_square), dtype),
            ]
        )
        statistics.assign(values)

    @property
    def clipping_factors(self) -> list:
        """The last clipping factor of each variable (empty without ``export_clipping_factors``).

        As TFRS's ``ClippyAdagrad.clipping_factors``: one scalar per variable, in the order of the
        variables the optimizer was built with.
        """
        return [s[0] for s in getattr(self, "_statistics", [])]

    def clipping_statistics(self) -> dict[str, dict[str, float]]:
        """The last step's statistics of every variable, read to the host.

        Returns:
            ``{variable_path: {"clipping_factor", "update_ratio", "gradient_norm",
            "variable_norm"}}``; empty before the optimizer is built or without
            ``export_clipping_factors``.
        """
        statistics = getattr(self, "_statistics", [])
        if not statistics:
            return {}
        values = np.asarray([np.asarray(s) for s in statistics], dtype=np.float64)
        return {
            path: dict(zip(STATISTICS, (float(x) for x in row)))
            for path, row in zip(self._statistic_paths, values)
        }


def to_python(value: Any) -> Any:
    """Numpy scalars (tf-keras configs hold some) as Python numbers, recursively, for JSON."""
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_python(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value

"""What the Clippy optimizers record in each step, for metrics and the StabilityMonitor.

With ``export_clipping_factors=True`` each model variable gets one small optimizer variable of
three numbers, written in the training step itself (no extra forward or backward pass, a few
scalar operations per variable):

- ``clipping_factor``: ``sigma`` of the last step (the smallest, with one factor per row);
- ``update_ratio``: ``max_i |u_i| / b_i``, the update-to-bound ratio (``1 / sigma`` when clipping);
- ``gradient_norm``: ``||g||`` of the gradient the step applied (repeated rows of a sparse
  gradient summed first), stored squared.

:meth:`ClippingStatisticsMixin.clipping_statistics` adds ``variable_norm`` (``||w||`` of the whole
variable, computed when read, off the training step). The statistics are optimizer variables, so
checkpoints and ``.keras`` files keep them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth import _keras
from tfsmooth._validation import check_choice, check_float

#: The statistics each Clippy optimizer records per variable, in storage order.
STATISTICS = ("clipping_factor", "update_ratio", "gradient_norm", "variable_norm")

_RECORDED = 3  # the first three are written by the step; variable_norm is computed when read

GRANULARITIES = ("variable", "row")


def check_threshold(name: str, value: Any) -> float:
    """A clipping threshold: a finite number ``>= 0``, representable in float32."""
    return check_float(name, value, 0.0, float32=True)


def check_granularity(value: Any) -> str:
    return check_choice("granularity", value, GRANULARITIES)


def check_bound(variable_relative_threshold: float, absolute_threshold: float, *others: float):
    if variable_relative_threshold == 0 and absolute_threshold == 0 and not any(others):
        raise ValueError(
            "At least one clipping threshold must be > 0, or no variable could ever move. "
            "Received: variable_relative_threshold=0.0, absolute_threshold=0.0"
        )


def _in_xla() -> bool:
    """Whether the op being built is compiled by XLA (``jit_compile=True``, at any depth)."""
    enclosing = getattr(tf.__internal__, "get_enclosing_xla_context", None)
    return enclosing is not None and enclosing() is not None


def total(values: tf.Tensor) -> tf.Tensor:
    """The sum of every element of ``values``, as fast as each compiler allows.

    XLA compiles a reduction to a scalar into one sequential loop on CPU (floating-point addition
    does not reassociate). Under XLA the rows are therefore added pairwise instead: halved and
    added (zero-padded to a power of two) until one row is left, which XLA fuses into one
    vectorized loop; without a static row count, a product with a vector of ones. Elsewhere
    TensorFlow's own ``reduce_sum``.
    """
    rows = values.shape[0] if values.shape.rank else 1
    if not _in_xla() or rows == 1:
        return tf.reduce_sum(values)
    if rows is None:
        rows = tf.shape(values)[0]
        flat = tf.reshape(values, [rows, -1])
        return tf.reduce_sum(tf.matmul(tf.ones([1, rows], values.dtype), flat))
    values = tf.reshape(values, [rows, -1])
    size = 1 << (rows - 1).bit_length()
    if size != rows:
        values = tf.pad(values, [[0, size - rows], [0, 0]])
    while size > 1:
        size //= 2
        values = values[:size] + values[size:]
    return tf.reduce_sum(values)


def squared_norm(values: tf.Tensor) -> tf.Tensor:
    """``sum(values ** 2)`` (see :func:`total`)."""
    return total(values * values)


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
        self._statistic_sources = _Untracked(list(variables))
        self._statistics = [
            self.add_state(v, "clippy_statistics", shape=(_RECORDED,)) for v in variables
        ]

    def record_statistics(self, index, factor, ratio, gradient_square) -> None:
        """Writes one variable's statistics (in the update context of that variable);
        ``gradient_square`` is ``||g||^2``."""
        statistics = _keras.native_variable(self._statistics[index])
        dtype = statistics.dtype
        if factor.shape.rank != 0:  # one factor per row: the smallest, the largest ratio
            # (1 and 0 when no row was looked up, as for a step that clips nothing)
            factor = tf.minimum(tf.reduce_min(factor), tf.ones([], factor.dtype))
            ratio = tf.maximum(tf.reduce_max(ratio), tf.zeros([], ratio.dtype))
        values = [factor, ratio, gradient_square]
        statistics.assign(tf.stack([v if v.dtype == dtype else tf.cast(v, dtype) for v in values]))

    @property
    def clipping_factors(self) -> list:
        """The last clipping factor of each variable (empty without ``export_clipping_factors``).

        As TFRS's ``ClippyAdagrad.clipping_factors``: one scalar per variable, in the order of the
        variables the optimizer was built with.
        """
        return [s[0] for s in getattr(self, "_statistics", [])]

    def clipping_statistics(self) -> dict[str, dict[str, float]]:
        """The last step's statistics of every variable and its norm, read in one transfer.

        Returns:
            ``{variable_path: {"clipping_factor", "update_ratio", "gradient_norm",
            "variable_norm"}}``; empty before the optimizer is built or without
            ``export_clipping_factors``.
        """
        statistics = getattr(self, "_statistics", [])
        if not statistics:
            return {}
        reader = getattr(self, "_statistics_reader", None)
        if reader is None:
            recorded = [_keras.native_variable(s) for s in statistics]
            sources = [_keras.native_variable(v) for v in self._statistic_sources.value]

            def read():
                values = tf.stack([tf.cast(s, tf.float64) for s in recorded])
                norms = tf.stack(
                    [tf.reduce_sum(tf.square(tf.cast(v, tf.float64))) for v in sources]
                )
                return tf.concat([values, norms[:, None]], axis=1)

            reader = _Untracked(tf.function(read))
            self._statistics_reader = reader
        values = np.array(reader.value())
        values[:, 2:] = np.sqrt(values[:, 2:])
        return {
            path: dict(zip(STATISTICS, (float(x) for x in row)))
            for path, row in zip(self._statistic_paths, values)
        }


class _Untracked:
    """Holds an object out of sight of checkpoint tracking."""

    def __init__(self, value):
        self.value = value

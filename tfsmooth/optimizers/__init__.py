"""tfsmooth.optimizers: the Clippy rule and the optimizers built on it (Tang et al., KDD 2023).

- :func:`shrink_update`: the rule itself, one pure function -- scale an update so that no
  coordinate moves further than ``lambda_abs + sum_j lambda_j |reference_j|`` (per variable, or
  per row), returning the clipping factor and the update-to-bound ratio too.
- :class:`ClippyAdagrad`: Adagrad with the rule inside its step; a drop-in for TFRS's
  ``ClippyAdagrad`` that also runs under Keras 3.
- :class:`Clippy`: the rule around any Keras optimizer (``Clippy(keras.optimizers.Adam())``).
- :class:`LazyAdam`: Adam whose sparse step touches only the looked-up rows (O(rows touched) on
  embedding tables of millions of rows), alone or as ``Clippy(LazyAdam())``.
- :func:`nonfinite_gradient_count`: how many variable-updates were skipped because their
  gradient had a NaN or infinite coordinate (the variable and its state are left unchanged).
- :func:`clipping_statistics`: the last step's clipping factor, update-to-bound ratio, gradient
  norm and weight norm of every variable, for any of them (also inside a ``LossScaleOptimizer``).
"""

from __future__ import annotations

from typing import Any

from tfsmooth.optimizers._base import OptimizerBase, OptimizerWrapperBase
from tfsmooth.optimizers._statistics import STATISTICS
from tfsmooth.optimizers.clipping import ShrunkUpdate, shrink_update
from tfsmooth.optimizers.clippy import Clippy
from tfsmooth.optimizers.clippy_adagrad import ClippyAdagrad, clippy_adagrad_step
from tfsmooth.optimizers.lazy_adam import LazyAdam


def find_clippy(optimizer: Any):
    """The Clippy optimizer inside ``optimizer`` (itself, or wrapped by a LossScaleOptimizer).

    Args:
        optimizer: any optimizer (or ``None``).

    Returns:
        The :class:`ClippyAdagrad` or :class:`Clippy` found by following ``inner_optimizer``
        (at most 8 levels), or ``None`` when there is none.

    Raises:
        TypeError: ``optimizer`` is neither ``None`` nor an optimizer (no ``apply_gradients``).

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.optimizers import ClippyAdagrad, find_clippy
    >>> clippy = ClippyAdagrad()
    >>> find_clippy(clippy) is clippy, find_clippy(tf.keras.optimizers.SGD()) is None
    (True, True)
    """
    if optimizer is not None and not hasattr(optimizer, "apply_gradients"):
        raise TypeError(
            f"`optimizer` must be an optimizer or None. Received: optimizer={optimizer!r}"
        )
    seen = 0
    while optimizer is not None and seen < 8:
        if isinstance(optimizer, (ClippyAdagrad, Clippy)):
            return optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)
        seen += 1
    return None


def clipping_statistics(optimizer: Any) -> dict[str, dict[str, float]]:
    """The last step's statistics of every variable, from a Clippy optimizer (or one wrapping it).

    Args:
        optimizer: a :class:`ClippyAdagrad` or :class:`Clippy`, possibly inside a
            ``LossScaleOptimizer``, or any other optimizer (which gives ``{}``).

    Returns:
        ``{variable_path: {"clipping_factor", "update_ratio", "gradient_norm",
        "variable_norm"}}``, read to the host; ``{}`` when the optimizer records nothing.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.optimizers import ClippyAdagrad, clipping_statistics
    >>> w = tf.Variable([1.0, 0.0], name="w")
    >>> optimizer = ClippyAdagrad(learning_rate=0.5)
    >>> _ = optimizer.apply_gradients([(tf.constant([1.0, -2.0]), w)])
    >>> (stats,) = clipping_statistics(optimizer).values()
    >>> sorted(stats)
    ['clipping_factor', 'gradient_norm', 'update_ratio', 'variable_norm']
    """
    clippy = find_clippy(optimizer)
    return {} if clippy is None else clippy.clipping_statistics()


def nonfinite_gradient_count(optimizer: Any) -> Any:
    """How many variable-updates a tfsmooth optimizer skipped for a non-finite gradient.

    Every tfsmooth optimizer leaves a variable whose gradient has a NaN or infinite coordinate
    unchanged in that step (weights and optimizer state) and counts it in an int64 optimizer
    variable, ``nonfinite_gradients``, which checkpoints keep.

    Args:
        optimizer: any optimizer (or ``None``); a tfsmooth optimizer (:class:`ClippyAdagrad`,
            :class:`Clippy`, :class:`LazyAdam`) is found also inside a ``LossScaleOptimizer``.

    Returns:
        The counter (a scalar int64 variable), or ``None`` for other optimizers and before the
        optimizer is built.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.optimizers import ClippyAdagrad, nonfinite_gradient_count
    >>> w, b = tf.Variable([1.0, 2.0]), tf.Variable([0.5])
    >>> optimizer = ClippyAdagrad()
    >>> _ = optimizer.apply_gradients([(tf.constant([1.0, float("nan")]), w), (tf.ones(1), b)])
    >>> w.numpy(), int(nonfinite_gradient_count(optimizer))  # w skipped, b updated
    (array([1., 2.], dtype=float32), 1)
    """
    if optimizer is not None and not hasattr(optimizer, "apply_gradients"):
        raise TypeError(
            f"`optimizer` must be an optimizer or None. Received: optimizer={optimizer!r}"
        )
    for _ in range(8):  # the outermost tfsmooth optimizer counts every skip
        if optimizer is None or isinstance(optimizer, (OptimizerBase, OptimizerWrapperBase)):
            break
        optimizer = getattr(optimizer, "inner_optimizer", None)
    if not isinstance(optimizer, (OptimizerBase, OptimizerWrapperBase)):
        return None
    return optimizer.nonfinite_gradients


__all__ = [
    "STATISTICS",
    "Clippy",
    "ClippyAdagrad",
    "LazyAdam",
    "ShrunkUpdate",
    "clipping_statistics",
    "clippy_adagrad_step",
    "find_clippy",
    "nonfinite_gradient_count",
    "shrink_update",
]

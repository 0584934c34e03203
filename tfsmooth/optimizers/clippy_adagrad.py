"""ClippyAdagrad: Adagrad whose update never moves a weight further than its bound."""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf

from tfsmooth import _keras
from tfsmooth._validation import check_bool
from tfsmooth.optimizers import _statistics
from tfsmooth.optimizers._base import OptimizerBase, check_learning_rate, depending_on
from tfsmooth.optimizers.clipping import _headroom, _shrink

__all__ = ["ClippyAdagrad", "clippy_adagrad_step"]


class ClippyAdagradStep(NamedTuple):
    """What :func:`clippy_adagrad_step` returns: the clipped update (to subtract from the
    variable), the increment of the accumulator, the clipping factor and the update-to-bound
    ratio (scalars, or one per row)."""

    update: tf.Tensor
    accumulator_increment: tf.Tensor
    factor: tf.Tensor
    ratio: tf.Tensor


def clippy_adagrad_step(
    gradient: tf.Tensor,
    variable: tf.Tensor,
    accumulator: tf.Tensor,
    learning_rate: Any,
    *,
    variable_relative_threshold: float,
    accumulator_relative_threshold: float,
    absolute_threshold: float,
    epsilon: float,
    clip_accumulator_update: bool = False,
    use_standard_accumulator_update: bool = False,
    per_row: bool = False,
) -> ClippyAdagradStep:
    """One ClippyAdagrad step on values (dense, or the looked-up rows of a sparse update).

    .. math::

        G' = G + g^2 \\text{ (standard order) or } G, \\qquad
        r = \\frac{g}{\\sqrt{G' + \\epsilon}}, \\qquad
        (\\Delta, \\sigma) = \\mathrm{shrink}\\left(\\eta r;\\;
            \\lambda_{rel} |w| + \\frac{\\lambda_{acc}}{\\sqrt{G' + \\epsilon}}
            + \\lambda_{abs}\\right)

    and the accumulator grows by ``g^2`` (``(sigma g)^2`` with ``clip_accumulator_update``). The
    caller subtracts ``update`` from the variable and adds ``accumulator_increment`` to the
    accumulator. With the defaults of TFRS (``use_standard_accumulator_update=False``) the
    accumulator is grown *after* the step, so the step uses ``G`` alone.

    Args:
        gradient, variable, accumulator: tensors of one shape: the gradient ``g``, the variable's
            values ``w`` before the step and the accumulator ``G``.
        learning_rate: ``eta``, a scalar.
        variable_relative_threshold, accumulator_relative_threshold, absolute_threshold: the
            bound's ``lambda_rel``, ``lambda_acc`` and ``lambda_abs``.
        epsilon: added to the accumulator under the square root.
        clip_accumulator_update: grow the accumulator by the clipped gradient.
        use_standard_accumulator_update: grow the accumulator before the step (classic Adagrad).
        per_row: one clipping factor per row (first axis).

    Returns:
        A :class:`ClippyAdagradStep`.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.optimizers import clippy_adagrad_step
    >>> step = clippy_adagrad_step(
    ...     tf.constant([1.0, -2.0]), tf.constant([1.0, 0.0]), tf.ones(2), 0.5,
    ...     variable_relative_threshold=0.5, accumulator_relative_threshold=0.0,
    ...     absolute_threshold=0.1, epsilon=0.0)
    >>> # eta * r = [0.5, -1.0] against bounds [0.5 * 1 + 0.1, 0.1]: ratio 10, factor 0.1
    >>> step.update.numpy(), step.accumulator_increment.numpy()
    (array([ 0.05, -0.1 ], dtype=float32), array([1., 4.], dtype=float32))

    References:
        - [Tang et al. (2023), Algorithm 1](https://arxiv.org/abs/2302.09178)
    """
    return _step(
        gradient,
        variable,
        accumulator,
        learning_rate,
        variable_relative_threshold=variable_relative_threshold,
        accumulator_relative_threshold=accumulator_relative_threshold,
        absolute_threshold=absolute_threshold,
        epsilon=epsilon,
        clip_accumulator_update=clip_accumulator_update,
        use_standard_accumulator_update=use_standard_accumulator_update,
        per_row=per_row,
    )


def _preconditioned(gradient, accumulator, learning_rate, epsilon, standard):
    """``(g^2, 1 / sqrt(G' + eps), eta g / sqrt(G' + eps))``: Adagrad's step before the rule."""
    square = gradient * gradient
    if standard:
        accumulator = accumulator + square
    precondition = tf.math.rsqrt(accumulator + epsilon) if epsilon else tf.math.rsqrt(accumulator)
    return square, precondition, learning_rate * gradient * precondition


def _step(
    gradient,
    variable,
    accumulator,
    learning_rate,
    *,
    variable_relative_threshold,
    accumulator_relative_threshold,
    absolute_threshold,
    epsilon,
    clip_accumulator_update,
    use_standard_accumulator_update,
    per_row,
    headroom=None,
) -> ClippyAdagradStep:
    """:func:`clippy_adagrad_step`, with the headroom of a whole sharded table when given."""
    square, precondition, delta = _preconditioned(
        gradient, accumulator, learning_rate, epsilon, use_standard_accumulator_update
    )
    shrunk = _shrink(
        delta,
        [variable, precondition],
        [variable_relative_threshold, accumulator_relative_threshold],
        absolute_threshold,
        per_row,
        headroom,
    )
    increment = square
    if clip_accumulator_update:
        factor = shrunk.factor
        if per_row and gradient.shape.rank is not None and gradient.shape.rank > 1:
            factor = tf.reshape(factor, [-1] + [1] * (gradient.shape.rank - 1))
        clipped = gradient * tf.cast(factor, gradient.dtype)
        increment = clipped * clipped
    return ClippyAdagradStep(shrunk.update, increment, shrunk.factor, shrunk.ratio)


@_keras.register_serializable
class ClippyAdagrad(_statistics.ClippingStatisticsMixin, OptimizerBase):
    """Adagrad with Clippy's adaptive clipping, in Keras 3 and tf-keras.

    Each step scales the Adagrad update of a variable by the largest ``sigma`` in ``(0, 1]`` such
    that no coordinate moves by more than its bound:

    .. math::

        |\\Delta w_i| \\le \\lambda_{rel} |w_i| + \\frac{\\lambda_{acc}}{\\sqrt{G_i + \\epsilon}}
            + \\lambda_{abs},
        \\qquad \\Delta w = \\sigma \\, \\eta \\frac{g}{\\sqrt{G + \\epsilon}} .

    A drop-in for ``tfrs.experimental.optimizers.ClippyAdagrad``: the same arguments, and with
    identical arguments the same weights (bit for bit under tf-keras, where TFRS runs), dense and
    sparse. It also runs under Keras 3, keeps every argument in ``get_config``, deduplicates
    repeated rows of sparse gradients under Keras 3 (as tf-keras does), can clip one embedding row
    at a time, and records the clipping statistics the
    :class:`~tfsmooth.callbacks.StabilityMonitor` reads.

    **Defaults**, chosen by the threshold ablation of ``benchmarks/stability.py`` (a multitask
    ranking model on MovieLens; the figures are in ``benchmarks/RESULTS.md``):

    - ``absolute_threshold=1e-3``, not TFRS's ``1e-7``: with ``1e-7`` a weight at zero moves by at
      most ``1e-7`` per step, and because ``sigma`` is one number per variable a zero-initialised
      bias pins its whole layer (runs with TFRS's thresholds lost a task, as TFRS's own
      ClippyAdagrad did); ``1e-2`` bounds too loosely at high learning rates.
    - ``variable_relative_threshold=0.5``, not the paper's and TFRS's 0.1: with
      ``absolute_threshold=1e-3`` the pair with the best AUC among those that lost no task at the
      highest rate.
    - ``learning_rate=0.05``: with these thresholds the bound, not the rate, sets the step over a
      wide range of rates; 0.05 sits where plain Adagrad trains too (TFRS's default is 0.001).
    - The others are TFRS's, except ``export_clipping_factors=True`` (a few scalar operations per
      variable; the :class:`~tfsmooth.callbacks.StabilityMonitor` reads them).

    Per variable (the paper's granularity, the default) an outlier coordinate shrinks the whole
    variable's step. ``granularity="row"`` gives each looked-up row of an embedding table its own
    factor; on the same benchmark it trained better at every rate, and
    ``ClippyAdagrad(granularity="row", variable_relative_threshold=5.0)`` best of all -- the
    setting to start from for models with large embedding tables.

    **Non-finite gradients**: a variable whose gradient has a NaN or infinite coordinate is left
    as it was in that step -- weights and accumulator, bit for bit -- and counted in
    :attr:`nonfinite_gradients` (read by the :class:`~tfsmooth.callbacks.StabilityMonitor`);
    the other variables take their step. Keras's Adagrad would turn that coordinate NaN, and the
    clipping factor of the whole variable (and so every weight of it) would follow.

    **Sparse gradients** (``tf.IndexedSlices``, embedding tables) cost O(rows touched) in time and
    memory, with or without XLA: only the looked-up rows of the table and of its accumulator are
    read and written.

    **Sharded tables** (a ``ShardedVariable``, as a ``ParameterServerStrategy`` with a
    ``variable_partitioner`` makes; Keras hands its shards over as separate variables) are one
    variable: with ``granularity="variable"`` the table's factor is ``min(1, 1 / max_s rho_s)``
    over the update-to-bound ratios ``rho_s`` of its shards (each over what its shard updates:
    every coordinate for a dense gradient, the looked-up rows for a sparse one), which is the
    factor of the unsharded table bit for bit (``max`` is exact); per-row factors are unchanged
    (no row spans two shards). A non-finite gradient in any shard leaves every shard of the table
    as it was and counts once in :attr:`nonfinite_gradients`. Each shard records the table's
    factor and ratio and its own gradient norm. Each shard's ratio is computed on the shard's
    device from the rows the step reads anyway (still O(rows touched)); only scalars travel.
    Before, under tf-keras, every shard was clipped on its own. (Bit for bit needs each
    coordinate rounded alike in both layouts: TensorFlow's CPU ``rsqrt`` rounds the last elements
    of a tensor whose size is not a multiple of the vector width by its scalar path, which can
    differ by one ulp; rows of a multiple of 16 floats never meet it.)

    Args:
        learning_rate: ``eta``: a float > 0, a ``LearningRateSchedule`` or a callable.
        initial_accumulator_value: starting value of ``G``, ``>= 0``.
        variable_relative_threshold: ``lambda_rel >= 0``.
        accumulator_relative_threshold: ``lambda_acc >= 0`` (tightens the bound as ``G`` grows).
        absolute_threshold: ``lambda_abs >= 0``; keep it ``> 0`` so weights at zero can move.
        epsilon: added to ``G`` under the square root, ``>= 0``.
        export_clipping_factors: record each variable's clipping factor, update-to-bound ratio,
            gradient norm and weight norm in every step (``clipping_factors``,
            :meth:`clipping_statistics`); a few scalar operations per variable.
        clip_accumulator_update: grow ``G`` by the clipped gradient ``(sigma g)^2``.
        use_standard_accumulator_update: grow ``G`` before the step (classic Adagrad) instead of
            after it (TFRS's default). Not together with ``clip_accumulator_update``.
        granularity: ``"variable"``: one ``sigma`` per variable, as in the paper. ``"row"``:
            variables updated through sparse gradients (``tf.IndexedSlices``: embedding tables)
            get one ``sigma`` per looked-up row, so one outlier row does not shrink every other
            row's update; dense variables keep one per variable.
        name: the optimizer's name.
        **kwargs: the base optimizer's arguments (``weight_decay``, ``clipnorm``,
            ``global_clipnorm``, ``use_ema``, ...).

    Raises:
        ValueError: for a non-positive learning rate, a negative or non-finite threshold,
            ``initial_accumulator_value + epsilon == 0`` (the first step would divide by zero),
            all thresholds 0, both accumulator options on, or an unknown granularity.
        TypeError: for non-boolean flags, a non-number threshold or learning rate.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.optimizers import ClippyAdagrad
    >>> model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    >>> model.compile(optimizer=ClippyAdagrad(learning_rate=0.1), loss="mse")

    References:
        - [Tang et al. Improving training stability for multitask ranking models in recommender
          systems (KDD 2023)](https://arxiv.org/abs/2302.09178)
        - [TFRS ClippyAdagrad](https://github.com/tensorflow/recommenders/blob/main/tensorflow_recommenders/experimental/optimizers/clippy_adagrad.py)
    """

    def __init__(
        self,
        learning_rate: Any = 0.05,
        initial_accumulator_value: float = 0.1,
        variable_relative_threshold: float = 0.5,
        accumulator_relative_threshold: float = 0.0,
        absolute_threshold: float = 1e-3,
        epsilon: float = 1e-7,
        export_clipping_factors: bool = True,
        clip_accumulator_update: bool = False,
        use_standard_accumulator_update: bool = False,
        granularity: str = "variable",
        name: str = "ClippyAdagrad",
        **kwargs: Any,
    ):
        check = _statistics.check_threshold
        learning_rate = check_learning_rate(learning_rate)
        self_values = dict(
            initial_accumulator_value=check("initial_accumulator_value", initial_accumulator_value),
            variable_relative_threshold=check(
                "variable_relative_threshold", variable_relative_threshold
            ),
            accumulator_relative_threshold=check(
                "accumulator_relative_threshold", accumulator_relative_threshold
            ),
            absolute_threshold=check("absolute_threshold", absolute_threshold),
            epsilon=check("epsilon", epsilon),
            export_clipping_factors=check_bool("export_clipping_factors", export_clipping_factors),
            clip_accumulator_update=check_bool("clip_accumulator_update", clip_accumulator_update),
            use_standard_accumulator_update=check_bool(
                "use_standard_accumulator_update", use_standard_accumulator_update
            ),
            granularity=_statistics.check_granularity(granularity),
        )
        if clip_accumulator_update and use_standard_accumulator_update:
            raise ValueError(
                "`clip_accumulator_update` and `use_standard_accumulator_update` cannot both be "
                "True. Received: clip_accumulator_update=True, use_standard_accumulator_update=True"
            )
        if self_values["initial_accumulator_value"] + self_values["epsilon"] == 0:
            raise ValueError(
                "`initial_accumulator_value` and `epsilon` cannot both be 0: the first step "
                "would divide by zero. Received: initial_accumulator_value=0.0, epsilon=0.0"
            )
        _statistics.check_bound(
            self_values["variable_relative_threshold"],
            self_values["absolute_threshold"],
            self_values["accumulator_relative_threshold"],
        )
        super().__init__(learning_rate, name=name, **kwargs)
        for key, value in self_values.items():
            setattr(self, key, value)

    def build_state(self, variables: list) -> None:
        self._accumulators = [
            self.add_state(v, "accumulator", initial_value=self.initial_accumulator_value)
            for v in variables
        ]
        if self.export_clipping_factors:
            self.build_statistics(variables)

    def _inputs(self, gradient: Any, variable: tf.Variable) -> tuple:
        """``(accumulator, values, weights, accumulated)``: the gradient's values and the rows of
        the variable and of its accumulator they update (all of them for a dense gradient)."""
        dtype = variable.dtype
        accumulator = _keras.native_variable(self._accumulators[self.variable_index(variable)])
        if isinstance(gradient, tf.IndexedSlices):
            indices = gradient.indices
            values = tf.cast(gradient.values, dtype)
            return (
                accumulator,
                values,
                tf.gather(variable, indices),
                tf.gather(accumulator, indices),
            )
        return accumulator, tf.cast(gradient, dtype), variable.value(), accumulator.value()

    def shard_headroom(
        self, gradient: Any, variable: tf.Variable, learning_rate: Any
    ) -> tf.Tensor | None:
        if isinstance(gradient, tf.IndexedSlices) and self.granularity == "row":
            return None  # one factor per row, and no row spans two shards
        _, values, weights, accumulated = self._inputs(gradient, variable)
        _, precondition, delta = _preconditioned(
            values,
            accumulated,
            tf.cast(learning_rate, variable.dtype),
            self.epsilon,
            self.use_standard_accumulator_update,
        )
        return _headroom(
            delta,
            [weights, precondition],
            [self.variable_relative_threshold, self.accumulator_relative_threshold],
            self.absolute_threshold,
            False,
        )

    def apply_update(
        self, gradient: Any, variable: tf.Variable, learning_rate: Any, finite: tf.Tensor
    ) -> None:
        dtype = variable.dtype
        index = self.variable_index(variable)
        sparse = isinstance(gradient, tf.IndexedSlices)
        accumulator, values, weights, accumulated = self._inputs(gradient, variable)
        per_row = sparse and self.granularity == "row"
        table = None if per_row else self.table_step(variable)
        step = _step(
            values,
            weights,
            accumulated,
            tf.cast(learning_rate, dtype),
            variable_relative_threshold=self.variable_relative_threshold,
            accumulator_relative_threshold=self.accumulator_relative_threshold,
            absolute_threshold=self.absolute_threshold,
            epsilon=self.epsilon,
            clip_accumulator_update=self.clip_accumulator_update,
            use_standard_accumulator_update=self.use_standard_accumulator_update,
            per_row=per_row,
            headroom=None if table is None else table.headroom,
        )
        # A non-finite gradient changes nothing: w - 0 and G + 0 are w and G exactly.
        update = tf.where(finite, step.update, tf.zeros_like(step.update))
        increment = tf.where(
            finite, step.accumulator_increment, tf.zeros_like(step.accumulator_increment)
        )
        if sparse:
            indices = gradient.indices
            increment = depending_on(accumulated, increment)
            update = depending_on(weights, update)
            accumulator.scatter_add(tf.IndexedSlices(increment, indices))
        else:
            accumulator.assign_add(increment)
        self.subtract_update(gradient, variable, update, weights)
        if self.export_clipping_factors:
            square = values * values if self.clip_accumulator_update else step.accumulator_increment
            self.record_statistics(index, step.factor, step.ratio, _statistics.total(square))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            initial_accumulator_value=self.initial_accumulator_value,
            variable_relative_threshold=self.variable_relative_threshold,
            accumulator_relative_threshold=self.accumulator_relative_threshold,
            absolute_threshold=self.absolute_threshold,
            epsilon=self.epsilon,
            export_clipping_factors=self.export_clipping_factors,
            clip_accumulator_update=self.clip_accumulator_update,
            use_standard_accumulator_update=self.use_standard_accumulator_update,
            granularity=self.granularity,
        )
        return config

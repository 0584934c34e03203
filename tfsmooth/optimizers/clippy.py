"""Clippy(optimizer): the Clippy rule around any Keras optimizer."""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf

from tfsmooth import _keras
from tfsmooth._validation import check_bool
from tfsmooth.optimizers import _sharding, _statistics
from tfsmooth.optimizers._base import OptimizerBase, OptimizerWrapperBase, deduplicate_sparse
from tfsmooth.optimizers.clipping import _headroom, _shrink
from tfsmooth.optimizers.clippy_adagrad import ClippyAdagrad
from tfsmooth.optimizers.lazy_adam import LazyAdam

__all__ = ["Clippy"]


class _Rows(NamedTuple):
    """The rows a sparse gradient touches (all replicas', possibly repeated) and their values
    before the inner step."""

    indices: tf.Tensor
    values: tf.Tensor


class _Deferred(NamedTuple):
    """A shard's write that waits for its table's headroom (see ``Clippy._write_tables``)."""

    variable: Any
    gradient: Any
    update: tf.Tensor
    weights: tf.Tensor
    index: int


def _computed_after(rows: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """``values``, unchanged, but computed from ``rows`` (so XLA reads ``rows`` first).

    Both tensors are ``[K, ...]`` and aligned; the select picks ``rows`` only where both are NaN,
    where either is NaN.
    """
    values = tf.cast(values, rows.dtype) if values.dtype != rows.dtype else values
    both = tf.logical_and(tf.math.is_nan(rows), tf.math.is_nan(values))
    return tf.where(both, rows, values)


def _moved(variable: Any, old: Any) -> tuple:
    """``(new, old, new - old)`` after the inner step: the touched rows (``old`` is ``_Rows``:
    only these rows moved, so the rule over them is the whole rule) or the whole variable."""
    if isinstance(old, _Rows):
        new = tf.gather(variable, old.indices)
        old = old.values
    else:
        new = variable.value()
    return new, old, new - old


def moves_only_gradient_rows(optimizer: Any) -> bool:
    """Whether ``optimizer``, given a sparse gradient, moves only the rows the gradient names.

    True for tfsmooth's ``LazyAdam`` and ``ClippyAdagrad``, Keras's ``Adagrad`` and Keras's
    ``SGD`` without momentum, when no weight decay, gradient accumulation or EMA is set (each
    moves rows the gradient does not name); false for every
    other optimizer (Keras's ``Adam`` moves every row whose momentum is not zero), which keeps
    :class:`Clippy` on its dense path.
    """
    optimizers = _keras.keras.optimizers
    # Weight decay moves every row; accumulated gradients are applied dense every few steps; an
    # EMA overwrite rewrites every row.
    if (
        getattr(optimizer, "weight_decay", None)
        or getattr(optimizer, "gradient_accumulation_steps", None)
        or getattr(optimizer, "use_ema", False)
    ):
        return False
    if type(optimizer) in (LazyAdam, ClippyAdagrad, optimizers.Adagrad):
        return True
    return type(optimizer) is optimizers.SGD and not optimizer.momentum


def _writes_through_clippy(optimizer: Any) -> bool:
    """Whether ``optimizer`` can leave its writes of the variables to :class:`Clippy`: a tfsmooth
    optimizer (its step ends in ``subtract_update``) that moves only the gradient's rows and
    applies the gradient it receives (no clipping of its own, so the statistics Clippy records
    are those of the gradient Clippy received)."""
    return (
        isinstance(optimizer, OptimizerBase)
        and moves_only_gradient_rows(optimizer)
        and not any(
            getattr(optimizer, name, None) for name in ("clipnorm", "clipvalue", "global_clipnorm")
        )
    )


#: What ``before_apply`` keeps for a variable whose write the inner optimizer leaves to Clippy.
_WRITTEN_BY_CLIPPY = "written by Clippy"


@_keras.register_serializable
class Clippy(_statistics.ClippingStatisticsMixin, OptimizerWrapperBase):
    """Wraps any Keras optimizer and shrinks each variable's update by the Clippy rule.

    The inner optimizer (Adam, SGD, Adagrad, ...) takes its step as usual -- its own gradient
    clipping, weight decay, state and iteration count unchanged -- and its move ``u = w' - w`` of
    each variable is then scaled by

    .. math::

        \\sigma = \\min\\left(1, \\min_i \\frac{\\lambda_{rel} |w_i| + \\lambda_{abs}}{|u_i|}\\right),
        \\qquad w \\leftarrow w + \\sigma u,

    so no coordinate moves further than ``lambda_rel |w_i| + lambda_abs`` in one step (Tang et al.,
    2023, with the inner optimizer's step in place of Adagrad's). Where no clipping is needed the
    weights are exactly the inner optimizer's. The inner optimizer's state (momenta,
    accumulators) is updated with the unclipped gradient, as TFRS's ClippyAdagrad does by default.

    A variable whose gradient has a NaN or infinite coordinate is skipped: the inner optimizer's
    update of it does not run in that step (its weights and its momenta or accumulators stay as
    they were), and :attr:`nonfinite_gradients` counts it; the others take their step. The inner
    optimizer's iteration count still advances.

    It works under mixed precision (``LossScaleOptimizer`` wrapping it, which
    ``model.compile`` does under a ``mixed_float16`` policy, or wrapped by it) and under
    ``tf.distribute`` strategies, and serializes together with its inner optimizer.

    Cost: the rule needs the whole move of each variable. Around tfsmooth's
    :class:`~tfsmooth.optimizers.LazyAdam` and ``ClippyAdagrad`` (without weight decay, gradient
    clipping, gradient accumulation or EMA) the inner optimizer hands its final write of each
    variable over and the rule scales the update before it is written: the inner step, a read of
    the weights it writes (``ClippyAdagrad`` has read them already) and one reduction; for a
    sparse gradient (an embedding table) only the looked-up rows. Where ``sigma = 1`` the weights
    are the inner optimizer's bit for bit; elsewhere ``w - sigma u`` can differ from
    ``w' - (1 - sigma) u`` by a rounding. Around Keras's ``Adagrad`` and momentum-free ``SGD`` a
    sparse gradient's rows are read before and after the inner step and corrected in place:
    O(rows touched) on top of the inner step, the same weights as the dense rule (the untouched
    rows did not move). Any other inner optimizer (Keras's ``Adam`` moves every row with
    momentum) and any variable with a constraint take the dense path: every updated variable is
    read once before and once after the inner step. Under a ``tf.distribute`` strategy with
    several replicas the touched rows are those of all replicas (around Keras's optimizers their
    sparse gradients are summed once more to find them).

    **Sharded tables** (a ``ShardedVariable``, as a ``ParameterServerStrategy`` with a
    ``variable_partitioner`` makes; Keras hands its shards over as separate variables) are one
    variable: with ``granularity="variable"`` the table's factor is ``min(1, 1 / max_s rho_s)``
    over the update-to-bound ratios ``rho_s`` of its shards' moves (over the rows each moved),
    which is the factor of the unsharded table bit for bit (``max`` is exact); per-row factors are
    unchanged (no row spans two shards). A non-finite gradient in any shard skips the inner
    update of every shard of the table and counts once in :attr:`nonfinite_gradients`. Each shard
    records the table's factor and ratio and its own gradient norm. Before, under tf-keras,
    every shard was clipped on its own.

    Args:
        optimizer: the inner optimizer: an instance, or anything ``keras.optimizers.get``
            accepts (``"adam"``, a config dict).
        variable_relative_threshold: ``lambda_rel >= 0``.
        absolute_threshold: ``lambda_abs >= 0``; keep it ``> 0`` so weights at zero can move.
        granularity: ``"variable"`` (one ``sigma`` per variable, the paper) or ``"row"`` (one per
            row for variables with sparse gradients: embedding tables).
        export_clipping_factors: record each variable's clipping factor, update-to-bound ratio,
            gradient norm and weight norm in every step (``clipping_factors``,
            :meth:`clipping_statistics`).
        name: the optimizer's name.

    Raises:
        ValueError: for a negative or non-finite threshold, both thresholds 0, an unknown
            granularity or an optimizer Keras does not know.
        TypeError: for a non-boolean flag, a non-number threshold or an object that is not an
            optimizer.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.optimizers import Clippy
    >>> model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    >>> model.compile(optimizer=Clippy(tf.keras.optimizers.Adam(1e-3)), loss="mse")

    References:
        - [Tang et al. (2023)](https://arxiv.org/abs/2302.09178)
    """

    def __init__(
        self,
        optimizer: Any,
        variable_relative_threshold: float = 0.1,
        absolute_threshold: float = 1e-3,
        granularity: str = "variable",
        export_clipping_factors: bool = True,
        name: str = "Clippy",
    ):
        relative = _statistics.check_threshold(
            "variable_relative_threshold", variable_relative_threshold
        )
        absolute = _statistics.check_threshold("absolute_threshold", absolute_threshold)
        _statistics.check_bound(relative, absolute)
        granularity = _statistics.check_granularity(granularity)
        export = check_bool("export_clipping_factors", export_clipping_factors)
        inner = _keras.get_optimizer(optimizer)
        if not isinstance(inner, _keras.keras.optimizers.Optimizer):
            raise TypeError(
                "`optimizer` must be a Keras optimizer. "
                f"Received: optimizer of type {type(optimizer).__name__}"
            )
        super().__init__(inner, name=name)
        self.variable_relative_threshold = relative
        self.absolute_threshold = absolute
        self.granularity = granularity
        self.export_clipping_factors = export

    def build_state(self, variables: list) -> None:
        if self.export_clipping_factors:
            self.build_statistics(variables)

    def apply_wrapped(self, gradients: list, variables: list, apply_inner, aggregated: bool):
        try:
            return super().apply_wrapped(gradients, variables, apply_inner, aggregated)
        finally:
            object.__setattr__(self, "_written", set())
            object.__setattr__(self, "_deferred", [])
            if isinstance(self.inner_optimizer, OptimizerBase):
                self.inner_optimizer.take_over_writes(None)

    def before_apply(self, gradients: list, variables: list, aggregated: bool) -> tuple:
        """What the inner step will change, and the gradients it applies.

        Written by Clippy: a tfsmooth inner optimizer hands its final write of a variable over
        (:meth:`_write_clipped`), which clips the update before writing it; nothing is read
        before the step. Sparse path: the touched rows before the step (``_Rows``), and each
        sparse gradient computed from those rows (the same values) so that XLA reads them before
        the inner step writes the variable, instead of copying the whole variable to keep them.
        Dense path: a copy of the variable (copy-on-write keeps the values when the inner step
        assigns).
        """
        written = set()
        if _writes_through_clippy(self.inner_optimizer):
            written = {
                i
                for i, (g, v) in enumerate(zip(gradients, variables))
                if g is not None and getattr(v, "constraint", None) is None
            }
            self.inner_optimizer.take_over_writes(self._write_clipped)
        object.__setattr__(self, "_written", {self.variable_index(variables[i]) for i in written})
        object.__setattr__(self, "_deferred", [])
        row_sparse = moves_only_gradient_rows(self.inner_optimizer)
        sparse = [
            i
            for i, (g, v) in enumerate(zip(gradients, variables))
            if row_sparse
            and i not in written
            and isinstance(g, tf.IndexedSlices)
            and getattr(v, "constraint", None) is None
        ]
        touched = {i: gradients[i] for i in sparse}
        replica = tf.distribute.get_replica_context()
        if sparse and not aggregated and replica is not None and replica.num_replicas_in_sync > 1:
            # Every replica's rows move: find them all (summed sparse gradients: O(rows)).
            reduced = replica.all_reduce(tf.distribute.ReduceOp.SUM, list(touched.values()))
            touched = dict(zip(sparse, reduced))
        before, inner_gradients = [], list(gradients)
        for i, (g, v) in enumerate(zip(gradients, variables)):
            native = _keras.native_variable(v) if g is not None else None
            if g is None:
                before.append(None)
            elif i in written:
                before.append(_WRITTEN_BY_CLIPPY)
            elif i in touched:
                # Repeated rows are gathered twice: the same values, the same result.
                rows = tf.gather(native, touched[i].indices)
                before.append(_Rows(touched[i].indices, rows))
                local = rows if touched[i] is g else tf.gather(native, g.indices)
                inner_gradients[i] = tf.IndexedSlices(
                    _computed_after(local, g.values), g.indices, g.dense_shape
                )
            else:
                before.append(tf.identity(native))
        return before, inner_gradients

    def _write_clipped(
        self, gradient: Any, variable: tf.Variable, update: tf.Tensor, weights: Any
    ) -> bool:
        """The inner optimizer's write ``variable -= update``, clipped by the rule (see
        :meth:`_write`). A shard with one factor for its table waits until every shard's update
        is known (:meth:`_write_tables`). Returns false for a variable Clippy does not write (the
        inner optimizer writes it, and :meth:`after_apply` clips it)."""
        index = self.variable_index(variable)
        if index not in getattr(self, "_written", ()):
            return False
        sparse = isinstance(gradient, tf.IndexedSlices)
        if weights is None:
            weights = tf.gather(variable, gradient.indices) if sparse else variable.value()
        if _sharding.is_shard(variable) and not self._per_row(gradient):
            self._deferred.append(_Deferred(variable, gradient, update, weights, index))
        else:
            self._write(variable, gradient, update, weights, index)
        return True

    def _write(self, variable, gradient, update, weights, index, headroom=None) -> None:
        """``variable -= sigma update``, with ``sigma`` from ``update`` and the weights it moves
        (or from a sharded table's ``headroom``), without reading the variable before the step
        and after it. For a sparse gradient only the rows it names move. Where ``sigma = 1`` the
        weights are the inner optimizer's bit for bit; elsewhere they can differ from
        :meth:`after_apply`'s ``w' - (1 - sigma)(w' - w)`` by a rounding."""
        sparse = isinstance(gradient, tf.IndexedSlices)
        shrunk, factor = self._factor(update, weights, self._per_row(gradient), headroom)
        # Subtracted, so that a padding row of the deduplication (a zero update repeating the
        # first row's index) changes nothing.
        clipped = factor * update
        if sparse:
            variable.scatter_sub(tf.IndexedSlices(clipped, gradient.indices))
        else:
            variable.assign_sub(clipped)
        if self.export_clipping_factors:
            # The inner optimizer's gradient: deduplicated, and divided by any loss scale.
            values = tf.cast(gradient.values if sparse else gradient, update.dtype)
            self.record_statistics(
                index, shrunk.factor, shrunk.ratio, _statistics.squared_norm(values)
            )

    def _write_tables(self, distribution, deferred: list) -> None:
        """Writes the deferred shards: each table's headroom (the smallest of its shards', each
        computed on its shard's device), then each shard with it."""
        variables = [d.variable for d in deferred]
        for positions in _sharding.shard_groups(variables, [d.gradient for d in deferred]):
            parts = []
            for position in positions:
                d = deferred[position]
                with _sharding.on_device_of(d.variable):
                    parts.append(self._headroom(d.update, d.weights))
            table = _sharding.smallest(parts)
            for position in positions:
                d = deferred[position]
                distribution.extended.update(
                    d.variable,
                    self._write,
                    args=(d.gradient, d.update, d.weights, d.index, table),
                    group=False,
                )

    def after_apply(self, gradients: list, variables: list, before: list, aggregated: bool):
        deferred = getattr(self, "_deferred", [])
        if deferred:
            tf.__internal__.distribute.interim.maybe_merge_call(
                self._write_tables, tf.distribute.get_strategy(), deferred
            )
        kept = [
            i
            for i, g in enumerate(gradients)
            if g is not None and before[i] is not _WRITTEN_BY_CLIPPY
        ]
        if not kept:
            return
        gradients = [gradients[i] for i in kept]
        natives = [_keras.native_variable(variables[i]) for i in kept]
        before = [before[i] for i in kept]
        constraints = [getattr(variables[i], "constraint", None) for i in kept]
        indices = [self.variable_index(variables[i]) for i in kept]
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._clip_all,
            tf.distribute.get_strategy(),
            gradients,
            natives,
            before,
            constraints,
            indices,
            aggregated,
        )

    def _clip_all(
        self, distribution, gradients, variables, before, constraints, indices, aggregated
    ):
        if (
            self.export_clipping_factors
            and not aggregated
            and distribution.num_replicas_in_sync > 1
        ):
            gradients = distribution.extended.batch_reduce_to(
                tf.distribute.ReduceOp.SUM, list(zip(gradients, variables))
            )
        headrooms = self._table_headrooms(gradients, variables, before)
        for gradient, variable, old, constraint, index, headroom in zip(
            gradients, variables, before, constraints, indices, headrooms
        ):
            distribution.extended.update(
                variable,
                self._clip_variable,
                args=(old, gradient, constraint, index, headroom),
                group=False,
            )

    def _headroom(self, move: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        """The headroom of one factor for ``move`` of ``weights`` (see ``clipping._headroom``)."""
        return _headroom(
            move, [weights], [self.variable_relative_threshold], self.absolute_threshold, False
        )

    def _factor(self, move: tf.Tensor, weights: tf.Tensor, per_row: bool, headroom=None) -> tuple:
        """The rule for ``move`` of ``weights``: its ``ShrunkUpdate`` and the factor, shaped to
        scale ``move`` (one per row with ``per_row``)."""
        shrunk = _shrink(
            move,
            [weights],
            [self.variable_relative_threshold],
            self.absolute_threshold,
            per_row,
            headroom,
        )
        factor = tf.cast(shrunk.factor, move.dtype)
        if per_row and move.shape.rank is not None and move.shape.rank > 1:
            factor = tf.reshape(factor, [-1] + [1] * (move.shape.rank - 1))
        return shrunk, factor

    def _per_row(self, gradient: Any) -> bool:
        return self.granularity == "row" and isinstance(gradient, tf.IndexedSlices)

    def _table_headrooms(self, gradients: list, variables: list, before: list) -> list:
        """For each shard of a sharded table with one factor per variable, the table's headroom
        (the smallest of its shards', each computed on its shard's device); ``None`` for the
        other variables."""
        headrooms = [None] * len(variables)
        for positions in _sharding.shard_groups(variables, gradients):
            positions = [p for p in positions if not self._per_row(gradients[p])]
            parts = []
            for position in positions:
                with _sharding.on_device_of(variables[position]):
                    _, old, move = _moved(variables[position], before[position])
                    parts.append(self._headroom(move, old))
            if parts:
                table = _sharding.smallest(parts)
                for position in positions:
                    headrooms[position] = table
        return headrooms

    def _clip_variable(self, variable, old, gradient, constraint, index, headroom=None):
        rows = old if isinstance(old, _Rows) else None
        new, old, move = _moved(variable, old)
        shrunk, factor = self._factor(move, old, self._per_row(gradient), headroom)
        # w' - (1 - sigma) u: exactly the inner optimizer's w' wherever sigma = 1.
        correction = (1.0 - factor) * move
        if rows is not None:
            # Written, not added: a repeated row gets the same value twice.
            variable.scatter_update(tf.IndexedSlices(new - correction, rows.indices))
        else:
            variable.assign_sub(correction)
        if constraint is not None:
            variable.assign(constraint(variable))
        if self.export_clipping_factors:
            if isinstance(gradient, tf.IndexedSlices):  # repeated rows add up
                values = deduplicate_sparse(gradient).values
            else:
                values = gradient
            values = tf.cast(values, move.dtype)
            scale = _keras.gradient_scale(self.inner_optimizer)
            if scale is not None:
                values = values / scale
            self.record_statistics(
                index, shrunk.factor, shrunk.ratio, _statistics.squared_norm(values)
            )

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "optimizer": _keras.serialize_optimizer(self.inner_optimizer),
            "variable_relative_threshold": self.variable_relative_threshold,
            "absolute_threshold": self.absolute_threshold,
            "granularity": self.granularity,
            "export_clipping_factors": self.export_clipping_factors,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Clippy:
        config = dict(config)
        inner = _keras.get_optimizer(config.pop("optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)

"""The one place that decides which Keras tfsmooth uses.

TensorFlow routes ``tf.keras`` to Keras 3 unless ``TF_USE_LEGACY_KERAS`` is ``1``/``true``/``True``, in
which case it routes to the ``tf_keras`` package (Keras 2). tfsmooth asks ``tf.keras`` itself, so it
always agrees with the user's own ``tf.keras`` and with TensorFlow Recommenders, which needs tf-keras.

Every other module takes Keras from here::

    from tfsmooth._keras import keras, register_serializable
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

import tensorflow as tf

__all__ = [
    "IS_KERAS_3",
    "KERAS_FLAVOUR",
    "PACKAGE",
    "is_keras_tensor",
    "keras",
    "register_serializable",
]

#: The package name under which every public tfsmooth object is registered for serialization.
PACKAGE = "tfsmooth"


def _resolve():
    try:
        module = tf.keras
        layer_module = module.layers.Layer.__module__
    except ImportError as error:  # TF_USE_LEGACY_KERAS=1 without tf-keras, or no keras at all.
        legacy = os.environ.get("TF_USE_LEGACY_KERAS", "") in ("1", "true", "True")
        hint = (
            'TF_USE_LEGACY_KERAS is set, so tf-keras is needed: pip install "tfsmooth[tfrs]"'
            if legacy
            else "pip install keras"
        )
        raise ImportError(
            f"tfsmooth could not load Keras through tf.keras ({error}). {hint}"
        ) from error
    return module, not layer_module.startswith("tf_keras")


#: The Keras module in use: ``tf.keras`` as TensorFlow resolves it.
keras, IS_KERAS_3 = _resolve()

#: ``"keras3"`` or ``"tf_keras"``.
KERAS_FLAVOUR = "keras3" if IS_KERAS_3 else "tf_keras"

T = TypeVar("T")


def register_serializable(obj: T) -> T:
    """Registers a class or function for Keras serialization under the package ``tfsmooth``.

    Used as a decorator on every public layer, loss, metric, optimizer, callback and activation, so
    ``.keras`` files and configs that name them load in any process that imports tfsmooth.
    """
    return keras.utils.register_keras_serializable(package=PACKAGE)(obj)


def is_keras_tensor(x: Any) -> bool:
    """Whether ``x`` is a symbolic Keras tensor (an input of a functional model under construction)."""
    if IS_KERAS_3:
        return keras.utils.is_keras_tensor(x)
    try:
        return keras.backend.is_keras_tensor(x)
    except (TypeError, ValueError):  # tf-keras raises for anything that is not tensor-like.
        return False


# ----------------------------------------------------------------------------------------------------
# Optimizer adapters, for tfsmooth.optimizers (ClippyAdagrad, Clippy).
#
# Keras 3 and tf-keras build optimizers differently: Keras 3 calls
# ``update_step(gradient, variable, learning_rate)`` and creates state with
# ``add_variable_from_reference(reference_variable, name, initializer)``; tf-keras calls
# ``update_step(gradient, variable)``, creates state with
# ``add_variable_from_reference(model_variable, variable_name, shape, initial_value)``, keeps the
# learning rate itself and deduplicates sparse gradients before the update. The two base classes
# below give tfsmooth's optimizers one API over both; the math stays in tfsmooth.optimizers.


def native_variable(variable: Any) -> Any:
    """The ``tf.Variable`` behind a Keras variable (Keras 3 wraps one; tf-keras uses it as is)."""
    if IS_KERAS_3 and isinstance(variable, keras.Variable):
        return variable.value
    return variable


def variable_path(variable: Any) -> str:
    """A variable's name with its layer, ``"dense/kernel"``, in both flavours."""
    path = getattr(variable, "path", None)
    if isinstance(path, str) and path:
        return path
    name = str(getattr(variable, "name", "variable"))
    return name[:-2] if name.endswith(":0") else name


def deduplicate_sparse(gradient: tf.IndexedSlices) -> tf.IndexedSlices:
    """Sums the rows of repeated indices, as tf-keras does before every sparse update.

    Sort-based with static shapes, which XLA compiles far better than ``tf.unique``: the result
    has as many rows as the input; the rows past the unique indices are zero and point at an index
    already present, so adding them changes nothing.
    """
    indices = gradient.indices
    count = tf.shape(indices)[0]
    order = tf.argsort(indices, stable=True)
    ordered = tf.gather(indices, order)
    positions = tf.range(count)
    first = tf.logical_or(
        tf.equal(positions, 0), tf.not_equal(ordered, tf.roll(ordered, shift=1, axis=0))
    )
    segments = tf.cumsum(tf.cast(first, tf.int32)) - 1
    values = tf.math.unsorted_segment_sum(tf.gather(gradient.values, order), segments, count)
    unique = tf.math.unsorted_segment_max(ordered, segments, count)
    used = positions < tf.reduce_sum(tf.cast(first, tf.int32))
    unique = tf.where(used, unique, tf.reduce_min(indices))
    return tf.IndexedSlices(values, unique, gradient.dense_shape)


class OptimizerBase(keras.optimizers.Optimizer):
    """The base of tfsmooth's optimizers, with one API in both Keras flavours.

    Subclasses implement ``build_state(variables)`` (create per-variable state with
    :meth:`add_state`) and ``apply_update(gradient, variable, learning_rate)``, which updates one
    variable: ``variable`` is a ``tf.Variable``, ``gradient`` a dense tensor or a
    ``tf.IndexedSlices`` without repeated indices, ``learning_rate`` the current rate (schedules
    already evaluated). :meth:`variable_index` finds a variable's state.
    """

    def __init__(self, learning_rate: Any, *, name: str, **kwargs: Any):
        if IS_KERAS_3:
            super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        else:
            super().__init__(name=name, **kwargs)
            self._learning_rate = self._build_learning_rate(learning_rate)

    def build(self, var_list):
        if IS_KERAS_3:
            if self.built:
                return
            super().build(var_list)
        else:
            if getattr(self, "_built", False):
                return
            super().build(var_list)
            self._built = True
        self.build_state(list(var_list))

    def build_state(self, variables: list) -> None:
        raise NotImplementedError

    def apply_update(self, gradient: Any, variable: tf.Variable, learning_rate: Any) -> None:
        raise NotImplementedError

    def add_state(self, variable: Any, name: str, *, initial_value: float = 0.0, shape=None):
        """A new optimizer variable for ``variable``: its dtype and device, filled with
        ``initial_value``, of the variable's shape or of ``shape``."""
        if IS_KERAS_3:
            # Not keras.initializers.Constant: it rounds the value through float32 first.
            def initializer(shape, dtype=None):
                return tf.fill(shape, tf.constant(initial_value, dtype))

            if shape is None:
                return self.add_variable_from_reference(variable, name, initializer=initializer)
            prefix = variable_path(variable).replace("/", "_").replace(":", "_")
            with self._distribution_strategy.extended.colocate_vars_with(native_variable(variable)):
                return self.add_variable(
                    shape=tuple(shape),
                    initializer=initializer,
                    dtype=variable.dtype,
                    name=f"{prefix}_{name}",
                )
        dtype = getattr(variable, "true_dtype", variable.dtype)
        full_shape = tf.TensorShape(variable.shape if shape is None else shape).as_list()
        return self.add_variable_from_reference(
            variable,
            name,
            shape=shape,
            initial_value=tf.fill(full_shape, tf.constant(initial_value, dtype)),
        )

    def variable_index(self, variable: Any) -> int:
        """The position of ``variable`` in the list the optimizer was built with."""
        if IS_KERAS_3:
            return self._get_variable_index(variable)
        return self._index_dict[self._var_key(variable)]

    if IS_KERAS_3:

        def update_step(self, gradient, variable, learning_rate):
            if isinstance(gradient, tf.IndexedSlices):
                gradient = deduplicate_sparse(gradient)
            self.apply_update(gradient, variable, learning_rate)

    else:

        def update_step(self, gradient, variable):
            self.apply_update(gradient, variable, self.learning_rate)

    def get_config(self) -> dict:
        config = super().get_config()
        if not IS_KERAS_3:
            config["learning_rate"] = self._serialize_hyperparameter(self._learning_rate)
        if hasattr(config.get("learning_rate"), "dtype"):  # a numpy scalar read from a variable
            config["learning_rate"] = float(config["learning_rate"])
        return config


class OptimizerWrapperBase(OptimizerBase):
    """The base of optimizers that let an inner optimizer apply the gradients, then adjust.

    Subclasses implement ``build_state(variables)``, ``before_apply(gradients, variables)``
    (returns what ``after_apply`` needs, e.g. the variables' values before the step) and
    ``after_apply(gradients, variables, before, aggregated)``, called in the replica context
    right after the inner optimizer's own ``apply_gradients`` (its gradient clipping, weight
    decay, distribution and iteration count all stay its own). ``aggregated`` says whether the
    gradients were already summed over replicas. Iterations and learning rate are the inner
    optimizer's.
    """

    def __init__(self, inner_optimizer: Any, *, name: str):
        super().__init__(0.0, name=name)
        self.inner_optimizer = inner_optimizer

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    def before_apply(self, gradients: list, variables: list) -> Any:
        raise NotImplementedError

    def after_apply(self, gradients: list, variables: list, before: Any, aggregated: bool):
        raise NotImplementedError

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.inner_optimizer.learning_rate = value

    @property
    def variables(self):
        own = super().variables
        return type(own)(list(own) + list(self.inner_optimizer.variables))

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    if IS_KERAS_3:

        def apply(self, grads, trainable_variables=None):
            if trainable_variables is None:
                variables = list(self._trainable_variables)
            else:
                variables = list(trainable_variables)
                if not self.built:
                    with keras.name_scope(self.name, caller=self):
                        self.build(variables)
                    self.built = True
            grads = list(grads)
            before = self.before_apply(grads, variables)
            self.inner_optimizer.apply(grads, trainable_variables)
            self.after_apply(grads, variables, before, False)

        def apply_gradients(self, grads_and_vars):
            grads, variables = zip(*grads_and_vars)
            self.apply(grads, variables)
            return self.iterations

    else:

        def apply_gradients(
            self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs
        ):
            grads_and_vars = list(grads_and_vars)
            if not grads_and_vars:
                return self.iterations
            grads, variables = (list(x) for x in zip(*grads_and_vars))
            with tf.init_scope():
                self.build(variables)
            aggregated = skip_gradients_aggregation or not kwargs.get(
                "experimental_aggregate_gradients", True
            )
            before = self.before_apply(grads, variables)
            self.inner_optimizer.apply_gradients(
                grads_and_vars,
                name=name,
                skip_gradients_aggregation=skip_gradients_aggregation,
                **kwargs,
            )
            self.after_apply(grads, variables, before, aggregated)
            return self.iterations

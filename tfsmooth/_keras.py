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

import numpy as np
import tensorflow as tf

__all__ = [
    "IS_KERAS_3",
    "KERAS_FLAVOUR",
    "PACKAGE",
    "compute_loss_tracker",
    "deserialize_compile_config",
    "is_keras_tensor",
    "keras",
    "register_serializable",
    "replica_count",
    "require_tf_keras",
    "scale_for_replicas",
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
# Losses and models with their own compute_loss, under tf.distribute.


def replica_count() -> int:
    """The number of replicas of the current ``tf.distribute`` strategy (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def scale_for_replicas(loss: Any) -> Any:
    """What a Keras loss's mean returns under a strategy, in the flavour in use.

    Keras 3 losses divide a per-replica mean by the number of replicas themselves (``fit`` then
    sums the replicas' gradients); tf-keras losses return the per-replica mean and leave the
    division to ``compile``'s loss container. A custom loss class calls this on its mean so it
    behaves as the flavour's built-in losses do.
    """
    replicas = replica_count()
    if IS_KERAS_3 and replicas > 1:
        return loss * (1.0 / replicas)
    return loss


def compute_loss_tracker() -> Any:
    """A ``Mean("loss")`` for a model that overrides ``compute_loss``, or None where none is needed.

    Keras 3's train step tracks whatever ``compute_loss`` returns; tf-keras's tracks the compiled
    loss only, so a model computing its own loss must track it itself (``tracker.update_state``).
    """
    return None if IS_KERAS_3 else keras.metrics.Mean(name="loss")


def deserialize_compile_config(config: dict) -> dict:
    """The ``compile`` arguments saved in a ``.keras`` file, deserialized by the flavour's own
    new-format deserializer (``keras.utils``' in Keras 3, ``keras.saving``'s in tf-keras)."""
    if IS_KERAS_3:
        return keras.utils.deserialize_keras_object(config)
    return keras.saving.deserialize_keras_object(config)


def require_tf_keras(message: str) -> None:
    """Raises ``ImportError`` under Keras 3, with ``message`` and how to choose tf-keras: for code
    (TFRS) that needs tf-keras."""
    if IS_KERAS_3:
        raise ImportError(
            f"{message} This process uses Keras 3: set TF_USE_LEGACY_KERAS=1 before importing "
            "TensorFlow."
        )


# ----------------------------------------------------------------------------------------------------
# Optimizer adapters, for tfsmooth.optimizers (ClippyAdagrad, Clippy).
#
# Keras 3 and tf-keras build optimizers differently: Keras 3 calls
# ``update_step(gradient, variable, learning_rate)``, creates state with
# ``add_variable_from_reference(reference_variable, name, initializer)`` and applies gradients with
# ``apply(grads, trainable_variables)``; tf-keras calls ``update_step(gradient, variable)``, creates
# state with ``add_variable_from_reference(model_variable, variable_name, shape, initial_value)``,
# keeps the learning rate itself, deduplicates sparse gradients before the update and applies with
# ``apply_gradients(grads_and_vars, name, skip_gradients_aggregation)``. ``OptimizerAdapter`` and
# ``OptimizerWrapperAdapter`` (one definition per flavour) turn both into the one API that
# ``tfsmooth.optimizers._base`` builds on; the math stays in ``tfsmooth.optimizers``.


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


def _to_python(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_python(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def get_optimizer(identifier: Any, custom_objects: dict | None = None) -> Any:
    """``keras.optimizers.get``, giving the same optimizer for a config dict in both flavours.

    tf-keras turns a dict without ``"is_legacy_optimizer": False`` in its config (a hand-written
    ``{"class_name": "Adam", "config": {...}}``) into its *legacy* optimizer, which is not a
    ``keras.optimizers.Optimizer``; here such a dict gives the current one, as under Keras 3.
    ``custom_objects`` resolves class names that are not registered.
    """
    if not IS_KERAS_3 and isinstance(identifier, dict):
        config = dict(identifier.get("config") or {})
        config.setdefault("is_legacy_optimizer", False)
        identifier = {**identifier, "config": config}
    with keras.utils.custom_object_scope(custom_objects or {}):
        return keras.optimizers.get(identifier)


def serialize_optimizer(optimizer: Any) -> dict:
    """``keras.optimizers.serialize`` in plain Python types, ready for JSON.

    tf-keras's configs hold numpy scalars (the learning rate read from its variable); they become
    Python numbers. Keras 3's are returned as they are.
    """
    return _to_python(keras.optimizers.serialize(optimizer))


def config_to_python(config: dict) -> dict:
    """An optimizer config with the numpy scalars tf-keras leaves in it as Python numbers."""
    return _to_python(config)


def gradient_scale(optimizer: Any) -> float | None:
    """The factor the gradients handed to ``optimizer`` are multiplied by, or ``None``.

    Keras 3 optimizers take a ``loss_scale_factor``: they receive gradients of the scaled loss and
    divide by it themselves. tf-keras optimizers always receive unscaled gradients (its
    ``LossScaleOptimizer`` unscales before passing them on), so this is ``None`` there.
    """
    if not IS_KERAS_3:
        return None
    return getattr(optimizer, "loss_scale_factor", None) or None


def _single_replica() -> bool:
    """Whether the gradients come from one replica, so summing them over replicas is the identity.

    Both flavours sum gradients through ``ReplicaContext.all_reduce`` even then; under
    ``ParameterServerStrategy`` (one replica per worker) that identity is placed on the worker, so
    every dense gradient of a parameter server's variable would travel to the worker and back.
    """
    return tf.distribute.get_strategy().num_replicas_in_sync == 1


def guard_update_step(optimizer: Any, guard: Any) -> None:
    """Routes each per-variable update of ``optimizer`` through ``guard``.

    ``guard(update, gradient, variable)`` is called in place of the optimizer's own update of
    ``variable`` (in that variable's update context, so also under ``tf.distribute``), with
    ``update(gradient=gradient)`` a function that runs the optimizer's own update (with the
    gradient given, by default the one received). Keras 3 calls ``update_step(gradient, variable,
    learning_rate)``, tf-keras ``update_step(gradient, variable)``; the guard sees the same three
    arguments in both.
    """
    original = optimizer.update_step
    if IS_KERAS_3:

        def update_step(gradient, variable, learning_rate):
            def update(given=gradient):
                return original(given, variable, learning_rate)

            return guard(update, gradient, variable)

    else:

        def update_step(gradient, variable):
            def update(given=gradient):
                return original(given, variable)

            return guard(update, gradient, variable)

    # Not through the trackable __setattr__: a plain function, nothing to checkpoint.
    object.__setattr__(optimizer, "update_step", update_step)


if IS_KERAS_3:

    class OptimizerAdapter(keras.optimizers.Optimizer):
        """Keras 3's optimizer under tfsmooth's optimizer API (see ``tfsmooth.optimizers._base``).

        Provides ``__init__(learning_rate, *, name, **kwargs)``, ``build`` (once, then
        ``self.build_state(variables)``), ``add_state``, ``variable_index`` and an
        ``update_step`` that calls ``self.update_variable(gradient, variable, learning_rate)``
        (Keras 3 passes sparse gradients on with repeated indices; ``update_variable`` sums
        them). Before the per-variable updates of a step it calls
        ``self.prepare_update(grads_and_vars, learning_rate)``, after them
        ``self.finish_update()``.
        """

        def __init__(self, learning_rate: Any, *, name: str, **kwargs: Any):
            super().__init__(learning_rate=learning_rate, name=name, **kwargs)

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self.build_state(list(var_list))

        def add_state(self, variable: Any, name: str, *, initial_value: float = 0.0, shape=None):
            """A new optimizer variable for ``variable``: its dtype and device, filled with
            ``initial_value``, of the variable's shape or of ``shape``."""

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

        def variable_index(self, variable: Any) -> int:
            """The position of ``variable`` in the list the optimizer was built with."""
            return self._get_variable_index(variable)

        def update_step(self, gradient, variable, learning_rate):
            self.update_variable(gradient, variable, learning_rate)

        def _all_reduce_sum_gradients(self, grads_and_vars):
            if _single_replica():
                return list(grads_and_vars)
            return super()._all_reduce_sum_gradients(grads_and_vars)

        def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
            grads_and_vars = list(grads_and_vars)
            self.prepare_update(grads_and_vars, learning_rate)
            try:
                return super()._distributed_tf_update_step(
                    distribution, grads_and_vars, learning_rate
                )
            finally:
                self.finish_update()

    class OptimizerWrapperAdapter(OptimizerAdapter):
        """Keras 3's ``apply``/``apply_gradients`` for an optimizer that wraps ``inner_optimizer``.

        Both call ``self.apply_wrapped(grads, variables, apply_inner, aggregated)``, where
        ``apply_inner(grads)`` lets the inner optimizer apply ``grads`` (its own ``apply``) and
        ``aggregated`` says whether they were already summed over replicas (never, here).
        """

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
            self.apply_wrapped(
                grads,
                variables,
                lambda inner_grads: self.inner_optimizer.apply(inner_grads, trainable_variables),
                False,
            )

        def apply_gradients(self, grads_and_vars):
            grads, variables = zip(*grads_and_vars)
            self.apply(grads, variables)
            return self.iterations

else:

    class OptimizerAdapter(keras.optimizers.Optimizer):
        """tf-keras's optimizer under tfsmooth's optimizer API (see ``tfsmooth.optimizers._base``).

        Provides ``__init__(learning_rate, *, name, **kwargs)``, ``build`` (once, then
        ``self.build_state(variables)``), ``add_state``, ``variable_index`` and an
        ``update_step`` that calls ``self.update_variable(gradient, variable, learning_rate)``
        with the learning rate tf-keras keeps (``self.learning_rate``, schedules evaluated).
        Sparse gradients reach it with their repeated indices, as under Keras 3, and
        ``update_variable`` sums them with one sort: tf-keras's own deduplication
        (``tf.unique``) compiles into four sorts under XLA. Before the per-variable updates of a
        step it calls
        ``self.prepare_update(grads_and_vars, learning_rate)``, after them
        ``self.finish_update()``.
        """

        def __init__(self, learning_rate: Any, *, name: str, **kwargs: Any):
            # tf-keras's base defaults to weight_decay=0 (its own optimizers pass None): with 0
            # every step decays every variable by 0 -- a dense read and write of each variable,
            # embedding tables included, for nothing. None, as in Keras 3, skips it.
            kwargs.setdefault("weight_decay", None)
            super().__init__(name=name, **kwargs)
            self._learning_rate = self._build_learning_rate(learning_rate)

        def build(self, var_list):
            if getattr(self, "_built", False):
                return
            super().build(var_list)
            self._built = True
            self.build_state(list(var_list))

        def add_state(self, variable: Any, name: str, *, initial_value: float = 0.0, shape=None):
            """A new optimizer variable for ``variable``: its dtype and device, filled with
            ``initial_value``, of the variable's shape or of ``shape``."""
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
            return self._index_dict[self._var_key(variable)]

        def update_step(self, gradient, variable):
            self.update_variable(gradient, variable, self.learning_rate)

        def _deduplicate_sparse_grad(self, grads):
            return grads  # update_variable deduplicates (see the class docstring)

        def aggregate_gradients(self, grads_and_vars):
            if _single_replica():
                return list(grads_and_vars)
            return super().aggregate_gradients(grads_and_vars)

        def _distributed_apply_gradients_fn(self, distribution, grads_and_vars, **kwargs):
            grads_and_vars = list(grads_and_vars)
            prepared = self.prepare_update(grads_and_vars, self.learning_rate)
            jit_compile = self.jit_compile
            if prepared:
                # tf-keras's per-variable XLA function (GPU only) would keep the tensors
                # prepare_update computed at its first trace: update in this function instead.
                self.jit_compile = False
            try:
                return super()._distributed_apply_gradients_fn(
                    distribution, grads_and_vars, **kwargs
                )
            finally:
                self.jit_compile = jit_compile
                self.finish_update()

        def get_config(self) -> dict:
            config = super().get_config()
            config["learning_rate"] = self._serialize_hyperparameter(self._learning_rate)
            return config

    class OptimizerWrapperAdapter(OptimizerAdapter):
        """tf-keras's ``apply_gradients`` for an optimizer that wraps ``inner_optimizer``.

        Calls ``self.apply_wrapped(grads, variables, apply_inner, aggregated)``, where
        ``apply_inner(grads)`` lets the inner optimizer apply ``grads`` (its own
        ``apply_gradients``, with the same other arguments) and ``aggregated`` says whether the
        gradients were already summed over replicas (``skip_gradients_aggregation``).
        """

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
            self.apply_wrapped(
                grads,
                variables,
                lambda inner_grads: self.inner_optimizer.apply_gradients(
                    list(zip(inner_grads, variables)),
                    name=name,
                    skip_gradients_aggregation=skip_gradients_aggregation,
                    **kwargs,
                ),
                aggregated,
            )
            return self.iterations

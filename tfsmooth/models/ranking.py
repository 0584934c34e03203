"""A multitask ranking model in the style of the TFRS ranking and DCN tutorials."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from tfsmooth._keras import keras
from tfsmooth._validation import check_int, check_seed, is_integer

__all__ = [
    "ACTIVATIONS",
    "TASKS",
    "build_ranking_model",
    "make_activation",
    "ranking_losses",
    "ranking_metrics",
]

#: Activation names :func:`build_ranking_model` knows (any other Keras activation name works too);
#: the one list: ``python -m tfsmooth demo --activations`` offers these.
ACTIVATIONS = ("relu", "smelu", "generalized_smelu", "gelu", "swish", "softplus")

#: The heads a ranking model can have: ``"binary"`` (P(rating >= 4)) and ``"regression"`` (rating).
TASKS = ("binary", "regression")

ActivationSpec = str | Callable[..., Any]


def _is_factory(activation: Any) -> bool:
    """A class, or a callable that can be called without arguments (``lambda: SmeLU(beta=2)``)."""
    if isinstance(activation, type):
        return issubclass(activation, keras.layers.Layer)
    try:
        signature = inspect.signature(activation)
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty
        or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in signature.parameters.values()
    )


def make_activation(activation: ActivationSpec, name: str | None = None):
    """A fresh Keras layer applying ``activation``.

    Args:
        activation: a name (``"relu"``, ``"smelu"``, ``"generalized_smelu"``, ``"gelu"``,
            ``"swish"``, ``"softplus"`` or any Keras activation name), a function of one tensor
            (e.g. ``tfsmooth.activations.smelu``), a Keras layer (cloned from its config), or a
            zero-argument factory returning a layer (``lambda: SmeLU(beta=2.0, learnable=True)``;
            called once per use, so learnable parameters are not shared between layers).
        name: name of the layer.

    Returns:
        A Keras layer.

    Raises:
        ValueError: for an unknown activation name.
        TypeError: for anything else that is not callable, or a factory not returning a layer.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.activations import smelu
    >>> from tfsmooth.layers import SmeLU
    >>> from tfsmooth.models import make_activation
    >>> make_activation("smelu", name="hidden_activation").name
    'hidden_activation'
    >>> layer = make_activation(lambda: SmeLU(beta=2.0))  # a new layer on every call
    >>> float(layer.beta)
    2.0
    >>> make_activation(smelu)(tf.constant([-2.0, 0.0, 2.0])).numpy()
    array([0.  , 0.25, 2.  ], dtype=float32)

    References:
        - [Shamir, Lin, Coviello (2020)](https://arxiv.org/abs/2010.09931) (SmeLU)
        - [Lin, Shamir (2022)](https://arxiv.org/abs/2202.06499) (generalized SmeLU)
    """
    from tfsmooth import layers

    if isinstance(activation, str):
        key = activation.lower()
        if key == "smelu":
            return layers.SmeLU(name=name)
        if key == "generalized_smelu":
            return layers.GeneralizedSmeLU(name=name)
        if key == "swish":
            key = "silu" if hasattr(keras.activations, "silu") else "swish"
        try:
            keras.activations.get(key)
        except (ValueError, TypeError):
            raise ValueError(
                f"`activation` must be one of {list(ACTIVATIONS)} or a Keras activation name, a "
                f"callable or a layer factory. Received: activation={activation!r}"
            ) from None
        return keras.layers.Activation(key, name=name)
    if isinstance(activation, keras.layers.Layer):
        config = dict(activation.get_config(), name=name or activation.name)
        return activation.__class__.from_config(config)
    if not callable(activation):
        raise TypeError(
            "`activation` must be a name, a callable or a zero-argument layer factory. "
            f"Received: activation={activation!r}"
        )
    if _is_factory(activation):
        layer = activation()
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "A zero-argument `activation` must return a Keras layer. Received: activation() "
                f"returned {type(layer).__name__}"
            )
        return layer
    return keras.layers.Activation(activation, name=name)


def _check_units(hidden_units: Any) -> tuple[int, ...]:
    if isinstance(hidden_units, int) or not isinstance(hidden_units, Sequence):
        raise TypeError(
            f"`hidden_units` must be a sequence of positive integers. Received: hidden_units="
            f"{hidden_units!r}"
        )
    units = tuple(hidden_units)
    if not all(is_integer(u) for u in units):
        raise TypeError(
            f"`hidden_units` must be positive integers. Received: hidden_units={hidden_units!r}"
        )
    if any(u < 1 for u in units):
        raise ValueError(
            f"`hidden_units` must be positive integers. Received: hidden_units={hidden_units!r}"
        )
    return tuple(int(u) for u in units)


def _check_tasks(tasks: Any) -> tuple[str, ...]:
    if isinstance(tasks, str):
        tasks = (tasks,)
    tasks = tuple(tasks)
    if not tasks or any(t not in TASKS for t in tasks) or len(set(tasks)) != len(tasks):
        raise ValueError(
            f"`tasks` must be distinct names from {list(TASKS)}. Received: tasks={list(tasks)!r}"
        )
    return tasks


class _Seeds:
    """Distinct seeded initializers for each layer (or Keras' defaults when ``seed`` is None)."""

    def __init__(self, seed: int | None):
        self.seed = seed
        self.count = 0

    def __call__(self, kind: str):
        if self.seed is None:
            return kind
        self.count += 1
        seed = self.seed * 1009 + self.count
        classes = {
            "glorot_uniform": keras.initializers.GlorotUniform,
            "uniform": keras.initializers.RandomUniform,
            "truncated_normal": keras.initializers.TruncatedNormal,
        }
        return classes[kind](seed=seed)


def build_ranking_model(
    n_users: int,
    n_items: int,
    n_genres: int,
    *,
    activation: ActivationSpec = "relu",
    hidden_units: Sequence[int] = (256, 128, 64),
    embedding_dim: int = 32,
    cross: bool = False,
    layer_norm: bool = False,
    tasks: Sequence[str] = ("binary",),
    seed: int | None = None,
    name: str = "ranking",
):
    """A ranking model: user and item embeddings, a genre projection, optional DCN cross, an MLP.

    The architecture of the TFRS ranking tutorial, with the DCN layer of its DCN tutorial and the
    multitask shared bottom of the Clippy paper's models::

        user id  -> Embedding(n_users, d) --\\
        item id  -> Embedding(n_items, d) ----> concat [3d] -> (Cross) -> (LayerNorm)
        genres   -> Dense(d, no bias)     --/     -> [Dense(h) -> activation] per h in hidden_units
                                                  -> one head per task

    Heads: ``"binary"`` is ``Dense(1, sigmoid)``, the probability that the rating is ``>= 4``;
    ``"regression"`` is ``Dense(1)``, the rating.

    Args:
        n_users: rows of the user embedding (vocabulary size + 1; index 0 = unknown), as in
            :class:`tfsmooth.data.RankingData`.
        n_items: rows of the item embedding.
        n_genres: width of the multi-hot genre input.
        activation: the hidden layers' activation: a name (``"relu"``, ``"smelu"``,
            ``"generalized_smelu"``, ``"gelu"``, ``"swish"``, ``"softplus"``), a function, a layer,
            or a zero-argument factory returning a layer (``lambda: SmeLU(beta=2.0)``). See
            :func:`make_activation`.
        hidden_units: widths of the shared MLP.
        embedding_dim: width ``d`` of each embedding and of the genre projection.
        cross: add a full-rank DCN :class:`tfsmooth.layers.Cross` layer after the concatenation.
        layer_norm: add ``LayerNormalization`` after the concatenation (after the cross layer).
        tasks: the heads, from ``("binary", "regression")``.
        seed: seed of every initializer, so the same seed builds the same weights; ``None`` uses
            Keras' global random state.
        name: the model's name.

    Returns:
        A functional ``keras.Model`` taking ``{"user": int32[B], "item": int32[B],
        "genres": float32[B, n_genres]}`` and returning ``{task: float32[B, 1]}``. Not compiled:
        see :func:`ranking_losses` and :func:`ranking_metrics`.

    Raises:
        ValueError: for sizes < 1, a negative seed, unknown tasks or activation names.
        TypeError: for sizes or a seed that are not integers (numpy integers are accepted), or an
            activation that is neither name, callable nor layer factory.

    Example:

    >>> from tfsmooth.models import build_ranking_model, ranking_losses, ranking_metrics
    >>> from tfsmooth.layers import SmeLU
    >>> model = build_ranking_model(100, 50, 20, activation=lambda: SmeLU(beta=2.0), seed=1)
    >>> model.compile("adam", loss=ranking_losses(("binary",)), metrics=ranking_metrics(("binary",)))

    References:
        - [TFRS ranking tutorial](https://www.tensorflow.org/recommenders/examples/basic_ranking)
        - [Wang et al. DCN V2 (2020)](https://arxiv.org/abs/2008.13535)
        - [Tang et al. Clippy (2023)](https://arxiv.org/abs/2302.09178)
    """
    from tfsmooth.layers import Cross

    n_users = check_int("n_users", n_users, 1)
    n_items = check_int("n_items", n_items, 1)
    n_genres = check_int("n_genres", n_genres, 1)
    embedding_dim = check_int("embedding_dim", embedding_dim, 1)
    units = _check_units(hidden_units)
    tasks = _check_tasks(tasks)
    seed = check_seed("seed", seed)
    make_activation(activation)  # validate once, before building anything
    init = _Seeds(seed)

    user = keras.Input(shape=(), dtype="int32", name="user")
    item = keras.Input(shape=(), dtype="int32", name="item")
    genres = keras.Input(shape=(n_genres,), dtype="float32", name="genres")
    embedding_init = "uniform"
    user_vector = keras.layers.Embedding(
        n_users, embedding_dim, embeddings_initializer=init(embedding_init), name="user_embedding"
    )(user)
    item_vector = keras.layers.Embedding(
        n_items, embedding_dim, embeddings_initializer=init(embedding_init), name="item_embedding"
    )(item)
    genre_vector = keras.layers.Dense(
        embedding_dim,
        use_bias=False,
        kernel_initializer=init("glorot_uniform"),
        name="genre_projection",
    )(genres)
    x = keras.layers.Concatenate(name="features")([user_vector, item_vector, genre_vector])
    if cross:
        x = Cross(kernel_initializer=init("truncated_normal"), name="cross")(x)
    if layer_norm:
        x = keras.layers.LayerNormalization(name="layer_norm")(x)
    for index, width in enumerate(units):
        x = keras.layers.Dense(
            width, kernel_initializer=init("glorot_uniform"), name=f"hidden_{index}"
        )(x)
        x = make_activation(activation, name=f"activation_{index}")(x)
    outputs = {}
    for task in tasks:
        outputs[task] = keras.layers.Dense(
            1,
            activation="sigmoid" if task == "binary" else None,
            kernel_initializer=init("glorot_uniform"),
            name=task,
        )(x)
    inputs = {"user": user, "item": item, "genres": genres}
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def ranking_losses(tasks: Sequence[str] = ("binary",)) -> dict:
    """The loss of each head: binary cross-entropy for ``"binary"``, MSE for ``"regression"``.

    For labels ``y`` and predictions ``p`` (probabilities) or ``r`` (ratings) of a batch of ``B``:

    .. math::

        \\mathrm{BCE} = -\\frac{1}{B} \\sum_i \\left[y_i \\log p_i
            + (1 - y_i) \\log(1 - p_i)\\right]
        \\qquad
        \\mathrm{MSE} = \\frac{1}{B} \\sum_i (y_i - r_i)^2

    Keras' ``BinaryCrossentropy`` and ``MeanSquaredError``, one fresh instance per call, keyed by
    the output names of :func:`build_ranking_model`.

    Args:
        tasks: the model's heads, from ``("binary", "regression")`` (a single name is accepted).

    Returns:
        ``{task: keras loss}``, for ``model.compile(loss=...)``.

    Raises:
        ValueError: for an empty, repeated or unknown task.

    Example:

    >>> from tfsmooth.models import ranking_losses
    >>> losses = ranking_losses(("binary", "regression"))
    >>> {task: type(loss).__name__ for task, loss in losses.items()}
    {'binary': 'BinaryCrossentropy', 'regression': 'MeanSquaredError'}
    >>> round(float(losses["regression"]([[3.0], [5.0]], [[4.0], [5.0]])), 4)  # (1 + 0) / 2
    0.5
    """
    tasks = _check_tasks(tasks)
    losses = {
        "binary": keras.losses.BinaryCrossentropy,
        "regression": keras.losses.MeanSquaredError,
    }
    return {task: losses[task]() for task in tasks}


def ranking_metrics(tasks: Sequence[str] = ("binary",)) -> dict:
    """AUC for ``"binary"``, RMSE for ``"regression"`` (named ``auc`` and ``rmse``).

    .. math::

        \\mathrm{AUC} = P(p_i > p_j \\mid y_i = 1, y_j = 0)
        \\qquad
        \\mathrm{RMSE} = \\sqrt{\\tfrac{1}{N} \\sum_i (y_i - r_i)^2}

    Keras' streaming ``AUC`` (ROC, approximated on 200 thresholds) and ``RootMeanSquaredError``,
    fresh instances per call, keyed by the output names of :func:`build_ranking_model`. For the
    exact values on a whole test set see :func:`tfsmooth.reproducibility.auc_score` and
    :func:`tfsmooth.reproducibility.rmse`.

    Args:
        tasks: the model's heads, from ``("binary", "regression")`` (a single name is accepted).

    Returns:
        ``{task: [keras metric]}``, for ``model.compile(metrics=...)``.

    Raises:
        ValueError: for an empty, repeated or unknown task.

    Example:

    >>> from tfsmooth.models import ranking_metrics
    >>> metrics = ranking_metrics(("binary", "regression"))
    >>> {task: [metric.name for metric in values] for task, values in metrics.items()}
    {'binary': ['auc'], 'regression': ['rmse']}
    >>> rmse = metrics["regression"][0]
    >>> _ = rmse.update_state([[3.0], [5.0]], [[4.0], [5.0]])
    >>> round(float(rmse.result()), 4)  # sqrt((1 + 0) / 2)
    0.7071
    """
    tasks = _check_tasks(tasks)
    metrics = {
        "binary": lambda: [keras.metrics.AUC(name="auc")],
        "regression": lambda: [keras.metrics.RootMeanSquaredError(name="rmse")],
    }
    return {task: metrics[task]() for task in tasks}

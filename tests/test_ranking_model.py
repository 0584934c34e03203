"""The ranking model: forward pass against numpy, activations, seeds, training, saving, serving."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import export_saved_model, serve_in_clean_process
from references import generalized_reference, numpy_forward, smelu_reference

from tfsmooth._keras import keras
from tfsmooth.activations import smelu
from tfsmooth.data import encode_ranking, synthetic_ratings
from tfsmooth.layers import Cross, GeneralizedSmeLU, SmeLU
from tfsmooth.models import build_ranking_model, make_activation, ranking_losses, ranking_metrics

N_USERS, N_ITEMS, N_GENRES = 7, 9, 4


def _inputs(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "user": rng.integers(0, N_USERS, n).astype("int32"),
        "item": rng.integers(0, N_ITEMS, n).astype("int32"),
        "genres": (rng.random((n, N_GENRES)) < 0.4).astype("float32"),
    }


def _weights(model):
    return {w.path if hasattr(w, "path") else w.name: w.numpy() for w in model.weights}


@pytest.mark.parametrize(
    "activation, reference, cross, layer_norm",
    [
        ("relu", lambda x: np.maximum(x, 0.0), False, False),
        ("smelu", lambda x: smelu_reference(x, 1.0), True, True),
        (lambda: SmeLU(beta=2.5), lambda x: smelu_reference(x, 2.5), True, False),
        (smelu, lambda x: smelu_reference(x, 1.0), False, True),
        (
            lambda: GeneralizedSmeLU(negative_slope=0.05),
            lambda x: generalized_reference(x, 1.0, 1.0, 0.05, 1.0, 0.0),
            False,
            False,
        ),
        ("softplus", lambda x: np.log1p(np.exp(x)), False, False),
        ("swish", lambda x: x / (1.0 + np.exp(-x)), False, False),
    ],
)
def test_forward_pass_matches_numpy(activation, reference, cross, layer_norm):
    hidden = (8, 5)
    model = build_ranking_model(
        N_USERS, N_ITEMS, N_GENRES,
        activation=activation, hidden_units=hidden, embedding_dim=3, cross=cross,
        layer_norm=layer_norm, tasks=("binary", "regression"), seed=4,
    )  # fmt: skip
    # Random (not initial) weights so every term matters, including LayerNorm's and biases.
    rng = np.random.default_rng(1)
    model.set_weights(
        [rng.normal(scale=0.7, size=w.shape).astype("float32") for w in model.get_weights()]
    )
    inputs = _inputs()
    outputs = model(inputs)
    assert set(outputs) == {"binary", "regression"}
    expected = numpy_forward(model, inputs, reference, hidden, cross, layer_norm)
    for task in ("binary", "regression"):
        assert outputs[task].shape == (6, 1)
        np.testing.assert_allclose(outputs[task], expected[task], rtol=2e-4, atol=2e-5)


def test_the_layers_are_what_the_arguments_ask_for():
    model = build_ranking_model(
        N_USERS, N_ITEMS, N_GENRES, activation=lambda: SmeLU(learnable=True), cross=True,
        layer_norm=True, hidden_units=(4, 3), tasks=("regression",),
    )  # fmt: skip
    types = {layer.name: type(layer) for layer in model.layers}
    assert types["cross"] is Cross
    assert types["layer_norm"] is keras.layers.LayerNormalization
    smelus = [layer for layer in model.layers if isinstance(layer, SmeLU)]
    assert len(smelus) == 2 and smelus[0] is not smelus[1]  # one learnable width per layer
    assert "binary" not in types and model.get_layer("regression").activation.__name__ == "linear"
    plain = build_ranking_model(N_USERS, N_ITEMS, N_GENRES, hidden_units=(4,))
    assert "cross" not in {layer.name for layer in plain.layers}


@pytest.mark.parametrize(
    "activation, layer_type",
    [
        ("smelu", SmeLU),
        ("generalized_smelu", GeneralizedSmeLU),
        (SmeLU, SmeLU),
        (SmeLU(beta=3.0), SmeLU),
        ("gelu", keras.layers.Activation),
        (tf.nn.relu, keras.layers.Activation),
    ],
)
def test_make_activation_accepts_names_layers_classes_factories_and_functions(
    activation, layer_type
):
    first, second = make_activation(activation), make_activation(activation)
    assert isinstance(first, layer_type) and first is not second


def test_a_layer_instance_is_cloned_with_its_config():
    layer = make_activation(SmeLU(beta=3.0, learnable=True), name="a")
    assert layer.beta == 3.0 and layer.learnable and layer.name == "a"


def test_seed_makes_initialisation_deterministic():
    make = lambda seed: build_ranking_model(  # noqa: E731
        N_USERS, N_ITEMS, N_GENRES, hidden_units=(8,), cross=True, seed=seed
    )
    a, b, c = _weights(make(3)), _weights(make(3)), _weights(make(4))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    kernels = [k for k in a if a[k].ndim == 2]
    assert all(not np.array_equal(a[k], c[k]) for k in kernels)
    # Distinct layers get distinct initial values (no two embedding tables alike).
    user, item = (next(v for k, v in a.items() if name in k) for name in ("user_emb", "item_emb"))
    assert not np.array_equal(user[:N_USERS].ravel()[:10], item[:N_USERS].ravel()[:10])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"n_users": 0}, ValueError, r"`n_users` must be an integer >= 1. Received: n_users=0"),
        ({"tasks": ("ctr",)}, ValueError, r"`tasks` must be distinct names from"),
        ({"tasks": ()}, ValueError, r"`tasks` must be distinct names"),
        ({"hidden_units": 64}, TypeError, r"`hidden_units` must be a sequence"),
        ({"hidden_units": (64, 0)}, ValueError, r"`hidden_units` must be positive integers"),
        ({"activation": "smoothrelu"}, ValueError, r"Received: activation='smoothrelu'"),
        ({"activation": 3}, TypeError, r"`activation` must be a name, a callable"),
        ({"activation": lambda: 3}, TypeError, r"must return a Keras layer"),
        ({"seed": -1}, ValueError, r"`seed` must be an integer >= 0"),
        ({"n_items": 10.0}, TypeError, r"`n_items` must be an integer. Received: n_items=10.0"),
        ({"embedding_dim": "8"}, TypeError, r"`embedding_dim` must be an integer"),
        ({"seed": 1.0}, TypeError, r"`seed` must be an integer or None"),
        ({"hidden_units": (64, 2.0)}, TypeError, r"`hidden_units` must be positive integers"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    arguments = {"n_users": N_USERS, "n_items": N_ITEMS, "n_genres": N_GENRES, **kwargs}
    with pytest.raises(error, match=message):
        build_ranking_model(
            arguments.pop("n_users"),
            arguments.pop("n_items"),
            arguments.pop("n_genres"),
            **arguments,
        )


@pytest.fixture(scope="module")
def small_data():
    return encode_ranking(synthetic_ratings(n_users=300, n_items=150, n_ratings=6000, seed=2))


def _compiled(data, seed=0, **kwargs):
    tasks = ("binary", "regression")
    model = build_ranking_model(
        data.n_users, data.n_items, data.n_genres, hidden_units=(16, 8), embedding_dim=8,
        tasks=tasks, seed=seed, **kwargs,
    )  # fmt: skip
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=ranking_losses(tasks),
        metrics=ranking_metrics(tasks),
    )
    return model, tasks


@pytest.mark.slow
def test_trains_on_synthetic_data_in_both_tasks(small_data):
    model, tasks = _compiled(small_data, activation="smelu", cross=True, layer_norm=True)
    model.fit(
        small_data.features("train"), small_data.targets("train", tasks),
        batch_size=256, epochs=4, verbose=0,
    )  # fmt: skip
    predictions = model.predict(small_data.features("test"), batch_size=1024, verbose=0)
    label, rating = small_data.test["label"], small_data.test["rating"]
    # AUC by the rank formula (Mann-Whitney), independent of Keras' AUC.
    scores = predictions["binary"][:, 0]
    ranks = scores.argsort().argsort() + 1
    positives = label == 1
    auc = (ranks[positives].sum() - positives.sum() * (positives.sum() + 1) / 2) / (
        positives.sum() * (~positives).sum()
    )
    assert auc > 0.62
    rmse = np.sqrt(np.mean((predictions["regression"][:, 0] - rating) ** 2))
    assert rmse < np.std(rating)  # better than predicting the mean


@pytest.mark.slow
def test_keras_file_round_trip_with_learnable_smelu(tmp_path, small_data):
    model, tasks = _compiled(
        small_data, activation=lambda: SmeLU(beta=1.5, learnable=True), cross=True
    )
    model.fit(
        small_data.features("train"),
        small_data.targets("train", tasks),
        batch_size=512,
        epochs=1,
        verbose=0,
    )
    path = tmp_path / "ranking.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    x = small_data.features("test")
    a, b = model.predict(x, verbose=0), restored.predict(x, verbose=0)
    for task in tasks:
        np.testing.assert_array_equal(a[task], b[task])


@pytest.mark.slow
def test_saved_model_serves_without_tfsmooth(tmp_path):
    model = build_ranking_model(
        N_USERS, N_ITEMS, N_GENRES, activation="smelu", hidden_units=(8,), cross=True, seed=1,
        tasks=("binary", "regression"),
    )  # fmt: skip
    inputs = _inputs()
    expected = model.predict(inputs, verbose=0)
    served = serve_in_clean_process(export_saved_model(model, tmp_path), inputs)
    for task in ("binary", "regression"):
        # Graph and XLA-compiled predict may differ in the last bit; nothing more.
        np.testing.assert_allclose(served[task], expected[task], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device(mirrored_strategy, small_data):
    x = {k: v[:512] for k, v in small_data.features("train").items()}
    y = {k: v[:512] for k, v in small_data.targets("train", ("binary",)).items()}

    def train(strategy):
        with strategy.scope():
            model = build_ranking_model(
                small_data.n_users, small_data.n_items, small_data.n_genres,
                activation="smelu", hidden_units=(8,), embedding_dim=4, cross=True, seed=5,
            )  # fmt: skip
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss=ranking_losses())
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(128)
        model.fit(dataset, epochs=2, verbose=0)
        return [np.asarray(w) for w in model.weights]

    distributed, single = train(mirrored_strategy), train(tf.distribute.get_strategy())
    for a, b in zip(distributed, single):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_numpy_integers_are_accepted_like_python_ones():
    model = build_ranking_model(
        np.int64(N_USERS), np.int64(N_ITEMS), np.int32(N_GENRES),
        hidden_units=(np.int64(8),), embedding_dim=np.int64(4), seed=np.int64(1),
    )  # fmt: skip
    reference = build_ranking_model(
        N_USERS, N_ITEMS, N_GENRES, hidden_units=(8,), embedding_dim=4, seed=1
    )
    assert model.count_params() == reference.count_params()
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)

"""tfsmooth.activations against numpy references written from the papers' piecewise formulas."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from references import (
    generalized_reference,
    generalized_slope_reference,
    smelu_reference,
    smelu_reference_at_float32_width,
    smelu_slope_reference,
)

from tfsmooth._keras import keras
from tfsmooth.activations import generalized_smelu, smelu

DTYPES = [tf.float16, tf.bfloat16, tf.float32, tf.float64]
TOLERANCE = {tf.float16: 2e-3, tf.bfloat16: 1.6e-2, tf.float32: 1e-6, tf.float64: 1e-12}


# ---------------------------------------------------------------------------------------------
# References: the piecewise definitions, evaluated region by region in float64.


def run(fn, context):
    """Calls ``fn`` eagerly, in a tf.function, or in an XLA-compiled tf.function."""
    if context == "eager":
        return fn()
    return tf.function(fn, jit_compile=context == "xla")()


CONTEXTS = ["eager", "function", "xla"]
POINTS = np.linspace(-3.0, 3.0, 61)


def value_and_slope(activation, x, **params):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = activation(x, **params)
    return y, tape.gradient(y, x)


# ---------------------------------------------------------------------------------------------
# SmeLU.


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_smelu_value_and_gradient(dtype, context, beta):
    x = tf.constant(POINTS, dtype)
    y, dy = run(lambda: value_and_slope(smelu, x, beta=beta), context)
    assert y.dtype == dtype and dy.dtype == dtype
    exact_x = tf.cast(x, tf.float64).numpy()  # the representable input, to isolate output rounding
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(
        tf.cast(y, tf.float64), smelu_reference(exact_x, beta), rtol=tol, atol=tol
    )
    np.testing.assert_allclose(
        tf.cast(dy, tf.float64), smelu_slope_reference(exact_x, beta), rtol=tol, atol=4 * tol
    )


def test_smelu_matches_its_definition_at_and_near_the_knots():
    beta = 1.5
    eps = 1e-7
    x = np.array([-beta - eps, -beta, -beta + eps, 0.0, beta - eps, beta, beta + eps])
    y, dy = value_and_slope(smelu, tf.constant(x), beta=beta)
    np.testing.assert_allclose(y, smelu_reference(x, beta), atol=1e-12)
    np.testing.assert_allclose(dy, smelu_slope_reference(x, beta), atol=1e-7)
    assert smelu(tf.constant(0.0), beta=beta).numpy() == pytest.approx(beta / 4)


def test_smelu_gradient_matches_finite_differences():
    x = tf.constant(np.random.default_rng(1).uniform(-3, 3, size=200))
    theoretical, numerical = tf.test.compute_gradient(lambda v: smelu(v, beta=1.3), [x])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


@pytest.mark.parametrize("context", CONTEXTS)
def test_smelu_second_derivative(context):
    beta = 0.75
    x = tf.constant(np.linspace(-2.0, 2.0, 41))

    def second():
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = smelu(x, beta=beta)
            dy = inner.gradient(y, x)
        return outer.gradient(dy, x)

    d2 = run(second, context).numpy()
    xs = x.numpy()
    inside = np.abs(xs) < beta - 1e-9
    outside = np.abs(xs) > beta + 1e-9
    np.testing.assert_allclose(d2[inside], 1.0 / (2 * beta), rtol=1e-9)
    np.testing.assert_allclose(d2[outside], 0.0, atol=0)
    assert np.all(np.isfinite(d2))


@pytest.mark.parametrize("context", CONTEXTS)
def test_smelu_beta_gradient_scalar_and_per_channel(context):
    rng = np.random.default_rng(2)
    x = tf.constant(rng.uniform(-3, 3, size=(7, 4)))
    upstream = tf.constant(rng.normal(size=(7, 4)))
    for beta0 in (np.float64(1.2), np.array([0.5, 1.0, 2.0, 3.0])):
        beta = tf.Variable(beta0)

        def grads(beta=beta):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = smelu(x, beta)
            return tape.gradient(y, [x, beta], output_gradients=upstream)

        dx, dbeta = run(grads, context)
        assert dbeta.shape == beta.shape

        # Independent reference: central differences of the numpy definition in beta.
        h = 1e-6
        b = np.broadcast_to(beta0, x.shape)
        d_elem = (smelu_reference(x.numpy(), b + h) - smelu_reference(x.numpy(), b - h)) / (2 * h)
        expected = (upstream.numpy() * d_elem).sum(axis=0 if np.ndim(beta0) else None)
        np.testing.assert_allclose(dbeta, expected, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(
            dx, upstream.numpy() * smelu_slope_reference(x.numpy(), b), rtol=1e-12
        )


def test_smelu_second_derivatives_with_tensor_beta_match_finite_differences():
    x = tf.constant(np.linspace(-2.5, 2.5, 23))
    beta = tf.Variable(1.1, dtype=tf.float64)

    def slope_sum(b):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = smelu(x, b)
        return tf.reduce_sum(tape.gradient(y, x) ** 2)

    with tf.GradientTape() as tape:
        value = slope_sum(beta)
    analytic = tape.gradient(value, beta).numpy()
    h = 1e-6
    xs = x.numpy()
    numeric = (
        np.sum(smelu_slope_reference(xs, 1.1 + h) ** 2)
        - np.sum(smelu_slope_reference(xs, 1.1 - h) ** 2)
    ) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_smelu_extreme_inputs_stay_finite(dtype):
    big = float(tf.as_dtype(dtype).max)
    x = tf.constant([-big, -1e4, -1e-30, 0.0, 1e-30, 1e4, big, -np.inf, np.inf], dtype)
    y, dy = value_and_slope(smelu, x, beta=1.0)
    y64, dy64 = tf.cast(y, tf.float64).numpy(), tf.cast(dy, tf.float64).numpy()
    assert not np.any(np.isnan(y64)) and not np.any(np.isnan(dy64))
    np.testing.assert_array_equal(y64[[0, 1, 7]], 0.0)
    assert y64[6] == big and y64[8] == np.inf
    np.testing.assert_array_equal(dy64, [0, 0, 0.5, 0.5, 0.5, 1, 1, 0, 1])


def test_nan_input_propagates_instead_of_vanishing():
    y = smelu(tf.constant([np.nan, 1.0]))
    assert np.isnan(y.numpy()[0]) and y.numpy()[1] == 1.0
    g = generalized_smelu(tf.constant([np.nan]), negative_slope=0.1)
    assert np.isnan(g.numpy()[0])


@pytest.mark.parametrize(
    "beta, error",
    [(0.0, ValueError), (-1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError)],
)
def test_smelu_rejects_bad_beta(beta, error):
    with pytest.raises(error, match="`beta`"):
        smelu(tf.constant([1.0]), beta=beta)


def test_smelu_error_messages_name_argument_and_value():
    with pytest.raises(ValueError, match=r"`beta` must be > 0. Received: beta=-1"):
        smelu(tf.constant([1.0]), beta=-1)
    with pytest.raises(TypeError, match="`beta`"):
        smelu(tf.constant([1.0]), beta="wide")
    with pytest.raises(TypeError, match="`beta`"):
        smelu(tf.constant([1.0]), beta=True)
    with pytest.raises(TypeError, match=r"floating-point input.*int32"):
        smelu(tf.constant([1, 2]))
    with pytest.raises(
        TypeError, match=r"`smelu` needs a floating-point tensor `x`. Received: x=None"
    ):
        smelu(None)
    with pytest.raises(TypeError, match=r"`generalized_smelu` needs .* `x`. Received: x=None"):
        generalized_smelu(None)


# ---------------------------------------------------------------------------------------------
# Generalized SmeLU.

GENERALIZED_CASES = [
    dict(alpha=1.0, beta=1.0, negative_slope=0.0, positive_slope=1.0, offset=0.0),
    dict(alpha=0.5, beta=2.0, negative_slope=0.1, positive_slope=1.0, offset=0.0),
    dict(alpha=2.0, beta=-0.5, negative_slope=0.0, positive_slope=1.5, offset=0.3),
    dict(alpha=1.0, beta=1.0, negative_slope=-0.2, positive_slope=1.0, offset=-0.1),
    dict(alpha=1.0, beta=0.5, negative_slope=1.0, positive_slope=0.25, offset=0.0),
    dict(alpha=1.0, beta=1.0, negative_slope=0.5, positive_slope=0.5, offset=1.0),
]


def _ref_args(p):
    return p["alpha"], p["beta"], p["negative_slope"], p["positive_slope"]


@pytest.mark.parametrize("params", GENERALIZED_CASES)
@pytest.mark.parametrize("context", CONTEXTS)
def test_generalized_value_and_gradient(params, context):
    x = tf.constant(POINTS)
    y, dy = run(lambda: value_and_slope(generalized_smelu, x, **params), context)
    np.testing.assert_allclose(
        y, generalized_reference(POINTS, *_ref_args(params), params["offset"]), atol=1e-12
    )
    np.testing.assert_allclose(
        dy, generalized_slope_reference(POINTS, *_ref_args(params)), atol=1e-9
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_generalized_dtypes(dtype):
    params = GENERALIZED_CASES[1]
    x = tf.constant(POINTS, dtype)
    y, dy = value_and_slope(generalized_smelu, x, **params)
    assert y.dtype == dtype and dy.dtype == dtype
    exact = tf.cast(x, tf.float64).numpy()
    tol = TOLERANCE[dtype]
    reference = generalized_reference(exact, *_ref_args(params), params["offset"])
    np.testing.assert_allclose(tf.cast(y, tf.float64), reference, rtol=tol, atol=tol)
    np.testing.assert_allclose(
        tf.cast(dy, tf.float64),
        generalized_slope_reference(exact, *_ref_args(params)),
        rtol=tol,
        atol=4 * tol,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_generalized_with_smelu_parameters_equals_smelu_exactly(dtype):
    x = tf.constant(np.linspace(-4, 4, 97), dtype)
    for beta in (0.3, 1.0, 2.5):
        a, da = value_and_slope(smelu, x, beta=beta)
        b, db = value_and_slope(generalized_smelu, x, alpha=beta, beta=beta)
        np.testing.assert_array_equal(tf.cast(a, tf.float64), tf.cast(b, tf.float64))
        np.testing.assert_allclose(
            tf.cast(da, tf.float64), tf.cast(db, tf.float64), atol=TOLERANCE[dtype]
        )


@pytest.mark.parametrize("params", GENERALIZED_CASES)
def test_generalized_second_derivative(params):
    x = tf.constant(np.linspace(-3.3, 3.3, 45))
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = generalized_smelu(x, **params)
        dy = inner.gradient(y, x)
    d2 = outer.gradient(dy, x).numpy()
    alpha, beta, gn, gp = _ref_args(params)
    xs = x.numpy()
    inside = (xs > -alpha + 1e-9) & (xs < beta - 1e-9)
    outside = (xs < -alpha - 1e-9) | (xs > beta + 1e-9)
    np.testing.assert_allclose(d2[inside], (gp - gn) / (alpha + beta), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d2[outside], 0.0, atol=1e-12)


@pytest.mark.parametrize("context", CONTEXTS)
def test_generalized_parameter_gradients_match_finite_differences(context):
    rng = np.random.default_rng(3)
    x = tf.constant(rng.uniform(-3, 3, size=(9, 3)))
    upstream = tf.constant(rng.normal(size=(9, 3)))
    base = dict(alpha=0.7, beta=1.4, negative_slope=0.1, positive_slope=1.2, offset=0.2)
    per_channel = dict(base, beta=np.array([0.5, 1.4, 2.0]))
    for values in (base, per_channel):
        variables = {k: tf.Variable(np.asarray(v, np.float64)) for k, v in values.items()}

        def grads(variables=variables):
            with tf.GradientTape() as tape:
                y = generalized_smelu(x, **variables)
            return tape.gradient(y, variables, output_gradients=upstream)

        got = run(grads, context)
        h = 1e-6
        for name, value in values.items():
            value = np.asarray(value, np.float64)
            expected = np.zeros_like(value)
            for index in np.ndindex(value.shape):
                plus, minus = dict(values), dict(values)
                p, m = value.copy(), value.copy()
                p[index] += h
                m[index] -= h
                plus[name], minus[name] = p, m
                args_p = [np.asarray(plus[k]) for k in GENERALIZED_ORDER]
                args_m = [np.asarray(minus[k]) for k in GENERALIZED_ORDER]
                diff = generalized_reference(x.numpy(), *args_p) - generalized_reference(
                    x.numpy(), *args_m
                )
                expected[index] = np.sum(upstream.numpy() * diff) / (2 * h)
            np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-7, err_msg=name)


GENERALIZED_ORDER = ("alpha", "beta", "negative_slope", "positive_slope", "offset")


def test_generalized_mixed_number_and_tensor_parameters():
    x = tf.constant(POINTS)
    alpha = tf.Variable(0.8, dtype=tf.float64)
    with tf.GradientTape() as tape:
        y = generalized_smelu(x, alpha=alpha, beta=1.2, negative_slope=0.05)
    grad = tape.gradient(y, alpha)
    np.testing.assert_allclose(y, generalized_reference(POINTS, 0.8, 1.2, 0.05, 1.0, 0.0))
    h = 1e-6
    numeric = np.sum(
        generalized_reference(POINTS, 0.8 + h, 1.2, 0.05, 1.0, 0.0)
        - generalized_reference(POINTS, 0.8 - h, 1.2, 0.05, 1.0, 0.0)
    ) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6)


@pytest.mark.parametrize("params", [GENERALIZED_CASES[1], GENERALIZED_CASES[3]])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_generalized_extreme_inputs_have_no_nan(params, dtype):
    big = float(tf.as_dtype(dtype).max)
    x = tf.constant([-big, -1e4, 0.0, 1e4, big, -np.inf, np.inf], dtype)
    y, dy = value_and_slope(generalized_smelu, x, **params)
    assert not np.any(np.isnan(tf.cast(y, tf.float64).numpy()))
    slopes = tf.cast(dy, tf.float64).numpy()
    np.testing.assert_allclose(
        slopes[[0, 1, 5]], params["negative_slope"], rtol=TOLERANCE[dtype] * 4
    )
    np.testing.assert_allclose(
        slopes[[3, 4, 6]], params["positive_slope"], rtol=TOLERANCE[dtype] * 4
    )


def test_generalized_zero_slope_at_minus_infinity_is_the_offset_not_nan():
    offset = tf.Variable(0.25)
    slope = tf.Variable(0.0)
    y = generalized_smelu(tf.constant([-np.inf]), negative_slope=slope, offset=offset)
    assert y.numpy()[0] == pytest.approx(0.25)
    y = generalized_smelu(tf.constant([-np.inf]), offset=0.25)
    assert y.numpy()[0] == pytest.approx(0.25)


def test_generalized_rejects_bad_parameters():
    x = tf.constant([1.0])
    with pytest.raises(ValueError, match=r"`alpha \+ beta`.*Received: alpha=-1, beta=1"):
        generalized_smelu(x, alpha=-1.0, beta=1.0)
    with pytest.raises(ValueError, match="`negative_slope` must be a finite number"):
        generalized_smelu(x, negative_slope=float("nan"))
    with pytest.raises(TypeError, match="`offset`"):
        generalized_smelu(x, offset=None)
    with pytest.raises(TypeError, match="floating-point input"):
        generalized_smelu(tf.constant([1]))


# ---------------------------------------------------------------------------------------------
# As Keras activations.


def test_functions_apply_to_symbolic_keras_tensors():
    inputs = keras.Input((3,))
    outputs = generalized_smelu(smelu(inputs, beta=2.0), negative_slope=0.1)
    model = keras.Model(inputs, outputs)
    x = np.linspace(-3, 3, 12).reshape(4, 3).astype("float32")
    expected = generalized_reference(smelu_reference(x, 2.0), 1.0, 1.0, 0.1, 1.0, 0.0)
    np.testing.assert_allclose(model(x), expected, rtol=1e-6, atol=1e-6)


def test_as_dense_activation_inside_a_compiled_training_step():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation=smelu), keras.layers.Dense(1)]
    )
    dense = model.layers[0]
    x = tf.constant(np.random.default_rng(0).normal(size=(16, 4)), tf.float32)

    @tf.function(jit_compile=True)
    def hidden_and_grad():
        with tf.GradientTape() as tape:
            h = dense(x)
            total = tf.reduce_sum(h)
        return h, tape.gradient(total, dense.kernel)

    h, grad = hidden_and_grad()
    z = x.numpy() @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(h, smelu_reference(z, 1.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, x.numpy().T @ smelu_slope_reference(z, 1.0), rtol=1e-4)


def test_generalized_second_derivative_with_learnable_parameters():
    """The input-based backward (tensor parameters) is twice differentiable too."""
    x = tf.constant(np.linspace(-3.3, 3.3, 45))
    alpha, slope = tf.Variable(0.6, dtype=tf.float64), tf.Variable(-0.2, dtype=tf.float64)
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = generalized_smelu(x, alpha=alpha, beta=1.1, negative_slope=slope)
        dy = inner.gradient(y, x)
    d2 = outer.gradient(dy, x).numpy()
    xs = x.numpy()
    inside = (xs > -0.6 + 1e-9) & (xs < 1.1 - 1e-9)
    np.testing.assert_allclose(d2[inside], (1.0 + 0.2) / 1.7, rtol=1e-9)
    np.testing.assert_allclose(d2[~inside], 0.0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Widths at the ends of float32 (issue 11): exact for every accepted width, rejected outside.

F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)
EXTREME_WIDTHS = [F32_TINY, 1e-30, 1e19, 1e30, 1e38, F32_MAX]


def _extreme_points(beta):
    return np.array([-np.inf, -F32_MAX, -beta, -beta / 2, 0.0, beta / 3, beta, F32_MAX, np.inf])


@pytest.mark.parametrize("context", ["eager", "xla"])
@pytest.mark.parametrize("beta", EXTREME_WIDTHS, ids=lambda b: f"{b:.3g}")
@pytest.mark.parametrize("as_tensor", [False, True], ids=["number", "tensor"])
def test_smelu_every_float32_width_matches_float64_reference(beta, context, as_tensor):
    if as_tensor and beta < 2.0**-64:
        pytest.skip("a tensor width's gradient is read from the output: documented >= 2**-64")
    points = _extreme_points(np.float32(beta))
    # Points between 0 and the smallest normal float32 are flushed to 0 by the CPU: leave them out.
    points = points[(points == 0) | (np.abs(points) >= F32_TINY)]
    x = tf.constant(points, tf.float32)
    width = tf.constant(beta, tf.float32) if as_tensor else beta
    y, dy = run(lambda: value_and_slope(smelu, x, beta=width), context)
    expected, expected_slope = smelu_reference_at_float32_width(x.numpy(), beta)
    assert not np.isnan(y.numpy()).any() and not np.isnan(dy.numpy()).any()
    # Results below the smallest normal float32 may be flushed to 0: atol covers them.
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=2 * F32_TINY)
    np.testing.assert_allclose(dy.numpy(), expected_slope, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [1e39, 1e-46, 1e-40, np.float64(1e39)])
def test_smelu_rejects_widths_outside_float32_naming_the_range(beta):
    with pytest.raises(ValueError, match=r"`beta` must be .*float32.*1\.18e-38 and 3\.4e\+38"):
        smelu(tf.constant([1.0]), beta=beta)


@pytest.mark.parametrize("beta", [np.float32(2.0), np.int64(2), np.float64(2.0)])
def test_smelu_accepts_numpy_scalars(beta):
    np.testing.assert_allclose(smelu(tf.constant([0.0, 3.0]), beta=beta), [0.5, 3.0])


def test_generalized_rejects_widths_outside_float32():
    x = tf.constant([1.0])
    with pytest.raises(ValueError, match="`beta` must be representable in float32"):
        generalized_smelu(x, alpha=0.0, beta=1e-40)
    with pytest.raises(ValueError, match=r"`alpha \+ beta`.*float32.*Received: alpha=2e\+38"):
        generalized_smelu(x, alpha=2e38, beta=2e38)
    with pytest.raises(ValueError, match=r"`alpha \+ beta`.*float32"):
        generalized_smelu(x, alpha=1e-30, beta=-1e-30 + 1e-45)


@pytest.mark.parametrize("context", ["eager", "xla"])
@pytest.mark.parametrize(
    "alpha, beta", [(0.0, F32_TINY), (1e38, 1e38), (F32_MAX / 2, F32_MAX / 2), (3e19, 1e19)]
)
def test_generalized_extreme_widths_match_float64_reference(alpha, beta, context):
    alpha32, beta32 = float(np.float32(alpha)), float(np.float32(beta))
    points = np.array([-alpha32 * 2, -alpha32, -alpha32 / 2, 0.0, beta32 / 2, beta32, 1.0, -1.0])
    points = points[(points == 0) | (np.abs(points) >= F32_TINY)]  # no subnormal inputs
    x = tf.constant(points, tf.float32)
    y, dy = run(
        lambda: value_and_slope(
            generalized_smelu, x, alpha=alpha, beta=beta, negative_slope=0.1, positive_slope=0.9
        ),
        context,
    )
    with np.errstate(over="ignore", invalid="ignore"):
        # (x + alpha)^2 / 2w written as (x + alpha) / 2 * ((x + alpha) / w) to stay finite in float64.
        r = np.clip(points + alpha32, 0.0, alpha32 + beta32)
        width = alpha32 + beta32
        middle = r * (0.1 + 0.8 * (r / width) / 2)
        expected = (
            0.1 * np.minimum(points + alpha32, 0.0)
            + middle
            + 0.9 * np.maximum(points - beta32, 0.0)
        )
        slope = np.where(
            points <= -alpha32, 0.1, np.where(points >= beta32, 0.9, 0.1 + 0.8 * r / width)
        )
    assert not np.isnan(y.numpy()).any() and not np.isnan(dy.numpy()).any()
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=2 * F32_TINY)
    np.testing.assert_allclose(dy.numpy(), slope, rtol=1e-5, atol=1e-6)


def test_generalized_infinite_inputs_at_the_widest_width():
    x = tf.constant([-np.inf, np.inf])
    y = generalized_smelu(x, alpha=F32_MAX / 2, beta=F32_MAX / 2, negative_slope=0.1)
    np.testing.assert_array_equal(y.numpy(), [-np.inf, np.inf])


def test_per_channel_parameters_of_the_wrong_width_are_rejected_naming_them():
    x = tf.ones([2, 4])
    with pytest.raises(ValueError, match=r"`beta` must broadcast.*beta.shape=\(3,\)"):
        smelu(x, beta=tf.ones([3]))
    with pytest.raises(ValueError, match=r"`beta` must broadcast.*beta.shape=\(5, 4\)"):
        smelu(x, beta=tf.ones([5, 4]))  # would broadcast the input to [5, 4]
    with pytest.raises(ValueError, match=r"`negative_slope` must broadcast"):
        generalized_smelu(x, negative_slope=tf.zeros([3]))
    np.testing.assert_allclose(smelu(x, beta=tf.fill([4], 2.0)), smelu_reference(x, 2.0))


@pytest.mark.parametrize("beta", [[-1.0], [np.nan], [1e39], np.array([1.0, 0.0, 2.0])])
def test_host_array_widths_are_checked_like_numbers(beta):
    with pytest.raises(ValueError, match=r"`beta` must hold finite numbers > 0"):
        smelu(tf.ones([2, 3]), beta=beta)


def test_host_array_parameters_work_per_channel():
    x = np.linspace(-2.0, 2.0, 12).reshape(4, 3).astype("float32")
    betas = np.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(
        smelu(x, beta=betas), smelu_reference(x, betas), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(smelu(x, beta=[1.0]), smelu_reference(x, 1.0), rtol=1e-6)
    with pytest.raises(TypeError, match=r"`beta` must be a number or a float tensor"):
        smelu(x, beta=[True])
    with pytest.raises(ValueError, match=r"`alpha \+ beta`.*Received: alpha=\[1.0, -1.0, 0.0\]"):
        generalized_smelu(x, alpha=[1.0, -1.0, 0.0], beta=1.0)
    with pytest.raises(ValueError, match=r"`offset` must hold finite numbers"):
        generalized_smelu(x, offset=[0.0, np.inf, 0.0])

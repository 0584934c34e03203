"""The step times of ``stability.py`` (part 2): optimizers on the benchmark model's real gradients.

``apply_gradients`` in a plain ``tf.function`` and inside an XLA-compiled one, and a whole training
step (``fit``), all candidates of this process's Keras flavour interleaved (see
``_common.interleaved_times``), with the number of graph operations a step runs.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from _common import interleaved_times, median_ratios
from baselines import xla_clippy_adagrad
from stability_training import TASKS, build_model, load_data

from tfsmooth import models
from tfsmooth._keras import KERAS_FLAVOUR, keras
from tfsmooth.optimizers import Clippy, ClippyAdagrad


def timing_candidates(flavour: str) -> dict:
    if flavour == "keras3":
        return {
            "Keras Adagrad": lambda: keras.optimizers.Adagrad(0.04),
            "ClippyAdagrad": lambda: ClippyAdagrad(0.04),
            "ClippyAdagrad, no statistics": lambda: ClippyAdagrad(
                0.04, export_clipping_factors=False
            ),
            "ClippyAdagrad, per row": lambda: ClippyAdagrad(0.04, granularity="row"),
            "Clippy(Adagrad)": lambda: Clippy(keras.optimizers.Adagrad(0.04)),
        }
    import tensorflow_recommenders as tfrs

    return {
        "Keras Adagrad": lambda: keras.optimizers.Adagrad(0.04),
        "ClippyAdagrad": lambda: ClippyAdagrad(0.04),
        "ClippyAdagrad, no statistics": lambda: ClippyAdagrad(0.04, export_clipping_factors=False),
        "TFRS ClippyAdagrad": lambda: tfrs.experimental.optimizers.ClippyAdagrad(0.04),
        "TFRS ClippyAdagrad, export": lambda: tfrs.experimental.optimizers.ClippyAdagrad(
            0.04, export_clipping_factors=True
        ),
        "ClippyAdagrad, XLA per variable": lambda: xla_clippy_adagrad("variable"),
        "ClippyAdagrad, XLA, all variables": lambda: xla_clippy_adagrad("all"),
    }


def apply_step(optimizer, grads, variables):
    """A closure (not default arguments: tf.function would turn the variables into tensors)."""

    def step():
        optimizer.apply_gradients(zip(grads, variables))

    return step


def measure_step_time(args) -> dict:
    """Step times in this process's Keras flavour, all candidates interleaved."""
    data = load_data(args.data, quick=False)
    batch = 1024
    x = {k: v[:batch] for k, v in data.features("train").items()}
    y = {k: v[:batch] for k, v in data.targets("train", TASKS).items()}
    losses = models.ranking_losses(TASKS)
    candidates = timing_candidates(KERAS_FLAVOUR)
    modes = {"apply, tf.function": False, "apply, XLA": True}
    if KERAS_FLAVOUR == "tf_keras":
        modes = {"apply, tf.function": False}  # tf-keras runs optimizers outside XLA on CPU
    results = {}
    for mode, jit in modes.items():
        functions = {}
        for name, make in candidates.items():
            model = build_model(data, 0)
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                loss = sum(losses[t](tf.reshape(y[t], out[t].shape), out[t]) for t in TASKS)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer, variables = make(), list(model.trainable_variables)
            optimizer.build(variables)  # slots created eagerly, outside the tf.function
            functions[name] = tf.function(apply_step(optimizer, grads, variables), jit_compile=jit)
        times = interleaved_times(functions, rounds=args.timing_rounds, repeats=10)
        results[mode] = summarise_times(times)
        if not jit:
            for name, function in functions.items():
                results[mode][name]["graph_ops"] = graph_ops(function)
    # A whole training step: fit on 16 fixed batches per round, each flavour's default compile.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64).take(16).cache()
    fits = {}
    for name, make in candidates.items():
        if "XLA" in name:  # the XLA variants answer one question, about apply_gradients
            continue
        model = build_model(data, 0)
        model.compile(optimizer=make(), loss=models.ranking_losses(TASKS))
        fits[name] = lambda model=model: model.fit(dataset, epochs=1, verbose=0)
    times = interleaved_times(fits, rounds=max(5, args.timing_rounds // 2), repeats=1)
    results["training step (fit, batch 64)"] = summarise_times(
        {k: v / 16 for k, v in times.items()}
    )
    return results


def graph_ops(function) -> int:
    """The operations one call of a ``tf.function`` runs, nested functions included (before any
    XLA compilation; constants, placeholders, identities and no-ops not counted)."""
    graph = function.get_concrete_function().graph
    skip = {"Const", "Placeholder", "Identity", "NoOp", "_Arg", "_Retval"}
    calls = {"PartitionedCall", "StatefulPartitionedCall"}
    count = sum(op.type not in skip | calls for op in graph.get_operations())
    for definition in graph.as_graph_def().library.function:
        count += sum(node.op not in skip | calls for node in definition.node_def)
    return count


def summarise_times(times: dict) -> dict:
    ratios = median_ratios(times, "Keras Adagrad")
    out = {
        name: {"ms": float(np.median(t) * 1e3), "vs_adagrad": ratios[name]}
        for name, t in times.items()
    }
    if "TFRS ClippyAdagrad" in times:
        tfrs = median_ratios(times, "TFRS ClippyAdagrad")
        for name in out:
            out[name]["vs_tfrs"] = tfrs[name]
    return out

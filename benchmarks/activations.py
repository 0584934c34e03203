"""Speed and memory of SmeLU against the activations users would pick instead.

Part 1 -- forward + backward time of one activation on a flat tensor (``y = f(x)`` and
``dx = f'(x) * upstream``, both materialised), at 1M and 16M float32 elements, in a plain
``tf.function`` (TensorFlow runs op by op) and inside an XLA-compiled step (everything fuses), as
ratios to ReLU measured side by side in the same run (interleaved rounds, median of per-round ratios).

Part 2 -- peak memory (TensorFlow allocator high-water mark) of one training step of an MLP whose
hidden layers use each activation, each configuration in a fresh process, as ratios to ReLU.

Candidates: ``tf.nn.relu``, tfsmooth ``smelu`` and ``generalized_smelu`` (smooth leaky, slope 0.05),
``tf.nn.gelu``, ``tf.nn.silu`` (Swish), ``tf.nn.softplus`` and SmeLU written with ``tf.where`` the way
the published TensorFlow ports write it, differentiated by autodiff.

Usage::

    python benchmarks/activations.py            # the full run recorded in RESULTS.md
    python benchmarks/activations.py --quick    # a smoke run (small sizes, few rounds)
    python benchmarks/activations.py --write    # also rewrite the section of benchmarks/RESULTS.md
                                                # (hand-written notes stay after its end marker)
    python benchmarks/activations.py --render raw.json  # the tables again from a run's raw results
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common
import numpy as np
import tensorflow as tf
from baselines import smelu_tf_where

from tfsmooth.activations import generalized_smelu, smelu

ACTIVATIONS = {
    "relu": tf.nn.relu,
    "smelu": smelu,
    "generalized_smelu": lambda x: generalized_smelu(x, negative_slope=0.05),
    "gelu": tf.nn.gelu,
    "swish": tf.nn.silu,
    "softplus": tf.nn.softplus,
    "smelu_tf_where": smelu_tf_where,
}


def make_step(activation, jit: bool):
    @tf.function(jit_compile=jit)
    def step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = activation(x)
        return y, tape.gradient(y, x, output_gradients=upstream)

    return step


def time_activations(size: int, jit: bool, rounds: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(scale=2.0, size=size).astype(np.float32))
    upstream = tf.constant(rng.normal(size=size).astype(np.float32))
    steps = {name: make_step(fn, jit) for name, fn in ACTIVATIONS.items()}
    repeats = max(1, (1 << 22) // size * 5)
    candidates = {name: (lambda s=s: s(x, upstream)) for name, s in steps.items()}
    times = _common.interleaved_times(candidates, rounds=rounds, repeats=repeats, warmup=3)
    ratios = _common.median_ratios(times, "relu")
    ratios["relu_ms"] = float(np.median(times["relu"]) * 1e3)
    return ratios


# ---------------------------------------------------------------------------------------------
# Peak memory of a training step, one process per configuration.

MLP = dict(batch=4096, features=256, hidden=1024, layers=4)


def memory_worker(activation: str, jit: bool, sizes: dict) -> dict:
    from tfsmooth._keras import keras

    keras.utils.set_random_seed(0)
    fn = ACTIVATIONS[activation]
    model = keras.Sequential(
        [keras.Input((sizes["features"],))]
        + [keras.layers.Dense(sizes["hidden"], activation=fn) for _ in range(sizes["layers"])]
        + [keras.layers.Dense(1)]
    )
    variables = model.trainable_variables
    x = tf.random.normal((sizes["batch"], sizes["features"]))
    y = tf.random.normal((sizes["batch"], 1))

    @tf.function(jit_compile=jit)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        grads = tape.gradient(loss, variables)
        for variable, grad in zip(variables, grads):
            variable.assign_sub(0.01 * grad)
        return loss

    train_step(x, y)  # trace and compile outside the measurement
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    for _ in range(3):
        loss = train_step(x, y)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    assert np.isfinite(float(loss))
    return {"peak_mb": (peak - before) / 2**20}


def memory_table(names, sizes) -> list[list]:
    rows = []
    for jit in (False, True):
        peaks = {}
        for name in names:
            args = ["--memory-worker", name, "--jit" if jit else "--no-jit"]
            args += ["--sizes", json.dumps(sizes)]
            peaks[name] = _common.run_script_in_fresh_process(__file__, args)["peak_mb"]
        for name in names:
            rows.append(
                [
                    "XLA step" if jit else "tf.function",
                    name,
                    round(peaks[name], 1),
                    peaks[name] / peaks["relu"],
                ]
            )
    return rows


def measure(args) -> dict:
    """Runs both parts; returns the raw results (JSON-ready) that :func:`render` turns into text."""
    sizes = [1 << 16, 1 << 20] if args.quick else [1 << 20, 1 << 24]
    rounds = args.rounds or (5 if args.quick else 21)
    mlp = dict(MLP, batch=2048) if args.quick else MLP
    names = list(ACTIVATIONS)

    print(f"# Activations benchmark on {_common.machine_summary()}", flush=True)
    time_rows = []
    for jit in (False, True):
        for size in sizes:
            ratios = time_activations(size, jit, rounds)
            label = f"{size / 2**20:g}M" if size >= 2**20 else f"{size / 2**10:g}K"
            mode = "XLA step" if jit else "tf.function"
            time_rows.append(
                [mode, label, ratios.pop("relu_ms")] + [ratios[name] for name in names]
            )
            print(_common.markdown_table(["mode", "elements", "relu ms", *names], time_rows[-1:]))
    print(f"\nPeak memory of an MLP training step: {mlp}", flush=True)
    return {
        "command": _common.command_line(__file__),
        "machine": _common.machine_summary(),
        "rounds": rounds,
        "mlp": mlp,
        "names": names,
        "time_rows": time_rows,
        "memory_rows": memory_table(names, mlp),
    }


def render(raw: dict) -> str:
    """The RESULTS.md section from raw results (:func:`measure`)."""
    names, mlp = raw["names"], raw["mlp"]
    speed = _common.markdown_table(["mode", "elements", "ReLU ms", *names], raw["time_rows"])
    memory = _common.markdown_table(
        ["mode", "activation", "peak MB", "vs ReLU"], raw["memory_rows"]
    )
    return f"""## Activations (`benchmarks/activations.py`)

Command: `{raw["command"]} --write` ({raw["rounds"]} interleaved rounds per cell; each cell is the median over rounds of
the per-round ratio to ReLU; forward + backward, both materialised; float32).
Machine: {raw["machine"]}.

Time of forward + backward, as a ratio to ReLU (lower is faster):

{speed}

Peak memory (TensorFlow allocator high-water mark, MB above the inputs) of one training step of an
MLP ({mlp["layers"]} x Dense({mlp["hidden"]}), batch {mlp["batch"]}), each row in a fresh process:

{memory}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per cell")
    parser.add_argument("--write", action="store_true", help="rewrite the RESULTS.md section")
    parser.add_argument("--out", default=None, help="where to write the raw results (JSON)")
    parser.add_argument("--render", metavar="JSON", help="only render the raw results of a run")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_worker:
        _common.emit_result(
            memory_worker(args.memory_worker, bool(args.jit), json.loads(args.sizes))
        )
        return
    write = args.write and not args.quick  # a smoke run never changes the record
    raw = _common.measured_or_rendered(
        lambda: measure(args),
        render=args.render,
        name="activations_results.json",
        write=write,
        out=args.out,
    )
    text = render(raw)
    print(text)
    names = raw["names"]
    where, smelu_index = names.index("smelu_tf_where"), names.index("smelu")
    print("tf.where form / smelu (speed-up of ours):")
    for row in raw["time_rows"]:
        print(f"  {row[0]:12s} {row[1]:>5s}: {row[3 + where] / row[3 + smelu_index]:.2f}x")
    if write:
        _common.update_results_section("activations", text)


if __name__ == "__main__":
    main()

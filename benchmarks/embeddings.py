"""Time of one sparse optimizer step on an embedding table: does it grow with the table?

One ``apply_gradients`` of a ``tf.IndexedSlices`` gradient of ``--touched`` distinct rows (4,096)
of a ``d = 64`` float32 table, at several table sizes (250k, 1M, 4M rows), in a ``tf.function``
(graph, no XLA), for:

- ``raw_adagrad``: ``tf.raw_ops.ResourceSparseApplyAdagradV2``, TensorFlow's fused sparse kernel:
  the floor.
- ``sparse_clippy``: a hand-written sparse Clippy step (gather the accumulator and weight rows,
  Adagrad update, one clipping factor for the variable, two scatters): the floor for Clippy.
- ``keras_adagrad``: ``keras.optimizers.Adagrad``.
- ``clippy_adagrad_variable`` / ``clippy_adagrad_row``: tfsmooth's ``ClippyAdagrad`` per variable
  and per row, with the clipping statistics (the default); ``--no-statistics`` adds both without,
  ``--xla`` both inside ``tf.function(jit_compile=True)``.

Every candidate updates the same table and the same accumulator (values drift; the time does not
depend on them), so a 4M-row run holds two 1 GB tensors. Rounds are interleaved (each round runs
every candidate, in a random order); the table prints the median milliseconds and the median of
the per-round ratios to ``raw_adagrad`` and ``sparse_clippy``, and the growth of each candidate's
median from the smallest to the largest table. Run each Keras flavour separately::

    nice -n 5 python benchmarks/embeddings.py
    TF_USE_LEGACY_KERAS=1 nice -n 5 python benchmarks/embeddings.py
    python benchmarks/embeddings.py --rows 250000 --rounds 5     # a quick look
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import tensorflow as tf
from _common import interleaved_times, machine_summary, markdown_table, median_ratios

from tfsmooth._keras import KERAS_FLAVOUR, keras
from tfsmooth.optimizers import ClippyAdagrad

LEARNING_RATE, EPSILON, INITIAL = 0.01, 1e-7, 0.1


def candidates(rows: int, dim: int, touched: int, statistics_off: bool, xla: bool, seed: int = 0):
    """The step of each candidate as a no-argument function, all on one table and accumulator."""
    rng = np.random.default_rng(seed)
    indices = tf.constant(rng.choice(rows, touched, replace=False).astype(np.int32))
    values = tf.constant(rng.normal(size=(touched, dim)).astype(np.float32) * 0.01)
    shape = tf.constant([rows, dim], tf.int64)
    table = tf.Variable(tf.random.stateless_normal([rows, dim], [seed, 1]) * 0.05, name="table")
    accumulator = tf.Variable(tf.fill([rows, dim], INITIAL), name="accumulator")

    def gradient():
        return tf.IndexedSlices(values, indices, shape)

    @tf.function
    def raw_adagrad():
        tf.raw_ops.ResourceSparseApplyAdagradV2(
            var=table.handle,
            accum=accumulator.handle,
            lr=tf.constant(LEARNING_RATE),
            epsilon=tf.constant(EPSILON),
            grad=values,
            indices=indices,
        )

    @tf.function
    def sparse_clippy():
        weights = tf.gather(table, indices)
        accumulated = tf.gather(accumulator, indices)
        delta = LEARNING_RATE * values * tf.math.rsqrt(accumulated + EPSILON)
        bound = 0.5 * tf.abs(weights) + 1e-3
        factor = tf.minimum(1.0, tf.reduce_min(bound / tf.abs(delta)))
        accumulator.scatter_add(tf.IndexedSlices(values * values, indices))
        table.scatter_sub(tf.IndexedSlices(factor * delta, indices))

    steps = {"raw_adagrad": raw_adagrad, "sparse_clippy": sparse_clippy}

    def optimizer_step(optimizer, jit_compile=False):
        optimizer.build([table])
        # Share the one accumulator (memory): both Adagrads keep theirs in ``_accumulators``.
        optimizer._accumulators = [accumulator]

        @tf.function(jit_compile=jit_compile)
        def step():
            optimizer.apply_gradients([(gradient(), table)])

        return step

    steps["keras_adagrad"] = optimizer_step(
        keras.optimizers.Adagrad(LEARNING_RATE, initial_accumulator_value=INITIAL)
    )
    variants = [("variable", True), ("row", True)]
    if statistics_off:
        variants += [("variable", False), ("row", False)]
    if xla:
        variants += [("variable", "xla"), ("row", "xla")]
    for granularity, export in variants:
        suffix = {True: "", False: "_no_statistics", "xla": "_xla"}[export]
        steps[f"clippy_adagrad_{granularity}{suffix}"] = optimizer_step(
            ClippyAdagrad(
                LEARNING_RATE, granularity=granularity, export_clipping_factors=bool(export)
            ),
            jit_compile=export == "xla",
        )
    return steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[250_000, 1_000_000, 4_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--touched", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-statistics", action="store_true", help="also time without them")
    parser.add_argument("--xla", action="store_true", help="also time ClippyAdagrad under XLA")
    args = parser.parse_args(argv)

    print(f"# Sparse step time, {KERAS_FLAVOUR}; {machine_summary()}")
    print(
        f"# {args.touched} distinct rows of d = {args.dim}; {args.rounds} rounds x "
        f"{args.repeats} repeats, medians\n"
    )
    medians: dict[int, dict[str, float]] = {}
    ratios: dict[int, dict[str, float]] = {}
    table_rows = []
    for rows in args.rows:
        steps = candidates(rows, args.dim, args.touched, args.no_statistics, args.xla)
        times = interleaved_times(steps, rounds=args.rounds, repeats=args.repeats)
        to_raw = ratios[rows] = median_ratios(times, "raw_adagrad")
        to_clippy = median_ratios(times, "sparse_clippy")
        medians[rows] = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
        for name in steps:
            table_rows.append(
                [f"{rows:,}", name, medians[rows][name], to_raw[name], to_clippy[name]]
            )
        del steps
    print(
        markdown_table(["rows", "candidate", "ms", "x raw_adagrad", "x sparse_clippy"], table_rows)
    )
    if len(args.rows) > 1:
        small, large = min(args.rows), max(args.rows)
        print(f"\nGrowth from {small:,} to {large:,} rows (of the median time, and of the ratio to")
        print("raw_adagrad, which a loaded machine disturbs less):")
        print(
            markdown_table(
                ["candidate", "growth of ms", "growth of x raw_adagrad"],
                [
                    [
                        name,
                        medians[large][name] / medians[small][name],
                        ratios[large][name] / ratios[small][name],
                    ]
                    for name in medians[small]
                ],
            )
        )


if __name__ == "__main__":
    main()

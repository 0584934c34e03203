"""Training stability: divergence, AUC and RMSE across learning rates, and optimizer step time.

Part 1 (``stability_training.py``) -- a multitask ranking model in the Clippy paper's style
(user/item embeddings, genres, a DCN cross layer and LayerNorm on a shared bottom, a 256-128-64
MLP, a binary head for ``rating >= 4`` and a regression head for the rating) trained on MovieLens
``ml-latest-small`` at 1x, 2x, 4x, 8x and 16x a base learning rate, 3 seeds each, with:

- Keras ``Adagrad``;
- Adagrad with gradient clipping by global norm (``global_clipnorm``, set near the median gradient
  norm at the base rate);
- Adagrad with adaptive gradient clipping (AGC, Brock et al. 2021: each unit's gradient at most
  ``lambda * max(||w_unit||, 1e-3)``; ``baselines.AdaptiveClippingAdagrad``);
- TFRS ``ClippyAdagrad`` with its defaults (run under tf-keras, in a fresh process);
- tfsmooth ``ClippyAdagrad`` with its defaults, per variable and per embedding row, and per row
  with a wider relative bound (``variable_relative_threshold=5``: with one factor per row, an
  outlier row no longer shrinks the others, so the bound can be loose where weights are large
  and still tight (``absolute_threshold``) where they start at zero);
- tfsmooth ``Clippy(Adam)`` (Adam's own base rate).

A run *lost a task* when it ended no better than a constant on one head: test AUC below 0.55 or
test RMSE at or above that of predicting the training mean rating. It *diverged* when its loss
became NaN/Inf, or when its loss exploded (a batch above 10x the first batch's, the loss at
initialisation) and it lost a task. A run that lost a task without exploding *failed*; it is
counted apart, and neither kind of rate counts as stable. A
:class:`~tfsmooth.callbacks.StabilityMonitor` watches every run without intervening and counts
loss spikes (> 3x the running average). Tables: divergences per rate, mean test AUC and
RMSE. A threshold ablation (1x and 16x, every seed) shows why the defaults are what they are.

Part 2 (``stability_timing.py``) -- optimizer step time on the same model's real gradients (one
batch of 1024), measured side by side (interleaved rounds, medians): ``apply_gradients`` in a plain
``tf.function`` and inside an XLA-compiled one, and a whole training step (``fit``, each flavour's
default compile), under Keras 3 (ours vs Keras Adagrad) and tf-keras (ours vs tf-keras Adagrad vs
TFRS ClippyAdagrad, and ours with its updates compiled by XLA, per variable and all in one
program), with the number of graph operations a step runs. ``--timing-only`` runs this part alone.

The tables (``stability_report.py``) are rendered from the raw results a run writes (JSON);
``--render`` renders them again from one or more such files (the step times: the median over the
runs it is given). The committed raw results, figure and RESULTS.md section change only with
``--write``.

Usage::

    python benchmarks/stability.py                 # the full run recorded in RESULTS.md
    python benchmarks/stability.py --quick         # a smoke run (1 epoch on a quarter of the
                                                   # data: its tables show that everything runs,
                                                   # not the figures)
    python benchmarks/stability.py --optimizers clippy_adagrad,clippy_adagrad_row \
        --skip-timing --skip-ablation --out new.json       # a subset of the grid
    python benchmarks/stability.py --timing-only --out timing.json  # part 2 alone
    python benchmarks/stability.py --render old.json new.json --write  # merged tables
    python benchmarks/stability.py --write         # also rewrite the section of RESULTS.md
    python benchmarks/stability.py --data PATH     # another MovieLens directory or ratings file
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common
import stability_report as report
import stability_training as training

SCRIPT = os.path.abspath(__file__)
LEGACY_KERAS = {"TF_USE_LEGACY_KERAS": "1"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="MovieLens ratings file or directory")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--write", action="store_true", help="rewrite RESULTS.md's section")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--multipliers", default=None, help="comma-separated, e.g. 1,2,4,8,16")
    parser.add_argument("--adagrad-lr", type=float, default=0.04)
    parser.add_argument("--adam-lr", type=float, default=0.002)
    parser.add_argument("--clipnorm", type=float, default=5.0)
    parser.add_argument("--agc", type=float, default=0.01)
    parser.add_argument("--timing-rounds", type=int, default=None)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-ablation", action="store_true")
    parser.add_argument(
        "--timing-only", action="store_true", help="only part 2 (merge with --render)"
    )
    parser.add_argument(
        "--render",
        metavar="JSON",
        nargs="+",
        help="only render the tables from raw results (several: later runs replace earlier ones)",
    )
    parser.add_argument("--optimizers", default=None, help="comma-separated subset to train")
    parser.add_argument("--out", default=None, help="where to write the raw results (JSON)")
    parser.add_argument("--worker", choices=("train", "timing"), help=argparse.SUPPRESS)
    parser.add_argument("--runs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    flags = _common.recorded_flags(sys.argv[1:] if argv is None else argv)
    if "--render" in flags:
        del flags[flags.index("--render") :]
    args.flags = flags
    if args.optimizers:
        args.optimizers = args.optimizers.split(",")
        unknown = [name for name in args.optimizers if name not in training.OPTIMIZERS]
        if unknown:
            parser.error(f"unknown --optimizers {unknown}; known: {list(training.OPTIMIZERS)}")
    args.data = str(_common.data_path_or_exit(parser, args.data))
    args.epochs = args.epochs or (1 if args.quick else 3)
    args.seeds = args.seeds or (1 if args.quick else 3)
    multipliers = args.multipliers or ("1,16" if args.quick else "1,2,4,8,16")
    args.multipliers = [float(m) for m in multipliers.split(",")]
    args.timing_rounds = args.timing_rounds or (5 if args.quick else 15)
    return args


def worker_arguments(args) -> list[str]:
    return [
        "--data",
        args.data,
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--seeds",
        str(args.seeds),
        "--timing-rounds",
        str(args.timing_rounds),
    ] + (["--quick"] if args.quick else [])


def rerender(args) -> int:
    """``--render``: the tables again from raw results, without training."""
    raw = report.merge_raw(args.render)
    paths, write = args.render, args.write
    args = parse_args([*raw["flags"], "--render", *paths])
    args.write = write
    runs = raw["runs"] + raw["ablation"]
    if all("constant_rmse" in r for r in runs):
        constant = runs[0]["constant_rmse"]
    else:  # results recorded before runs stored it
        constant = training.constant_rmse(training.load_data(args.data, args.quick))
        for r in runs:
            r["constant_rmse"] = constant
    results = [training.classify(r, constant) for r in raw["runs"]]
    ablation = [training.classify(r, constant) for r in raw["ablation"]]
    text = report.render(
        args, results, ablation, raw["timing"], minutes=raw["minutes"], rendered=raw["commands"]
    )
    return publish(args, results, text)


def run(args) -> int:
    """Trains the grid (tf-keras runs in a fresh process), the ablation, times the steps (each
    flavour in its own process), saves the raw results and renders them."""
    from stability_timing import measure_step_time

    began = time.perf_counter()
    runs = [] if args.timing_only else training.planned_runs(args)
    here = [r for r in runs if training.OPTIMIZERS[r["optimizer"]][2] == "keras3"]
    legacy = [r for r in runs if training.OPTIMIZERS[r["optimizer"]][2] == "tf_keras"]
    print(f"{len(here)} Keras 3 runs here, {len(legacy)} tf-keras runs in a subprocess", flush=True)
    legacy_results = []
    if legacy:
        legacy_results = _common.run_script_in_fresh_process(
            SCRIPT,
            ["--worker", "train", "--runs", json.dumps(legacy), *worker_arguments(args)],
            env=LEGACY_KERAS,
        )["results"]
    results = training.train_many(args, here) + legacy_results
    skip_ablation = args.skip_ablation or args.timing_only
    ablation = [] if skip_ablation else training.train_many(args, training.ablation_runs(args))
    timing = {}
    if not args.skip_timing:
        timing["Keras 3"] = measure_step_time(args)
        timing["tf-keras"] = _common.run_script_in_fresh_process(
            SCRIPT, ["--worker", "timing", *worker_arguments(args)], env=LEGACY_KERAS
        )["timing"]
    minutes = (time.perf_counter() - began) / 60
    raw = _common.output_path("stability_results.json", args.write, args.out)
    _common.save_raw(
        raw,
        {
            "runs": results,
            "ablation": ablation,
            "timing": timing,
            "flags": args.flags,
            "clippy_defaults": list(training.default_thresholds()),
            "minutes": minutes,
        },
    )
    print(f"raw results: {raw}", flush=True)
    text = report.render(args, results, ablation, timing, minutes=minutes)
    return publish(args, results, text)


def publish(args, results, text: str) -> int:
    """Adds the figure to the report, prints it and, with ``--write``, records it in RESULTS.md."""
    figure = report.plot(args, results)
    if figure and args.write:
        text += f"\n\n![AUC and divergences per learning rate](figures/{os.path.basename(figure)})"
    elif figure:
        text += f"\n\n(figure: {figure})"
    print(text)
    if args.write:
        _common.update_results_section(
            "stability", "## Training stability (`benchmarks/stability.py`)\n\n" + text
        )
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker == "train":
        _common.emit_result({"results": training.train_many(args, json.loads(args.runs))})
        return 0
    if args.worker == "timing":
        from stability_timing import measure_step_time

        _common.emit_result({"timing": measure_step_time(args)})
        return 0
    if args.render:
        return rerender(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

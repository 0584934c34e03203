"""Catalog retrieval losses: memory and time of one step at 10k-1M items, and SASRec quality.

Part 1 (``--part memory``) -- loss + gradient (w.r.t. the queries and the item table) of one step
with N = 8192 queries of dimension d = 64 against catalogs of C = 10k, 100k and 1M items, for:

- full CE: the materialised ``[N, C]`` logits and ``tf.nn.sparse_softmax_cross_entropy_with_logits``
  (the anchor), in a plain ``tf.function`` (TensorFlow op by op, as most code runs it);
- chunked CE: tfsmooth ``catalog_cross_entropy(chunk_size=...)``, the exact loss without the logits
  (XLA-compiled forward and recomputing backward kernels);
- SCE: tfsmooth ``scalable_cross_entropy`` with the authors' defaults
  (``n_buckets = bucket_size_x = floor(2 sqrt(N))``, ``bucket_size_y = 256``; XLA kernels);
- sampled softmax: tfsmooth ``sampled_softmax_cross_entropy`` (1024 shared log-uniform negatives,
  log-Q correction; XLA kernel).

Peak memory: each (loss, C) runs in a fresh process. After inputs are built and the step has run
once (trace, XLA compile), the process's peak resident set (``VmHWM``) is reset and the step runs
again; the *step increment* is that peak minus the resident set just before (the loss and gradient's
own working set, the quantity the targets are about). The table also shows the raw process
high-water mark (``ru_maxrss``: interpreter, TensorFlow, compilers, inputs and all) and the increment
over the resident set after building the inputs (which includes the first call's tracing and XLA
compilation). Full CE at 1M items is not run: its logits alone need ``N C 4`` bytes = 32 GiB.

Time: the candidates' steps are interleaved in rounds (one process per C), medians of the per-round
ratios to full CE at 10k and 100k, to chunked CE at 1M.

Part 2 (``--part quality``) -- SASRec (2 blocks, 1 head, d = 64, the authors' architecture) on
MovieLens ``ml-latest-small`` (leave-last-out), trained the same number of epochs with the same seeds
with each loss: full CE (``"catalog"``), SCE (``"scalable"``), sampled softmax (``"sampled"``) and
BCE with one uniform negative (``"bce"``, SASRec's original). Full-catalog NDCG@10 and HR@10 on the
test users, mean +- standard error over seeds, and the SCE / full-CE NDCG ratio.

Usage::

    python benchmarks/retrieval.py                  # the full run recorded in RESULTS.md (~35 min)
    python benchmarks/retrieval.py --quick          # a smoke run (small C, 1 seed; ~2 min)
    python benchmarks/retrieval.py --write          # also rewrite the section of RESULTS.md
    python benchmarks/retrieval.py --part memory    # only part 1 (or --part quality)
    python benchmarks/retrieval.py --data PATH      # another MovieLens directory or ratings file
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import re
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import (
    RESULTS_FILE,
    data_path_or_exit,
    emit_result,
    interleaved_times,
    machine_summary,
    markdown_table,
    median_ratios,
    run_script_in_fresh_process,
    update_results_section,
)

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 2**20

# ----------------------------------------------------------------------------------------------------
# Part 1: memory and time of one loss + gradient step.

LOSSES = {
    "full_ce": "full CE (materialised)",
    "chunked_ce": "chunked CE (catalog_cross_entropy)",
    "sce": "SCE (scalable_cross_entropy)",
    "sampled": "sampled softmax (log-Q)",
}


def sce_defaults(n: int) -> dict:
    """The authors' defaults: n_buckets = bucket_size_x = floor(2 sqrt(N)), bucket_size_y = 256."""
    size = math.floor(2 * math.sqrt(n))
    return {"n_buckets": size, "bucket_size_x": size, "bucket_size_y": 256}


def make_loss(name: str, settings: dict):
    """A function (queries, items, labels) -> scalar loss for a candidate."""
    import tensorflow as tf

    from tfsmooth.losses import (
        catalog_cross_entropy,
        sampled_softmax_cross_entropy,
        scalable_cross_entropy,
    )

    if name == "full_ce":

        def full_ce(queries, items, labels):
            logits = tf.matmul(queries, items, transpose_b=True)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            return tf.reduce_mean(losses)

        return full_ce
    if name == "chunked_ce":
        return lambda q, w, y: catalog_cross_entropy(q, w, y, chunk_size=settings["chunk_size"])
    if name == "sce":
        return lambda q, w, y: scalable_cross_entropy(q, w, y, seed=(0, 1), **settings["sce"])
    if name == "sampled":
        return lambda q, w, y: sampled_softmax_cross_entropy(
            q, w, y, num_sampled=settings["num_sampled"], seed=(0, 1)
        )
    raise ValueError(f"`loss` unknown. Received: loss={name!r}")


def make_inputs(n: int, c: int, d: int):
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(0)
    queries = tf.Variable(rng.normal([n, d]) * 0.3, name="queries")
    items = tf.Variable(rng.normal([c, d]) * 0.3, name="items")
    labels = rng.uniform([n], 0, c, tf.int32)
    return queries, items, labels


def make_step(loss_fn, queries, items, labels):
    """loss + gradients w.r.t. the queries and the item table (sparse where the loss makes them so)."""
    import tensorflow as tf

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(queries, items, labels)
        grad_queries, grad_items = tape.gradient(loss, [queries, items])
        return loss, grad_queries, grad_items

    return step


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    """Resets VmHWM to the current resident set (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    """Returns freed heap pages to the system (glibc ``malloc_trim``), so RSS counts live memory."""
    # Not glibc: nothing to do (the resident set then keeps freed pages).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_worker(name: str, c: int, settings: dict) -> dict:
    import tensorflow as tf

    n, d = settings["n"], settings["d"]
    queries, items, labels = make_inputs(n, c, d)
    _release_free_memory()
    rss_inputs_kb = _status_kb("VmRSS")
    step = make_step(make_loss(name, settings), queries, items, labels)
    began = time.perf_counter()
    out = step()
    first_seconds = time.perf_counter() - began
    assert np.isfinite(float(out[0])), f"{name} at C={c}: loss {float(out[0])}"
    del out
    _release_free_memory()
    rss_before_kb = _status_kb("VmRSS")
    reset = _reset_peak_rss()
    try:  # the oneDNN allocator keeps statistics; TensorFlow's plain CPU allocator does not
        tf.config.experimental.reset_memory_stats("CPU:0")
        allocator_before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    except ValueError:
        allocator_before = None
    seconds = []
    for _ in range(settings["memory_steps"]):
        began = time.perf_counter()
        out = step()
        float(out[0])
        seconds.append(time.perf_counter() - began)
        del out
    allocator_peak = (
        tf.config.experimental.get_memory_info("CPU:0")["peak"] - allocator_before
        if allocator_before is not None
        else math.nan
    )
    hwm_kb = _status_kb("VmHWM")
    max_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "loss": name,
        "catalog": c,
        "raw_peak_mb": max_rss_kb / 1024,
        "first_call_increment_mb": (max_rss_kb - rss_inputs_kb) / 1024,
        "step_increment_mb": (hwm_kb - rss_before_kb) / 1024 if reset else math.nan,
        "allocator_peak_mb": allocator_peak / MiB,
        "first_call_seconds": first_seconds,
        "step_seconds": float(np.median(seconds)),
    }


def time_worker(c: int, names: list[str], settings: dict) -> dict:
    queries, items, labels = make_inputs(settings["n"], c, settings["d"])
    steps = {name: make_step(make_loss(name, settings), queries, items, labels) for name in names}
    candidates = {name: (lambda s=step: float(s()[0])) for name, step in steps.items()}
    times = interleaved_times(
        candidates, rounds=settings["rounds"], repeats=1, warmup=settings["warmup"]
    )
    anchor = names[0]
    ratios = median_ratios(times, anchor)
    return {
        "catalog": c,
        "anchor": anchor,
        "median_ms": {name: float(np.median(t) * 1e3) for name, t in times.items()},
        "ratios": ratios,
        "rounds": settings["rounds"],
    }


def full_ce_logits_gib(n: int, c: int) -> float:
    return n * c * 4 / 2**30


def run_memory_part(args, settings: dict) -> dict:
    catalogs = settings["catalogs"]
    n = settings["n"]
    memory: dict[int, dict[str, dict]] = {}
    timing: dict[int, dict] = {}
    started = time.perf_counter()
    for c in catalogs:
        memory[c] = {}
        runnable = [
            name
            for name in LOSSES
            if not (name == "full_ce" and full_ce_logits_gib(n, c) > settings["max_logits_gib"])
        ]
        for name in runnable:
            # oneDNN's allocator pools freed memory (the resident set would not show a warm step's
            # working set); TensorFlow's plain allocator returns it, so RSS tracks live memory.
            result = run_script_in_fresh_process(
                __file__,
                ["--memory-worker", name, "--catalog", str(c), *settings_args(settings)],
                env={"TF_ENABLE_ONEDNN_OPTS": "0"},
            )
            memory[c][name] = result
            print(
                f"  memory C={c:>9,} {name:11s} step +{result['step_increment_mb']:9.1f} MB "
                f"(raw {result['raw_peak_mb']:8.1f} MB, {result['step_seconds']:.2f} s/step)",
                flush=True,
            )
        timing_settings = dict(settings)
        if "full_ce" not in runnable:  # minutes per chunked step: fewer, longer rounds
            timing_settings["rounds"] = settings["rounds_without_full_ce"]
        result = run_script_in_fresh_process(
            __file__,
            [
                "--time-worker",
                ",".join(runnable),
                "--catalog",
                str(c),
                *settings_args(timing_settings),
            ],
        )
        timing[c] = result
        print(
            f"  time   C={c:>9,} "
            + ", ".join(f"{k} {v:.3g}x" for k, v in result["ratios"].items())
            + f" (anchor {result['anchor']}: {result['median_ms'][result['anchor']]:.0f} ms)",
            flush=True,
        )
    return {"memory": memory, "timing": timing, "minutes": (time.perf_counter() - started) / 60}


def settings_args(settings: dict) -> list[str]:
    return ["--settings", json.dumps(settings)]


def memory_tables(results: dict, settings: dict) -> tuple[str, list[str]]:
    n = settings["n"]
    rows, notes = [], []
    for c_key, per_loss in results["memory"].items():
        c = int(c_key)
        timing = results["timing"][c_key]
        full = per_loss.get("full_ce")
        for name in LOSSES:
            if name not in per_loss:
                need = f"{n * c * 4 / 1e9:.1f} GB ({full_ce_logits_gib(n, c):.1f} GiB)"
                rows.append(
                    [f"{c:,}", LOSSES[name], f"cannot run: needs >= {need} for the logits"]
                    + ["-"] * 6
                )
                continue
            r = per_loss[name]
            vs_full = (
                f"{full['step_increment_mb'] / r['step_increment_mb']:.1f}x lower"
                if full and name != "full_ce"
                else "-"
            )
            rows.append(
                [
                    f"{c:,}",
                    LOSSES[name],
                    f"{r['step_increment_mb']:,.1f}",
                    vs_full,
                    f"{r['first_call_increment_mb']:,.0f}",
                    f"{r['raw_peak_mb']:,.0f}",
                    f"{timing['median_ms'][name]:,.0f}",
                    f"{timing['ratios'][name]:.3g}",
                    timing["anchor"].replace("_", " "),
                ]
            )
    header = [
        "C",
        "loss",
        "step peak MB (increment)",
        "memory vs full CE",
        "first-call increment MB",
        "raw process peak MB",
        "median ms / step",
        "time ratio",
        "time anchor",
    ]
    return markdown_table(header, rows), notes


def memory_verdicts(results: dict, settings: dict) -> list[str]:
    n = settings["n"]
    lines = []
    memory, timing = results["memory"], results["timing"]
    key = next((k for k in memory if int(k) == 100_000), None)
    if key is not None and "full_ce" in memory[key]:
        full = memory[key]["full_ce"]["step_increment_mb"]
        sce = memory[key]["sce"]["step_increment_mb"]
        chunked = memory[key]["chunked_ce"]["step_increment_mb"]
        sce_speed = 1 / timing[key]["ratios"]["sce"]
        chunked_time = timing[key]["ratios"]["chunked_ce"]
        lines.append(
            f"- SCE at C = 100k: step peak {full / sce:.0f}x lower than full CE (target >= 50x: "
            f"**{'met' if full / sce >= 50 else 'missed'}**), {sce_speed:.1f}x faster (target >= "
            f"10x: **{'met' if sce_speed >= 10 else 'missed'}**)."
        )
        lines.append(
            f"- Chunked exact CE at C = 100k: step peak {full / chunked:.1f}x lower than full CE "
            f"(target >= 10x: **{'met' if full / chunked >= 10 else 'missed'}**) at "
            f"{chunked_time:.2f}x its time (target <= 1.5x: "
            f"**{'met' if chunked_time <= 1.5 else 'missed'}**)."
        )
    key = next((k for k in memory if int(k) == 1_000_000), None)
    if key is not None:
        ran = [name for name in ("chunked_ce", "sce") if name in memory[key]]
        peaks = ", ".join(
            f"{LOSSES[name]} {memory[key][name]['step_increment_mb']:,.0f} MB" for name in ran
        )
        lines.append(
            f"- C = 1M: {len(ran)} of 2 ran (step peaks: {peaks}); full CE cannot: its logits "
            f"alone need N x C x 4 bytes = {n * 4e6 / 1e9:.1f} GB "
            f"({full_ce_logits_gib(n, 1_000_000):.1f} GiB) "
            f"(target: **{'met' if len(ran) == 2 else 'missed'}**)."
        )
    return lines


# ----------------------------------------------------------------------------------------------------
# Part 2: SASRec quality with each loss.

QUALITY_LOSSES = {
    "catalog": "full CE",
    "scalable": "SCE",
    "sampled": "sampled softmax",
    "bce": "BCE, 1 negative",
}


def quality_worker(loss: str, seed: int, config: dict) -> dict:
    from tfsmooth import data as tfsmooth_data
    from tfsmooth._keras import keras
    from tfsmooth.losses import SampledSoftmaxCrossEntropy, ScalableCrossEntropy
    from tfsmooth.models import SASRec

    splits = tfsmooth_data.build_sequences(
        tfsmooth_data.load_ratings(config["data"]), max_length=config["max_length"]
    )
    keras.utils.set_random_seed(seed)
    if loss == "scalable":
        loss_object = ScalableCrossEntropy(bucket_size_y=config["sce_bucket_size_y"])
    elif loss == "sampled":
        loss_object = SampledSoftmaxCrossEntropy(
            num_sampled=config["num_sampled"], sampling="uniform"
        )
    else:
        loss_object = loss
    model = SASRec(
        splits.num_items,
        max_length=config["max_length"],
        embedding_dim=config["embedding_dim"],
        num_blocks=2,
        num_heads=1,
        dropout_rate=config["dropout"],
        loss=loss_object,
    )
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]))
    curve = []
    began = time.perf_counter()
    done = 0
    for epochs in config["eval_epochs"]:
        model.fit(
            splits.train_inputs,
            splits.train_labels,
            batch_size=config["batch_size"],
            epochs=epochs,
            initial_epoch=done,
            shuffle=True,
            verbose=0,
        )
        done = epochs
        valid = model.evaluate_ranking(splits.valid_inputs, splits.valid_labels, k=10)
        curve.append({"epoch": epochs, "valid_ndcg": valid["ndcg"], "valid_hr": valid["hit_rate"]})
    seconds = time.perf_counter() - began
    test = model.evaluate_ranking(splits.test_inputs, splits.test_labels, k=10)
    return {
        "loss": loss,
        "seed": seed,
        "test_ndcg": test["ndcg"],
        "test_hr": test["hit_rate"],
        "valid_ndcg": curve[-1]["valid_ndcg"],
        "valid_hr": curve[-1]["valid_hr"],
        "curve": curve,
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "summary": splits.summary(),
    }


def popularity_baseline(config: dict) -> dict:
    """HR@10 / NDCG@10 of ranking by training popularity (history excluded, ties against the target)."""
    from tfsmooth import data as tfsmooth_data

    splits = tfsmooth_data.build_sequences(
        tfsmooth_data.load_ratings(config["data"]), max_length=config["max_length"]
    )
    counts = splits.train_item_counts.astype(float)
    hits, gains = [], []
    for history, target in zip(splits.test_inputs, splits.test_labels):
        scores = counts.copy()
        scores[0] = -np.inf
        scores[history[history > 0]] = -np.inf
        scores[target] = counts[target]  # the target is never excluded
        others = np.delete(scores, target)
        rank = int(np.sum(others >= counts[target]))
        hits.append(rank < 10)
        gains.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
    return {"ndcg": float(np.mean(gains)), "hr": float(np.mean(hits))}


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return float(values.mean()), float(se)


def run_quality_part(config: dict) -> dict:
    started = time.perf_counter()
    runs = []
    for seed in config["seeds"]:  # seed-major: a slow phase of the machine hits every loss
        for loss in QUALITY_LOSSES:
            result = run_script_in_fresh_process(
                __file__,
                ["--quality-worker", loss, "--seed", str(seed), "--settings", json.dumps(config)],
            )
            runs.append(result)
            curve = " ".join(f"{p['epoch']}:{p['valid_ndcg']:.4f}" for p in result["curve"])
            print(
                f"  {loss:9s} seed {seed}: test NDCG@10 {result['test_ndcg']:.4f} "
                f"HR@10 {result['test_hr']:.4f} ({result['seconds']:.0f} s; valid NDCG {curve})",
                flush=True,
            )
    return {
        "runs": runs,
        "popularity": popularity_baseline(config),
        "minutes": (time.perf_counter() - started) / 60,
    }


def quality_table(results: dict) -> tuple[str, dict]:
    runs = results["runs"]
    stats = {}
    for loss in QUALITY_LOSSES:
        mine = [r for r in runs if r["loss"] == loss]
        stats[loss] = {
            "ndcg": mean_se([r["test_ndcg"] for r in mine]),
            "hr": mean_se([r["test_hr"] for r in mine]),
            "valid_ndcg": mean_se([r["valid_ndcg"] for r in mine]),
            "seconds": float(np.mean([r["seconds"] for r in mine])),
            "peak": float(np.mean([r["peak_rss_mb"] for r in mine])),
            "seeds": len(mine),
        }
    full = stats["catalog"]["ndcg"][0]
    rows = []
    if "popularity" in results:
        pop = results["popularity"]
        rows.append(
            [
                "(most popular items, no training)",
                "-",
                f"{pop['ndcg']:.4f}",
                f"{pop['hr']:.4f}",
                f"{pop['ndcg'] / full:.3f}",
                "-",
                "-",
                "-",
            ]
        )
    for loss, label in QUALITY_LOSSES.items():
        s = stats[loss]
        rows.append(
            [
                label,
                s["seeds"],
                f"{s['ndcg'][0]:.4f} ± {s['ndcg'][1]:.4f}",
                f"{s['hr'][0]:.4f} ± {s['hr'][1]:.4f}",
                f"{s['ndcg'][0] / full:.3f}",
                f"{s['valid_ndcg'][0]:.4f} ± {s['valid_ndcg'][1]:.4f}",
                f"{s['seconds']:.0f}",
                f"{s['peak']:,.0f}",
            ]
        )
    header = [
        "loss",
        "seeds",
        "test NDCG@10 ± SE",
        "test HR@10 ± SE",
        "NDCG / full CE",
        "valid NDCG@10 ± SE",
        "train s / run",
        "process peak MB",
    ]
    return markdown_table(header, rows), stats


# ----------------------------------------------------------------------------------------------------
# Driver.


def replace_block(text: str, name: str, block: str) -> str:
    begin, end = f"<!-- retrieval:{name} -->", f"<!-- /retrieval:{name} -->"
    new = f"{begin}\n{block.strip()}\n{end}"
    if begin in text and end in text:
        return re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: new, text, flags=re.S)
    return f"{text.rstrip()}\n\n{new}"


def current_section() -> str:
    content = RESULTS_FILE.read_text()
    begin, end = "<!-- section: retrieval -->", "<!-- end: retrieval -->"
    return content.split(begin, 1)[1].split(end, 1)[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small catalogs, 1 seed, few epochs")
    parser.add_argument("--write", action="store_true", help="rewrite the RESULTS.md section")
    parser.add_argument("--part", choices=("memory", "quality", "all"), default="all")
    parser.add_argument("--data", default=None, help="MovieLens ratings file or directory")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds")
    parser.add_argument("--seeds", type=int, default=None, help="SASRec seeds per loss")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--time-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quality-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--catalog", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_worker:
        emit_result(memory_worker(args.memory_worker, args.catalog, json.loads(args.settings)))
        return
    if args.time_worker:
        names = args.time_worker.split(",")
        emit_result(time_worker(args.catalog, names, json.loads(args.settings)))
        return
    if args.quality_worker:
        emit_result(quality_worker(args.quality_worker, args.seed, json.loads(args.settings)))
        return

    began = time.perf_counter()
    command = "python benchmarks/retrieval.py" + (" --quick" if args.quick else "")
    if args.part != "all":
        command += f" --part {args.part}"
    print(f"# Retrieval benchmark on {machine_summary()}", flush=True)
    blocks = {}

    if args.part in ("memory", "all"):
        n = 1024 if args.quick else 8192
        settings = {
            "n": n,
            "d": 64,
            "catalogs": [2_000, 20_000, 200_000] if args.quick else [10_000, 100_000, 1_000_000],
            "chunk_size": 8192,
            "num_sampled": 1024,
            "sce": sce_defaults(n),
            "rounds": args.rounds or (3 if args.quick else 7),
            "rounds_without_full_ce": 3,
            "warmup": 1,
            "memory_steps": 1,
            "max_logits_gib": 0.5 if args.quick else 16,
        }
        print(
            f"\nPart 1: N = {n} queries, d = 64; chunk_size = {settings['chunk_size']}; SCE "
            f"{settings['sce']}; sampled softmax {settings['num_sampled']} log-uniform negatives",
            flush=True,
        )
        results = run_memory_part(args, settings)
        table, _ = memory_tables(results, settings)
        verdicts = memory_verdicts(results, settings)
        print()
        print(table)
        print("\n".join(verdicts), flush=True)
        blocks["memory"] = f"""### Memory and time of one loss + gradient step

`{command}` ({results["minutes"]:.0f} min for this part). N = {n:,} queries, d = 64, float32; the
gradient is taken w.r.t. the queries and the whole item table (a `tf.Variable`) and returned. Full CE:
`tf.matmul` + `tf.nn.sparse_softmax_cross_entropy_with_logits` in a plain `tf.function` (no XLA).
Chunked CE: `catalog_cross_entropy(chunk_size={settings["chunk_size"]})` (XLA kernels for the
forward and the recomputing backward). SCE: `scalable_cross_entropy(n_buckets={settings["sce"]["n_buckets"]},
bucket_size_x={settings["sce"]["bucket_size_x"]}, bucket_size_y={settings["sce"]["bucket_size_y"]})`, the
authors' defaults (floor(2 sqrt(N)) buckets of as many queries, 256 items; XLA selection and bucket
kernels; the item gradient is a `tf.IndexedSlices`). Sampled softmax: `sampled_softmax_cross_entropy(num_sampled={settings["num_sampled"]})`
(log-uniform proposal, log-Q correction, XLA kernel; `tf.IndexedSlices` item gradient).

- *step peak MB (increment)*: each row in a fresh process; after the inputs are built and the step
  has run once (tracing, XLA compilation), the process's peak resident set is reset
  (`/proc/self/clear_refs`) and the step runs again: the new peak minus the resident set just
  before. This is the memory the loss + gradient needs, and what the targets are measured on. The
  memory processes run with `TF_ENABLE_ONEDNN_OPTS=0`: oneDNN's allocator pools freed memory in a
  BFC arena, so a warm step's resident set would not move; TensorFlow's plain allocator (malloc,
  with `malloc_trim` before each baseline) returns it, so the resident set tracks live memory.
- *first-call increment*: `ru_maxrss` at the end minus the resident set after building the inputs
  (adds the first call's tracing and, for the XLA-compiled losses, compilation: about 120-150 MB,
  paid once per input shape).
- *raw process peak*: `ru_maxrss` (Python, TensorFlow, the inputs: the item table is C x 64 x 4
  bytes, 256 MB at 1M, and everything else).
- Time (default TensorFlow, oneDNN on): {settings["rounds"]} interleaved rounds per catalog (one
  process per catalog; {settings["rounds_without_full_ce"]} rounds at 1M, where one chunked step takes
  minutes), median ms and median per-round ratio to the anchor (full CE; chunked CE at 1M, where full
  CE cannot run).

{table}

{chr(10).join(verdicts)}
"""

    if args.part in ("quality", "all"):
        path = data_path_or_exit(parser, args.data)
        seeds = args.seeds or (1 if args.quick else 3)
        config = {
            "data": str(path),
            "max_length": 50,
            "embedding_dim": 64,
            "dropout": 0.2,
            "learning_rate": 2e-3,
            "batch_size": 64,
            "eval_epochs": [2] if args.quick else [10, 25],
            "sce_bucket_size_y": 256,
            "num_sampled": 1024,
            "seeds": list(range(seeds)),
        }
        print(
            f"\nPart 2: SASRec on {path}: {json.dumps({k: v for k, v in config.items() if k != 'data'})}",
            flush=True,
        )
        results = run_quality_part(config)
        table, stats = quality_table(results)
        print()
        print(table, flush=True)
        ratio = stats["scalable"]["ndcg"][0] / stats["catalog"]["ndcg"][0]
        print(f"SCE / full CE NDCG@10: {ratio:.3f} (target >= 0.95)", flush=True)
        summary = results["runs"][0]["summary"]
        blocks["quality"] = f"""### SASRec quality with each loss (`--part quality`)

`{command}` ({results["minutes"]:.0f} min for this part). {summary}. SASRec: 2 blocks, 1 head,
d = {config["embedding_dim"]}, max length {config["max_length"]}, dropout {config["dropout"]}, Adam
{config["learning_rate"]}, batch {config["batch_size"]} users, {config["eval_epochs"][-1]} epochs, seeds
{config["seeds"]} (the same for every loss). Losses: `"catalog"` (full softmax CE over the catalog),
SCE (`ScalableCrossEntropy(bucket_size_y={config["sce_bucket_size_y"]})`, buckets floor(2 sqrt(valid
positions))), sampled softmax (`num_sampled={config["num_sampled"]}`, uniform, log-Q), BCE with one
uniform negative (SASRec's original loss). NDCG@10 / HR@10 against the full catalog on the test
users (leave-last-out, history excluded), mean ± standard error over seeds (training randomness
only: the test users are the same for every run). The first row ranks by training popularity, no
model, for scale.

{table}

SCE / full CE NDCG@10: **{ratio:.3f}** (target >= 0.95: **{"met" if ratio >= 0.95 else "missed"}**).
"""

    minutes = (time.perf_counter() - began) / 60
    print(f"\nTotal: {minutes:.1f} min", flush=True)
    if args.write and not args.quick:
        section = current_section()
        if "_Pending._" in section:
            section = "## Retrieval losses (`benchmarks/retrieval.py`)"
        for name, block in blocks.items():
            section = replace_block(section, name, block)
        update_results_section("retrieval", section)


if __name__ == "__main__":
    main()

"""Part 1 of ``retrieval.py``: memory and time of one loss + gradient step at growing catalogs.

Each (loss, C) runs in a fresh process (:func:`memory_worker`); the timing of all losses at one C
runs interleaved in another (:func:`time_worker`). Both are started by :func:`run_memory_part`
through ``retrieval.py``'s hidden worker flags.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time

import numpy as np
from _common import (
    interleaved_times,
    median_ratios,
    release_free_memory,
    reset_peak_rss,
    run_script_in_fresh_process,
    status_kb,
)

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "retrieval.py")
MiB = 2**20

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
    from baselines import full_softmax_cross_entropy

    from tfsmooth.losses import (
        catalog_cross_entropy,
        sampled_softmax_cross_entropy,
        scalable_cross_entropy,
    )

    if name == "full_ce":
        return full_softmax_cross_entropy
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


def memory_worker(name: str, c: int, settings: dict) -> dict:
    import tensorflow as tf

    n, d = settings["n"], settings["d"]
    queries, items, labels = make_inputs(n, c, d)
    release_free_memory()
    rss_inputs_kb = status_kb("VmRSS")
    step = make_step(make_loss(name, settings), queries, items, labels)
    began = time.perf_counter()
    out = step()
    first_seconds = time.perf_counter() - began
    assert np.isfinite(float(out[0])), f"{name} at C={c}: loss {float(out[0])}"
    del out
    release_free_memory()
    rss_before_kb = status_kb("VmRSS")
    reset = reset_peak_rss()
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
    hwm_kb = status_kb("VmHWM")
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
                SCRIPT,
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
            SCRIPT,
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

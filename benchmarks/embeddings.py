"""Embedding tables of millions of rows: does an optimizer step cost O(rows touched) or O(table)?

Three parts, each measured in fresh processes in both Keras flavours (``TF_USE_LEGACY_KERAS=1``
for tf-keras), side by side in one run:

- ``apply``: one ``apply_gradients`` of a ``tf.IndexedSlices`` gradient of ``--touched``
  (4,096) distinct rows of a ``d = 64`` float32 table of 250k, 1M, 4M and 16M rows, in a
  ``tf.function``; each call touches another set of rows (64 sets in turn). Candidates:
  ``raw_adagrad`` (``tf.raw_ops.ResourceSparseApplyAdagradV2``, TensorFlow's fused C++ sparse
  kernel: **the floor**), ``raw_rmsprop`` (``ResourceSparseApplyRMSProp``: the fused kernel of
  an update of three tables' rows, as LazyAdam's), ``sparse_clippy`` (a hand-written sparse
  Clippy step: gather, update, one factor, two scatters), Keras ``Adagrad``, TFRS's
  ``ClippyAdagrad`` (tf-keras), tfsmooth ``ClippyAdagrad`` per variable and per row, Keras
  ``Adam``, ``Clippy(Adam)``, tfsmooth ``LazyAdam`` and ``Clippy(LazyAdam)``, and the XLA
  (``jit_compile=True``) form of tfsmooth's (``Clippy(LazyAdam)`` also without statistics).
  Rounds interleave the candidates (random order); ratios are medians of per-round ratios,
  and each size runs ``--runs`` times in fresh processes (the medians of the runs are
  reported). Candidates share one table and one copy of each kind of state (accumulator,
  moments), so memory is the table's plus its state. Above ``--dense-max-rows`` the candidates whose step is O(table) by their own code (Keras Adam,
  Clippy(Adam), Keras 3's Adagrad) are not run.
- ``fit``: one ``model.fit`` step (batch 4,096) of ``Embedding(rows, 64)`` + MLP 512-256-1 at 250k
  and 4M rows, per optimizer; under Keras 3 with ``jit_compile=False`` and the default
  ``"auto"`` (XLA). A step that stays O(rows touched) does not grow with the table.
- ``catalog``: a two-tower retrieval model over a 1M-item catalog (d = 64, batch 512):
  Scalable Cross-Entropy + ClippyAdagrad against the full softmax cross-entropy (logits
  ``[batch, 1M]``) + Adam: median step time and the step's peak memory (VmHWM over the resident
  set before the step), each in its own process.

Commands::

    nice -n 5 python benchmarks/embeddings.py --write        # everything, into RESULTS.md
    python benchmarks/embeddings.py --write --parts apply --runs 5 --merge PATH  # apply again
    python benchmarks/embeddings.py --parts apply --rows 250000 1000000 --rounds 3   # a look
    python benchmarks/embeddings.py --write --parts apply --huge-pages on --merge PATH

``--huge-pages`` runs the apply workers with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` as well
(``both``) or only (``on``): glibc's malloc then asks the kernel for transparent huge pages, which
shortens the page walk of every row read at random.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import (
    command_line,
    emit_result,
    interleaved_times,
    load_raw,
    machine_summary,
    markdown_table,
    measured_or_rendered,
    median_ratios,
    release_free_memory,
    reset_peak_rss,
    run_script_in_fresh_process,
    status_kb,
    update_results_section,
)

SCRIPT = os.path.abspath(__file__)
LEARNING_RATE, EPSILON, INITIAL = 0.01, 1e-7, 0.1
INDEX_SETS = 64
FLAVOURS = {"Keras 3": {}, "tf-keras": {"TF_USE_LEGACY_KERAS": "1"}}
#: ``--huge-pages``: glibc's malloc (which TensorFlow's CPU allocator uses) asks the kernel for
#: transparent huge pages (glibc >= 2.35, the kernel's THP mode "madvise" or "always").
HUGE_PAGES = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
HUGE = ", huge pages"
#: Candidates whose step is O(table) by their own code, per flavour (not run on huge tables).
DENSE = {
    "Keras 3": ("keras_adam", "clippy_keras_adam", "keras_adagrad"),
    # TFRS's ClippyAdagrad decays every variable by weight_decay=0: a pass over the whole table.
    "tf-keras": ("keras_adam", "clippy_keras_adam", "tfrs_clippy_adagrad"),
}

# ------------------------------------------------------------------------------------------------
# Worker side: one flavour, one table size (or one model), in this process.


def _share_state(optimizer, table, shared: dict) -> None:
    """Makes ``optimizer`` use the variables of ``shared`` (by state name) as its state for
    ``table`` instead of creating its own, so every candidate updates one copy of each kind of
    state and a 16M-row run fits in memory. Both flavours create such state through
    ``add_variable_from_reference(reference, name, ...)``."""
    original = optimizer.add_variable_from_reference

    def add(*args, **kwargs):
        positional = list(args)
        reference = kwargs.get("model_variable", kwargs.get("reference_variable"))
        if reference is None and positional:
            reference = positional.pop(0)
        name = kwargs.get("name", kwargs.get("variable_name"))
        if name is None and positional:
            name = positional[0]
        shape = kwargs.get("shape")
        own_shape = shape is None or tuple(shape) == tuple(table.shape)
        if reference is table and name in shared and own_shape:
            return shared[name]
        return original(*args, **kwargs)

    object.__setattr__(optimizer, "add_variable_from_reference", add)


def apply_candidates(rows: int, dim: int, touched: int, skip: list[str], seed: int = 0) -> dict:
    """The step of each candidate as a no-argument function, all on one table and state."""
    import tensorflow as tf

    from tfsmooth._keras import IS_KERAS_3, keras
    from tfsmooth.optimizers import Clippy, ClippyAdagrad, LazyAdam

    rng = np.random.default_rng(seed)
    # A different set of rows in every call, cycling through INDEX_SETS sets (far more rows than
    # the caches hold), as in training: the same rows every call would stay cache-hot.
    index_sets = tf.constant(
        np.stack([rng.choice(rows, touched, replace=False) for _ in range(INDEX_SETS)]), tf.int32
    )
    calls = tf.Variable(0, dtype=tf.int32, name="calls")

    def next_indices():
        return tf.gather(index_sets, calls.assign_add(1) % INDEX_SETS)

    values = tf.constant(rng.normal(size=(touched, dim)).astype(np.float32) * 0.01)
    shape = tf.constant([rows, dim], tf.int64)
    table = tf.Variable(tf.random.stateless_normal([rows, dim], [seed, 1]) * 0.05, name="table")
    accumulator = tf.Variable(tf.fill([rows, dim], INITIAL), name="accumulator")
    shared = {"accumulator": accumulator}

    def with_moments():
        if "momentum" not in shared:
            m = tf.Variable(tf.zeros([rows, dim]), name="m")
            v = tf.Variable(tf.zeros([rows, dim]), name="v")
            shared.update(momentum=m, velocity=v, m=m, v=v)  # Keras 3 / tf-keras names
        return shared

    @tf.function
    def raw_adagrad():
        indices = next_indices()
        tf.raw_ops.ResourceSparseApplyAdagradV2(
            var=table.handle,
            accum=accumulator.handle,
            lr=tf.constant(LEARNING_RATE),
            epsilon=tf.constant(EPSILON),
            grad=values,
            indices=indices,
        )

    @tf.function
    def raw_rmsprop():
        # The fused C++ kernel of an update that reads and writes three tables' rows (weights and
        # two moments), as LazyAdam's does: the floor of that memory traffic.
        moments = with_moments()
        tf.raw_ops.ResourceSparseApplyRMSProp(
            var=table.handle,
            ms=moments["velocity"].handle,
            mom=moments["momentum"].handle,
            lr=tf.constant(LEARNING_RATE),
            rho=tf.constant(0.9),
            momentum=tf.constant(0.9),
            epsilon=tf.constant(EPSILON),
            grad=values,
            indices=next_indices(),
        )

    @tf.function
    def sparse_clippy():
        indices = next_indices()
        weights = tf.gather(table, indices)
        accumulated = tf.gather(accumulator, indices)
        delta = LEARNING_RATE * values * tf.math.rsqrt(accumulated + EPSILON)
        bound = 0.5 * tf.abs(weights) + 1e-3
        factor = tf.minimum(1.0, tf.reduce_min(bound / tf.abs(delta)))
        accumulator.scatter_add(tf.IndexedSlices(values * values, indices))
        table.scatter_sub(tf.IndexedSlices(factor * delta, indices))

    def step_of(optimizer, state: str, jit_compile=False):
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        _share_state(inner, table, shared if state == "adagrad" else with_moments())
        optimizer.build([table])

        @tf.function(jit_compile=jit_compile)
        def step():
            gradient = tf.IndexedSlices(values, next_indices(), shape)
            optimizer.apply_gradients([(gradient, table)])

        return step

    def clippy_adagrad(granularity):
        return ClippyAdagrad(LEARNING_RATE, granularity=granularity)

    makers = {
        "keras_adagrad": lambda: step_of(
            keras.optimizers.Adagrad(LEARNING_RATE, initial_accumulator_value=INITIAL), "adagrad"
        ),
        "clippy_adagrad_variable": lambda: step_of(clippy_adagrad("variable"), "adagrad"),
        "clippy_adagrad_row": lambda: step_of(clippy_adagrad("row"), "adagrad"),
        "clippy_adagrad_variable_xla": lambda: step_of(clippy_adagrad("variable"), "adagrad", True),
        "keras_adam": lambda: step_of(keras.optimizers.Adam(LEARNING_RATE), "adam"),
        "clippy_keras_adam": lambda: step_of(Clippy(keras.optimizers.Adam(LEARNING_RATE)), "adam"),
        "lazy_adam": lambda: step_of(LazyAdam(LEARNING_RATE), "adam"),
        "clippy_lazy_adam": lambda: step_of(Clippy(LazyAdam(LEARNING_RATE)), "adam"),
        "lazy_adam_xla": lambda: step_of(LazyAdam(LEARNING_RATE), "adam", True),
        "clippy_lazy_adam_xla": lambda: step_of(Clippy(LazyAdam(LEARNING_RATE)), "adam", True),
        # Without the statistics (the gradient norm is a full reduction: XLA's CPU loop is slow).
        "clippy_lazy_adam_xla_no_statistics": lambda: step_of(
            Clippy(LazyAdam(LEARNING_RATE), export_clipping_factors=False), "adam", True
        ),
    }
    if not IS_KERAS_3:
        try:
            import tensorflow_recommenders as tfrs
        except ImportError:
            pass
        else:
            makers["tfrs_clippy_adagrad"] = lambda: step_of(
                tfrs.experimental.optimizers.ClippyAdagrad(
                    LEARNING_RATE,
                    variable_relative_threshold=0.5,
                    absolute_threshold=1e-3,
                    initial_accumulator_value=INITIAL,
                ),
                "adagrad",
            )
    steps = {"raw_adagrad": raw_adagrad, "raw_rmsprop": raw_rmsprop, "sparse_clippy": sparse_clippy}
    for name, make in makers.items():
        if name not in skip:
            steps[name] = make()
    return steps


#: Clippy(inner) candidates and their inner optimizer's.
WRAPPED = {
    "clippy_lazy_adam": "lazy_adam",
    "clippy_lazy_adam_xla": "lazy_adam_xla",
    "clippy_lazy_adam_xla_no_statistics": "lazy_adam_xla",
    "clippy_keras_adam": "keras_adam",
}


def huge_pages_mb() -> float | None:
    """Memory of this process in transparent huge pages (Linux), ``None`` where unknown."""
    try:
        return status_kb("AnonHugePages", "smaps_rollup") / 1024
    except (OSError, RuntimeError):
        return None


def apply_worker(args) -> dict:
    """Times the candidates at ``--worker-rows`` and, in the same process and rounds, at
    ``--base-rows``: growth is the median per-round ratio of the two, so drift of the machine
    between processes does not enter it."""
    steps = apply_candidates(args.worker_rows, args.dim, args.touched, args.skip)
    names = list(steps)
    if args.worker_rows != args.base_rows:
        base = apply_candidates(args.base_rows, args.dim, args.touched, args.skip)
        steps.update({f"{name}@base": step for name, step in base.items()})
    slow = set(DENSE["Keras 3"] + DENSE["tf-keras"])
    repeats = {
        name: args.repeats if name.split("@")[0] in slow else args.fast_repeats for name in steps
    }
    times = interleaved_times(steps, rounds=args.rounds, repeats=repeats)
    growth = {
        name: float(np.median(times[name] / times[f"{name}@base"]))
        for name in names
        if f"{name}@base" in times
    }
    times = {name: times[name] for name in names}
    x_inner = {
        wrapped: float(np.median(times[wrapped] / times[inner]))
        for wrapped, inner in WRAPPED.items()
        if wrapped in times and inner in times
    }
    return {
        "x_inner": x_inner,
        "huge_pages_mb": huge_pages_mb(),
        "rows": args.worker_rows,
        "base_rows": args.base_rows,
        "ms": {name: float(np.median(t)) * 1e3 for name, t in times.items()},
        "x_floor": median_ratios(times, "raw_adagrad"),
        "x_sparse_clippy": median_ratios(times, "sparse_clippy"),
        "x_raw_rmsprop": median_ratios(times, "raw_rmsprop"),
        "growth": growth,
    }


#: name: (optimizer, embedding layer). tfsmooth's Embedding gathers the rows from the variable;
#: Keras 3's reads the whole table first (the last candidate shows what that costs).
FIT_CANDIDATES = {
    "keras_adagrad": ("keras_adagrad", "tfsmooth"),
    "clippy_adagrad_row": ("clippy_adagrad_row", "tfsmooth"),
    "lazy_adam": ("lazy_adam", "tfsmooth"),
    "clippy_lazy_adam": ("clippy_lazy_adam", "tfsmooth"),
    "clippy_adagrad_row, keras.layers.Embedding": ("clippy_adagrad_row", "keras"),
}


def fit_worker(args) -> dict:
    """Median seconds of one fit step per optimizer (interleaved), at one table size and jit."""
    import tensorflow as tf

    from tfsmooth._keras import keras
    from tfsmooth.layers import Embedding
    from tfsmooth.optimizers import Clippy, ClippyAdagrad, LazyAdam

    rows, batch = args.worker_rows, 4096
    rng = np.random.default_rng(0)
    ids = rng.integers(0, rows, size=batch * 4).astype(np.int32)
    targets = rng.normal(size=batch * 4).astype(np.float32)
    optimizers = {
        "keras_adagrad": lambda: keras.optimizers.Adagrad(LEARNING_RATE),
        "clippy_adagrad_row": lambda: ClippyAdagrad(LEARNING_RATE, granularity="row"),
        "lazy_adam": lambda: LazyAdam(LEARNING_RATE),
        "clippy_lazy_adam": lambda: Clippy(LazyAdam(LEARNING_RATE)),
    }
    layers = {"tfsmooth": Embedding, "keras": keras.layers.Embedding}
    steps = {}
    for name, (optimizer, layer) in FIT_CANDIDATES.items():
        model = keras.Sequential(
            [
                keras.Input((), dtype="int32"),
                layers[layer](rows, 64),
                keras.layers.Dense(512, activation="relu"),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(1),
            ]
        )
        jit = {"false": False, "auto": "auto"}.get(args.jit)
        options = {} if jit is None else {"jit_compile": jit}
        model.compile(optimizer=optimizers[optimizer](), loss="mse", **options)
        data = tf.data.Dataset.from_tensor_slices((ids, targets)).batch(batch).repeat()
        iterator = iter(data)
        model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # trace and compile
        train = model.make_train_function()
        steps[name] = lambda train=train, iterator=iterator: train(iterator)
        release_free_memory()
    times = interleaved_times(steps, rounds=args.rounds, repeats=args.repeats)
    return {
        "rows": rows,
        "jit": args.jit,
        "ms": {name: float(np.median(t)) * 1e3 for name, t in times.items()},
    }


CATALOG_SETUPS = {
    "sce_clippy_adagrad": "SCE + ClippyAdagrad (row)",
    "full_ce_adam": "full CE + Adam",
}


def catalog_worker(args) -> dict:
    """Time and peak memory of a fit step of a two-tower model with a ``--items`` catalog."""
    import tensorflow as tf

    from tfsmooth._keras import keras
    from tfsmooth.losses import ScalableCrossEntropy
    from tfsmooth.optimizers import ClippyAdagrad

    items, users, dim, batch = args.items, 100_000, 64, 512
    rng = np.random.default_rng(0)
    user_ids = rng.integers(0, users, size=batch * 8).astype(np.int32)
    item_ids = ((user_ids.astype(np.int64) * 7919) % items).astype(np.int32)
    release_free_memory()
    rss_start_kb = status_kb("VmRSS")

    class TwoTower(keras.Model):
        def __init__(self):
            super().__init__()
            self.user_tower = keras.Sequential(
                [
                    keras.layers.Embedding(users, dim),
                    keras.layers.Dense(dim, activation="relu"),
                    keras.layers.Dense(dim),
                ]
            )
            self.item_embedding = keras.layers.Embedding(items, dim)
            self.item_embedding.build((None,))

        def call(self, user_ids):
            return self.user_tower(user_ids)  # queries, scored against the item table

    model = TwoTower()
    item_embedding = model.item_embedding
    if args.setup == "sce_clippy_adagrad":
        loss = ScalableCrossEntropy(item_embedding, seed=0)
        optimizer = ClippyAdagrad(0.05, granularity="row")
    else:

        def loss(labels, queries):
            logits = tf.matmul(queries, item_embedding.embeddings, transpose_b=True)
            labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
            return tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )

        optimizer = keras.optimizers.Adam(1e-3)
    model.compile(optimizer=optimizer, loss=loss)
    data = tf.data.Dataset.from_tensor_slices((user_ids, item_ids)).batch(batch).repeat()
    iterator = iter(data)
    began = time.perf_counter()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
    first = time.perf_counter() - began
    train = model.make_train_function()
    release_free_memory()
    rss_before_kb = status_kb("VmRSS")
    reset = reset_peak_rss()
    seconds = []
    for _ in range(args.repeats * args.rounds):
        began = time.perf_counter()
        logs = train(iterator)
        float(np.asarray(logs["loss"]))
        seconds.append(time.perf_counter() - began)
    assert np.isfinite(float(np.asarray(logs["loss"])))
    trained = any(v is item_embedding.embeddings for v in model.trainable_variables)
    return {
        "setup": args.setup,
        "items": items,
        "ms": float(np.median(seconds)) * 1e3,
        "step_peak_mb": (status_kb("VmHWM") - rss_before_kb) / 1024 if reset else float("nan"),
        "model_mb": (rss_before_kb - rss_start_kb) / 1024,
        "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_start_kb) / 1024,
        "first_fit_seconds": first,
        "table_trained": bool(trained),
    }


# ------------------------------------------------------------------------------------------------
# Driver: workers in fresh processes, the tables, RESULTS.md.


def _worker_args(args, *extra: str) -> list[str]:
    return [
        *extra,
        "--base-rows",
        str(args.base_rows),
        "--fast-repeats",
        str(args.fast_repeats),
        "--dim",
        str(args.dim),
        "--touched",
        str(args.touched),
        "--rounds",
        str(args.rounds),
        "--repeats",
        str(args.repeats),
    ]


def _run(args, env, *extra: str) -> dict | None:
    """A worker's result, or None (reported) when the worker failed (e.g. out of memory)."""
    try:
        return run_script_in_fresh_process(SCRIPT, _worker_args(args, *extra), env)
    except RuntimeError as error:
        print(f"worker {' '.join(extra)} failed: {str(error)[-500:]}", flush=True)
        return None


def _key(part: str, result: dict) -> tuple:
    return (part, result["flavour"], result.get("rows"), result.get("jit"), result.get("setup"))


def merged(raw: dict, earlier: dict) -> dict:
    """``raw`` plus the results of an ``earlier`` run's raw JSON that ``raw`` did not measure
    (``--merge``: re-measure only what failed or changed, keep the rest)."""
    for part in ("apply", "fit", "catalog"):
        have = {_key(part, r) for r in raw[part]}
        raw[part] += [r for r in earlier.get(part, []) if _key(part, r) not in have]
    done = {f"{r['flavour']} apply {r['rows']:,} rows" for r in raw["apply"]}
    raw["failed"] = [f for f in raw["failed"] + earlier.get("failed", []) if f not in done]
    return raw


def _collect(raw: dict, part: str, label: str, args, setting: str, env: dict, *extra) -> None:
    """Runs one worker in ``env``; its result, labelled ``setting``, goes to ``raw[part]``, or
    ``label`` to ``raw["failed"]``."""
    result = _run(args, env, *extra)
    if result is None:
        raw["failed"].append(label)
        return
    result["flavour"] = setting
    raw[part].append(result)
    print(f"{label}: done", flush=True)


def median_of_runs(results: list[dict]) -> dict:
    """One apply result from several runs (fresh processes) of the same worker: every figure is
    the median of the runs' figures (each run's is already the median of its rounds)."""
    combined = dict(results[0], runs=len(results))
    for key, value in results[0].items():
        if isinstance(value, dict):
            combined[key] = {
                name: float(np.median([r[key][name] for r in results if name in r.get(key, {})]))
                for name in value
            }
    return combined


def apply_settings(flavour: str, huge_pages: str) -> list[tuple[str, dict]]:
    """``(label, environment)`` of each setting the apply part runs ``flavour`` in."""
    pages = {"off": [False], "on": [True], "both": [False, True]}[huge_pages]
    return [
        (flavour + HUGE, {**FLAVOURS[flavour], **HUGE_PAGES})
        if huge
        else (flavour, FLAVOURS[flavour])
        for huge in pages
    ]


def measure(args) -> dict:
    raw: dict = {"apply": [], "fit": [], "catalog": [], "failed": []}
    for flavour in args.flavours:
        settings = apply_settings(flavour, args.huge_pages) if "apply" in args.parts else []
        for setting, env in settings:
            for rows in args.rows:
                extra = ["--worker", "apply", "--worker-rows", str(rows)]
                if rows > args.dense_max_rows:
                    extra += ["--skip", *DENSE[flavour]]
                runs: dict = {"apply": [], "failed": []}
                label = f"{setting} apply {rows:,} rows"
                for _ in range(max(args.runs, 1)):
                    _collect(runs, "apply", label, args, setting, env, *extra)
                if runs["apply"]:
                    raw["apply"].append(median_of_runs(runs["apply"]))
                else:
                    raw["failed"].append(label)
        if "fit" in args.parts:
            for jit in ["false", "auto"] if flavour == "Keras 3" else ["default"]:
                for rows in args.fit_rows:
                    extra = ["--worker", "fit", "--worker-rows", str(rows), "--jit", jit]
                    label = f"{flavour} fit {rows:,} rows, jit {jit}"
                    _collect(raw, "fit", label, args, flavour, FLAVOURS[flavour], *extra)
        if "catalog" in args.parts:
            for setup in CATALOG_SETUPS:
                extra = ["--worker", "catalog", "--setup", setup, "--items", str(args.items)]
                label = f"{flavour} catalog {setup}"
                _collect(raw, "catalog", label, args, flavour, FLAVOURS[flavour], *extra)
    raw["machine"] = machine_summary()
    if args.merge:
        raw = merged(raw, load_raw(args.merge))
    return raw


def render(raw: dict, command: str) -> str:
    lines = [
        "## Embedding tables: optimizer steps on millions of rows (`benchmarks/embeddings.py`)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {raw['machine']}.",
        "",
    ]
    if raw["apply"]:
        lines += _render_apply(raw["apply"])
    if raw["fit"]:
        lines += _render_fit(raw["fit"])
    if raw["catalog"]:
        lines += _render_catalog(raw["catalog"])
    if raw.get("failed"):
        lines += ["Workers that failed (out of memory or an error): " + "; ".join(raw["failed"])]
    return "\n".join(lines)


def _render_apply(results: list[dict]) -> list[str]:
    runs = min(r.get("runs", 1) for r in results)
    lines = [
        "**Apply time of one sparse gradient** (4,096 distinct rows, d = 64): median ms; the",
        "median per-round ratio to the floor `raw_adagrad` (TensorFlow's fused C++ sparse Adagrad",
        "kernel); and the growth from the smallest table, the median per-round ratio of the same",
        "candidate on both tables, timed in the same process and rounds. Every figure is the",
        f"median over {runs} runs of the worker, each in a fresh process. '-' = not run",
        "(O(table) by its own code, above the largest size such candidates run at).",
        "",
    ]
    if any(r["flavour"].endswith(HUGE) for r in results):
        held = sorted(r["huge_pages_mb"] for r in results if r["flavour"].endswith(HUGE))
        span = f"{held[0]:,.0f}" if held[0] == held[-1] else f"{held[0]:,.0f}-{held[-1]:,.0f}"
        lines += [
            "*Huge pages*: those workers run with "
            f"`GLIBC_TUNABLES={HUGE_PAGES['GLIBC_TUNABLES']}` (`--huge-pages`): glibc's malloc,",
            "which TensorFlow's CPU allocator uses, asks the kernel for transparent huge pages (2 MB",
            "instead of 4 KB: one TLB entry and a shorter page walk cover 512 times the memory).",
            f"Each held {span} MB in huge pages at its end.",
            "",
        ]
    for flavour in _settings_of(results):
        ours = [r for r in results if r["flavour"] == flavour]
        sizes = sorted(r["rows"] for r in ours)
        by_rows = {r["rows"]: r for r in ours}
        names = list(dict.fromkeys(n for r in ours for n in r["ms"]))
        header = ["candidate"] + [f"{s / 1e6:g}M ms" for s in sizes]
        header += [f"{s / 1e6:g}M x floor" for s in sizes]
        larger = [s for s in sizes if "growth" in by_rows[s] and by_rows[s]["growth"]]
        header += [f"growth {by_rows[s]['base_rows'] / 1e6:g}M->{s / 1e6:g}M" for s in larger]
        rows = []
        for name in names:
            row = [name]
            row += [by_rows[s]["ms"].get(name, "-") for s in sizes]
            row += [by_rows[s]["x_floor"].get(name, "-") for s in sizes]
            row += [by_rows[s]["growth"].get(name, "-") for s in larger]
            rows.append(row)
        lines += [f"*{flavour}*", "", markdown_table(header, rows), ""]
    lines += _apply_targets(results)
    return lines


def _settings_of(results: list[dict]) -> list[str]:
    """The settings (flavours, with or without huge pages) of ``results``, in a fixed order."""
    present = {r["flavour"] for r in results}
    order = [f + huge for huge in ("", HUGE) for f in FLAVOURS]
    return [s for s in order if s in present]


def _apply_targets(results: list[dict]) -> list[str]:
    """The issue's targets, computed from the table (never typed in)."""
    lines = ["Targets:", ""]
    rows = []
    for flavour in _settings_of(results):
        ours = {r["rows"]: r for r in results if r["flavour"] == flavour}
        small = min(ours)
        at4m = ours.get(4_000_000)
        if at4m:
            for name in ("clippy_adagrad_variable", "clippy_adagrad_row"):
                value = at4m["x_floor"].get(name)
                if value is not None:
                    rows.append([flavour, f"{name} at 4M", "<= 2.5x floor", value, value <= 2.5])
        for size in sorted(ours):
            growth = ours[size].get("growth") or {}
            span = f"{ours[size].get('base_rows', small) / 1e6:g}M->{size / 1e6:g}M"
            if "raw_adagrad" in growth:
                label = f"raw_adagrad (the floor) growth {span}"
                rows.append([flavour, label, "(context)", growth["raw_adagrad"], True])
            if "raw_rmsprop" in growth:
                label = f"raw_rmsprop (three tables' floor) growth {span}"
                rows.append([flavour, label, "(context)", growth["raw_rmsprop"], True])
            for name, value in growth.items():
                if name.startswith(("clippy_", "lazy_")) and name != "clippy_keras_adam":
                    rows.append([flavour, f"{name} growth {span}", "<= 1.2x", value, value <= 1.2])
        for size in sorted(ours):
            three = ours[size].get("x_raw_rmsprop") or {}
            for name in ("lazy_adam", "lazy_adam_xla"):
                if name in three:
                    label = f"{name} / raw_rmsprop at {size / 1e6:g}M"
                    rows.append([flavour, label, "(context)", three[name], True])
            for wrapped, ratio in (ours[size].get("x_inner") or {}).items():
                label = f"{wrapped} / {WRAPPED[wrapped]} at {size / 1e6:g}M"
                rows.append([flavour, label, "<= 1.2x", ratio, ratio <= 1.2])
    header = ["flavour", "figure", "target", "measured", "met"]
    table = [[*r[:4], ("yes" if r[4] else "no") if r[2] != "(context)" else ""] for r in rows]
    return [*lines, markdown_table(header, table), ""]


def _render_fit(results: list[dict]) -> list[str]:
    lines = [
        "**A whole `fit` step** (Embedding(rows, 64) + MLP 512-256-1, batch 4,096, MSE): median ms",
        "per step and its growth with the table; `tfsmooth.layers.Embedding` unless the candidate",
        "names `keras.layers.Embedding`. Keras 3 with `jit_compile=False` and the default",
        '`"auto"` (XLA on this model); tf-keras with its default (no XLA).',
        "",
    ]
    table = []
    keys = sorted({(r["flavour"], r["jit"]) for r in results}, key=str)
    for flavour, jit in keys:
        ours = {r["rows"]: r for r in results if r["flavour"] == flavour and r["jit"] == jit}
        small, large = min(ours), max(ours)
        for name in FIT_CANDIDATES:
            a, b = ours[small]["ms"][name], ours[large]["ms"][name]
            table.append([flavour, jit, name, a, b, b / a])
    header = ["flavour", "jit_compile", "optimizer", "small ms", "large ms", "growth"]
    sizes = sorted({r["rows"] for r in results})
    lines.append(f"small = {sizes[0]:,} rows, large = {sizes[-1]:,} rows.")
    return [*lines, "", markdown_table(header, table), ""]


def _render_catalog(results: list[dict]) -> list[str]:
    items = results[0]["items"]
    lines = [
        f"**A two-tower `fit` step with a {items:,}-item catalog** (d = 64, batch 512, 100k",
        "users), each setup in its own process: median step time, and the process's peak memory",
        "above what it held before building the model (weights, optimizer state, the steps and",
        "what the allocator keeps from them). The item table is 256 MB; Adagrad adds one copy,",
        "Adam two.",
        "",
    ]
    table = []
    for flavour in FLAVOURS:
        ours = {r["setup"]: r for r in results if r["flavour"] == flavour}
        if len(ours) < 2:
            continue
        anchor = ours["full_ce_adam"]
        for setup, label in CATALOG_SETUPS.items():
            r = ours[setup]
            table.append(
                [
                    flavour,
                    label,
                    r["ms"],
                    anchor["ms"] / r["ms"],
                    r["peak_mb"],
                    anchor["peak_mb"] / r["peak_mb"],
                ]
            )
    header = ["flavour", "setup", "step ms", "x faster", "peak MB", "x less memory"]
    return [*lines, markdown_table(header, table), ""]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["apply", "fit", "catalog"])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[250_000, 1_000_000, 4_000_000, 16_000_000]
    )
    parser.add_argument("--dense-max-rows", type=int, default=4_000_000)
    parser.add_argument("--fit-rows", type=int, nargs="+", default=[250_000, 4_000_000])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--touched", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--runs", type=int, default=3, help="apply: fresh processes per size (medians of runs)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="per round, O(table) candidates")
    parser.add_argument("--fast-repeats", type=int, default=25, help="per round, the others")
    parser.add_argument("--base-rows", type=int, default=250_000, help="growth is measured from")
    parser.add_argument("--write", action="store_true", help="update RESULTS.md and raw results")
    parser.add_argument("--out", help="where the raw results go")
    parser.add_argument("--render", help="render the raw results of an earlier run (JSON)")
    parser.add_argument("--merge", help="keep an earlier run's results this run does not measure")
    parser.add_argument("--flavours", nargs="+", default=list(FLAVOURS), choices=list(FLAVOURS))
    parser.add_argument(
        "--huge-pages",
        default="off",
        choices=["off", "on", "both"],
        help="apply: also (both) or only (on) with glibc's malloc on transparent huge pages",
    )
    parser.add_argument("--worker", choices=["apply", "fit", "catalog"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--skip", nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--jit", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker = {"apply": apply_worker, "fit": fit_worker, "catalog": catalog_worker}
        emit_result(worker[args.worker](args))
        return
    raw = measured_or_rendered(
        lambda: measure(args),
        render=args.render,
        name="embeddings_results.json",
        write=args.write,
        out=args.out,
    )
    text = render(raw, command_line(SCRIPT, argv))
    print(text)
    if args.write:
        update_results_section("embeddings", text)


if __name__ == "__main__":
    main()

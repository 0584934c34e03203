"""Sharded item tables under ParameterServerStrategy: step time and each process's peak memory.

A two-tower training step (query tower: user Embedding + Dense; item table ``[C, 64]``) with
Scalable Cross-Entropy (``sce``) or chunked exact cross-entropy (``chunked_ce``) and
ClippyAdagrad (per row), on catalogs of 1M and 4M items:

- ``unsharded``: one process, no strategy, the table one plain variable;
- ``k PS``: a loopback cluster of ``k`` parameter servers (2, 4) and one worker, each a
  ``tf.distribute.Server`` in its own process, and the coordinator (``ParameterServerStrategy``
  with a partitioner that splits the item table, and only it, into ``k`` shards: one per server;
  custom loop through a ``ClusterCoordinator``). The batches are drawn on the worker.

Every configuration runs in fresh processes. Reported per configuration: median step time (rounds
of ``--repeats`` scheduled steps, then ``join``), the arithmetic of a step's table work (SCE: the
selection's ``2 n_b C d`` multiply-adds, ``n_b = 2 sqrt(batch)`` bucket centres against every item;
chunked CE: ``8 N C d``, the forward logits, their recomputation and the two gradient products)
and its rate, and the memory of every process from ``/proc/self/status``: what it holds after the
warm-up steps above its resident set when it started (a shard, its optimizer state, the runtime),
and the peak of the timed steps above what it held before them (``VmHWM`` reset after warm-up).
The servers report theirs to the coordinator through a file, on a signal (``SIGUSR1``: reset the
peak, ``SIGUSR2``: report).

All processes share the machine: on a 2-core machine more parameter servers add no compute, so the
step times show the cost of the layout (transfers, per-shard kernels), not a speed-up.

Commands::

    nice -n 5 python benchmarks/sharded.py --write     # everything, into RESULTS.md
    python benchmarks/sharded.py --quick                # a smoke check (< 2 min)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pathlib
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import (
    RESULTS_FILE,
    command_line,
    emit_result,
    machine_summary,
    markdown_table,
    measured_or_rendered,
    release_free_memory,
    replace_marked,
    reset_peak_rss,
    run_script_in_fresh_process,
    section_markers,
    status_kb,
    update_results_section,
)

SCRIPT = os.path.abspath(__file__)
FLAVOURS = {"Keras 3": {}, "tf-keras": {"TF_USE_LEGACY_KERAS": "1"}}
LOSSES = {"sce": "SCE", "chunked_ce": "chunked exact CE"}
USERS = 10_000
CE_CHUNK = 8192
LEARNING_RATE = 0.05
STARTUP_TIMEOUT = 300  # seconds for the servers to print READY
REPORT_TIMEOUT = 60  # seconds for a server to answer a signal

# ------------------------------------------------------------------------------------------------
# The servers: one tf.distribute.Server per process, reporting its memory on a signal.


def serve(args) -> None:
    """Runs one server (``--task job:index``) until killed. SIGUSR1 resets the peak of the
    resident set, SIGUSR2 writes ``{"rss_kb", "hwm_kb"}`` to ``--report``; both then write that
    report, which tells the coordinator the signal was handled."""
    import tensorflow as tf

    job, index = args.task.split(":")
    spec = tf.train.ClusterSpec(json.loads(args.cluster))
    server = tf.distribute.Server(spec, job_name=job, task_index=int(index), protocol="grpc")
    report = pathlib.Path(args.report)

    def write_report(*_):
        release_free_memory()
        payload = {"rss_kb": status_kb("VmRSS"), "hwm_kb": status_kb("VmHWM")}
        partial = report.with_suffix(".partial")
        partial.write_text(json.dumps(payload))
        os.replace(partial, report)

    def reset(*_):
        release_free_memory()
        reset_peak_rss()
        write_report()

    signal.signal(signal.SIGUSR1, reset)
    signal.signal(signal.SIGUSR2, write_report)
    print("READY", flush=True)
    while server is not None:  # the server runs on its own threads; signals wake this one
        signal.pause()


class Servers:
    """The cluster's server processes (``{task: Popen}``), killed on exit whatever happens."""

    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, pathlib.Path] = {}

    def start(self, cluster: dict, tasks: list[str]) -> None:
        """Starts a server process per task (``job:index``)."""
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("TF_CONFIG", None)
        for task in tasks:
            self.logs[task] = self.directory / f"{task.replace(':', '')}.log"
            with open(self.logs[task], "w") as log:
                self.processes[task] = subprocess.Popen(
                    [
                        sys.executable,
                        SCRIPT,
                        "--serve",
                        "--cluster",
                        json.dumps(cluster),
                        "--task",
                        task,
                        "--report",
                        str(self._report_path(task)),
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )

    def _report_path(self, task: str) -> pathlib.Path:
        return self.directory / f"{task.replace(':', '')}.json"

    def _failure(self, task: str, what: str) -> RuntimeError:
        return RuntimeError(f"server {task} {what}:\n{self.logs[task].read_text()[-3000:]}")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for task, process in self.processes.items():
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._failure(task, "did not start in time")
                readable, _, _ = select.select([process.stdout], [], [], remaining)
                if readable:
                    line = process.stdout.readline()
                    if not line:
                        raise self._failure(task, "exited")
                    if line.strip() == "READY":
                        break

    def signal_all(self, signum: int) -> dict[str, dict]:
        """Sends ``signum`` to every server; returns their reports (MB)."""
        for task, process in self.processes.items():
            self._report_path(task).unlink(missing_ok=True)
            process.send_signal(signum)
        reports = {}
        for task, process in self.processes.items():
            path = self._report_path(task)
            deadline = time.monotonic() + REPORT_TIMEOUT
            while not path.exists():
                if process.poll() is not None:
                    raise self._failure(task, "exited")
                if time.monotonic() > deadline:
                    raise self._failure(task, "did not report")
                time.sleep(0.05)
            raw = json.loads(path.read_text())
            reports[task] = {"rss_mb": raw["rss_kb"] / 1024, "hwm_mb": raw["hwm_kb"] / 1024}
        return reports

    def kill(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(Exception):
                process.communicate(timeout=30)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# ------------------------------------------------------------------------------------------------
# The training step, the same in one process and on the cluster.


def _table_initializer(shape, dtype, partition_shape=None, partition_offset=None):
    """The item table's initial value; a partitioner asks for one shard at a time (on its PS)."""
    import tensorflow as tf

    shape = partition_shape or shape
    offset = partition_offset[0] if partition_offset else 0
    return tf.random.stateless_normal(shape, seed=[offset, 1], stddev=0.05, dtype=dtype)


def build(args):
    """``(tower, table, optimizer, variables)``: the query tower (Keras), the item table (a
    ``tf.Variable``, sharded under a partitioner), ClippyAdagrad built on ``variables`` (the
    ``tf.Variable``s trained: the tower's and each shard of the table)."""
    import functools

    import tensorflow as tf

    from tfsmooth._keras import keras, native_variable
    from tfsmooth.optimizers import ClippyAdagrad

    tower = keras.Sequential(
        [keras.layers.Embedding(USERS, args.dim), keras.layers.Dense(args.dim)]
    )
    tower(tf.zeros([1], tf.int32))
    shape = [args.items, args.dim]
    initial = functools.partial(_table_initializer, shape=shape, dtype=tf.float32)
    table = tf.Variable(initial, shape=shape, dtype=tf.float32, name="items")
    variables = [native_variable(v) for v in tower.trainable_variables]
    variables += list(table.variables) if getattr(table, "is_sharded_variable", False) else [table]
    optimizer = ClippyAdagrad(LEARNING_RATE, granularity="row")
    optimizer.build(variables)
    return tower, table, optimizer, variables


def make_step(args, strategy, tower, table, optimizer, variables):
    """``step(step_number)``: a batch drawn from the step number, the loss, one optimizer step."""
    import tensorflow as tf

    from tfsmooth.losses import catalog_cross_entropy, scalable_cross_entropy

    batch = batch_size(args)

    @tf.function
    def step(number):
        def replica():
            seed = tf.stack([number, tf.constant(0, tf.int64)])
            users = tf.random.stateless_uniform([batch], seed, maxval=USERS, dtype=tf.int32)
            labels = tf.random.stateless_uniform(
                [batch], seed + 1, maxval=args.items, dtype=tf.int32
            )
            with tf.GradientTape() as tape:
                queries = tower(users)
                if args.loss == "sce":
                    loss = scalable_cross_entropy(queries, table, labels, seed=seed + 2)
                else:
                    loss = catalog_cross_entropy(queries, table, labels, chunk_size=CE_CHUNK)
            gradients = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(gradients, variables))
            return loss

        return strategy.run(replica)

    return step


def batch_size(args) -> int:
    return args.batch if args.loss == "sce" else args.ce_batch


def arithmetic_gflop(loss: str, items: int, dim: int, batch: int) -> float:
    """A step's table work: SCE's selection (``n_b = floor(2 sqrt(batch))`` centres against every
    item, one multiply-add each) or chunked CE's four ``[N, C] x d`` products."""
    if loss == "sce":
        return 2.0 * math.floor(2.0 * math.sqrt(batch)) * items * dim / 1e9
    return 8.0 * batch * items * dim / 1e9


def _rounds(args) -> tuple[int, int]:
    return (args.rounds, args.repeats) if args.loss == "sce" else (args.ce_rounds, 1)


def _median_step_seconds(run_repeats, rounds: int, repeats: int) -> float:
    seconds = []
    for _ in range(rounds):
        began = time.perf_counter()
        run_repeats(repeats)
        seconds.append((time.perf_counter() - began) / repeats)
    return float(np.median(seconds))


# ------------------------------------------------------------------------------------------------
# Worker side (fresh processes): one configuration.


def single_worker(args) -> dict:
    """The unsharded step in one process, no strategy."""
    import tensorflow as tf

    release_free_memory()
    start_kb = status_kb("VmRSS")
    tower, table, optimizer, variables = build(args)
    release_free_memory()
    built_kb = status_kb("VmRSS")
    step = make_step(args, tf.distribute.get_strategy(), tower, table, optimizer, variables)
    counter = iter(range(1 << 30))

    def run(repeats):
        for _ in range(repeats):
            loss = step(tf.constant(next(counter), tf.int64))
        value = float(loss)
        assert np.isfinite(value), value

    run(args.warmup)
    release_free_memory()
    held_kb = status_kb("VmRSS")
    setup_hwm_kb = status_kb("VmHWM")
    reset = reset_peak_rss()
    rounds, repeats = _rounds(args)
    seconds = _median_step_seconds(run, rounds, repeats)
    return {
        "layout": "unsharded",
        "ps": 0,
        "ms": seconds * 1e3,
        "process": {
            "built_mb": (built_kb - start_kb) / 1024,
            "held_mb": (held_kb - start_kb) / 1024,
            "setup_peak_mb": (setup_hwm_kb - start_kb) / 1024,
            "step_peak_mb": (status_kb("VmHWM") - held_kb) / 1024 if reset else float("nan"),
        },
    }


def cluster_worker(args) -> dict:
    """The coordinator of a loopback cluster of ``--ps`` servers and one worker."""
    ports = _free_ports(args.ps + 2)
    cluster = {
        "chief": [f"127.0.0.1:{ports[0]}"],
        "worker": [f"127.0.0.1:{ports[1]}"],
        "ps": [f"127.0.0.1:{port}" for port in ports[2:]],
    }
    tasks = ["worker:0"] + [f"ps:{i}" for i in range(args.ps)]
    with tempfile.TemporaryDirectory() as directory:
        servers = Servers(pathlib.Path(directory))
        try:
            servers.start(cluster, tasks)
            servers.wait_ready()
            return _coordinate(args, cluster, servers)
        finally:
            servers.kill()


def _coordinate(args, cluster: dict, servers: Servers) -> dict:
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": cluster, "task": {"type": "chief", "index": 0}}
    )
    import tensorflow as tf

    release_free_memory()
    start_kb = status_kb("VmRSS")
    ready = servers.signal_all(signal.SIGUSR2)
    items, shards = args.items, args.ps

    def partitioner(shape, dtype):  # the item table in one shard per server; nothing else split
        del dtype
        return [shards if shape[0] == items else 1] + [1] * (len(shape) - 1)

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        tower, table, optimizer, variables = build(args)
    shard_devices = [v.device for v in table.variables]
    release_free_memory()
    built_kb = status_kb("VmRSS")
    built = servers.signal_all(signal.SIGUSR2)
    step = make_step(args, strategy, tower, table, optimizer, variables)
    counter = iter(range(1 << 30))

    def run(repeats):
        for _ in range(repeats):
            loss = coordinator.schedule(step, args=(tf.constant(next(counter), tf.int64),))
        coordinator.join()
        value = float(loss.fetch())
        assert np.isfinite(value), value

    run(args.warmup)
    release_free_memory()
    held_kb = status_kb("VmRSS")
    setup_hwm_kb = status_kb("VmHWM")
    held = servers.signal_all(signal.SIGUSR1)  # resets each server's peak, reports what it holds
    reset = reset_peak_rss()
    rounds, repeats = _rounds(args)
    seconds = _median_step_seconds(run, rounds, repeats)
    after = servers.signal_all(signal.SIGUSR2)
    processes = {}
    for task in servers.processes:
        processes[task] = {
            "built_mb": built[task]["rss_mb"] - ready[task]["rss_mb"],
            "held_mb": held[task]["rss_mb"] - ready[task]["rss_mb"],
            "setup_peak_mb": held[task]["hwm_mb"] - ready[task]["rss_mb"],
            "step_peak_mb": after[task]["hwm_mb"] - held[task]["rss_mb"],
        }
    processes["coordinator"] = {
        "built_mb": (built_kb - start_kb) / 1024,
        "held_mb": (held_kb - start_kb) / 1024,
        "setup_peak_mb": (setup_hwm_kb - start_kb) / 1024,
        "step_peak_mb": (status_kb("VmHWM") - held_kb) / 1024 if reset else float("nan"),
    }
    return {
        "layout": f"{args.ps} PS",
        "ps": args.ps,
        "ms": seconds * 1e3,
        "shard_devices": shard_devices,
        "shard_rows": [int(v.shape[0]) for v in table.variables],
        "processes": processes,
    }


# ------------------------------------------------------------------------------------------------
# Driver: the configurations in fresh processes, the tables, RESULTS.md.


def _worker_args(args, loss: str, items: int) -> list[str]:
    return [
        "--loss",
        loss,
        "--items",
        str(items),
        "--dim",
        str(args.dim),
        "--batch",
        str(args.batch),
        "--ce-batch",
        str(args.ce_batch),
        "--rounds",
        str(args.rounds),
        "--repeats",
        str(args.repeats),
        "--ce-rounds",
        str(args.ce_rounds),
        "--warmup",
        str(args.warmup),
    ]


def measure(args) -> dict:
    raw: dict = {"runs": [], "failed": [], "dim": args.dim}
    for flavour, env in FLAVOURS.items():
        if flavour not in args.flavours:
            continue
        for items in args.items_list:
            for loss in args.losses:
                for ps in [0, *args.ps_list]:
                    extra = ["--worker", "single"] if ps == 0 else ["--worker", "cluster"]
                    extra += ["--ps", str(ps)] if ps else []
                    label = f"{flavour} {loss} {items:,} items, " + (f"{ps} PS" if ps else "1 proc")
                    try:
                        result = run_script_in_fresh_process(
                            SCRIPT, [*extra, *_worker_args(args, loss, items)], env
                        )
                    except RuntimeError as error:
                        print(f"{label} failed: {str(error)[-800:]}", flush=True)
                        raw["failed"].append(label)
                        continue
                    batch = args.batch if loss == "sce" else args.ce_batch
                    result.update(flavour=flavour, loss=loss, items=items, batch=batch)
                    raw["runs"].append(result)
                    print(f"{label}: {result['ms']:.0f} ms", flush=True)
    raw["machine"] = machine_summary()
    return raw


def _table_mb(items: int, dim: int) -> float:
    return items * dim * 4 / 2**20


def _worker_of(run: dict) -> dict:
    """The memory figures of the process that runs the steps: the worker, or the one process."""
    return run["processes"]["worker:0"] if run["ps"] else run["process"]


def _peak_of(run: dict) -> float:
    """That process's peak above its resident set at start: the larger of its set-up peak and
    what it held plus its step peak."""
    p = _worker_of(run)
    return max(p["setup_peak_mb"], p["held_mb"] + p["step_peak_mb"])


def _servers_of(run: dict) -> list[dict]:
    return [v for k, v in sorted(run["processes"].items()) if k.startswith("ps:")]


def _unsharded_of(runs: list[dict], run: dict) -> dict | None:
    same = ("flavour", "loss", "items")
    return next((b for b in runs if not b["ps"] and all(b[k] == run[k] for k in same)), None)


def render(raw: dict, command: str) -> str:
    dim = raw["dim"]
    lines = [
        "## Sharded item tables under ParameterServerStrategy (`benchmarks/sharded.py`)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {raw['machine']}. Every process of a cluster on this machine (loopback gRPC).",
        "",
        f"A two-tower step (d = {dim}, ClippyAdagrad per row) in one process (`unsharded`) and",
        "with the item table in one shard per parameter server (`k PS`: k servers, one worker, the",
        "coordinator). *GFLOP*: the step's table work (SCE: the selection, `2 n_b C d`; chunked CE:",
        "`8 N C d`). Memory in MB, per process, above its resident set at start: *built* once the",
        "variables exist, *held* after the warm-up steps (adds the runtime's caches, compiled",
        "kernels, buffers), *step peak* the peak of the timed steps above *held*. The worker is the",
        "one process when unsharded. *PS expected*: a shard and its accumulator, `2 C d 4 B / k`;",
        "*built* also counts the initializers' freed temporaries that the allocator keeps, in every",
        "process alike, so the PS targets compare with the unsharded process's *built*.",
        "",
    ]
    runs = raw["runs"]
    header = [
        "loss",
        "catalog",
        "batch",
        "layout",
        "step ms",
        "x unsharded",
        "GFLOP",
        "GFLOP/s",
        "worker built / held / step peak",
        "each PS built",
        "each PS held / step peak",
        "PS expected",
        "coordinator held",
    ]
    for flavour in FLAVOURS:
        ours = [r for r in runs if r["flavour"] == flavour]
        if not ours:
            continue
        rows = []
        for r in ours:
            base = _unsharded_of(runs, r)
            gflop = arithmetic_gflop(r["loss"], r["items"], dim, r["batch"])
            w = _worker_of(r)
            row = [
                LOSSES[r["loss"]],
                f"{r['items'] / 1e6:g}M",
                r["batch"],
                r["layout"],
                r["ms"],
                r["ms"] / base["ms"] if base else "-",
                gflop,
                gflop / (r["ms"] / 1e3),
                f"{w['built_mb']:.0f} / {w['held_mb']:.0f} / {w['step_peak_mb']:.0f}",
            ]
            if r["ps"]:
                servers = _servers_of(r)
                row += [
                    ", ".join(f"{s['built_mb']:.0f}" for s in servers),
                    ", ".join(f"{s['held_mb']:.0f} / {s['step_peak_mb']:.0f}" for s in servers),
                    2 * _table_mb(r["items"], dim) / r["ps"],
                    r["processes"]["coordinator"]["held_mb"],
                ]
            else:
                row += ["-", "-", "-", "-"]
            rows.append(row)
        lines += [f"*{flavour}*", "", markdown_table(header, rows), ""]
    lines += _targets(raw)
    if raw.get("failed"):
        lines += [
            "Configurations that failed (out of memory or an error): " + "; ".join(raw["failed"])
        ]
    return "\n".join(lines)


def _targets(raw: dict) -> list[str]:
    """The issue's targets, computed from the runs (never typed in)."""
    dim, runs, rows = raw["dim"], raw["runs"], []
    for r in runs:
        if not r["ps"]:
            continue
        name = f"{r['flavour']}, {LOSSES[r['loss']]}, {r['items'] / 1e6:g}M, {r['ps']} PS"
        shard = _table_mb(r["items"], dim) / r["ps"]
        worker = _worker_of(r)
        peak = _peak_of(r)
        rows.append([name, "worker peak < one shard", f"< {shard:.0f} MB", peak, peak < shard])
        step_peak = worker["step_peak_mb"]
        rows.append(
            [
                name,
                "worker step peak < one shard",
                f"< {shard:.0f} MB",
                step_peak,
                step_peak < shard,
            ]
        )
        built = [s["built_mb"] for s in _servers_of(r)]
        base = _unsharded_of(runs, r)
        if base:
            # The same variables, created the same way: what one process holds, over k.
            share = base["process"]["built_mb"] / r["ps"]
            worst = max(abs(b / share - 1) for b in built)
            label = "each PS built ~ 1/k of the unsharded process's (rel. error <= 25%)"
            rows.append([name, label, f"{share:.0f} MB", worst, worst <= 0.25])
        expected = 2 * _table_mb(r["items"], dim) / r["ps"]
        label = "each PS built / (shard + accumulator bytes), largest"
        rows.append([name, label, f"({expected:.0f} MB)", max(built) / expected, None])
        if base:
            label = "step time / unsharded (same arithmetic)"
            rows.append([name, label, "(context)", r["ms"] / base["ms"], None])
    # The worker's peak should not grow with the catalog: what it holds is the runtime's.
    for r in runs:
        smaller = [
            b
            for b in runs
            if b["ps"] == r["ps"]
            and b["items"] < r["items"]
            and all(b[k] == r[k] for k in ("flavour", "loss"))
        ]
        if r["ps"] and smaller:
            b = max(smaller, key=lambda b: b["items"])
            name = f"{r['flavour']}, {LOSSES[r['loss']]}, {r['ps']} PS"
            label = f"worker peak growth {b['items'] / 1e6:g}M -> {r['items'] / 1e6:g}M"
            growth = _peak_of(r) - _peak_of(b)
            shard_growth = (_table_mb(r["items"], dim) - _table_mb(b["items"], dim)) / r["ps"]
            rows.append([name, label, f"(shard +{shard_growth:.0f} MB)", growth, None])
    header = ["configuration", "target", "bound", "measured (MB, or ratio)", "met"]
    table = [[*r[:4], "" if r[4] is None else ("yes" if r[4] else "no")] for r in rows]
    return ["Targets:", "", markdown_table(header, table), ""] if rows else []


def _write_section(text: str) -> None:
    try:
        update_results_section("sharded", text)
    except ValueError:  # no section yet: append one
        RESULTS_FILE.write_text(
            replace_marked(RESULTS_FILE.read_text(), *section_markers("sharded"), text, append=True)
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items-list", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--ps-list", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=512, help="SCE's batch")
    parser.add_argument("--ce-batch", type=int, default=128, help="chunked CE's batch")
    parser.add_argument("--rounds", type=int, default=5, help="SCE: rounds of --repeats steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ce-rounds", type=int, default=3, help="chunked CE: one step each")
    parser.add_argument("--warmup", type=int, default=2, help="steps before the timed ones")
    parser.add_argument("--quick", action="store_true", help="a smoke check: 100k items, 2 PS")
    parser.add_argument("--write", action="store_true", help="update RESULTS.md and raw results")
    parser.add_argument("--out", help="where the raw results go")
    parser.add_argument("--render", help="render the raw results of an earlier run (JSON)")
    parser.add_argument("--flavours", nargs="+", default=list(FLAVOURS), choices=list(FLAVOURS))
    parser.add_argument("--worker", choices=["single", "cluster"], help=argparse.SUPPRESS)
    parser.add_argument("--loss", choices=list(LOSSES), help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cluster", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        serve(args)
        return
    if args.worker:
        emit_result({"single": single_worker, "cluster": cluster_worker}[args.worker](args))
        # The coordinator's threads can keep a finished process alive: leave at once.
        os._exit(0)
    if args.quick:
        args.items_list, args.ps_list, args.flavours = [100_000], [2], ["Keras 3"]
        args.rounds, args.repeats, args.ce_rounds, args.warmup = 2, 2, 2, 1
    raw = measured_or_rendered(
        lambda: measure(args),
        render=args.render,
        name="sharded_results.json",
        write=args.write,
        out=args.out,
    )
    text = render(raw, command_line(SCRIPT, argv))
    print(text)
    if args.write:
        _write_section(text)


if __name__ == "__main__":
    main()

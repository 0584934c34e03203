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

    python benchmarks/retrieval.py                  # the full run recorded in RESULTS.md
    python benchmarks/retrieval.py --quick          # a smoke run (small C, 1 seed)
    python benchmarks/retrieval.py --write          # also rewrite the section of RESULTS.md
    python benchmarks/retrieval.py --part memory    # only part 1 (or --part quality)
    python benchmarks/retrieval.py --data PATH      # another MovieLens directory or ratings file
    python benchmarks/retrieval.py --render raw.json --write  # the blocks again from raw results

The parts live in ``retrieval_memory.py`` and ``retrieval_quality.py``, the rendering in
``retrieval_report.py``. A run writes its raw results (JSON); the committed ones, and RESULTS.md,
change only with ``--write``.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common
import retrieval_memory as memory_part
import retrieval_quality as quality_part
import retrieval_report as report


def memory_settings(args) -> dict:
    n = 1024 if args.quick else 8192
    return {
        "n": n,
        "d": 64,
        "catalogs": [2_000, 20_000, 200_000] if args.quick else [10_000, 100_000, 1_000_000],
        "chunk_size": 8192,
        "num_sampled": 1024,
        "sce": memory_part.sce_defaults(n),
        "rounds": args.rounds or (3 if args.quick else 7),
        "rounds_without_full_ce": 3,
        "warmup": 1,
        "memory_steps": 1,
        "max_logits_gib": 0.5 if args.quick else 16,
    }


def quality_config(args, path) -> dict:
    seeds = args.seeds or (1 if args.quick else 3)
    return {
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


def measure(args, parser) -> dict:
    """Runs the parts asked for; returns their raw results (JSON-ready)."""
    command = _common.command_line(__file__)
    print(f"# Retrieval benchmark on {_common.machine_summary()}", flush=True)
    raw = {}
    if args.part in ("memory", "all"):
        settings = memory_settings(args)
        print(
            f"\nPart 1: N = {settings['n']} queries, d = 64; chunk_size = "
            f"{settings['chunk_size']}; SCE {settings['sce']}; sampled softmax "
            f"{settings['num_sampled']} log-uniform negatives",
            flush=True,
        )
        results = memory_part.run_memory_part(args, settings)
        raw["memory"] = {"command": command, "settings": settings, "results": results}
    if args.part in ("quality", "all"):
        path = _common.data_path_or_exit(parser, args.data)
        config = quality_config(args, path)
        shown = {k: v for k, v in config.items() if k != "data"}
        print(f"\nPart 2: SASRec on {path}: {json.dumps(shown)}", flush=True)
        results = quality_part.run_quality_part(config)
        config["data"] = "PATH"  # no path of the machine in the raw results
        raw["quality"] = {"command": command, "config": config, "results": results}
    return raw


def blocks(raw: dict) -> dict[str, str]:
    """RESULTS.md's ``retrieval:memory`` and ``retrieval:quality`` blocks, for the parts run."""
    out = {}
    if "memory" in raw:
        out["memory"] = report.memory_block(raw["memory"])
    if "quality" in raw:
        out["quality"] = report.quality_block(raw["quality"])
    return out


def write_section(rendered: dict[str, str]) -> None:
    """Replaces the blocks that were run inside RESULTS.md's retrieval section; the others and
    the hand-written ``retrieval:notes`` stay."""
    section = _common.results_section("retrieval")
    if "_Pending._" in section:
        section = "## Retrieval losses (`benchmarks/retrieval.py`)"
    for name, block in rendered.items():
        begin, end = f"<!-- retrieval:{name} -->", f"<!-- /retrieval:{name} -->"
        section = _common.replace_marked(section, begin, end, block, append=True)
    _common.update_results_section("retrieval", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small catalogs, 1 seed, few epochs")
    parser.add_argument("--write", action="store_true", help="rewrite the RESULTS.md section")
    parser.add_argument("--part", choices=("memory", "quality", "all"), default="all")
    parser.add_argument("--data", default=None, help="MovieLens ratings file or directory")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds")
    parser.add_argument("--seeds", type=int, default=None, help="SASRec seeds per loss")
    parser.add_argument("--out", default=None, help="where to write the raw results (JSON)")
    parser.add_argument("--render", metavar="JSON", help="only render the raw results of a run")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--time-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quality-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--catalog", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_worker:
        settings = json.loads(args.settings)
        _common.emit_result(memory_part.memory_worker(args.memory_worker, args.catalog, settings))
        return
    if args.time_worker:
        names, settings = args.time_worker.split(","), json.loads(args.settings)
        _common.emit_result(memory_part.time_worker(args.catalog, names, settings))
        return
    if args.quality_worker:
        config = json.loads(args.settings)
        _common.emit_result(quality_part.quality_worker(args.quality_worker, args.seed, config))
        return

    write = args.write and not args.quick  # a smoke run never changes the record
    raw = _common.measured_or_rendered(
        lambda: measure(args, parser),
        render=args.render,
        name="retrieval_results.json",
        write=write,
        out=args.out,
    )
    rendered = blocks(raw)
    print("\n\n".join(rendered.values()), flush=True)
    if write:
        write_section(rendered)


if __name__ == "__main__":
    main()

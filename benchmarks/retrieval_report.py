"""The report of ``retrieval.py``: its raw results rendered as RESULTS.md blocks.

Everything here is a function of the raw results (the JSON a run writes). What they cannot show
is hand-written in RESULTS.md's ``retrieval:notes`` block, which no run rewrites.
"""

from __future__ import annotations

import math

import numpy as np
from _common import markdown_table
from retrieval_memory import LOSSES, full_ce_logits_gib
from retrieval_quality import QUALITY_LOSSES

#: The targets of the issue, at C = 100k: SCE's step peak this many times below full CE's and
#: this many times faster; chunked CE's peak this many times lower at most this much of its time.
SCE_MEMORY_TARGET, SCE_SPEED_TARGET = 50, 10
CHUNKED_MEMORY_TARGET, CHUNKED_TIME_TARGET = 10, 1.5
#: SCE's NDCG@10 at least this fraction of full CE's.
QUALITY_TARGET = 0.95


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
        "C", "loss", "step peak MB (increment)", "memory vs full CE", "first-call increment MB",
        "raw process peak MB", "median ms / step", "time ratio", "time anchor",
    ]  # fmt: skip
    return markdown_table(header, rows), notes


def _verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


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
            f"- SCE at C = 100k: step peak {full / sce:.0f}x lower than full CE (target >= "
            f"{SCE_MEMORY_TARGET}x: {_verdict(full / sce >= SCE_MEMORY_TARGET)}), "
            f"{sce_speed:.1f}x faster (target >= {SCE_SPEED_TARGET}x: "
            f"{_verdict(sce_speed >= SCE_SPEED_TARGET)})."
        )
        lines.append(
            f"- Chunked exact CE at C = 100k: step peak {full / chunked:.1f}x lower than full CE "
            f"(target >= {CHUNKED_MEMORY_TARGET}x: "
            f"{_verdict(full / chunked >= CHUNKED_MEMORY_TARGET)}) at {chunked_time:.2f}x its time "
            f"(target <= {CHUNKED_TIME_TARGET}x: {_verdict(chunked_time <= CHUNKED_TIME_TARGET)})."
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


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return float(values.mean()), float(se)


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
        "loss", "seeds", "test NDCG@10 ± SE", "test HR@10 ± SE", "NDCG / full CE",
        "valid NDCG@10 ± SE", "train s / run", "process peak MB",
    ]  # fmt: skip
    return markdown_table(header, rows), stats


def memory_block(part: dict) -> str:
    """The ``retrieval:memory`` block from part 1's raw results."""
    results, settings = part["results"], part["settings"]
    table, _ = memory_tables(results, settings)
    verdicts = memory_verdicts(results, settings)
    largest = max(settings["catalogs"])
    sce = settings["sce"]
    return f"""### Memory and time of one loss + gradient step

`{part["command"]}` ({results["minutes"]:.0f} min for this part). N = {settings["n"]:,} queries, d = {settings["d"]}, float32; the
gradient is taken w.r.t. the queries and the whole item table (a `tf.Variable`) and returned. Full CE:
`tf.matmul` + `tf.nn.sparse_softmax_cross_entropy_with_logits` in a plain `tf.function` (no XLA).
Chunked CE: `catalog_cross_entropy(chunk_size={settings["chunk_size"]})` (XLA kernels for the
forward and the recomputing backward). SCE: `scalable_cross_entropy(n_buckets={sce["n_buckets"]},
bucket_size_x={sce["bucket_size_x"]}, bucket_size_y={sce["bucket_size_y"]})`, the
authors' defaults (floor(2 sqrt(N)) buckets of as many queries, {sce["bucket_size_y"]} items; XLA selection and bucket
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
  (adds the first call's tracing and, for the XLA-compiled losses, compilation, paid once per
  input shape).
- *raw process peak*: `ru_maxrss` (Python, TensorFlow, the inputs: the item table is C x {settings["d"]} x 4
  bytes, {largest * settings["d"] * 4 / 1e6:,.0f} MB at C = {largest:,}, and everything else).
- Time (default TensorFlow, oneDNN on): {settings["rounds"]} interleaved rounds per catalog (one
  process per catalog; {settings["rounds_without_full_ce"]} rounds where full CE cannot run), median ms and median
  per-round ratio to the anchor (full CE; chunked CE where full CE cannot run).

{table}

{chr(10).join(verdicts)}
"""


def quality_block(part: dict) -> str:
    """The ``retrieval:quality`` block from part 2's raw results."""
    results, config = part["results"], part["config"]
    table, stats = quality_table(results)
    ratio = quality_ratio(stats)
    summary = results["runs"][0]["summary"]
    return f"""### SASRec quality with each loss (`--part quality`)

`{part["command"]}` ({results["minutes"]:.0f} min for this part). {summary}. SASRec: 2 blocks, 1 head,
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

SCE / full CE NDCG@10: **{ratio:.3f}** (target >= {QUALITY_TARGET}: **{"met" if ratio >= QUALITY_TARGET else "missed"}**).
"""


def quality_ratio(stats: dict) -> float:
    """SCE's mean test NDCG@10 over full CE's."""
    return stats["scalable"]["ndcg"][0] / stats["catalog"]["ndcg"][0]

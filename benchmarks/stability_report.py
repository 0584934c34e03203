"""The report of ``stability.py``: raw results merged, summarised and rendered as RESULTS.md tables.

Everything here is a function of the raw results (the JSON a run writes): the tables, the verdicts
on the targets and every figure quoted in a sentence. What the raw results cannot show (how a
setting was chosen, why a figure is what it is) is hand-written in RESULTS.md, after the section.
"""

from __future__ import annotations

import math
import os

import numpy as np
from _common import command_line, load_raw, machine_summary, markdown_table, output_path
from stability_training import (
    ABLATION_MULTIPLIERS,
    BASELINES,
    DIVERGED_AUC,
    EXPLOSION_FACTOR,
    OPTIMIZERS,
    THRESHOLDS,
    default_thresholds,
)

SCRIPT = "stability.py"
#: The targets of the issue: ClippyAdagrad's optimizer step at most this many times Keras
#: Adagrad's, and no slower than TFRS ClippyAdagrad's.
STEP_TIME_TARGET, TFRS_STEP_TIME_TARGET = 1.15, 1.0

# ------------------------------------------------------------------------------------------------
# Raw results of several runs as one.


def merge_raw(paths: list[str]) -> dict:
    """Raw results of several runs: a later file's run replaces an earlier one of the same
    optimizer, rate and seed; a replaced per-variable ClippyAdagrad run (other thresholds) joins
    the ablation; the step times are the medians over the files that have them; the flags (the
    settings the tables describe) are the first file's."""
    runs: dict[tuple, dict] = {}
    merged = {"ablation": [], "timing": {}, "flags": None, "commands": [], "minutes": 0.0}
    timings = []
    for path in paths:
        raw = load_raw(path)
        # Runs recorded before each run stored its thresholds: the defaults of the time, or the
        # ablation's own fields (0.1 and 1e-3 were ClippyAdagrad's defaults before 2026-11).
        defaults = raw.get("clippy_defaults", [0.1, 1e-3])
        for r in raw["runs"] + raw["ablation"]:
            if r["optimizer"].startswith("clippy_adagrad") and not r.get("thresholds"):
                r["thresholds"] = [r["relative"], r["absolute"]] if "relative" in r else defaults
        for r in raw["runs"]:
            key = (r["optimizer"], r["multiplier"], r["seed"])
            old = runs.get(key)
            if old is not None and old.get("thresholds") and old["optimizer"] == "clippy_adagrad":
                merged["ablation"].append(old)
            runs[key] = r
        merged["ablation"] += raw["ablation"]
        if raw["timing"]:
            timings.append(raw["timing"])
        if merged["flags"] is None:
            merged["flags"] = raw.get("flags", [])
        merged["commands"].append(command_line(SCRIPT, raw.get("flags", [])))
        merged["minutes"] += raw.get("minutes") or 0.0
    merged["runs"] = list(runs.values())
    merged["timing"] = median_timing(timings)
    return merged


def median_timing(timings: list[dict]) -> dict:
    """Several runs' step times as one: per flavour, mode and optimizer, the median of each
    figure over the runs that measured it, and how many they were (``runs``)."""
    merged: dict = {}
    for timing in timings:
        for flavour, modes in timing.items():
            for mode, values in modes.items():
                for name, figures in values.items():
                    slot = merged.setdefault(flavour, {}).setdefault(mode, {}).setdefault(name, {})
                    for key, value in figures.items():
                        slot.setdefault(key, []).append(value)
    for modes in merged.values():
        for values in modes.values():
            for name, figures in values.items():
                runs = max(len(v) for v in figures.values())
                values[name] = {k: float(np.median(v)) for k, v in figures.items()}
                values[name]["runs"] = runs
                if "graph_ops" in figures:
                    values[name]["graph_ops"] = int(np.median(figures["graph_ops"]))
    return merged


# ------------------------------------------------------------------------------------------------
# Summaries and verdicts.


def summarise(results: list[dict], multipliers, seeds) -> dict:
    table = {}
    for name in OPTIMIZERS:
        rows = {}
        for m in multipliers:
            runs = [r for r in results if r["optimizer"] == name and r["multiplier"] == m]
            if not runs:
                continue
            stable = [r for r in runs if not r["diverged"]]
            rows[m] = {
                "diverged": sum(r["diverged"] for r in runs),
                "failed": sum(r["failed"] for r in runs),
                "exploded": sum(r["exploded"] for r in runs),
                "runs": len(runs),
                "auc": float(np.mean([r["auc"] for r in runs])),
                "rmse": float(np.mean([r["rmse"] for r in runs])),
                "stable_auc": float(np.mean([r["auc"] for r in stable])) if stable else math.nan,
                "spikes": float(np.mean([r["spikes"] for r in runs])),
            }
        if rows:  # an optimizer a subset run left out gets no empty row
            table[name] = rows
    return table


def best_stable(rows: dict) -> tuple:
    """The rate with the best mean AUC among those where every seed trained and none diverged."""
    stable = {m: r for m, r in rows.items() if r["diverged"] == 0 and r["failed"] == 0}
    if not stable:
        return None, math.nan, math.nan
    m = max(stable, key=lambda k: stable[k]["auc"])
    return m, stable[m]["auc"], stable[m]["rmse"]


def divergence_target(adagrad: dict, ours: dict) -> str:
    """The first target: where plain Adagrad diverged in every seed, ClippyAdagrad in none."""
    all_diverge = [m for m, r in adagrad.items() if r["diverged"] == r["runs"]]
    if all_diverge:
        limit = max(all_diverge)
        bad = [m for m, r in ours.items() if m <= limit and r["diverged"]]
        return (
            f"- Plain Adagrad diverged in every seed at {', '.join(f'{m:g}x' for m in all_diverge)}; "
            f"tfsmooth ClippyAdagrad diverged "
            + ("in no run up to that rate: **met**." if not bad else f"at {bad}: **missed**.")
        )
    bad = [m for m, r in ours.items() if r["diverged"]]
    return (
        "- Plain Adagrad never diverged in every seed at any rate tried, so the first target "
        "is vacuous here; tfsmooth ClippyAdagrad diverged "
        + ("in no run." if not bad else f"at {bad}.")
    )


def check_targets(table: dict, timing: dict | None = None) -> list[str]:
    lines = []
    adagrad = table.get("adagrad", {})
    ours = table.get("clippy_adagrad", {})
    if adagrad and ours:  # a subset run without one of them has nothing to compare here
        lines.append(divergence_target(adagrad, ours))
    baselines = {name: best_stable(table[name]) for name in BASELINES if table.get(name)}
    if not baselines:  # a subset run without baselines (see --render to merge)
        return lines + timing_targets(timing)
    best_name = max(baselines, key=lambda n: -1 if math.isnan(baselines[n][1]) else baselines[n][1])
    best = baselines[best_name]

    def rate(m):
        return "no stable rate" if m is None else f"{m:g}x"

    for name in ("clippy_adagrad", "clippy_adagrad_row", "clippy_adagrad_row_wide"):
        if not table.get(name):
            continue
        mine = table[name]
        bad = [m for m, r in mine.items() if r["diverged"]]
        ours_best = best_stable(mine)
        verdict = "**met**" if ours_best[1] >= best[1] and not bad else "**missed**"
        lines.append(
            f"- AUC at the best stable rate: {OPTIMIZERS[name][0]} {ours_best[1]:.4f} "
            f"({rate(ours_best[0])}; diverged at {bad or 'no rate'}) vs the best baseline, "
            f"{OPTIMIZERS[best_name][0]}, {best[1]:.4f} ({rate(best[0])}), a difference of "
            f"{ours_best[1] - best[1]:+.4f}: {verdict}."
        )
    return lines + timing_targets(timing)


def timing_targets(timing: dict | None) -> list[str]:
    lines = []
    for flavour, modes in (timing or {}).items():
        for mode, values in modes.items():
            if "ClippyAdagrad" not in values or not mode.startswith("apply"):
                continue
            ours_time = values["ClippyAdagrad"]
            ok = ours_time["vs_adagrad"] <= STEP_TIME_TARGET
            text = (
                f"- Step time ({flavour}, {mode}): ClippyAdagrad {ours_time['vs_adagrad']:.2f}x "
                f"Keras Adagrad (target <= {STEP_TIME_TARGET:g}x): "
                f"{'**met**' if ok else '**missed**'}"
            )
            if "vs_tfrs" in ours_time:
                ok_tfrs = ours_time["vs_tfrs"] <= TFRS_STEP_TIME_TARGET
                text += (
                    f"; {ours_time['vs_tfrs']:.2f}x TFRS ClippyAdagrad (target <= "
                    f"{TFRS_STEP_TIME_TARGET:g}x): {'**met**' if ok_tfrs else '**missed**'}"
                )
            text += "."
            adagrad_ops = values.get("Keras Adagrad", {}).get("graph_ops")
            if not ok and adagrad_ops and ours_time.get("graph_ops"):
                text += (
                    f" A step of Keras Adagrad runs {adagrad_ops} small graph operations, "
                    f"ClippyAdagrad's {ours_time['graph_ops']}."
                )
            xla = [
                values.get(f"ClippyAdagrad, XLA{k}") for k in (" per variable", ", all variables")
            ]
            if not ok and all(xla):
                closes = min(x["vs_adagrad"] for x in xla) <= STEP_TIME_TARGET
                text += (
                    f" Compiling ClippyAdagrad's updates with XLA "
                    f"{'closes' if closes else 'does not close'} the gap: "
                    f"{xla[0]['vs_adagrad']:.2f}x with one XLA program per variable, "
                    f"{xla[1]['vs_adagrad']:.2f}x with one for all variables."
                )
            lines.append(text)
    return lines


def ablation_table(ablation: list[dict], results: list[dict]) -> list[list[str]]:
    """Rows (thresholds x rate): divergences, runs at chance, mean AUC and RMSE over seeds.

    Pools the ablation's runs with the main grid's per-variable ClippyAdagrad runs (each run
    records its thresholds); a main-grid run wins over an ablation run of the same setting."""
    pool: dict[tuple, dict] = {}
    for r in ablation + [r for r in results if r["optimizer"] == "clippy_adagrad"]:
        if r.get("thresholds") and r["multiplier"] in ABLATION_MULTIPLIERS:
            pool[(*r["thresholds"], r["multiplier"], r["seed"])] = r
    defaults = default_thresholds()
    rows = []
    for relative, absolute in THRESHOLDS:
        for multiplier in ABLATION_MULTIPLIERS:
            group = [r for key, r in pool.items() if key[:3] == (relative, absolute, multiplier)]
            if not group:
                continue
            label = " (default)" if (relative, absolute) == defaults else ""
            rows.append(
                [
                    f"{relative:g}{label}",
                    f"{absolute:g}",
                    f"{multiplier:g}x",
                    f"{np.mean([r['auc'] for r in group]):.4f}",
                    f"{np.mean([r['rmse'] for r in group]):.4f}",
                    f"{sum(r['diverged'] for r in group)}/{len(group)}",
                    f"{sum(r['failed'] for r in group)}/{len(group)}",
                ]
            )
    return rows


# ------------------------------------------------------------------------------------------------
# Rendering.


def render(args, results, ablation, timing, minutes=None, rendered=False) -> str:
    command = command_line(SCRIPT, args.flags)
    if not results:  # --timing-only
        lines = [f"Command: `{command}` ({machine_summary()}).", "", *timing_targets(timing)]
        return "\n".join(lines + timing_tables(timing))
    multipliers = args.multipliers
    table = summarise(results, multipliers, args.seeds)
    header = ["optimizer"] + [f"{m:g}x" for m in multipliers]
    divergence_rows, auc_rows, rmse_rows, spike_rows = [], [], [], []
    for name, rows in table.items():
        label = OPTIMIZERS[name][0]
        divergence_rows.append(
            [label]
            + [
                f"{rows[m]['diverged']}/{rows[m]['runs']}"
                + (f" ({rows[m]['failed']} failed)" if rows[m]["failed"] else "")
                for m in multipliers
                if m in rows
            ]
        )
        auc_rows.append([label] + [f"{rows[m]['auc']:.4f}" for m in multipliers if m in rows])
        rmse_rows.append([label] + [f"{rows[m]['rmse']:.4f}" for m in multipliers if m in rows])
        spike_rows.append([label] + [f"{rows[m]['spikes']:.1f}" for m in multipliers if m in rows])
    best_rows = []
    for name, rows in table.items():
        m, auc, rmse = best_stable(rows)
        best_rows.append(
            [OPTIMIZERS[name][0], "-" if m is None else f"{m:g}x", f"{auc:.4f}", f"{rmse:.4f}"]
        )
    if rendered:
        command = command_line(SCRIPT, ["--render", *args.render])
    lines = [
        f"Command: `{command} --write` ({machine_summary()}; {args.epochs} epochs, batch "
        f"{args.batch_size}, seeds {args.seeds}; Adagrad-family base rate {args.adagrad_lr:g}, "
        f"Adam base rate {args.adam_lr:g}; global-norm clipping at {args.clipnorm:g}, AGC "
        f"lambda {args.agc:g})"
        + (f"; the whole run took {minutes:.0f} min." if minutes else ".")
        + (
            " Tables rendered with `--render` from the raw results of: "
            + "; ".join(f"`{c}`" for c in rendered)
            + " (later runs replace earlier runs of the same optimizer, rate and seed)."
            if rendered
            else ""
        ),
        "",
        "Model: user and item embeddings (32), a genre projection, DCN cross layer + LayerNorm, "
        "MLP 256-128-64, binary head (rating >= 4, AUC) and regression head (rating, RMSE), "
        "losses summed. A run *lost a task* if it ended no better than a constant on a head: test "
        f"AUC < {DIVERGED_AUC}, or test RMSE >= {results[0]['constant_rmse']:.4f} (predicting the "
        "training mean rating). It *diverged* if its loss went NaN/Inf, or exploded (a batch "
        f"above {EXPLOSION_FACTOR:g}x the first batch's, the loss at initialisation) and it lost "
        "a task. A run that lost a task without exploding *failed* (shown apart; not a "
        "divergence, but no rate with a diverged or failed run counts as stable).",
        "",
        "**Divergences per learning-rate multiplier**",
        "",
        markdown_table(header, divergence_rows),
        "",
        "**Test AUC (mean over seeds, diverged runs included)**",
        "",
        markdown_table(header, auc_rows),
        "",
        "**Test RMSE (mean over seeds)**",
        "",
        markdown_table(header, rmse_rows),
        "",
        "**Loss spikes per run (> 3x the running average; StabilityMonitor, observing only)**",
        "",
        markdown_table(header, spike_rows),
        "",
        "**Best stable rate (no diverged or failed run in any seed) and its AUC / RMSE**",
        "",
        markdown_table(["optimizer", "rate", "AUC", "RMSE"], best_rows),
        "",
        "**Targets**",
        "",
        *check_targets(table, timing),
    ]
    if ablation:
        lines += [
            "",
            "**ClippyAdagrad thresholds** (`variable_relative_threshold`, `absolute_threshold`; "
            "1e-7 is TFRS's default; every seed; the defaults' rows are the main grid's runs)",
            "",
            markdown_table(
                ["lambda_rel", "lambda_abs", "rate", "AUC", "RMSE", "diverged", "failed"],
                ablation_table(ablation, results),
            ),
        ]
    return "\n".join(lines + timing_tables(timing))


def timing_tables(timing: dict | None) -> list[str]:
    lines = []
    if timing:
        for flavour, modes in timing.items():
            for mode, values in modes.items():
                header = ["optimizer", "ms", "vs Keras Adagrad"]
                has_tfrs = any("vs_tfrs" in v for v in values.values())
                has_ops = any("graph_ops" in v for v in values.values())
                if has_tfrs:
                    header.append("vs TFRS ClippyAdagrad")
                has_runs = any(v.get("runs", 1) > 1 for v in values.values())
                if has_ops:
                    header.append("graph ops per step (before XLA)")
                if has_runs:
                    header.append("runs")
                rows = []
                for name, v in values.items():
                    row = [name, f"{v['ms']:.2f}", f"{v['vs_adagrad']:.2f}x"]
                    if has_tfrs:
                        row.append(f"{v['vs_tfrs']:.2f}x")
                    if has_ops:
                        row.append(str(v.get("graph_ops", "-")))
                    if has_runs:
                        row.append(str(v.get("runs", 1)))
                    rows.append(row)
                lines += [
                    "",
                    f"**Step time, {flavour}, {mode}** (median of interleaved rounds"
                    + ("; median over runs" if has_runs else "")
                    + ")",
                    "",
                    markdown_table(header, rows),
                ]
    return lines


def plot(args, results) -> str | None:
    """AUC and divergences per rate, one line per optimizer. The committed figure changes only
    with ``--write``; other runs put theirs beside ``--out`` (or in the temporary directory)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not results:  # a --timing-only run
        return None
    table = summarise(results, args.multipliers, args.seeds)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in table.items():
        ms = sorted(rows)
        axes[0].plot(ms, [rows[m]["auc"] for m in ms], marker="o", label=OPTIMIZERS[name][0])
        axes[1].plot(ms, [rows[m]["diverged"] for m in ms], marker="o", label=OPTIMIZERS[name][0])
    for ax, title in zip(axes, ("test AUC (mean of seeds)", "diverged runs")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate multiplier")
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = getattr(args, "out", None)
    beside = os.path.splitext(os.path.abspath(out))[0] + "_auc.png" if out else None
    path = output_path("stability_auc.png", args.write, None if args.write else beside)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)

"""The report of ``reproducibility.py``: its raw results (one row per activation and DCN setting)
as RESULTS.md sections, the README table and the AUC-against-PD figure.

Everything here is a function of the rows; the verdict and the observations are computed from them,
so a re-run keeps them true.
"""

from __future__ import annotations

import pathlib

from _common import markdown_table, update_marked_file, update_results_section

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
#: The target of the issue: best-beta SmeLU PD at most this fraction of ReLU's, at an AUC no more
#: than this below ReLU's.
TARGET_PD_RATIO, AUC_TOLERANCE = 0.7, 0.002
TARGET = (
    f"Target (best-beta SmeLU PD <= {TARGET_PD_RATIO}x ReLU's, AUC >= ReLU's - {AUC_TOLERANCE}):"
)


def verdict(rows: list[dict]) -> list[str]:
    lines = []
    for dcn in (False, True):
        part = [r for r in rows if r["dcn"] == dcn]
        if not part:
            continue
        label = "with DCN" if dcn else "without DCN"
        smelus = [r for r in part if r["activation"].startswith("smelu")]
        eligible = [r for r in smelus if r["auc_delta"] >= -AUC_TOLERANCE]
        if not eligible:
            best_auc = max(smelus, key=lambda r: r["auc_delta"])
            lines.append(
                f"- {label}: target **missed** -- no SmeLU beta keeps AUC within "
                f"{AUC_TOLERANCE} of ReLU (closest: {best_auc['activation']}, AUC "
                f"{best_auc['auc_delta']:+.4f}, PD x{best_auc['pd_ratio']:.2f})."
            )
            continue
        best = min(eligible, key=lambda r: r["pd"])
        met = best["pd_ratio"] <= TARGET_PD_RATIO
        line = (
            f"- {label}: best beta {best['activation']}: PD x{best['pd_ratio']:.2f} of ReLU's "
            f"(target <= {TARGET_PD_RATIO}), AUC {best['auc_delta']:+.4f} (target >= "
            f"-{AUC_TOLERANCE}) -- target **{'met' if met else 'missed'}**."
        )
        lowest = min(smelus, key=lambda r: r["pd"])
        if not met and lowest is not best:
            line += (
                f" The lowest-PD SmeLU, {lowest['activation']}, reaches PD "
                f"x{lowest['pd_ratio']:.2f} but at AUC {lowest['auc_delta']:+.4f}, outside the "
                "AUC tolerance."
            )
        lines.append(line)
    return lines


def observations(rows: list[dict]) -> list[str]:
    """What the table says beyond the target, computed from it (so a re-run keeps it true)."""
    lines = []
    for dcn in sorted({r["dcn"] for r in rows}):
        part = [r for r in rows if r["dcn"] == dcn]
        label = "With DCN" if dcn else "Without DCN"
        top_auc = max(part, key=lambda r: r["auc"])
        low_pd = min(part, key=lambda r: r["pd"])
        relu = next(r for r in part if r["activation"] == "relu")
        smooth = [r for r in part if r["activation"] != "relu"]
        lower = sum(r["pd"] < relu["pd"] for r in smooth)
        gain = {r["activation"]: r["ensemble_auc"] - r["auc"] for r in part}
        lines.append(
            f"- {label}: {lower} of {len(smooth)} smooth activations have a lower PD than ReLU; "
            f"the lowest is {low_pd['activation']} (x{low_pd['pd_ratio']:.2f}). The highest "
            f"mean AUC is {top_auc['activation']}'s ({top_auc['auc']:.4f}). Averaging the replicas "
            f"gains ReLU {gain['relu']:+.4f} AUC and {low_pd['activation']} "
            f"{gain[low_pd['activation']]:+.4f}"
            + (
                ": replicas that disagree more also gain more from ensembling."
                if gain["relu"] > gain[low_pd["activation"]]
                else "."
            )
        )
    lines.append(
        "- The AUC errors are the spread over replicas on one shared test split; they do not "
        "include the sampling noise of the test ratings, which is the same for every "
        "activation. The best beta is picked on the test figures (all betas are shown)."
    )
    return lines


def readme_table(rows: list[dict]) -> str:
    """Condensed: PD ratio and AUC difference to ReLU, without and with DCN."""
    names = list(dict.fromkeys(r["activation"] for r in rows))
    by_key = {(r["activation"], r["dcn"]): r for r in rows}
    body = []
    for name in names:
        cells = [name]
        for dcn in (False, True):
            r = by_key.get((name, dcn))
            cells.append("" if r is None else f"{r['pd']:.3f} (x{r['pd_ratio']:.2f})")
            cells.append("" if r is None else f"{r['auc']:.4f} ({r['auc_delta']:+.4f})")
        body.append(cells)
    header = ["activation", "PD, no DCN", "AUC, no DCN", "PD, DCN", "AUC, DCN"]
    return markdown_table(header, body)


def write_results(
    rows, *, setup: str, command: str, replicas: int, dataset: str, figure: pathlib.Path
) -> None:
    """Rewrites this benchmark's sections of benchmarks/RESULTS.md and README.md."""
    lines = verdict(rows)
    text = [
        "## Reproducibility (`benchmarks/reproducibility.py`)",
        "",
        setup + " PD: mean pairwise relative prediction difference of the replicas' test "
        "predictions (jackknife SE over replicas); AUC: mean over replicas (SE = std / sqrt(n)); "
        "ratios and differences are to ReLU in the same run.",
        "",
        *results_body(rows, "AUC against PD", figure),
    ]
    update_results_section("reproducibility", "\n".join(text))
    anchor = "benchmarks/RESULTS.md#reproducibility-benchmarksreproducibilitypy"
    readme = [
        f"On {dataset} ({replicas} replicas per activation; relative PD with its ratio to "
        f"ReLU's, test AUC with its difference to ReLU's; `{command}`, details in "
        f"[benchmarks/RESULTS.md]({anchor})):",
        "",
        readme_table(rows),
        "",
        TARGET,
        "",
        *lines,
        "",
        "![AUC against PD](benchmarks/figures/reproducibility.png)",
    ]
    update_marked_file(
        README,
        "<!-- reproducibility-table -->",
        "<!-- /reproducibility-table -->",
        "\n".join(readme),
    )


def write_follow_up(rows, *, setup: str, figure: pathlib.Path) -> None:
    """Rewrites the follow-up section of RESULTS.md (a subset run: some activations, betas or one
    DCN half, often with more replicas); the main section stays as the full run left it."""
    text = [
        "### Follow-up run",
        "",
        "A subset of the benchmark run again, most often with more replicas, to tighten figures "
        "the main run left close to the target. Replica i has seeds i in every run, so this "
        "run's replicas repeat the main run's, replica for replica, as far as both go. The "
        "verdict uses the same rule as the main run's, on all replicas of this run.",
        "",
        setup,
        "",
        *results_body(rows, "AUC against PD, follow-up", figure),
    ]
    update_results_section("reproducibility-follow-up", "\n".join(text))


def results_body(rows: list[dict], caption: str, figure: pathlib.Path) -> list[str]:
    """The table, the verdict on the target, the observations and the figure, as lines."""
    return [
        markdown(rows),
        "",
        TARGET,
        "",
        *verdict(rows),
        "",
        *observations(rows),
        "",
        f"![{caption}](figures/{figure.name})",
    ]


def markdown(rows: list[dict]) -> str:
    header = [
        "activation", "DCN", "replicas", "epochs", "PD (relative) ± SE", "PD / ReLU",
        "AUC ± SE", "AUC - ReLU", "log loss", "ensemble AUC", "s / replica",
    ]  # fmt: skip
    body = []
    for r in rows:
        replicas = f"{r['replicas']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        body.append(
            [
                r["activation"],
                "yes" if r["dcn"] else "no",
                replicas,
                str(r["epochs"]),
                f"{r['pd']:.4f} ± {r['pd_se']:.4f}",
                f"{r['pd_ratio']:.2f}",
                f"{r['auc']:.4f} ± {r['auc_se']:.4f}",
                f"{r['auc_delta']:+.4f}",
                f"{r['log_loss']:.4f}",
                f"{r['ensemble_auc']:.4f}",
                f"{r['seconds']:.1f}",
            ]
        )
    return markdown_table(header, body)


def plot(rows: list[dict], path: pathlib.Path, title: str) -> None:
    """AUC against PD, one panel per DCN setting, one colour per activation, a shared legend."""
    from matplotlib.figure import Figure

    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
              "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
    names = list(dict.fromkeys(r["activation"] for r in rows))
    panels = sorted({r["dcn"] for r in rows})
    figure = Figure(figsize=(4.6 * len(panels) + 1.8, 4.4), dpi=90)
    for position, dcn in enumerate(panels, 1):
        ax = figure.add_subplot(1, len(panels), position)
        for r in (r for r in rows if r["dcn"] == dcn):
            index = names.index(r["activation"])
            ax.errorbar(
                r["pd"], r["auc"], xerr=r["pd_se"], yerr=r["auc_se"],
                fmt="os^D"[index // len(colors)], color=colors[index % len(colors)], capsize=3,
                label=r["activation"],
            )  # fmt: skip
        ax.set_title(f"{'with' if dcn else 'without'} DCN cross layer", fontsize=10)
        ax.set_xlabel("relative PD between replicas (lower is better)")
        ax.set_ylabel("test AUC (higher is better)")
        ax.grid(alpha=0.3)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1 - 1.7 / figure.get_figwidth(), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def publish(raw: dict, figure: pathlib.Path, write: bool) -> None:
    """Prints the rows, verdict and observations, draws the figure and, with ``write``, records
    them: a follow-up run in its own section, the main run in its section and the README."""
    rows = raw["rows"]
    print()
    print(markdown(rows))
    print("\n".join(verdict(rows) + observations(rows)))
    print(f"({raw['minutes']:.0f} minutes)")
    plot(rows, figure, raw["title"])
    print(f"figure: {figure}")
    if not write:
        return
    if raw["follow_up"]:
        write_follow_up(rows, setup=raw["setup"], figure=figure)
        print("RESULTS.md updated (follow-up section)")
    else:
        write_results(
            rows,
            setup=raw["setup"],
            command=raw["command"],
            replicas=raw["replicas"],
            dataset=raw["dataset"],
            figure=figure,
        )
        print("RESULTS.md and README.md updated")

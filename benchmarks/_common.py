"""Small helpers shared by the benchmark scripts: interleaved timing, tables, fresh-process runs."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np


def machine_summary() -> str:
    import tensorflow as tf

    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}"
    )


def interleaved_times(
    candidates: dict[str, Callable[[], object]],
    *,
    rounds: int,
    repeats: int,
    warmup: int = 2,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Seconds per call of each candidate, ``rounds`` samples each, candidates interleaved.

    Each round runs every candidate ``repeats`` times back to back, in a fresh random order, so slow
    phases of a noisy machine hit all candidates alike. Ratios should be taken per round.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    order = list(candidates)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in order}
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = candidates[name]
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            samples[name].append((time.perf_counter() - start) / repeats)
    return {name: np.asarray(values) for name, values in samples.items()}


def median_ratios(times: dict[str, np.ndarray], anchor: str) -> dict[str, float]:
    """Median over rounds of (candidate time / anchor time in the same round)."""
    return {name: float(np.median(values / times[anchor])) for name, values in times.items()}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def run_script_in_fresh_process(script: str, args: Sequence[str], env: dict | None = None) -> dict:
    """Runs ``python script args`` in a new process; returns the JSON of its last ``RESULT`` line.

    Used wherever a figure needs a process of its own (peak memory, a different Keras flavour).
    """
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    result = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def emit_result(payload: dict) -> None:
    """The worker side of :func:`run_script_in_fresh_process`."""
    print("RESULT " + json.dumps(payload), flush=True)


RESULTS_FILE = pathlib.Path(__file__).with_name("RESULTS.md")


def update_results_section(section: str, text: str) -> None:
    """Replaces the text between ``<!-- section: NAME -->`` and ``<!-- end: NAME -->`` in RESULTS.md."""
    begin, end = f"<!-- section: {section} -->", f"<!-- end: {section} -->"
    content = RESULTS_FILE.read_text()
    if begin not in content or end not in content:
        raise ValueError(f"RESULTS.md has no section {section!r}")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    RESULTS_FILE.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")


def recorded_flags(argv: Sequence[str]) -> list[str]:
    """A run's flags as RESULTS.md records them: without ``--write``, and with the ``--data`` path
    (``--data X`` or ``--data=X``) shown as ``PATH``, so no path of the machine is recorded."""
    flags, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument == "--write":
            continue
        elif argument == "--data":
            flags += ["--data", "PATH"]
            skip = True
        elif argument.startswith("--data="):
            flags += ["--data", "PATH"]
        else:
            flags.append(argument)
    return flags


def data_path_or_exit(parser, given):
    """``--data`` if given, else the shared ml-latest-small beside the repository; exits with a
    usage error naming the problem when neither exists."""
    from tfsmooth.data import default_data_path

    path = given or default_data_path()
    if path is None:
        parser.error("no --data given and ../shared/data/ml-latest-small does not exist")
    return path

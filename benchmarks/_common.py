"""The harness every benchmark script shares: one home for each job they have in common.

- Workers in fresh processes: :func:`run_script_in_fresh_process` starts ``python script args``
  and reads the JSON its worker side printed with :func:`emit_result` (a figure that needs a
  process of its own: peak memory, the other Keras flavour).
- Memory: :func:`status_kb` (resident set, its peak, huge pages), :func:`reset_peak_rss`,
  :func:`release_free_memory`.
- Timing: :func:`interleaved_times` (candidates interleaved in rounds) and :func:`median_ratios`
  (medians of the per-round ratios to an anchor).
- Raw results: :func:`save_raw` / :func:`load_raw` (JSON), :func:`measured_or_rendered` (measure
  and save, or load for ``--render``), and :func:`output_path`, which keeps committed raw results
  and figures unchanged unless a run is given ``--write``.
- The record: :func:`command_line` (the command RESULTS.md shows, from :func:`recorded_flags`),
  :func:`markdown_table`, :func:`machine_summary`, and one marker writer,
  :func:`replace_marked`, behind :func:`update_results_section` and :func:`update_marked_file`.
- Data: :func:`data_path_or_exit` (``--data`` or the shared ml-latest-small).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
FIGURES = HERE / "figures"
RESULTS_FILE = HERE / "RESULTS.md"

# ------------------------------------------------------------------------------------------------
# Workers in fresh processes.


def run_script_in_fresh_process(script: str, args: Sequence[str], env: dict | None = None) -> dict:
    """Runs ``python script args`` in a new process; returns the JSON of its last ``RESULT`` line.

    Used wherever a figure needs a process of its own (peak memory, a different Keras flavour).
    """
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    result = subprocess.run(
        [sys.executable, str(script), *args],
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


# ------------------------------------------------------------------------------------------------
# Memory of this process (Linux): resident set, its peak, and resetting the peak.


def status_kb(field: str, source: str = "status") -> int:
    """A field of /proc/self/``source`` in kB (``status``: VmRSS, resident now; VmHWM, peak since
    reset. ``smaps_rollup``: AnonHugePages, memory in transparent huge pages)."""
    with open(f"/proc/self/{source}") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/{source} has no {field}")


def reset_peak_rss() -> bool:
    """Resets VmHWM to the current resident set (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def release_free_memory() -> None:
    """Returns freed heap pages to the system (glibc ``malloc_trim``), so RSS counts live memory."""
    # Not glibc: nothing to do (the resident set then keeps freed pages).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ------------------------------------------------------------------------------------------------
# Timing.


def interleaved_times(
    candidates: dict[str, Callable[[], object]],
    *,
    rounds: int,
    repeats: int | dict[str, int],
    warmup: int = 2,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Seconds per call of each candidate, ``rounds`` samples each, candidates interleaved.

    Each round runs every candidate ``repeats`` times back to back (a number, or one per
    candidate: more for fast ones), in a fresh random order, so slow phases of a noisy machine hit
    all candidates alike. Ratios should be taken per round.
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
            count = repeats[name] if isinstance(repeats, dict) else repeats
            start = time.perf_counter()
            for _ in range(count):
                fn()
            samples[name].append((time.perf_counter() - start) / count)
    return {name: np.asarray(values) for name, values in samples.items()}


def median_ratios(times: dict[str, np.ndarray], anchor: str) -> dict[str, float]:
    """Median over rounds of (candidate time / anchor time in the same round)."""
    return {name: float(np.median(values / times[anchor])) for name, values in times.items()}


# ------------------------------------------------------------------------------------------------
# Raw results and where a run's files go.


def output_path(name: str, write: bool, out: str | os.PathLike | None = None) -> pathlib.Path:
    """Where a run puts its raw results or figure called ``name``.

    ``out`` (a path the user gave) wins; else committed files (``benchmarks/figures/NAME``) change
    only with ``write`` (``--write``), and other runs put theirs in the temporary directory.
    """
    if out is not None:
        path = pathlib.Path(out)
    elif write:
        path = FIGURES / name
    else:
        path = pathlib.Path(tempfile.gettempdir()) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_raw(path: str | os.PathLike, payload: dict) -> None:
    """Writes a run's raw results (JSON) for a later ``--render``."""
    pathlib.Path(path).write_text(json.dumps(payload, indent=1))


def load_raw(path: str | os.PathLike) -> dict:
    """Reads raw results written by :func:`save_raw`."""
    return json.loads(pathlib.Path(path).read_text())


def measured_or_rendered(
    measure: Callable[[], dict],
    *,
    render: str | None,
    name: str,
    write: bool,
    out: str | None = None,
) -> dict:
    """A run's raw results: with ``--render JSON``, those of the run that wrote that file;
    otherwise ``measure()``'s, saved first (where :func:`output_path` says) for a later render."""
    if render:
        return load_raw(render)
    raw = measure()
    path = output_path(name, write, out)
    save_raw(path, raw)
    print(f"raw results: {path}", flush=True)
    return raw


# ------------------------------------------------------------------------------------------------
# The record: command lines, tables, RESULTS.md sections.


def machine_summary() -> str:
    import tensorflow as tf

    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}"
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


#: Flags whose value is a path of the machine: recorded as ``PATH``.
PATH_FLAGS = ("--data", "--merge", "--render", "--out")


def recorded_flags(argv: Sequence[str]) -> list[str]:
    """A run's flags as RESULTS.md records them: without ``--write``, and with the value of each
    path flag (``--data X`` or ``--data=X``; also ``--merge``, ``--render``, ``--out``) shown as
    ``PATH``, so no path of the machine is recorded."""
    flags, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument == "--write":
            continue
        elif argument in PATH_FLAGS:
            flags += [argument, "PATH"]
            skip = True
        elif argument.split("=", 1)[0] in PATH_FLAGS:
            flags += [argument.split("=", 1)[0], "PATH"]
        else:
            flags.append(argument)
    return flags


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """``python benchmarks/SCRIPT FLAGS``: the command that reproduces a run (``argv``: its flags,
    default ``sys.argv[1:]``), as :func:`recorded_flags` records them."""
    flags = recorded_flags(sys.argv[1:] if argv is None else argv)
    return " ".join([f"python benchmarks/{pathlib.Path(script).name}", *flags])


def replace_marked(text: str, begin: str, end: str, block: str, *, append: bool = False) -> str:
    """``text`` with what stands between the markers ``begin`` and ``end`` replaced by ``block``.

    Raises ValueError when the markers are missing, unless ``append``: then the marked block is
    added at the end of ``text``.
    """
    new = f"{begin}\n{block.strip()}\n{end}"
    if begin in text and end in text:
        pattern = re.escape(begin) + ".*?" + re.escape(end)
        return re.sub(pattern, lambda _: new, text, count=1, flags=re.S)
    if append:
        return f"{text.rstrip()}\n\n{new}"
    raise ValueError(f"no {begin} ... {end} markers")


def update_marked_file(path: str | os.PathLike, begin: str, end: str, block: str) -> None:
    """Rewrites the marked block of a file (see :func:`replace_marked`)."""
    path = pathlib.Path(path)
    path.write_text(replace_marked(path.read_text(), begin, end, block))


def section_markers(section: str) -> tuple[str, str]:
    """RESULTS.md's markers around the generated section ``section``."""
    return f"<!-- section: {section} -->", f"<!-- end: {section} -->"


def results_section(section: str) -> str:
    """The generated text of a section of RESULTS.md as it stands."""
    begin, end = section_markers(section)
    content = RESULTS_FILE.read_text()
    if begin not in content or end not in content:
        raise ValueError(f"RESULTS.md has no section {section!r}")
    return content.split(begin, 1)[1].split(end, 1)[0].strip()


def update_results_section(section: str, text: str) -> None:
    """Replaces the text between ``<!-- section: NAME -->`` and ``<!-- end: NAME -->`` in RESULTS.md.

    Hand-written notes go outside the markers: a ``--write`` replaces everything between them.
    """
    update_marked_file(RESULTS_FILE, *section_markers(section), text)


# ------------------------------------------------------------------------------------------------
# Data.


def data_path_or_exit(parser, given):
    """``--data`` if given, else the shared ml-latest-small beside the repository; exits with a
    usage error naming the problem when neither exists."""
    from tfsmooth.data import default_data_path

    path = given or default_data_path()
    if path is None:
        parser.error("no --data given and ../shared/data/ml-latest-small does not exist")
    return path

"""Runs the whole test suite under both Keras flavours: Keras 3 and tf-keras.

TensorFlow picks its Keras once per process (``TF_USE_LEGACY_KERAS``), so each flavour gets its own
pytest process. The two run side by side (most of a TensorFlow test's time is single-threaded
tracing, so this nearly halves the wall time on two cores); each flavour's output is printed whole
when it finishes. ``--sequential`` runs them one after the other instead. Other arguments go to
pytest, e.g. ``python tests/run_both_keras.py -k smelu -x``.

Exits non-zero if either run fails; the last line sums up both runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time

FLAVOURS = (("Keras 3", "0"), ("tf-keras (TF_USE_LEGACY_KERAS=1)", "1"))
COUNTED = ("passed", "failed", "skipped", "errors", "error")


def start(legacy: str, args: list[str], log) -> subprocess.Popen:
    env = dict(os.environ, TF_USE_LEGACY_KERAS=legacy)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def report(label: str, log, code: int, seconds: float) -> dict[str, int]:
    log.seek(0)
    text = log.read()
    print(f"\n======== {label} ========", flush=True)
    sys.stdout.write(text)
    print(f"[{label}: exit {code} after {seconds:.0f} s]", flush=True)
    last = next((line for line in reversed(text.splitlines()) if line.strip()), "")
    return {name: int(n) for n, name in re.findall(r"(\d+) (\w+)", last) if name in COUNTED}


def main() -> int:
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = sys.argv[1:]
    sequential = "--sequential" in args
    args = [a for a in args if a != "--sequential"] or ["tests"]

    began = time.time()
    stack = contextlib.ExitStack()
    logs = [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in FLAVOURS]  # noqa: SIM115
    pending = {}
    totals = dict.fromkeys(("passed", "failed", "skipped"), 0)
    worst = 0

    def finish(index: int, process: subprocess.Popen) -> None:
        nonlocal worst
        label = FLAVOURS[index][0]
        code = process.wait()
        counts = report(label, logs[index], code, time.time() - began)
        totals["passed"] += counts.get("passed", 0)
        totals["failed"] += sum(counts.get(k, 0) for k in ("failed", "errors", "error"))
        totals["skipped"] += counts.get("skipped", 0)
        worst = worst or code

    for index, (_, legacy) in enumerate(FLAVOURS):
        process = start(legacy, args, logs[index])
        if sequential:
            finish(index, process)
        else:
            pending[index] = process
    while pending:
        for index, process in list(pending.items()):
            if process.poll() is not None:
                finish(index, pending.pop(index))
        time.sleep(0.5)

    stack.close()
    print(f"[both flavours in {time.time() - began:.0f} s]")
    print(
        f"both: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped"
    )
    return worst


if __name__ == "__main__":
    sys.exit(main())

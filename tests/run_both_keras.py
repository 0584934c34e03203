"""Runs the whole test suite under both Keras flavours: Keras 3, then tf-keras.

TensorFlow picks its Keras once per process (``TF_USE_LEGACY_KERAS``), so each flavour gets its own
pytest process. Extra arguments go to pytest, e.g. ``python tests/run_both_keras.py -k smelu -x``.
Exits non-zero if either run fails; the last line sums up both runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

FLAVOURS = (("Keras 3", "0"), ("tf-keras (TF_USE_LEGACY_KERAS=1)", "1"))
COUNTS = ("passed", "failed", "skipped", "errors", "error")


def run(label: str, legacy: str, args: list[str]) -> tuple[int, dict[str, int]]:
    print(f"\n======== {label} ========", flush=True)
    env = dict(os.environ, TF_USE_LEGACY_KERAS=legacy)
    start = time.time()
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last = ""
    for line in process.stdout:
        sys.stdout.write(line)
        if line.strip():
            last = line
    code = process.wait()
    counts = {name: int(n) for n, name in re.findall(r"(\d+) (\w+)", last) if name in COUNTS}
    print(f"[{label}: exit {code} after {time.time() - start:.0f} s]", flush=True)
    return code, counts


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(root)
    args = sys.argv[1:] or ["tests"]
    totals = dict.fromkeys(("passed", "failed", "skipped"), 0)
    worst = 0
    for label, legacy in FLAVOURS:
        code, counts = run(label, legacy, args)
        totals["passed"] += counts.get("passed", 0)
        totals["failed"] += (
            counts.get("failed", 0) + counts.get("errors", 0) + counts.get("error", 0)
        )
        totals["skipped"] += counts.get("skipped", 0)
        worst = worst or code
    print(
        f"both: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped"
    )
    return worst


if __name__ == "__main__":
    sys.exit(main())

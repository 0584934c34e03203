"""Multi-worker training with SmeLU, Scalable Cross-Entropy and ClippyAdagrad: two worker processes
on loopback end with identical weights, equal to a single-process run that averages the same replica
batches (no tf.distribute involved)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from helpers import free_ports

JOB = pathlib.Path(__file__).with_name("multi_worker_job.py")


def _environment(**extra: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=600)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and lines, err[-4000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.slow
def test_two_workers_on_loopback_match_each_other_and_a_single_process_run():
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = [
        subprocess.Popen(
            [sys.executable, str(JOB), "worker"],
            env=_environment(
                TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    single = subprocess.Popen(
        [sys.executable, str(JOB), "single"],
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = [_result(p) for p in workers]
    reference = _result(single)
    first, second = (r["weights"] for r in results)
    assert sorted(r["task"] for r in results) == [0, 1]
    assert first.keys() == second.keys() == reference["weights"].keys()
    moved = {
        name: np.max(np.abs(np.subtract(first[name], reference["initial"][name]))) for name in first
    }
    assert all(value > 1e-4 for value in moved.values()), moved  # every weight trained
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
        np.testing.assert_allclose(
            first[name], reference["weights"][name], rtol=1e-5, atol=1e-6, err_msg=name
        )

"""ParameterServerStrategy on loopback: a two-tower model with its item table sharded over two
parameter servers (SCE + ClippyAdagrad, a custom loop through a ClusterCoordinator; under tf-keras
also ``fit``) ends with the weights of a single-process run of the same steps on plain variables.

Three processes (tests/ps_job.py): the servers (ps0, ps1, worker0 in one process), the chief (the
coordinator) and the single-process reference, run in parallel with the cluster. The test kills
every process it started, whatever happens.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import select
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import free_ports

JOB = pathlib.Path(__file__).with_name("ps_job.py")
TIMEOUT = 120  # seconds, for the whole test


def _environment(**extra: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _start(args: list[str], log: pathlib.Path, **env: str) -> subprocess.Popen:
    """``ps_job.py args`` with stdout piped and stderr to ``log`` (a pipe nobody reads could fill
    up and block a server)."""
    with open(log, "w") as stderr:
        return subprocess.Popen(
            [sys.executable, str(JOB), *args],
            env=_environment(**env),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


def _wait_ready(process: subprocess.Popen, log: pathlib.Path, deadline: float) -> None:
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the servers did not start in time:\n" + log.read_text()[-4000:]
        readable, _, _ = select.select([process.stdout], [], [], remaining)
        if readable:
            line = process.stdout.readline()
            assert line, "the servers exited:\n" + log.read_text()[-4000:]
            if line.strip() == "READY":
                return


def _result(process: subprocess.Popen, log: pathlib.Path, deadline: float) -> dict:
    try:
        out, _ = process.communicate(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{process.args[2]} did not finish in time:\n" + log.read_text()[-4000:])
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and lines, log.read_text()[-4000:]
    return json.loads(lines[-1][len("RESULT ") :])


def _ps_task(device: str) -> int | None:
    match = re.search(r"/job:ps/replica:0/task:(\d+)/device:CPU:0$", device)
    return int(match.group(1)) if match else None


@pytest.mark.slow
def test_sharded_table_on_two_parameter_servers_matches_a_single_process_run(tmp_path):
    deadline = time.monotonic() + TIMEOUT
    chief, worker, ps0, ps1 = (f"127.0.0.1:{port}" for port in free_ports(4))
    cluster = {"chief": [chief], "worker": [worker], "ps": [ps0, ps1]}
    processes = []
    try:
        servers_log = tmp_path / "servers.log"
        servers = _start(
            ["servers", "--cluster", json.dumps(cluster), "--tasks", "ps:0", "ps:1", "worker:0"],
            servers_log,
        )
        processes.append(servers)
        single_log = tmp_path / "single.log"
        single = _start(["single"], single_log)
        processes.append(single)
        _wait_ready(servers, servers_log, deadline)
        chief_log = tmp_path / "chief.log"
        task = {"cluster": cluster, "task": {"type": "chief", "index": 0}}
        coordinator = _start(["chief"], chief_log, TF_CONFIG=json.dumps(task))
        processes.append(coordinator)
        result = _result(coordinator, chief_log, deadline)
        reference = _result(single, single_log, deadline)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()

    # The item table is a ShardedVariable of 3 "div" shards (101/100/100 rows) over both PS tasks.
    assert result["shard_rows"] == [101, 100, 100]
    tasks = [_ps_task(device) for device in result["shard_devices"]]
    assert None not in tasks and set(tasks) == {0, 1}, result["shard_devices"]
    # Each shard's selection (an XLA function) is placed on the shard's parameter server.
    xla_tasks = [_ps_task(device) for device in result["xla_call_devices"]]
    assert sorted(t for t in xla_tasks if t is not None) == sorted(tasks), xla_tasks

    assert np.all(np.isfinite(result["losses"]))
    np.testing.assert_allclose(result["losses"], reference["losses"], rtol=1e-5, atol=1e-6)
    weights = result["weights"]
    assert weights.keys() == reference["weights"].keys()
    for name in weights:
        moved = np.max(np.abs(np.subtract(reference["weights"][name], reference["initial"][name])))
        assert moved > 1e-4, name  # every weight trained
        np.testing.assert_allclose(
            weights[name], reference["weights"][name], rtol=1e-5, atol=1e-6, err_msg=name
        )
    if "fit_weights" in reference:  # tf-keras: fit through the model's ClusterCoordinator
        assert "fit_weights" in result
        np.testing.assert_allclose(result["fit_losses"], reference["fit_losses"], rtol=1e-5)
        for name in weights:
            np.testing.assert_allclose(
                result["fit_weights"][name],
                reference["fit_weights"][name],
                rtol=1e-5,
                atol=1e-6,
                err_msg=f"fit {name}",
            )

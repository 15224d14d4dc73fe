"""Data- and particle-parallel runs equal single-device ones (``ppl.parallel``).

Each test runs ``tests/_parallel_worker.py`` in fresh subprocesses: the number of
(forced) host devices and ``jax.distributed`` must be set before JAX starts, so they
cannot share this process. The workers draw with the same keys as the single-device
runs, so the results must agree to float32 round-off (the order of the sums differs),
not merely in distribution.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax
import pytest

import ppl
from ppl import parallel

WORKER = Path(__file__).with_name("_parallel_worker.py")
ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 2e-4  # float32 round-off of sums over differently split axes; values are ~1e2


def _env(num_devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    # keep the run's other flags (conftest.py's compile setting)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={num_devices}".strip()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    for name in ("PPL_COORDINATOR_ADDRESS", "PPL_NUM_PROCESSES", "PPL_PROCESS_ID"):
        env.pop(name, None)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check(diffs: dict[str, float]) -> None:
    bad = {name: diff for name, diff in diffs.items() if not diff <= TOLERANCE}
    assert not bad, f"sharded results differ from single-device ones: {bad}"


def test_sharded_equals_single_device(tmp_path):
    out = tmp_path / "equality.json"
    run = subprocess.run(
        [sys.executable, str(WORKER), "equality", str(out)],
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(out.read_text())
    _check(report["diff"])
    assert len(report["diff"]) == 4 + 2 + 2
    assert "multiple of the 4 devices" in report["batch_size_error"]
    # the compiled programs really are split: each device computes the decoder's
    # logits of its share, (examples, particles) = (8, 8) / the mesh axes
    expected = {"data": [["2", "8"]], "particles": [["8", "2"]], "data x particles": [["4", "4"]]}
    for name, shapes in report["sharded_shapes"].items():
        mesh_name = name.split(" / ")[1]
        assert shapes == expected[mesh_name], (name, shapes)


def test_two_processes_equal_one(tmp_path):
    port = _free_port()
    outs = [tmp_path / f"process{i}.json" for i in range(2)]
    # process 0 gets the coordinator as arguments, process 1 from the environment
    env = _env(2)
    env_1 = {
        **env,
        "PPL_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "PPL_NUM_PROCESSES": "2",
        "PPL_PROCESS_ID": "1",
    }
    commands = [
        (["distributed", str(outs[0]), str(port), "0"], env),
        (["distributed", str(outs[1]), "env", "-"], env_1),
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *arguments],
            env=process_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for arguments, process_env in commands
    ]
    try:
        results = [proc.communicate(timeout=240) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, stderr) in zip(procs, results, strict=True):
        assert proc.returncode == 0, stderr[-4000:]
    reports = [json.loads(out.read_text()) for out in outs]
    assert [r["process_index"] for r in reports] == [0, 1]
    for report in reports:
        _check(report["diff"])
    assert reports[0]["params"] == reports[1]["params"]  # one global, replicated result


def test_compare_and_fit_take_a_mesh():
    """The plumbing on this process's devices (sharding itself is checked above)."""

    @ppl.expectation
    def objective(params):
        z = ppl.sample(dist.Normal(params["loc"], 1.0), ppl.reparam)
        return -((z - 1.0) ** 2)

    params = {"loc": jnp.asarray(0.3)}
    key = jax.random.key(0)
    options = dict(num_samples=8, timing_calls=2, progress=False)
    alone = ppl.compare(None, {"reparam": objective}, key, params, **options)
    spread = ppl.compare(None, {"reparam": objective}, key, params, mesh=parallel.mesh(), **options)
    mine, theirs = alone.results["reparam"], spread.results["reparam"]
    assert abs(mine.value_mean - theirs.value_mean) < 1e-6
    assert abs(mine.total_variance - theirs.total_variance) < 1e-5
    fit = dict(optimizer=optax.sgd(0.1), num_steps=3, progress=False)
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        ppl.fit(key, objective, params, mesh="data", **fit)


def test_mesh_shapes_and_errors():
    mesh = parallel.mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
    assert parallel.mesh({"data": -1, "particles": 1}).shape == {
        "data": jax.device_count(),
        "particles": 1,
    }
    with pytest.raises(ValueError, match="multiply"):
        parallel.mesh({"data": jax.device_count() + 1})
    with pytest.raises(ValueError, match="at most one"):
        parallel.mesh({"data": -1, "particles": -1})
    with pytest.raises(ValueError, match="microbatch_size"):
        parallel.batch_mean(lambda key, params, x: x, microbatch_size=0)

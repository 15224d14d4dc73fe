"""The GenJAX side of ``benchmarks/continuations.py`` (run in GenJAX's own Python).

GenJAX 1.0 needs Python >= 3.12 and its own JAX, so ``continuations.py`` starts this
script with that environment's interpreter and talks to it over pipes: one JSON request
per line on stdin, one JSON answer per line on stdout (anything else the libraries print
goes to stderr). Nothing in ``ppl`` or ``tests`` imports it.

The program is the one of ``continuations.py``'s GenJAX section, written with GenJAX's
ADEV (``genjax.adev``): ``B`` lanes under ``modular_vmap``, lane ``b`` draws
``x_b ~ Bernoulli(sigmoid(theta[0] + theta[1] u_b))`` with ``flip_enum`` or
``flip_mvd`` and costs ``-(x_b - y_b)^2``; the objective is the ``logsumexp`` over the
lanes, and the timed function is ``seed(objective.grad_estimate)(key, theta)`` under
``jax.jit``.

Requests (``op`` and its fields): ``info``; ``compile`` (``strategy``, ``u``, ``y``,
``theta``): compile and call once; ``time`` (``strategy``, ``lanes``, ``seed``,
``calls``): milliseconds per call; ``draws`` (``strategy``, ``lanes``, ``seed``,
``draws``): gradients at the keys ``split(key(seed), draws)``; ``quit``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import traceback
from importlib.metadata import version
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _jax_timing import call_keys, compile_stages, configure_dispatch, time_calls  # noqa: E402


def lane_gradient(strategy: str, u: jax.Array, y: jax.Array):
    """``(key, theta) -> d/dtheta`` of the lanes' logsumexp, estimated by GenJAX."""
    from genjax.adev import expectation, flip_enum, flip_mvd
    from genjax.pjax import modular_vmap, seed

    flip = {"enum": flip_enum, "mvd": flip_mvd}[strategy]

    @expectation
    def objective(theta):
        def lane(u_b, y_b):
            x = flip(jax.nn.sigmoid(theta[0] + theta[1] * u_b))
            return -((x.astype(theta.dtype) - y_b) ** 2)

        return logsumexp(modular_vmap(lane)(u, y))

    def gradient(key, theta):
        return seed(objective.grad_estimate)(key, theta)

    return gradient


def serve(requests, answer) -> None:
    """Answer each request of ``requests`` (dicts) with ``answer(dict)`` until ``quit``."""
    compiled, thetas = {}, {}
    for request in requests:
        if request["op"] == "quit":
            return
        try:
            answer(handle(request, compiled, thetas))
        except Exception:  # noqa: BLE001  (the benchmark prints it and stops)
            answer({"error": traceback.format_exc()})


def handle(request: dict, compiled: dict, thetas: dict) -> dict:
    """The answer to one request; ``compiled`` and ``thetas`` keep the compiled gradients."""
    op = request["op"]
    if op == "info":
        return {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "genjax": version("genjax"),
            "backend": jax.default_backend(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "async_dispatch": configure_dispatch(),
            "cpus": len(os.sched_getaffinity(0)),
        }
    if op == "compile":
        u, y = jnp.asarray(request["u"], jnp.float32), jnp.asarray(request["y"], jnp.float32)
        theta = jnp.asarray(request["theta"], jnp.float32)
        where = (request["strategy"], int(u.shape[0]))
        fn = lane_gradient(request["strategy"], u, y)
        compiled[where], info = compile_stages(fn, (jax.random.key(0), theta))
        thetas[where] = theta
        jax.block_until_ready(compiled[where](jax.random.key(0), theta))  # warm-up call
        return info
    where = (request["strategy"], request["lanes"])
    if op == "time":
        keys = call_keys(request["seed"], request["calls"])
        return {"times_ms": time_calls(compiled[where], keys, thetas[where])}
    if op == "draws":
        keys = jax.random.split(jax.random.key(request["seed"]), request["draws"])
        grads = [np.asarray(compiled[where](key, thetas[where])) for key in keys]
        return {"gradients": np.stack(grads).tolist()}
    raise ValueError(f"unknown request {op!r}")


def main() -> None:
    configure_dispatch()  # before the first computation, like continuations.py
    channel = sys.stdout
    sys.stdout = sys.stderr  # the libraries' prints must not mix with the answers

    def answer(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    serve((json.loads(line) for line in sys.stdin if line.strip()), answer)


if __name__ == "__main__":
    main()

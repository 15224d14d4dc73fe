"""Subprocess side of ``tests/test_parallel.py`` (run as a script, not collected).

``python tests/_parallel_worker.py equality OUT.json`` (with four forced host devices)
compares data-, particle- and mixed-parallel runs with single-device ones.

``python tests/_parallel_worker.py distributed OUT.json PORT PROCESS_ID`` is one of two
processes of a ``jax.distributed`` run on localhost (gloo collectives), two devices
each (with ``PORT`` ``env``, it reads the ``PPL_*`` environment variables instead). It
trains data-parallel and compares with a one-device run of the same steps.

Each writes a JSON of named maximum differences (and facts about the compiled
program) that the test checks.
"""

from __future__ import annotations

import json
import math
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax

DATA_DIM, HIDDEN_DIM, LATENT_DIM = 37, 16, 3  # 37: a width no other array has
SHAPES = {
    "enc_w1": (DATA_DIM, HIDDEN_DIM),
    "enc_w2": (HIDDEN_DIM, 2 * LATENT_DIM),
    "dec_w1": (LATENT_DIM, HIDDEN_DIM),
    "dec_w2": (HIDDEN_DIM, DATA_DIM),
}


def init_params(key):
    params = {}
    for k, (name, shape) in zip(jax.random.split(key, len(SHAPES)), SHAPES.items(), strict=True):
        params[name] = jax.random.normal(k, shape) / math.sqrt(shape[0])
        params[name.replace("_w", "_b")] = jnp.zeros(shape[1])
    return params


def _param(name):
    shape = SHAPES.get(name) or (SHAPES[name.replace("_b", "_w")][1],)
    return numpyro.param(name, jnp.zeros(shape))


def guide(x):
    h = jnp.tanh(x @ _param("enc_w1") + _param("enc_b1"))
    out = h @ _param("enc_w2") + _param("enc_b2")
    loc, scale = out[..., :LATENT_DIM], jax.nn.softplus(out[..., LATENT_DIM:]) + 1e-3
    numpyro.sample("z", dist.Normal(loc, scale).to_event(1))


def model(x):
    z = numpyro.sample("z", dist.Normal(jnp.zeros(LATENT_DIM), 1.0).to_event(1))
    logits = jnp.tanh(z @ _param("dec_w1") + _param("dec_b1")) @ _param("dec_w2")
    numpyro.sample("x", dist.Bernoulli(logits=logits + _param("dec_b2")).to_event(1), obs=x)


def data(num):
    return jax.random.bernoulli(jax.random.key(1), 0.3, (num, DATA_DIM)).astype(jnp.float32)


def max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def equality(out_path):
    import ppl
    from ppl import parallel

    assert jax.device_count() == 4, jax.devices()
    batch_size, num_particles = 8, 8
    params = init_params(jax.random.key(0))
    x = data(batch_size)
    key = jax.random.key(3)
    iwae = ppl.objectives.iwae(model, guide, num_particles=num_particles)

    def family(x):  # a hierarchical guide for diwhvi: z | u, x with u ~ N(0, I)
        u = numpyro.sample("u", dist.Normal(jnp.zeros(LATENT_DIM), 1.0).to_event(1))
        h = jnp.tanh(x @ _param("enc_w1") + _param("enc_b1"))
        out = h @ _param("enc_w2") + _param("enc_b2")
        scale = jax.nn.softplus(out[..., LATENT_DIM:]) + 1e-3
        numpyro.sample("z", dist.Normal(out[..., :LATENT_DIM] + u, scale).to_event(1))

    objectives = {
        "vimco": ppl.objectives.vimco(model, guide, num_particles=num_particles),
        "diwhvi": ppl.objectives.diwhvi(
            model, family, ["z"], num_particles=num_particles, inner_particles=3
        ),
    }
    meshes = {
        "data": parallel.mesh("data"),
        "particles": parallel.mesh("particles"),
        "data x particles": parallel.mesh({"data": 2, "particles": 2}),
    }
    report = {"diff": {}, "values": {}, "sharded_shapes": {}}

    def gradient(objective, microbatch_size=None):
        minibatch = parallel.batch_mean(objective, microbatch_size=microbatch_size)
        return jax.jit(jax.value_and_grad(lambda p, k, b: minibatch(k, p, b)))

    def sharded(step, mesh_name):
        mesh = meshes[mesh_name]
        with jax.set_mesh(mesh):
            args = (parallel.replicate(mesh, params), key, parallel.shard_batch(mesh, x))
            compiled = step.lower(*args).compile()
        # the decoder's logits, (examples, particles, DATA_DIM) on each device
        shapes = sorted(set(re.findall(rf"f32\[(\d+),(\d+),{DATA_DIM}\]", compiled.as_text())))
        return compiled(*args), shapes

    single = gradient(iwae)(params, key, x)
    report["values"]["iwae"] = float(single[0])
    for mesh_name in meshes:
        result, shapes = sharded(gradient(iwae), mesh_name)
        report["diff"][f"iwae / {mesh_name}"] = max_diff(single, result)
        report["sharded_shapes"][f"iwae / {mesh_name}"] = shapes
    result, _ = sharded(gradient(iwae, microbatch_size=4), "data")
    report["diff"]["iwae / data, microbatches of 4"] = max_diff(single, result)
    for name, objective in objectives.items():
        step = gradient(objective)
        single = step(params, key, x)
        report["values"][name] = float(single[0])
        result, shapes = sharded(step, "data x particles")
        report["diff"][f"{name} / data x particles"] = max_diff(single, result)
        report["sharded_shapes"][f"{name} / data x particles"] = shapes

    # ppl.fit: a few data- and particle-parallel steps against one device
    minibatch = parallel.batch_mean(iwae)
    dataset = data(32)
    options = dict(optimizer=optax.adam(1e-2), num_steps=6, chunk_size=3, progress=False)
    reference = ppl.fit(key, minibatch, params, data=dataset, batch_size=8, **options)
    for mesh_name in ("data x particles",):
        mesh = meshes[mesh_name]
        result = ppl.fit(key, minibatch, params, data=dataset, batch_size=8, mesh=mesh, **options)
        report["diff"][f"fit / {mesh_name}"] = max_diff(reference.params, result.params)
        report["diff"][f"fit history / {mesh_name}"] = max_diff(reference.history, result.history)
    try:  # 6 rows cannot be split over the 4 devices of the "data" axis
        ppl.fit(key, minibatch, params, data=dataset, batch_size=6, mesh=meshes["data"], **options)
        report["batch_size_error"] = "none"
    except ValueError as err:
        report["batch_size_error"] = str(err)
    with open(out_path, "w") as f:
        json.dump(report, f)


def distributed(out_path, port, process_id):
    from ppl import parallel

    if port == "env":  # PPL_COORDINATOR_ADDRESS, PPL_NUM_PROCESSES, PPL_PROCESS_ID
        parallel.initialize(initialization_timeout=60)
    else:
        parallel.initialize(f"127.0.0.1:{port}", 2, int(process_id), initialization_timeout=60)
    process_id = jax.process_index()
    import ppl

    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    params = init_params(jax.random.key(0))
    objective = parallel.batch_mean(ppl.objectives.iwae(model, guide, num_particles=4))
    dataset = np.asarray(data(32))
    key = jax.random.key(5)
    options = dict(optimizer=optax.adam(1e-2), num_steps=4, chunk_size=2, progress=False)
    mesh = parallel.mesh({"data": 2, "particles": 2})
    report = {"process_index": jax.process_index(), "diff": {}}

    # one device, no mesh: the reference
    reference = ppl.fit(key, objective, params, data=dataset, batch_size=8, **options)
    # array data: every process holds the data set; each device evaluates its rows
    result = ppl.fit(key, objective, params, data=dataset, batch_size=8, mesh=mesh, **options)
    report["diff"]["array data"] = max_diff(reference.params, result.params)
    report["diff"]["array data, history"] = max_diff(reference.history, result.history)

    # an iterator: each process feeds its own half of every batch
    batches = [dataset[8 * i : 8 * (i + 1)] for i in range(4)]
    reference = ppl.fit(key, objective, params, data=iter(batches), **options)
    mine = [b[4 * process_id : 4 * (process_id + 1)] for b in batches]
    result = ppl.fit(key, objective, params, data=iter(mine), mesh=mesh, **options)
    report["diff"]["process-local batches"] = max_diff(reference.params, result.params)
    report["params"] = {k: np.asarray(v).ravel()[:5].tolist() for k, v in result.params.items()}
    with open(out_path, "w") as f:
        json.dump(report, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "equality":
        equality(sys.argv[2])
    elif sys.argv[1] == "distributed":
        distributed(*sys.argv[2:5])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")

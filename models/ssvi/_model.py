"""The BNN as NumPyro programs, the sparse-subspace guide and the tempered ELBO.

The model (Li et al., ICLR 2024, §3) is ``θ_i ~ N(0, σ_p²)``, ``y_n ~ Cat(softmax(f_θ(x_n)))``.
The guide is the sparse-subspace mean field ``q_{φ,γ}(θ) = Π_{i∈γ} N(µ_i, σ_i²) ·
Π_{i∉γ} δ_0(θ_i)``: written here with the weight site masked outside ``γ`` (its value is
multiplied by the mask and its log density counted on ``γ`` only), which is the same
ELBO. Training uses the local reparameterization trick (Kingma et al., 2015): the
pre-activations ``a = h W + b`` of every layer are Gaussian under ``q``,
``a ~ N(h µ + b, h² σ² + 1e-8)`` with ``µ, σ²`` zero outside ``γ``, and
`lrt_network` samples them as reparameterized NumPyro sites, layer by layer. The
objective is the reference code's per-example tempered ELBO

``L = (1/B) Σ_b log p(y_b | x_b, θ) - λ_t (κ / N) Σ_{i∈γ} KL(N(µ_i, σ_i²) ‖ N(0, σ_p²))``

with ``λ_t`` the KL warm-up and ``κ`` the tempering; ppl's transformation turns it
into the unbiased gradient estimator (every pre-activation site is ``ppl.reparam``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

import ppl
from ppl_zoo.ssvi._network import forward, linear_op

__all__ = [
    "prior",
    "model",
    "guide",
    "lrt_network",
    "likelihood",
    "gaussian_kl",
    "sparse_kl",
    "tempered_elbo",
    "weight_space_elbo",
    "subspace_weights",
]


def likelihood(logits: jax.Array, y: jax.Array | None = None) -> None:
    """``y_n ~ Categorical(softmax(logits_n))`` in a plate over the batch."""
    with numpyro.plate("data", logits.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=logits), obs=y)


def prior(arch: tuple, masks: dict, prior_std: float) -> dict:
    """``θ_l ~ N(0, σ_p²)`` on the support ``γ``; returns ``θ`` with zeros outside it.

    Entries outside the support are masked out of the density and multiplied by 0, so
    the program's density over the active weights is the paper's prior.
    """
    weights = {}
    for layer in arch:
        mask = masks[layer.name]
        site = dist.Normal(0.0, prior_std).expand(layer.shape).mask(mask)
        weights[layer.name] = numpyro.sample(layer.name, site.to_event(len(layer.shape))) * mask
    return weights


def model(arch: tuple, biases: dict, masks: dict, prior_std: float, x, y=None) -> None:
    """The BNN restricted to the support: `prior`, then `likelihood` of ``f_θ(x)``."""
    weights = prior(arch, masks, prior_std)
    likelihood(forward(arch, weights, biases, x), y)


def guide(arch: tuple, weights: dict, masks: dict) -> dict:
    """The sparse-subspace mean field over the weights; returns ``θ = mask ⊙ draw``.

    ``weights[name]`` holds ``loc`` (``µ``, zero outside the support) and ``scale``
    (``σ = softplus(ρ)``) for each layer.
    """
    theta = {}
    for layer in arch:
        mask = masks[layer.name]
        entry = weights[layer.name]
        q = dist.Normal(entry["loc"], entry["scale"]).mask(mask)
        theta[layer.name] = numpyro.sample(layer.name, q.to_event(len(layer.shape))) * mask
    return theta


def lrt_network(arch: tuple, weights: dict, masks: dict, x: jax.Array) -> jax.Array:
    """The guide pushed through the network, one pre-activation site per layer.

    ``a_l ~ N(op(h, µ_l) + b_l, op(h², σ_l² ⊙ m_l) + 1e-8)`` (reparameterized), with
    ``h`` the ReLU of the previous layer's sampled pre-activations; returns the logits
    (the last layer's pre-activations). Under ``q`` these have exactly the marginal
    distribution of ``f_θ(x)``'s pre-activations given the previous layer, one weight
    draw per example (local reparameterization).
    """
    h = x
    for index, layer in enumerate(arch):
        entry = weights[layer.name]
        variance_weights = jnp.square(entry["scale"]) * masks[layer.name]
        mean = linear_op(layer, h, entry["loc"]) + entry["bias"]
        std = jnp.sqrt(linear_op(layer, jnp.square(h), variance_weights) + 1e-8)
        event = dist.Normal(mean, std).to_event(mean.ndim - 1)
        with numpyro.plate("data", x.shape[0]):
            h = numpyro.sample(layer.name, event)
        if index < len(arch) - 1:
            h = jax.nn.relu(h)
    return h


def gaussian_kl(loc, scale, prior_std):
    """``KL(N(loc, scale²) ‖ N(0, prior_std²))`` elementwise."""
    return (
        jnp.log(prior_std / scale)
        + (jnp.square(scale) + jnp.square(loc)) / (2.0 * prior_std**2)
        - 0.5
    )


def sparse_kl(arch: tuple, weights: dict, masks: dict, prior_std: float) -> jax.Array:
    """``Σ_{i∈γ} KL(q_i ‖ p_i)``: the KL summed over the active support only."""
    total = jnp.zeros(())
    for layer in arch:
        entry = weights[layer.name]
        kl = gaussian_kl(entry["loc"], entry["scale"], prior_std)
        total = total + jnp.sum(jnp.where(masks[layer.name], kl, 0.0))
    return total


def subspace_weights(params: dict, masks: dict) -> dict:
    """``{loc: µ ⊙ m, scale: softplus(ρ), bias}`` per layer from the raw parameters.

    ``loc`` is the dense-shaped mean with zeros outside the support: the gradient of
    the objective with respect to it is the dense ``∂L/∂µ`` the addition step ranks.
    """
    return {
        name: {
            "loc": entry["loc"] * masks[name],
            "scale": jax.nn.softplus(entry["rho"]),
            "bias": entry["bias"],
        }
        for name, entry in params.items()
    }


def tempered_elbo(arch: tuple, prior_std: float) -> ppl.Expectation:
    """The per-example tempered ELBO with LRT, an expectation of
    ``(weights, masks, x, y, kl_weight)`` with ``kl_weight = λ_t κ / N``.

    ``(1/B) log p(y | logits)`` with the logits drawn by `lrt_network` (every
    pre-activation site reparameterized), minus ``kl_weight`` times the analytic KL on
    the support (`sparse_kl`), as in the reference code's loss (negated).
    """

    @ppl.expectation
    def objective(weights, masks, x, y, kl_weight):
        trace = ppl.sim(lrt_network, arch, weights, masks, x)
        log_likelihood = ppl.density(likelihood, {}, trace.retval, y) / x.shape[0]
        return log_likelihood - kl_weight * sparse_kl(arch, weights, masks, prior_std)

    return objective


def weight_space_elbo(arch: tuple, prior_std: float) -> ppl.Expectation:
    """The same tempered ELBO with one weight draw for the batch (no LRT).

    ``(1/B) [log p(y | θ) + c (log p(θ) - log q(θ))]`` with ``θ ~`` `guide` and
    ``c = kl_weight · B``: its expectation equals that of `tempered_elbo`, which the
    tests check; it is slower (a draw of every weight) and noisier.
    """

    @ppl.expectation
    def objective(weights, masks, x, y, kl_weight):
        biases = {name: entry["bias"] for name, entry in weights.items()}
        trace = ppl.sim(guide, arch, weights, masks)
        log_joint = ppl.density(model, trace.choices, arch, biases, masks, prior_std, x, y)
        log_prior = ppl.density(prior, trace.choices, arch, masks, prior_std)
        log_likelihood = log_joint - log_prior
        batch = x.shape[0]
        return (log_likelihood + kl_weight * batch * (log_prior - trace.log_density)) / batch

    return objective

"""Everything measured on a trained ARD-VAE or plain VAE: active axes, reconstruction,
MIG against the known factors (sprites) and sample quality by kernel MMD in the feature
space of a small digits classifier (digits)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl_zoo.ard_vae import _metrics, _model
from ppl_zoo.ard_vae._data import Dataset
from ppl_zoo.ard_vae._train import estimate_prior_variance

__all__ = ["DigitsFeatures", "generate", "evaluate_model"]

NUM_VARIANCE_SAMPLES = 10_000  # |X_α| for the final σ̂² (paper Sec. 3.4)


class DigitsFeatures:
    """The hidden layer of a scikit-learn MLP classifier (64 ReLU units) trained on the
    training digits: ``features(x) = relu(x W₁ + b₁)``, the space the MMD is taken in
    (a CPU stand-in for the Inception features of FID)."""

    def __init__(self, x: np.ndarray, labels: np.ndarray, seed: int = 0):
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        classifier = MLPClassifier(
            hidden_layer_sizes=(64,), max_iter=200, random_state=seed, alpha=1e-3
        )
        with warnings.catch_warnings():  # 200 epochs reach ~98 % test accuracy already
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.classifier = classifier.fit(x, np.ravel(labels))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        weight, bias = self.classifier.coefs_[0], self.classifier.intercepts_[0]
        return np.maximum(np.asarray(x, np.float64) @ weight + bias, 0.0)

    def accuracy(self, x: np.ndarray, labels: np.ndarray) -> float:
        return float(self.classifier.score(x, np.ravel(labels)))


def generate(key, params, data: Dataset, prior_variance, mask, ard: bool, num: int):
    """Decoder means of ``num`` prior draws.

    ARD-VAE (paper Sec. 3.4): ``z ~ N(mean_i µ(x_i), diag(σ̂² ⊙ 1[active]))``, the noise
    on irrelevant axes zeroed. Plain VAE: ``z ~ N(0, I)``, its own prior.
    """
    latent = prior_variance.shape[0]
    noise = jax.random.normal(key, (num, latent))
    if ard:
        loc, _ = _model.encode(params, jnp.asarray(data.train))
        z = jnp.mean(loc, 0) + noise * jnp.sqrt(jnp.asarray(prior_variance) * mask)
    else:
        z = noise
    return np.asarray(_model.decode_mean(params, z, data.likelihood))


def evaluate_model(
    params,
    data: Dataset,
    config: Mapping[str, Any],
    ard: bool,
    features: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Active count (99 % rule), relevance shares, test reconstruction error, and MIG or
    MMD where the data set has them. Deterministic (fixed keys), so ``train`` and
    ``evaluate`` report the same numbers."""
    threshold = float(config.get("threshold", 0.99))
    variance = np.asarray(
        estimate_prior_variance(jax.random.key(0), params, data.train[:NUM_VARIANCE_SAMPLES])
    )
    scores = _metrics.relevance(params, data.train, variance, data.likelihood)
    mask = _metrics.active_mask(scores, threshold)
    share = np.sort(scores)[::-1] / scores.sum()
    out = {
        "active": int(mask.sum()),
        "true_k": data.true_k,
        "reconstruction_error": _metrics.reconstruction_error(params, data.test, data.likelihood),
        "relevance_share": [float(s) for s in share],
        "prior_variance": [float(v) for v in variance],
    }
    if data.name == "sprites" and data.test_factors is not None:
        codes, _ = _model.encode(params, jnp.asarray(data.test))
        out["mig"] = _metrics.mutual_information_gap(np.asarray(codes), data.test_factors)
    if features is not None:
        samples = generate(jax.random.key(1), params, data, variance, mask, ard, data.test.shape[0])
        real, fake = features(data.test), features(samples)
        out["mmd_features"] = _metrics.mmd(real, fake, _metrics.median_bandwidth(real))
        out["mmd_pixels"] = _metrics.mmd(data.test, samples, _metrics.median_bandwidth(data.test))
    return out

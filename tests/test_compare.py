"""``ppl.compare`` and ``ppl compare`` on a small discrete program with an exact gradient.

The program is the ELBO of a model with a Bernoulli ``b`` and a Categorical ``c``;
enumerating the guide's six joint values gives the exact gradient. Unbiased
strategies must not be flagged; a continuous (Concrete) relaxation of ``b``, biased
for this discrete objective, must be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import ppl
import ppl.comparison
from ppl import cli
from ppl.comparison import Comparison, Problem, parse_strategy

PNG = b"\x89PNG\r\n\x1a\n"
MU = jnp.array([-1.0, 0.5, 2.0])
PRIOR_C = jnp.array([0.2, 0.5, 0.3])
X = jnp.asarray(1.2)
PARAMS = {"b_logit": jnp.asarray(0.4), "c_logits": jnp.array([0.3, -0.2, 0.1])}


def model(x):
    b = numpyro.sample("b", dist.Bernoulli(0.3))
    c = numpyro.sample("c", dist.Categorical(probs=PRIOR_C))
    numpyro.sample("x", dist.Normal(MU[c] + b, 1.0), obs=x)


def guide(x):
    numpyro.sample("b", dist.Bernoulli(logits=numpyro.param("b_logit", 0.0)))
    numpyro.sample("c", dist.Categorical(logits=numpyro.param("c_logits", jnp.zeros(3))))


def make(strategies):
    """The ELBO with the given strategies at the guide's sites."""

    @ppl.expectation
    def elbo(params, x):
        trace = ppl.sim(guide, x, params=params, strategies=strategies)
        return ppl.density(model, trace.choices, x, params=params) - trace.log_density

    return elbo


def exact_elbo(params, x=X):
    """``Σ_{b, c} q(b) q(c) [log p(x, b, c) - log q(b) - log q(c)]``."""
    log_qb = jax.nn.log_sigmoid(jnp.array([-1.0, 1.0]) * params["b_logit"])  # b = 0, 1
    log_qc = jax.nn.log_softmax(params["c_logits"])
    b = jnp.array([0.0, 1.0])[:, None]
    log_p = (
        dist.Bernoulli(0.3).log_prob(b)
        + jnp.log(PRIOR_C)[None, :]
        + dist.Normal(MU[None, :] + b, 1.0).log_prob(x)
    )
    log_q = log_qb[:, None] + log_qc[None, :]
    return jnp.sum(jnp.exp(log_q) * (log_p - log_q))


class RelaxedBernoulli(ppl.Strategy):
    """The Concrete (Gumbel-softmax) relaxation of a Bernoulli site: biased on purpose.

    ``u = sigmoid((logit + L) / τ)`` with ``L`` logistic noise (Maddison et al. 2017;
    Jang et al. 2017), and the rest of the program, defined only at 0 and 1, is
    relaxed linearly: ``(1 - u) f(0) + u f(1)``. Its value and gradient are those of a
    different, continuous objective, so the gradient is biased for the discrete one.
    """

    temperature: float = eqx.field(static=True, default=2.0)

    def estimate(self, key, distribution, kont):
        logits = distribution.logits
        noise = jax.random.logistic(key, jnp.shape(logits))
        relaxed = jax.nn.sigmoid((logits + noise) / self.temperature)
        zeros = jnp.zeros(jnp.shape(logits))
        return (1.0 - relaxed) * kont(zeros) + relaxed * kont(zeros + 1.0)


def variants():
    value = float(exact_elbo(PARAMS))  # a good baseline: the expected value
    good = ppl.baseline(ppl.reinforce, value)
    return {
        "enum": {"b": ppl.enum, "c": ppl.enum},
        "reinforce": {"b": ppl.reinforce, "c": ppl.reinforce},
        "baseline": {"b": good, "c": good},
        "mvd": {"b": "mvd", "c": "mvd"},  # names are parsed
        "leave_one_out": {"b": ppl.leave_one_out(4), "c": "leave_one_out(4)"},
        "relaxed": {"b": RelaxedBernoulli(), "c": ppl.enum},
    }


UNBIASED = ["enum", "reinforce", "baseline", "mvd", "leave_one_out"]


@pytest.fixture(scope="module")
def comparison():
    return ppl.compare(make, variants(), jax.random.key(0), PARAMS, X, progress=False)


@pytest.fixture(scope="module")
def trained():
    """High-sample reference (no zero-variance variant) and a short training run."""
    chosen = {k: v for k, v in variants().items() if k in ("reinforce", "mvd")}
    return ppl.compare(
        make, chosen, jax.random.key(1), PARAMS, X, num_samples=300, train=40, progress=False
    )


# -------------------------------------------------------------------- statistics


def test_the_enumerated_variant_is_the_exact_reference(comparison):
    assert comparison.reference_kind == "exact"
    assert comparison.reference_label == "enum"
    assert "reference: exact" in comparison.reference
    exact = jax.grad(exact_elbo)(PARAMS)
    for name in PARAMS:
        np.testing.assert_allclose(
            comparison.reference_gradient[f"params['{name}']"], exact[name], rtol=1e-4, atol=1e-6
        )
    enum = comparison.results["enum"]
    assert enum.total_variance == 0.0 and enum.snr == float("inf")
    assert enum.value_mean == pytest.approx(float(exact_elbo(PARAMS)), rel=1e-5)


@pytest.mark.parametrize("label", UNBIASED)
def test_unbiased_strategies_are_not_flagged(comparison, label):
    result = comparison.results[label]
    assert not result.biased, (label, result.bias_z)
    assert result.bias_z < comparison.bias_threshold
    exact_value = float(exact_elbo(PARAMS))
    assert abs(result.value_mean - exact_value) <= 5 * result.value_se + 1e-5


def test_a_relaxed_estimator_is_flagged_biased(comparison):
    result = comparison.results["relaxed"]
    assert result.biased
    assert result.bias_z > comparison.bias_threshold >= 4.0
    assert result.bias_norm > 3 * result.bias_se
    assert abs(result.value_mean - float(exact_elbo(PARAMS))) > 4 * result.value_se


def test_variance_ordering(comparison):
    results = comparison.results
    assert results["reinforce"].total_variance > 2 * results["baseline"].total_variance
    assert results["baseline"].total_variance > 0
    for label in ["reinforce", "baseline", "mvd", "leave_one_out"]:
        r = results[label]
        assert r.total_variance == pytest.approx(sum(r.parameter_variances.values()))
        assert 0 < r.total_variance_se < r.total_variance
        assert r.snr == pytest.approx(r.gradient_norm / np.sqrt(r.total_variance))
        assert r.work_normalized_variance == pytest.approx(r.total_variance * r.time_per_gradient)


def test_cost_is_measured(comparison):
    for r in comparison.results.values():
        assert 0 < r.time_quartiles[0] <= r.time_per_gradient <= r.time_quartiles[1] < 1.0
        assert r.peak_memory_bytes is None or r.peak_memory_bytes > 0
        assert r.num_samples == 1000


def test_a_given_reference():
    exact = jax.grad(exact_elbo)(PARAMS)
    chosen = {
        "reinforce": {"b": ppl.reinforce, "c": ppl.reinforce},
        "enum": make({"b": ppl.enum, "c": ppl.enum}),  # an Expectation is used as is
    }
    result = ppl.compare(
        make, chosen, jax.random.key(2), PARAMS, X, num_samples=200, reference=exact,
        progress=False,
    )  # fmt: skip
    assert result.reference_kind == "given" and "given by the user" in str(result)
    assert not result.results["enum"].biased and result.results["enum"].bias_norm < 1e-4
    assert not result.results["reinforce"].biased


# ------------------------------------------------------------------------ output


def test_table_lists_every_variant(comparison):
    table = str(comparison)
    for label in variants():
        assert label in table
    assert comparison.reference in table
    [relaxed_row] = [line for line in table.splitlines() if line.startswith("relaxed")]
    assert "BIASED" in relaxed_row
    assert all("BIASED" not in line for line in table.splitlines() if line.startswith("mvd"))


def test_dataframe(comparison):
    frame = comparison.to_dataframe()
    assert list(frame.index) == list(variants())
    for column in [
        "value_mean",
        "value_se",
        "total_variance",
        "total_variance_se",
        "snr",
        "bias_norm",
        "bias_se",
        "bias_z",
        "biased",
        "time_per_gradient",
        "work_normalized_variance",
        "peak_memory_bytes",
    ]:
        assert column in frame.columns
    assert bool(frame.loc["relaxed", "biased"]) and not bool(frame.loc["mvd", "biased"])
    per = comparison.to_dataframe(per_parameter=True)
    assert per.loc[("reinforce", "params['b_logit']"), "variance"] > 0


def test_plot_and_json_round_trip(comparison, tmp_path):
    assert comparison.plot(tmp_path / "v.png") == tmp_path / "v.png"
    assert (tmp_path / "v.png").read_bytes()[:8] == PNG
    text = comparison.to_json()
    data = json.loads(text)  # strict JSON: inf/nan encoded
    assert [v["label"] for v in data["variants"]] == list(variants())
    again = Comparison.from_json(text)
    assert again.to_json() == text
    assert str(again) == str(comparison)
    paths = comparison.save(tmp_path / "out")
    assert set(paths) == {"json", "table", "plot"}
    assert Comparison.load(tmp_path / "out").to_json() == text
    with pytest.raises(ValueError, match="train=steps"):
        comparison.plot_training(tmp_path / "t.png")


def test_training_and_high_sample_reference(trained, tmp_path):
    assert trained.reference_kind == "high-sample"
    assert "high-sample estimate from 'reinforce', 3000 samples" in str(trained)
    for r in trained.results.values():
        assert r.training.history.shape == (40,)
        assert np.all(np.diff(r.training.seconds) > 0) and r.training.seconds_per_step > 0
        assert not r.biased
    trained.plot_training(tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:8] == PNG
    again = Comparison.from_json(trained.to_json(samples=True))
    np.testing.assert_array_equal(
        again.results["mvd"].training.history, trained.results["mvd"].training.history
    )
    assert "training_plot" in trained.save(tmp_path / "out")
    # by default the JSON holds the running mean the plot draws, at its steps
    summary = Comparison.load(tmp_path / "out").results["mvd"].training
    assert summary.steps.tolist() == list(range(1, 41)) and summary.num_steps == 40
    assert summary.seconds_per_step == pytest.approx(
        trained.results["mvd"].training.seconds_per_step
    )
    summary_twice = Comparison.from_json(Comparison.load(tmp_path / "out").to_json())
    np.testing.assert_array_equal(summary_twice.results["mvd"].training.history, summary.history)
    Comparison.load(tmp_path / "out").plot_training(tmp_path / "again.png")


def test_few_samples_over_many_coordinates_do_not_flag_an_unbiased_estimator():
    """Standard errors from 5 draws: the standardized differences have t(4) tails, so a
    normal threshold (5.5 for 2,000 coordinates) would flag this exact-mean estimator
    almost surely (about 10 expected exceedances); the t threshold does not, and still
    flags a gradient shifted by 1,000 per coordinate."""

    @ppl.expectation
    def quadratic(params):
        z = ppl.sample(dist.Normal(params["loc"], 1.0).to_event(1), ppl.reparam)
        return -jnp.sum((z - 1.0) ** 2)

    @ppl.expectation
    def shifted(params):
        z = ppl.sample(dist.Normal(params["loc"], 1.0).to_event(1), ppl.reparam)
        return -jnp.sum((z - 1.0) ** 2) + 1000.0 * jnp.sum(params["loc"])

    params = {"loc": jnp.zeros(2000)}
    exact = {"loc": 2.0 * (1.0 - params["loc"])}
    result = ppl.compare(
        None, {"unbiased": quadratic, "shifted": shifted}, jax.random.key(3), params,
        num_samples=5, reference=exact, progress=False,
    )  # fmt: skip
    assert result.bias_threshold > 100.0
    assert not result.results["unbiased"].biased
    assert result.results["shifted"].biased


@ppl.expectation
def squared_distance(params, x):
    z = ppl.sample(dist.Normal(params["loc"], 1.0), ppl.reparam)
    return -((x - z) ** 2)


DATA = jnp.linspace(-1.0, 3.0, 64)  # mean 1; the measured minibatch DATA[:8] has mean -0.78


def _distance(params):
    return {"distance": abs(float(params["loc"]) - 1.0)}


def test_training_on_minibatches_with_metrics(tmp_path):
    """A minibatch estimator as a variant; ``train_data`` minibatches replace the
    measured batch in training (the optimum
    is the mean of all the data, not of the batch), and ``train_metrics`` is called
    every ``train_eval_every`` steps from step 0, off the clock."""
    import optax

    minibatch = ppl.parallel.batch_mean(squared_distance)  # a function, not an Expectation
    result = ppl.compare(
        None, {"reparam": minibatch}, jax.random.key(0), {"loc": jnp.asarray(0.0)},
        DATA[:8], num_samples=10, train=60, optimizer=optax.adam(0.1), train_data=DATA,
        train_batch_size=8, train_metrics=_distance, train_eval_every=20, progress=False,
    )  # fmt: skip
    run = result.results["reparam"].training
    assert run.history.shape == (60,)
    assert run.evaluations["step"].tolist() == [0, 20, 40, 60]
    assert run.evaluations["seconds"][0] == 0.0 and np.all(np.diff(run.evaluations["seconds"]) > 0)
    np.testing.assert_allclose(run.seconds[[19, 39, 59]], run.evaluations["seconds"][1:])
    assert run.evaluations["distance"][0] == 1.0
    assert run.evaluations["distance"][-1] < 0.3  # near 1, far from the batch's -0.78
    again = Comparison.from_json(result.to_json())
    np.testing.assert_array_equal(
        again.results["reparam"].training.evaluations["distance"], run.evaluations["distance"]
    )
    result.plot_training(tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:8] == PNG


def test_training_option_errors():
    variants = {"r": ppl.parallel.batch_mean(squared_distance)}
    args = (None, variants, jax.random.key(0), {"loc": jnp.asarray(0.0)}, DATA[:8])
    with pytest.raises(ValueError, match="train_data and train_metrics need train=steps"):
        ppl.compare(*args, train_data=DATA, progress=False)
    with pytest.raises(ValueError, match="train_batch_size needs train_data"):
        ppl.compare(*args, train=4, train_batch_size=8, progress=False)
    with pytest.raises(ValueError, match="train_eval_every must be a positive"):
        ppl.compare(*args, train=4, train_metrics=_distance, train_eval_every=0, progress=False)
    with pytest.raises(TypeError, match="train_metrics must be callable"):
        ppl.compare(*args, train=4, train_metrics="accuracy", progress=False)
    with pytest.raises(TypeError, match="must return a mapping name -> number, got list"):
        ppl.compare(*args, num_samples=2, train=4, train_metrics=lambda p: [1.0], progress=False)
    with pytest.raises(TypeError, match="returned 'acc': 'high', not a number"):
        ppl.compare(
            *args, num_samples=2, train=4, train_metrics=lambda p: {"acc": "high"}, progress=False
        )


# ------------------------------------------------------------------------ errors


def test_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="variants is empty"):
        ppl.compare(make, {}, key, PARAMS, X)
    with pytest.raises(ValueError, match=r"variant 'typo': .*\['zz'\].*not sample sites"):
        ppl.compare(make, {"typo": {"zz": ppl.enum}}, key, PARAMS, X, progress=False)
    with pytest.raises(TypeError, match="Expectation or a factory"):
        ppl.compare(42, {"a": {"b": ppl.enum}}, key, PARAMS, X)
    with pytest.raises(TypeError, match="variant 'a': the objective factory returned function"):
        ppl.compare(lambda s: lambda p, x: 0.0, {"a": {"b": ppl.enum}}, key, PARAMS, X)
    with pytest.raises(TypeError, match="fixed Expectation"):
        ppl.compare(make({}), {"a": {"b": ppl.enum}}, key, PARAMS, X)
    with pytest.raises(ValueError, match="variant 'a', site 'b': cannot parse"):
        ppl.compare(make, {"a": {"b": "enumerate"}}, key, PARAMS, X)
    with pytest.raises(ValueError, match="reference='nope' is not a variant"):
        ppl.compare(make, {"a": {"b": ppl.enum}}, key, PARAMS, X, reference="nope")
    with pytest.raises(ValueError, match="variant 'r': .*reparam"):  # cannot apply
        ppl.compare(make, {"r": {"b": ppl.reparam}}, key, PARAMS, X, progress=False)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("reinforce", ppl.reinforce),
        (" mvd ", ppl.mvd),
        ("enum(max_values=16)", ppl.Enum(max_values=16)),
        ("leave_one_out(4)", ppl.leave_one_out(4)),
        ("baseline(reinforce, -2.5)", ppl.baseline(ppl.reinforce, -2.5)),
    ],
)
def test_parse_strategy(text, expected):
    parsed = parse_strategy(text)
    assert type(parsed) is type(expected)
    assert jax.tree.map(float, jax.tree.leaves(parsed)) == jax.tree.map(
        float, jax.tree.leaves(expected)
    )
    assert str(parsed) == str(expected)


@pytest.mark.parametrize(
    "text",
    ["", "enumerate", "baseline(enum, 1.0)", "leave_one_out(0)", "__import__('os')", "mvd.x", "1"],
)
def test_parse_strategy_rejects(text):
    with pytest.raises(ValueError, match="cannot parse the strategy"):
        parse_strategy(text)


# --------------------------------------------------------------------------- CLI

PROBLEM_MODULE = textwrap.dedent(
    """
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    import ppl
    import ppl.comparison

    MU = jnp.array([-1.0, 0.5, 2.0])


    def model(x):
        c = numpyro.sample("c", dist.Categorical(probs=jnp.array([0.2, 0.5, 0.3])))
        numpyro.sample("x", dist.Normal(MU[c], 1.0), obs=x)


    def guide(x):
        numpyro.sample("c", dist.Categorical(logits=numpyro.param("logits", jnp.zeros(3))))


    def make(strategies):
        @ppl.expectation
        def elbo(params, x):
            trace = ppl.sim(guide, x, params=params, strategies=strategies)
            return ppl.density(model, trace.choices, x, params=params) - trace.log_density

        return elbo


    problem = ppl.comparison.Problem(objective=make, args=({"logits": jnp.zeros(3)}, 1.2))
    """
)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "compare_cli_problem.py").write_text(PROBLEM_MODULE)
    (tmp_path / "variants.json").write_text(
        json.dumps({"enum": {"c": "enum"}, "baseline": {"c": "baseline(reinforce, -2.0)"}})
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cli_compare_writes_table_json_and_png(workdir, capsys):
    argv = ["compare", "compare_cli_problem:problem", "--variants", "variants.json"]
    argv += ["--samples", "200", "--out", "out", "--quiet"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "baseline" in printed and "reference: exact, the mean of 'enum'" in printed
    assert (workdir / "out" / "variance.png").read_bytes()[:8] == PNG
    data = json.loads((workdir / "out" / "comparison.json").read_text())
    assert [v["label"] for v in data["variants"]] == ["enum", "baseline"]
    assert data["num_samples"] == 200


BAD_VARIANTS = {
    "site.json": {"x": {"zz": "enum"}},
    "parse.json": {"x": {"c": "baseline(enum, 1)"}},
}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no_such_module_xyz:problem"], "cannot import module 'no_such_module_xyz'"),
        (["compare_cli_problem:missing"], "has no attribute 'missing'"),
        (["compare_cli_problem:make"], "needs arguments"),
        (["compare_cli_problem:MU"], "not a Problem"),
        (["compare_cli_problem:problem", "--variants", "site.json"], "['zz']"),
        (["compare_cli_problem:problem", "--variants", "parse.json"], "cannot parse"),
        (["compare_cli_problem:problem", "--variants", "none.json"], "none.json"),
        (["compare_cli_problem:problem"], "no variants"),
        (["--zoo", "no_such_model"], "unknown zoo model 'no_such_model' (available:"),
        (["compare_cli_problem"], "MODULE:ATTRIBUTE"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(workdir, capsys, argv, message):
    for name, content in BAD_VARIANTS.items():
        (workdir / name).write_text(json.dumps(content))
    assert cli.main(["compare", *argv, "--samples", "50", "--out", "out", "--quiet"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ppl compare: error:"), captured.err
    assert message in lines[0]
    assert not (workdir / "out").exists()


def test_variants_files(tmp_path):
    (tmp_path / "v.toml").write_text('[mvd]\nc = "mvd"\n\n[loo]\nc = "leave_one_out(3)"\n')
    (tmp_path / "v.py").write_text(
        "import ppl\nVARIANTS = {'b': {'c': ppl.baseline(ppl.reinforce, 1.0)}}\n"
    )
    assert ppl.comparison.load_variants(tmp_path / "v.toml") == {
        "mvd": {"c": "mvd"},
        "loo": {"c": "leave_one_out(3)"},
    }
    assert isinstance(ppl.comparison.load_variants(tmp_path / "v.py")["b"]["c"], ppl.Baseline)
    (tmp_path / "v.yaml").write_text("")
    with pytest.raises(ValueError, match=".json, .toml or .py"):
        ppl.comparison.load_variants(tmp_path / "v.yaml")


def test_the_command_exits_2_without_a_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "ppl.cli", "compare", "no_such_module_xyz:problem"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ppl compare: error: cannot import module 'no_such_module_xyz' (no module named "
        "'no_such_module_xyz'); put its folder on PYTHONPATH or run from it."
    ]


def test_problem_and_from_objective():
    problem = Problem(
        objective=ppl.comparison.from_objective(ppl.objectives.elbo, model, guide), args=(PARAMS, X)
    )
    objective = problem.objective({"b": ppl.reinforce})
    assert isinstance(objective, ppl.Expectation)
    assert objective.estimate(jax.random.key(0), *problem.args).shape == ()


# ------------------------------------------------------------ details of the outputs


def test_a_variant_naming_a_site_the_objective_never_looks_up_is_an_error():
    def direct(strategies):  # looks strategies up by name, not through ppl.sim
        @ppl.expectation
        def objective(params):
            b = ppl.sample(dist.Bernoulli(logits=params["logit"]), strategies["b"])
            return (b - 0.3) ** 2

        return objective

    variants = {"enum": {"b": ppl.enum}, "typo": {"b": ppl.mvd, "bb": ppl.enum}}
    with pytest.raises(ValueError, match=r"variant 'typo': strategies name \['bb'\]"):
        ppl.compare(direct, variants, jax.random.key(0), {"logit": jnp.asarray(0.5)},
                    num_samples=20, progress=False)  # fmt: skip


def test_a_biased_variant_never_anchors_the_equal_cost_line_and_labels_sit_in_a_legend(
    comparison,
):
    import dataclasses

    from ppl.comparison._report import _equal_cost_anchor

    # make the biased variant the cheapest: it must still not set the line
    results = dict(comparison.results)
    results["relaxed"] = dataclasses.replace(results["relaxed"], work_normalized_variance=1e-12)
    cheap = dataclasses.replace(comparison, results=results)
    anchor = _equal_cost_anchor(list(results.values()))
    assert anchor.label != "relaxed" and not anchor.biased
    figure = cheap._variance_figure()
    axes = figure.axes[0]
    assert not axes.texts  # no labels next to the points, where they could overlap
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert "relaxed (biased)" in labels
    assert f"equal variance × time as {anchor.label}" in labels
    assert "enum (zero variance)" in labels


def test_the_json_holds_summaries_unless_samples_are_asked_for(trained):
    import dataclasses

    from ppl.comparison import TrainingRun

    rng = np.random.default_rng(0)
    long_run = TrainingRun(rng.normal(size=20_000), np.cumsum(np.full(20_000, 1e-3)))
    results = {
        label: dataclasses.replace(r, training=long_run) for label, r in trained.results.items()
    }
    big = dataclasses.replace(trained, results=results)
    summary, raw = big.to_json(), big.to_json(samples=True)
    assert len(summary) < 40_000 < len(raw)
    loaded = Comparison.from_json(summary).results["mvd"].training
    assert loaded.history.size == 200 and loaded.steps[-1] == 20_000
    assert loaded.seconds_per_step == pytest.approx(1e-3)
    np.testing.assert_allclose(loaded.history[-1], long_run.history[-2000:].mean())

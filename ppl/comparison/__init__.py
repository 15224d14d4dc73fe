"""``ppl.comparison``: compare gradient estimators of one objective by variance, bias and cost.

A strategy is fixed when an objective is built, so a comparison starts from a
**factory**, a function ``make(strategies) -> ppl.Expectation`` of a strategy map (site
name -> strategy), and a set of **variants**, each a strategy map (or a ready-made
`ppl.Expectation`)::

    def make(strategies):
        @ppl.expectation
        def elbo(params, data):
            trace = ppl.sim(guide, data, params=params, strategies=strategies)
            return ppl.density(model, trace.choices, data, params=params) - trace.log_density

        return elbo

    variants = {"enum": {"c": ppl.enum}, "reinforce": {"c": "reinforce"}, "mvd": {"c": ppl.mvd}}
    result = ppl.compare(make, variants, jax.random.key(0), params, data)
    print(result)                      # the table
    result.save("compare-out")         # JSON, text table, PNG plots

For each variant, ``num_samples`` independent gradient estimates (one per key, vmapped
in chunks) give the mean and standard error of the value, the mean gradient, the total
gradient variance (the trace of the covariance), the signal-to-noise ratio, the bias
against a reference gradient with its standard error, the median time per gradient,
the work-normalized variance and the compiled memory footprint. ``ppl compare`` runs
the same from the command line on a `Problem`.
"""

from ppl.comparison._compare import compare
from ppl.comparison._problem import Problem, as_problem, from_objective, load_problem
from ppl.comparison._report import Comparison, TrainingRun, VariantResult
from ppl.comparison._variants import load_variants, parse_strategy

__all__ = [
    "compare",
    "Comparison",
    "VariantResult",
    "TrainingRun",
    "Problem",
    "as_problem",
    "from_objective",
    "parse_strategy",
    "load_variants",
    "load_problem",
]

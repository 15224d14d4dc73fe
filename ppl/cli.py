"""The ``ppl`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import types

    from ppl.comparison import Problem


def _quickstart(args: argparse.Namespace) -> int:
    from ppl import quickstart

    quickstart.main(
        out_dir=args.out, num_steps=args.steps, eval_samples=args.eval_samples, seed=args.seed
    )
    return 0


COMPARE_HELP = """\
Compare gradient estimators of one objective: value, gradient variance, signal-to-noise
ratio, bias against a reference, time per gradient, work-normalized variance and
memory. Prints the table and writes comparison.json (summaries; --raw adds every
training step and gradient coordinate), comparison.txt and variance.png (and
training.png with --train) into --out.

MODULE:ATTRIBUTE names a ppl.comparison.Problem, or a function of no arguments returning
one, in an importable module (put its folder on PYTHONPATH):

    # coins.py
    import jax.numpy as jnp, ppl, ppl.comparison
    def make(strategies):                    # strategy map -> ppl.Expectation
        @ppl.expectation
        def elbo(params, x):
            trace = ppl.sim(guide, x, params=params, strategies=strategies)
            return ppl.density(model, trace.choices, x, params=params) - trace.log_density
        return elbo
    problem = ppl.comparison.Problem(objective=make, args=(params, x))

    $ PYTHONPATH=. ppl compare coins:problem --variants variants.json --out out

--variants is a JSON, TOML or Python file mapping labels to {site: strategy}, e.g.
{"reinforce": {"c": "reinforce"}, "baseline": {"c": "baseline(reinforce, -3.0)"},
 "mvd": {"c": "mvd"}, "enum": {"c": "enum"}, "loo": {"c": "leave_one_out(4)"}}
(strategy names: reparam, reinforce, enum, mvd, detached, baseline(S, VALUE),
leave_one_out(N); a .py file defines VARIANTS and may use ppl.Strategy objects). Without
--variants the problem's own variants are used. --zoo NAME compares the problem of the
model zoo's entry ppl_zoo.REGISTRY[NAME] (its `problem`). Bad input exits with status 2
and a one-line message.
"""


def _compare(args: argparse.Namespace) -> int:
    """``ppl compare``: errors in the user's input become one line and exit status 2."""
    # Import the module itself (ppl/__init__.py may re-export the function of that name).
    comparison = importlib.import_module("ppl.comparison")
    try:
        problem = _compare_problem(args, comparison)
        variants = comparison.load_variants(args.variants) if args.variants else problem.variants
        if not variants:
            raise ValueError(
                "no variants: pass --variants FILE (labels -> {site: strategy}), or give "
                "the Problem default variants."
            )
        if args.samples < 2:
            raise ValueError(f"--samples must be at least 2, got {args.samples}.")
        if args.train is not None and args.train < 1:
            raise ValueError(f"--train must be at least 1 step, got {args.train}.")
        import jax

        result = comparison.compare(
            problem.objective,
            variants,
            jax.random.key(args.seed),
            *problem.args,
            num_samples=args.samples,
            reference=args.reference if args.reference is not None else problem.reference,
            reference_samples=args.reference_samples,
            train=args.train,
            progress=not args.quiet,
        )
        paths = result.save(args.out, samples=args.raw)
    except (ValueError, TypeError, ImportError, OSError, SyntaxError, KeyError) as err:
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"ppl compare: error: {message}", file=sys.stderr)
        return 2
    if problem.description:
        print(problem.description)
    print(result)
    print("wrote " + ", ".join(paths.values()))
    return 0


def _compare_problem(args: argparse.Namespace, comparison: types.ModuleType) -> Problem:
    if (args.target is None) == (args.zoo is None):
        raise ValueError("give either MODULE:ATTRIBUTE or --zoo NAME (exactly one).")
    if args.target is not None:
        return comparison.load_problem(args.target)
    registry = _zoo_registry()
    if args.zoo not in registry:
        available = ", ".join(sorted(registry)) or "none yet"
        raise ValueError(f"unknown zoo model '{args.zoo}' (available: {available}).")
    entry = registry[args.zoo]
    if isinstance(entry, comparison.Problem):
        return entry
    found = entry.get("problem") if isinstance(entry, dict) else getattr(entry, "problem", None)
    if found is None:
        raise ValueError(f"zoo model '{args.zoo}' defines no comparison problem ('problem').")
    return comparison.as_problem(found, f"zoo model '{args.zoo}' problem")


def _zoo_registry() -> dict:
    try:
        zoo = importlib.import_module("ppl_zoo")
    except ImportError:
        raise ValueError("the model zoo (the package 'ppl_zoo') is not installed.") from None
    return getattr(zoo, "REGISTRY", {})


def _parse_setting(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--set expects KEY=VALUE, got '{text}'.")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _zoo(args: argparse.Namespace) -> int:
    """``ppl zoo list | train NAME | eval NAME``: bad input exits 2 with one line."""
    try:
        registry = _zoo_registry()
        if args.zoo_command == "list":
            if not registry:
                print("no zoo models yet")
            for name, entry in sorted(registry.items()):
                print(f"{name:<16}{entry.description}\n{'':<16}{entry.citation}")
            return 0
        if args.name not in registry:
            available = ", ".join(sorted(registry)) or "none yet"
            raise ValueError(f"unknown zoo model '{args.name}' (available: {available}).")
        entry = registry[args.name]
        config = dict(entry.default_config)
        settings = [_parse_setting(setting) for setting in args.set or []]
        if args.estimator is not None:
            settings.append(("estimator", args.estimator))
        for key, value in settings:
            if key not in config:
                raise ValueError(
                    f"'{key}' is not a setting of {args.name} (settings: {', '.join(config)})."
                )
            config[key] = value
        data = entry.load_data(config, Path(args.data) if args.data else None)
    except (ValueError, FileNotFoundError) as err:
        if args.debug:
            raise
        print(f"ppl zoo: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or f"ppl-zoo-{args.name}")
    out.mkdir(parents=True, exist_ok=True)
    run = entry.train if args.zoo_command == "train" else entry.evaluate
    import jax

    metrics = run(jax.random.key(args.seed), data, config, out)
    path = out / f"{args.zoo_command}_metrics.json"
    path.write_text(json.dumps({"model": args.name, "config": config, **metrics}, indent=1))
    for key, value in metrics.items():
        print(f"{key:<24}{value}")
    print(f"wrote {path} (checkpoint and plots in {out})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppl", description="Programmable variational inference for JAX and NumPyro."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    quick = commands.add_parser(
        "quickstart",
        help="fit the noisy-cone model with five objectives (PLDI 2024, Table 4)",
        description="Fit the noisy-cone model of Becker et al. (PLDI 2024) with ELBO, "
        "IWELBO, HVI, IWHVI and DIWHVI; print the table next to the paper's and save a "
        "plot of the approximate posteriors.",
    )
    quick.add_argument(
        "--out", default="ppl-quickstart", help="output folder (default: %(default)s)"
    )
    quick.add_argument("--steps", type=int, default=5000, help="SGD steps (default: %(default)s)")
    quick.add_argument(
        "--eval-samples", type=int, default=5000, help="samples for the final estimate"
    )
    quick.add_argument("--seed", type=int, default=0)
    quick.set_defaults(run=_quickstart)

    comp = commands.add_parser(
        "compare",
        help="compare gradient estimators of an objective (variance, bias, cost)",
        description=COMPARE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    comp.add_argument(
        "target", nargs="?", metavar="MODULE:ATTRIBUTE", help="a ppl.comparison.Problem to compare"
    )
    comp.add_argument("--zoo", metavar="NAME", help="compare a model of the zoo instead")
    comp.add_argument(
        "--variants", metavar="FILE", help="JSON, TOML or Python file: label -> {site: strategy}"
    )
    comp.add_argument(
        "--samples",
        type=int,
        default=1000,
        metavar="N",
        help="gradient samples per variant (default: 1000)",
    )
    comp.add_argument("--out", default="ppl-compare", help="output folder (default: %(default)s)")
    comp.add_argument(
        "--train", type=int, metavar="STEPS", help="also train with each variant (ppl.fit)"
    )
    comp.add_argument(
        "--reference",
        metavar="LABEL",
        help="the variant whose mean is the reference gradient (default: the first)",
    )
    comp.add_argument(
        "--reference-samples",
        type=int,
        metavar="N",
        help="samples of a high-sample reference (default: 10 x --samples)",
    )
    comp.add_argument("--seed", type=int, default=0)
    comp.add_argument(
        "--raw",
        action="store_true",
        help="keep every training step and gradient coordinate in comparison.json "
        "(default: summaries)",
    )
    comp.add_argument("--quiet", action="store_true", help="no progress bars")
    comp.add_argument("--debug", action="store_true", help="show tracebacks instead of one line")
    comp.set_defaults(run=_compare)

    zoo = commands.add_parser("zoo", help="list, train and evaluate the model zoo")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_commands.add_parser("list", help="the registered models").set_defaults(
        run=_zoo, debug=False
    )
    for verb, text in (("train", "train a zoo model"), ("eval", "evaluate a trained model")):
        sub = zoo_commands.add_parser(verb, help=text)
        sub.add_argument("name", help="the model's name (see ppl zoo list)")
        sub.add_argument("--out", help="output folder (default: ppl-zoo-NAME)")
        sub.add_argument("--data", help="a local copy of the model's real data set")
        sub.add_argument("--set", action="append", metavar="KEY=VALUE", help="a setting")
        sub.add_argument(
            "--estimator",
            metavar="NAME",
            help="shorthand for --set estimator=NAME (models with an 'estimator' setting)",
        )
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--debug", action="store_true", help="show tracebacks")
        sub.set_defaults(run=_zoo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ppl`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "steps", 1) < 1:
        parser.error("--steps must be at least 1")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
